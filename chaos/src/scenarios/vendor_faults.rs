//! `vendor_faults`: every simulator loses 20 % of its write responses (the write applied,
//! the answer a 500) and answers with latency spikes (20 ms plus up to 800 ms) for the
//! whole run, recovery included. Lockstep must find before it retries: no duplicate, no
//! orphan.

use std::time::Instant;

use crate::check::Figures;
use crate::rig::{now, Rig};
use crate::scenarios::Spec;
use crate::vendors::Faults;
use crate::world::LoadPlan;

/// The faults of the run.
pub fn faults() -> Faults {
    Faults {
        lose_response_rate: 0.2,
        latency_ms: 20,
        latency_jitter_ms: 800,
        ..Faults::default()
    }
}

/// Runs it.
pub async fn run(spec: &Spec) -> anyhow::Result<Figures> {
    let profile = spec.profile;
    let mut rig = Rig::start(spec.options("vendor_faults")).await?;
    for sim in rig.sims.iter() {
        sim.set_faults(&faults());
        rig.fault();
    }
    let progress = rig.progress();
    let load = rig.world.spawn_load(LoadPlan::standard(
        profile.pick(200, 1000),
        profile.pick(8.0, 10.0),
    ));
    load.finish().await?;
    // the faults stay on: recovery runs from the load's end
    let (since, since_at) = (Instant::now(), now());
    let c = rig.converge(since, profile.converge_timeout()).await;
    progress.stop().await;
    let mut f = rig.figures("vendor_faults", c, since_at, false).await;
    let lost: u64 = rig.sims.iter().map(|s| s.lost_responses()).sum();
    f.extra.push(("lost_responses".into(), lost.to_string()));
    super::note_panics(&rig, &mut f);
    Ok(f)
}
