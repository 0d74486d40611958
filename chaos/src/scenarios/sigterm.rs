//! `sigterm`: the node gets SIGTERM under load three times (as an orchestrator stops a pod),
//! each exit is timed against a 30 s bound (SIGKILL after it), and the node is started
//! again; afterwards the invariants must hold. The exit times are figures: a drain that
//! finishes vendor calls and closes the AMQP connection takes longer than an abandon, but
//! must stay bounded.

use std::time::{Duration, Instant};

use crate::check::Figures;
use crate::rig::{now, Rig};
use crate::scenarios::{pause, rng, Spec};
use crate::world::LoadPlan;

/// How long a node may take to exit after SIGTERM before it is SIGKILLed.
pub const EXIT_BOUND: Duration = Duration::from_secs(30);

/// Runs it.
pub async fn run(spec: &Spec) -> anyhow::Result<Figures> {
    let profile = spec.profile;
    let mut rig = Rig::start(spec.options("sigterm")).await?;
    let mut rng = rng(rig.options.seed);
    let progress = rig.progress();
    let load = rig.world.spawn_load(LoadPlan::standard(
        profile.pick(200, 1000),
        profile.pick(8.0, 10.0),
    ));
    let mut exits = Vec::new();
    for _ in 0..3 {
        let (min, max) = profile.pick((4, 8), (10, 30));
        tokio::time::sleep(pause(
            &mut rng,
            Duration::from_secs(min),
            Duration::from_secs(max),
        ))
        .await;
        let exit = rig.nodes[0].sigterm(EXIT_BOUND).await?;
        rig.fault();
        exits.push(exit);
        rig.nodes[0].start(Duration::from_secs(90)).await?;
    }
    load.finish().await?;
    let (healed, healed_at) = (Instant::now(), now());
    let c = rig.converge(healed, profile.converge_timeout()).await;
    progress.stop().await;
    let mut f = rig.figures("sigterm", c, healed_at, false).await;
    let times: Vec<String> = exits
        .iter()
        .map(|e| format!("{:.2}s", e.took.as_secs_f64()))
        .collect();
    f.extra.push(("exits".into(), times.join(",")));
    let killed = exits.iter().filter(|e| e.killed).count();
    let unclean = exits
        .iter()
        .filter(|e| !e.killed && !e.status.is_some_and(|s| s.success()))
        .count();
    f.extra.push(("exit_over_bound".into(), killed.to_string()));
    f.extra.push(("exit_nonzero".into(), unclean.to_string()));
    if killed > 0 {
        f.evaluation.problems.insert(
            0,
            format!("{killed} SIGTERM exit(s) took longer than {EXIT_BOUND:?} and were SIGKILLed"),
        );
    }
    super::note_panics(&rig, &mut f);
    Ok(f)
}
