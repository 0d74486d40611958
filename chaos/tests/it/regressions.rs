//! Issue 10's store-outage bugs, each as a test that failed on the main of 2026-12-01
//! (checked with that commit's binary through `LOCKSTEP_BIN`): a Postgres outage cost
//! held messages their delivery count until the broker dead-lettered them (bug 1), and
//! `/readyz` hung for the pool's 30 s acquire timeout while Postgres was down (bug 4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep_chaos::pg::StopMode;
use lockstep_chaos::rig::{now, Rig, RigOptions};
use lockstep_chaos::vendors::Vendor;
use lockstep_chaos::world::LoadPlan;

/// How long Postgres is down in the outage test.
const OUTAGE_SECS: u64 = 120;

/// Bug 1, made quick: with a delivery limit of 1, any delivery the node returns to the
/// broker during a two-minute Postgres outage goes to the dead-letter queue when it comes back. The
/// node holds what it is storing instead, so nothing is dead-lettered and every stay ends
/// right (each cancelled one without its PIN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_returns_no_delivery_to_the_broker() -> anyhow::Result<()> {
    crate::ensure_lockstep_built();
    let mut options = RigOptions::new("store_outage_regression", &[Vendor::Ttlock]);
    options.configure = Some(Arc::new(|_, cfg| cfg.delivery_limit = Some(1)));
    let mut rig = Rig::start(options).await?;
    let load = rig.world.spawn_load(LoadPlan::standard(120, 6.0));
    tokio::time::sleep(Duration::from_secs(5)).await;
    rig.pg.stop(StopMode::Fast).await?;
    let down_since = Instant::now();
    while down_since.elapsed() < Duration::from_secs(OUTAGE_SECS) {
        rig.world.cancel_random(1).await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    rig.pg.start().await?;
    let healed_at = now();
    load.finish().await?;
    let c = rig.converge(Instant::now(), Duration::from_secs(90)).await;
    let f = rig
        .figures("store_outage_regression", c, healed_at, false)
        .await;
    println!("{}", f.report());
    assert_eq!(f.dlq.unexpected, 0, "{}", f.report());
    assert_eq!(f.dlq.ticks, 0, "{}", f.report());
    assert_eq!(f.lost(), 0, "{}", f.report());
    assert_eq!(f.stale(), 0, "{}", f.report());
    assert!(f.passed(), "{}", f.report());
    Ok(())
}

/// Bug 4: readiness answers 503 within a second while Postgres is down, and 200 again once
/// it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_within_a_second_while_postgres_is_down() -> anyhow::Result<()> {
    crate::ensure_lockstep_built();
    let mut rig = Rig::start(RigOptions::new("readyz_regression", &[Vendor::Ttlock])).await?;
    let url = format!("{}/readyz", rig.nodes[0].http()?);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()?;
    assert_eq!(client.get(&url).send().await?.status(), 200);
    rig.pg.stop(StopMode::Fast).await?;
    for _ in 0..3 {
        let asked = Instant::now();
        let status = client.get(&url).send().await?.status();
        let took = asked.elapsed();
        println!("readyz with postgres down: {status} in {took:?}");
        assert_eq!(status, 503);
        assert!(took < Duration::from_secs(1), "answered in {took:?}");
    }
    rig.pg.start().await?;
    let back = Instant::now();
    loop {
        if client.get(&url).send().await?.status() == 200 {
            break;
        }
        anyhow::ensure!(
            back.elapsed() < Duration::from_secs(60),
            "never ready again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
