//! Operator commands (spec `003` §1.3: update, suspend, unsuspend, lost-key replace) and
//! the re-issues asked for by drift (a key missing at a device) and by the offline
//! reconciler (O-2), each carried out in the owning subject's step.

use lockstep_domain::operator::{self, Rejection, StepDecision};
use lockstep_domain::outcome::StepOutcome;
use lockstep_domain::{
    CredentialFacts, KeyCredentialId, KeyCredentialState, OperatorCommand, RoomId, SuspendReason,
};
use lockstep_persistence::{Desired, DeviceSyncWrite, SyncState};

use crate::db::StepDb;
use crate::runtime::Runtime;
use crate::saga_codec;

use super::credential::{issue, revoke, schedule, suspend, update, Holder, Intent};
use super::reservation::reservation_saga;
use super::routing::policy;
use super::{credential_of_payload, domain_err, done, unit, Entry, StepError, Touched};

/// The outcome of a command the step does not carry out: its rejection, or `applied` when
/// there was nothing to do.
fn unchanged(decision: StepDecision) -> StepOutcome {
    match decision {
        StepDecision::Reject(r) => r.into(),
        _ => StepOutcome::Applied,
    }
}

/// Drift found the credential missing at a device: if it should still be there, its door
/// truth goes back to pending and the drive puts it back (same PIN; the vendor's update
/// answers NotFound and the drive issues it anew).
pub(super) async fn reissue_on_device(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let id = credential_of_payload(entry)?;
    let device = entry.payload["deviceId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let live = db
        .get_credential(entry.tenant_id, &id)
        .await?
        .is_some_and(|c| {
            matches!(
                c.state(),
                KeyCredentialState::Active | KeyCredentialState::Pending
            )
        });
    let mut outcome = StepOutcome::NotNeeded;
    if live {
        for d in db.credential_devices(entry.tenant_id, &id).await? {
            if d.device_id.as_str() == device
                && d.desired == Desired::Present
                && d.sync == SyncState::Confirmed
            {
                let mut w = DeviceSyncWrite::from_current(&d);
                w.sync = SyncState::Pending;
                uow.devices.push(w);
                schedule(entry, &mut uow, &id);
                outcome = StepOutcome::Applied;
            }
        }
    }
    uow.mailbox.push(done(entry, outcome));
    db.commit(uow).await?;
    Ok(())
}

/// An operator moves an active or suspended credential's end and/or rooms (spec `003`
/// §1.3 `update`). K-2 caps an extension at the policy's hours past the end the key was
/// first issued with (`rejected:k2`); other states are `rejected:invalid_state`.
pub(super) async fn operator_update(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let id = credential_of_payload(entry)?;
    let p = &entry.payload;
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let mut touched = Touched::default();
    let Some(i) = touched.get(db, entry.tenant_id, &id).await? else {
        let outcome = unchanged(operator::decide(OperatorCommand::Update, None));
        uow.mailbox.push(done(entry, outcome));
        db.commit(uow).await?;
        return Ok(());
    };
    let c = touched.creds[i].0.clone();
    let outcome = if let StepDecision::Reject(r) =
        operator::decide(OperatorCommand::Update, Some(&CredentialFacts::of(&c)))
    {
        r.into()
    } else {
        let valid_until = match p["validUntil"].as_str() {
            Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| StepError::Retry("validUntil is checked by the API".into()))?,
            None => c.validity().until(),
        };
        let rooms: Vec<RoomId> = match p["roomIds"].as_array() {
            Some(a) => a
                .iter()
                .map(|r| RoomId::parse(r.as_str().unwrap_or_default()))
                .collect::<Result<_, _>>()
                .map_err(domain_err)?,
            None => c.rooms().to_vec(),
        };
        let mut saga = reservation_saga(db, entry).await?;
        let issued_until = saga.as_ref().and_then(|s| s.issued_until_of(&id));
        let policy = policy(rt, db, entry).await?;
        if let Err(r) =
            operator::check_extension(&policy, issued_until, c.validity().until(), valid_until)
        {
            r.into()
        } else {
            update(db, entry, &mut uow, &mut touched, &id, valid_until, &rooms).await?;
            if let Some(s) = saga.as_mut() {
                if let Ok(w) =
                    lockstep_domain::ValidityWindow::new(c.validity().from(), valid_until)
                {
                    s.operator_updated(&id, w, rooms.clone());
                    uow.saga = Some((entry.key().to_owned(), saga_codec::reservation_to_json(s)));
                }
            }
            StepOutcome::Applied
        }
    };
    touched
        .finish(rt, db, entry, uow, "operator_update", outcome)
        .await
}

/// An operator suspends an active credential: it leaves the door (its PIN kept) until an
/// operator unsuspends it. Suspending a suspended one is a no-op; any other state is
/// refused (`rejected:invalid_state`).
pub(super) async fn operator_suspend(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let id = credential_of_payload(entry)?;
    let reason = SuspendReason::parse(entry.payload["reason"].as_str().unwrap_or("manual"))
        .map_err(domain_err)?;
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let mut touched = Touched::default();
    let facts = match touched.get(db, entry.tenant_id, &id).await? {
        Some(i) => Some(CredentialFacts::of(&touched.creds[i].0)),
        None => None,
    };
    let outcome = match operator::decide(OperatorCommand::Suspend, facts.as_ref()) {
        StepDecision::Apply => {
            suspend(db, entry, &mut uow, &mut touched, &id, reason).await?;
            StepOutcome::Applied
        }
        other => unchanged(other),
    };
    touched
        .finish(rt, db, entry, uow, "operator_suspend", outcome)
        .await
}

/// An operator unsuspends a credential: it returns to the door (its PIN kept), and the
/// reservation's saga stops holding it back.
pub(super) async fn operator_unsuspend(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let id = credential_of_payload(entry)?;
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let mut touched = Touched::default();
    let found = touched.get(db, entry.tenant_id, &id).await?;
    let facts = found.map(|i| CredentialFacts::of(&touched.creds[i].0));
    let outcome = match (
        operator::decide(OperatorCommand::Unsuspend, facts.as_ref()),
        found,
    ) {
        (StepDecision::Apply, Some(i)) => {
            touched.creds[i].0.unsuspend(now).map_err(domain_err)?;
            for d in db.credential_devices(entry.tenant_id, &id).await? {
                let mut w = DeviceSyncWrite::from_current(&d);
                w.desired = Desired::Present;
                w.sync = SyncState::Pending;
                uow.devices.push(w);
            }
            schedule(entry, &mut uow, &id);
            if let Some(mut saga) = reservation_saga(db, entry).await? {
                saga.operator_unsuspended(&id);
                uow.saga = Some((
                    entry.key().to_owned(),
                    saga_codec::reservation_to_json(&saga),
                ));
            }
            StepOutcome::Applied
        }
        (other, _) => unchanged(other),
    };
    touched
        .finish(rt, db, entry, uow, "operator_unsuspend", outcome)
        .await
}

/// Lost-key replace: the old credential is revoked (`lost`) and a new one of the same kind,
/// rooms and window is issued, in one unit of work, with lineage both ways (I-4,
/// `linkReplacement`); the reservation's saga follows the new one.
pub(super) async fn operator_replace(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let id = credential_of_payload(entry)?;
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let mut touched = Touched::default();
    let found = touched.get(db, entry.tenant_id, &id).await?;
    let old = found.map(|i| touched.creds[i].0.clone());
    let facts = old.as_ref().map(CredentialFacts::of);
    let old = match (
        operator::decide(OperatorCommand::Replace, facts.as_ref()),
        old,
    ) {
        (StepDecision::Apply, Some(old)) => old,
        (other, _) => {
            uow.mailbox.push(done(entry, unchanged(other)));
            db.commit(uow).await?;
            return Ok(());
        }
    };
    let r = operator::replacement(&old, KeyCredentialId::generate(), entry.key())
        .map_err(|_| StepError::Retry("guest credential without reservation (I-2)".into()))?;
    revoke(
        db,
        entry,
        &mut uow,
        &mut touched,
        &id,
        r.revoke_reason,
        None,
    )
    .await?;
    let intent = Intent {
        id: r.id.clone(),
        holder: Holder::Guest {
            reservation_id: r.reservation_id.clone(),
            guest_id: r.guest_id.clone(),
        },
        kind: r.kind,
        rooms: r.rooms.clone(),
        scope: r.scope.clone(),
        validity: r.validity,
        replaces: Some(r.replaces.clone()),
        trace_id: None,
        idempotency_key: r.idempotency_key.clone(),
        avoid: None,
    };
    issue(db, entry, &mut uow, &mut touched, intent, None).await?;
    if let Some(mut saga) = reservation_saga(db, entry).await? {
        saga.adopt_replacement(&id, r.tracked());
        uow.saga = Some((
            entry.key().to_owned(),
            saga_codec::reservation_to_json(&saga),
        ));
    }
    touched
        .finish(rt, db, entry, uow, "operator_replace", StepOutcome::Applied)
        .await
}

/// O-2: a provisional credential revoked because the certificate that minted it was is
/// flagged for forced re-issue; this is the saga's online check. The stay gets a key of
/// the same kind for its rooms and window (the saga's, else the provisional's), through
/// the normal issue path, naming the revoked one as what it replaces, unless the stay
/// ended, the saga gave up, or the stay already holds a live key of the saga's own (one
/// live credential per stay).
pub(super) async fn reissue_provisional(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let id = credential_of_payload(entry)?;
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let mut touched = Touched::default();
    let outcome = |o: StepOutcome| {
        rt.metrics
            .saga_steps
            .with_label_values(&["reissue_provisional", &o.as_str()])
            .inc();
        o
    };
    let Some(i) = touched.get(db, entry.tenant_id, &id).await? else {
        uow.mailbox
            .push(done(entry, outcome(Rejection::UnknownCredential.into())));
        db.commit(uow).await?;
        return Ok(());
    };
    let old = touched.creds[i].0.clone();
    let (Some(reservation_id), Some(guest_id)) =
        (old.reservation_id().cloned(), old.guest_id().cloned())
    else {
        uow.mailbox
            .push(done(entry, outcome(StepOutcome::NotAStay)));
        db.commit(uow).await?;
        return Ok(());
    };
    if !old.provisional()
        || old.state() != KeyCredentialState::Revoked
        || old.replaced_by_id().is_some()
    {
        uow.mailbox
            .push(done(entry, outcome(StepOutcome::NotFlagged)));
        db.commit(uow).await?;
        return Ok(());
    }
    let Some(mut saga) = reservation_saga(db, entry).await? else {
        uow.mailbox
            .push(done(entry, outcome(StepOutcome::NotAStay)));
        db.commit(uow).await?;
        return Ok(());
    };
    if saga.ended.is_some() || saga.gave_up.is_some() {
        uow.mailbox
            .push(done(entry, outcome(StepOutcome::StayEnded)));
        db.commit(uow).await?;
        return Ok(());
    }
    let covered = saga.credential.as_ref().is_some_and(|t| {
        matches!(
            t.state,
            KeyCredentialState::Requested
                | KeyCredentialState::Pending
                | KeyCredentialState::Active
                | KeyCredentialState::Suspended
        )
    });
    if covered {
        uow.mailbox.push(done(entry, outcome(StepOutcome::Covered)));
        db.commit(uow).await?;
        return Ok(());
    }
    let rooms = saga
        .rooms
        .as_ref()
        .map(|r| r.value.clone())
        .unwrap_or_else(|| old.rooms().to_vec());
    let validity = saga
        .window
        .as_ref()
        .map(|w| w.value)
        .unwrap_or_else(|| old.validity());
    let new_id = KeyCredentialId::generate();
    let intent = Intent {
        id: new_id.clone(),
        holder: Holder::Guest {
            reservation_id,
            guest_id,
        },
        kind: old.kind(),
        rooms: rooms.clone(),
        scope: old.scope().clone(),
        validity,
        replaces: Some(id.clone()),
        trace_id: None,
        idempotency_key: format!("{}:reissue:{}", entry.key(), id),
        avoid: None,
    };
    issue(db, entry, &mut uow, &mut touched, intent, None).await?;
    saga.credential = Some(lockstep_domain::saga::TrackedCredential {
        id: new_id,
        kind: old.kind(),
        state: KeyCredentialState::Requested,
        failure_reason: None,
        validity,
        rooms,
        issued_until: validity.until(),
    });
    if !saga.tried_kinds.contains(&old.kind()) {
        saga.tried_kinds.push(old.kind());
    }
    uow.saga = Some((
        entry.key().to_owned(),
        saga_codec::reservation_to_json(&saga),
    ));
    touched.into_uow(&mut uow);
    uow.mailbox
        .push(done(entry, outcome(StepOutcome::Reissued)));
    db.commit(uow).await?;
    Ok(())
}
