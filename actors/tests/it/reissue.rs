//! O-2 (spec `003` §5): a provisional credential revoked with its certificate is flagged for
//! forced re-issue, and the stay's saga is the online check: it issues the stay a key of
//! the same kind, naming the revoked one as what it replaces, unless the stay already
//! holds a live key of its own or has ended.

use lockstep_actors::events_in::INTERNAL_REISSUE_PROVISIONAL;
use lockstep_actors::saga_codec;
use lockstep_actors::WorkerSettings;
use lockstep_domain::saga::{ReservationSaga, Versioned};
use lockstep_domain::{
    GuestId, HolderKind, IssueIntent, KeyCredential, KeyCredentialId, KeyCredentialKind,
    KeyCredentialScope, KeyCredentialState, ReservationId, RevokeReason, RoomId, ScopedRoom,
    ValidityWindow, VendorCode,
};
use lockstep_persistence::{CredentialWrite, UnitOfWork};
use serde_json::json;

use crate::rig::Rig;

/// A provisional PIN a desk minted for `reservation` in room `rmu_{room}`, materialized and
/// then revoked with its certificate (`security`), as the reconciler's cascade leaves it.
async fn revoked_provisional(
    rig: &Rig,
    reservation: &str,
    room: i64,
) -> anyhow::Result<KeyCredentialId> {
    let now = rig.rt.clock.now();
    let rooms = vec![RoomId::parse(&format!("rmu_{room}"))?];
    let adapter = rig
        .rt
        .store
        .devices_for_rooms(rig.tenant, &rig.property, &rooms)
        .await?
        .first()
        .map(|d| d.vendor_adapter_id.clone())
        .ok_or_else(|| anyhow::anyhow!("no device serves rmu_{room}"))?;
    let id = KeyCredentialId::generate();
    let mut c = KeyCredential::request(
        IssueIntent {
            id: id.clone(),
            tenant_id: rig.tenant,
            property_id: rig.property.clone(),
            holder_kind: HolderKind::Guest,
            reservation_id: Some(ReservationId::parse(reservation)?),
            guest_id: Some(GuestId::parse("gst_1")?),
            staff_user_id: None,
            kind: KeyCredentialKind::PinCode,
            rooms: rooms
                .iter()
                .map(|r| ScopedRoom {
                    tenant_id: rig.tenant,
                    property_id: rig.property.clone(),
                    room_id: r.clone(),
                })
                .collect(),
            scope: KeyCredentialScope::default(),
            validity: ValidityWindow::new(now, now + chrono::Duration::hours(20))?,
            vendor: VendorCode::Ttlock,
            vendor_adapter_id: adapter,
            provisional: true,
            idempotency_key: format!("provisional:test:{id}"),
            replaces_id: None,
            trace_id: None,
        },
        now,
    )?;
    c.mark_pending(now)?;
    c.mark_active(now)?;
    c.revoke(RevokeReason::Security, now)?;
    c.take_pending_events();
    let mut uow = UnitOfWork::new(rig.tenant, None, now);
    uow.credentials.push(CredentialWrite {
        snapshot: c.snapshot(),
        expected_version: None,
    });
    rig.rt.store.commit(uow).await?;
    Ok(id)
}

async fn wait_outcome(rig: &Rig, outcome: &str, n: f64) -> anyhow::Result<()> {
    let key =
        format!("lockstep_saga_steps_total{{outcome=\"{outcome}\",step=\"reissue_provisional\"}}");
    for _ in 0..500 {
        if rig.metric(&key) >= n {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    anyhow::bail!("no {outcome} outcome: {}", rig.metric(&key))
}

#[actix_rt::test]
async fn a_stay_with_a_live_key_of_its_own_is_covered_and_gets_nothing_more() -> anyhow::Result<()>
{
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    rig.confirm("rsv_o2a", 1).await?;
    rig.wait_settled("rsv_o2a", "active").await?;
    let revoked = revoked_provisional(&rig, "rsv_o2a", 1).await?;
    rig.command(
        "reservation:rsv_o2a",
        INTERNAL_REISSUE_PROVISIONAL,
        json!({ "credentialId": revoked.as_str() }),
    )
    .await?;
    wait_outcome(&rig, "covered", 1.0).await?;
    let creds = rig.credentials("rsv_o2a").await?;
    assert_eq!(creds.len(), 2, "the saga's key and the revoked provisional");
    assert_eq!(rig.passcodes(1), 1, "one PIN at the door");
    rig.finish().await;
    Ok(())
}

#[actix_rt::test]
async fn a_stay_whose_only_key_was_the_revoked_provisional_is_reissued_online() -> anyhow::Result<()>
{
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    // The stay Lockstep knows from its confirm, its only key minted offline at the desk.
    let now = rig.rt.clock.now();
    let window = ValidityWindow::new(now, now + chrono::Duration::hours(20))?;
    let saga = ReservationSaga {
        guest_id: Some(GuestId::parse("gst_1")?),
        confirmed: true,
        revision: Some(1),
        window: Some(Versioned {
            revision: 1,
            value: window,
        }),
        rooms: Some(Versioned {
            revision: 1,
            value: vec![RoomId::parse("rmu_2")?],
        }),
        ..Default::default()
    };
    let mut uow = UnitOfWork::new(rig.tenant, None, now);
    uow.saga = Some((
        "reservation:rsv_o2b".into(),
        saga_codec::reservation_to_json(&saga),
    ));
    rig.rt.store.commit(uow).await?;
    let revoked = revoked_provisional(&rig, "rsv_o2b", 2).await?;
    rig.command(
        "reservation:rsv_o2b",
        INTERNAL_REISSUE_PROVISIONAL,
        json!({ "credentialId": revoked.as_str() }),
    )
    .await?;
    wait_outcome(&rig, "reissued", 1.0).await?;
    rig.wait_quiet().await?;
    let creds = rig.credentials("rsv_o2b").await?;
    let live: Vec<_> = creds
        .iter()
        .filter(|c| c.state() == KeyCredentialState::Active)
        .collect();
    assert_eq!(live.len(), 1, "one live key: {creds:?}");
    assert_eq!(live[0].kind(), KeyCredentialKind::PinCode);
    assert!(!live[0].provisional(), "issued online");
    assert_eq!(
        live[0].replaces_id(),
        Some(&revoked),
        "lineage to the revoked key"
    );
    assert_eq!(rig.passcodes(2), 1, "its PIN at the door");

    // Sent again (a repeated revoke, a redelivery): nothing more.
    rig.command(
        "reservation:rsv_o2b",
        INTERNAL_REISSUE_PROVISIONAL,
        json!({ "credentialId": revoked.as_str() }),
    )
    .await?;
    wait_outcome(&rig, "covered", 1.0).await?;
    assert_eq!(rig.passcodes(2), 1);
    rig.finish().await;
    Ok(())
}

#[actix_rt::test]
async fn an_ended_stay_gets_no_key() -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    rig.confirm("rsv_o2c", 3).await?;
    rig.wait_settled("rsv_o2c", "active").await?;
    rig.cancel("rsv_o2c").await?;
    rig.wait_settled("rsv_o2c", "revoked").await?;
    let revoked = revoked_provisional(&rig, "rsv_o2c", 3).await?;
    rig.command(
        "reservation:rsv_o2c",
        INTERNAL_REISSUE_PROVISIONAL,
        json!({ "credentialId": revoked.as_str() }),
    )
    .await?;
    wait_outcome(&rig, "stay_ended", 1.0).await?;
    assert_eq!(rig.passcodes(3), 0);
    rig.finish().await;
    Ok(())
}
