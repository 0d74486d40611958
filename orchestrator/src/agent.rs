//! `lockstep agent`: the reference front-desk client (DESIGN §8) around
//! `lockstep_relay::agent`: it connects to a relay, authenticates with the Ed25519 key its
//! offline-issuance certificate binds, drives simulated USB encoders, and keeps spec
//! `004` §7's local SQLite mirror (its certificate, its sessions, the cards it encoded),
//! so a card encoded just before the agent was killed is answered again after a restart
//! rather than encoded twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use lockstep_domain::{Clock, OfflineIssuanceId, PropertyId, SystemClock, TenantId};
use lockstep_persistence::mirror::{DeskMirror, MirroredCard};
use lockstep_relay::agent::{
    Agent, AgentConfig, AgentHost, AgentKey, AgentStatus, AttachedEncoder, EncodedJobs,
    SimulatedEncoder, StoredEncode,
};
use lockstep_relay::protocol::{
    CardNumber, EncodeJob, EncoderId, EncoderInfo, IdempotencyKey, SignatureB64, Transport,
};
use tracing::{info, warn};

/// What `lockstep agent run` is given.
#[derive(Debug, Clone)]
pub struct AgentArgs {
    /// The relay (`ws://host:port/relay/v1`).
    pub url: String,
    /// The desktop's Ed25519 seed (64 hex digits; `lockstep agent keygen` writes one).
    pub key_file: PathBuf,
    /// Its certificate (`oki_…`).
    pub certificate_id: String,
    /// Tenant (uuid).
    pub tenant: String,
    /// Property.
    pub property: String,
    /// The desktop id the certificate binds.
    pub desktop_id: String,
    /// Lockstep's signature over the certificate (base64), when the relay does not keep it.
    pub certificate_signature: Option<String>,
    /// Only sign for a relay announcing this audience.
    pub audience: Option<String>,
    /// The SQLite mirror file.
    pub mirror: PathBuf,
    /// Simulated encoders.
    pub encoders: usize,
    /// How long the simulated encoder takes per card.
    pub encode_time: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

/// `lockstep agent keygen`: writes a fresh key (hex seed, mode 0600) and prints its public
/// half in base64, the `publicKeyEd25519` of the certificate request.
pub fn keygen(key_file: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !key_file.exists(),
        "{} exists: a desktop keeps its key (remove it to pair again)",
        key_file.display()
    );
    // 32 bytes from the OS CSPRNG, in hex, like Lockstep's own keys.
    let hex = lockstep_persistence::Cipher::generate_hex();
    write_private(key_file, &hex)?;
    println!(
        "{}",
        AgentKey::from_seed(read_seed(key_file)?).public_key_base64()
    );
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
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

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    Ok(())
}

fn read_seed(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    lockstep_persistence::audit::key_bytes(&text)
        .ok_or_else(|| anyhow::anyhow!("{}: expected 64 hex digits", path.display()))
}

/// The agent's record of encoded cards, in the mirror.
struct MirrorJobs {
    mirror: DeskMirror,
}

#[async_trait]
impl EncodedJobs for MirrorJobs {
    async fn get(&self, key: &IdempotencyKey) -> Option<StoredEncode> {
        match self.mirror.card(key.as_str()).await {
            Ok(Some((number, encoder, at))) => Some(StoredEncode {
                card_number: CardNumber::parse(&number).ok()?,
                encoder_id: EncoderId::parse(&encoder).ok()?,
                completed_at: at,
            }),
            Ok(None) => None,
            Err(e) => {
                warn!(error = %e, "reading the mirror failed");
                None
            }
        }
    }

    async fn put(&self, job: &EncodeJob, encode: StoredEncode) {
        let card = MirroredCard {
            idempotency_key: job.idempotency_key.as_str().to_owned(),
            credential_id: job.credential_id.clone(),
            rooms: job.rooms.clone(),
            valid_from: job.valid_from,
            valid_until: job.valid_until,
            card_number: encode.card_number.expose().to_owned(),
            encoder_id: encode.encoder_id.as_str().to_owned(),
            completed_at: encode.completed_at,
        };
        // The card exists: keep trying to write it down before its result is sent.
        let mut wait = Duration::from_millis(100);
        for attempt in 1..=10 {
            match self.mirror.record_card(&card).await {
                Ok(()) => {
                    info!(job_id = %job.job_id, credential = %job.credential_id, "card encoded");
                    return;
                }
                Err(e) => {
                    warn!(attempt, error = %e, "recording an encoded card failed");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Sessions into the mirror.
struct MirrorHost {
    mirror: DeskMirror,
    url: String,
    clock: Arc<dyn Clock>,
}

#[async_trait]
impl AgentHost for MirrorHost {
    async fn connected(&self, session_id: &str) {
        println!("agent connected: session {session_id}");
        if let Err(e) = self
            .mirror
            .session_opened(session_id, &self.url, self.clock.now())
            .await
        {
            warn!(error = %e, "recording the session failed");
        }
    }

    async fn disconnected(&self, reason: &'static str) {
        if let Err(e) = self.mirror.sessions_closed(reason, self.clock.now()).await {
            warn!(error = %e, "recording the session's end failed");
        }
    }
}

/// `lockstep agent run`: serves the desk until SIGTERM or ctrl-c, or until the relay
/// refuses it for good (exit 1).
pub async fn run(a: AgentArgs) -> anyhow::Result<()> {
    let tenant = TenantId::parse(&a.tenant).map_err(|_| anyhow::anyhow!("--tenant: not a uuid"))?;
    let property = PropertyId::parse(&a.property)
        .map_err(|_| anyhow::anyhow!("--property: not a property id"))?;
    let certificate = OfflineIssuanceId::parse(&a.certificate_id)
        .map_err(|_| anyhow::anyhow!("--certificate-id: not an oki_ id"))?;
    anyhow::ensure!(
        (1..=16).contains(&a.encoders),
        "--encoders: 1 to 16 simulated encoders"
    );
    let key = AgentKey::from_seed(read_seed(&a.key_file)?);
    if let Some(dir) = a.mirror.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mirror = DeskMirror::open(&a.mirror.to_string_lossy())
        .await
        .with_context(|| format!("opening the mirror {}", a.mirror.display()))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    mirror
        .record_certificate(
            certificate.as_str(),
            &tenant.to_string(),
            property.as_str(),
            &a.desktop_id,
            &key.public_key_base64(),
            clock.now(),
        )
        .await?;
    let mut config = AgentConfig::new(
        a.url.clone(),
        certificate,
        tenant,
        property,
        a.desktop_id.clone(),
    );
    config.certificate_signature = a
        .certificate_signature
        .as_deref()
        .map(|s| SignatureB64::try_from(s.to_owned()))
        .transpose()
        .map_err(|_| anyhow::anyhow!("--certificate-signature: base64 of 64 bytes"))?;
    config.expected_audience = a.audience.clone();
    config.backoff_max = a.backoff_max.max(config.backoff_min);
    let encoders = (0..a.encoders)
        .map(|i| {
            Ok(AttachedEncoder {
                info: EncoderInfo {
                    encoder_id: EncoderId::parse(&format!("sim-{i}"))
                        .map_err(|_| anyhow::anyhow!("encoder id"))?,
                    model: "simulated".into(),
                    transport: Transport::UsbHid,
                },
                encoder: Arc::new(SimulatedEncoder::new(a.encode_time)),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let agent = Agent::spawn_hosted(
        config,
        key,
        encoders,
        Arc::new(MirrorJobs {
            mirror: mirror.clone(),
        }),
        clock.clone(),
        Arc::new(MirrorHost {
            mirror: mirror.clone(),
            url: a.url.clone(),
            clock: clock.clone(),
        }),
    );
    println!("agent {} connecting to {}", a.desktop_id, a.url);
    let refused = tokio::select! {
        r = stop_signal() => { r?; None }
        s = agent.wait_for(|s| matches!(s, AgentStatus::Refused(r) if r.is_permanent()), Duration::MAX) => s,
    };
    agent.stop().await;
    mirror.sessions_closed("agent_stopped", clock.now()).await?;
    mirror.close().await;
    match refused {
        Some(AgentStatus::Refused(reason)) => {
            anyhow::bail!(
                "the relay refused this desktop for good: {}",
                reason.as_str()
            )
        }
        _ => {
            println!("agent stopped");
            Ok(())
        }
    }
}
