//! The reference desktop agent (DESIGN §8): connects to the relay, authenticates with the
//! key its offline-issuance certificate binds, answers heartbeats, acknowledges every job
//! at once and encodes it on one of its encoders, reports the result, and reconnects with
//! exponential backoff and jitter. It encodes an idempotency key once: a job with a key it
//! has encoded is answered with the earlier result, and one whose key is being encoded
//! waits for that encode.
//!
//! Designed for what comes later: the record of encoded jobs is a trait ([`EncodedJobs`])
//! the SQLite mirror of spec `004` §7 implements, the encoder is a trait ([`Encoder`]) a
//! USB driver will implement, and the credentials the desk minted while cut off
//! ([`crate::mint`]) come from its [`AgentHost`] and go out as `provisional_batch` right
//! after each `welcome`.
//!
//! Its certificate is rotated before it expires (issue 12): once the certificate is in its
//! last 7 days, the agent makes a new key, asks the relay for a successor
//! (`renew_certificate`, signed by the new key), hands the successor and the key to its
//! host to keep durably ([`AgentHost::renewed`]), and only then reconnects with them. Until
//! the host has kept both, the old certificate and key stay in use.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use chrono::TimeDelta;
use futures_util::{SinkExt as _, StreamExt as _};
use lockstep_domain::offline::ROTATION_DUE_DAYS;
use lockstep_domain::{Clock, OfflineIssuanceId, PropertyId, TenantId, Timestamp};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use crate::protocol::{
    self, auth_payload, decode_server, renewal_payload, Auth, BatchId, CardNumber,
    CertificateRenewed, Challenge, DesktopMessage, EncodeFailure, EncodeJob, EncoderId,
    EncoderInfo, Hello, IdempotencyKey, JobAck, JobId, JobOutcomeKind, JobResult, ProvisionalBatch,
    ProvisionalCredential, PublicKeyB64, RefusalReason, RenewCertificate, RenewalId,
    RenewalRefusalReason, RenewalRefused, ServerMessage, SignatureB64, SyncResult,
    PROTOCOL_VERSION,
};

/// The desktop's Ed25519 key (the one its certificate binds). `Debug` shows only the
/// public half.
pub struct AgentKey(ed25519_dalek::SigningKey);

impl AgentKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Self {
        use rand::RngCore as _;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    /// The key of a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// The public key as the certificate carries it (base64).
    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.verifying_key().as_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> ed25519_dalek::Signature {
        ed25519_dalek::Signer::sign(&self.0, message)
    }

    /// The seed, only to write the key to the desktop's key file.
    pub fn expose_seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
}

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKey")
            .field("public", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

/// How the agent finds and names itself.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The relay, `ws://host:port/`.
    pub url: String,
    /// Its certificate.
    pub certificate_id: OfflineIssuanceId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// The desktop id the certificate binds.
    pub desktop_device_id: String,
    /// Reported in `hello`.
    pub agent_version: String,
    /// Lockstep's signature over the certificate, from the pairing call.
    pub certificate_signature: Option<SignatureB64>,
    /// When set, the agent signs only for a relay announcing this audience.
    pub expected_audience: Option<String>,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Connect + handshake must finish within this.
    pub handshake_timeout: Duration,
    /// When the certificate expires, when the desktop knows. Unknown, the agent asks the
    /// relay for a renewal once; a certificate not yet due is refused with its expiry.
    pub certificate_expires_at: Option<Timestamp>,
    /// How long after a renewal that failed (the relay or the host could not, or the answer
    /// did not check out) the agent asks again.
    pub renewal_retry: Duration,
}

impl AgentConfig {
    /// A configuration with default timings.
    pub fn new(
        url: impl Into<String>,
        certificate_id: OfflineIssuanceId,
        tenant_id: TenantId,
        property_id: PropertyId,
        desktop_device_id: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            certificate_id,
            tenant_id,
            property_id,
            desktop_device_id: desktop_device_id.into(),
            agent_version: concat!("lockstep-agent/", env!("CARGO_PKG_VERSION")).into(),
            certificate_signature: None,
            expected_audience: None,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            certificate_expires_at: None,
            renewal_retry: Duration::from_secs(60),
        }
    }
}

/// Why an encoder made no card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeError {
    /// The reason, as reported.
    pub failure: EncodeFailure,
    /// Lowercase detail, never a secret.
    pub detail: String,
}

/// A card encoder (a USB or serial device; simulated in tests).
#[async_trait]
pub trait Encoder: Send + Sync + 'static {
    /// Encodes one card for `job` and answers the number the reader read back.
    async fn encode(&self, job: &EncodeJob) -> Result<CardNumber, EncodeError>;
}

/// What a [`SimulatedEncoder`] does with the next job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimulatedMode {
    /// Encodes after the delay.
    Normal,
    /// Fails after the delay.
    Fail(EncodeFailure),
    /// Never finishes (a stuck encoder).
    Hang,
}

/// An encoder that "encodes" a card after a delay and answers a fresh random card number;
/// it keeps the idempotency keys it encoded so tests can count.
#[derive(Debug)]
pub struct SimulatedEncoder {
    delay: Duration,
    mode: Mutex<SimulatedMode>,
    encoded: Mutex<Vec<IdempotencyKey>>,
    started: AtomicUsize,
    hanging: AtomicUsize,
}

impl SimulatedEncoder {
    /// An encoder taking `delay` per card.
    pub fn new(delay: Duration) -> Self {
        Self {
            delay,
            mode: Mutex::new(SimulatedMode::Normal),
            encoded: Mutex::new(Vec::new()),
            started: AtomicUsize::new(0),
            hanging: AtomicUsize::new(0),
        }
    }

    /// Changes what the next jobs do.
    pub fn set_mode(&self, mode: SimulatedMode) {
        *self
            .mode
            .lock()
            .expect("simulated encoder mutex is never poisoned") = mode;
    }

    /// The keys encoded so far, in order.
    pub fn encoded(&self) -> Vec<IdempotencyKey> {
        self.encoded
            .lock()
            .expect("simulated encoder mutex is never poisoned")
            .clone()
    }

    /// Jobs started (encoded, failed or hanging).
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Jobs stuck in [`SimulatedMode::Hang`] now.
    pub fn hanging(&self) -> usize {
        self.hanging.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Encoder for SimulatedEncoder {
    async fn encode(&self, job: &EncodeJob) -> Result<CardNumber, EncodeError> {
        use rand::Rng as _;
        let mode = *self
            .mode
            .lock()
            .expect("simulated encoder mutex is never poisoned");
        self.started.fetch_add(1, Ordering::SeqCst);
        if mode == SimulatedMode::Hang {
            self.hanging.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.delay).await;
        if let SimulatedMode::Fail(failure) = mode {
            return Err(EncodeError {
                failure,
                detail: "simulated failure".into(),
            });
        }
        let number = rand::rngs::OsRng.gen_range(1_000_000_000u64..10_000_000_000u64);
        self.encoded
            .lock()
            .expect("simulated encoder mutex is never poisoned")
            .push(job.idempotency_key.clone());
        Ok(CardNumber::parse(&number.to_string())
            .expect("a 10-digit decimal number is a valid card number"))
    }
}

/// A card the agent encoded, kept per idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEncode {
    /// What the reader read.
    pub card_number: CardNumber,
    /// The encoder.
    pub encoder_id: EncoderId,
    /// When.
    pub completed_at: Timestamp,
}

/// The agent's record of encoded jobs (`lockstep agent` keeps it in spec `004` §7's SQLite
/// mirror). A card is recorded before its result is sent: an agent killed in between
/// answers the job from this record when it is sent again.
#[async_trait]
pub trait EncodedJobs: Send + Sync + 'static {
    /// The card encoded for `key`, if any.
    async fn get(&self, key: &IdempotencyKey) -> Option<StoredEncode>;
    /// Records the card encoded for `job` (its idempotency key).
    async fn put(&self, job: &EncodeJob, encode: StoredEncode);
}

/// [`EncodedJobs`] in memory.
#[derive(Debug, Default)]
pub struct MemoryEncodedJobs {
    jobs: Mutex<HashMap<IdempotencyKey, StoredEncode>>,
}

#[async_trait]
impl EncodedJobs for MemoryEncodedJobs {
    async fn get(&self, key: &IdempotencyKey) -> Option<StoredEncode> {
        self.jobs
            .lock()
            .expect("encoded jobs mutex is never poisoned")
            .get(key)
            .cloned()
    }

    async fn put(&self, job: &EncodeJob, encode: StoredEncode) {
        self.jobs
            .lock()
            .expect("encoded jobs mutex is never poisoned")
            .insert(job.idempotency_key.clone(), encode);
    }
}

/// A successor certificate the relay issued for the agent's new key (rotation).
#[derive(Clone, Debug)]
pub struct Renewal {
    /// The successor, naming in `replaces` the certificate it renews.
    pub certificate: lockstep_domain::OfflineIssuance,
    /// Lockstep's signature over it.
    pub signature: SignatureB64,
    /// The new key it binds.
    pub key: Arc<AgentKey>,
}

/// What the agent tells the desktop application around it (`lockstep agent` keeps spec
/// `004` §7's mirror with it), and where it finds the provisional credentials to sync.
/// Every method has a default that does nothing.
#[async_trait]
pub trait AgentHost: Send + Sync + 'static {
    /// The relay welcomed the agent: its session is open.
    async fn connected(&self, _session_id: &str) {}
    /// The connection ended; `reason` is lowercase.
    async fn disconnected(&self, _reason: &'static str) {}
    /// Provisional credentials minted offline and not yet answered by the server; sent
    /// (`provisional_batch`) right after each `welcome`.
    async fn unsynced(&self) -> Vec<ProvisionalCredential> {
        Vec::new()
    }
    /// The server's verdicts on a batch (`sync_result`).
    async fn synced(&self, _result: &SyncResult) {}
    /// The relay renewed the certificate. Keep the new certificate, then the new key,
    /// durably, before answering `Ok`: the agent uses them only then. Until the key is
    /// kept the old certificate and key must stay usable (the old certificate stays in
    /// force until the new one authenticates). An error keeps the agent on the old ones; it
    /// asks again later. By default nothing is kept (the agent uses them in memory).
    async fn renewed(&self, _renewal: &Renewal) -> Result<(), String> {
        Ok(())
    }
    /// The relay named when the certificate expires (a renewal asked too early).
    async fn certificate_expiry(
        &self,
        _certificate_id: &OfflineIssuanceId,
        _expires_at: Timestamp,
    ) {
    }
}

/// An [`AgentHost`] that does nothing.
#[derive(Debug, Default)]
pub struct NoHost;

impl AgentHost for NoHost {}

/// Provisional credentials per `provisional_batch` frame (well under the relay's 64 KiB
/// frame limit).
const BATCH_ITEMS: usize = 25;

/// An encoder attached to the agent.
#[derive(Clone)]
pub struct AttachedEncoder {
    /// How it is announced in `hello`.
    pub info: EncoderInfo,
    /// The device.
    pub encoder: Arc<dyn Encoder>,
}

impl std::fmt::Debug for AttachedEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachedEncoder")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Where the agent stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentStatus {
    /// Connecting or authenticating.
    Connecting,
    /// Authenticated; jobs flow.
    Connected {
        /// The session `welcome` named.
        session_id: String,
    },
    /// Lost the connection; waiting to reconnect.
    Disconnected,
    /// The relay refused it; a permanent refusal ends the agent.
    Refused(RefusalReason),
    /// Stopped.
    Stopped,
}

/// The certificate and key the agent authenticates with; a renewal replaces them.
#[derive(Debug)]
struct Identity {
    certificate_id: OfflineIssuanceId,
    certificate_signature: Option<SignatureB64>,
    expires_at: Option<Timestamp>,
    key: Arc<AgentKey>,
    /// The relay refused renewing this certificate for good: ask no more.
    renewal_final: bool,
    /// Don't ask for a renewal before this (one failed or was refused).
    renewal_not_before: Option<Instant>,
}

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    status: watch::Receiver<AgentStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    identity: Arc<Mutex<Identity>>,
}

impl AgentHandle {
    /// Its status now.
    pub fn status(&self) -> AgentStatus {
        self.status.borrow().clone()
    }

    /// The certificate it authenticates with now (a renewal replaces it).
    pub fn certificate_id(&self) -> OfflineIssuanceId {
        self.identity
            .lock()
            .expect("agent identity mutex is never poisoned")
            .certificate_id
            .clone()
    }

    /// Waits until the status satisfies `pred`, at most `timeout`; the status reached, or
    /// `None` on timeout.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&AgentStatus) -> bool,
        timeout: Duration,
    ) -> Option<AgentStatus> {
        let mut rx = self.status.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| pred(s)))
            .await
            .ok()
            .and_then(|r| r.ok().map(|s| s.clone()))
    }

    /// Closes the connection cleanly and stops.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Ends the agent at once, as a killed process would: no close frame, encodes cut.
    pub fn kill(self) {
        self.task.abort();
    }
}

struct Shared {
    config: AgentConfig,
    identity: Arc<Mutex<Identity>>,
    encoders: Vec<AttachedEncoder>,
    store: Arc<dyn EncodedJobs>,
    host: Arc<dyn AgentHost>,
    clock: Arc<dyn Clock>,
    /// Jobs waiting for an encoder (lock after `inflight` when both are needed).
    queue: Mutex<VecDeque<EncodeJob>>,
    ready: Notify,
    /// Keys queued or being encoded, with the job ids to answer when done. Held across the
    /// record's read: a job arriving while its card is recorded finds one or the other.
    inflight: tokio::sync::Mutex<HashMap<IdempotencyKey, Vec<JobId>>>,
    /// The current connection's outbound queue.
    link: Mutex<Option<mpsc::Sender<String>>>,
}

/// The reference desktop agent.
#[derive(Debug)]
pub struct Agent;

impl Agent {
    /// Starts an agent: it connects, and reconnects until stopped, killed or refused for
    /// good.
    pub fn spawn(
        config: AgentConfig,
        key: AgentKey,
        encoders: Vec<AttachedEncoder>,
        store: Arc<dyn EncodedJobs>,
        clock: Arc<dyn Clock>,
    ) -> AgentHandle {
        Self::spawn_hosted(config, key, encoders, store, clock, Arc::new(NoHost))
    }

    /// [`Agent::spawn`] with a host told of sessions and asked for provisional credentials
    /// to sync.
    pub fn spawn_hosted(
        config: AgentConfig,
        key: AgentKey,
        encoders: Vec<AttachedEncoder>,
        store: Arc<dyn EncodedJobs>,
        clock: Arc<dyn Clock>,
        host: Arc<dyn AgentHost>,
    ) -> AgentHandle {
        let (status_tx, status) = watch::channel(AgentStatus::Connecting);
        let (stop, stop_rx) = watch::channel(false);
        let identity = Arc::new(Mutex::new(Identity {
            certificate_id: config.certificate_id.clone(),
            certificate_signature: config.certificate_signature.clone(),
            expires_at: config.certificate_expires_at,
            key: Arc::new(key),
            renewal_final: false,
            renewal_not_before: None,
        }));
        let shared = Arc::new(Shared {
            config,
            identity: identity.clone(),
            encoders,
            store,
            host,
            clock,
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            inflight: tokio::sync::Mutex::new(HashMap::new()),
            link: Mutex::new(None),
        });
        let task = tokio::spawn(run(shared, status_tx, stop_rx));
        AgentHandle {
            status,
            stop,
            task,
            identity,
        }
    }
}

enum SessionEnd {
    Stopped,
    Refused(RefusalReason),
    /// Was connected, then lost it.
    Lost,
    /// Never got connected.
    Failed,
    /// Renewed its certificate: reconnect at once with the new one.
    Rotated,
}

async fn run(
    shared: Arc<Shared>,
    status: watch::Sender<AgentStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let mut workers = JoinSet::new();
    for idx in 0..shared.encoders.len() {
        workers.spawn(worker(shared.clone(), idx));
    }
    let mut backoff = shared.config.backoff_min;
    loop {
        if *stop.borrow() {
            break;
        }
        let _ = status.send(AgentStatus::Connecting);
        let end = session(&shared, &status, &mut stop).await;
        let was_connected = matches!(*status.borrow(), AgentStatus::Connected { .. });
        shared.disconnected().await;
        if was_connected {
            let why = match &end {
                SessionEnd::Stopped => "stopped",
                SessionEnd::Refused(_) => "refused",
                SessionEnd::Lost | SessionEnd::Failed => "connection_lost",
                SessionEnd::Rotated => "certificate_renewed",
            };
            shared.host.disconnected(why).await;
        }
        match end {
            SessionEnd::Stopped => break,
            SessionEnd::Refused(reason) => {
                tracing::warn!(reason = reason.as_str(), "relay refused the agent");
                let _ = status.send(AgentStatus::Refused(reason));
                if reason.is_permanent() {
                    return;
                }
            }
            SessionEnd::Lost => {
                backoff = shared.config.backoff_min;
                let _ = status.send(AgentStatus::Disconnected);
            }
            SessionEnd::Failed => {
                let _ = status.send(AgentStatus::Disconnected);
            }
            SessionEnd::Rotated => {
                backoff = shared.config.backoff_min;
                let _ = status.send(AgentStatus::Disconnected);
                continue;
            }
        }
        let jitter = {
            use rand::Rng as _;
            let half = u64::try_from(backoff.as_millis() / 2).unwrap_or(0);
            Duration::from_millis(rand::thread_rng().gen_range(0..=half))
        };
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = stop.changed() => break,
        }
        backoff = (backoff * 2).min(shared.config.backoff_max);
    }
    let _ = status.send(AgentStatus::Stopped);
}

async fn send_desktop(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    message: &DesktopMessage,
    deadline: Instant,
) -> bool {
    matches!(
        tokio::time::timeout_at(deadline, ws.send(Message::text(protocol::encode(message)))).await,
        Ok(Ok(()))
    )
}

async fn read_server<S>(ws: &mut S, deadline: Instant) -> Option<ServerMessage>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => match decode_server(t.as_str()) {
                Ok(m) => return Some(m),
                Err(e) => {
                    tracing::warn!(error = %e, "relay sent a frame the agent does not understand");
                    return None;
                }
            },
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

async fn session(
    shared: &Arc<Shared>,
    status: &watch::Sender<AgentStatus>,
    stop: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let cfg = &shared.config;
    let deadline = Instant::now() + cfg.handshake_timeout;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    let connect =
        tokio_tungstenite::connect_async_with_config(cfg.url.as_str(), Some(ws_config), true);
    let mut ws = match tokio::time::timeout_at(deadline, connect).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "relay connect failed");
            return SessionEnd::Failed;
        }
        Err(_) => return SessionEnd::Failed,
    };
    let challenge = match read_server(&mut ws, deadline).await {
        Some(ServerMessage::Challenge(c)) => c,
        Some(ServerMessage::Refused(r)) => return SessionEnd::Refused(r.sub_code),
        _ => return SessionEnd::Failed,
    };
    if let Some(expected) = &cfg.expected_audience {
        if expected != &challenge.audience {
            tracing::warn!(audience = %challenge.audience, "relay announced another audience; not signing");
            return SessionEnd::Failed;
        }
    }
    if !challenge.versions.contains(&PROTOCOL_VERSION) {
        tracing::warn!("relay speaks no protocol version this agent knows");
        return SessionEnd::Failed;
    }
    let (certificate_id, certificate_signature, key) = {
        let id = shared
            .identity
            .lock()
            .expect("agent identity mutex is never poisoned");
        (
            id.certificate_id.clone(),
            id.certificate_signature.clone(),
            id.key.clone(),
        )
    };
    let hello = Hello {
        certificate_id: certificate_id.as_str().to_owned(),
        tenant_id: cfg.tenant_id.to_string(),
        property_id: cfg.property_id.as_str().to_owned(),
        desktop_device_id: cfg.desktop_device_id.clone(),
        encoders: shared.encoders.iter().map(|e| e.info.clone()).collect(),
        agent_version: cfg.agent_version.clone(),
        certificate_signature,
    };
    let signed_at = shared.clock.now();
    let payload = auth_payload(
        &challenge.audience,
        &challenge.nonce,
        &hello.certificate_id,
        &hello.tenant_id,
        &hello.property_id,
        &hello.desktop_device_id,
        signed_at,
    );
    let auth = Auth {
        nonce: challenge.nonce.clone(),
        signed_at,
        signature: SignatureB64::from_signature(&key.sign(payload.as_bytes())),
    };
    if !send_desktop(&mut ws, &DesktopMessage::Hello(hello), deadline).await
        || !send_desktop(&mut ws, &DesktopMessage::Auth(auth), deadline).await
    {
        return SessionEnd::Failed;
    }
    let welcome = match read_server(&mut ws, deadline).await {
        Some(ServerMessage::Welcome(w)) => w,
        Some(ServerMessage::Refused(r)) => return SessionEnd::Refused(r.sub_code),
        _ => return SessionEnd::Failed,
    };
    tracing::info!(session = %welcome.session_id, "agent connected");
    let _ = status.send(AgentStatus::Connected {
        session_id: welcome.session_id.clone(),
    });
    shared.host.connected(&welcome.session_id).await;
    // What was minted offline goes first (spec 003 §5: reconciled on the next sync).
    let unsynced = shared.host.unsynced().await;
    if !unsynced.is_empty() {
        tracing::info!(
            items = unsynced.len(),
            "sending provisional credentials minted offline"
        );
    }
    for chunk in unsynced.chunks(BATCH_ITEMS) {
        let batch = DesktopMessage::ProvisionalBatch(ProvisionalBatch {
            batch_id: BatchId::parse(&ulid_like())
                .expect("a 26-character base32 id is a valid batch id"),
            items: chunk.to_vec(),
        });
        if !send_desktop(&mut ws, &batch, Instant::now() + Duration::from_secs(10)).await {
            return SessionEnd::Lost;
        }
    }
    let (tx, mut rx) = mpsc::channel::<String>(256);
    *shared
        .link
        .lock()
        .expect("agent link mutex is never poisoned") = Some(tx);
    let (mut sink, mut stream) = ws.split();
    let idle_timeout = Duration::from_millis(welcome.idle_timeout_ms.max(1));
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let write = Duration::from_secs(10);
    // Rotation: when to look at the certificate's expiry next, and the request in flight.
    let mut rotation = Rotation::new(certificate_id, challenge);
    let renew_check = tokio::time::sleep_until(rotation.next_check(shared));
    tokio::pin!(renew_check);
    loop {
        tokio::select! {
            _ = &mut renew_check, if rotation.armed() => {
                match rotation.request(shared) {
                    Check::Send(request) => {
                        let sent = tokio::time::timeout(write, sink.send(Message::text(protocol::encode(&request)))).await;
                        if !matches!(sent, Ok(Ok(()))) {
                            return SessionEnd::Lost;
                        }
                    }
                    Check::Wait => renew_check.as_mut().reset(rotation.next_check(shared)),
                    Check::Reconnect => {
                        // This session had its one renewal; a new one may ask again.
                        let bye = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "renewing again".into() })));
                        let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
                        return SessionEnd::Rotated;
                    }
                }
            }
            _ = stop.changed() => {
                let bye = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "agent stopped".into() })));
                let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
                return SessionEnd::Stopped;
            }
            _ = &mut idle => {
                tracing::warn!("relay silent past its idle timeout; reconnecting");
                return SessionEnd::Lost;
            }
            out = rx.recv() => {
                let Some(frame) = out else { return SessionEnd::Lost };
                if !matches!(tokio::time::timeout(write, sink.send(Message::text(frame))).await, Ok(Ok(()))) {
                    return SessionEnd::Lost;
                }
            }
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return SessionEnd::Lost,
                    Some(Ok(_)) => continue,
                };
                idle.as_mut().reset(Instant::now() + idle_timeout);
                let reply = match decode_server(text.as_str()) {
                    Ok(ServerMessage::Ping(h)) => Some(DesktopMessage::Pong(h)),
                    Ok(ServerMessage::EncodeJob(job)) => {
                        let ack = DesktopMessage::JobAck(JobAck { job_id: job.job_id.clone() });
                        shared.accept(job).await;
                        Some(ack)
                    }
                    Ok(ServerMessage::Refused(r)) => {
                        if rotation.pending.is_some() && r.sub_code == RefusalReason::MalformedFrame {
                            // A relay older than rotation: asking again would only be refused.
                            tracing::warn!("the relay does not know certificate renewal; not asking again");
                            shared.identity.lock().expect("agent identity mutex is never poisoned").renewal_final = true;
                        }
                        return SessionEnd::Refused(r.sub_code);
                    }
                    Ok(ServerMessage::SyncResult(r)) => {
                        tracing::info!(batch = %r.batch_id, items = r.items.len(), "sync result");
                        shared.host.synced(&r).await;
                        None
                    }
                    Ok(ServerMessage::CertificateRenewed(r)) => {
                        if rotation.renewed(shared, &r).await {
                            // Kept by the host: reconnect with the new certificate now.
                            let bye = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "certificate renewed".into() })));
                            let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
                            return SessionEnd::Rotated;
                        }
                        renew_check.as_mut().reset(rotation.next_check(shared));
                        None
                    }
                    Ok(ServerMessage::RenewalRefused(r)) => {
                        rotation.refused(shared, &r).await;
                        renew_check.as_mut().reset(rotation.next_check(shared));
                        None
                    }
                    Ok(other) => {
                        tracing::debug!(kind = other.kind(), "ignored relay message");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "relay sent a frame the agent does not understand");
                        None
                    }
                };
                if let Some(reply) = reply {
                    // The ack goes out before the job can finish: it is queued ahead of
                    // any result on the same connection.
                    let sent = tokio::time::timeout(write, sink.send(Message::text(protocol::encode(&reply)))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        return SessionEnd::Lost;
                    }
                }
            }
        }
    }
}

/// A session's side of certificate rotation: when the certificate is due (its last
/// [`ROTATION_DUE_DAYS`] days), one `renew_certificate` with a fresh key; the answer is
/// handed to the host to keep before the identity changes.
struct Rotation {
    certificate_id: OfflineIssuanceId,
    challenge: Challenge,
    /// The request in flight and its key.
    pending: Option<(RenewalId, Arc<AgentKey>)>,
    /// The relay granted this session its one renewal (which could not be kept).
    granted: bool,
}

/// What a rotation check decided.
enum Check {
    /// Ask the relay.
    Send(DesktopMessage),
    /// Not due, or not yet again.
    Wait,
    /// Due, but this session had its renewal: ask on a new one.
    Reconnect,
}

/// The longest the agent sleeps before it looks at the certificate's expiry again (a
/// scaled business clock runs ahead of the timer).
const ROTATION_CHECK: Duration = Duration::from_secs(3600);

impl Rotation {
    fn new(certificate_id: OfflineIssuanceId, challenge: Challenge) -> Self {
        Self {
            certificate_id,
            challenge,
            pending: None,
            granted: false,
        }
    }

    /// Whether to look at all: no request in flight.
    fn armed(&self) -> bool {
        self.pending.is_none()
    }

    /// When to look again: now when the certificate is due (or its expiry unknown), else at
    /// its due time, at most [`ROTATION_CHECK`] ahead.
    fn next_check(&self, shared: &Shared) -> Instant {
        let now = Instant::now();
        let (expires_at, done, not_before) = {
            let id = shared
                .identity
                .lock()
                .expect("agent identity mutex is never poisoned");
            (id.expires_at, id.renewal_final, id.renewal_not_before)
        };
        if done {
            return now + ROTATION_CHECK * 24;
        }
        let due_in = match expires_at {
            None => Duration::ZERO,
            Some(e) => (e - TimeDelta::days(ROTATION_DUE_DAYS) - shared.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(ROTATION_CHECK),
        };
        let at = now + due_in;
        match not_before {
            Some(nb) if nb > at => nb,
            _ => at,
        }
    }

    /// A `renew_certificate` with a fresh key when the certificate is due now.
    fn request(&mut self, shared: &Shared) -> Check {
        let (expires_at, done, not_before) = {
            let id = shared
                .identity
                .lock()
                .expect("agent identity mutex is never poisoned");
            (id.expires_at, id.renewal_final, id.renewal_not_before)
        };
        let due =
            expires_at.is_none_or(|e| shared.clock.now() >= e - TimeDelta::days(ROTATION_DUE_DAYS));
        if done || !due || not_before.is_some_and(|nb| Instant::now() < nb) {
            return Check::Wait;
        }
        if self.granted {
            return Check::Reconnect;
        }
        let key = Arc::new(AgentKey::generate());
        let request_id =
            RenewalId::parse(&ulid_like()).expect("a 26-character base32 id is a valid renewal id");
        let public_key = PublicKeyB64::try_from(key.public_key_base64())
            .expect("a generated key's public half is a valid ed25519 key");
        let cfg = &shared.config;
        let signed_at = shared.clock.now();
        let payload = renewal_payload(
            &self.challenge.audience,
            &self.challenge.nonce,
            self.certificate_id.as_str(),
            &cfg.tenant_id.to_string(),
            cfg.property_id.as_str(),
            &cfg.desktop_device_id,
            &public_key,
            &request_id,
            signed_at,
        );
        let request = RenewCertificate {
            request_id: request_id.clone(),
            public_key_ed25519: public_key,
            signed_at,
            signature: SignatureB64::from_signature(&key.sign(payload.as_bytes())),
        };
        tracing::info!(certificate = %self.certificate_id, known_expiry = expires_at.is_some(), "asking the relay to renew the certificate");
        self.pending = Some((request_id, key));
        Check::Send(DesktopMessage::RenewCertificate(request))
    }

    fn retry_later(&mut self, shared: &Shared) {
        self.pending = None;
        shared
            .identity
            .lock()
            .expect("agent identity mutex is never poisoned")
            .renewal_not_before = Some(Instant::now() + shared.config.renewal_retry);
    }

    /// The successor arrived: checked, kept by the host, then made the agent's identity.
    /// Whether the agent should reconnect with it now.
    async fn renewed(&mut self, shared: &Shared, r: &CertificateRenewed) -> bool {
        let Some((request_id, key)) = self.pending.clone() else {
            tracing::warn!("a renewed certificate the agent did not ask for; ignored");
            return false;
        };
        if r.request_id != request_id {
            tracing::warn!("a renewed certificate for another request; ignored");
            return false;
        }
        let cfg = &shared.config;
        let certificate = match r.certificate.to_certificate(Some(&r.replaces)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the renewed certificate does not parse; keeping the old one");
                self.retry_later(shared);
                return false;
            }
        };
        let faithful = certificate.public_key_ed25519 == key.public_key_base64()
            && r.replaces == self.certificate_id.as_str()
            && certificate.tenant_id == cfg.tenant_id
            && certificate.property_id == cfg.property_id
            && certificate.desktop_device_id == cfg.desktop_device_id;
        if !faithful {
            tracing::warn!(certificate = %certificate.id, "the renewed certificate is not for this desktop's new key; keeping the old one");
            self.retry_later(shared);
            return false;
        }
        let renewal = Renewal {
            certificate: certificate.clone(),
            signature: r.signature.clone(),
            key: key.clone(),
        };
        // Kept before used: a desktop that crashes now still has the old pair, in force.
        self.granted = true;
        if let Err(e) = shared.host.renewed(&renewal).await {
            tracing::warn!(certificate = %certificate.id, error = %e, "keeping the renewed certificate failed; staying on the old one");
            self.retry_later(shared);
            return false;
        }
        tracing::info!(old = %self.certificate_id, new = %certificate.id, expires_at = %certificate.expires_at, "certificate renewed; reconnecting with it");
        *shared
            .identity
            .lock()
            .expect("agent identity mutex is never poisoned") = Identity {
            certificate_id: certificate.id.clone(),
            certificate_signature: Some(r.signature.clone()),
            expires_at: Some(certificate.expires_at),
            key,
            renewal_final: false,
            renewal_not_before: None,
        };
        self.pending = None;
        true
    }

    /// The relay refused: learn the expiry, and wait for the due time, a retry, or stop
    /// asking.
    async fn refused(&mut self, shared: &Shared, r: &RenewalRefused) {
        if self.pending.as_ref().map(|(id, _)| id) != Some(&r.request_id) {
            return;
        }
        let learned = {
            let mut id = shared
                .identity
                .lock()
                .expect("agent identity mutex is never poisoned");
            let learned = id.expires_at != Some(r.certificate_expires_at);
            id.expires_at = Some(r.certificate_expires_at);
            id.renewal_final = r.reason.is_final();
            learned
        };
        if learned {
            shared
                .host
                .certificate_expiry(&self.certificate_id, r.certificate_expires_at)
                .await;
        }
        match r.reason {
            RenewalRefusalReason::NotDue => {
                tracing::info!(certificate = %self.certificate_id, expires_at = %r.certificate_expires_at, "certificate not due for renewal yet");
                // The relay's clock decides; asking again at once would only be refused.
                self.retry_later(shared);
            }
            RenewalRefusalReason::AlreadyRenewed => {
                // The next check reconnects and asks on a new session.
                self.granted = true;
                self.pending = None;
            }
            reason if reason.is_final() => {
                tracing::warn!(certificate = %self.certificate_id, reason = reason.as_str(), "the relay will not renew this certificate");
                self.pending = None;
            }
            reason => {
                tracing::warn!(certificate = %self.certificate_id, reason = reason.as_str(), "certificate renewal refused; asking again later");
                self.retry_later(shared);
            }
        }
    }
}

impl Shared {
    /// A job arrived: answered from the record, joined to an encode in progress, or queued.
    async fn accept(&self, job: EncodeJob) {
        let done = {
            let mut inflight = self.inflight.lock().await;
            if let Some(done) = self.store.get(&job.idempotency_key).await {
                Some(done)
            } else {
                if let Some(waiters) = inflight.get_mut(&job.idempotency_key) {
                    waiters.push(job.job_id.clone());
                } else {
                    inflight.insert(job.idempotency_key.clone(), vec![job.job_id.clone()]);
                    self.queue
                        .lock()
                        .expect("agent queue mutex is never poisoned")
                        .push_back(job.clone());
                    self.ready.notify_one();
                }
                None
            }
        };
        if let Some(done) = done {
            tracing::info!(job_id = %job.job_id, "job already encoded; answering the earlier result");
            self.send(encoded_result(job.job_id, job.idempotency_key, &done))
                .await;
        }
    }

    /// The connection is gone: jobs not started are dropped (the relay gives them to
    /// another desktop or sends them again); encodes in progress finish and are recorded,
    /// and answer only the jobs sent again on the next connection.
    async fn disconnected(&self) {
        *self
            .link
            .lock()
            .expect("agent link mutex is never poisoned") = None;
        let mut inflight = self.inflight.lock().await;
        let dropped: Vec<EncodeJob> = self
            .queue
            .lock()
            .expect("agent queue mutex is never poisoned")
            .drain(..)
            .collect();
        for job in dropped {
            inflight.remove(&job.idempotency_key);
        }
        for waiters in inflight.values_mut() {
            waiters.clear();
        }
    }

    async fn send(&self, message: DesktopMessage) {
        let link = self
            .link
            .lock()
            .expect("agent link mutex is never poisoned")
            .clone();
        if let Some(link) = link {
            let _ = link.send(protocol::encode(&message)).await;
        }
    }
}

/// A fresh id for a batch or a provisional credential: 26 characters of Crockford base32
/// from the OS CSPRNG.
pub(crate) fn ulid_like() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut rng = rand::rngs::OsRng;
    (0..26)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

fn encoded_result(job_id: JobId, key: IdempotencyKey, done: &StoredEncode) -> DesktopMessage {
    DesktopMessage::JobResult(JobResult {
        job_id,
        idempotency_key: key,
        outcome: JobOutcomeKind::Encoded,
        encoder_id: Some(done.encoder_id.clone()),
        card_number: Some(done.card_number.clone()),
        failure: None,
        detail: None,
        completed_at: done.completed_at,
    })
}

async fn worker(shared: Arc<Shared>, idx: usize) {
    let attached = shared.encoders[idx].clone();
    loop {
        let job = loop {
            let next = shared
                .queue
                .lock()
                .expect("agent queue mutex is never poisoned")
                .pop_front();
            match next {
                Some(job) => break job,
                None => shared.ready.notified().await,
            }
        };
        let outcome = attached.encoder.encode(&job).await;
        let key = job.idempotency_key.clone();
        // Recorded before the key leaves `inflight`: a job arriving now finds one or the
        // other, never neither.
        let outcome = match outcome {
            Ok(card_number) => {
                let done = StoredEncode {
                    card_number,
                    encoder_id: attached.info.encoder_id.clone(),
                    completed_at: shared.clock.now(),
                };
                shared.store.put(&job, done.clone()).await;
                Ok(done)
            }
            Err(e) => Err(e),
        };
        let (waiters, messages) = {
            let mut inflight = shared.inflight.lock().await;
            match outcome {
                Ok(done) => {
                    let waiters = inflight.remove(&key).unwrap_or_default();
                    let messages: Vec<DesktopMessage> = waiters
                        .iter()
                        .map(|w| encoded_result(w.clone(), key.clone(), &done))
                        .collect();
                    (waiters.len(), messages)
                }
                Err(e) => {
                    let waiters = inflight.remove(&key).unwrap_or_default();
                    let messages: Vec<DesktopMessage> = waiters
                        .iter()
                        .map(|w| {
                            DesktopMessage::JobResult(JobResult {
                                job_id: w.clone(),
                                idempotency_key: key.clone(),
                                outcome: JobOutcomeKind::Failed,
                                encoder_id: Some(attached.info.encoder_id.clone()),
                                card_number: None,
                                failure: Some(e.failure),
                                detail: Some(e.detail.clone()),
                                completed_at: shared.clock.now(),
                            })
                        })
                        .collect();
                    (waiters.len(), messages)
                }
            }
        };
        tracing::debug!(job_id = %job.job_id, answered = waiters, "encode finished");
        for m in messages {
            shared.send(m).await;
        }
    }
}
