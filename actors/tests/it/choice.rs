//! Spec `003` §3 adapter choice (issue 14): where several adapters serve a stay's room, the
//! one with the lowest `precedence` gets the new key; a disabled adapter takes no new work
//! (a room only it serves gets no key, with a reason) and still removes the keys it holds.
#![allow(clippy::disallowed_methods)] // test deadlines are wall-clock

use lockstep_actors::WorkerSettings;
use lockstep_domain::{KeyCredentialState, LockDeviceId, VendorAdapterId, VendorCode};
use lockstep_vendors::ttlock::{RunningSimulator, TtlockSimulator};
use lockstep_vendors::TtlockAdapter;
use std::sync::Arc;

use crate::rig::Rig;

/// The second account's lock serving room `rmu_3` beside the rig's lock 3.
const SECOND_LOCK: i64 = 7003;

/// A second TTLock account (its own simulator) at the rig's property, its lock serving room
/// `rmu_3` like the rig's lock 3, with `precedence`. Its device's id sorts after the rig's
/// lock 3, so device order alone would choose the rig's adapter.
async fn second_adapter(
    rig: &Rig,
    precedence: i32,
) -> anyhow::Result<(RunningSimulator, VendorAdapterId)> {
    let sim = TtlockSimulator::start("127.0.0.1:0".parse()?)?;
    sim.handle().add_lock(SECOND_LOCK);
    let port = Arc::new(TtlockAdapter::new(
        sim.default_adapter_config(),
        rig.rt.clock.clone(),
    )?);
    let id = rig
        .add_adapter(port, VendorCode::Ttlock, "production", precedence)
        .await?;
    rig.add_device(
        LockDeviceId::from_ulid(ulid::Ulid::from_parts(SECOND_LOCK as u64, 1)),
        &id,
        VendorCode::Ttlock,
        &SECOND_LOCK.to_string(),
        &["rmu_3"],
    )
    .await?;
    Ok((sim, id))
}

/// Two adapters serve room 3: the one with the lower precedence gets the key, whichever
/// registered first and whichever device sorts first; changing the precedences moves the
/// next stay's key to the other.
#[actix_rt::test]
async fn the_adapter_with_the_lowest_precedence_gets_the_new_key() -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    let own = rig.adapter.clone();
    let (second, second_id) = second_adapter(&rig, 10).await?;
    rig.confirm_on("rsv_p1", 3, 1).await?;
    rig.wait_settled("rsv_p1", "active").await?;
    assert_eq!(
        second.handle().passcodes(SECOND_LOCK).len(),
        1,
        "precedence 10"
    );
    assert_eq!(rig.passcodes(3), 0, "precedence 100 got nothing");
    // A change of dates moves the key where it is; the other adapter's door of the same
    // room gets no second key.
    rig.deliver(
        "dc-p1",
        "melmastoon.reservation.dates_changed.v1",
        serde_json::json!({ "reservationId": "rsv_p1", "revision": 2,
                "validFrom": "2027-06-01T14:00:00Z", "validUntil": "2027-06-03T11:00:00Z" }),
    )
    .await?;
    rig.wait_outcome("dc-p1").await?;
    rig.wait_settled("rsv_p1", "active").await?;
    assert_eq!(
        rig.passcodes(3),
        0,
        "the date change added a key at the other adapter"
    );
    let moved = second.handle().passcodes(SECOND_LOCK);
    assert_eq!(moved.len(), 1);
    assert_eq!(
        moved[0].end_date,
        chrono::DateTime::parse_from_rfc3339("2027-06-03T11:00:00Z")?.timestamp_millis(),
        "the window moved at the key's own door"
    );

    assert!(rig.rt.ports.set_choice(&second_id, true, 200));
    assert!(rig.rt.ports.set_choice(&own, true, 100));
    rig.confirm_on("rsv_p2", 3, 5).await?;
    rig.wait_settled("rsv_p2", "active").await?;
    assert_eq!(rig.passcodes(3), 1, "now the rig's adapter is preferred");
    assert_eq!(second.handle().passcodes(SECOND_LOCK).len(), 1);
    rig.finish().await;
    Ok(())
}

/// A disabled adapter takes no new work: a stay in a room only it serves gets no key and
/// ends as manual escort (`escort_required`, `kind_unsupported`: no kind is issuable
/// there) without a vendor call, one in a room another adapter also serves
/// goes there (even at a worse precedence), and a key it already holds is still removed
/// when its stay is cancelled.
#[actix_rt::test]
async fn a_disabled_adapter_takes_no_new_work_and_still_removes_its_keys() -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    let own = rig.adapter.clone();
    let (second, _) = second_adapter(&rig, 500).await?;
    rig.confirm("rsv_d1", 1).await?;
    rig.wait_settled("rsv_d1", "active").await?;
    assert_eq!(rig.passcodes(1), 1);

    assert!(rig.rt.ports.set_choice(&own, false, 100));
    let adds_before = rig.sim.handle().counters().adds;
    rig.confirm("rsv_d2", 2).await?;
    let outcome = rig.wait_outcome("c-rsv_d2").await?;
    assert!(
        rig.credentials("rsv_d2").await?.is_empty(),
        "a key was requested at the disabled adapter ({outcome})"
    );
    assert_eq!(
        rig.metric(
            "lockstep_saga_steps_total{outcome=\"kind_unsupported\",step=\"escort_required\"}"
        ),
        1.0,
        "the stay ends as manual escort, with its reason"
    );
    assert_eq!(rig.passcodes(2), 0);

    rig.confirm("rsv_d3", 3).await?;
    rig.wait_settled("rsv_d3", "active").await?;
    assert_eq!(rig.passcodes(3), 0, "the disabled adapter issued");
    assert_eq!(second.handle().passcodes(SECOND_LOCK).len(), 1);
    assert_eq!(
        rig.sim.handle().counters().adds,
        adds_before,
        "a call to the disabled adapter's vendor to add a key"
    );

    rig.cancel("rsv_d1").await?;
    rig.wait_settled("rsv_d1", "revoked").await?;
    assert_eq!(rig.passcodes(1), 0, "its key kept opening the door");
    let revoked = rig.credentials("rsv_d1").await?;
    assert_eq!(revoked[0].state(), KeyCredentialState::Revoked);
    rig.finish().await;
    Ok(())
}
