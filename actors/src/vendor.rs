//! Vendor workers (DESIGN §2): one supervised actor per adapter instance. It holds the
//! adapter's rate limiter (governor, on our `Clock`), serves revocations before issuances,
//! and runs each call under `catch_unwind` and a timeout. A caught panic or a timeout stops
//! the worker; its actix `Supervisor` restarts it with fresh state, every call it held
//! fails as `Unavailable`, and the saga retries them from the mailbox: nothing is lost.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;
use governor::clock::Clock as GovernorClockTrait;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use lockstep_domain::breaker::{Admission, BreakerPolicy};
use lockstep_domain::{
    Clock, DeviceRef, PropertyId, TenantId, VendorAdapterId, VendorCode, VendorRef,
};
use lockstep_persistence::Store;
use lockstep_vendors::{IssueRequest, LockPort, VendorEntry, VendorError};
use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::breaker::{Admit, BreakerActor, Record, Serve};
use crate::metrics::Metrics;

/// governor's clock, read from our `Clock` port (DESIGN §9): on a scaled or manual clock
/// the rate limit scales with it.
#[derive(Clone, Debug)]
pub struct LimiterClock(pub Arc<dyn Clock>);

impl GovernorClockTrait for LimiterClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        let t = self.0.now();
        let nanos = t.timestamp_nanos_opt().unwrap_or(i64::MAX).max(0) as u64;
        Nanos::from(nanos)
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, LimiterClock, NoOpMiddleware<Nanos>>;

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
    /// Probe.
    Health,
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
}

/// A call through the worker.
#[derive(Message, Debug)]
#[rtype(result = "Result<VendorReply, VendorError>")]
pub struct Call(pub VendorOp);

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Calls per minute allowed by the vendor account.
    pub per_minute: u32,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Per-call timeout.
    pub timeout: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            // Simulators and test accounts: effectively unlimited. A real vendor account's
            // limit is configured per adapter (`rate_limit_per_min`; TTLock's is 100).
            per_minute: 60_000,
            concurrency: 8,
            timeout: Duration::from_secs(15),
        }
    }
}

type Reply = oneshot::Sender<Result<VendorReply, VendorError>>;

/// The supervised worker of one adapter.
pub struct VendorWorker {
    port: Arc<dyn LockPort>,
    breaker: Addr<BreakerActor>,
    limiter: Arc<Limiter>,
    clock: Arc<dyn Clock>,
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
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        settings: WorkerSettings,
    ) -> Self {
        let per_minute = NonZeroU32::new(settings.per_minute.max(1)).expect("max(1) is non-zero");
        // Evenly spaced calls (burst 1): governor's default burst is the whole minute's
        // quota, and even a one-second burst plus the steady rate can exceed a vendor that
        // counts per second. Spacing still delivers the configured rate.
        let one = NonZeroU32::new(1).expect("1 is non-zero");
        let limiter = Arc::new(RateLimiter::direct_with_clock(
            Quota::per_minute(per_minute).allow_burst(one),
            LimiterClock(clock.clone()),
        ));
        Self {
            port,
            breaker,
            limiter,
            clock,
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
                self.limiter.clone(),
                self.clock.clone(),
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
    limiter: Arc<Limiter>,
    clock: Arc<dyn Clock>,
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
    // Wait for the vendor account's rate limit, measured on our clock.
    while let Err(not_until) = limiter.check() {
        let wait = not_until.wait_time_from(LimiterClock(clock.clone()).now());
        tokio::time::sleep(wait.clamp(Duration::from_millis(1), Duration::from_millis(100))).await;
    }
    // A latency histogram measures real elapsed time, whatever the business clock says.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let call = async {
        match op {
            VendorOp::Issue(req) => port.issue(&req).await.map(VendorReply::Issued),
            VendorOp::Find(req) => port.find(&req).await.map(VendorReply::Found),
            VendorOp::Update(req, v) => port.update(&req, &v).await.map(|()| VendorReply::Done),
            VendorOp::Revoke(d, v) => port.revoke(&d, &v).await.map(|()| VendorReply::Done),
            VendorOp::List(d) => port.list(&d).await.map(VendorReply::Entries),
            VendorOp::Health => port.health().await.map(|()| VendorReply::Done),
        }
    };
    let outcome = match tokio::time::timeout(timeout, AssertUnwindSafe(call).catch_unwind()).await {
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
    let latency = started.elapsed();
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

/// An adapter and the address of its supervised worker.
type Worker = (Arc<dyn LockPort>, Addr<VendorWorker>);

/// The vendor side of the runtime: adapters by id, each behind its supervised worker, and
/// one breaker per (vendor, environment).
#[derive(Debug, Default, Clone)]
pub struct PortRegistry {
    workers: Arc<RwLock<HashMap<VendorAdapterId, Worker>>>,
    breakers: Arc<RwLock<HashMap<BreakerKey, Addr<BreakerActor>>>>,
}

impl PortRegistry {
    /// Registers (or replaces) the adapter `info.id` and starts its supervised worker. Must
    /// run inside an actix system.
    pub fn insert(&self, info: AdapterInfo, port: Arc<dyn LockPort>, deps: &VendorDeps) {
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
        let (p, b, clock, metrics, settings) = (
            port.clone(),
            breaker,
            deps.clock.clone(),
            deps.metrics.clone(),
            deps.worker.clone(),
        );
        let addr = Supervisor::start(move |_| VendorWorker::new(p, b, clock, metrics, settings));
        self.workers
            .write()
            .expect("port registry lock is never poisoned")
            .insert(info.id, (port, addr));
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
