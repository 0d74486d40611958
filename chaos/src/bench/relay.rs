//! The desktop relay under a fleet (issue 12; the `lockstep-relay-bench` binary): the
//! relay server the `lockstep` binary serves (`lockstep_relay::RelayServer` and its `Hub`),
//! started in this process on 127.0.0.1 with the production defaults, and N reference
//! agents (`lockstep_relay::agent::Agent`, each a real WebSocket client with one simulated
//! encoder) spread over M properties. It measures how long the fleet takes to connect,
//! then dispatches jobs through `Hub::dispatch` with a window of them in flight and
//! measures each job from dispatch to result, and finally checks that every job's
//! idempotency key was encoded exactly once at the simulated encoders.
//!
//! Everything runs in one process on one runtime: both ends of every connection share the
//! machine's CPUs, as they do in [`super::echo`], the baseline it is read against. The
//! host's work (the session rows and events the `lockstep` binary writes, the dispatch
//! journal) is not in it: session events are kept in memory, jobs go without a journal.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::TimeDelta;
use lockstep_domain::{
    Clock, KeyCredentialId, KeyCredentialKind, OfflineIssuance, PropertyId, RoomId, SystemClock,
    TenantId, ValidityWindow,
};
use lockstep_relay::agent::{
    Agent, AgentConfig, AgentHandle, AgentKey, AttachedEncoder, MemoryEncodedJobs, SimulatedEncoder,
};
use lockstep_relay::protocol::{
    self, CardKind, EncodeJob, EncoderId, EncoderInfo, IdempotencyKey, JobId, ServerMessage,
    Transport,
};
use lockstep_relay::{
    DeferAll, EncodeRequest, Hub, IssuedCertificate, JobOutcome, MemoryCertificateDirectory,
    RecordedSessionEvents, RelayConfig, RelayDeps, RelayServer,
};
use tokio::task::JoinSet;

use super::sys;

/// What the relay benchmark does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayPlan {
    /// Agents (desktops), one WebSocket connection and one simulated encoder each.
    pub agents: usize,
    /// Properties the agents are spread over (agent i at property i mod M; jobs likewise).
    pub properties: usize,
    /// Jobs dispatched, each with its own idempotency key.
    pub jobs: usize,
    /// Jobs in flight at once (closed loop: a job is dispatched when one comes back).
    pub window: usize,
    /// Time the simulated encoder takes per card.
    pub encode_delay: Duration,
    /// `RelayConfig::max_unauthenticated` (the production default unless told).
    pub max_unauthenticated: usize,
    /// How long the fleet may take to connect before the run gives up.
    pub connect_timeout: Duration,
}

/// The fleet connecting.
#[derive(Clone, Debug, PartialEq)]
pub struct Connect {
    /// Agents connected (all of them, or the run failed).
    pub agents: usize,
    /// From the first agent spawned to the last one authenticated.
    pub took: Duration,
    /// Connections and frames the relay refused while they connected, by reason
    /// (`too_many_connections`: over `max_unauthenticated`; those agents retried with their
    /// backoff).
    pub refused: BTreeMap<String, f64>,
    /// This process's RSS after the relay bound, before any agent (bytes).
    pub rss_before: Option<u64>,
    /// With every agent connected, jobs not yet sent (bytes).
    pub rss_connected: Option<u64>,
}

/// The jobs.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    /// Jobs dispatched.
    pub jobs: usize,
    /// First dispatch to last outcome.
    pub took: Duration,
    /// Each job from `Hub::dispatch` called to its outcome, milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Outcomes `Encoded`.
    pub encoded: usize,
    /// Anything else, by kind, with the first of each.
    pub other: BTreeMap<String, (usize, String)>,
    /// `lockstep_relay_job_reroutes_total` over the run.
    pub reroutes: f64,
    /// CPU seconds this process spent over the jobs (relay and agents together).
    pub cpu_seconds: f64,
    /// CPU seconds other processes of the machine spent meanwhile.
    pub others_cpu_seconds: f64,
}

impl Dispatch {
    /// Jobs answered per second.
    pub fn rate(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

/// The check after the jobs: every job's key encoded exactly once, counted at the
/// simulated encoders.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExactlyOnce {
    /// Keys dispatched.
    pub keys: usize,
    /// Encoded exactly once.
    pub once: usize,
    /// Encoded twice or more.
    pub more: usize,
    /// Never encoded.
    pub never: usize,
    /// Encodes of keys no job carried.
    pub strangers: usize,
    /// Encodes in all.
    pub encodes: usize,
}

impl ExactlyOnce {
    /// Counts `encoded` (every key each encoder encoded, all encoders together) against
    /// the keys of jobs `0..jobs`.
    pub fn count(jobs: usize, encoded: impl IntoIterator<Item = IdempotencyKey>) -> Self {
        let mut times: HashMap<String, usize> = HashMap::new();
        let mut encodes = 0;
        for key in encoded {
            *times.entry(key.as_str().to_owned()).or_default() += 1;
            encodes += 1;
        }
        let mut check = Self {
            keys: jobs,
            encodes,
            ..Self::default()
        };
        for n in 0..jobs {
            match times.remove(&key_name(n)) {
                None => check.never += 1,
                Some(1) => check.once += 1,
                Some(_) => check.more += 1,
            }
        }
        check.strangers = times.values().sum();
        check
    }

    /// Every key once, nothing else.
    pub fn holds(&self) -> bool {
        self.once == self.keys && self.encodes == self.keys
    }
}

/// Everything the relay benchmark measured.
#[derive(Clone, Debug, PartialEq)]
pub struct RelayFigures {
    /// The plan it ran.
    pub plan: RelayPlan,
    /// The fleet connecting.
    pub connect: Connect,
    /// The jobs.
    pub dispatch: Dispatch,
    /// The exactly-once check.
    pub check: ExactlyOnce,
    /// This process's peak RSS at the end (bytes).
    pub peak_rss: Option<u64>,
}

impl RelayFigures {
    /// Every job came back encoded and every key was encoded exactly once.
    pub fn exactly_once(&self) -> bool {
        self.check.holds() && self.dispatch.encoded == self.plan.jobs
    }
}

fn key_name(n: usize) -> String {
    format!("card-{n}")
}

fn property(p: usize) -> anyhow::Result<PropertyId> {
    PropertyId::parse(&format!("ppt_bench{p:05}")).context("a bench property id")
}

/// The relay as the `lockstep` binary configures it by default, with this run's issuer
/// key and audience.
fn relay_config(plan: &RelayPlan, issuer: &ed25519_dalek::SigningKey) -> RelayConfig {
    RelayConfig {
        audience: "lockstep-relay-bench".into(),
        issuer_key: Some(issuer.verifying_key()),
        max_unauthenticated: plan.max_unauthenticated,
        ..RelayConfig::default()
    }
}

/// Job `n` of the run, at property `n mod M`.
fn request(
    n: usize,
    tenant: TenantId,
    properties: &[PropertyId],
    clock: &dyn Clock,
) -> anyhow::Result<EncodeRequest> {
    let now = clock.now();
    Ok(EncodeRequest {
        job_id: JobId::parse(&format!("job-{n}"))?,
        tenant_id: tenant,
        property_id: properties[n % properties.len()].clone(),
        credential_id: KeyCredentialId::generate(),
        kind: KeyCredentialKind::RfidCard,
        rooms: vec![RoomId::parse(&format!("rmu_{}", 100 + n % 50))?],
        doors: vec![],
        validity: ValidityWindow::new(now, now + TimeDelta::hours(48))?,
        idempotency_key: IdempotencyKey::parse(&key_name(n))?,
        prefer_desktop: None,
        only_desktops: None,
        ack_timeout: None,
    })
}

/// The `encode_job` frame the relay writes for the run's last job (the longest ids), as
/// the echo baseline's message.
pub fn job_frame(plan: &RelayPlan) -> anyhow::Result<String> {
    let clock = SystemClock;
    let props = [property(0)?];
    let r = request(
        plan.jobs.saturating_sub(1),
        TenantId::generate(),
        &props,
        &clock,
    )?;
    let job = EncodeJob {
        job_id: r.job_id,
        credential_id: r.credential_id.as_str().to_owned(),
        kind: CardKind::RfidCard,
        rooms: r.rooms.iter().map(|x| x.as_str().to_owned()).collect(),
        doors: vec![],
        valid_from: r.validity.from(),
        valid_until: r.validity.until(),
        idempotency_key: r.idempotency_key,
    };
    Ok(protocol::encode(&ServerMessage::EncodeJob(job)))
}

/// A metric of `registry` summed by the value of its first label (`""` without labels).
fn metric(registry: &prometheus::Registry, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
        for m in family.get_metric() {
            let label = m
                .get_label()
                .first()
                .map(|l| l.value().to_owned())
                .unwrap_or_default();
            let v = if counter {
                m.get_counter().get_value()
            } else {
                m.get_gauge().get_value()
            };
            *out.entry(label).or_default() += v;
        }
    }
    out
}

struct Fleet {
    agents: Vec<AgentHandle>,
    encoders: Vec<Arc<SimulatedEncoder>>,
}

/// Where the fleet connects, and who vouches for it.
struct Site<'a> {
    url: &'a str,
    audience: &'a str,
    tenant: TenantId,
    properties: &'a [PropertyId],
    issuer: &'a ed25519_dalek::SigningKey,
    directory: &'a MemoryCertificateDirectory,
    clock: &'a Arc<dyn Clock>,
}

/// Issues a certificate per agent (signed by the site's issuer, stored in its directory)
/// and spawns the agents, all at once, as a relay restart sees them come back.
fn spawn_fleet(plan: &RelayPlan, site: &Site<'_>) -> anyhow::Result<Fleet> {
    use rand::RngCore as _;
    let mut fleet = Fleet {
        agents: Vec::with_capacity(plan.agents),
        encoders: Vec::with_capacity(plan.agents),
    };
    for i in 0..plan.agents {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let key = AgentKey::from_seed(seed);
        let desktop = format!("desk-{i}");
        let certificate = OfflineIssuance::issue(
            site.tenant,
            site.properties[i % site.properties.len()].clone(),
            &desktop,
            &key.public_key_base64(),
            vec![KeyCredentialKind::RfidCard],
            &[KeyCredentialKind::RfidCard],
            48,
            site.clock.now(),
        )?;
        let signature =
            ed25519_dalek::Signer::sign(site.issuer, certificate.signed_payload().as_bytes());
        site.directory.insert(IssuedCertificate {
            certificate: certificate.clone(),
            issuer_signature: Some(signature),
        });
        let encoder = Arc::new(SimulatedEncoder::new(plan.encode_delay));
        let attached = AttachedEncoder {
            info: EncoderInfo {
                encoder_id: EncoderId::parse("enc-0")?,
                model: "simulated".into(),
                transport: Transport::UsbHid,
            },
            encoder: encoder.clone(),
        };
        let mut config = AgentConfig::new(
            site.url,
            certificate.id.clone(),
            site.tenant,
            certificate.property_id.clone(),
            desktop,
        );
        config.expected_audience = Some(site.audience.to_owned());
        // Known, so no agent asks the relay for its expiry (a renewal request) at connect.
        config.certificate_expires_at = Some(certificate.expires_at);
        fleet.agents.push(Agent::spawn(
            config,
            key,
            vec![attached],
            Arc::new(MemoryEncodedJobs::default()),
            site.clock.clone(),
        ));
        fleet.encoders.push(encoder);
    }
    Ok(fleet)
}

/// Waits until `n` desktops are connected, at most `within`.
async fn wait_connected(hub: &Hub, n: usize, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let now = hub.connected();
        if now >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {now} of {n} agents connected within {} s",
                within.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What one dispatch worker saw.
#[derive(Default)]
struct WorkerLog {
    latencies_ms: Vec<f64>,
    encoded: usize,
    other: BTreeMap<String, (usize, String)>,
    finished: Option<Instant>,
}

/// Dispatches jobs `0..jobs` through `hub`, `window` at a time.
async fn dispatch_all(
    hub: &Hub,
    plan: &RelayPlan,
    tenant: TenantId,
    properties: Arc<[PropertyId]>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Duration, WorkerLog)> {
    let claimed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..plan.window.min(plan.jobs) {
        let (hub, claimed, properties, clock) = (
            hub.clone(),
            claimed.clone(),
            properties.clone(),
            clock.clone(),
        );
        let jobs = plan.jobs;
        workers.spawn(async move {
            let mut log = WorkerLog::default();
            loop {
                let n = claimed.fetch_add(1, Ordering::Relaxed);
                if n >= jobs {
                    break;
                }
                let request = request(n, tenant, &properties, clock.as_ref())?;
                let sent = Instant::now();
                let outcome = hub.dispatch(request).await;
                log.latencies_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                let (kind, detail) = match outcome {
                    Ok(JobOutcome::Encoded(_)) => {
                        log.encoded += 1;
                        continue;
                    }
                    Ok(JobOutcome::Failed(f)) => ("failed".to_owned(), format!("{f:?}")),
                    Err(e) => (format!("error: {e}"), format!("job-{n}: {e:?}")),
                };
                log.other.entry(kind).or_insert((0, detail)).0 += 1;
            }
            log.finished = Some(Instant::now());
            anyhow::Ok(log)
        });
    }
    let mut all = WorkerLog::default();
    let mut last = started;
    while let Some(done) = workers.join_next().await {
        let log = done.context("a dispatch worker task")??;
        all.latencies_ms.extend(log.latencies_ms);
        all.encoded += log.encoded;
        for (kind, (count, first)) in log.other {
            all.other.entry(kind).or_insert((0, first)).0 += count;
        }
        last = last.max(log.finished.unwrap_or(last));
    }
    Ok((last - started, all))
}

/// Runs the relay benchmark: the relay, the fleet, the jobs, the check. `on_connected` is
/// called with the connect figures as soon as they are measured (the caller prints them).
pub async fn run(
    plan: &RelayPlan,
    on_connected: impl FnOnce(&Connect),
) -> anyhow::Result<RelayFigures> {
    if plan.agents < plan.properties || plan.properties == 0 || plan.jobs == 0 {
        bail!("the relay benchmark needs at least one agent per property, and jobs");
    }
    let issuer = {
        use rand::RngCore as _;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        ed25519_dalek::SigningKey::from_bytes(&seed)
    };
    let config = relay_config(plan, &issuer);
    let directory = Arc::new(MemoryCertificateDirectory::default());
    let registry = prometheus::Registry::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = RelayServer::bind(
        "127.0.0.1:0",
        config.clone(),
        RelayDeps {
            certificates: directory.clone(),
            events: Arc::new(RecordedSessionEvents::default()),
            clock: clock.clone(),
            registry: registry.clone(),
            reconciler: Arc::new(DeferAll),
        },
    )
    .await
    .context("binding the relay")?;
    let hub = server.hub();
    let url = format!("ws://{}/relay/v1", server.local_addr());
    let tenant = TenantId::generate();
    let properties: Arc<[PropertyId]> = (0..plan.properties)
        .map(property)
        .collect::<anyhow::Result<Vec<_>>>()?
        .into();

    let rss_before = sys::own_rss_bytes();
    let started = Instant::now();
    let fleet = spawn_fleet(
        plan,
        &Site {
            url: &url,
            audience: &config.audience,
            tenant,
            properties: &properties,
            issuer: &issuer,
            directory: &directory,
            clock: &clock,
        },
    )?;
    wait_connected(&hub, plan.agents, plan.connect_timeout).await?;
    let connect = Connect {
        agents: hub.connected(),
        took: started.elapsed(),
        refused: metric(&registry, "lockstep_relay_refused_total"),
        rss_before,
        rss_connected: sys::own_rss_bytes(),
    };
    on_connected(&connect);

    let ticks = sys::clock_ticks();
    let cpu_before = sys::own_cpu_seconds(ticks);
    let busy_before = sys::machine_busy_seconds(ticks).0;
    let (took, log) = dispatch_all(&hub, plan, tenant, properties.clone(), clock.clone()).await?;
    let cpu_seconds = sys::own_cpu_seconds(ticks) - cpu_before;
    let others_cpu_seconds =
        (sys::machine_busy_seconds(ticks).0 - busy_before - cpu_seconds).max(0.0);
    let dispatch = Dispatch {
        jobs: plan.jobs,
        took,
        latencies_ms: log.latencies_ms,
        encoded: log.encoded,
        other: log.other,
        reroutes: metric(&registry, "lockstep_relay_job_reroutes_total")
            .values()
            .sum(),
        cpu_seconds,
        others_cpu_seconds,
    };
    let check = ExactlyOnce::count(plan.jobs, fleet.encoders.iter().flat_map(|e| e.encoded()));
    let peak_rss = sys::own_peak_rss_bytes();

    for agent in fleet.agents {
        agent.kill();
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), server.shutdown()).await;
    Ok(RelayFigures {
        plan: plan.clone(),
        connect,
        dispatch,
        check,
        peak_rss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> IdempotencyKey {
        IdempotencyKey::parse(&key_name(n)).expect("a valid key")
    }

    #[test]
    fn exactly_once_holds_only_when_every_key_is_encoded_once_and_nothing_else() {
        assert!(ExactlyOnce::count(3, [key(2), key(0), key(1)]).holds());
        let twice = ExactlyOnce::count(3, [key(0), key(1), key(1)]);
        assert_eq!((twice.once, twice.more, twice.never), (1, 1, 1));
        assert!(!twice.holds());
        let stranger = ExactlyOnce::count(2, [key(0), key(1), key(7)]);
        assert_eq!((stranger.once, stranger.strangers), (2, 1));
        assert!(!stranger.holds());
    }

    #[test]
    fn the_echo_message_is_an_encode_job_frame() {
        let plan = RelayPlan {
            agents: 1,
            properties: 1,
            jobs: 20_000,
            window: 1,
            encode_delay: Duration::ZERO,
            max_unauthenticated: 256,
            connect_timeout: Duration::from_secs(1),
        };
        let frame = job_frame(&plan).expect("a frame");
        assert!(
            matches!(
                protocol::decode_server(&frame),
                Ok(ServerMessage::EncodeJob(j)) if j.idempotency_key.as_str() == "card-19999"
            ),
            "{frame}"
        );
    }
}
