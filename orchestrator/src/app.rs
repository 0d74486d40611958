//! Builds and runs the service from validated settings: store, vendor ports, actors, the
//! bus of the mode, background workers, and the HTTP server.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use lockstep_actors::{
    Failpoints, FenceBook, Metrics, PortRegistry, Router, Runtime, SagaSettings, StepGate,
    VendorDeps, WorkerSettings,
};
use lockstep_config::{resolve_secret, Mode, Settings};
use lockstep_domain::breaker::BreakerPolicy;
use lockstep_domain::{Clock, ScaledClock, SystemClock};
use lockstep_persistence::{pg, sqlite::SqliteStore, Cipher, PgStore, Store};
use lockstep_vendors::ttlock::RunningSimulator;
use tracing::{info, warn};

use crate::bus;
use crate::schema::EventSchemas;

/// What request handlers and background workers share.
#[derive(Debug)]
pub struct Shared {
    /// Runtime handles.
    pub rt: Runtime,
    /// The actor router.
    pub router: Addr<Router>,
    /// Event contract.
    pub schemas: EventSchemas,
    /// Service bearer token.
    pub service_token: Option<String>,
    /// The identity provider's JWTs (issue 6), when configured.
    pub jwt: Option<crate::auth::JwtVerifier>,
    /// This node's name.
    pub node_id: String,
    /// Whether the bus is connected (readiness).
    pub bus_ready: AtomicBool,
    /// Recently produced events (embedded mode).
    pub recent_events: Mutex<VecDeque<serde_json::Value>>,
    /// Where operator commands go (DESIGN §4).
    pub commands: crate::commands::CommandBus,
    /// Each adapter's webhook URL token.
    pub webhook_tokens: crate::webhooks::WebhookTokens,
    /// The configured properties (the demo's included): where each adapter's secrets live.
    pub properties: Vec<lockstep_config::RawProperty>,
    /// The RabbitMQ settings in production (`None`: embedded, the in-process bus): the HTTP
    /// intake publishes to the partitions and judges `[amqp.publishers]` like the broker's.
    pub amqp: Option<lockstep_config::AmqpSettings>,
    /// The webhook secrets of the demo's other vendors' adapters (made at start-up, shared
    /// with their simulators), by adapter id.
    pub demo_webhook_secrets: std::collections::HashMap<String, String>,
    /// Signs offline-issuance certificates (`None`: not configured).
    pub offline_signer: Option<crate::admin::OfflineSigner>,
    /// Draining on SIGTERM.
    pub shutdown: crate::shutdown::Shutdown,
    /// Door anomaly rules per property and the memory of recent attempts (US-MEL-0079).
    pub anomalies: crate::anomalies::Anomalies,
    /// The desktop relay, when this node runs one (`[relay]`).
    pub relay: Option<Arc<crate::desk::RelayHost>>,
    /// Whether the intake queue has a backlog (production bus).
    pub intake_backlog: crate::bus::amqp::IntakeBacklog,
    /// What intake last read of each property (issue 11).
    pub admit_cache: crate::intake::AdmitCache,
}

/// Reads the key from settings, or (embedded) from `<data dir>/encryption.key`, creating it.
fn cipher(settings: &Settings) -> anyhow::Result<Cipher> {
    let hex = match &settings.key {
        Some(src) => resolve_secret(src)?,
        None => {
            let path = settings.sqlite_path.with_file_name("encryption.key");
            read_or_create(&path, Cipher::generate_hex)?
        }
    };
    // the KMS port: here the process's own keys, from files or the environment
    let mut kms = lockstep_persistence::LocalKms::default()
        .with_hex(&settings.key_version, &hex)
        .map_err(|e| anyhow::anyhow!("encryption.key: {e}"))?;
    for k in &settings.previous_keys {
        kms = kms
            .with_hex(&k.version, &resolve_secret(&k.key)?)
            .map_err(|e| anyhow::anyhow!("encryption.previous_keys {}: {e}", k.version))?;
    }
    let mut versions: Vec<&str> = vec![settings.key_version.as_str()];
    versions.extend(settings.previous_keys.iter().map(|k| k.version.as_str()));
    Cipher::from_kms(
        &kms,
        &settings.key_version,
        &versions,
        &settings.index_key_version,
    )
    .map_err(|e| anyhow::anyhow!("encryption: {e}"))
}

/// Key rotation: moves every tenant's stored secrets to the current key, a batch at a
/// time, in the background; logs when the previous keys are no longer needed.
async fn reencrypt_all(
    store: Arc<dyn Store>,
    tenants: Vec<lockstep_domain::TenantId>,
    settings_versions: Vec<String>,
) {
    let mut total = 0u64;
    for tenant in tenants {
        loop {
            match store.reencrypt(tenant, 200).await {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    warn!(error = %e, "re-encryption stopped; the next start resumes it");
                    return;
                }
            }
        }
    }
    if !settings_versions.is_empty() {
        info!(
            reencrypted = total,
            previous = ?settings_versions,
            "re-encryption complete: the previous key versions can be retired"
        );
    } else if total > 0 {
        info!(reencrypted = total, "values moved to the current key");
    }
}

/// The offline-issuance signing key: configured, or (embedded) generated into the data
/// dir; production without one refuses certificates.
fn offline_signer(settings: &Settings) -> anyhow::Result<Option<crate::admin::OfflineSigner>> {
    let hex = match &settings.offline.signing_key {
        Some(src) => resolve_secret(src)?,
        None if settings.mode == Mode::Embedded => {
            let path = settings.sqlite_path.with_file_name("offline-signing.key");
            read_or_create(&path, Cipher::generate_hex)?
        }
        None => return Ok(None),
    };
    let seed: [u8; 32] = lockstep_persistence::crypto::decode_hex(hex.trim())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("offline.signing_key: 64 hex digits"))?;
    Ok(Some(crate::admin::OfflineSigner::new(
        seed,
        settings
            .offline
            .key_id
            .clone()
            .unwrap_or_else(|| "offline-v1".into()),
    )))
}

fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    if let Ok(v) = std::fs::read_to_string(path) {
        return Ok(v.trim().to_owned());
    }
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let v = make();
    write_private(path, &v)?;
    Ok(v)
}

/// Creates `dir` and its missing parents readable by their owner only (0700): the
/// embedded node keeps its keys, token and database there. An existing directory is left
/// as it is.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

#[cfg(unix)]
fn write_private(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(value.as_bytes())?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value).with_context(|| format!("creating {}", path.display()))
}

/// Saga transactions admitted at once (issue 11): a quarter of the Postgres pool stays for
/// intake, the outbox and the timers, which never wait behind saga steps; SQLite writes
/// one at a time whatever the number.
fn step_permits(settings: &Settings) -> usize {
    match &settings.postgres {
        Some(pg) => (pg.max_connections as usize * 3 / 4).max(2),
        None => 4,
    }
}

/// Opens the configured store (the node's, or a CLI command's).
pub(crate) async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let cipher = cipher(settings)?;
    match &settings.postgres {
        None => {
            if let Some(dir) = settings.sqlite_path.parent() {
                create_private_dir(dir)?;
            }
            let path = settings.sqlite_path.to_string_lossy().into_owned();
            Ok(Arc::new(
                SqliteStore::open(&path, cipher)
                    .await
                    .context("opening the SQLite store")?,
            ))
        }
        Some(pgs) => {
            if pgs.migrate_on_start {
                let owner = pgs.owner_url.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("database.owner_url is needed with migrate_on_start")
                })?;
                pg::migrate(&resolve_secret(owner)?)
                    .await
                    .context("running migrations")?;
            }
            let store = PgStore::connect(
                &resolve_secret(&pgs.url)?,
                &resolve_secret(&pgs.worker_url)?,
                cipher,
                pgs.max_connections,
            )
            .await
            .context("connecting to Postgres")?;
            Ok(Arc::new(store))
        }
    }
}

/// Runs `lockstep migrate`.
/// What `lockstep token` mints.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `kid`.
    pub kid: String,
    /// Tenant uuid.
    pub tenant: String,
    /// Roles.
    pub roles: Vec<crate::auth::Role>,
    /// `sub`.
    pub subject: String,
    /// Lifetime.
    pub ttl_secs: i64,
    /// `iss`, else `[auth] issuer`.
    pub issuer: Option<String>,
    /// `aud`, else `[auth] audience`.
    pub audience: Option<String>,
}

/// `lockstep token`: a development JWT signed with the key in `key_file`.
pub fn dev_token(
    settings: &Settings,
    key_file: &std::path::Path,
    r: TokenRequest,
) -> anyhow::Result<DevToken> {
    let created = !key_file.exists();
    // a fresh 32-byte seed from the OS CSPRNG, like every Lockstep key
    let seed = read_or_create(key_file, Cipher::generate_hex)?;
    let key = ed25519_dalek::SigningKey::from_bytes(
        &lockstep_persistence::audit::key_bytes(&seed)
            .ok_or_else(|| anyhow::anyhow!("{}: expected 64 hex digits", key_file.display()))?,
    );
    lockstep_domain::TenantId::parse(&r.tenant)
        .map_err(|_| anyhow::anyhow!("--tenant: not a tenant id (uuid)"))?;
    let from_config =
        |f: fn(&lockstep_config::RawAuth) -> &String| settings.auth.as_ref().map(|a| f(a).clone());
    // without a config file, a development issuer and audience the printed entry names
    let issuer = r
        .issuer
        .or_else(|| from_config(|a| &a.issuer))
        .unwrap_or_else(|| "lockstep-dev".to_owned());
    let audience = r
        .audience
        .or_else(|| from_config(|a| &a.audience))
        .unwrap_or_else(|| "lockstep".to_owned());
    let now = lockstep_domain::SystemClock.now().timestamp();
    let public_key = hex(key.verifying_key().as_bytes());
    let auth_key = format!(
        "[auth]\nissuer = \"{issuer}\"\naudience = \"{audience}\"\n\n[[auth.keys]]\nkid = \"{}\"\nalg = \"EdDSA\"\npublic_key = \"{public_key}\"",
        r.kid
    );
    let token = crate::auth::mint(
        &key,
        &r.kid,
        &crate::auth::Claims {
            iss: issuer,
            aud: audience,
            sub: r.subject,
            exp: now + r.ttl_secs,
            nbf: None,
            iat: now,
            tenant_id: r.tenant,
            roles: r.roles,
        },
    );
    Ok(DevToken {
        token,
        auth_key,
        created_key: created,
    })
}

/// What `lockstep token` prints.
#[derive(Debug)]
pub struct DevToken {
    /// The JWT.
    pub token: String,
    /// The `[auth]` section that verifies it: issuer, audience and the key's public half.
    pub auth_key: String,
    /// The key file did not exist and was written (0600).
    pub created_key: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The JWT verifier of `[auth]`.
fn jwt_verifier(a: &lockstep_config::RawAuth) -> anyhow::Result<crate::auth::JwtVerifier> {
    use crate::auth::VerifyKey;
    let mut keys = std::collections::HashMap::new();
    for k in &a.keys {
        let key = match (k.alg.as_str(), &k.public_key, &k.secret) {
            ("EdDSA", Some(hex), None) => {
                let bytes = lockstep_persistence::audit::key_bytes(hex).ok_or_else(|| {
                    anyhow::anyhow!("auth.keys {}: public_key must be 64 hex digits", k.kid)
                })?;
                VerifyKey::Ed25519(ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(
                    |_| anyhow::anyhow!("auth.keys {}: not an Ed25519 public key", k.kid),
                )?)
            }
            ("HS256", None, Some(secret)) => VerifyKey::Hs256(resolve_secret(secret)?.into_bytes()),
            _ => anyhow::bail!(
                "auth.keys {}: use alg = \"EdDSA\" with public_key, or alg = \"HS256\" with secret",
                k.kid
            ),
        };
        keys.insert(k.kid.clone(), key);
    }
    anyhow::ensure!(!keys.is_empty(), "auth.keys: at least one key is needed");
    Ok(crate::auth::JwtVerifier::new(
        keys,
        a.issuer.clone(),
        a.audience.clone(),
    ))
}

/// Reads an Ed25519 key's 32 bytes (64 hex digits) from a file.
fn read_key(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    lockstep_persistence::audit::key_bytes(&text)
        .ok_or_else(|| anyhow::anyhow!("{}: expected 64 hex digits", path.display()))
}

/// `lockstep audit seal`: links the rows written so far, then signs a Merkle root over each
/// audit chain's rows not yet sealed, with the key in `key_file` (held outside the
/// database). Prints what it sealed.
pub async fn audit_seal(settings: &Settings, key_file: &std::path::Path) -> anyhow::Result<()> {
    let key = ed25519_dalek::SigningKey::from_bytes(&read_key(key_file)?);
    let store = open_store(settings).await?;
    // what the steps wrote up to now is sealed too
    lockstep_persistence::audit::link_all(store.as_ref()).await?;
    let now = lockstep_domain::SystemClock.now();
    let sealed = lockstep_persistence::audit::seal_chains(store.as_ref(), &key, now).await?;
    for s in &sealed {
        println!(
            "sealed {} {} rows {}..={} root {}",
            s.tenant_id, s.property_id, s.from_seq, s.to_seq, s.merkle_root
        );
    }
    println!(
        "{} chain(s) sealed with key {}",
        sealed.len(),
        lockstep_persistence::audit::key_id(&key.verifying_key())
    );
    Ok(())
}

/// `lockstep audit verify`: checks every audit chain's links (from its retention anchor)
/// and signed roots against the public key (64 hex digits); prints one line per chain,
/// with the rows retention pruned and the rows not linked yet (not a fault). `Ok(false)`
/// when anything is wrong.
pub async fn audit_verify(settings: &Settings, public_key: &str) -> anyhow::Result<bool> {
    let bytes = lockstep_persistence::audit::key_bytes(public_key)
        .ok_or_else(|| anyhow::anyhow!("--public-key: expected 64 hex digits"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| anyhow::anyhow!("--public-key: not an Ed25519 public key"))?;
    let store = open_store(settings).await?;
    let reports = lockstep_persistence::audit::verify_all(store.as_ref(), &key).await?;
    let mut ok = true;
    for r in &reports {
        let verdict = if r.intact() { "intact" } else { "TAMPERED" };
        println!(
            "{verdict} {} {}: {} rows, {} under a valid signed root, {} pruned by retention, {} not linked yet, faults {:?}, bad seals {:?}",
            r.tenant_id,
            r.property_id,
            r.rows,
            r.sealed_rows,
            r.pruned_rows,
            r.pending_rows,
            r.faults,
            r.bad_seals
        );
        ok &= r.intact();
    }
    println!("{} chain(s) checked", reports.len());
    Ok(ok)
}

pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    match &settings.postgres {
        Some(pgs) => {
            let owner = pgs.owner_url.as_ref().ok_or_else(|| {
                anyhow::anyhow!("config key `database.owner_url` is needed to migrate")
            })?;
            pg::migrate(&resolve_secret(owner)?).await?;
        }
        None => {
            // Opening the SQLite store applies its migrations.
            open_store(settings).await?;
        }
    }
    info!("migrations applied");
    Ok(())
}

/// Runs the service until it is stopped.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = if settings.clock_scale > 1.0 {
        // chaos runs only: business time runs `scale` times faster than the wall
        warn!(scale = settings.clock_scale, "running on a scaled clock");
        Arc::new(
            ScaledClock::new(
                Arc::new(SystemClock),
                SystemClock.now(),
                settings.clock_scale,
            )
            .map_err(|e| anyhow::anyhow!("clock.scale: {e:?}"))?,
        )
    } else {
        Arc::new(SystemClock)
    };
    let store = open_store(&settings).await?;
    let ports = PortRegistry::default();
    let metrics = Metrics::new();

    let mut properties = settings.properties.clone();
    let mut _simulator: Option<RunningSimulator> = None;
    if settings.demo {
        let (sim, property) = crate::seed::demo(settings.simulator_bind)?;
        info!(url = %sim.base_url(), "built-in TTLock simulator listening");
        println!("ttlock simulator listening on {}", sim.base_url());
        _simulator = Some(sim);
        properties.push(property);
    }
    let mut worker = WorkerSettings {
        timeout: settings.saga.vendor_call_timeout,
        ..WorkerSettings::default()
    };
    if let Some(ms) = settings.breaker.account_probe_ms {
        worker.account_probe_every = Duration::from_millis(ms.max(100));
    }
    let deps = VendorDeps {
        clock: clock.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        worker,
        breaker: breaker_policy(&settings)?,
    };
    let offline_signer = offline_signer(&settings)?;
    let outbox_ready: Arc<tokio::sync::Notify> = Default::default();
    // The relay before the adapters: the card adapters encode through its hub.
    let relay = match &settings.relay {
        Some(r) => Some(Arc::new(
            crate::desk::RelayHost::start(crate::desk::RelayStart {
                settings: r,
                store: store.clone(),
                clock: clock.clone(),
                registry: metrics.registry.clone(),
                node_id: settings.node_id.clone(),
                own_sessions_only: settings.amqp.is_some(),
                signer: offline_signer.clone(),
                outbox_ready: outbox_ready.clone(),
            })
            .await?,
        )),
        None => None,
    };
    let desk = relay.as_ref().map(|r| crate::seed::Desk {
        dispatch: r.desk.clone(),
        relay_url: r.public_url.clone(),
    });
    for p in &properties {
        crate::seed::register_property(store.as_ref(), &ports, &deps, p, desk.as_ref()).await?;
        crate::seed::register_policy(store.as_ref(), clock.as_ref(), &ports, p).await?;
    }
    // V-2: where each adapter's secrets live and their fingerprint; then watched for rotation
    crate::seed::check_secret_rotation(store.as_ref(), clock.as_ref(), &properties).await?;
    {
        let every = settings
            .secret_check_interval
            .unwrap_or(Duration::from_secs(3600));
        let check = settings.secret_check_interval.is_some();
        let (store, clock, properties, metrics) = (
            store.clone(),
            clock.clone(),
            properties.clone(),
            metrics.clone(),
        );
        actix::spawn(async move {
            loop {
                if let Err(e) = crate::seed::refresh_rotation_gauges(
                    store.as_ref(),
                    clock.as_ref(),
                    &metrics,
                    &properties,
                )
                .await
                {
                    warn!(error = %e, "reading rotation dates failed");
                }
                tokio::time::sleep(every).await;
                if check {
                    if let Err(e) = crate::seed::check_secret_rotation(
                        store.as_ref(),
                        clock.as_ref(),
                        &properties,
                    )
                    .await
                    {
                        warn!(error = %e, "checking vendor secrets for rotation failed");
                    }
                }
            }
        });
    }
    // The demo also puts one property on each other vendor's simulator.
    let _vendor_demo = if settings.demo {
        Some(
            crate::seed::demo_vendors(store.as_ref(), &ports, &deps, settings.simulator_bind)
                .await?,
        )
    } else {
        None
    };

    let mut token_file = None;
    let service_token = match &settings.service_token {
        Some(src) => Some(resolve_secret(src)?),
        None if settings.mode == Mode::Embedded => {
            let path = settings.sqlite_path.with_file_name("service-token");
            let token = read_or_create(&path, || Cipher::generate_hex()[..40].to_owned())?;
            info!(path = %path.display(), "service token for the HTTP API is in this file");
            token_file = Some(path);
            Some(token)
        }
        None => {
            warn!("no http.service_token configured: the API refuses every authenticated call");
            None
        }
    };

    let fences = if settings.amqp.is_some() {
        FenceBook::enforcing()
    } else {
        FenceBook::default()
    };
    let rt = Runtime {
        store: store.clone(),
        ports,
        clock: clock.clone(),
        fences,
        metrics,
        failpoints: Arc::new(Failpoints::from_env()),
        settings: SagaSettings {
            max_issue_attempts: settings.saga.max_issue_attempts,
            retry_base: settings.saga.retry_base,
            retry_cap: settings.saga.retry_cap,
            vendor_call_timeout: settings.saga.vendor_call_timeout,
            passivate_after: settings.saga.passivate_after,
            outage_fallback_after: settings.saga.outage_fallback_after,
        },
        work: Default::default(),
        config: Default::default(),
        outbox_ready,
        audit_ready: Default::default(),
        steps: StepGate::new(step_permits(&settings)),
    };
    let anomalies = crate::anomalies::Anomalies::new(&properties)?;
    crate::anomalies::touch_series(&rt.metrics);
    let router = Router::new(rt.clone()).start();
    let jwt = settings.auth.as_ref().map(jwt_verifier).transpose()?;
    let shared = Arc::new(Shared {
        jwt,
        rt,
        router,
        schemas: EventSchemas::new(),
        service_token,
        node_id: settings.node_id.clone(),
        bus_ready: AtomicBool::new(settings.amqp.is_none()),
        recent_events: Mutex::new(VecDeque::new()),
        commands: crate::commands::CommandBus::new(settings.amqp.is_some()),
        webhook_tokens: crate::webhooks::WebhookTokens::new(cipher(&settings)?),
        properties: properties.clone(),
        amqp: settings.amqp.clone(),
        demo_webhook_secrets: _vendor_demo
            .iter()
            .flat_map(|d| d.webhooks.iter())
            .map(|w| (w.adapter.as_str().to_owned(), w.secret.clone()))
            .collect(),
        offline_signer,
        shutdown: crate::shutdown::Shutdown::new(),
        anomalies,
        relay,
        intake_backlog: Default::default(),
        admit_cache: Default::default(),
    });

    match &settings.amqp {
        None => {
            actix::spawn(bus::embedded::ticker(
                shared.clone(),
                Duration::from_secs(1),
            ));
            actix::spawn(bus::embedded::publisher(shared.clone()));
        }
        Some(a) => {
            let url = resolve_secret(&a.url)?;
            actix::spawn(bus::amqp::run(shared.clone(), a.clone(), url));
        }
    }
    let amqp = settings.amqp.is_some();
    {
        let mut vendors: Vec<&str> = shared
            .rt
            .ports
            .adapters()
            .iter()
            .map(|(_, v)| v.as_str())
            .collect();
        vendors.sort_unstable();
        vendors.dedup();
        shared.rt.metrics.touch_known_series(&vendors);
    }
    actix::spawn(refresh_gauges(shared.clone()));
    {
        let mut tenants: Vec<_> = shared
            .rt
            .ports
            .adapters()
            .into_iter()
            .map(|(i, _)| i.tenant_id)
            .collect();
        tenants.sort();
        tenants.dedup();
        let previous = settings
            .previous_keys
            .iter()
            .map(|k| k.version.clone())
            .collect();
        actix::spawn(reencrypt_all(shared.rt.store.clone(), tenants, previous));
    }
    // issue 11: steps write audit rows unlinked; the linker chains them
    actix::spawn(crate::upkeep::audit_linker(
        shared.rt.store.clone(),
        shared.rt.audit_ready.clone(),
    ));
    {
        let metrics = crate::upkeep::RetentionMetrics::register(&shared.rt.metrics.registry)?;
        if let Some(every) = settings.retention.interval {
            actix::spawn(crate::upkeep::retention_loop(
                shared.rt.store.clone(),
                shared.rt.clock.clone(),
                metrics,
                crate::upkeep::policy(&settings.retention),
                every,
            ));
        }
    }
    if let Some(every) = settings.drift_interval {
        actix::spawn(drift_loop(
            shared.clone(),
            every,
            settings.amqp.as_ref().map(|a| a.partitions),
            // The demo's simulators start empty on every run: its first pass, at start-up,
            // puts back what the store says is at the doors, so the door truth is true.
            settings.demo,
        ));
    }

    let embedded = settings.mode == Mode::Embedded;
    let data = web::Data::new(shared.clone());
    let read_timeout = settings.http_read_timeout;
    let server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(crate::http::body_deadline))
            .wrap(crate::http::error_bodies())
            .app_data(data.clone())
            .app_data(crate::http::BodyTimeout(read_timeout))
            .configure(|cfg| crate::http::configure(cfg, embedded))
    })
    .workers(2)
    // a client that stalls is cut off (issue 14): its head within the read timeout (408),
    // then its body within the same again (`http::body_deadline`)
    .client_request_timeout(read_timeout)
    .client_disconnect_timeout(read_timeout)
    // SIGTERM and SIGINT drain the node first (below); then the server stops.
    .disable_signals()
    .bind(settings.http_bind)
    .with_context(|| format!("binding {}", settings.http_bind))?;
    let addrs: Vec<SocketAddr> = server.addrs();
    for a in &addrs {
        // Tests and scripts wait for this line to learn the port.
        info!(addr = %a, "http listening");
        println!("lockstep http listening on http://{a}");
    }
    // The demo's simulators post their door attempts to this node, as the vendors would:
    // TTLock's records callback, the others' signed webhooks.
    if let Some(a) = addrs.first() {
        let url = |vendor, id: &str| -> anyhow::Result<String> {
            let id = lockstep_domain::VendorAdapterId::parse(id)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Ok(format!(
                "http://{a}{}",
                shared.webhook_tokens.path(vendor, &id)
            ))
        };
        if let Some(sim) = &_simulator {
            sim.handle().set_callback(Some(url(
                lockstep_domain::VendorCode::Ttlock,
                crate::seed::DEMO_ADAPTER,
            )?));
        }
        for w in _vendor_demo.iter().flat_map(|d| d.webhooks.iter()) {
            (w.point)(Some((url(w.vendor, w.adapter.as_str())?, w.secret.clone())));
        }
    }
    {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mode = match (&settings.postgres, &settings.amqp) {
            (None, _) => format!(
                "embedded: SQLite at {}, in-process bus",
                settings.sqlite_path.display()
            ),
            (Some(_), Some(_)) => "production: Postgres, RabbitMQ".to_owned(),
            (Some(_), None) => "Postgres, in-process bus".to_owned(),
        };
        rows.push(("mode".into(), mode));
        for a in &addrs {
            rows.push(("API".into(), format!("http://{a}/api/v1")));
            rows.push(("OpenAPI".into(), format!("http://{a}/api/v1/openapi.json")));
        }
        if let Some(path) = &token_file {
            rows.push(("service token".into(), format!("in {}", path.display())));
        }
        if let Some(r) = &shared.relay {
            rows.push(("desk relay".into(), r.public_url.clone()));
        }
        if let Some(sim) = &_simulator {
            rows.push(("ttlock simulator".into(), sim.base_url()));
        }
        if let Some(d) = &_vendor_demo {
            for (vendor, url) in &d.urls {
                rows.push((format!("{vendor} simulator"), url.clone()));
            }
        }
        if settings.demo {
            rows.push(("demo tenant".into(), crate::seed::DEMO_TENANT.to_owned()));
        }
        println!("{}", banner(&rows));
    }
    let server = server.run();
    let handle = server.handle();
    let serving = tokio::spawn(server);
    tokio::select! {
        r = stop_signal() => r?,
        r = serving => return r.context("http server task").and_then(|r| r.context("http server")),
    }
    drain(&shared, amqp).await;
    handle.stop(true).await;
    // The pools close inside the runtime: dropped after it, sqlx panics on the way out.
    shared.rt.store.close().await;
    info!("stopped");
    Ok(())
}

/// The start-up banner: a framed block of where the node listens, set apart from the log
/// lines around it.
fn banner(rows: &[(String, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let rule = "=".repeat(72);
    let mut out = format!(
        "\n{rule}\n  Lockstep {} is ready\n",
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in rows {
        out.push_str(&format!("  {k:<width$}  {v}\n"));
    }
    out.push_str(&rule);
    out.push('\n');
    out
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: draining"),
            _ = int.recv() => info!("SIGINT: draining"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("waiting for ctrl-c")?;
        info!("ctrl-c: draining");
    }
    Ok(())
}

/// SIGTERM drains (DESIGN §4): nothing new starts, intake stops, running saga steps
/// finish (a vendor call in flight completes or times out, and is committed), the outbox
/// is published, and the broker connection is closed; bounded by the vendor call timeout
/// plus a little. What is left stays due in the store for the next owner.
async fn drain(shared: &Arc<Shared>, amqp: bool) {
    shared.rt.work.drain();
    // Desktops first: their sessions are closed, stored and in the outbox before the bus
    // flushes it; an encode in flight answers `ShuttingDown` and its step parks.
    if let Some(relay) = &shared.relay {
        relay.shutdown().await;
    }
    shared.shutdown.begin();
    let grace = shared.rt.settings.vendor_call_timeout + Duration::from_secs(20);
    if amqp {
        if !shared.shutdown.wait_bus_closed(grace).await {
            warn!("draining took too long; stopping anyway");
        }
    } else if tokio::time::timeout(grace, shared.rt.work.idle())
        .await
        .is_err()
    {
        warn!("draining took too long; stopping anyway");
    }
}

/// Drift reconciliation (DESIGN §6): every `every`, the properties of the partitions this
/// node owns (all of them in embedded mode) are compared with what their vendors hold.
async fn drift_loop(
    shared: Arc<Shared>,
    every: Duration,
    partitions: Option<u32>,
    first_at_start: bool,
) {
    let mut first = first_at_start;
    loop {
        if !std::mem::take(&mut first) {
            tokio::time::sleep(every).await;
        }
        let owned: Vec<i32> = match partitions {
            None => vec![0],
            Some(n) => (0..n as i32)
                .filter(|p| shared.rt.fences.get(*p).is_some())
                .collect(),
        };
        for p in owned {
            let props = match shared.rt.store.properties_in_partition(p).await {
                Ok(v) => v,
                Err(e) => {
                    warn!(partition = p, error = %e, "drift: listing properties failed");
                    continue;
                }
            };
            for (tenant, property) in props {
                match lockstep_actors::drift::reconcile_property(&shared.rt, tenant, &property, p)
                    .await
                {
                    Ok(r) if r.orphans_deleted + r.missing_reissued > 0 => {
                        info!(%property, orphans = r.orphans_deleted, missing = r.missing_reissued, "drift repaired");
                    }
                    Ok(_) => {}
                    Err(e) => warn!(%property, error = %e, "drift reconciliation failed"),
                }
            }
        }
    }
}

/// The breaker policy: the domain's defaults (spec `002`) with the configured overrides.
fn breaker_policy(settings: &Settings) -> anyhow::Result<BreakerPolicy> {
    let b = &settings.breaker;
    let ms = |v: u64| chrono::Duration::milliseconds(v as i64);
    let mut p = BreakerPolicy::default();
    if let Some(v) = b.window_ms {
        p.window = ms(v);
    }
    if let Some(v) = b.min_calls {
        p.min_calls = v;
    }
    if let Some(v) = b.error_rate {
        p.error_rate = v;
    }
    if let Some(v) = b.p99_ms {
        p.p99_latency = ms(v);
    }
    if let Some(v) = b.open_ms {
        p.open_for = ms(v);
        p.open_for_max = p.open_for_max.max(p.open_for);
    }
    if let Some(v) = b.open_max_ms {
        p.open_for_max = ms(v);
    }
    if let Some(v) = b.half_open_probes {
        p.half_open_probes = v;
    }
    p.validate()
        .map_err(|e| anyhow::anyhow!("config key `breaker` is invalid: {e:?}"))?;
    Ok(p)
}

async fn refresh_gauges(shared: Arc<Shared>) {
    loop {
        let now = shared.rt.clock.now();
        let m = &shared.rt.metrics;
        // readiness as a metric, judged as /readyz judges it
        let store_ok = matches!(
            tokio::time::timeout(Duration::from_millis(800), shared.rt.store.ping()).await,
            Ok(Ok(()))
        );
        let ready = store_ok
            && shared.bus_ready.load(std::sync::atomic::Ordering::SeqCst)
            && !shared.shutdown.is_begun();
        m.ready.set(i64::from(ready));
        if let Ok((n, oldest)) = shared.rt.store.mailbox_depth().await {
            m.mailbox_open.set(n);
            m.mailbox_oldest_due_age_seconds
                .set(oldest.map(|t| (now - t).num_seconds().max(0)).unwrap_or(0));
        }
        if let Ok(b) = shared.rt.store.door_backlog().await {
            m.door_pending_removals.set(b.pending_removals);
            m.door_pending_issues.set(b.pending_issues);
            m.door_oldest_pending_removal_age_seconds.set(
                b.oldest_pending_removal
                    .map(|t| (now - t).num_seconds().max(0))
                    .unwrap_or(0),
            );
        }
        if let Ok(topics) = shared.rt.store.unroutable_topics().await {
            m.outbox_unroutable.set(topics.iter().map(|(_, n)| n).sum());
        }
        if let Ok((n, oldest)) = shared.rt.store.outbox_lag().await {
            m.outbox_unpublished.set(n);
            m.outbox_oldest_age_seconds
                .set(oldest.map(|t| (now - t).num_seconds().max(0)).unwrap_or(0));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
