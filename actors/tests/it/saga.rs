//! Saga behaviour on the real actor tree: compensation (issue 4, point 5).

use std::time::Duration;

use lockstep_actors::WorkerSettings;

use crate::rig::Rig;

/// DESIGN §3.5: a cancel that arrives while an issue is in flight is recorded; when the
/// vendor then creates the passcode, a compensating delete follows at once and the
/// credential never becomes active.
#[actix_rt::test]
async fn cancel_while_the_vendor_is_slow_to_issue_leaves_no_passcode_at_the_door(
) -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings::default()).await?;
    rig.sim.handle().update_faults(|f| f.latency_ms = 700);
    rig.confirm("rsv_k1", 1).await?;
    // The issue is in flight once the intent (requested → pending) is committed.
    rig.wait_state("rsv_k1", "pending").await?;
    rig.cancel("rsv_k1").await?;
    rig.wait_settled("rsv_k1", "failed").await?;

    let creds = rig.credentials("rsv_k1").await?;
    assert_eq!(creds.len(), 1, "no second credential");
    let c = &creds[0];
    assert_eq!(
        c.failure_reason().map(|f| f.as_str()),
        Some("cancelled_mid_flight")
    );
    assert_eq!(rig.passcodes(1), 0, "the door holds nothing");
    let devices = rig.rt.store.credential_devices(rig.tenant, c.id()).await?;
    assert!(
        devices
            .iter()
            .all(|d| d.desired.as_str() == "absent" && d.sync.as_str() == "confirmed"),
        "vendor sync says so"
    );
    // It reached the vendor, and was deleted there: one add, one delete.
    let counters = rig.sim.handle().counters();
    assert_eq!((counters.adds, counters.deletes), (1, 1));
    // No issued.v1 was ever produced for it; failed.v1 was.
    let subjects = rig.outbox_subjects(c.id().as_str()).await?;
    assert!(
        !subjects.iter().any(|s| s.ends_with("issued.v1")),
        "{subjects:?}"
    );
    assert!(
        subjects.iter().any(|s| s.ends_with("failed.v1")),
        "{subjects:?}"
    );
    rig.finish().await;
    Ok(())
}

/// A cancel before the vendor was ever called issues nothing at all.
#[actix_rt::test]
async fn cancel_before_the_first_vendor_call_issues_nothing() -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings::default()).await?;
    rig.cancel("rsv_k2").await?;
    rig.confirm("rsv_k2", 2).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rig.credentials("rsv_k2").await?.is_empty(),
        "no credential for a cancelled stay"
    );
    assert_eq!(rig.sim.handle().counters().adds, 0);
    rig.finish().await;
    Ok(())
}
