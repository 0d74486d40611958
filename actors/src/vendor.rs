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
use lockstep_vendors::{DeviceProbe, IssueRequest, LockPort, VendorEntry, VendorError};
use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::breaker::{Admit, BreakerActor, Record, Serve};
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
    /// Listed.
    Entries(Vec<VendorEntry>),
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
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            rate: RateLimit::VendorDefault,
            concurrency: 8,
            timeout: Duration::from_secs(15),
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

/// The supervised worker of one adapter.
pub struct VendorWorker {
    port: Arc<dyn LockPort>,
    breaker: Addr<BreakerActor>,
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
        metrics: Metrics,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            port,
            breaker,
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
                self.metrics.clone(),
                self.settings.timeout,
                op,
            );
            ctx.spawn(fut.into_actor(self).map(move |outcome, act, ctx| {
                act.in_flight -= 1;
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
    metrics: Metrics,
    timeout: Duration,
    op: VendorOp,
) -> CallOutcome {
    let vendor = port.vendor().as_str();
    let label = op.label();
    // V-3: an open breaker answers at once, without an outbound call.
    if let Ok(Admission::Rejected) = breaker.send(Admit).await {
        metrics
            .vendor_calls
            .with_label_values(&[vendor, label, "circuit_open"])
            .inc();
        return CallOutcome::Answered(Err(VendorError::Unavailable {
            detail: "circuit open".into(),
        }));
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
            VendorOp::List(d) => port.list(&d).await.map(VendorReply::Entries),
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
    let latency = started
        .elapsed()
        .saturating_sub(Duration::from_nanos(waited.load(Ordering::Relaxed)));
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
    infos: Arc<RwLock<HashMap<VendorAdapterId, (AdapterInfo, VendorCode)>>>,
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
        let (p, b, metrics, settings) = (
            port.clone(),
            breaker,
            deps.metrics.clone(),
            deps.worker.clone(),
        );
        let addr = Supervisor::start(move |_| VendorWorker::new(p, b, metrics, settings));
        self.workers
            .write()
            .expect("port registry lock is never poisoned")
            .insert(info.id, (port, addr));
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

    /// The adapter serving `id`.
    pub fn port(&self, id: &VendorAdapterId) -> Option<Arc<dyn LockPort>> {
        self.workers
            .read()
            .expect("port registry lock is never poisoned")
            .get(id)
            .map(|(p, _)| p.clone())
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
