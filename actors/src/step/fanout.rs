//! Property- and user-wide events: each live credential's owning subject is sent an
//! internal revoke, and carries it out in its own step (`revoke_one`, also the expiry
//! timer's).

use lockstep_domain::operator::{self, StepDecision};
use lockstep_domain::outcome::StepOutcome;
use lockstep_domain::{
    CredentialFacts, KeyCredentialId, OperatorCommand, ReservationId, RevokeReason, SagaSubject,
    ShiftId, UserId,
};
use serde_json::json;
use tracing::warn;

use crate::db::StepDb;
use crate::runtime::Runtime;

use super::credential::{fail_mid_flight, revoke};
use super::{done, internal_event, observe, unit, Entry, InternalTopic, StepError, Touched};

/// `tenant.property.deactivated`: every live credential of the property is revoked
/// (`security`), each by the saga that owns it.
pub(super) async fn property_deactivated(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let live = db
        .credentials_of_property(
            entry.tenant_id,
            &entry.property_id,
            &["requested", "pending", "active", "suspended"],
        )
        .await?;
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    for c in &live {
        let Some(subject) = owner(&c.id, c.reservation_id.as_deref(), c.shift_id.as_deref()) else {
            continue;
        };
        uow.events.push(internal_event(
            entry,
            &subject,
            InternalTopic::Command(OperatorCommand::Revoke),
            json!({ "credentialId": c.id.as_str(), "reason": "security" }),
            now,
        ));
    }
    uow.mailbox
        .push(done(entry, StepOutcome::FannedOut(live.len())));
    db.commit(uow).await?;
    rt.metrics
        .saga_steps
        .with_label_values(&["property_deactivated", "applied"])
        .inc();
    Ok(())
}

/// The subject that owns a stored credential: its stay's, else its shift's; `None` for
/// one no saga owns. The ids were parsed before they were stored; one that no longer
/// parses is logged and skipped.
fn owner(
    credential: &KeyCredentialId,
    reservation: Option<&str>,
    shift: Option<&str>,
) -> Option<SagaSubject> {
    let subject = match (reservation, shift) {
        (Some(r), _) => ReservationId::parse(r).map(SagaSubject::Reservation),
        (None, Some(s)) => ShiftId::parse(s).map(SagaSubject::Shift),
        (None, None) => return None,
    };
    subject
        .inspect_err(|e| {
            warn!(credential = %credential, error = %e, "stored owner of a credential does not parse: no revoke sent to it");
        })
        .ok()
}

/// `iam.user.deactivated`, already fanned out to this property: each of the user's live
/// masters here is revoked by its shift's saga.
pub(super) async fn user_deactivated(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    user: &UserId,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let masters = db
        .active_masters_of_user(entry.tenant_id, user.as_str())
        .await?;
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let mut n = 0;
    for m in masters
        .iter()
        .filter(|m| m.property_id == entry.property_id)
    {
        let Some(subject) = owner(&m.key_credential_id, None, m.shift_id.as_deref()) else {
            continue;
        };
        n += 1;
        uow.events.push(internal_event(
            entry,
            &subject,
            InternalTopic::Command(OperatorCommand::Revoke),
            json!({ "credentialId": m.key_credential_id.as_str(), "reason": "security", "userId": user.as_str() }),
            now,
        ));
    }
    uow.mailbox.push(done(entry, StepOutcome::FannedOut(n)));
    db.commit(uow).await?;
    rt.metrics
        .saga_steps
        .with_label_values(&["user_deactivated", "applied"])
        .inc();
    Ok(())
}

/// An internal revoke on behalf of a property- or user-wide event, an operator or the
/// expiry timer, in the owning subject; the domain's revoke rule says what it does.
pub(super) async fn revoke_one(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    id: &KeyCredentialId,
    reason: RevokeReason,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let mut touched = Touched::default();
    let facts = match touched.get(db, entry.tenant_id, id).await? {
        Some(i) => Some(CredentialFacts::of(&touched.creds[i].0)),
        None => None,
    };
    match operator::decide(OperatorCommand::Revoke, facts.as_ref()) {
        StepDecision::FailMidFlight => {
            fail_mid_flight(db, entry, &mut uow, &mut touched, id).await?
        }
        StepDecision::Apply => {
            revoke(db, entry, &mut uow, &mut touched, id, reason, None).await?;
        }
        StepDecision::Nothing | StepDecision::Reject(_) => {}
    }
    for (c, _) in &touched.creds {
        if c.is_terminal() {
            observe(entry, c, &mut uow);
        }
    }
    touched
        .finish(rt, db, entry, uow, "internal_revoke", StepOutcome::Applied)
        .await
}
