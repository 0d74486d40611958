//! `BreakerActor`: one per (vendor, environment) (DESIGN §2). It owns the pure breaker of
//! `lockstep_domain::breaker`, answers admissions for every vendor call (V-3: an open
//! breaker fails calls at once, without reaching the vendor), learns from each call's
//! outcome, and on every state change sets the Prometheus gauge, counts the transition, and
//! writes `melmastoon.lock.vendor_adapter.health_changed.v1` to the outbox of every adapter
//! it serves.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use lockstep_domain::breaker::{Admission, Breaker, BreakerPolicy, CircuitState, Outcome};
use lockstep_domain::{Clock, PropertyId, TenantId, VendorAdapterId, VendorCode};
use lockstep_persistence::{OutboxRow, Store, UnitOfWork};
use lockstep_vendors::LockPort;
use serde_json::json;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Ask before a call.
#[derive(Message, Debug)]
#[rtype(result = "Admission")]
pub struct Admit;

/// Tell after a call.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Record {
    /// Whether the outcome says the vendor is unwell (transport, timeout, 5xx, 429).
    pub unwell: bool,
    /// How long it took.
    pub latency: Duration,
}

/// The circuit as it stands now.
#[derive(Message, Debug)]
#[rtype(result = "CircuitState")]
pub struct Circuit;

/// The health snapshot now (spec `003` §3 `AdapterHealthSnapshot`, without `lastError`).
#[derive(Message, Debug)]
#[rtype(result = "lockstep_domain::breaker::HealthSnapshot")]
pub struct Snapshot;

/// An adapter this breaker serves (for its health events, and to probe the vendor).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Serve {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Adapter.
    pub adapter_id: VendorAdapterId,
    /// The adapter itself: a half-open breaker probes the vendor with its `health` call.
    pub port: Arc<dyn LockPort>,
}

/// The outcome of the breaker's own half-open probe.
#[derive(Debug)]
struct Probed {
    unwell: bool,
    latency: Duration,
}

/// The breaker of one (vendor, environment).
pub struct BreakerActor {
    vendor: VendorCode,
    environment: String,
    breaker: Breaker,
    clock: Arc<dyn Clock>,
    store: Arc<dyn Store>,
    metrics: Metrics,
    adapters: Vec<Serve>,
    probing: bool,
    probes: u64,
}

impl BreakerActor {
    /// A closed breaker. The policy is validated at start-up (`BreakerPolicy::validate`);
    /// an invalid one falls back to the spec's defaults here rather than failing calls.
    pub fn new(
        vendor: VendorCode,
        environment: String,
        policy: BreakerPolicy,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
        metrics: Metrics,
    ) -> Self {
        let breaker = Breaker::new(policy).unwrap_or_else(|e| {
            warn!(error = ?e, "invalid breaker policy; using the defaults");
            Breaker::new(BreakerPolicy::default()).expect("the default breaker policy is valid")
        });
        let me = Self {
            vendor,
            environment,
            breaker,
            clock,
            store,
            metrics,
            adapters: Vec::new(),
            probing: false,
            probes: 0,
        };
        me.export(CircuitState::Closed);
        me
    }

    fn export(&self, state: CircuitState) {
        for s in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ] {
            self.metrics
                .breaker_state
                .with_label_values(&[self.vendor.as_str(), &self.environment, s.as_str()])
                .set(i64::from(s == state));
        }
    }

    fn changed(&mut self, from: CircuitState, to: CircuitState, ctx: &mut Context<Self>) {
        let vendor = self.vendor.as_str();
        info!(vendor, environment = %self.environment, from = from.as_str(), to = to.as_str(), "vendor breaker changed state");
        self.export(to);
        self.metrics
            .breaker_transitions
            .with_label_values(&[vendor, &self.environment, to.as_str()])
            .inc();
        let now = self.clock.now();
        let snapshot = self.breaker.snapshot(now);
        let store = self.store.clone();
        let rows: Vec<(TenantId, OutboxRow)> = self
            .adapters
            .iter()
            .map(|a| {
                let id = ulid::Ulid::new().to_string();
                let data = json!({
                    "vendorAdapterId": a.adapter_id.as_str(),
                    "tenantId": a.tenant_id.to_string(),
                    "propertyId": a.property_id.as_str(),
                    "vendor": vendor,
                    "environment": self.environment,
                    "from": from.as_str(),
                    "circuit": to.as_str(),
                    "errorRatePct": snapshot.error_rate_pct,
                    "p99LatencyMs": snapshot.p99_latency_ms,
                    "windowSize": snapshot.window_size,
                    "occurredAt": now.to_rfc3339(),
                });
                let subject = "melmastoon.lock.vendor_adapter.health_changed.v1";
                let envelope = json!({
                    "id": id, "subject": subject, "time": now.to_rfc3339(),
                    "tenantId": a.tenant_id.to_string(), "propertyId": a.property_id.as_str(),
                    "traceId": null, "data": data,
                });
                (
                    a.tenant_id,
                    OutboxRow {
                        id,
                        tenant_id: a.tenant_id,
                        aggregate_id: a.adapter_id.as_str().to_owned(),
                        topic: subject.into(),
                        payload: data,
                        envelope,
                        created_at: now,
                        publish_attempts: 0,
                    },
                )
            })
            .collect();
        let resume =
            (to == CircuitState::Closed && from != CircuitState::Closed).then_some(self.vendor);
        ctx.spawn(
            async move {
                // Recovered: the parked backlog drains now, revocations first (DESIGN §7);
                // the next tick wakes them in due order.
                if let Some(vendor) = resume {
                    match store.resume_parked(vendor, now).await {
                        Ok(n) => info!(vendor = vendor.as_str(), resumed = n, "vendor recovered; parked work resumed"),
                        Err(e) => warn!(error = %e, "resuming parked work failed; it resumes on its own timers"),
                    }
                }
                for (tenant, row) in rows {
                    let mut uow = UnitOfWork::new(tenant, None, now);
                    uow.outbox.push(row);
                    if let Err(e) = store.commit(uow).await {
                        warn!(error = %e, "recording a health_changed event failed");
                    }
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for BreakerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // open → half-open happens with time, not with a call: look every half second so
        // the gauge and the health event follow (admissions also see it at once); a
        // half-open circuit is then probed.
        ctx.run_interval(Duration::from_millis(500), |act, ctx| {
            let now = act.clock.now();
            if let Some(t) = act.breaker.poll(now) {
                act.changed(t.from, t.to, ctx);
            }
            if act.breaker.state() == CircuitState::HalfOpen {
                act.probe(ctx);
            }
        });
    }
}

impl BreakerActor {
    /// DESIGN §7: the half-open probe is the vendor's `health` call, made by the breaker
    /// itself through one of the adapters it serves (in turn), never a guest's credential:
    /// an outage of any length spends no credential's attempts, and parked work stays
    /// parked until the vendor answered. Without an adapter to probe with, calls are the
    /// probes (the domain breaker's own rule).
    fn probe(&mut self, ctx: &mut Context<Self>) {
        if self.probing || self.adapters.is_empty() {
            return;
        }
        if self.breaker.admit(self.clock.now()) != Admission::Probe {
            return;
        }
        self.probing = true;
        let port = self.adapters[(self.probes % self.adapters.len() as u64) as usize]
            .port
            .clone();
        self.probes += 1;
        let metrics = self.metrics.clone();
        let limit = self
            .breaker
            .policy()
            .p99_latency
            .to_std()
            .unwrap_or(Duration::from_secs(5))
            * 2;
        ctx.spawn(
            async move {
                // a probe's latency is real elapsed time, whatever the business clock says
                #[allow(clippy::disallowed_methods)]
                let started = std::time::Instant::now();
                let unwell = match tokio::time::timeout(limit, port.health()).await {
                    Ok(Ok(())) => false,
                    // answered: the vendor is reachable, whatever it thinks of the request
                    Ok(Err(e)) => e.is_vendor_unwell(),
                    Err(_) => true,
                };
                let outcome = if unwell { "unavailable" } else { "ok" };
                metrics
                    .vendor_calls
                    .with_label_values(&[port.vendor().as_str(), "health", outcome])
                    .inc();
                Probed {
                    unwell,
                    latency: started.elapsed(),
                }
            }
            .into_actor(self)
            .map(|probed, act, ctx| {
                act.probing = false;
                <Self as Handler<Record>>::handle(
                    act,
                    Record {
                        unwell: probed.unwell,
                        latency: probed.latency,
                    },
                    ctx,
                );
            }),
        );
    }
}

impl Handler<Admit> for BreakerActor {
    type Result = MessageResult<Admit>;
    fn handle(&mut self, _msg: Admit, ctx: &mut Self::Context) -> Self::Result {
        let now = self.clock.now();
        if let Some(t) = self.breaker.poll(now) {
            self.changed(t.from, t.to, ctx);
        }
        if self.breaker.state() == CircuitState::HalfOpen && !self.adapters.is_empty() {
            // the breaker probes with the vendor's health call, not with this call
            self.probe(ctx);
            return MessageResult(Admission::Rejected);
        }
        MessageResult(self.breaker.admit(now))
    }
}

impl Handler<Record> for BreakerActor {
    type Result = ();
    fn handle(&mut self, msg: Record, ctx: &mut Self::Context) {
        let now = self.clock.now();
        let latency = chrono::Duration::from_std(msg.latency).unwrap_or(chrono::Duration::MAX);
        if let Some(t) = self.breaker.record(
            now,
            Outcome {
                unwell: msg.unwell,
                latency,
            },
        ) {
            self.changed(t.from, t.to, ctx);
        }
    }
}

impl Handler<Circuit> for BreakerActor {
    type Result = MessageResult<Circuit>;
    fn handle(&mut self, _msg: Circuit, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.breaker.circuit_at(self.clock.now()))
    }
}

impl Handler<Snapshot> for BreakerActor {
    type Result = MessageResult<Snapshot>;
    fn handle(&mut self, _msg: Snapshot, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.breaker.snapshot(self.clock.now()))
    }
}

impl Handler<Serve> for BreakerActor {
    type Result = ();
    fn handle(&mut self, msg: Serve, _ctx: &mut Self::Context) {
        if !self.adapters.iter().any(|a| a.adapter_id == msg.adapter_id) {
            self.adapters.push(msg);
        }
    }
}
