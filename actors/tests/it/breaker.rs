//! Issue 4, point 4: an hour-long vendor outage on a scaled clock.

use std::sync::Arc;
use std::time::Duration;

use lockstep_actors::{SagaSettings, WorkerSettings};
use lockstep_domain::breaker::BreakerPolicy;
use lockstep_domain::{Clock, ScaledClock, SystemClock};

use crate::rig::Rig;

const OPEN: &str =
    "lockstep_vendor_breaker_state{environment=\"sandbox\",state=\"open\",vendor=\"ttlock\"}";
const CLOSED: &str =
    "lockstep_vendor_breaker_state{environment=\"sandbox\",state=\"closed\",vendor=\"ttlock\"}";
const TO_HALF_OPEN: &str = "lockstep_vendor_breaker_transitions_total{environment=\"sandbox\",to=\"half_open\",vendor=\"ttlock\"}";
const TO_CLOSED: &str = "lockstep_vendor_breaker_transitions_total{environment=\"sandbox\",to=\"closed\",vendor=\"ttlock\"}";
const CALLS: &str = "lockstep_vendor_calls_total{";

/// Calls that reached the vendor and failed (all operations).
fn reached(rig: &Rig) -> f64 {
    rig.metric_sum(CALLS, "outcome=\"unavailable\"")
}

/// Calls refused at once by the open breaker (all operations).
fn refused(rig: &Rig) -> f64 {
    rig.metric_sum(CALLS, "outcome=\"circuit_open\"")
}

async fn until(rig: &Rig, what: &str, mut f: impl FnMut(&Rig) -> bool) -> anyhow::Result<()> {
    for _ in 0..600 {
        if f(rig) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("never saw: {what}\n{}", rig.metrics_text())
}

/// The simulator fails every call for one simulated hour (6 s at 600×). The breaker opens,
/// calls stop reaching the vendor (they fail at once, V-3), it half-opens to probe, and
/// closes after recovery; the parked backlog then drains with revocations first.
#[actix_rt::test]
async fn an_hour_long_outage_opens_the_breaker_and_the_backlog_drains_revocations_first(
) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(
        ScaledClock::new(Arc::new(SystemClock), SystemClock.now(), 600.0)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
    );
    let rig = Rig::start_with(
        // one call at a time, so the drain order is the worker's choice
        WorkerSettings {
            concurrency: 1,
            ..WorkerSettings::simulator()
        },
        clock.clone(),
        BreakerPolicy {
            min_calls: 4,
            ..BreakerPolicy::default()
        },
        // production backoff: 0.5 s doubling to 5 min (business time)
        SagaSettings::default(),
    )
    .await?;
    rig.confirm("rsv_b1", 1).await?;
    rig.confirm("rsv_b2", 2).await?;
    rig.wait_settled("rsv_b1", "active").await?;
    rig.wait_settled("rsv_b2", "active").await?;
    assert_eq!(rig.metric(CLOSED), 1.0);

    let outage_started = clock.now();
    rig.sim.handle().update_faults(|f| f.outage = true);
    // During the outage: two guests cancel (revocations), six arrive (issuances).
    rig.cancel("rsv_b1").await?;
    rig.cancel("rsv_b2").await?;
    let arrivals: Vec<(String, i64)> = (0..6).map(|i| (format!("rsv_n{i}"), 3 + (i % 2))).collect();
    for (i, (r, room)) in arrivals.iter().enumerate() {
        rig.confirm_on(r, *room, 10 + i as u32).await?;
    }

    until(&rig, "the breaker open", |r| r.metric(OPEN) == 1.0).await?;
    // Calls stop reaching the vendor: while open they fail at once; only the half-open
    // probes go out.
    let reached_at_open = reached(&rig);
    let half_opens_at_open = rig.metric(TO_HALF_OPEN);
    let refused_at_open = refused(&rig);
    until(&rig, "calls refused without reaching the vendor", |r| {
        refused(r) >= refused_at_open + 5.0
    })
    .await?;
    until(&rig, "a half-open probe", |r| r.metric(TO_HALF_OPEN) >= 1.0).await?;
    assert_eq!(
        rig.passcodes(3) + rig.passcodes(4),
        0,
        "nothing could be issued yet"
    );
    assert_eq!(
        rig.passcodes(1) + rig.passcodes(2),
        2,
        "nothing could be revoked yet"
    );

    // One simulated hour later the vendor is back.
    while clock.now() < outage_started + chrono::Duration::hours(1) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let probes = reached(&rig) - reached_at_open;
    let refused_total = refused(&rig) - refused_at_open;
    let half_opens = rig.metric(TO_HALF_OPEN) - half_opens_at_open;
    // V-3: while not closed, nothing but half-open probes reaches the vendor, at most
    // `half_open_probes` (3) per half-open period; everything else fails at once.
    assert!(refused_total > 0.0, "calls were refused at once while open");
    assert!(
        probes <= 3.0 * (half_opens + 1.0),
        "only probes reached the vendor: {probes} calls over {half_opens} half-open periods"
    );
    let retries = rig.metric("lockstep_saga_steps_total{outcome=\"retry\",step=\"any\"}");
    assert!(
        retries < 2_000.0,
        "parked on durable timers, not spinning: {retries} retries in a simulated hour"
    );
    rig.port.log.lock().unwrap().clear();
    rig.sim.handle().update_faults(|f| f.outage = false);
    for r in ["rsv_b1", "rsv_b2"] {
        rig.wait_settled(r, "revoked").await?;
    }
    for (r, _) in &arrivals {
        rig.wait_settled(r, "active").await?;
    }
    until(&rig, "the breaker closed", |r| {
        r.metric(CLOSED) == 1.0 && r.metric(TO_CLOSED) >= 1.0
    })
    .await?;
    assert_eq!(
        (
            rig.passcodes(1),
            rig.passcodes(2),
            rig.passcodes(3),
            rig.passcodes(4)
        ),
        (0, 0, 3, 3)
    );

    // Revocations first: no issuance but the final half-open probes (at most 3, whatever
    // retries came due then) ran before the parked revocations.
    let log = rig.port.log.lock().unwrap().clone();
    let last_revoke = log
        .iter()
        .rposition(|c| *c == "revoke")
        .expect("revocations reached the vendor");
    let issues_before = log[..last_revoke].iter().filter(|c| **c == "issue").count();
    assert!(issues_before <= 3, "revocations drained first: {log:?}");
    // Every state change was also a health_changed.v1 event of the adapter.
    let health: Vec<String> = rig
        .rt
        .store
        .unpublished(clock.now(), 100_000)
        .await?
        .into_iter()
        .filter(|r| r.topic == "melmastoon.lock.vendor_adapter.health_changed.v1")
        .filter_map(|r| r.payload["circuit"].as_str().map(str::to_owned))
        .collect();
    for state in ["open", "half_open", "closed"] {
        assert!(
            health.iter().any(|c| c == state),
            "a health_changed.v1 to {state}: {} events",
            health.len()
        );
    }
    println!(
        "breaker: one simulated hour: {refused_total} calls refused while open, {probes} reached the vendor, {retries} saga retries; drain order {log:?}"
    );
    rig.finish().await;
    Ok(())
}

/// Issue 14 (spec `003` §3 `AdapterHealthSnapshot`): the adapter's health snapshot is kept
/// current by its calls: calls in the window, error rate, latencies and a closed circuit in
/// fair weather with no last error; during an outage the circuit opens, the error rate
/// rises, `lastTrippedAt` is set and the last error names what failed, without the
/// vendor's words.
#[actix_rt::test]
async fn the_health_snapshot_follows_the_adapters_calls_and_names_its_last_error(
) -> anyhow::Result<()> {
    use lockstep_domain::breaker::CircuitState;
    let rig = Rig::start_with(
        WorkerSettings::simulator(),
        Arc::new(SystemClock),
        BreakerPolicy {
            min_calls: 4,
            ..BreakerPolicy::default()
        },
        SagaSettings {
            retry_base: Duration::from_millis(20),
            retry_cap: Duration::from_millis(100),
            ..SagaSettings::default()
        },
    )
    .await?;
    let adapter = rig.rt.ports.adapters()[0].0.id.clone();
    let health = || async {
        rig.rt
            .ports
            .health(&adapter)
            .await
            .ok_or_else(|| anyhow::anyhow!("no health for a registered adapter"))
    };
    let idle = health().await?;
    assert_eq!(idle.snapshot.window_size, 0);
    assert_eq!(idle.snapshot.circuit, CircuitState::Closed);

    rig.confirm("rsv_h1", 1).await?;
    rig.confirm("rsv_h2", 2).await?;
    rig.wait_settled("rsv_h1", "active").await?;
    rig.wait_settled("rsv_h2", "active").await?;
    let fair = health().await?;
    assert!(fair.snapshot.window_size >= 2, "{fair:?}");
    assert_eq!(fair.snapshot.error_rate_pct, 0.0, "{fair:?}");
    assert_eq!(fair.snapshot.circuit, CircuitState::Closed);
    assert!(fair.snapshot.last_tripped_at.is_none());
    assert!(fair.last_error.is_none(), "{fair:?}");

    let before = rig.rt.clock.now();
    rig.sim.handle().update_faults(|f| f.outage = true);
    rig.confirm("rsv_h3", 3).await?;
    until(&rig, "the breaker open", |r| r.metric(OPEN) == 1.0).await?;
    let foul = health().await?;
    assert_eq!(foul.snapshot.circuit, CircuitState::Open, "{foul:?}");
    assert!(foul.snapshot.error_rate_pct > 0.0, "{foul:?}");
    assert!(foul.snapshot.last_tripped_at.is_some_and(|t| t >= before));
    let last = foul.last_error.expect("the outage left a last error");
    assert_eq!(last.code, "vendor_unavailable");
    assert!(last.at >= before && last.at <= rig.rt.clock.now());
    rig.sim.handle().update_faults(|f| f.outage = false);
    rig.finish().await;
    Ok(())
}
