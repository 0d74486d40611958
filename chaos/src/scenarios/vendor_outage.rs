//! `vendor_outage`: a 12-hour outage of every vendor at once (all five by default), played
//! on the scaled clock (short: 1,440× — 30 s of wall time; full: 120× — 6 minutes), while
//! new stays are confirmed and earlier ones cancelled throughout. Lockstep runs with its
//! production retry policy (0.5 s doubling to 5 min, in business time) and attempt budget
//! (40), so the outage is as long for the saga as a real one.
//!
//! Besides the door invariants (every stay confirmed during the outage ends with the
//! policy's preferred kind, nothing lost, nothing doubled), per vendor: every removal that
//! waited reaches the door before any new key (`grants_before_removals` is 0 for each
//! vendor), and the cancellations made during the outage are gone from the doors within
//! 60 s of recovery at the 99th percentile (`removed_after_recovery_p99`, wall seconds).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::check::{self, Figures};
use crate::rig::{now, Rig};
use crate::scenarios::Spec;
use crate::vendors::{DoorOp, Faults, Vendor};

/// Business time the vendors are down.
const OUTAGE_HOURS: f64 = 12.0;

/// Runs it.
pub async fn run(spec: &Spec) -> anyhow::Result<Figures> {
    let profile = spec.profile;
    let scale: f64 = profile.pick(1_440.0, 120.0);
    let mut options = spec.options_or("vendor_outage", &Vendor::ALL);
    options.configure = Some(Arc::new(move |_, cfg| {
        cfg.clock_scale = Some(scale);
        // the production backoff, in business time: the outage must not be spun through
        cfg.saga.retry_base_ms = 500;
        cfg.saga.retry_cap_ms = 300_000;
    }));
    let mut rig = Rig::start(options).await?;
    let progress = rig.progress();

    // Before: stays confirmed and their keys at the doors.
    let before = profile.pick(40, 150);
    let (arrivals, cancels) = (profile.pick(100, 300), profile.pick(30, 90));
    rig.world.planned.fetch_add(
        (before + arrivals + cancels) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    for _ in 0..before {
        rig.world.confirm_new().await?;
    }
    let settled = rig
        .converge(Instant::now(), Duration::from_secs(profile.pick(60, 180)))
        .await;
    anyhow::ensure!(
        settled.evaluation.consistent(),
        "the keys before the outage never settled: {:?}",
        settled.evaluation.problems
    );

    // The outage: every vendor answers 503; stays arrive and leave throughout.
    let down = Duration::from_secs_f64(OUTAGE_HOURS * 3600.0 / scale);
    for sim in rig.sims.iter() {
        sim.set_faults(&Faults {
            outage: true,
            ..Faults::default()
        });
    }
    rig.fault();
    let outage_started = Instant::now();
    let mut cancelled_during = Vec::new();
    let steps = arrivals + cancels;
    for i in 0..steps {
        let due = down.mul_f64((i + 1) as f64 / (steps + 1) as f64);
        tokio::time::sleep(due.saturating_sub(outage_started.elapsed())).await;
        if i % (steps / cancels).max(1) == 0 && cancelled_during.len() < cancels {
            // a guest who held a key before the outage, or one who arrived during it
            let live = rig.world.live_stays();
            if let Some(&index) = live.get(i * 7919 % live.len().max(1)) {
                rig.world.cancel(index).await?;
                cancelled_during.push(index);
                continue;
            }
        }
        rig.world.confirm_new().await?;
    }
    tokio::time::sleep(down.saturating_sub(outage_started.elapsed())).await;
    for sim in rig.sims.iter() {
        sim.set_faults(&Faults::default());
    }
    let healed_at = now();
    let c = rig
        .converge(Instant::now(), profile.converge_timeout())
        .await;
    progress.stop().await;
    let creds = c.creds.clone();
    let mut f = rig.figures("vendor_outage", c, healed_at, false).await;
    f.clock_scale = scale;
    f.extra.push((
        "outage".into(),
        format!("{OUTAGE_HOURS}h_business={:.0}s_wall", down.as_secs_f64()),
    ));
    f.extra.push((
        "cancelled_during_outage".into(),
        cancelled_during.len().to_string(),
    ));

    // Per vendor (each account drains its own removals first): removals strictly before
    // new keys after recovery. Across vendors there is no order to keep.
    let stays = rig.world.stays();
    f.grants_before_removals = 0;
    for sim in rig.sims.iter() {
        let journal = sim.journal_since(1);
        let early = check::grants_before_removals(&stays, &creds, &journal, healed_at);
        f.extra.push((
            format!("grants_before_removals_{}", sim.vendor().name()),
            early.to_string(),
        ));
        f.grants_before_removals += early;
        if early > 0 {
            f.failures.push(format!(
                "{}: {early} new key(s) reached a door before the removals that waited",
                sim.vendor().name()
            ));
        }
    }

    // The cancellations of the outage: removed at the door how long after recovery.
    let journal = rig.journal();
    let mut removed_at: HashMap<&str, chrono::DateTime<chrono::Utc>> = HashMap::new();
    for change in journal
        .iter()
        .filter(|c| c.op == DoorOp::Remove && c.remaining == 0)
    {
        let at = removed_at.entry(change.label.as_str()).or_insert(change.at);
        *at = (*at).max(change.at);
    }
    let mut after_recovery = Vec::new();
    for index in &cancelled_during {
        let stay = &stays[*index];
        for cred in creds.get(&stay.reservation).into_iter().flatten() {
            if let Some(at) = removed_at.get(cred.id.as_str()) {
                if *at > healed_at {
                    after_recovery
                        .push((*at - healed_at).num_milliseconds().max(0) as f64 / 1000.0);
                }
            }
        }
    }
    let p99 = crate::util::quantile(&after_recovery, 0.99);
    f.extra.push((
        "removed_after_recovery".into(),
        format!(
            "n={} p50={:.2}s p99={:.2}s",
            after_recovery.len(),
            crate::util::quantile(&after_recovery, 0.5).unwrap_or(0.0),
            p99.unwrap_or(0.0)
        ),
    ));
    if p99.is_some_and(|s| s >= 60.0) {
        f.failures.push(format!(
            "the outage's cancellations left the doors {:.1} s after recovery (p99), over 60 s",
            p99.unwrap_or(0.0)
        ));
    }
    super::note_panics(&rig, &mut f);
    Ok(f)
}
