//! What a saga's commands do to one credential inside a step's unit of work: request it
//! (with its door-truth rows and its drive), revoke, suspend, update, fail it mid-flight.
//! Shared by the reservation and shift sagas and by operator commands.

use lockstep_domain::device_diff::{self, DoorChange, HeldDoor, WantedDoor};
use lockstep_domain::door_sync;
use lockstep_domain::master::CommonArea;
use lockstep_domain::{
    DomainError, FailureReason, HolderKind, IssueIntent, KeyCredential, KeyCredentialId,
    KeyCredentialKind, KeyCredentialState, Pin, ReservationId, RevokeReason, RoomId, ScopedRoom,
    SuspendReason, Timestamp, UpdateInput, UserId, VendorAdapterId, VendorCode,
};
use lockstep_persistence::{
    CredentialDevice, Desired, DeviceSyncWrite, MasterKeyWrite, ScheduleDrive, SyncState,
    UnitOfWork,
};
use serde_json::json;

use crate::db::StepDb;

use super::routing::{route, taking_new_work};
use super::{domain_err, internal_event, observe, Entry, InternalTopic, StepError, Touched};

pub(super) enum Holder {
    Guest {
        reservation_id: ReservationId,
        guest_id: lockstep_domain::GuestId,
    },
    Staff {
        staff_user_id: UserId,
    },
}

pub(super) struct Intent {
    pub(super) id: KeyCredentialId,
    pub(super) holder: Holder,
    pub(super) kind: KeyCredentialKind,
    pub(super) rooms: Vec<RoomId>,
    pub(super) scope: lockstep_domain::KeyCredentialScope,
    pub(super) validity: lockstep_domain::ValidityWindow,
    pub(super) replaces: Option<KeyCredentialId>,
    pub(super) trace_id: Option<String>,
    pub(super) idempotency_key: String,
    /// An adapter a fallback leaves (its vendor kept the previous key waiting, DESIGN §7).
    pub(super) avoid: Option<VendorAdapterId>,
}

/// Requests a credential; with every room served, writes its door-truth rows (PINs for
/// `pin_code`) and schedules its drive; otherwise (or when `force_fail`) fails it at once
/// and tells the saga.
pub(super) async fn issue(
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    uow: &mut UnitOfWork,
    touched: &mut Touched,
    intent: Intent,
    force_fail: Option<FailureReason>,
) -> Result<(), StepError> {
    let now = uow.now;
    let devices = db
        .devices_for_rooms(entry.tenant_id, &entry.property_id, &intent.rooms)
        .await?;
    let devices = taking_new_work(&db.rt().ports, devices);
    let devices = route(
        db.rt(),
        devices,
        &intent.rooms,
        intent.kind,
        intent.avoid.as_ref(),
    )
    .await;
    // A master's areas (spec 003 §4): their doors hold the key too, one grant per door
    // (no adapter's API has an area object; ARCHITECTURE.md "Master-key scopes").
    let areas: Vec<CommonArea> = intent
        .scope
        .areas
        .iter()
        .filter_map(|a| CommonArea::parse(a).ok())
        .collect();
    let mut devices = devices;
    if !areas.is_empty() {
        let doors = db
            .devices_for_areas(entry.tenant_id, &entry.property_id, &areas)
            .await?;
        for d in taking_new_work(&db.rt().ports, doors) {
            if !devices.iter().any(|x| x.id == d.id) {
                devices.push(d);
            }
        }
    }
    let served: std::collections::BTreeSet<&RoomId> =
        devices.iter().flat_map(|d| d.rooms.iter()).collect();
    let unserved_area = areas
        .iter()
        .any(|a| !devices.iter().any(|d| d.area == Some(*a)));
    let (vendor, adapter_id) = devices
        .first()
        .map(|d| (d.vendor, d.vendor_adapter_id.clone()))
        .unwrap_or((
            VendorCode::Ttlock,
            VendorAdapterId::from_ulid(ulid::Ulid::nil()),
        ));
    let (holder_kind, reservation_id, guest_id, staff_user_id) = match intent.holder {
        Holder::Guest {
            reservation_id,
            guest_id,
        } => (
            HolderKind::Guest,
            Some(reservation_id),
            Some(guest_id),
            None,
        ),
        Holder::Staff { staff_user_id } => {
            (HolderKind::StaffMaster, None, None, Some(staff_user_id))
        }
    };
    let mut cred = KeyCredential::request(
        IssueIntent {
            id: intent.id.clone(),
            tenant_id: entry.tenant_id,
            property_id: entry.property_id.clone(),
            holder_kind,
            reservation_id,
            guest_id,
            staff_user_id,
            kind: intent.kind,
            // I-11: rooms resolved in this tenant's and property's registry.
            rooms: intent
                .rooms
                .iter()
                .map(|r| ScopedRoom {
                    tenant_id: entry.tenant_id,
                    property_id: entry.property_id.clone(),
                    room_id: r.clone(),
                })
                .collect(),
            scope: intent.scope,
            validity: intent.validity,
            vendor,
            vendor_adapter_id: adapter_id,
            provisional: false,
            idempotency_key: intent.idempotency_key,
            replaces_id: intent.replaces.clone(),
            trace_id: intent.trace_id,
        },
        now,
    )
    .map_err(domain_err)?;
    let unserved = intent.rooms.iter().any(|r| !served.contains(r)) || unserved_area;
    if let Some(reason) = force_fail.or(unserved.then_some(FailureReason::NoCapableDevice)) {
        cred.mark_failed(reason, now).map_err(domain_err)?;
        observe(entry, &cred, uow);
    } else {
        // The intent of the first vendor call (DESIGN §3.4) commits with the decision when
        // the account takes new keys now: the drive that follows in this drain calls the
        // vendor at once. Otherwise the drive commits it when the account is ready.
        let intent_now = devices
            .iter()
            .all(|d| db.rt().ports.addition_gate(&d.vendor_adapter_id).is_none());
        let mut fresh = Vec::new();
        for d in &devices {
            let w = DeviceSyncWrite {
                credential_id: cred.id().clone(),
                device_id: d.id.clone(),
                desired: Desired::Present,
                sync: SyncState::Pending,
                pin: (intent.kind == KeyCredentialKind::PinCode)
                    .then(|| Pin::generate(Pin::DEFAULT_LEN)),
                vendor_ref: None,
                attempts: i32::from(intent_now),
                pin_collisions: 0,
                last_error: None,
            };
            fresh.push(CredentialDevice {
                credential_id: w.credential_id.clone(),
                device_id: w.device_id.clone(),
                device_ref: d.device_ref.clone(),
                vendor_adapter_id: d.vendor_adapter_id.clone(),
                desired: w.desired,
                sync: w.sync,
                pin: w.pin.clone(),
                vendor_ref: None,
                attempts: w.attempts,
                pin_collisions: 0,
                last_error: None,
                removal_requested_at: None,
            });
            uow.devices.push(w);
        }
        if intent_now && !devices.is_empty() {
            cred.mark_pending(now).map_err(domain_err)?;
            db.stage_fresh(cred.id().clone(), fresh);
        }
        schedule(entry, uow, cred.id());
        expire_at(entry, uow, cred.id(), intent.validity.until());
    }
    if let Some(old) = &intent.replaces {
        if let Some(i) = touched.get(db, entry.tenant_id, old).await? {
            // Lineage (I-4): the revoked credential names its replacement.
            let _ = touched.creds[i].0.link_replacement(cred.id().clone(), now);
        }
    }
    touched.creds.push((cred, None));
    Ok(())
}

/// A durable timer that revokes the credential as `expired` at its end (DESIGN §12), so
/// the record and the door agree even where the lock's own window would close it anyway.
fn expire_at(entry: &Entry<'_>, uow: &mut UnitOfWork, id: &KeyCredentialId, at: Timestamp) {
    uow.events.push(internal_event(
        entry,
        &entry.subject,
        InternalTopic::Expire,
        json!({ "credentialId": id.as_str() }),
        at,
    ));
}

pub(super) fn schedule(entry: &Entry<'_>, uow: &mut UnitOfWork, id: &KeyCredentialId) {
    uow.schedule.push(ScheduleDrive {
        property_id: entry.property_id.clone(),
        partition: entry.partition,
        subject: entry.key().to_owned(),
        credential_id: id.clone(),
        due_at: uow.now,
    });
}

/// Every device should lose the credential. A device never called (attempts 0, or a fresh
/// intent of this drain that was never sent) holds nothing: confirmed absent at once.
/// Otherwise a delete is pending.
pub(super) fn plan_removal(
    devices: &[CredentialDevice],
    uow: &mut UnitOfWork,
    never_sent: bool,
) -> bool {
    let mut pending = false;
    for d in devices {
        if d.desired == Desired::Absent && d.sync == SyncState::Confirmed {
            continue;
        }
        let mut w = DeviceSyncWrite::from_current(d);
        w.desired = Desired::Absent;
        w.sync = if door_sync::holds_nothing(d.attempts, d.vendor_ref.is_some(), never_sent) {
            SyncState::Confirmed
        } else {
            SyncState::Pending
        };
        pending |= w.sync == SyncState::Pending;
        uow.devices.push(w);
    }
    pending
}

/// Takes the credential off every device that may hold it (a drive deletes what the vendor
/// has) and, for a master whose credential ended, closes its `MasterKey` record.
async fn off_the_door(
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    uow: &mut UnitOfWork,
    id: &KeyCredentialId,
    end_master: bool,
) -> Result<(), StepError> {
    let devices = db.credential_devices(entry.tenant_id, id).await?;
    // a fresh intent never sent: taken back, nothing to look for at the vendor
    let never_sent = db.take_fresh(id).is_some();
    if plan_removal(&devices, uow, never_sent) {
        schedule(entry, uow, id);
    }
    if end_master {
        if let Some(m) = db.master_by_credential(entry.tenant_id, id).await? {
            uow.master = Some(MasterKeyWrite::Revoke {
                id: m.id,
                revoked_at: uow.now,
            });
        }
    }
    Ok(())
}

/// A transition that no longer applies (the credential moved on meanwhile) is skipped, and
/// the saga is told where the credential really is.
fn skipped(
    entry: &Entry<'_>,
    c: &KeyCredential,
    uow: &mut UnitOfWork,
    e: DomainError,
) -> Result<(), StepError> {
    match e {
        DomainError::InvalidStateTransition { .. } => {
            observe(entry, c, uow);
            Ok(())
        }
        other => Err(domain_err(other)),
    }
}

pub(super) async fn revoke(
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    uow: &mut UnitOfWork,
    touched: &mut Touched,
    id: &KeyCredentialId,
    reason: RevokeReason,
    trace_id: Option<String>,
) -> Result<(), StepError> {
    let Some(i) = touched.get(db, entry.tenant_id, id).await? else {
        return Ok(());
    };
    let c = &mut touched.creds[i].0;
    c.set_trace_id(trace_id);
    if let Err(e) = c.revoke(reason, uow.now) {
        return skipped(entry, c, uow, e);
    }
    let is_master = c.holder_kind() == HolderKind::StaffMaster;
    off_the_door(db, entry, uow, id, is_master).await
}

pub(super) async fn fail_mid_flight(
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    uow: &mut UnitOfWork,
    touched: &mut Touched,
    id: &KeyCredentialId,
) -> Result<(), StepError> {
    let Some(i) = touched.get(db, entry.tenant_id, id).await? else {
        return Ok(());
    };
    let c = &mut touched.creds[i].0;
    if let Err(e) = c.mark_failed(FailureReason::CancelledMidFlight, uow.now) {
        return skipped(entry, c, uow, e);
    }
    let is_master = c.holder_kind() == HolderKind::StaffMaster;
    off_the_door(db, entry, uow, id, is_master).await
}

/// Suspension at a door that cannot disable a passcode is its removal (the PIN is kept,
/// encrypted, for an unsuspend); the credential's state says `suspended`.
pub(super) async fn suspend(
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    uow: &mut UnitOfWork,
    touched: &mut Touched,
    id: &KeyCredentialId,
    reason: SuspendReason,
) -> Result<(), StepError> {
    let Some(i) = touched.get(db, entry.tenant_id, id).await? else {
        return Ok(());
    };
    let c = &mut touched.creds[i].0;
    if let Err(e) = c.suspend(reason, uow.now) {
        return skipped(entry, c, uow, e);
    }
    off_the_door(db, entry, uow, id, false).await
}

/// Moves an active or suspended credential's end and rooms; the doors follow as
/// `domain::device_diff` says: devices of new rooms get it, devices of dropped rooms lose
/// it, the others get the new window.
pub(super) async fn update(
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    uow: &mut UnitOfWork,
    touched: &mut Touched,
    id: &KeyCredentialId,
    valid_until: Timestamp,
    rooms: &[RoomId],
) -> Result<(), StepError> {
    let Some(i) = touched.get(db, entry.tenant_id, id).await? else {
        return Ok(());
    };
    let c = &mut touched.creds[i].0;
    let input = UpdateInput {
        valid_until: Some(valid_until),
        rooms: Some(
            rooms
                .iter()
                .map(|r| ScopedRoom {
                    tenant_id: entry.tenant_id,
                    property_id: entry.property_id.clone(),
                    room_id: r.clone(),
                })
                .collect(),
        ),
        scope: None,
    };
    if let Err(e) = c.update(input, uow.now) {
        return skipped(entry, c, uow, e);
    }
    // the end moved: a timer for the new end (the old one finds nothing due and ends)
    expire_at(entry, uow, id, valid_until);
    let active = c.state() == KeyCredentialState::Active;
    let mut wanted = db
        .devices_for_rooms(entry.tenant_id, &entry.property_id, rooms)
        .await?;
    // a master's areas keep their doors: the scope is not changed here (issue 14)
    let areas: Vec<CommonArea> = c
        .scope()
        .areas
        .iter()
        .filter_map(|a| CommonArea::parse(a).ok())
        .collect();
    if !areas.is_empty() {
        for d in db
            .devices_for_areas(entry.tenant_id, &entry.property_id, &areas)
            .await?
        {
            if !wanted.iter().any(|w| w.id == d.id) {
                wanted.push(d);
            }
        }
    }
    let current = db.credential_devices(entry.tenant_id, id).await?;
    let pin = current.iter().find_map(|d| d.pin.clone());
    let ports = &db.rt().ports;
    let held: Vec<HeldDoor<'_>> = current
        .iter()
        .map(|d| HeldDoor {
            device: &d.device_id,
            attempts: d.attempts,
            has_vendor_ref: d.vendor_ref.is_some(),
        })
        .collect();
    let doors: Vec<WantedDoor<'_>> = wanted
        .iter()
        .map(|w| WantedDoor {
            device: &w.id,
            adapter: &w.vendor_adapter_id,
            rooms: &w.rooms,
            takes_new_work: ports.choice(&w.vendor_adapter_id).0,
        })
        .collect();
    let diff = device_diff::diff(&held, &doors, c.vendor_adapter_id(), active);
    let row = |change: DoorChange| {
        (
            if change.present() {
                Desired::Present
            } else {
                Desired::Absent
            },
            if change.pending() {
                SyncState::Pending
            } else {
                SyncState::Confirmed
            },
        )
    };
    for &(i, change) in &diff.held {
        let mut w = DeviceSyncWrite::from_current(&current[i]);
        (w.desired, w.sync) = row(change);
        uow.devices.push(w);
    }
    for &(i, change) in &diff.added {
        let (desired, sync) = row(change);
        uow.devices.push(DeviceSyncWrite {
            credential_id: id.clone(),
            device_id: wanted[i].id.clone(),
            desired,
            sync,
            pin: pin.clone().or_else(|| {
                (c.kind() == KeyCredentialKind::PinCode).then(|| Pin::generate(Pin::DEFAULT_LEN))
            }),
            vendor_ref: None,
            attempts: 0,
            pin_collisions: 0,
            last_error: None,
        });
    }
    if diff.drive() {
        schedule(entry, uow, id);
    }
    Ok(())
}
