//! The hub: per property, the authenticated desktops and their encoders, and the
//! dispatcher that gives encode jobs to them.
//!
//! A job goes to the least busy desktop of its property. Without a `job_ack` within the
//! ack timeout (spec `003` §6 `desktopAckTimeoutMs`, 8 s) the desktop is disconnected and
//! the job goes to another; a desktop that drops before acknowledging loses the job to
//! another at once; one that drops after acknowledging gets the reconnect grace to come
//! back (its agent answers the earlier result for the idempotency key) before the job
//! moves. When no desktop is left the job fails with `CARD_ENCODER_OFFLINE`.
//!
//! Back-pressure: the hub never waits on a desktop. Frames go into the desktop's bounded
//! queue with `try_send`; a full queue disconnects that desktop (it does not read), and
//! the job moves on. The state lock is held only for map updates and non-blocking sends.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lockstep_domain::{
    Clock, DeviceRef, EncoderSessionId, KeyCredentialId, KeyCredentialKind, LockDeviceId,
    OfflineIssuanceId, PropertyId, RoomId, TenantId, Timestamp, ValidityWindow,
};
use tokio::sync::{mpsc, watch, Notify};

use crate::auth::AuthenticatedDesktop;
use crate::events::{
    CloseReason, OpenEncoder, SessionClosed, SessionEvent, SessionEvents, SessionOpened,
};
use crate::metrics::{JobOutcomeLabel, RelayMetrics};
use crate::protocol::{
    self, CardKind, CardNumber, Door, EncodeFailure, EncodeJob, EncoderId, EncoderInfo,
    IdempotencyKey, JobId, JobOutcomeKind, JobResult, Refused, ServerMessage,
};
use crate::RelayError;

/// A job is tried on at most this many desktops (a desktop that keeps dropping and coming
/// back cannot keep a job forever).
const MAX_ATTEMPTS: usize = 16;

/// A door the card must open, as the host knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoorRef {
    /// The room.
    pub room_id: RoomId,
    /// Lockstep's device, when registered.
    pub device_id: Option<LockDeviceId>,
    /// The lock's identifier in the encoder's system, when the encoder needs it.
    pub device_ref: Option<DeviceRef>,
}

/// An encode job as the host asks for it.
#[derive(Clone, Debug)]
pub struct EncodeRequest {
    /// The host's id for this dispatch (kept across re-routes).
    pub job_id: JobId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property: the job goes to one of its desktops.
    pub property_id: PropertyId,
    /// The credential the card carries.
    pub credential_id: KeyCredentialId,
    /// Must be `rfid_card`.
    pub kind: KeyCredentialKind,
    /// Rooms the card opens (1 to 50).
    pub rooms: Vec<RoomId>,
    /// Doors with the identifiers the encoder writes (may be empty).
    pub doors: Vec<DoorRef>,
    /// Validity.
    pub validity: ValidityWindow,
    /// Encoded once per key: the host passes the same key when it dispatches again.
    pub idempotency_key: IdempotencyKey,
    /// The desktop to try first: the one that acknowledged an earlier dispatch of the same
    /// key (after a host restart), so its record of encoded jobs answers.
    pub prefer_desktop: Option<String>,
    /// When set, the job may go to these desktops only (the ones that may hold its card
    /// after a host restart: sending it elsewhere could encode a second card); none of them
    /// connected is `EncoderOffline`.
    pub only_desktops: Option<Vec<String>>,
    /// The acknowledgement timeout of this job (the adapter's `desktopAckTimeoutMs`); the
    /// relay's own when `None`.
    pub ack_timeout: Option<Duration>,
}

/// What the host records before the hub sends a job to a desktop: the job is sent only
/// once [`DispatchJournal::sending`] returned `Ok`, so after a host restart the host knows
/// every desktop that may hold the job's card (DESIGN §8: a job is encoded once).
#[async_trait::async_trait]
pub trait DispatchJournal: Send + Sync {
    /// The job is about to go to `desktop_device_id`. An error stops the dispatch
    /// ([`RelayError::Journal`]) without sending anything.
    async fn sending(&self, desktop_device_id: &str) -> Result<(), String>;
}

/// A card was encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedCard {
    /// What the reader read back (redacted in `Debug`).
    pub card_number: CardNumber,
    /// The desktop that encoded it.
    pub desktop_device_id: String,
    /// Its encoder.
    pub encoder_id: Option<EncoderId>,
    /// The session it came over.
    pub session_id: EncoderSessionId,
    /// When, by the desktop's clock.
    pub completed_at: Timestamp,
}

/// The desktop tried and encoded nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedJob {
    /// Why.
    pub failure: EncodeFailure,
    /// The desktop's words.
    pub detail: Option<String>,
    /// The desktop.
    pub desktop_device_id: String,
}

/// What became of a dispatched job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// A card was encoded.
    Encoded(EncodedCard),
    /// The desktop reported a failure.
    Failed(FailedJob),
}

/// A connected desktop, as the host may list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesktopSummary {
    /// Its session.
    pub session_id: EncoderSessionId,
    /// The desktop.
    pub desktop_device_id: String,
    /// The certificate it authenticated with.
    pub certificate_id: OfflineIssuanceId,
    /// Its encoders.
    pub encoders: Vec<EncoderInfo>,
    /// Jobs sent to it and not answered.
    pub jobs_in_flight: usize,
    /// When its session opened.
    pub opened_at: Timestamp,
}

/// The hub's timeouts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HubSettings {
    pub(crate) ack_timeout: Duration,
    pub(crate) result_timeout: Duration,
    pub(crate) reconnect_grace: Duration,
    pub(crate) outbound_queue: usize,
    pub(crate) max_jobs_per_desktop: usize,
}

/// How the hub closes a connection: the reason, and the refusal to send first.
#[derive(Clone, Debug)]
pub(crate) struct CloseCommand {
    pub(crate) reason: CloseReason,
    pub(crate) refused: Option<Refused>,
}

/// What the connection task gets when its desktop joins.
pub(crate) struct Link {
    pub(crate) key: u64,
    pub(crate) session_id: EncoderSessionId,
    pub(crate) outbound: mpsc::Sender<String>,
    pub(crate) outbound_rx: mpsc::Receiver<String>,
    pub(crate) control: Arc<watch::Sender<Option<CloseCommand>>>,
    pub(crate) control_rx: watch::Receiver<Option<CloseCommand>>,
}

/// A job's place: the connection, its desktop, its session and the job's signals.
type Assigned = (
    u64,
    String,
    EncoderSessionId,
    mpsc::UnboundedReceiver<Signal>,
);

enum Assignment {
    /// A slot is reserved on a desktop (the job is pending there); the frame is not sent.
    Reserved(Assigned),
    NoDesktop,
    AllBusy,
}

enum Signal {
    Ack,
    Result(JobResult),
    Gone(CloseReason),
}

struct Pending {
    acked: bool,
    waiters: Vec<mpsc::UnboundedSender<Signal>>,
}

impl Pending {
    fn signal(&self, make: impl Fn() -> Signal) {
        for w in &self.waiters {
            let _ = w.send(make());
        }
    }
}

struct Desktop {
    key: u64,
    session_id: EncoderSessionId,
    desktop_device_id: String,
    certificate_id: OfflineIssuanceId,
    encoders: Vec<OpenEncoder>,
    opened_at: Timestamp,
    outbound: mpsc::Sender<String>,
    control: Arc<watch::Sender<Option<CloseCommand>>>,
    pending: HashMap<JobId, Pending>,
    assigned: u64,
}

#[derive(Default)]
struct PropertyDesks {
    desktops: Vec<Desktop>,
    /// Notified when a desktop joins or leaves and when a job slot frees.
    changed: Arc<Notify>,
}

type PropertyKey = (TenantId, PropertyId);

#[derive(Default)]
struct State {
    properties: HashMap<PropertyKey, PropertyDesks>,
    by_key: HashMap<u64, PropertyKey>,
}

struct Inner {
    state: Mutex<State>,
    settings: HubSettings,
    events: Arc<dyn SessionEvents>,
    clock: Arc<dyn Clock>,
    metrics: RelayMetrics,
    next_key: AtomicU64,
    shutting_down: AtomicBool,
}

/// The relay's dispatcher and session registry; cheap to clone. The host gets it from
/// [`crate::RelayServer::hub`].
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

/// Sets a connection's close command unless one is set already (the first reason wins).
fn command_close(control: &watch::Sender<Option<CloseCommand>>, command: CloseCommand) {
    control.send_if_modified(|c| {
        if c.is_none() {
            *c = Some(command);
            true
        } else {
            false
        }
    });
}

impl Hub {
    pub(crate) fn new(
        settings: HubSettings,
        events: Arc<dyn SessionEvents>,
        clock: Arc<dyn Clock>,
        metrics: RelayMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                settings,
                events,
                clock,
                metrics,
                next_key: AtomicU64::new(1),
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .expect("hub state mutex is never poisoned: no code panics while holding it")
    }

    /// Registers an authenticated desktop and reports its session opened. An older
    /// connection of the same desktop is closed (`superseded`).
    pub(crate) fn join(&self, desktop: AuthenticatedDesktop) -> Link {
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let session_id = EncoderSessionId::generate();
        let encoders: Vec<OpenEncoder> = desktop
            .encoders
            .iter()
            .map(|e| OpenEncoder {
                session_id: EncoderSessionId::generate(),
                encoder: e.clone(),
            })
            .collect();
        // Admitted jobs never fill a reading desktop's queue: it has room for all its job
        // slots plus the other frames.
        let (outbound, outbound_rx) = mpsc::channel(
            self.inner.settings.outbound_queue + self.inner.settings.max_jobs_per_desktop,
        );
        let (control, control_rx) = watch::channel(None);
        let control = Arc::new(control);
        let now = self.inner.clock.now();
        let pk = (desktop.tenant_id, desktop.property_id.clone());
        let notify = {
            let mut st = self.lock();
            let older: Vec<u64> = st
                .properties
                .get(&pk)
                .map(|pd| {
                    pd.desktops
                        .iter()
                        .filter(|d| d.desktop_device_id == desktop.desktop_device_id)
                        .map(|d| d.key)
                        .collect()
                })
                .unwrap_or_default();
            for k in older {
                self.remove_locked(&mut st, k, CloseReason::Superseded, None, now);
            }
            let pd = st.properties.entry(pk.clone()).or_default();
            pd.desktops.push(Desktop {
                key,
                session_id: session_id.clone(),
                desktop_device_id: desktop.desktop_device_id.clone(),
                certificate_id: desktop.certificate.id.clone(),
                encoders: encoders.clone(),
                opened_at: now,
                outbound: outbound.clone(),
                control: control.clone(),
                pending: HashMap::new(),
                assigned: 0,
            });
            let notify = pd.changed.clone();
            st.by_key.insert(key, pk.clone());
            // Published under the lock: a session's `closed` can never overtake its `opened`.
            self.inner.metrics.session_opened(
                session_id.as_str(),
                &pk.0.to_string(),
                pk.1.as_str(),
                &desktop.desktop_device_id,
            );
            self.inner
                .events
                .publish(SessionEvent::Opened(SessionOpened {
                    session_id: session_id.clone(),
                    tenant_id: pk.0,
                    property_id: pk.1.clone(),
                    desktop_device_id: desktop.desktop_device_id.clone(),
                    certificate_id: desktop.certificate.id.clone(),
                    agent_version: desktop.agent_version.clone(),
                    encoders,
                    at: now,
                }));
            notify
        };
        notify.notify_waiters();
        Link {
            key,
            session_id,
            outbound,
            outbound_rx,
            control,
            control_rx,
        }
    }

    /// Removes a connection from the hub: its pending jobs learn it is gone, its session is
    /// reported closed. Does nothing when it is already removed.
    fn remove_locked(
        &self,
        st: &mut State,
        key: u64,
        reason: CloseReason,
        refused: Option<Refused>,
        now: Timestamp,
    ) {
        let Some(pk) = st.by_key.remove(&key) else {
            return;
        };
        let Some(pd) = st.properties.get_mut(&pk) else {
            return;
        };
        let Some(idx) = pd.desktops.iter().position(|d| d.key == key) else {
            return;
        };
        let d = pd.desktops.swap_remove(idx);
        pd.changed.notify_waiters();
        command_close(&d.control, CloseCommand { reason, refused });
        for p in d.pending.values() {
            p.signal(|| Signal::Gone(reason));
        }
        self.inner
            .metrics
            .session_closed(d.session_id.as_str(), &d.desktop_device_id, reason);
        self.inner
            .events
            .publish(SessionEvent::Closed(SessionClosed {
                session_id: d.session_id,
                tenant_id: pk.0,
                property_id: pk.1,
                desktop_device_id: d.desktop_device_id,
                encoders: d.encoders,
                reason,
                at: now,
            }));
    }

    /// Closes a connection: removes it (reporting the session closed) and tells its task.
    pub(crate) fn close(
        &self,
        key: u64,
        control: &watch::Sender<Option<CloseCommand>>,
        reason: CloseReason,
        refused: Option<Refused>,
    ) {
        command_close(
            control,
            CloseCommand {
                reason,
                refused: refused.clone(),
            },
        );
        let now = self.inner.clock.now();
        let mut st = self.lock();
        self.remove_locked(&mut st, key, reason, refused, now);
    }

    /// The desktop acknowledged a job.
    pub(crate) fn on_ack(&self, key: u64, job_id: &JobId) {
        let mut st = self.lock();
        if let Some(d) = Self::desktop_mut(&mut st, key) {
            if let Some(p) = d.pending.get_mut(job_id) {
                if !p.acked {
                    p.acked = true;
                    p.signal(|| Signal::Ack);
                }
                return;
            }
        }
        tracing::debug!(job_id = %job_id, "ack for a job not pending here");
    }

    /// The desktop reported a job's result.
    pub(crate) fn on_result(&self, key: u64, result: JobResult) {
        let mut st = self.lock();
        if let Some(d) = Self::desktop_mut(&mut st, key) {
            if let Some(p) = d.pending.remove(&result.job_id) {
                p.signal(|| Signal::Result(result.clone()));
                Self::slot_freed(&st, key);
                return;
            }
        }
        tracing::debug!(job_id = %result.job_id, "result for a job not pending here");
    }

    fn slot_freed(st: &State, key: u64) {
        if let Some(pd) = st.by_key.get(&key).and_then(|pk| st.properties.get(pk)) {
            pd.changed.notify_waiters();
        }
    }

    fn desktop_mut(st: &mut State, key: u64) -> Option<&mut Desktop> {
        let pk = st.by_key.get(&key)?.clone();
        st.properties
            .get_mut(&pk)?
            .desktops
            .iter_mut()
            .find(|d| d.key == key)
    }

    /// Sends an encode job to a desktop of its property and waits for its outcome,
    /// re-routing on ack timeout or disconnect. `Err(EncoderOffline)` when no desktop is
    /// (or is left) connected.
    pub async fn dispatch(&self, request: EncodeRequest) -> Result<JobOutcome, RelayError> {
        self.dispatch_with(request, None).await
    }

    /// [`Hub::dispatch`], telling `journal` each desktop the job is about to be sent to,
    /// before it is sent.
    pub async fn dispatch_with(
        &self,
        request: EncodeRequest,
        journal: Option<&dyn DispatchJournal>,
    ) -> Result<JobOutcome, RelayError> {
        let timer = self.inner.metrics.dispatch_timer();
        let result = self.dispatch_inner(&request, journal).await;
        timer.observe_duration();
        let label = match &result {
            Ok(JobOutcome::Encoded(_)) => JobOutcomeLabel::Encoded,
            Ok(JobOutcome::Failed(_)) => JobOutcomeLabel::Failed,
            Err(RelayError::EncoderOffline) | Err(RelayError::ShuttingDown) => {
                JobOutcomeLabel::EncoderOffline
            }
            Err(RelayError::ResultTimeout { .. }) => JobOutcomeLabel::ResultTimeout,
            Err(_) => JobOutcomeLabel::Invalid,
        };
        self.inner.metrics.job(label);
        result
    }

    fn job_frame(request: &EncodeRequest) -> Result<String, RelayError> {
        if request.kind != KeyCredentialKind::RfidCard {
            return Err(RelayError::InvalidJob(format!(
                "encoders make rfid_card, not {}",
                request.kind.as_str()
            )));
        }
        if request.rooms.is_empty() || request.rooms.len() > 50 {
            return Err(RelayError::InvalidJob("1 to 50 rooms".into()));
        }
        let job = EncodeJob {
            job_id: request.job_id.clone(),
            credential_id: request.credential_id.as_str().to_owned(),
            kind: CardKind::RfidCard,
            rooms: request
                .rooms
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
            doors: request
                .doors
                .iter()
                .map(|d| Door {
                    room_id: d.room_id.as_str().to_owned(),
                    device_id: d.device_id.as_ref().map(|i| i.as_str().to_owned()),
                    device_ref: d.device_ref.as_ref().map(|r| r.expose().to_owned()),
                })
                .collect(),
            valid_from: request.validity.from(),
            valid_until: request.validity.until(),
            idempotency_key: request.idempotency_key.clone(),
        };
        Ok(protocol::encode(&ServerMessage::EncodeJob(job)))
    }

    async fn dispatch_inner(
        &self,
        request: &EncodeRequest,
        journal: Option<&dyn DispatchJournal>,
    ) -> Result<JobOutcome, RelayError> {
        let frame = Self::job_frame(request)?;
        let pk = (request.tenant_id, request.property_id.clone());
        let job_id = &request.job_id;
        let only = request.only_desktops.as_deref();
        let ack_timeout = request
            .ack_timeout
            .unwrap_or(self.inner.settings.ack_timeout);
        let mut excluded: HashSet<u64> = HashSet::new();
        let mut prefer = request.prefer_desktop.clone();
        'attempts: for _ in 0..MAX_ATTEMPTS {
            if self.inner.shutting_down.load(Ordering::Relaxed) {
                return Err(RelayError::ShuttingDown);
            }
            let (key, desktop, session_id, mut rx) = self
                .admit(&pk, job_id, &excluded, prefer.as_deref(), only)
                .await?;
            excluded.insert(key);
            if let Some(journal) = journal {
                if let Err(e) = journal.sending(&desktop).await {
                    drop(rx);
                    self.forget(key, job_id);
                    return Err(RelayError::Journal(e));
                }
            }
            // A desktop gone meanwhile signalled `Gone` to this job: the wait below moves it.
            self.send_reserved(key, &frame);
            let ack_deadline = tokio::time::Instant::now() + ack_timeout;
            // Waiting for the ack; a result implies it (the hub signals an ack once).
            match tokio::time::timeout_at(ack_deadline, rx.recv()).await {
                Ok(Some(Signal::Ack)) => {}
                Ok(Some(Signal::Result(r))) => return Ok(Self::outcome(r, desktop, session_id)),
                Ok(Some(Signal::Gone(reason))) => {
                    self.inner
                        .metrics
                        .rerouted(job_id.as_str(), &desktop, reason.as_str());
                    prefer = None;
                    continue 'attempts;
                }
                Ok(None) => {
                    self.inner
                        .metrics
                        .rerouted(job_id.as_str(), &desktop, "connection_lost");
                    prefer = None;
                    continue 'attempts;
                }
                Err(_) => {
                    self.forget(key, job_id);
                    self.close_key(key, CloseReason::AckTimeout);
                    self.inner
                        .metrics
                        .rerouted(job_id.as_str(), &desktop, "ack_timeout");
                    prefer = None;
                    continue 'attempts;
                }
            }
            let result_deadline = tokio::time::Instant::now() + self.inner.settings.result_timeout;
            loop {
                match tokio::time::timeout_at(result_deadline, rx.recv()).await {
                    Ok(Some(Signal::Ack)) => continue,
                    Ok(Some(Signal::Result(r))) => {
                        return Ok(Self::outcome(r, desktop, session_id))
                    }
                    Ok(Some(Signal::Gone(_))) | Ok(None) => {
                        // It accepted the job and may have encoded the card: give it the
                        // grace to come back and answer from its record.
                        if self.wait_for_rejoin(&pk, &desktop).await {
                            tracing::info!(job_id = %job_id, desktop, "encode job re-sent to its desktop after reconnect");
                            prefer = Some(desktop);
                        } else {
                            self.inner.metrics.rerouted(
                                job_id.as_str(),
                                &desktop,
                                "gone_after_ack",
                            );
                            prefer = None;
                        }
                        continue 'attempts;
                    }
                    Err(_) => {
                        self.forget(key, job_id);
                        return Err(RelayError::ResultTimeout {
                            desktop_device_id: desktop,
                        });
                    }
                }
            }
        }
        Err(RelayError::EncoderOffline)
    }

    fn outcome(r: JobResult, desktop: String, session_id: EncoderSessionId) -> JobOutcome {
        match (r.outcome, r.card_number) {
            (JobOutcomeKind::Encoded, Some(card_number)) => JobOutcome::Encoded(EncodedCard {
                card_number,
                desktop_device_id: desktop,
                encoder_id: r.encoder_id,
                session_id,
                completed_at: r.completed_at,
            }),
            // The connection refuses an `encoded` result without a card number; this arm
            // keeps the hub total anyway.
            (JobOutcomeKind::Encoded, None) => JobOutcome::Failed(FailedJob {
                failure: EncodeFailure::CardRejected,
                detail: Some("encoded without a card number".into()),
                desktop_device_id: desktop,
            }),
            (JobOutcomeKind::Failed, _) => JobOutcome::Failed(FailedJob {
                failure: r.failure.unwrap_or(EncodeFailure::EncoderError),
                detail: r.detail,
                desktop_device_id: desktop,
            }),
        }
    }

    /// Assigns the job to a desktop, waiting (at most the result timeout) while every
    /// desktop of the property has all its job slots taken.
    async fn admit(
        &self,
        pk: &PropertyKey,
        job_id: &JobId,
        excluded: &HashSet<u64>,
        prefer: Option<&str>,
        only: Option<&[String]>,
    ) -> Result<Assigned, RelayError> {
        let deadline = tokio::time::Instant::now() + self.inner.settings.result_timeout;
        let Some(changed) = self.lock().properties.get(pk).map(|pd| pd.changed.clone()) else {
            return Err(RelayError::EncoderOffline);
        };
        loop {
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.reserve(pk, job_id, excluded, prefer, only) {
                Assignment::Reserved(a) => return Ok(a),
                Assignment::NoDesktop => return Err(RelayError::EncoderOffline),
                Assignment::AllBusy => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        tracing::warn!(job_id = %job_id, "every encoder of the property stayed busy");
                        return Err(RelayError::EncoderOffline);
                    }
                }
            }
        }
    }

    /// Picks a desktop with a free job slot (among `only`, when set) and registers the job
    /// as pending there; [`Hub::send_reserved`] sends its frame.
    fn reserve(
        &self,
        pk: &PropertyKey,
        job_id: &JobId,
        excluded: &HashSet<u64>,
        prefer: Option<&str>,
        only: Option<&[String]>,
    ) -> Assignment {
        let slots = self.inner.settings.max_jobs_per_desktop;
        let mut st = self.lock();
        let Some(pd) = st.properties.get_mut(pk) else {
            return Assignment::NoDesktop;
        };
        let candidate = {
            let allowed = |d: &Desktop| {
                !excluded.contains(&d.key)
                    && only.is_none_or(|o| o.iter().any(|x| x == &d.desktop_device_id))
            };
            let available = || pd.desktops.iter().filter(|d| allowed(d));
            if available().next().is_none() {
                return Assignment::NoDesktop;
            }
            let free = || available().filter(|d| d.pending.len() < slots);
            prefer
                .and_then(|p| free().find(|d| d.desktop_device_id == p))
                .or_else(|| free().min_by_key(|d| (d.pending.len(), d.assigned)))
                .map(|d| d.key)
        };
        let Some(candidate) = candidate else {
            return Assignment::AllBusy;
        };
        let d = pd
            .desktops
            .iter_mut()
            .find(|d| d.key == candidate)
            .expect("the candidate was picked from this list under the same lock");
        let (tx, rx) = mpsc::unbounded_channel();
        d.pending
            .entry(job_id.clone())
            .or_insert_with(|| Pending {
                acked: false,
                waiters: Vec::new(),
            })
            .waiters
            .push(tx);
        d.assigned += 1;
        Assignment::Reserved((
            candidate,
            d.desktop_device_id.clone(),
            d.session_id.clone(),
            rx,
        ))
    }

    /// Queues a reserved job's frame to its desktop. A desktop whose queue is full is
    /// disconnected (it does not read); one that is gone already signalled the job `Gone`.
    fn send_reserved(&self, key: u64, frame: &str) {
        let now = self.inner.clock.now();
        let mut st = self.lock();
        let Some(d) = Self::desktop_mut(&mut st, key) else {
            return;
        };
        match d.outbound.try_send(frame.to_owned()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(desktop = %d.desktop_device_id, "desktop outbound queue full");
                self.remove_locked(&mut st, key, CloseReason::SlowConsumer, None, now);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.remove_locked(&mut st, key, CloseReason::ConnectionLost, None, now);
            }
        }
    }

    /// Drops a dispatch's interest in a job on a connection.
    fn forget(&self, key: u64, job_id: &JobId) {
        let mut st = self.lock();
        if let Some(d) = Self::desktop_mut(&mut st, key) {
            if let Some(p) = d.pending.get_mut(job_id) {
                p.waiters.retain(|w| !w.is_closed());
                if p.waiters.is_empty() {
                    d.pending.remove(job_id);
                    Self::slot_freed(&st, key);
                }
            }
        }
    }

    fn close_key(&self, key: u64, reason: CloseReason) {
        let now = self.inner.clock.now();
        let mut st = self.lock();
        self.remove_locked(&mut st, key, reason, None, now);
    }

    /// Waits up to the reconnect grace for `desktop` to be connected to the property.
    async fn wait_for_rejoin(&self, pk: &PropertyKey, desktop: &str) -> bool {
        let deadline = tokio::time::Instant::now() + self.inner.settings.reconnect_grace;
        let Some(notify) = self.lock().properties.get(pk).map(|pd| pd.changed.clone()) else {
            return false;
        };
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let present = self
                .lock()
                .properties
                .get(pk)
                .is_some_and(|pd| pd.desktops.iter().any(|d| d.desktop_device_id == desktop));
            if present {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// The desktops connected to a property now.
    pub fn desktops(&self, tenant: TenantId, property: &PropertyId) -> Vec<DesktopSummary> {
        self.lock()
            .properties
            .get(&(tenant, property.clone()))
            .map(|pd| {
                pd.desktops
                    .iter()
                    .map(|d| DesktopSummary {
                        session_id: d.session_id.clone(),
                        desktop_device_id: d.desktop_device_id.clone(),
                        certificate_id: d.certificate_id.clone(),
                        encoders: d.encoders.iter().map(|e| e.encoder.clone()).collect(),
                        jobs_in_flight: d.pending.len(),
                        opened_at: d.opened_at,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many desktops are connected, all properties together.
    pub fn connected(&self) -> usize {
        self.lock().by_key.len()
    }

    /// Closes every session authenticated with a certificate (call it when the
    /// certificate is revoked); answers how many were closed.
    pub fn disconnect_certificate(
        &self,
        tenant: TenantId,
        certificate: &OfflineIssuanceId,
    ) -> usize {
        let now = self.inner.clock.now();
        let mut st = self.lock();
        let keys: Vec<u64> = st
            .properties
            .iter()
            .filter(|(pk, _)| pk.0 == tenant)
            .flat_map(|(_, pd)| pd.desktops.iter())
            .filter(|d| &d.certificate_id == certificate)
            .map(|d| d.key)
            .collect();
        for k in &keys {
            self.remove_locked(&mut st, *k, CloseReason::CertificateRevoked, None, now);
        }
        keys.len()
    }

    /// Stops dispatching and closes every session (`server_shutdown`).
    pub(crate) fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        let now = self.inner.clock.now();
        let mut st = self.lock();
        let keys: Vec<u64> = st.by_key.keys().copied().collect();
        for k in keys {
            self.remove_locked(&mut st, k, CloseReason::ServerShutdown, None, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::RecordedSessionEvents;
    use crate::protocol::{decode_server, Transport};
    use chrono::TimeZone as _;
    use lockstep_domain::{ManualClock, OfflineIssuance};

    fn start() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    fn hub(events: Arc<RecordedSessionEvents>, ack_ms: u64, queue: usize) -> Hub {
        let registry = prometheus::Registry::new();
        Hub::new(
            HubSettings {
                ack_timeout: Duration::from_millis(ack_ms),
                result_timeout: Duration::from_secs(5),
                reconnect_grace: Duration::from_millis(100),
                outbound_queue: queue,
                max_jobs_per_desktop: 4,
            },
            events,
            Arc::new(ManualClock::new(start())),
            RelayMetrics::register(&registry).unwrap(),
        )
    }

    fn desktop(tenant: TenantId, property: &PropertyId, id: &str) -> AuthenticatedDesktop {
        let cert = OfflineIssuance::issue(
            tenant,
            property.clone(),
            id,
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            vec![KeyCredentialKind::RfidCard],
            &[KeyCredentialKind::RfidCard],
            48,
            start(),
        )
        .unwrap();
        AuthenticatedDesktop {
            tenant_id: tenant,
            property_id: property.clone(),
            certificate: cert,
            desktop_device_id: id.into(),
            encoders: vec![EncoderInfo {
                encoder_id: EncoderId::parse("enc-1").unwrap(),
                model: "sim".into(),
                transport: Transport::UsbHid,
            }],
            agent_version: "test".into(),
        }
    }

    fn request(tenant: TenantId, property: &PropertyId, n: u32) -> EncodeRequest {
        EncodeRequest {
            job_id: JobId::parse(&format!("job-{n}")).unwrap(),
            tenant_id: tenant,
            property_id: property.clone(),
            credential_id: KeyCredentialId::generate(),
            kind: KeyCredentialKind::RfidCard,
            rooms: vec![RoomId::parse("rmu_101").unwrap()],
            doors: vec![],
            validity: ValidityWindow::new(start(), start() + chrono::Duration::hours(24)).unwrap(),
            idempotency_key: IdempotencyKey::parse(&format!("idem-{n}")).unwrap(),
            prefer_desktop: None,
            only_desktops: None,
            ack_timeout: None,
        }
    }

    /// Answers every job on a link: ack, then an encoded result.
    fn answer(hub: Hub, mut link: Link) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(frame) = link.outbound_rx.recv().await {
                if let Ok(ServerMessage::EncodeJob(job)) = decode_server(&frame) {
                    hub.on_ack(link.key, &job.job_id);
                    hub.on_result(
                        link.key,
                        JobResult {
                            job_id: job.job_id,
                            idempotency_key: job.idempotency_key,
                            outcome: JobOutcomeKind::Encoded,
                            encoder_id: None,
                            card_number: Some(CardNumber::parse("12345678").unwrap()),
                            failure: None,
                            detail: None,
                            completed_at: start(),
                        },
                    );
                }
            }
        })
    }

    #[tokio::test]
    async fn a_property_without_desktops_gets_encoder_offline() {
        let events = Arc::new(RecordedSessionEvents::default());
        let hub = hub(events, 200, 8);
        let tenant = TenantId::generate();
        let property = PropertyId::parse("ppt_1").unwrap();
        let err = hub
            .dispatch(request(tenant, &property, 1))
            .await
            .unwrap_err();
        assert!(matches!(err, RelayError::EncoderOffline));
        assert_eq!(
            err.to_domain().unwrap().code(),
            "MELMASTOON.LOCK.CARD_ENCODER_OFFLINE"
        );
    }

    #[tokio::test]
    async fn a_full_queue_disconnects_that_desktop_and_the_job_moves_on() {
        let events = Arc::new(RecordedSessionEvents::default());
        let hub = hub(events.clone(), 2_000, 1);
        let tenant = TenantId::generate();
        let property = PropertyId::parse("ppt_1").unwrap();
        // The slow desktop's queue is full and nobody drains it.
        let slow = hub.join(desktop(tenant, &property, "slow"));
        while slow.outbound.try_send("filler".into()).is_ok() {}
        let good = hub.join(desktop(tenant, &property, "good"));
        let _answering = answer(hub.clone(), good);
        // Both are idle, so the least busy rule may pick either; the slow one is dropped.
        for n in 0..4 {
            let out = hub.dispatch(request(tenant, &property, n)).await.unwrap();
            let JobOutcome::Encoded(card) = out else {
                panic!("{out:?}")
            };
            assert_eq!(card.desktop_device_id, "good");
        }
        assert_eq!(hub.desktops(tenant, &property).len(), 1);
        let closed: Vec<_> = events
            .all()
            .into_iter()
            .filter_map(|e| match e {
                SessionEvent::Closed(c) => Some((c.desktop_device_id, c.reason)),
                _ => None,
            })
            .collect();
        assert_eq!(closed, vec![("slow".to_owned(), CloseReason::SlowConsumer)]);
        assert_eq!(
            slow.control_rx.borrow().as_ref().map(|c| c.reason),
            Some(CloseReason::SlowConsumer)
        );
    }

    #[tokio::test]
    async fn a_missing_ack_disconnects_the_desktop_and_reroutes() {
        let events = Arc::new(RecordedSessionEvents::default());
        let hub = hub(events.clone(), 150, 8);
        let tenant = TenantId::generate();
        let property = PropertyId::parse("ppt_1").unwrap();
        let _mute = hub.join(desktop(tenant, &property, "mute"));
        let out = tokio::spawn({
            let hub = hub.clone();
            async move { hub.dispatch(request(tenant, &property, 1)).await }
        });
        let property = PropertyId::parse("ppt_1").unwrap();
        // Only `mute` is connected when the job is queued.
        while hub.desktops(tenant, &property)[0].jobs_in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let good = hub.join(desktop(tenant, &property, "good"));
        let _answering = answer(hub.clone(), good);
        // The job went to `mute` (the only desktop when it was queued), timed out, moved.
        let out = out.await.unwrap().unwrap();
        assert!(matches!(out, JobOutcome::Encoded(ref c) if c.desktop_device_id == "good"));
        assert_eq!(hub.desktops(tenant, &property).len(), 1);
        assert!(events.all().iter().any(|e| matches!(e,
            SessionEvent::Closed(c) if c.desktop_device_id == "mute" && c.reason == CloseReason::AckTimeout)));
    }

    #[tokio::test]
    async fn the_same_desktop_reconnecting_supersedes_its_old_session() {
        let events = Arc::new(RecordedSessionEvents::default());
        let hub = hub(events.clone(), 150, 8);
        let tenant = TenantId::generate();
        let property = PropertyId::parse("ppt_1").unwrap();
        let first = hub.join(desktop(tenant, &property, "desk"));
        let _second = hub.join(desktop(tenant, &property, "desk"));
        assert_eq!(hub.desktops(tenant, &property).len(), 1);
        assert_eq!(
            first.control_rx.borrow().as_ref().map(|c| c.reason),
            Some(CloseReason::Superseded)
        );
        let kinds: Vec<&str> = events
            .all()
            .iter()
            .map(|e| match e {
                SessionEvent::Opened(_) => "opened",
                SessionEvent::Closed(_) => "closed",
            })
            .collect();
        assert_eq!(kinds, vec!["opened", "closed", "opened"]);
    }
}
