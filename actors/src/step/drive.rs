//! The drive: a credential's per-device vendor operations, one vendor call and one commit
//! at a time. What to do at which door is `domain::door_sync`'s plan (removals first, a
//! lookup before any retry of a call that may have landed (DESIGN §3.4), the attempt cap,
//! PIN collisions, activation); here it is carried out: the vendor calls, their answers,
//! the commits, the yields to waiting events, the outage fallback, and the failure (with
//! its compensation) when the budget is spent.

use lockstep_domain::door_sync::{
    self, BeforeIssue, DoorPlan, DoorRow, DoorSync, PinCollision, Removal,
};
use lockstep_domain::outcome::StepOutcome;
use lockstep_domain::{
    DeviceRef, FailureReason, KeyCredential, KeyCredentialId, KeyCredentialState, Pin,
    VendorAdapterId, VendorRef,
};
use lockstep_persistence::{
    CredentialDevice, CredentialWrite, Desired, DeviceSyncWrite, MailboxEntry, MailboxKind,
    SyncState,
};
use lockstep_vendors::{IssueRequest, VendorError};
use serde_json::json;

use crate::db::StepDb;
use crate::runtime::Runtime;
use crate::vendor::{VendorOp, VendorReply};

use super::credential::plan_removal;
use super::reservation::observe_inline;
use super::routing::outage_fallback;
use super::{audit, domain_err, done, flush_events, observe, unit, Entry, StepError};

/// Drives a credential's per-device vendor operations until every device agrees with what
/// is desired, one vendor call and one commit at a time; removals before issuances.
pub(super) async fn drive(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    credential_id: &KeyCredentialId,
) -> Result<(), StepError> {
    let mut first = true;
    // A fresh intent of this drain: committed with the decision, never sent. The drive
    // calls the vendor with what the decision knew, without reading or committing first.
    let mut carried = db.take_fresh(credential_id);
    let mut fresh_devices: std::collections::HashSet<lockstep_domain::LockDeviceId> = carried
        .as_ref()
        .map(|(_, ds)| ds.iter().map(|d| d.device_id.clone()).collect())
        .unwrap_or_default();
    loop {
        // Between vendor calls the drive yields to a waiting event, and stops when the node
        // drains (SIGTERM): the entry stays open and due, and resumes after the event or on
        // the partition's next owner.
        if !first && (rt.work.is_draining() || event_waiting(rt, db, entry).await?) {
            return Ok(());
        }
        first = false;
        let now = rt.clock.now();
        let fence = rt.fences.for_commit(entry.partition);
        let (mut cred, devices) = match carried.take() {
            Some(known) => known,
            None => {
                let Some(cred) = db.get_credential(entry.tenant_id, credential_id).await? else {
                    let mut uow = unit(entry, fence, now);
                    uow.mailbox.push(done(entry, StepOutcome::Missing));
                    db.commit(uow).await?;
                    return Ok(());
                };
                let devices = db
                    .credential_devices(entry.tenant_id, credential_id)
                    .await?;
                (cred, devices)
            }
        };
        let expected = cred.version();
        let rows: Vec<DoorRow<'_>> = devices.iter().map(door_row).collect();
        let Some(next) = door_sync::next_door(&rows) else {
            // Everything agrees: activate a pending credential whose devices all hold it.
            let mut uow = unit(entry, fence, now);
            if door_sync::activates(cred.state(), &rows, None) {
                cred.mark_active(now).map_err(domain_err)?;
                observe(entry, &cred, &mut uow);
                flush_events(&mut cred, &mut uow);
                uow.credentials.push(CredentialWrite {
                    snapshot: cred.snapshot(),
                    expected_version: Some(expected),
                });
            }
            uow.mailbox.push(done(entry, StepOutcome::Applied));
            db.commit(uow).await?;
            rt.metrics
                .saga_steps
                .with_label_values(&["drive", "applied"])
                .inc();
            return Ok(());
        };
        let (d, row) = (&devices[next], &rows[next]);
        let adapter = d.vendor_adapter_id.clone();
        let req = issue_request(&cred, d);
        let mut uow = unit(entry, fence, now);
        let mut w = DeviceSyncWrite::from_current(d);
        let plan = door_sync::plan_door(row, cred.state());
        if let DoorPlan::Remove(removal) = plan {
            let vref = match removal {
                Removal::Delete => d.vendor_ref.clone(),
                // a previous issue attempt may have reached the vendor: look first
                Removal::FindThenDelete => {
                    vendor_find(rt, db, &adapter, &req).await.map_err(retry)?
                }
                Removal::NothingThere => None,
            };
            if let Some(v) = &vref {
                match vendor_revoke(rt, db, &adapter, &d.device_ref, v).await {
                    Ok(()) | Err(VendorError::NotFound) => {}
                    Err(e) => return Err(retry(e)),
                }
            }
            w.desired = Desired::Absent;
            w.sync = SyncState::Confirmed;
            w.last_error = None;
            if let Some(learned) = d.removal_requested_at {
                // the stale-key window: learned it must go → the vendor confirmed it gone
                rt.metrics
                    .stale_key_window_seconds
                    .with_label_values(&[cred.vendor().as_str()])
                    .observe((now - learned).num_milliseconds().max(0) as f64 / 1000.0);
            }
            let mut row = audit(
                &cred,
                "vendor_removed",
                None,
                now,
                json!({ "found": vref.is_some() }),
            );
            row.device_id = Some(d.device_id.clone());
            uow.audit.push(row);
            uow.devices.push(w);
            db.commit(uow).await?;
            continue;
        }
        // An object the vendor holds already: move its window (dates changed).
        if let (DoorPlan::Update, Some(v)) = (plan, &d.vendor_ref) {
            match vendor_update(rt, db, &adapter, &req, v).await {
                Ok(()) => {
                    w.sync = SyncState::Confirmed;
                    w.last_error = None;
                    uow.devices.push(w);
                    db.commit(uow).await?;
                    continue;
                }
                // Gone at the vendor (removed while suspended): create it again below.
                Err(VendorError::NotFound) => {}
                Err(e) => return Err(retry(e)),
            }
        }
        // A fresh intent was committed with the decision and never sent.
        let fresh = fresh_devices.remove(&d.device_id);
        // Reconcile before retrying: a call that may have landed is looked up first.
        if door_sync::issue_lookup(row, fresh) {
            match vendor_find(rt, db, &adapter, &req).await {
                Ok(Some(v)) => {
                    w.vendor_ref = Some(v);
                    w.sync = SyncState::Confirmed;
                    w.last_error = None;
                    uow.devices.push(w);
                    db.commit(uow).await?;
                    continue;
                }
                Ok(None) => {}
                // The vendor cannot even be asked: a down vendor may send the stay down
                // the fallback chain; whatever the earlier attempt left at the door is
                // then removed by the failed credential's door truth on recovery.
                Err(e) => {
                    if outage_fallback(rt, db, entry, &cred, &adapter).await? {
                        refail(
                            rt,
                            db,
                            entry,
                            credential_id,
                            FailureReason::VendorUnreachable,
                        )
                        .await?;
                        continue;
                    }
                    return Err(retry(e));
                }
            }
        }
        let commit_intent = match door_sync::before_issue(
            rt.ports.addition_gate(&adapter),
            d.attempts,
            rt.settings.max_issue_attempts,
            cred.state(),
            fresh,
        ) {
            BeforeIssue::Call { commit_intent } => commit_intent,
            // Something new for the door waits while the account drains its removals or is
            // held (DESIGN §7); asked before an attempt is committed, so it costs none.
            BeforeIssue::Park(why) => {
                if fresh {
                    // the decision's intent was never sent: its attempt is given back
                    w.attempts -= 1;
                    uow.devices.push(w);
                    db.commit(uow).await?;
                }
                if outage_fallback(rt, db, entry, &cred, &adapter).await? {
                    refail(
                        rt,
                        db,
                        entry,
                        credential_id,
                        FailureReason::VendorUnreachable,
                    )
                    .await?;
                    continue;
                }
                return Err(StepError::Parked(why));
            }
            // The issue's budget is spent: fail and clean up (failed.v1). It counts attempts
            // that reached the vendor and failed there, not waits behind an open breaker or
            // a held account, nor time (a 12-hour outage costs no budget).
            BeforeIssue::BudgetSpent => {
                fail_credential(
                    rt,
                    db,
                    entry,
                    &mut cred,
                    expected,
                    &devices,
                    FailureReason::VendorUnreachable,
                )
                .await?;
                continue;
            }
        };
        // Commit the intent (and requested → pending) before the call, unless the
        // decision committed it.
        let mut expected = expected;
        if commit_intent {
            if cred.state() == KeyCredentialState::Requested {
                cred.mark_pending(now).map_err(domain_err)?;
                uow.credentials.push(CredentialWrite {
                    snapshot: cred.snapshot(),
                    expected_version: Some(expected),
                });
                expected = cred.version();
            }
            w.attempts += 1;
            uow.devices.push(w.clone());
            db.commit(uow).await?;
        }
        let fresh = || unit(entry, rt.fences.for_commit(entry.partition), rt.clock.now());
        match vendor_issue(rt, db, &adapter, &req).await {
            Ok(vref) => {
                rt.failpoints.after_vendor_issue().await;
                let mut uow = fresh();
                w.vendor_ref = Some(vref);
                w.sync = SyncState::Confirmed;
                w.last_error = None;
                let device = w.device_id.clone();
                uow.devices.push(w);
                // The last device the credential waited for: it becomes active in the same
                // commit, unless an event waits (a cancel that came meanwhile is recorded
                // before activation, DESIGN §3.5).
                let last = door_sync::activates(cred.state(), &rows, Some(&device));
                if last && !event_waiting(rt, db, entry).await? {
                    cred.mark_active(uow.now).map_err(domain_err)?;
                    if !observe_inline(rt, db, entry, &cred, &mut uow).await? {
                        observe(entry, &cred, &mut uow);
                    }
                    flush_events(&mut cred, &mut uow);
                    uow.credentials.push(CredentialWrite {
                        snapshot: cred.snapshot(),
                        expected_version: Some(expected),
                    });
                    uow.mailbox.push(done(entry, StepOutcome::Applied));
                    db.commit(uow).await?;
                    rt.metrics
                        .saga_steps
                        .with_label_values(&["drive", "applied"])
                        .inc();
                    return Ok(());
                }
                db.commit(uow).await?;
            }
            Err(VendorError::PinCollision) => {
                let mut uow = fresh();
                w.pin_collisions += 1;
                if door_sync::after_pin_collision(w.pin_collisions) == PinCollision::Exhausted {
                    uow.devices.push(w);
                    db.commit(uow).await?;
                    refail(
                        rt,
                        db,
                        entry,
                        credential_id,
                        FailureReason::PinCollisionExhausted,
                    )
                    .await?;
                } else {
                    // The refused call created nothing: a fresh PIN, attempts reset.
                    w.pin = Some(Pin::generate(Pin::DEFAULT_LEN));
                    w.attempts = 0;
                    uow.devices.push(w);
                    db.commit(uow).await?;
                }
            }
            Err(e) if parks(&e).is_some() => {
                // Nothing was tried at the door (not sent, or the account is refused as a
                // whole): the attempt committed above is given back.
                let mut uow = fresh();
                w.attempts -= 1;
                w.last_error = Some(e.to_string());
                uow.devices.push(w);
                db.commit(uow).await?;
                if outage_fallback(rt, db, entry, &cred, &adapter).await? {
                    refail(
                        rt,
                        db,
                        entry,
                        credential_id,
                        FailureReason::VendorUnreachable,
                    )
                    .await?;
                    continue;
                }
                return Err(retry(e));
            }
            Err(e) if e.is_retryable() => {
                // Door truth shows why it is still pending.
                let mut uow = fresh();
                w.last_error = Some(e.to_string());
                uow.devices.push(w);
                db.commit(uow).await?;
                if outage_fallback(rt, db, entry, &cred, &adapter).await? {
                    refail(
                        rt,
                        db,
                        entry,
                        credential_id,
                        FailureReason::VendorUnreachable,
                    )
                    .await?;
                    continue;
                }
                return Err(retry(e));
            }
            Err(_) => refail(rt, db, entry, credential_id, FailureReason::VendorRefused).await?,
        }
    }
}

/// Whether a consumed event for this subject is waiting: the drive then yields between
/// vendor calls, so a cancellation that arrives while an issue is in flight is recorded
/// before the credential could become active (DESIGN §3.5).
async fn event_waiting(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
) -> Result<bool, StepError> {
    Ok(matches!(
        db.next_mailbox_entry(entry.tenant_id, entry.key(), rt.clock.now())
            .await?,
        Some(MailboxEntry {
            kind: MailboxKind::Event { .. },
            ..
        })
    ))
}

async fn refail(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    id: &KeyCredentialId,
    reason: FailureReason,
) -> Result<(), StepError> {
    let mut cred = db
        .get_credential(entry.tenant_id, id)
        .await?
        .ok_or_else(|| StepError::Retry("credential vanished".into()))?;
    let expected = cred.version();
    if cred.state() == KeyCredentialState::Active {
        // An update of an active credential was refused: the door keeps its old window.
        return Ok(());
    }
    let devices = db.credential_devices(entry.tenant_id, id).await?;
    fail_credential(rt, db, entry, &mut cred, expected, &devices, reason).await
}

/// Fails the credential and removes it from every device that may hold it (compensation).
async fn fail_credential(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    cred: &mut KeyCredential,
    expected: i64,
    devices: &[CredentialDevice],
    reason: FailureReason,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    cred.mark_failed(reason, now).map_err(domain_err)?;
    plan_removal(devices, &mut uow, false);
    observe(entry, cred, &mut uow);
    flush_events(cred, &mut uow);
    uow.credentials.push(CredentialWrite {
        snapshot: cred.snapshot(),
        expected_version: Some(expected),
    });
    db.commit(uow).await?;
    Ok(())
}

/// A door-truth row as the door-sync plan reads it.
fn door_row(d: &CredentialDevice) -> DoorRow<'_> {
    DoorRow {
        device: &d.device_id,
        present: d.desired == Desired::Present,
        sync: match d.sync {
            SyncState::Pending => DoorSync::Pending,
            SyncState::Confirmed => DoorSync::Confirmed,
            SyncState::Failed => DoorSync::Failed,
        },
        attempts: d.attempts,
        has_vendor_ref: d.vendor_ref.is_some(),
    }
}

fn issue_request(cred: &KeyCredential, d: &CredentialDevice) -> IssueRequest {
    IssueRequest {
        device: d.device_ref.clone(),
        kind: cred.kind(),
        label: cred.id().as_str().to_owned(),
        pin: d.pin.clone(),
        // Card numbers come from the desk reader with the encoder relay; until then an
        // `rfid_card` at a vendor that registers cards by number is refused there
        // (`missing_card_number`), and one a desk encoder writes needs none.
        card_number: None,
        validity: cred.validity(),
    }
}

fn unexpected(op: &str) -> VendorError {
    VendorError::Unavailable {
        detail: format!("unexpected reply to {op}"),
    }
}

async fn vendor_find(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    adapter: &VendorAdapterId,
    req: &IssueRequest,
) -> Result<Option<VendorRef>, VendorError> {
    // never hold the step's transaction while the vendor answers
    db.release().await.map_err(|e| VendorError::Unavailable {
        detail: format!("store: {e}"),
    })?;
    match rt.ports.call(adapter, VendorOp::Find(req.clone())).await? {
        VendorReply::Found(v) => Ok(v),
        _ => Err(unexpected("find")),
    }
}

async fn vendor_issue(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    adapter: &VendorAdapterId,
    req: &IssueRequest,
) -> Result<VendorRef, VendorError> {
    // never hold the step's transaction while the vendor answers
    db.release().await.map_err(|e| VendorError::Unavailable {
        detail: format!("store: {e}"),
    })?;
    match rt.ports.call(adapter, VendorOp::Issue(req.clone())).await? {
        VendorReply::Issued(v) => Ok(v),
        _ => Err(unexpected("issue")),
    }
}

async fn vendor_update(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    adapter: &VendorAdapterId,
    req: &IssueRequest,
    vref: &VendorRef,
) -> Result<(), VendorError> {
    // never hold the step's transaction while the vendor answers
    db.release().await.map_err(|e| VendorError::Unavailable {
        detail: format!("store: {e}"),
    })?;
    match rt
        .ports
        .call(adapter, VendorOp::Update(req.clone(), vref.clone()))
        .await?
    {
        VendorReply::Done => Ok(()),
        _ => Err(unexpected("update")),
    }
}

async fn vendor_revoke(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    adapter: &VendorAdapterId,
    device: &DeviceRef,
    vref: &VendorRef,
) -> Result<(), VendorError> {
    // never hold the step's transaction while the vendor answers
    db.release().await.map_err(|e| VendorError::Unavailable {
        detail: format!("store: {e}"),
    })?;
    match rt
        .ports
        .call(adapter, VendorOp::Revoke(device.clone(), vref.clone()))
        .await?
    {
        VendorReply::Done => Ok(()),
        _ => Err(unexpected("revoke")),
    }
}

/// A vendor error as the step's outcome: waits that tried nothing park the entry; the
/// rest retry it.
fn retry(e: VendorError) -> StepError {
    match parks(&e) {
        Some(why) => StepError::Parked(why),
        None => StepError::Retry(e.to_string()),
    }
}

/// Whether an error says the call waits for the vendor or its account rather than having
/// failed: not sent by the gate in front of the vendor, or refused for the account as a
/// whole (held until fixed, DESIGN §7). Such a call costs the credential no attempt.
fn parks(e: &VendorError) -> Option<&'static str> {
    match e {
        VendorError::NotSent { reason } => Some(reason),
        e if e.is_account_level() => Some("account_held"),
        _ => None,
    }
}
