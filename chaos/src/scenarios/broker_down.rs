//! `broker_down`: the scenario's RabbitMQ node is SIGKILLed under load and kept down (short
//! 15 s, full 60 s), then started again on the same data (quorum queues and their messages
//! survive). The reservation system keeps retrying its publishes meanwhile, as it would.

use std::time::{Duration, Instant};

use crate::check::Figures;
use crate::rig::{now, Rig};
use crate::scenarios::Spec;
use crate::world::LoadPlan;

/// Runs it.
pub async fn run(spec: &Spec) -> anyhow::Result<Figures> {
    let profile = spec.profile;
    let mut rig = Rig::start(spec.options("broker_down")).await?;
    let progress = rig.progress();
    let load = rig.world.spawn_load(LoadPlan::standard(
        profile.pick(200, 1000),
        profile.pick(8.0, 10.0),
    ));
    tokio::time::sleep(Duration::from_secs(profile.pick(8, 20))).await;
    rig.rabbit.kill().await?;
    rig.fault();
    let down = Duration::from_secs(profile.pick(15, 60));
    tokio::time::sleep(down).await;
    let t = Instant::now();
    rig.rabbit.start().await?;
    let broker_boot = t.elapsed();
    let healed_at = now();
    load.finish().await?;
    // recovery runs from the load's end (the publisher was held up during the outage)
    let c = rig
        .converge(Instant::now(), profile.converge_timeout())
        .await;
    progress.stop().await;
    let mut f = rig.figures("broker_down", c, healed_at, false).await;
    f.extra
        .push(("down".into(), format!("{}s", down.as_secs())));
    f.extra.push((
        "broker_boot".into(),
        format!("{:.1}s", broker_boot.as_secs_f64()),
    ));
    super::note_panics(&rig, &mut f);
    Ok(f)
}
