//! The reservation saga's step: a consumed reservation event (or one of its timers and
//! observations) decided by `domain::saga::decide` and carried out in one unit of work.

use lockstep_domain::outcome::StepOutcome;
use lockstep_domain::saga::{
    self, Decision, ReservationEvent, ReservationSaga, SagaCommand, SagaContext,
};
use lockstep_domain::{
    FailureReason, KeyCredential, KeyCredentialId, ReservationId, RevokeReason, RoomId, SagaSubject,
};
use lockstep_persistence::{AuditRow, StoreError, UnitOfWork};
use serde_json::json;
use tracing::warn;

use crate::db::StepDb;
use crate::runtime::Runtime;
use crate::saga_codec;

use super::credential::{fail_mid_flight, issue, revoke, suspend, update, Holder, Intent};
use super::routing::{capabilities, policy};
use super::{done, internal_event, unit, Entry, InternalTopic, StepError, Touched};

pub(super) async fn reservation_step(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    reservation_id: &ReservationId,
    event: ReservationEvent,
    trace_id: Option<String>,
    label: &'static str,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let state = match db.load_saga(entry.tenant_id, entry.key()).await? {
        Some(v) => {
            saga_codec::reservation_from_json(&v).map_err(|e| StepError::Retry(e.to_string()))?
        }
        None => ReservationSaga::default(),
    };
    let mut state = state;
    // Decide on the truth: the credential's stored state, absorbed forward-only.
    if let Some(tracked) = state.credential.clone() {
        if let Some(c) = db.get_credential(entry.tenant_id, &tracked.id).await? {
            state.observe(c.id(), c.state(), c.failure_reason());
        }
    }
    let rooms: Vec<RoomId> = match &event {
        ReservationEvent::Confirmed { rooms, .. } => rooms.clone(),
        ReservationEvent::DatesChanged { rooms: Some(r), .. } => r.clone(),
        _ => state
            .rooms
            .as_ref()
            .map(|r| r.value.clone())
            .unwrap_or_default(),
    };
    let policy = policy(rt, db, entry).await?;
    // Outage fallback (DESIGN §7): the adapter whose vendor kept the last key waiting until
    // it failed unreachable counts as down for the kind that replaces it.
    let avoid = match &state.credential {
        Some(t) if t.failure_reason == Some(FailureReason::VendorUnreachable) => db
            .get_credential(entry.tenant_id, &t.id)
            .await?
            .map(|c| c.vendor_adapter_id().clone()),
        _ => None,
    };
    let ctx = SagaContext {
        policy: &policy,
        caps: capabilities(rt, db, entry, &rooms, avoid.as_ref()).await?,
        // No ID-document service feeds Lockstep yet: kinds that need one are not chosen.
        id_verified: false,
        new_credential_id: KeyCredentialId::generate(),
    };
    // Keys a desk minted offline for this stay (materialized by the reconciler, issue 12)
    // are not the saga's own: they leave with the stay all the same.
    let provisional_reason = match &event {
        ReservationEvent::Cancelled { .. } => Some(RevokeReason::Cancellation),
        ReservationEvent::CheckedOut { .. } => Some(RevokeReason::Checkout),
        ReservationEvent::FraudFlagged { .. } => Some(RevokeReason::Security),
        _ => None,
    };
    let provisional: Vec<KeyCredentialId> = match provisional_reason {
        Some(_) => db
            .credentials_by_reservation(entry.tenant_id, reservation_id)
            .await?
            .into_iter()
            .filter(|c| c.provisional() && !c.is_terminal())
            .map(|c| c.id().clone())
            .collect(),
        None => Vec::new(),
    };
    let fence = rt.fences.for_commit(entry.partition);
    let (next, commands) = match saga::decide(&state, &event, &ctx) {
        Decision::Ignore(why) => {
            let mut uow = unit(entry, fence, now);
            if let Some(reason) = provisional_reason {
                // the saga's own key is gone already; the desk's may not be
                let mut touched = Touched::default();
                for id in &provisional {
                    revoke(
                        db,
                        entry,
                        &mut uow,
                        &mut touched,
                        id,
                        reason,
                        trace_id.clone(),
                    )
                    .await?;
                }
                touched.into_uow(&mut uow);
            }
            uow.mailbox.push(done(entry, StepOutcome::Ignored(why)));
            db.commit(uow).await?;
            rt.metrics
                .saga_steps
                .with_label_values(&[label, "ignored"])
                .inc();
            return Ok(());
        }
        Decision::Apply { next, commands } => (next, commands),
    };
    // A commit refused by I-9 is redone with the new credential failed as `room_conflict`.
    let mut conflicted: Option<KeyCredentialId> = None;
    loop {
        let mut uow = unit(entry, fence, now);
        let mut touched = Touched::default();
        let mut issued = None;
        if let Some(reason) = provisional_reason {
            for id in &provisional {
                revoke(
                    db,
                    entry,
                    &mut uow,
                    &mut touched,
                    id,
                    reason,
                    trace_id.clone(),
                )
                .await?;
            }
        }
        for cmd in &commands {
            match cmd {
                SagaCommand::Issue {
                    credential_id,
                    kind,
                    guest_id,
                    rooms,
                    validity,
                    replaces,
                } => {
                    let intent = Intent {
                        id: credential_id.clone(),
                        holder: Holder::Guest {
                            reservation_id: reservation_id.clone(),
                            guest_id: guest_id.clone(),
                        },
                        kind: *kind,
                        rooms: rooms.clone(),
                        scope: Default::default(),
                        validity: *validity,
                        replaces: replaces.clone(),
                        trace_id: trace_id.clone(),
                        idempotency_key: format!("{}:{}", entry.key(), credential_id),
                        avoid: avoid.clone(),
                    };
                    let force_fail = (conflicted.as_ref() == Some(credential_id))
                        .then_some(FailureReason::RoomConflict);
                    issue(db, entry, &mut uow, &mut touched, intent, force_fail).await?;
                    issued = Some(credential_id.clone());
                }
                SagaCommand::Update {
                    credential_id,
                    valid_until,
                    rooms,
                } => {
                    update(
                        db,
                        entry,
                        &mut uow,
                        &mut touched,
                        credential_id,
                        *valid_until,
                        rooms,
                    )
                    .await?;
                }
                SagaCommand::Suspend {
                    credential_id,
                    reason,
                } => {
                    suspend(db, entry, &mut uow, &mut touched, credential_id, *reason).await?;
                }
                SagaCommand::Revoke {
                    credential_id,
                    reason,
                } => {
                    revoke(
                        db,
                        entry,
                        &mut uow,
                        &mut touched,
                        credential_id,
                        *reason,
                        trace_id.clone(),
                    )
                    .await?;
                }
                SagaCommand::FailCancelledMidFlight { credential_id } => {
                    fail_mid_flight(db, entry, &mut uow, &mut touched, credential_id).await?;
                }
                SagaCommand::ScheduleNoShowSuspend { after_hours, .. } => {
                    let due = now + chrono::Duration::hours(*after_hours);
                    uow.events.push(internal_event(
                        entry,
                        &entry.subject,
                        InternalTopic::NoShowDue,
                        json!({}),
                        due,
                    ));
                }
                SagaCommand::EscortRequired { reason } => {
                    warn!(subject = %entry.subject, reason = reason.as_str(), "no key kind left: manual escort required");
                    rt.metrics
                        .saga_steps
                        .with_label_values(&["escort_required", reason.as_str()])
                        .inc();
                    uow.audit.push(AuditRow {
                        id: ulid::Ulid::new().to_string(),
                        tenant_id: entry.tenant_id,
                        property_id: entry.property_id.clone(),
                        credential_id: None,
                        device_id: None,
                        actor_kind: "saga".into(),
                        action: "escort_required".into(),
                        reason: Some(reason.as_str().into()),
                        vendor: None,
                        trace_id: trace_id.clone(),
                        created_at: now,
                        payload: json!({ "subject": entry.key() }),
                    });
                }
            }
        }
        touched.into_uow(&mut uow);
        uow.saga = Some((
            entry.key().to_owned(),
            saga_codec::reservation_to_json(&next),
        ));
        uow.mailbox.push(done(entry, StepOutcome::Applied));
        match db.commit(uow).await {
            Ok(()) => break,
            Err(StoreError::Overlap) if conflicted.is_none() && issued.is_some() => {
                conflicted = issued;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    rt.metrics
        .saga_steps
        .with_label_values(&[label, "applied"])
        .inc();
    Ok(())
}

/// Tells the reservation saga in the same commit that its credential became active, when
/// that changes nothing but the saga's own record (the common case): the observation costs
/// no mailbox round trip. `false` when the saga would act on it (an update or suspension
/// decided while the key was on its way): the caller then sends the observation through
/// the mailbox, where the saga's step carries its commands out.
pub(super) async fn observe_inline(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    c: &KeyCredential,
    uow: &mut UnitOfWork,
) -> Result<bool, StepError> {
    let SagaSubject::Reservation(_) = entry.subject else {
        return Ok(true);
    };
    let Some(v) = db.load_saga(entry.tenant_id, entry.key()).await? else {
        return Ok(false);
    };
    let state =
        saga_codec::reservation_from_json(&v).map_err(|e| StepError::Retry(e.to_string()))?;
    let policy = policy(rt, db, entry).await?;
    let ctx = SagaContext {
        policy: &policy,
        caps: capabilities(rt, db, entry, c.rooms(), None).await?,
        id_verified: false,
        new_credential_id: KeyCredentialId::generate(),
    };
    let event = ReservationEvent::CredentialObserved {
        credential_id: c.id().clone(),
        state: c.state(),
        failure_reason: c.failure_reason(),
    };
    match saga::decide(&state, &event, &ctx) {
        Decision::Ignore(_) => Ok(true),
        Decision::Apply { next, commands } if commands.is_empty() => {
            uow.saga = Some((
                entry.key().to_owned(),
                saga_codec::reservation_to_json(&next),
            ));
            Ok(true)
        }
        Decision::Apply { .. } => Ok(false),
    }
}

/// The reservation saga of `entry`'s subject (a new one when none is stored yet), or
/// `None` when the subject is not a stay (a shift's master key).
pub(super) async fn reservation_saga(
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
) -> Result<Option<ReservationSaga>, StepError> {
    let SagaSubject::Reservation(_) = entry.subject else {
        return Ok(None);
    };
    Ok(Some(
        match db.load_saga(entry.tenant_id, entry.key()).await? {
            Some(v) => saga_codec::reservation_from_json(&v)
                .map_err(|e| StepError::Retry(e.to_string()))?,
            None => ReservationSaga::default(),
        },
    ))
}
