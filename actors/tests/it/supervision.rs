//! DESIGN §2: a vendor worker that panics or wedges is restarted by its supervisor, the
//! call it held is retried by the saga, and nothing is lost or duplicated.

use std::sync::atomic::Ordering;
use std::time::Duration;

use lockstep_actors::WorkerSettings;

use crate::rig::Rig;

#[actix_rt::test]
async fn a_panicking_vendor_worker_is_restarted_and_its_call_retried() -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    rig.port.panic_issues.store(1, Ordering::SeqCst);
    rig.confirm("rsv_p1", 1).await?;
    rig.wait_settled("rsv_p1", "active").await?;
    assert_eq!(rig.passcodes(1), 1, "exactly one passcode after the retry");
    assert_eq!(
        rig.rt
            .metrics
            .vendor_worker_restarts
            .with_label_values(&["ttlock"])
            .get(),
        1
    );
    // the restarted worker keeps serving
    rig.confirm("rsv_p2", 2).await?;
    rig.wait_settled("rsv_p2", "active").await?;
    rig.finish().await;
    Ok(())
}

#[actix_rt::test]
async fn a_wedged_vendor_call_times_out_restarts_the_worker_and_is_retried() -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings {
        timeout: Duration::from_millis(300),
        ..WorkerSettings::simulator()
    })
    .await?;
    rig.port.hang_issues.store(1, Ordering::SeqCst);
    rig.confirm("rsv_h1", 3).await?;
    rig.wait_settled("rsv_h1", "active").await?;
    assert_eq!(rig.passcodes(3), 1);
    assert_eq!(
        rig.rt
            .metrics
            .vendor_worker_restarts
            .with_label_values(&["ttlock"])
            .get(),
        1
    );
    rig.finish().await;
    Ok(())
}

#[actix_rt::test]
async fn a_worker_serves_revocations_before_issuances() -> anyhow::Result<()> {
    // One call at a time and a slow vendor, so calls queue up in the worker.
    let rig = Rig::start(WorkerSettings {
        concurrency: 1,
        ..WorkerSettings::simulator()
    })
    .await?;
    rig.confirm("rsv_r1", 1).await?;
    rig.wait_settled("rsv_r1", "active").await?;
    rig.sim.handle().update_faults(|f| f.latency_ms = 150);
    rig.port.log.lock().unwrap().clear();
    // Three issues queue behind each other, then a revocation arrives last.
    rig.confirm("rsv_r2", 2).await?;
    rig.confirm("rsv_r3", 3).await?;
    rig.confirm("rsv_r4", 4).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    rig.cancel("rsv_r1").await?;
    for r in ["rsv_r2", "rsv_r3", "rsv_r4"] {
        rig.wait_settled(r, "active").await?;
    }
    rig.wait_settled("rsv_r1", "revoked").await?;
    let log = rig.port.log.lock().unwrap().clone();
    let revoke_at = log
        .iter()
        .position(|c| *c == "revoke")
        .expect("the revocation reached the vendor");
    assert!(
        revoke_at < 3,
        "the revocation overtook queued issuances: {log:?}"
    );
    rig.finish().await;
    Ok(())
}
