//! Master keys end at the doors their scope names (issue 14, spec `003` §4): one test per
//! scope of the seven, each asserting the exact set of locks holding the key at the TTLock
//! simulator, and a refusal that fails at the shift's start without a vendor call.
//!
//! The rig's property: locks 1..=4 serve rooms `rmu_1`..`rmu_4`; the doors added here
//! serve areas (migration 0016, a device's `area`): 11 the lobby, 12 and 13 the gym, 14 the
//! pool, 15 the back of house. No door opens the spa or the parking.
#![allow(clippy::disallowed_methods)] // test deadlines are wall-clock

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lockstep_actors::WorkerSettings;
use lockstep_domain::{
    CommonArea, DeviceRef, KeyCredential, LockDeviceId, RoomId, VendorAdapterId, VendorCode,
    VendorRef,
};
use lockstep_persistence::{CredentialFilter, DeviceRecord};
use lockstep_vendors::{
    IssueRequest, LockCapabilities, LockPort, TtlockAdapter, VendorEntry, VendorError,
};
use serde_json::json;

use crate::rig::{Rig, LOCKS};

/// The area doors: (lock, area).
const AREA_DOORS: &[(i64, CommonArea)] = &[
    (11, CommonArea::Lobby),
    (12, CommonArea::Gym),
    (13, CommonArea::Gym),
    (14, CommonArea::Pool),
    (15, CommonArea::BackOfHouse),
];

/// Locks of a second adapter whose vendor scopes floors natively: 21, 22 on floor 2.
const FLOOR_LOCKS: &[i64] = &[21, 22];

fn device_id(lock: i64) -> LockDeviceId {
    LockDeviceId::from_ulid(ulid::Ulid::from_parts(lock as u64, 1))
}

/// The rig with the area doors registered on its TTLock adapter.
async fn rig() -> anyhow::Result<Rig> {
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    let adapter = rig
        .rt
        .store
        .devices_for_rooms(rig.tenant, &rig.property, &[RoomId::parse("rmu_1")?])
        .await?
        .first()
        .map(|d| d.vendor_adapter_id.clone())
        .ok_or_else(|| anyhow::anyhow!("the rig's adapter"))?;
    for (lock, area) in AREA_DOORS {
        rig.sim.handle().add_lock(*lock);
        register(&rig, &adapter, *lock, vec![], Some(*area)).await?;
    }
    rig.rt.config.invalidate(rig.tenant, &rig.property);
    Ok(rig)
}

async fn register(
    rig: &Rig,
    adapter: &VendorAdapterId,
    lock: i64,
    rooms: Vec<RoomId>,
    area: Option<CommonArea>,
) -> anyhow::Result<()> {
    rig.rt
        .store
        .upsert_device(&DeviceRecord {
            id: device_id(lock),
            tenant_id: rig.tenant,
            property_id: rig.property.clone(),
            vendor: VendorCode::Ttlock,
            vendor_adapter_id: adapter.clone(),
            device_ref: DeviceRef::new(lock.to_string()),
            label: format!("door {lock}"),
            capabilities: json!({}),
            rooms,
            area,
            now: rig.rt.clock.now(),
            on_register: Vec::new(),
        })
        .await?;
    Ok(())
}

/// Registers a second TTLock adapter on the rig's simulator (environment `production`:
/// V-1 allows one adapter per vendor and environment) with `caps` applied to TTLock's.
async fn second_adapter(
    rig: &Rig,
    caps: fn(LockCapabilities) -> LockCapabilities,
) -> anyhow::Result<VendorAdapterId> {
    let port = Arc::new(CapsPort(
        TtlockAdapter::new(rig.sim.default_adapter_config(), rig.rt.clock.clone())?,
        caps,
    ));
    rig.add_adapter(port, VendorCode::Ttlock, "production", 100)
        .await
}

/// The `lockstep_saga_steps_total{step="master_refused"}` sample of `outcome`.
fn refusals(rig: &Rig, outcome: &str) -> f64 {
    let outcome = format!("outcome=\"{outcome}\"");
    rig.metrics_text()
        .lines()
        .filter(|l| {
            l.starts_with("lockstep_saga_steps_total")
                && l.contains("step=\"master_refused\"")
                && l.contains(&outcome)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every lock of the simulator that holds a passcode.
fn doors_holding_a_key(rig: &Rig) -> BTreeSet<i64> {
    LOCKS
        .iter()
        .chain(AREA_DOORS.iter().map(|(l, _)| l))
        .chain(FLOOR_LOCKS)
        .copied()
        .filter(|l| rig.passcodes(*l) > 0)
        .collect()
}

/// Starts shift `shift` of `user` with `scope`.
async fn start_shift(
    rig: &Rig,
    shift: &str,
    user: &str,
    scope: serde_json::Value,
) -> anyhow::Result<()> {
    rig.deliver_to(
        &format!("shift:{shift}"),
        &format!("start-{shift}"),
        "melmastoon.staff.shift.started.v1",
        json!({ "shiftId": shift, "staffUserId": user, "scope": scope,
                "validFrom": "2027-06-01T06:00:00Z", "validUntil": "2027-06-01T18:00:00Z" }),
    )
    .await
}

async fn master_of(rig: &Rig, user: &str) -> anyhow::Result<Option<KeyCredential>> {
    let filter = CredentialFilter {
        staff_user_id: Some(user.to_owned()),
        ..CredentialFilter::default()
    };
    Ok(rig
        .rt
        .store
        .list_credentials(rig.tenant, &filter, 10)
        .await?
        .into_iter()
        .next())
}

/// Waits until `user`'s master is `state` with every door row confirmed, then until the
/// rig is quiet; returns it.
async fn settled(rig: &Rig, user: &str, state: &str) -> anyhow::Result<KeyCredential> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(c) = master_of(rig, user).await? {
            let rows = rig.rt.store.credential_devices(rig.tenant, c.id()).await?;
            if c.state().as_str() == state && rows.iter().all(|d| d.sync.as_str() == "confirmed") {
                rig.wait_quiet().await?;
                return Ok(c);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{user}'s master never settled as {state}: {} with {} door rows",
                c.state().as_str(),
                rows.len()
            );
        } else {
            anyhow::ensure!(Instant::now() < deadline, "{user} has no master");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issues a master with `scope` and returns it with the locks holding a key afterwards.
async fn issue_master(
    rig: &Rig,
    user: &str,
    scope: serde_json::Value,
) -> anyhow::Result<(KeyCredential, BTreeSet<i64>)> {
    start_shift(rig, &format!("shf_{user}"), user, scope).await?;
    let c = settled(rig, user, "active").await?;
    let rows = rig.rt.store.credential_devices(rig.tenant, c.id()).await?;
    assert!(rows.iter().all(|d| d.desired.as_str() == "present"));
    Ok((c, doors_holding_a_key(rig)))
}

fn locks(l: &[i64]) -> BTreeSet<i64> {
    l.iter().copied().collect()
}

fn room_ids(c: &KeyCredential) -> Vec<&str> {
    c.rooms().iter().map(|r| r.as_str()).collect()
}

#[actix_rt::test]
async fn a_room_master_is_on_that_rooms_door_only() -> anyhow::Result<()> {
    let rig = rig().await?;
    let (c, doors) = issue_master(
        &rig,
        "usr_room",
        json!({ "kind": "room", "roomIds": ["rmu_2"] }),
    )
    .await?;
    assert_eq!(doors, locks(&[2]));
    assert_eq!(room_ids(&c), ["rmu_2"]);
    assert!(c.scope().areas.is_empty() && c.scope().floors.is_empty());
    rig.finish().await;
    Ok(())
}

/// Spec 003 §6.1: TTLock has no `scopeFloors`, so a floor is enumerated into its rooms'
/// doors; an adapter with `scopeFloors` gets the floor natively (the credential's
/// `scope.floors`) and the same per-door grants, as no adapter's API has a floor object.
#[actix_rt::test]
async fn a_floor_master_is_on_the_floors_room_doors_natively_where_the_vendor_scopes_floors(
) -> anyhow::Result<()> {
    let rig = rig().await?;
    // floor 1 (rooms 1 and 2) at TTLock: enumerated
    let (c, doors) = issue_master(
        &rig,
        "usr_floor1",
        json!({ "kind": "floor", "floor": "1", "roomIds": ["rmu_1", "rmu_2"] }),
    )
    .await?;
    assert_eq!(doors, locks(&[1, 2]));
    assert_eq!(room_ids(&c), ["rmu_1", "rmu_2"]);
    assert!(c.scope().floors.is_empty(), "no scopeFloors: rooms only");

    // floor 2 (rooms 21 and 22) at an adapter that scopes floors (another environment:
    // V-1 allows one adapter per vendor and environment)
    let floors_adapter = second_adapter(&rig, |c| LockCapabilities {
        scope_floors: true,
        ..c
    })
    .await?;
    for l in FLOOR_LOCKS {
        rig.sim.handle().add_lock(*l);
        register(
            &rig,
            &floors_adapter,
            *l,
            vec![RoomId::parse(&format!("rmu_{l}"))?],
            None,
        )
        .await?;
    }
    rig.rt.config.invalidate(rig.tenant, &rig.property);
    start_shift(
        &rig,
        "shf_floor2",
        "usr_floor2",
        json!({ "kind": "floor", "floor": "2", "roomIds": ["rmu_21", "rmu_22"] }),
    )
    .await?;
    let c2 = settled(&rig, "usr_floor2", "active").await?;
    assert_eq!(
        c2.scope().floors,
        vec!["2".to_string()],
        "the floor, natively"
    );
    assert_eq!(room_ids(&c2), ["rmu_21", "rmu_22"]);
    assert_eq!(c2.vendor_adapter_id(), &floors_adapter);
    let rows = rig.rt.store.credential_devices(rig.tenant, c2.id()).await?;
    let on: BTreeSet<_> = rows.iter().map(|d| d.device_id.clone()).collect();
    assert_eq!(on, FLOOR_LOCKS.iter().map(|l| device_id(*l)).collect());
    assert_eq!(doors_holding_a_key(&rig), locks(&[1, 2, 21, 22]));
    rig.finish().await;
    Ok(())
}

#[actix_rt::test]
async fn a_rooms_assigned_master_is_on_the_assigned_rooms_doors_of_the_property(
) -> anyhow::Result<()> {
    let rig = rig().await?;
    let (c, doors) = issue_master(
        &rig,
        "usr_maint",
        json!({ "kind": "rooms_assigned", "roomIds": ["rmu_3", "rmu_4", "rmu_999"] }),
    )
    .await?;
    assert_eq!(doors, locks(&[3, 4]), "rmu_999 has no door here: dropped");
    assert_eq!(room_ids(&c), ["rmu_3", "rmu_4"]);
    rig.finish().await;
    Ok(())
}

#[actix_rt::test]
async fn a_rooms_all_master_is_on_every_room_door_and_no_area_door() -> anyhow::Result<()> {
    let rig = rig().await?;
    let (c, doors) = issue_master(&rig, "usr_gm", json!({ "kind": "rooms_all" })).await?;
    assert_eq!(doors, locks(&[1, 2, 3, 4]));
    assert_eq!(room_ids(&c), ["rmu_1", "rmu_2", "rmu_3", "rmu_4"]);
    assert!(c.scope().areas.is_empty());
    rig.finish().await;
    Ok(())
}

/// TTLock has no `scopeAreas`: the areas are enumerated into their doors (spec 003 §6.1).
#[actix_rt::test]
async fn an_areas_master_is_on_the_named_areas_doors_only() -> anyhow::Result<()> {
    let rig = rig().await?;
    let (c, doors) = issue_master(
        &rig,
        "usr_lifeguard",
        json!({ "kind": "areas", "areas": ["pool", "gym"] }),
    )
    .await?;
    assert_eq!(doors, locks(&[12, 13, 14]), "both gym doors and the pool's");
    assert!(
        c.rooms().is_empty(),
        "I-12: an areas-only master has no rooms"
    );
    assert_eq!(c.scope().areas, vec!["gym".to_string(), "pool".to_string()]);
    // the shift's end takes it off every one of those doors
    rig.deliver_to(
        "shift:shf_usr_lifeguard",
        "end-shf_usr_lifeguard",
        "melmastoon.staff.shift.ended.v1",
        json!({ "shiftId": "shf_usr_lifeguard", "staffUserId": "usr_lifeguard" }),
    )
    .await?;
    let c = settled(&rig, "usr_lifeguard", "revoked").await?;
    assert!(rig
        .rt
        .store
        .credential_devices(rig.tenant, c.id())
        .await?
        .iter()
        .all(|d| d.desired.as_str() == "absent"));
    assert!(doors_holding_a_key(&rig).is_empty());
    rig.finish().await;
    Ok(())
}

/// An operator moving an areas master's end (`PATCH /api/v1/key-credentials/{id}`) moves
/// it at the area doors and takes it off none of them: the scope is the shift's.
#[actix_rt::test]
async fn moving_an_areas_masters_end_keeps_it_on_its_area_doors() -> anyhow::Result<()> {
    let rig = rig().await?;
    let (c, doors) = issue_master(
        &rig,
        "usr_late",
        json!({ "kind": "areas", "areas": ["gym"] }),
    )
    .await?;
    assert_eq!(doors, locks(&[12, 13]));
    rig.command(
        "shift:shf_usr_late",
        lockstep_actors::events_in::INTERNAL_UPDATE,
        json!({ "credentialId": c.id().as_str(), "validUntil": "2027-06-01T20:00:00Z" }),
    )
    .await?;
    // the vendor is told at both gym doors: their passcodes end at 20:00
    let end_ms = 1_811_880_000_000i64; // 2027-06-01T20:00:00Z
    let deadline = Instant::now() + Duration::from_secs(20);
    let ends = |rig: &Rig| -> Vec<i64> {
        [12, 13]
            .iter()
            .flat_map(|l| rig.sim.handle().passcodes(*l))
            .map(|p| p.end_date)
            .collect()
    };
    while ends(&rig) != vec![end_ms, end_ms] {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gym doors' passcodes never moved: {:?}",
            ends(&rig)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = rig.rt.store.credential_devices(rig.tenant, c.id()).await?;
    assert!(
        rows.iter().all(|d| d.desired.as_str() == "present"),
        "still on every gym door"
    );
    rig.wait_quiet().await?;
    assert_eq!(doors_holding_a_key(&rig), locks(&[12, 13]));
    rig.finish().await;
    Ok(())
}

/// Drift reconciliation covers the area doors: a master's passcode deleted behind
/// Lockstep's back at the pool door is put back.
#[actix_rt::test]
async fn drift_reconciliation_puts_back_a_masters_key_missing_at_an_area_door() -> anyhow::Result<()>
{
    use lockstep_vendors::LockPort as _;
    let rig = rig().await?;
    let (_, doors) = issue_master(
        &rig,
        "usr_pool",
        json!({ "kind": "areas", "areas": ["pool"] }),
    )
    .await?;
    assert_eq!(doors, locks(&[14]));
    let pool = DeviceRef::new("14");
    let held = rig.port.list(&pool).await?;
    rig.port.revoke(&pool, &held[0].vendor_ref).await?;
    assert!(doors_holding_a_key(&rig).is_empty());
    let report = lockstep_actors::drift::reconcile_property(&rig.rt, rig.tenant, &rig.property, 0)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(
        (report.devices, report.missing_reissued),
        (LOCKS.len() + AREA_DOORS.len(), 1),
        "every room and area door is compared: {report:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while doors_holding_a_key(&rig) != locks(&[14]) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pool door's key was not put back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.finish().await;
    Ok(())
}

#[actix_rt::test]
async fn an_areas_all_master_is_on_every_area_door_and_no_room_door() -> anyhow::Result<()> {
    let rig = rig().await?;
    let (c, doors) = issue_master(&rig, "usr_security", json!({ "kind": "areas_all" })).await?;
    assert_eq!(doors, locks(&[11, 12, 13, 14, 15]));
    assert!(c.rooms().is_empty());
    assert_eq!(
        c.scope().areas,
        vec!["lobby", "gym", "pool", "back_of_house"],
        "the areas with a door (none opens the spa or the parking)"
    );
    rig.finish().await;
    Ok(())
}

#[actix_rt::test]
async fn a_back_of_house_master_is_on_the_back_of_house_door_only() -> anyhow::Result<()> {
    let rig = rig().await?;
    let (c, doors) = issue_master(&rig, "usr_kitchen", json!({ "kind": "back_of_house" })).await?;
    assert_eq!(doors, locks(&[15]));
    assert!(c.rooms().is_empty());
    assert_eq!(c.scope().areas, vec!["back_of_house".to_string()]);
    rig.finish().await;
    Ok(())
}

/// A scope that names a door the property does not have (the spa) is refused at the
/// shift's start: the credential fails as `scope_unresolvable` with its
/// `credential.failed.v1`, the master record is closed, the refusal is counted, and no
/// vendor call is made. Before issue 14 such a master stayed `requested` for ever.
#[actix_rt::test]
async fn an_unresolvable_scope_fails_at_the_shifts_start_without_a_vendor_call(
) -> anyhow::Result<()> {
    let rig = rig().await?;
    start_shift(
        &rig,
        "shf_spa",
        "usr_spa",
        json!({ "kind": "areas", "areas": ["gym", "spa"] }),
    )
    .await?;
    let c = settled(&rig, "usr_spa", "failed").await?;
    assert_eq!(
        c.failure_reason().map(|f| f.as_str()),
        Some("scope_unresolvable")
    );
    assert!(
        rig.rt
            .store
            .credential_devices(rig.tenant, c.id())
            .await?
            .is_empty(),
        "no door row: nothing to drive"
    );
    let subjects = rig.outbox_subjects(c.id().as_str()).await?;
    assert!(
        subjects.iter().any(|s| s.ends_with("credential.failed.v1")),
        "{subjects:?}"
    );
    assert!(
        !subjects.iter().any(|s| s.ends_with("issued.v1")),
        "{subjects:?}"
    );
    let failed = rig
        .rt
        .store
        .unpublished(rig.rt.clock.now(), 10_000)
        .await?
        .into_iter()
        .find(|r| r.aggregate_id == c.id().as_str() && r.topic.ends_with("failed.v1"))
        .ok_or_else(|| anyhow::anyhow!("no failed.v1 row"))?;
    assert_eq!(
        failed.payload["reason"], "scope_unresolvable",
        "{}",
        failed.payload
    );
    let master = rig
        .rt
        .store
        .master_by_credential(rig.tenant, c.id())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the master row"))?;
    assert!(master.revoked_at.is_some(), "the master record is closed");
    assert_eq!(refusals(&rig, "scope_unresolvable"), 1.0);
    // no vendor call: nothing reached the port, nothing is at any door
    assert!(rig.port.log.lock().unwrap().is_empty());
    assert_eq!(rig.sim.handle().counters().adds, 0);
    assert!(doors_holding_a_key(&rig).is_empty());
    rig.finish().await;
    Ok(())
}

/// A master has one kind, which every door of its scope must take: a gym door at TTLock
/// (PINs) and a spa door at an adapter that issues none of the policy's kinds leave none,
/// so the master fails at the shift's start as `kind_unsupported`, without a vendor call.
#[actix_rt::test]
async fn a_scope_whose_doors_share_no_kind_fails_as_kind_unsupported_without_a_vendor_call(
) -> anyhow::Result<()> {
    let rig = rig().await?;
    let none = second_adapter(&rig, |c| LockCapabilities {
        pin: false,
        mobile_key: false,
        card_encoding: false,
        qr: false,
        nfc: false,
        ..c
    })
    .await?;
    rig.sim.handle().add_lock(16);
    register(&rig, &none, 16, vec![], Some(CommonArea::Spa)).await?;
    rig.rt.config.invalidate(rig.tenant, &rig.property);
    start_shift(
        &rig,
        "shf_wellness",
        "usr_wellness",
        json!({ "kind": "areas", "areas": ["gym", "spa"] }),
    )
    .await?;
    let c = settled(&rig, "usr_wellness", "failed").await?;
    assert_eq!(
        c.failure_reason().map(|f| f.as_str()),
        Some("kind_unsupported")
    );
    let subjects = rig.outbox_subjects(c.id().as_str()).await?;
    assert!(
        subjects.iter().any(|s| s.ends_with("credential.failed.v1")),
        "{subjects:?}"
    );
    assert_eq!(refusals(&rig, "kind_unsupported"), 1.0);
    assert!(rig.port.log.lock().unwrap().is_empty());
    assert_eq!(rig.sim.handle().counters().adds, 0);
    assert_eq!(rig.passcodes(16), 0);
    assert!(doors_holding_a_key(&rig).is_empty());
    rig.finish().await;
    Ok(())
}

/// A TTLock adapter on the rig's simulator with other capabilities: one whose vendor
/// scopes floors natively (Salto and Vostio do; spec `003` §6.1), or one that can issue
/// none of the policy's kinds.
#[derive(Debug)]
struct CapsPort(TtlockAdapter, fn(LockCapabilities) -> LockCapabilities);

#[async_trait]
impl LockPort for CapsPort {
    fn vendor(&self) -> VendorCode {
        self.0.vendor()
    }
    fn capabilities(&self) -> LockCapabilities {
        (self.1)(self.0.capabilities())
    }
    fn account(&self) -> String {
        self.0.account()
    }
    fn rate_gate(&self) -> &lockstep_vendors::rate::RateGate {
        self.0.rate_gate()
    }
    fn default_rate_per_minute(&self) -> Option<u32> {
        self.0.default_rate_per_minute()
    }
    async fn issue(&self, req: &IssueRequest) -> Result<VendorRef, VendorError> {
        self.0.issue(req).await
    }
    async fn find(&self, req: &IssueRequest) -> Result<Option<VendorRef>, VendorError> {
        self.0.find(req).await
    }
    async fn update(&self, req: &IssueRequest, vendor_ref: &VendorRef) -> Result<(), VendorError> {
        self.0.update(req, vendor_ref).await
    }
    async fn revoke(&self, device: &DeviceRef, vendor_ref: &VendorRef) -> Result<(), VendorError> {
        self.0.revoke(device, vendor_ref).await
    }
    async fn list(&self, device: &DeviceRef) -> Result<Vec<VendorEntry>, VendorError> {
        self.0.list(device).await
    }
    async fn listings(&self, device: &DeviceRef) -> Vec<lockstep_vendors::Listing> {
        self.0.listings(device).await
    }
    async fn health(&self) -> Result<(), VendorError> {
        self.0.health().await
    }
    async fn probe(
        &self,
        device: &DeviceRef,
    ) -> Result<lockstep_vendors::DeviceProbe, VendorError> {
        self.0.probe(device).await
    }
}
