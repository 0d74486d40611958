//! The shift saga's step: a shift's master key (spec `003` §4), its scope resolved to the
//! property's doors and its kind chosen among what every one of them can take.

use lockstep_domain::master::{resolve_scope, LayoutRoom, MasterScope, PropertyLayout};
use lockstep_domain::outcome::StepOutcome;
use lockstep_domain::shift::{
    ActiveMaster, ShiftCommand, ShiftContext, ShiftDecision, ShiftEvent, ShiftSaga,
};
use lockstep_domain::{
    FailureReason, KeyCredentialId, KeyCredentialKind, LockCapabilities, MasterKeyId, RoomId,
    ShiftId, UserId, VendorAdapterId,
};
use lockstep_persistence::{MasterKeyRecord, MasterKeyWrite};
use tracing::warn;

use crate::db::StepDb;
use crate::runtime::Runtime;
use crate::saga_codec;

use super::credential::{fail_mid_flight, issue, revoke, Holder, Intent};
use super::routing::{capabilities, policy};
use super::{done, unit, Entry, StepError, Touched};

#[allow(clippy::too_many_arguments)] // the shift's ids, its event and its rooms
pub(super) async fn shift_step(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    shift_id: &ShiftId,
    staff_user_id: &UserId,
    event: ShiftEvent,
    scope_rooms: &[RoomId],
    label: &'static str,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let mut state = match db.load_saga(entry.tenant_id, entry.key()).await? {
        Some(v) => saga_codec::shift_from_json(&v).map_err(|e| StepError::Retry(e.to_string()))?,
        None => ShiftSaga::default(),
    };
    // The master's state as its row says (the shift saga reads it rather than observing).
    if let Some(m) = &mut state.master {
        if let Some(c) = db.get_credential(entry.tenant_id, &m.credential_id).await? {
            m.state = c.state();
        }
    }
    let active_masters = db
        .active_masters_of_user(entry.tenant_id, staff_user_id.as_str())
        .await?
        .into_iter()
        .filter(|m| {
            m.property_id == entry.property_id && m.shift_id.as_deref() != Some(shift_id.as_str())
        })
        .filter_map(|m| {
            Some(ActiveMaster {
                master_key_id: MasterKeyId::parse(&m.id).ok()?,
                credential_id: m.key_credential_id.clone(),
                scope_kind: scope_kind(&m.scope_kind)?,
            })
        })
        .collect();
    // A start for a user deactivated before it (reordered delivery) is that deactivation.
    let deactivated = db
        .user_deactivated_at(entry.tenant_id, staff_user_id.as_str())
        .await?
        .is_some();
    let event = match event {
        ShiftEvent::Started { .. } if deactivated => ShiftEvent::UserDeactivated {
            staff_user_id: staff_user_id.clone(),
        },
        other => other,
    };
    let ctx = ShiftContext {
        new_credential_id: KeyCredentialId::generate(),
        new_master_key_id: MasterKeyId::generate(),
        active_masters,
    };
    let fence = rt.fences.for_commit(entry.partition);
    let (next, commands) = match lockstep_domain::shift::decide_shift(&state, &event, &ctx) {
        ShiftDecision::Ignore(why) => {
            let mut uow = unit(entry, fence, now);
            uow.mailbox.push(done(entry, StepOutcome::Ignored(why)));
            db.commit(uow).await?;
            rt.metrics
                .saga_steps
                .with_label_values(&[label, "ignored"])
                .inc();
            return Ok(());
        }
        ShiftDecision::Apply { next, commands } => (next, commands),
    };
    // M-2 renewal revokes the previous master first: its master row write goes in an
    // earlier commit, because a unit of work carries one master write.
    let mut uow = unit(entry, fence, now);
    let mut touched = Touched::default();
    let mut refusals: Vec<FailureReason> = Vec::new();
    for cmd in &commands {
        match cmd {
            ShiftCommand::RevokeMaster {
                credential_id,
                reason,
            } => {
                if uow.master.is_some() {
                    touched.into_uow(&mut uow);
                    db.commit(std::mem::replace(&mut uow, unit(entry, fence, now)))
                        .await?;
                    touched = Touched::default();
                }
                revoke(
                    db,
                    entry,
                    &mut uow,
                    &mut touched,
                    credential_id,
                    *reason,
                    None,
                )
                .await?;
            }
            ShiftCommand::FailMasterMidFlight { credential_id } => {
                fail_mid_flight(db, entry, &mut uow, &mut touched, credential_id).await?;
            }
            ShiftCommand::IssueMaster {
                credential_id,
                master_key_id,
                shift_id,
                staff_user_id,
                scope,
                validity,
                replaces,
            } => {
                if uow.master.is_some() {
                    touched.into_uow(&mut uow);
                    db.commit(std::mem::replace(&mut uow, unit(entry, fence, now)))
                        .await?;
                    touched = Touched::default();
                }
                let all = db
                    .property_rooms(entry.tenant_id, &entry.property_id)
                    .await?;
                let floor = match scope {
                    MasterScope::Floor { floor } => floor.clone(),
                    _ => String::new(),
                };
                let layout = PropertyLayout {
                    rooms: all
                        .iter()
                        .map(|r| LayoutRoom {
                            room_id: r.clone(),
                            // The event names the floor's rooms; other rooms are on no floor Lockstep knows.
                            floor: if scope_rooms.contains(r) {
                                floor.clone()
                            } else {
                                String::new()
                            },
                        })
                        .collect(),
                    assigned_rooms: scope_rooms.to_vec(),
                    areas: db
                        .property_areas(entry.tenant_id, &entry.property_id)
                        .await?,
                };
                let policy = policy(rt, db, entry).await?;
                // A floor goes natively to the adapter of the floor's rooms when it has
                // `scopeFloors` (spec 003 §6.1), else its rooms are enumerated.
                let caps_of: &[RoomId] = match scope {
                    MasterScope::Floor { .. } if !scope_rooms.is_empty() => scope_rooms,
                    _ => &all,
                };
                // Spec 003 §4: every scope ends at the doors it names, or the master fails
                // at once with its own reason (never left `requested`).
                let (resolved, kind, refused) = match resolve_scope(
                    scope,
                    &capabilities(rt, db, entry, caps_of, None).await?,
                    &layout,
                ) {
                    Ok(r) => {
                        let caps = master_capabilities(rt, db, entry, &r).await?;
                        match policy.choose_kind(&caps, false) {
                            Ok(k) => (r, k, None),
                            Err(reason) => {
                                warn!(subject = %entry.subject, scope = scope.kind().as_str(), "the scope's doors can issue none of the policy's kinds");
                                (r, KeyCredentialKind::PinCode, Some(reason))
                            }
                        }
                    }
                    Err(refusal) => {
                        warn!(subject = %entry.subject, scope = scope.kind().as_str(), %refusal, "master key scope refused");
                        (
                            lockstep_domain::master::ResolvedScope::default(),
                            KeyCredentialKind::PinCode,
                            Some(refusal.failure_reason()),
                        )
                    }
                };
                let intent = Intent {
                    id: credential_id.clone(),
                    holder: Holder::Staff {
                        staff_user_id: staff_user_id.clone(),
                    },
                    kind,
                    rooms: resolved.rooms.clone(),
                    scope: resolved.credential_scope(),
                    validity: *validity,
                    replaces: replaces.clone(),
                    trace_id: None,
                    idempotency_key: format!("{}:{}", entry.key(), credential_id),
                    avoid: None,
                };
                issue(db, entry, &mut uow, &mut touched, intent, refused).await?;
                // refused here, or by `issue` (a door missing from the registry it read)
                let failed = touched.creds.last().and_then(|(c, _)| c.failure_reason());
                refusals.extend(failed);
                let impossible = failed.is_some();
                uow.master = Some(MasterKeyWrite::Insert(MasterKeyRecord {
                    id: master_key_id.as_str().to_owned(),
                    tenant_id: entry.tenant_id,
                    property_id: entry.property_id.clone(),
                    staff_user_id: staff_user_id.as_str().to_owned(),
                    shift_id: Some(shift_id.as_str().to_owned()),
                    key_credential_id: credential_id.clone(),
                    scope_kind: scope.kind().as_str().to_owned(),
                    scope: saga_codec::scope_to_json(scope),
                    valid_from: validity.from(),
                    valid_until: validity.until(),
                    issued_at: now,
                    revoked_at: impossible.then_some(now),
                }));
            }
        }
    }
    touched.into_uow(&mut uow);
    uow.saga = Some((entry.key().to_owned(), saga_codec::shift_to_json(&next)));
    uow.mailbox.push(done(entry, StepOutcome::Applied));
    db.commit(uow).await?;
    rt.metrics
        .saga_steps
        .with_label_values(&[label, "applied"])
        .inc();
    for reason in refusals {
        // `lockstep_saga_steps_total{step="master_refused", outcome=<failure reason>}`
        rt.metrics
            .saga_steps
            .with_label_values(&["master_refused", reason.as_str()])
            .inc();
    }
    Ok(())
}

fn scope_kind(s: &str) -> Option<lockstep_domain::master::MasterScopeKind> {
    use lockstep_domain::master::MasterScopeKind as K;
    Some(match s {
        "room" => K::Room,
        "floor" => K::Floor,
        "rooms_assigned" => K::RoomsAssigned,
        "rooms_all" => K::RoomsAll,
        "areas" => K::Areas,
        "areas_all" => K::AreasAll,
        "back_of_house" => K::BackOfHouse,
        _ => return None,
    })
}

/// What the doors of a resolved master scope can do together: the rooms' adapters as for
/// any credential, and every adapter of the areas' doors (a master has one kind, which
/// every door must take).
async fn master_capabilities(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    resolved: &lockstep_domain::master::ResolvedScope,
) -> Result<LockCapabilities, StepError> {
    let mut caps = (!resolved.rooms.is_empty())
        .then_some(capabilities(rt, db, entry, &resolved.rooms, None).await?);
    let area_doors = db
        .devices_for_areas(entry.tenant_id, &entry.property_id, &resolved.areas)
        .await?;
    let mut seen: Vec<&VendorAdapterId> = Vec::new();
    for d in &area_doors {
        if seen.contains(&&d.vendor_adapter_id) {
            continue;
        }
        seen.push(&d.vendor_adapter_id);
        let c = rt
            .ports
            .port(&d.vendor_adapter_id)
            .map(|p| p.capabilities())
            .unwrap_or_default();
        caps = Some(match caps {
            Some(prev) => intersection(prev, c),
            None => c,
        });
    }
    Ok(caps.unwrap_or_default())
}

fn intersection(a: LockCapabilities, b: LockCapabilities) -> LockCapabilities {
    LockCapabilities {
        mobile_key: a.mobile_key && b.mobile_key,
        card_encoding: a.card_encoding && b.card_encoding,
        pin: a.pin && b.pin,
        qr: a.qr && b.qr,
        nfc: a.nfc && b.nfc,
        remote_revoke: a.remote_revoke && b.remote_revoke,
        remote_issue: a.remote_issue && b.remote_issue,
        offline_issuance: a.offline_issuance && b.offline_issuance,
        scope_floors: a.scope_floors && b.scope_floors,
        scope_areas: a.scope_areas && b.scope_areas,
    }
}
