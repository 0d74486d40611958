//! `postgres_down`: the scenario's Postgres is stopped (fast shutdown) under load for short
//! 40 s, full 5 minutes, with cancellations published during the outage, then started
//! again. Besides the invariants (every cancelled stay's PIN gone), nothing may reach the
//! DLQ: an outage of Lockstep's own store is no reason to dead-letter anything (DESIGN §4).

use std::time::{Duration, Instant};

use crate::check::Figures;
use crate::pg::StopMode;
use crate::rig::{now, Rig, RigOptions};
use crate::scenarios::Profile;
use crate::vendors::Vendor;
use crate::world::LoadPlan;

/// Runs it.
pub async fn run(profile: Profile, vendors: &[Vendor]) -> anyhow::Result<Figures> {
    let mut rig = Rig::start(RigOptions::new("postgres_down", vendors)).await?;
    let progress = rig.progress();
    let load = rig.world.spawn_load(LoadPlan::standard(
        profile.pick(200, 1000),
        profile.pick(8.0, 10.0),
    ));
    tokio::time::sleep(Duration::from_secs(profile.pick(8, 20))).await;
    rig.pg.stop(StopMode::Fast).await?;
    rig.fault();
    let down = Duration::from_secs(profile.pick(40, 300));
    let cancels = profile.pick(20, 60);
    let started = Instant::now();
    let mut cancelled = 0;
    for i in 0..cancels {
        let due = down.mul_f64((i + 1) as f64 / (cancels + 1) as f64);
        tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        cancelled += rig.world.cancel_random(1).await?;
    }
    tokio::time::sleep(down.saturating_sub(started.elapsed())).await;
    rig.pg.start().await?;
    let (healed, healed_at) = (Instant::now(), now());
    load.finish().await?;
    let c = rig.converge(healed, profile.converge_timeout()).await;
    progress.stop().await;
    let mut f = rig.figures("postgres_down", c, healed_at, false).await;
    f.extra
        .push(("down".into(), format!("{}s", down.as_secs())));
    f.extra
        .push(("cancelled_during_outage".into(), cancelled.to_string()));
    super::note_panics(&rig, &mut f);
    Ok(f)
}
