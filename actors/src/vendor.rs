//! Vendor workers (DESIGN §2): one supervised actor per adapter instance. It serves
//! revocations before issuances and runs each call under `catch_unwind` and a timeout. The
//! vendor account's rate limit is taken per HTTP request inside the adapter (its
//! `RateGate`); the registry installs one limiter per account, shared by every adapter on
//! it and, through the store's GCRA row, by every node (DESIGN §6). A caught panic or a timeout stops
//! the worker; its actix `Supervisor` restarts it with fresh state, every call it held
//! fails as `Unavailable`, and the saga retries them from the mailbox: nothing is lost.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;
use lockstep_domain::breaker::{Admission, BreakerPolicy};
use lockstep_domain::{
    Clock, DeviceRef, PropertyId, TenantId, VendorAdapterId, VendorCode, VendorRef,
};
use lockstep_persistence::Store;
use lockstep_vendors::rate::{self, AccountLimiter, LocalLimiter};
use lockstep_vendors::{DeviceProbe, IssueRequest, LockPort, VendorError};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::breaker::{Admit, BreakerActor, Record, Serve, Snapshot};
use crate::metrics::Metrics;

/// What to ask a vendor.
#[derive(Debug, Clone)]
pub enum VendorOp {
    /// Create.
    Issue(IssueRequest),
    /// Look up what an earlier attempt may have created.
    Find(IssueRequest),
    /// Move the validity window.
    Update(IssueRequest, VendorRef),
    /// Delete.
    Revoke(DeviceRef, VendorRef),
    /// List a device.
    List(DeviceRef),
    /// Probe the vendor.
    Health,
    /// Read one device's health.
    Probe(DeviceRef),
    /// Read a device's door records since a time (webhook read-back).
    DoorEvents(DeviceRef, lockstep_domain::Timestamp),
}

impl VendorOp {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Issue(_) => "issue",
            Self::Find(_) => "find",
            Self::Update(..) => "update",
            Self::Revoke(..) => "revoke",
            Self::List(_) => "list",
            Self::Health => "health",
            Self::Probe(_) => "probe",
            Self::DoorEvents(..) => "door_events",
        }
    }

    fn is_removal(&self) -> bool {
        // Revocations first (DESIGN §7): a cancelled guest's key is a hole until it lands.
        matches!(self, Self::Revoke(..))
    }

    /// Whether it puts something on a door (or moves its window): what waits while a
    /// recovering account drains its removals.
    pub fn is_addition(&self) -> bool {
        matches!(self, Self::Issue(_) | Self::Update(..))
    }
}

/// A vendor's answer.
#[derive(Debug, Clone)]
pub enum VendorReply {
    /// Created.
    Issued(VendorRef),
    /// Found or not.
    Found(Option<VendorRef>),
    /// Done.
    Done,
    /// Listed, list by list (some may have failed).
    Listings(Vec<lockstep_vendors::Listing>),
    /// A device's health.
    Probed(DeviceProbe),
    /// A device's door records.
    DoorEvents(Vec<lockstep_vendors::DoorEvent>),
}

/// A call through the worker.
#[derive(Message, Debug)]
#[rtype(result = "Result<VendorReply, VendorError>")]
pub struct Call(pub VendorOp);

/// A vendor account's request rate (spec `003` §6 `rateLimitPerMin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// What the vendor documents for an account (TTLock 100/min, Vostio 30/s, Kisi 5/s);
    /// no limit for a vendor that documents none.
    VendorDefault,
    /// No limit: simulators and test accounts.
    Unlimited,
    /// This many requests a minute, evenly spaced.
    PerMinute(NonZeroU32),
}

impl RateLimit {
    /// From configuration: unset is the vendor's default, 0 is no limit.
    pub fn from_config(per_minute: Option<u32>) -> Self {
        match per_minute {
            None => Self::VendorDefault,
            Some(n) => NonZeroU32::new(n).map_or(Self::Unlimited, Self::PerMinute),
        }
    }

    fn resolve(self, port: &dyn LockPort) -> Option<NonZeroU32> {
        match self {
            Self::VendorDefault => port.default_rate_per_minute().and_then(NonZeroU32::new),
            Self::Unlimited => None,
            Self::PerMinute(n) => Some(n),
        }
    }
}

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Requests the vendor account allows.
    pub rate: RateLimit,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Per-call timeout.
    pub timeout: Duration,
    /// How often a held account is probed to see whether it was fixed (real time).
    pub account_probe_every: Duration,
    /// After an outage, how long pending removals may make no progress (a lock that
    /// refuses its delete) before new credentials go out anyway (real time).
    pub removals_first_stall: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            rate: RateLimit::VendorDefault,
            concurrency: 8,
            timeout: Duration::from_secs(15),
            account_probe_every: Duration::from_secs(30),
            removals_first_stall: Duration::from_secs(10),
        }
    }
}

impl WorkerSettings {
    /// The defaults with no rate limit: for simulators and test accounts.
    pub fn simulator() -> Self {
        Self {
            rate: RateLimit::Unlimited,
            ..Self::default()
        }
    }
}

type Reply = oneshot::Sender<Result<VendorReply, VendorError>>;

/// An adapter's last failed call (spec `003` §3 `lastError`): a stable code and when, by
/// the business clock. The vendor's own message is left out: it may echo what the request
/// carried (a lock id, a label), and the snapshot is served to operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastError {
    /// `vendor_unavailable`, `rate_limited`, `timeout`, `auth`, or the vendor's refusal
    /// code (`storage_full`, `errcode_-4043`, ...).
    pub code: String,
    /// When.
    pub at: lockstep_domain::Timestamp,
}

impl LastError {
    /// What a call's outcome leaves as the adapter's last error, if anything: routine
    /// answers (not found, a PIN collision) and calls Lockstep never sent are not errors
    /// of the adapter.
    fn of(outcome: &CallOutcome) -> Option<String> {
        match outcome {
            CallOutcome::Answered(Err(e)) => match e {
                VendorError::Unavailable { .. } => Some("vendor_unavailable".into()),
                VendorError::RateLimited { .. } => Some("rate_limited".into()),
                VendorError::Refused { code, .. } => Some(code.clone()),
                VendorError::Auth { .. } => Some("auth".into()),
                _ => None,
            },
            CallOutcome::TimedOut => Some("timeout".into()),
            CallOutcome::Panicked => Some("adapter_panicked".into()),
            CallOutcome::Answered(Ok(_)) => None,
        }
    }
}

/// Where a worker leaves its adapter's last error for the health snapshot.
type LastErrorSlot = Arc<Mutex<Option<LastError>>>;

/// What an adapter's health snapshot is read from: its breaker and its last error.
type HealthSources = (Addr<BreakerActor>, LastErrorSlot);

/// An adapter's health (spec `003` §3 `AdapterHealthSnapshot`): its breaker's window
/// (shared by the adapters of one vendor and environment) and its own last error.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterHealth {
    /// Window, error rate, latencies, circuit, last tripped.
    pub snapshot: lockstep_domain::breaker::HealthSnapshot,
    /// The adapter's last failed call.
    pub last_error: Option<LastError>,
}

/// The supervised worker of one adapter.
pub struct VendorWorker {
    port: Arc<dyn LockPort>,
    breaker: Addr<BreakerActor>,
    account: Arc<AccountState>,
    last_error: LastErrorSlot,
    metrics: Metrics,
    settings: WorkerSettings,
    removals: VecDeque<(VendorOp, Reply)>,
    others: VecDeque<(VendorOp, Reply)>,
    in_flight: usize,
}

impl VendorWorker {
    fn new(
        port: Arc<dyn LockPort>,
        breaker: Addr<BreakerActor>,
        account: Arc<AccountState>,
        last_error: LastErrorSlot,
        metrics: Metrics,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            port,
            breaker,
            account,
            last_error,
            metrics,
            settings,
            removals: VecDeque::new(),
            others: VecDeque::new(),
            in_flight: 0,
        }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.in_flight < self.settings.concurrency {
            let Some((op, reply)) = self
                .removals
                .pop_front()
                .or_else(|| self.others.pop_front())
            else {
                break;
            };
            self.in_flight += 1;
            let fut = run_call(
                self.port.clone(),
                self.breaker.clone(),
                self.account.clone(),
                self.metrics.clone(),
                self.settings.timeout,
                op,
            );
            ctx.spawn(fut.into_actor(self).map(move |outcome, act, ctx| {
                act.in_flight -= 1;
                if let Some(code) = LastError::of(&outcome) {
                    let at = act.account.deps.clock.now();
                    *act.last_error
                        .lock()
                        .expect("last error lock is never poisoned") = Some(LastError { code, at });
                }
                match outcome {
                    CallOutcome::Answered(res) => {
                        let _ = reply.send(res);
                        act.pump(ctx);
                    }
                    CallOutcome::Panicked | CallOutcome::TimedOut => {
                        let _ = reply.send(Err(VendorError::Unavailable {
                            detail: "vendor worker restarted".into(),
                        }));
                        // A wedged or panicking worker is restarted with fresh state.
                        ctx.stop();
                    }
                }
            }));
        }
    }
}

enum CallOutcome {
    Answered(Result<VendorReply, VendorError>),
    Panicked,
    TimedOut,
}

async fn run_call(
    port: Arc<dyn LockPort>,
    breaker: Addr<BreakerActor>,
    account: Arc<AccountState>,
    metrics: Metrics,
    timeout: Duration,
    op: VendorOp,
) -> CallOutcome {
    let vendor = port.vendor().as_str();
    let label = op.label();
    let not_sent = |reason: &'static str| {
        metrics
            .vendor_calls
            .with_label_values(&[vendor, label, reason])
            .inc();
        CallOutcome::Answered(Err(VendorError::NotSent { reason }))
    };
    // The account's own gate first: held for an account-level error, or draining its
    // removals before anything new goes on a door (DESIGN §7).
    if let Some(reason) = account.gate(&op) {
        return not_sent(reason);
    }
    // V-3: an open breaker answers at once, without an outbound call.
    if let Ok(Admission::Rejected) = breaker.send(Admit).await {
        account.breaker_rejected();
        return not_sent("circuit_open");
    }
    // A latency histogram measures real elapsed time, whatever the business clock says.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    // Real time the call's requests waited for the account's rate limit: it extends the
    // timeout (a queue is not a wedge) and is left out of the latency the breaker judges.
    let waited: rate::WaitMeter = Arc::new(AtomicU64::new(0));
    let call = async {
        match op {
            VendorOp::Issue(req) => port.issue(&req).await.map(VendorReply::Issued),
            VendorOp::Find(req) => port.find(&req).await.map(VendorReply::Found),
            VendorOp::Update(req, v) => port.update(&req, &v).await.map(|()| VendorReply::Done),
            VendorOp::Revoke(d, v) => port.revoke(&d, &v).await.map(|()| VendorReply::Done),
            // a list the vendor failed is judged on its own (drift skips its kinds); only
            // when every list failed is the call a failure (the breaker counts it)
            VendorOp::List(d) => {
                let mut listings = port.listings(&d).await;
                if !listings.is_empty() && listings.iter().all(|l| l.entries.is_err()) {
                    match listings.swap_remove(0).entries {
                        Err(e) => Err(e),
                        Ok(_) => unreachable!("every listing failed"),
                    }
                } else {
                    Ok(VendorReply::Listings(listings))
                }
            }
            VendorOp::Health => port.health().await.map(|()| VendorReply::Done),
            VendorOp::Probe(d) => port.probe(&d).await.map(VendorReply::Probed),
            VendorOp::DoorEvents(d, since) => port
                .door_events(&d, since)
                .await
                .map(VendorReply::DoorEvents),
        }
    };
    let call = rate::metered(waited.clone(), AssertUnwindSafe(call).catch_unwind());
    let outcome = match timeout_beyond_waits(timeout, &waited, call).await {
        Ok(Ok(res)) => CallOutcome::Answered(res),
        Ok(Err(_)) => {
            error!(
                vendor,
                op = label,
                "vendor call panicked; restarting the worker"
            );
            CallOutcome::Panicked
        }
        Err(_) => {
            warn!(
                vendor,
                op = label,
                "vendor call timed out; restarting the worker"
            );
            CallOutcome::TimedOut
        }
    };
    let waited_for = Duration::from_nanos(waited.load(Ordering::Relaxed));
    metrics
        .rate_limit_wait_seconds
        .with_label_values(&[vendor])
        .inc_by(waited_for.as_secs_f64());
    let latency = started.elapsed().saturating_sub(waited_for);
    metrics
        .vendor_call_seconds
        .with_label_values(&[vendor, label])
        .observe(latency.as_secs_f64());
    // Only what says the vendor is unwell counts against it (DESIGN §6); a panic is ours.
    let unwell = match &outcome {
        CallOutcome::Answered(Err(e)) => e.is_vendor_unwell(),
        CallOutcome::TimedOut => true,
        CallOutcome::Answered(Ok(_)) | CallOutcome::Panicked => false,
    };
    breaker.do_send(Record { unwell, latency });
    if !matches!(outcome, CallOutcome::Panicked) {
        account.answered(unwell);
    }
    if let CallOutcome::Answered(Err(e)) = &outcome {
        if e.is_account_level() {
            account.hold(e);
        }
    }
    let result = match &outcome {
        CallOutcome::Answered(Ok(_)) => "ok",
        CallOutcome::Answered(Err(e)) => e.metric_label(),
        CallOutcome::Panicked => "panicked",
        CallOutcome::TimedOut => "timeout",
    };
    metrics
        .vendor_calls
        .with_label_values(&[vendor, label, result])
        .inc();
    outcome
}

/// `tokio::time::timeout`, except that real time spent waiting at the rate gate (counted in
/// `waited`) does not count towards `limit`.
async fn timeout_beyond_waits<F: std::future::Future>(
    limit: Duration,
    waited: &rate::WaitMeter,
    fut: F,
) -> Result<F::Output, ()> {
    tokio::pin!(fut);
    let mut excused = 0u64;
    let mut deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            out = &mut fut => return Ok(out),
            () = tokio::time::sleep_until(deadline) => {
                let total = waited.load(Ordering::Relaxed);
                if total == excused {
                    return Err(());
                }
                deadline += Duration::from_nanos(total - excused);
                excused = total;
            }
        }
    }
}

impl Actor for VendorWorker {
    type Context = Context<Self>;
}

impl Supervised for VendorWorker {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Fresh state: the calls it held fail (their callers' sagas retry them).
        self.removals.clear();
        self.others.clear();
        self.in_flight = 0;
        self.metrics
            .vendor_worker_restarts
            .with_label_values(&[self.port.vendor().as_str()])
            .inc();
    }
}

impl Handler<Call> for VendorWorker {
    type Result = ResponseFuture<Result<VendorReply, VendorError>>;

    fn handle(&mut self, msg: Call, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if msg.0.is_removal() {
            self.removals.push_back((msg.0, tx));
        } else {
            self.others.push_back((msg.0, tx));
        }
        self.pump(ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(VendorError::Unavailable {
                    detail: "vendor worker restarted".into(),
                })
            })
        })
    }
}

/// What the vendor side needs to start workers and breakers.
#[derive(Debug, Clone)]
pub struct VendorDeps {
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Store (health events).
    pub store: Arc<dyn Store>,
    /// Metrics.
    pub metrics: Metrics,
    /// Worker tunables.
    pub worker: WorkerSettings,
    /// Breaker tunables.
    pub breaker: BreakerPolicy,
}

/// Where an adapter serves.
#[derive(Debug, Clone)]
pub struct AdapterInfo {
    /// Adapter id.
    pub id: VendorAdapterId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// `sandbox` or `production`.
    pub environment: String,
    /// Spec `003` §3: a disabled adapter takes no new work.
    pub enabled: bool,
    /// Spec `003` §3: lower is preferred where several adapters serve a room (default 100).
    pub precedence: i32,
}

type BreakerKey = (VendorCode, String);

/// One limiter per vendor account of a tenant (spec `003` §6; DESIGN §6).
type AccountKey = (TenantId, String);

/// An adapter and the address of its supervised worker.
type Worker = (Arc<dyn LockPort>, Addr<VendorWorker>);

/// The vendor side of the runtime: adapters by id, each behind its supervised worker, and
/// one breaker per (vendor, environment).
#[derive(Debug, Default, Clone)]
pub struct PortRegistry {
    workers: Arc<RwLock<HashMap<VendorAdapterId, Worker>>>,
    breakers: Arc<RwLock<HashMap<BreakerKey, Addr<BreakerActor>>>>,
    limiters: Arc<RwLock<HashMap<AccountKey, Arc<dyn AccountLimiter>>>>,
    accounts: Arc<RwLock<HashMap<AccountKey, Arc<AccountState>>>>,
    by_adapter: Arc<RwLock<HashMap<VendorAdapterId, Arc<AccountState>>>>,
    infos: Arc<RwLock<HashMap<VendorAdapterId, (AdapterInfo, VendorCode)>>>,
    health: Arc<RwLock<HashMap<VendorAdapterId, HealthSources>>>,
    /// Partitions (and this node's intake) whose new work the bus holds behind a backlog:
    /// removals first does not end while any does ([`Self::backlog_held`]).
    backlogs: Arc<std::sync::atomic::AtomicUsize>,
}

impl PortRegistry {
    /// Registers (or replaces) the adapter `info.id` and starts its supervised worker. Must
    /// run inside an actix system.
    pub fn insert(&self, info: AdapterInfo, port: Arc<dyn LockPort>, deps: &VendorDeps) {
        self.infos
            .write()
            .expect("adapter info lock is never poisoned")
            .insert(info.id.clone(), (info.clone(), port.vendor()));
        let key = (port.vendor(), info.environment.clone());
        let breaker = self
            .breakers
            .write()
            .expect("breaker map lock is never poisoned")
            .entry(key.clone())
            .or_insert_with(|| {
                BreakerActor::new(
                    key.0,
                    key.1.clone(),
                    deps.breaker,
                    deps.clock.clone(),
                    deps.store.clone(),
                    deps.metrics.clone(),
                )
                .start()
            })
            .clone();
        breaker.do_send(Serve {
            tenant_id: info.tenant_id,
            property_id: info.property_id.clone(),
            adapter_id: info.id.clone(),
            port: port.clone(),
        });
        if let Some(per_minute) = deps.worker.rate.resolve(port.as_ref()) {
            let limiter = self
                .limiters
                .write()
                .expect("limiter map lock is never poisoned")
                .entry((info.tenant_id, port.account()))
                .or_insert_with(|| {
                    Arc::new(StoreLimiter::new(
                        deps.store.clone(),
                        info.tenant_id,
                        port.account(),
                        per_minute,
                        deps.clock.clone(),
                    ))
                })
                .clone();
            port.rate_gate().install(limiter);
        }
        let account = self
            .accounts
            .write()
            .expect("account map lock is never poisoned")
            .entry((info.tenant_id, port.account()))
            .or_insert_with(|| {
                Arc::new(AccountState::new(
                    info.tenant_id,
                    port.vendor(),
                    breaker.clone(),
                    deps.clone(),
                    self.backlogs.clone(),
                ))
            })
            .clone();
        account.add_adapter(info.id.clone(), port.clone());
        self.by_adapter
            .write()
            .expect("account map lock is never poisoned")
            .insert(info.id.clone(), account.clone());
        let last_error = LastErrorSlot::default();
        self.health
            .write()
            .expect("health map lock is never poisoned")
            .insert(info.id.clone(), (breaker.clone(), last_error.clone()));
        let (p, b, metrics, settings) = (
            port.clone(),
            breaker,
            deps.metrics.clone(),
            deps.worker.clone(),
        );
        let addr = Supervisor::start(move |_| {
            VendorWorker::new(p, b, account.clone(), last_error, metrics, settings)
        });
        self.workers
            .write()
            .expect("port registry lock is never poisoned")
            .insert(info.id, (port, addr));
    }

    /// The health snapshot of adapter `id` (spec `003` §3), kept current by every call
    /// its worker makes: the breaker's window and circuit, and the adapter's last error.
    pub async fn health(&self, id: &VendorAdapterId) -> Option<AdapterHealth> {
        let (breaker, slot) = self
            .health
            .read()
            .expect("health map lock is never poisoned")
            .get(id)
            .cloned()?;
        let snapshot = breaker.send(Snapshot).await.ok()?;
        let last_error = slot
            .lock()
            .expect("last error lock is never poisoned")
            .clone();
        Some(AdapterHealth {
            snapshot,
            last_error,
        })
    }

    /// Every registered adapter with its vendor, by id.
    pub fn adapters(&self) -> Vec<(AdapterInfo, VendorCode)> {
        let mut v: Vec<_> = self
            .infos
            .read()
            .expect("adapter info lock is never poisoned")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        v
    }

    /// Spec `003` §3 adapter choice of `id`: whether it takes new work (`enabled`) and its
    /// `precedence`; an adapter not registered takes none.
    pub fn choice(&self, id: &VendorAdapterId) -> (bool, i32) {
        self.infos
            .read()
            .expect("adapter info lock is never poisoned")
            .get(id)
            .map_or((false, i32::MAX), |(i, _)| (i.enabled, i.precedence))
    }

    /// Changes adapter `id`'s `enabled` and `precedence` (spec `003` §3) for the work decided
    /// from now on; false when no such adapter is registered.
    pub fn set_choice(&self, id: &VendorAdapterId, enabled: bool, precedence: i32) -> bool {
        let mut infos = self
            .infos
            .write()
            .expect("adapter info lock is never poisoned");
        let Some((info, _)) = infos.get_mut(id) else {
            return false;
        };
        info.enabled = enabled;
        info.precedence = precedence;
        true
    }

    /// The adapter serving `id`.
    pub fn port(&self, id: &VendorAdapterId) -> Option<Arc<dyn LockPort>> {
        self.workers
            .read()
            .expect("port registry lock is never poisoned")
            .get(id)
            .map(|(p, _)| p.clone())
    }

    /// Whether a call of `op` to adapter `id` would be refused by its account's gate right
    /// now (held, or draining removals first), and why: a drive asks before it commits an
    /// attempt, so waiting costs no attempt budget.
    pub fn gate(&self, id: &VendorAdapterId, op: &VendorOp) -> Option<&'static str> {
        self.by_adapter
            .read()
            .expect("account map lock is never poisoned")
            .get(id)
            .and_then(|a| a.gate(op))
    }

    /// [`Self::gate`] for something new on a door (an issue or a moved window).
    pub fn addition_gate(&self, id: &VendorAdapterId) -> Option<&'static str> {
        self.by_adapter
            .read()
            .expect("account map lock is never poisoned")
            .get(id)
            .and_then(|a| a.gate_for(true, false))
    }

    /// How many rounds adapter `id`'s account has looked at its waiting removals and kept
    /// new keys back (removals first; one every 250 ms while it lasts), since start: a
    /// round that ended removals first is not counted. For diagnostics and tests, which
    /// wait on it instead of sleeping.
    pub fn removal_rounds(&self, id: &VendorAdapterId) -> u64 {
        self.by_adapter
            .read()
            .expect("account map lock is never poisoned")
            .get(id)
            .map_or(0, |a| a.removal_rounds.load(Ordering::SeqCst))
    }

    /// Removals first on every vendor account of this node (issue 11): nothing new goes on
    /// a door until the removals that waited (at doors, or stored and not yet decided) are
    /// done, or make no progress for `removals_first_stall`, as after a vendor outage. The
    /// bus calls it when a store outage has ended and the backlog that piled up behind it
    /// is stored: the cancellations received meanwhile are then in the mailbox, and the
    /// drives stored before the outage would otherwise put new keys on doors first.
    pub fn removals_first_everywhere(&self) {
        self.for_every_account(|a| a.breaker_rejected());
    }

    /// The bus holds new work behind a backlog on one more partition (`true`), or one
    /// fewer (`false`). While any is held, removals first does not end on an empty count:
    /// the cancellations of the backlog may not be stored yet.
    pub fn backlog_held(&self, held: bool) {
        let _ = self
            .backlogs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(if held { n + 1 } else { n.saturating_sub(1) })
            });
    }

    fn for_every_account(&self, f: impl Fn(&Arc<AccountState>)) {
        let accounts: Vec<Arc<AccountState>> = self
            .accounts
            .read()
            .expect("account map lock is never poisoned")
            .values()
            .cloned()
            .collect();
        for a in &accounts {
            f(a);
        }
    }

    /// Whether adapter `id`'s vendor is down for new keys right now, and why: its account
    /// is held, its last calls all failed, or its breaker is not closed (DESIGN §7; the saga's outage fallback asks
    /// before it walks the KeyKindPolicy chain to another adapter). An unknown adapter is
    /// down.
    pub async fn outage(&self, id: &VendorAdapterId) -> Option<&'static str> {
        let account = self
            .by_adapter
            .read()
            .expect("account map lock is never poisoned")
            .get(id)
            .cloned();
        let Some(account) = account else {
            return Some("no_adapter");
        };
        if account.is_held() {
            return Some("account_held");
        }
        if account.down_by_calls() {
            return Some("calls_failing");
        }
        match account.breaker.send(crate::breaker::Circuit).await {
            Ok(lockstep_domain::breaker::CircuitState::Closed) => None,
            Ok(_) => Some("circuit_open"),
            Err(_) => None,
        }
    }

    /// Calls the adapter serving `id` through its worker.
    pub async fn call(
        &self,
        id: &VendorAdapterId,
        op: VendorOp,
    ) -> Result<VendorReply, VendorError> {
        let addr = self
            .workers
            .read()
            .expect("port registry lock is never poisoned")
            .get(id)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| VendorError::Refused {
                code: "no_adapter".into(),
                detail: "no adapter registered for the device".into(),
            })?;
        match addr.send(Call(op)).await {
            Ok(res) => res,
            Err(_) => Err(VendorError::Unavailable {
                detail: "vendor worker restarted".into(),
            }),
        }
    }
}

/// A vendor account's limit shared by every node through the store's GCRA row (DESIGN §6).
/// Each request takes the account's next slot in one statement and sleeps until it. Should
/// the store fail, the account falls back to this process's own limiter at the same rate:
/// the vendor's 429s and the breaker cover the gap, and no call is refused for it.
pub struct StoreLimiter {
    store: Arc<dyn Store>,
    tenant: TenantId,
    account: String,
    interval_us: i64,
    clock: Arc<dyn Clock>,
    local: LocalLimiter,
    warned: Mutex<bool>,
}

impl std::fmt::Debug for StoreLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLimiter")
            .field("interval_us", &self.interval_us)
            .finish_non_exhaustive()
    }
}

impl StoreLimiter {
    /// `per_minute` requests a minute for `account` of `tenant`.
    pub fn new(
        store: Arc<dyn Store>,
        tenant: TenantId,
        account: String,
        per_minute: NonZeroU32,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            tenant,
            account,
            interval_us: (60_000_000 / i64::from(per_minute.get())).max(1),
            local: LocalLimiter::new(per_minute, clock.clone()),
            clock,
            warned: Mutex::new(false),
        }
    }

    fn store_failed(&self, e: &lockstep_persistence::StoreError) {
        let mut warned = self.warned.lock().expect("never poisoned");
        if !*warned {
            warn!(error = %e, "shared rate limit unavailable; limiting this node alone");
            *warned = true;
        }
    }
}

#[async_trait::async_trait]
impl AccountLimiter for StoreLimiter {
    async fn acquire(&self) {
        let now = self.clock.now().timestamp_micros();
        match self
            .store
            .reserve_rate_slot(self.tenant, &self.account, now, self.interval_us)
            .await
        {
            Ok(slot) => {
                if let Some(at) = chrono::DateTime::from_timestamp_micros(slot) {
                    rate::sleep_until(self.clock.as_ref(), at).await;
                }
            }
            Err(e) => {
                self.store_failed(&e);
                self.local.acquire().await;
            }
        }
    }

    async fn hold_until(&self, until: chrono::DateTime<chrono::Utc>) {
        self.local.hold_until(until).await;
        if let Err(e) = self
            .store
            .hold_rate_until(self.tenant, &self.account, until.timestamp_micros())
            .await
        {
            self.store_failed(&e);
        }
    }
}

/// The state of one vendor account (per tenant) that every adapter on it shares
/// (DESIGN §7):
/// - **held**: an account-level error (bad credentials, suspended account, exhausted
///   quota) holds all of the account's work, like an open breaker, instead of failing
///   each credential; the account is probed every `account_probe_every` and its work
///   resumes when the probe succeeds (a fixed secret is read at the next token fetch);
/// - **removals first**: after the breaker refused the account's calls, or after a hold,
///   nothing new goes on a door until the removals that waited are done (or make no
///   progress for `removals_first_stall`), so a cancelled guest's key leaves before any
///   new guest's key arrives.
pub struct AccountState {
    tenant: TenantId,
    vendor: VendorCode,
    breaker: Addr<BreakerActor>,
    deps: VendorDeps,
    adapters: RwLock<Vec<(VendorAdapterId, Arc<dyn LockPort>)>>,
    held: Mutex<Option<String>>,
    removals_first: std::sync::atomic::AtomicBool,
    /// Removals pending on the account's devices as last counted (`i64::MAX`: unknown).
    pending_removals: std::sync::atomic::AtomicI64,
    /// Rounds of removals first that counted and kept new keys waiting (since start).
    removal_rounds: std::sync::atomic::AtomicU64,
    supervising: std::sync::atomic::AtomicBool,
    /// The account's calls answered as unwell in a row (5xx, 429, transport, timeout);
    /// any other answer resets it.
    consecutive_unwell: std::sync::atomic::AtomicU32,
    /// When the account last had a call answered well (business clock, ms since the epoch).
    last_well_ms: std::sync::atomic::AtomicI64,
    /// The registry's count of backlogs the bus holds new work behind.
    backlogs: Arc<std::sync::atomic::AtomicUsize>,
}

/// Unwell answers in a row after which the account counts as down whatever its breaker
/// says, once nothing has been answered well for [`DOWN_AFTER_QUIET_MS`]: at a guest or
/// two an hour a breaker never sees the volume it needs to open, and a vendor down for
/// hours must still have its removals go first when it is back. The quiet period keeps a
/// busy account that merely loses some answers (a few failures in a row among many
/// successes) from being treated as down, and leaves a burst of failures to the breaker.
const DOWN_AFTER_UNWELL: u32 = 3;
/// See [`DOWN_AFTER_UNWELL`] (business time, as the breaker's own `open_for`).
const DOWN_AFTER_QUIET_MS: i64 = 30_000;

impl std::fmt::Debug for AccountState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountState")
            .field("vendor", &self.vendor)
            .field("held", &self.is_held())
            .field(
                "removals_first",
                &self.removals_first.load(Ordering::SeqCst),
            )
            .finish_non_exhaustive()
    }
}

impl AccountState {
    fn new(
        tenant: TenantId,
        vendor: VendorCode,
        breaker: Addr<BreakerActor>,
        deps: VendorDeps,
        backlogs: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Self {
        let started_ms = deps.clock.now().timestamp_millis();
        Self {
            tenant,
            vendor,
            breaker,
            deps,
            adapters: RwLock::new(Vec::new()),
            held: Mutex::new(None),
            removals_first: std::sync::atomic::AtomicBool::new(false),
            pending_removals: std::sync::atomic::AtomicI64::new(0),
            removal_rounds: std::sync::atomic::AtomicU64::new(0),
            supervising: std::sync::atomic::AtomicBool::new(false),
            consecutive_unwell: std::sync::atomic::AtomicU32::new(0),
            last_well_ms: std::sync::atomic::AtomicI64::new(started_ms),
            backlogs,
        }
    }

    fn add_adapter(&self, id: VendorAdapterId, port: Arc<dyn LockPort>) {
        let mut a = self
            .adapters
            .write()
            .expect("adapter list lock is never poisoned");
        a.retain(|(i, _)| *i != id);
        a.push((id, port));
    }

    fn is_held(&self) -> bool {
        self.held.lock().map(|h| h.is_some()).unwrap_or(false)
    }

    /// Why a call of `op` may not go out now, if it may not.
    fn gate(&self, op: &VendorOp) -> Option<&'static str> {
        // a health probe is how one finds out whether the account works again
        self.gate_for(op.is_addition(), matches!(op, VendorOp::Health))
    }

    fn gate_for(&self, addition: bool, probe: bool) -> Option<&'static str> {
        if probe {
            return None;
        }
        if self.is_held() {
            return Some("account_held");
        }
        if addition
            && self.removals_first.load(Ordering::SeqCst)
            && (self.pending_removals.load(Ordering::SeqCst) > 0
                || self.backlogs.load(Ordering::SeqCst) > 0)
        {
            return Some("removals_first");
        }
        None
    }

    /// The breaker refused one of the account's calls, or its calls keep failing: the
    /// vendor is down, and when it is back the removals that waited go first.
    fn breaker_rejected(self: &Arc<Self>) {
        if !self.removals_first.swap(true, Ordering::SeqCst) {
            self.pending_removals.store(i64::MAX, Ordering::SeqCst);
        }
        self.supervise();
    }

    /// A call of the account was answered: unwell (counted toward [`DOWN_AFTER_UNWELL`],
    /// after which removals go first as after a breaker's refusal) or not (the count
    /// starts again).
    fn answered(self: &Arc<Self>, unwell: bool) {
        if !unwell {
            self.consecutive_unwell.store(0, Ordering::SeqCst);
            self.last_well_ms
                .store(self.deps.clock.now().timestamp_millis(), Ordering::SeqCst);
            return;
        }
        self.consecutive_unwell.fetch_add(1, Ordering::SeqCst);
        if self.down_by_calls() {
            self.breaker_rejected();
        }
    }

    /// Whether the account's last calls all failed as unwell, and nothing was answered
    /// well for a while.
    fn down_by_calls(&self) -> bool {
        self.consecutive_unwell.load(Ordering::SeqCst) >= DOWN_AFTER_UNWELL
            && self.deps.clock.now().timestamp_millis() - self.last_well_ms.load(Ordering::SeqCst)
                >= DOWN_AFTER_QUIET_MS
    }

    /// An account-level error: hold the account's work until a probe succeeds.
    fn hold(self: &Arc<Self>, e: &VendorError) {
        let newly = {
            let mut held = self.held.lock().expect("hold lock is never poisoned");
            let newly = held.is_none();
            if newly {
                *held = Some(e.to_string());
            }
            newly
        };
        if newly {
            warn!(
                vendor = self.vendor.as_str(),
                error = %e,
                "vendor account rejected: holding its work until it is fixed"
            );
            self.deps
                .metrics
                .vendor_accounts_held
                .with_label_values(&[self.vendor.as_str()])
                .inc();
            self.removals_first.store(true, Ordering::SeqCst);
            self.pending_removals.store(i64::MAX, Ordering::SeqCst);
        }
        self.supervise();
    }

    fn supervise(self: &Arc<Self>) {
        if self.supervising.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        // a tokio task, not an actix one: the bus asks from outside any actix arbiter
        // (`PortRegistry::removals_first_everywhere`)
        tokio::spawn(async move {
            loop {
                me.supervise_once().await;
                me.supervising.store(false, Ordering::SeqCst);
                // set again between the last look and now? then look again
                let again = me.is_held() || me.removals_first.load(Ordering::SeqCst);
                if !again || me.supervising.swap(true, Ordering::SeqCst) {
                    break;
                }
            }
        });
    }

    async fn supervise_once(&self) {
        let settings = &self.deps.worker;
        let mut last_count = i64::MAX;
        let mut last_progress = tokio::time::Instant::now();
        loop {
            if self.is_held() {
                tokio::time::sleep(settings.account_probe_every).await;
                self.probe().await;
                last_progress = tokio::time::Instant::now();
                continue;
            }
            if !self.removals_first.load(Ordering::SeqCst) {
                return;
            }
            let ids: Vec<VendorAdapterId> = self
                .adapters
                .read()
                .expect("adapter list lock is never poisoned")
                .iter()
                .map(|(i, _)| i.clone())
                .collect();
            let closed = matches!(
                self.breaker.send(crate::breaker::Circuit).await,
                Ok(lockstep_domain::breaker::CircuitState::Closed)
            );
            // up: the breaker closed and the last calls not all failing
            let closed = closed && !self.down_by_calls();
            match self.removals_waiting(&ids).await {
                Ok(n) => {
                    self.pending_removals.store(n, Ordering::SeqCst);
                    if n < last_count || !closed {
                        // progress, or still down (the stall clock starts once it is up)
                        last_progress = tokio::time::Instant::now();
                        last_count = last_count.min(n);
                    }
                    // a backlog the bus still stores may hold cancellations not counted yet
                    let backlog = self.backlogs.load(Ordering::SeqCst) > 0;
                    if backlog && n == 0 && last_count == 0 {
                        // nothing counted to make progress on: the stall clock waits too
                        last_progress = tokio::time::Instant::now();
                    }
                    let stalled = last_progress.elapsed() >= settings.removals_first_stall;
                    if closed && ((n == 0 && !backlog) || stalled) {
                        if n > 0 {
                            warn!(
                                vendor = self.vendor.as_str(),
                                pending = n,
                                "removals make no progress; new credentials go out beside them"
                            );
                        } else {
                            info!(
                                vendor = self.vendor.as_str(),
                                "removals drained after the outage; new credentials go out"
                            );
                        }
                        self.removals_first.store(false, Ordering::SeqCst);
                        self.resume(self.deps.clock.now()).await;
                        // a drive that met the gate just before the release parks itself
                        // after the resume above, on its backoff: bring it forward too
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if !self.removals_first.load(Ordering::SeqCst) {
                            self.resume(self.deps.clock.now()).await;
                        }
                        return;
                    }
                }
                Err(e) => warn!(error = %e, "counting pending removals failed"),
            }
            self.removal_rounds.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The removals that waited on the account's `adapters`: door truth pending removal,
    /// and removal messages (a cancellation received during the outage) not yet decided,
    /// which would otherwise let new keys out before their removals were even written.
    async fn removals_waiting(
        &self,
        adapters: &[VendorAdapterId],
    ) -> lockstep_persistence::StoreResult<i64> {
        let at_doors = self
            .deps
            .store
            .pending_removals(self.tenant, adapters)
            .await?;
        let undecided = self
            .deps
            .store
            .undecided_removals(
                self.tenant,
                adapters,
                &crate::events_in::REMOVAL_TOPICS,
                self.deps.clock.now(),
            )
            .await?;
        Ok(at_doors.saturating_add(undecided))
    }

    /// Probes a held account through one of its adapters, past the gate.
    async fn probe(&self) {
        let port = self
            .adapters
            .read()
            .expect("adapter list lock is never poisoned")
            .first()
            .map(|(_, p)| p.clone());
        let Some(port) = port else { return };
        match port.health().await {
            Ok(()) => {
                if let Ok(mut held) = self.held.lock() {
                    *held = None;
                }
                self.deps
                    .metrics
                    .vendor_accounts_held
                    .with_label_values(&[self.vendor.as_str()])
                    .dec();
                info!(
                    vendor = self.vendor.as_str(),
                    "vendor account accepted again: its held work resumes, removals first"
                );
                self.resume(self.deps.clock.now()).await;
            }
            Err(e) if e.is_account_level() => {}
            Err(e) => {
                debug!(vendor = self.vendor.as_str(), error = %e, "held account's probe failed")
            }
        }
    }

    /// Brings the vendor's parked drives forward, removals due first.
    async fn resume(&self, now: lockstep_domain::Timestamp) {
        match self.deps.store.resume_parked(self.vendor, now).await {
            Ok(n) => info!(
                vendor = self.vendor.as_str(),
                resumed = n,
                "parked work resumed"
            ),
            Err(e) => {
                warn!(error = %e, "resuming parked work failed; it resumes on its own timers")
            }
        }
    }
}
