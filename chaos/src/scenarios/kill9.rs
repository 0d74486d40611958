//! `kill9`: the node is SIGKILLed at random moments under load (short ×3, full ×10) and
//! restarted each time; afterwards every stay's doors must be exactly right.
//!
//! Load: short 200 stays at 8 events/s, full 1,000 at 10/s, with the standard mix (10 %
//! cancelled, duplicates, cancel-first stays; see [`LoadPlan::standard`]).

use std::time::{Duration, Instant};

use crate::check::Figures;
use crate::rig::{now, Rig};
use crate::scenarios::{pause, rng, Spec};
use crate::world::LoadPlan;

/// Runs it.
pub async fn run(spec: &Spec) -> anyhow::Result<Figures> {
    let profile = spec.profile;
    let mut rig = Rig::start(spec.options("kill9")).await?;
    let mut rng = rng(rig.options.seed);
    let progress = rig.progress();
    let load = rig.world.spawn_load(LoadPlan::standard(
        profile.pick(200, 1000),
        profile.pick(8.0, 10.0),
    ));
    let mut restarts = Vec::new();
    for _ in 0..profile.pick(3, 10) {
        let (min, max) = profile.pick((3, 8), (5, 12));
        tokio::time::sleep(pause(
            &mut rng,
            Duration::from_secs(min),
            Duration::from_secs(max),
        ))
        .await;
        rig.nodes[0].kill9();
        rig.fault();
        let t = Instant::now();
        rig.nodes[0].start(Duration::from_secs(90)).await?;
        restarts.push(t.elapsed().as_secs_f64());
    }
    load.finish().await?;
    let (healed, healed_at) = (Instant::now(), now());
    let c = rig.converge(healed, profile.converge_timeout()).await;
    progress.stop().await;
    let mut f = rig.figures("kill9", c, healed_at, false).await;
    f.extra.push((
        "restart_to_ready_max".into(),
        format!("{:.1}s", restarts.iter().copied().fold(0.0, f64::max)),
    ));
    super::note_panics(&rig, &mut f);
    Ok(f)
}
