//! Carries out one mailbox entry: a consumed event (decided by the domain sagas), one of a
//! saga's internal events (its timers and feedback), or a drive of a credential's vendor
//! operations. Every step ends in one [`Store::commit`]; every vendor call is preceded by a
//! commit of its intent (DESIGN §3.4) and, when a previous attempt may have reached the
//! vendor, by a reconcile (`find`) so a retry never creates a second credential at the door.
//!
//! Sagas are single writers of their subject (a reservation, a shift). Property- and
//! user-wide events never write another subject's credentials directly: they send each
//! owning subject an internal event, and its own actor carries it out.
//!
//! One file per saga, plus what they share: `reservation` (a stay's saga and its timers),
//! `shift` (a shift's master key), `operator` (operator commands and the re-issues asked
//! for by drift and the offline reconciler), `fanout` (property- and user-wide events, and
//! the internal revoke each owning subject carries out), `credential` (what a saga's
//! commands do to one credential inside a unit of work), `routing` (the policy, the
//! adapters' capabilities and where a new key goes), and `drive` (the vendor calls). This
//! module keeps the entry points, the dispatch of consumed and internal events, and the
//! helpers every step uses (units of work, audit rows, outcomes, observations).

mod credential;
mod drive;
mod fanout;
mod operator;
mod reservation;
mod routing;
mod shift;
mod topic;

use std::time::Duration;

use backon::BackoffBuilder;
use lockstep_domain::outcome::StepOutcome;
use lockstep_domain::saga::ReservationEvent;
use lockstep_domain::shift::ShiftEvent;
use lockstep_domain::{
    DomainError, FailureReason, KeyCredential, KeyCredentialId, KeyCredentialState,
    OperatorCommand, ReservationId, RevokeReason, SagaSubject, Timestamp, UserId,
};
use lockstep_persistence::{
    AuditRow, CredentialWrite, InternalEvent, MailboxEntry, MailboxKind, MailboxUpdate, StoreError,
    UnitOfWork,
};
use serde_json::json;
use tracing::warn;

use crate::db::StepDb;
use crate::events_in::{self, Consumed};
use crate::events_out;
use crate::runtime::Runtime;

use drive::drive;
use fanout::{property_deactivated, revoke_one, user_deactivated};
pub use lockstep_domain::door_sync::MAX_PIN_COLLISIONS;
use operator::{
    operator_replace, operator_suspend, operator_unsuspend, operator_update, reissue_on_device,
    reissue_provisional,
};
use reservation::reservation_step;
use shift::shift_step;
pub use topic::InternalTopic;

/// Why a step did not finish.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Another node owns the partition now: stop working on it.
    #[error("fenced")]
    Fenced,
    /// A transient failure: retry the entry later.
    #[error("retry: {0}")]
    Retry(String),
    /// Nothing was tried: the vendor's breaker is open, its account is held, or its
    /// removals go first. The entry waits like a retry (and is brought forward when the
    /// vendor or account recovers) but spends no attempt and is no failure to log.
    #[error("parked: {0}")]
    Parked(&'static str),
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Fenced => StepError::Fenced,
            other => StepError::Retry(other.to_string()),
        }
    }
}

fn domain_err(e: DomainError) -> StepError {
    StepError::Retry(format!("{e:?}"))
}

/// The delay before retry number `attempt` (1-based): backon's exponential policy from
/// `retry_base`, doubling, capped at `retry_cap`, with jitter so a recovering vendor is not
/// hit by a synchronized wave. The wait itself is a due time in the mailbox (a durable
/// timer), not a sleep.
pub fn backoff(rt: &Runtime, attempt: i32) -> Duration {
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(rt.settings.retry_base)
        .with_max_delay(rt.settings.retry_cap)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build();
    delays
        .nth(attempt.clamp(1, 64) as usize - 1)
        .unwrap_or(rt.settings.retry_cap)
        .min(rt.settings.retry_cap * 2)
}

/// A unit of work for a step of `entry`: what it decides, Lockstep learned when the entry
/// arrived (the start of a removal's stale-key window).
fn unit(
    entry: &MailboxEntry,
    fence: Option<lockstep_persistence::Fence>,
    now: Timestamp,
) -> UnitOfWork {
    let mut uow = UnitOfWork::new(entry.tenant_id, fence, now);
    uow.learned_at = Some(entry.created_at.min(now));
    uow
}

fn later(now: Timestamp, d: Duration) -> Timestamp {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(300))
}

/// A mailbox entry with its subject parsed: what each step of it is given. It derefs to the
/// stored entry (`entry.tenant_id`, `entry.payload`, ...); `entry.subject` is whose step it
/// is, as a type, and [`Entry::key`] the text the subject is stored and routed under.
struct Entry<'a> {
    stored: &'a MailboxEntry,
    /// Whose step this is: decisions `match` on it.
    subject: SagaSubject,
}

impl Entry<'_> {
    /// The subject as stored (`reservation:<id>`, ...): the key of its saga state, its
    /// mailbox and its drives, and the prefix of its credentials' idempotency keys.
    fn key(&self) -> &str {
        &self.stored.subject
    }
}

impl std::ops::Deref for Entry<'_> {
    type Target = MailboxEntry;

    fn deref(&self) -> &MailboxEntry {
        self.stored
    }
}

/// Runs one mailbox entry to its commit.
pub async fn run(rt: &Runtime, db: &mut StepDb<'_>, entry: &MailboxEntry) -> Result<(), StepError> {
    let subject = match SagaSubject::parse(&entry.subject) {
        Ok(subject) => subject,
        Err(e) => {
            // Every subject is written from parsed ids (intake, fan-out, operator commands,
            // the reconciler): one that does not parse is recorded, not retried.
            warn!(subject = %entry.subject, error = %e, "mailbox entry with a malformed subject");
            let mut uow = unit(entry, rt.fences.for_commit(entry.partition), rt.clock.now());
            uow.mailbox.push(done(entry, StepOutcome::MalformedSubject));
            db.commit(uow).await?;
            return Ok(());
        }
    };
    let entry = &Entry {
        stored: entry,
        subject,
    };
    match &entry.kind {
        MailboxKind::Event { topic, .. } if topic.starts_with(InternalTopic::PREFIX) => {
            internal(rt, db, entry, topic).await
        }
        MailboxKind::Event { topic, .. } => on_event(rt, db, entry, topic).await,
        MailboxKind::Drive { credential_id } => drive(rt, db, entry, credential_id).await,
    }
}

/// Records a failed step as a durable timer: the entry comes due again after a backoff.
pub async fn reschedule(rt: &Runtime, entry: &MailboxEntry, error: &str) -> Result<(), StepError> {
    let now = rt.clock.now();
    let attempts = entry.attempts + 1;
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    uow.mailbox.push(MailboxUpdate::Retry {
        id: entry.id,
        subject: entry.subject.clone(),
        due_at: later(now, backoff(rt, attempts)),
        attempts,
        last_error: error.chars().take(500).collect(),
    });
    rt.store.commit(uow).await?;
    Ok(())
}

fn audit(
    c: &KeyCredential,
    action: &str,
    reason: Option<&str>,
    now: Timestamp,
    payload: serde_json::Value,
) -> AuditRow {
    AuditRow {
        id: ulid::Ulid::new().to_string(),
        tenant_id: c.tenant_id(),
        property_id: c.property_id().clone(),
        credential_id: Some(c.id().clone()),
        device_id: None,
        actor_kind: "saga".into(),
        action: action.into(),
        reason: reason.map(str::to_owned),
        vendor: Some(c.vendor()),
        trace_id: None,
        created_at: now,
        payload,
    }
}

/// Moves the aggregate's pending events into the unit of work: outbox rows and audit rows.
fn flush_events(c: &mut KeyCredential, uow: &mut UnitOfWork) {
    for e in c.take_pending_events() {
        uow.outbox.push(events_out::outbox_row(&e, uow.now));
        if let Some(row) = events_out::master_row(&e, uow.now) {
            uow.outbox.push(row);
        }
        let mut row = audit(
            c,
            e.kind.audit_action(),
            e.kind.reason(),
            uow.now,
            json!({ "version": e.version }),
        );
        row.trace_id = e.trace_id.clone();
        uow.audit.push(row);
    }
}

/// The entry is done, with `outcome` recorded as its stored text.
fn done(entry: &MailboxEntry, outcome: StepOutcome) -> MailboxUpdate {
    MailboxUpdate::Done {
        id: entry.id,
        subject: entry.subject.clone(),
        outcome: outcome.to_string(),
    }
}

/// An internal event for `subject` (in `entry`'s property and partition), due at `due_at`.
fn internal_event(
    entry: &MailboxEntry,
    subject: &SagaSubject,
    topic: InternalTopic,
    payload: serde_json::Value,
    due_at: Timestamp,
) -> InternalEvent {
    InternalEvent {
        property_id: entry.property_id.clone(),
        partition: entry.partition,
        subject: subject.to_string(),
        topic: topic.as_str().to_owned(),
        payload,
        due_at,
    }
}

/// Tells a reservation saga what became of its credential (active, failed): the saga then
/// updates, suspends or falls back to the next kind.
fn observe(entry: &Entry<'_>, c: &KeyCredential, uow: &mut UnitOfWork) {
    let SagaSubject::Reservation(_) = entry.subject else {
        return;
    };
    uow.events.push(internal_event(
        entry,
        &entry.subject,
        InternalTopic::CredentialObserved,
        json!({
            "credentialId": c.id().as_str(),
            "state": c.state().as_str(),
            "failureReason": c.failure_reason().map(|f| f.as_str()),
        }),
        uow.now,
    ));
}

/// Credentials touched by one step, each with the version it was read at (`None`: new).
#[derive(Default)]
struct Touched {
    creds: Vec<(KeyCredential, Option<i64>)>,
}

impl Touched {
    async fn get(
        &mut self,
        db: &mut StepDb<'_>,
        tenant: lockstep_domain::TenantId,
        id: &KeyCredentialId,
    ) -> Result<Option<usize>, StepError> {
        if let Some(i) = self.creds.iter().position(|(c, _)| c.id() == id) {
            return Ok(Some(i));
        }
        match db.get_credential(tenant, id).await? {
            None => Ok(None),
            Some(c) => {
                let v = c.version();
                self.creds.push((c, Some(v)));
                Ok(Some(self.creds.len() - 1))
            }
        }
    }

    fn into_uow(mut self, uow: &mut UnitOfWork) {
        // New credentials first: an updated one may name a new one (replaced_by_id).
        self.creds.sort_by_key(|(_, expected)| expected.is_some());
        for (c, expected) in &mut self.creds {
            flush_events(c, uow);
            uow.credentials.push(CredentialWrite {
                snapshot: c.snapshot(),
                expected_version: *expected,
            });
        }
    }
    /// Ends a step: these credentials' writes and the entry done with `outcome` in one
    /// commit, counted in `lockstep_saga_steps_total` under `step`.
    async fn finish(
        self,
        rt: &Runtime,
        db: &mut StepDb<'_>,
        entry: &Entry<'_>,
        mut uow: UnitOfWork,
        step: &str,
        outcome: StepOutcome,
    ) -> Result<(), StepError> {
        self.into_uow(&mut uow);
        uow.mailbox.push(done(entry, outcome));
        db.commit(uow).await?;
        rt.metrics
            .saga_steps
            .with_label_values(&[step, &outcome.as_str()])
            .inc();
        Ok(())
    }
}

async fn on_event(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    topic: &str,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let parsed = match events_in::parse(&entry.payload) {
        Ok(p) => p,
        Err(e) => {
            // Intake validated it; a stored entry that no longer parses is recorded, not retried.
            let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
            uow.mailbox
                .push(done(entry, StepOutcome::InvalidEvent(e.label())));
            db.commit(uow).await?;
            rt.metrics
                .saga_steps
                .with_label_values(&[step_label(topic), "rejected"])
                .inc();
            return Ok(());
        }
    };
    // Issue 14: a property's deactivation is final. An event that would put a key on its
    // doors and was accepted before the deactivation entered (queued behind it, or on
    // another subject's actor) issues nothing; intake refuses the later ones.
    if parsed.event.adds_keys()
        && db
            .property_deactivated_at(entry.tenant_id, &entry.property_id)
            .await?
            .is_some()
    {
        let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
        uow.mailbox
            .push(done(entry, StepOutcome::RefusedPropertyDeactivated));
        db.commit(uow).await?;
        rt.metrics
            .saga_steps
            .with_label_values(&[step_label(topic), "refused"])
            .inc();
        return Ok(());
    }
    match parsed.event {
        Consumed::Reservation {
            reservation_id,
            event,
        } => {
            reservation_step(
                rt,
                db,
                entry,
                &reservation_id,
                event,
                parsed.trace_id,
                step_label(topic),
            )
            .await
        }
        Consumed::Shift {
            staff_user_id,
            event,
            scope_rooms,
            shift_id,
        } => {
            shift_step(
                rt,
                db,
                entry,
                &shift_id,
                &staff_user_id,
                event,
                &scope_rooms,
                step_label(topic),
            )
            .await
        }
        Consumed::PropertyDeactivated => property_deactivated(rt, db, entry).await,
        Consumed::UserDeactivated { user_id } => user_deactivated(rt, db, entry, &user_id).await,
    }
}

async fn internal(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    topic: &str,
) -> Result<(), StepError> {
    let Some(topic) = InternalTopic::parse(topic) else {
        let mut uow = unit(entry, rt.fences.for_commit(entry.partition), rt.clock.now());
        uow.mailbox.push(done(entry, StepOutcome::UnknownInternal));
        db.commit(uow).await?;
        return Ok(());
    };
    match topic {
        InternalTopic::NoShowDue => {
            let id = reservation_of(entry)?;
            reservation_step(
                rt,
                db,
                entry,
                id,
                ReservationEvent::NoShowSuspendDue,
                None,
                "no_show_timer",
            )
            .await
        }
        InternalTopic::CredentialObserved => {
            let id = reservation_of(entry)?;
            let p = &entry.payload;
            let event = ReservationEvent::CredentialObserved {
                credential_id: KeyCredentialId::parse(
                    p["credentialId"].as_str().unwrap_or_default(),
                )
                .map_err(domain_err)?,
                state: KeyCredentialState::parse(p["state"].as_str().unwrap_or_default())
                    .map_err(domain_err)?,
                failure_reason: p["failureReason"]
                    .as_str()
                    .map(FailureReason::parse)
                    .transpose()
                    .map_err(domain_err)?,
            };
            reservation_step(rt, db, entry, id, event, None, "observed").await
        }
        InternalTopic::Expire => {
            let id = credential_of_payload(entry)?;
            let due = match db.get_credential(entry.tenant_id, &id).await? {
                Some(c) => c.validity().until() <= rt.clock.now(),
                None => false,
            };
            if due {
                revoke_one(rt, db, entry, &id, RevokeReason::Expired).await
            } else {
                // the end moved later (a newer timer exists) or the credential is gone
                let mut uow = unit(entry, rt.fences.for_commit(entry.partition), rt.clock.now());
                uow.mailbox.push(done(entry, StepOutcome::NotDue));
                db.commit(uow).await?;
                Ok(())
            }
        }
        InternalTopic::Reissue => reissue_on_device(rt, db, entry).await,
        InternalTopic::ReissueProvisional => reissue_provisional(rt, db, entry).await,
        InternalTopic::Command(OperatorCommand::Unsuspend) => {
            operator_unsuspend(rt, db, entry).await
        }
        InternalTopic::Command(OperatorCommand::Suspend) => operator_suspend(rt, db, entry).await,
        InternalTopic::Command(OperatorCommand::Update) => operator_update(rt, db, entry).await,
        InternalTopic::Command(OperatorCommand::Replace) => operator_replace(rt, db, entry).await,
        InternalTopic::Command(OperatorCommand::Revoke) => {
            let p = &entry.payload;
            let id = KeyCredentialId::parse(p["credentialId"].as_str().unwrap_or_default())
                .map_err(domain_err)?;
            let reason = RevokeReason::parse(p["reason"].as_str().unwrap_or("security"))
                .map_err(domain_err)?;
            // a user's deactivation, fanned out to the shift that holds the master: the
            // shift saga ends it
            if let (Some(user), SagaSubject::Shift(shift)) = (p["userId"].as_str(), &entry.subject)
            {
                let user = UserId::parse(user).map_err(domain_err)?;
                return shift_step(
                    rt,
                    db,
                    entry,
                    shift,
                    &user.clone(),
                    ShiftEvent::UserDeactivated {
                        staff_user_id: user,
                    },
                    &[],
                    "user_deactivated",
                )
                .await;
            }
            revoke_one(rt, db, entry, &id, reason).await
        }
    }
}

/// The stay whose timer or observation `entry` is.
fn reservation_of<'e>(entry: &'e Entry<'_>) -> Result<&'e ReservationId, StepError> {
    entry
        .subject
        .reservation()
        .ok_or_else(|| StepError::Retry(format!("{} is not a reservation", entry.subject)))
}

fn credential_of_payload(entry: &MailboxEntry) -> Result<KeyCredentialId, StepError> {
    KeyCredentialId::parse(entry.payload["credentialId"].as_str().unwrap_or_default())
        .map_err(domain_err)
}

fn step_label(topic: &str) -> &'static str {
    match topic {
        events_in::RESERVATION_CONFIRMED => "reservation_confirmed",
        events_in::RESERVATION_CANCELLED => "reservation_cancelled",
        events_in::RESERVATION_CHECKED_OUT => "reservation_checked_out",
        events_in::RESERVATION_DATES_CHANGED => "reservation_dates_changed",
        events_in::RESERVATION_NO_SHOW => "reservation_no_show",
        events_in::RESERVATION_FRAUD_FLAGGED => "reservation_fraud_flagged",
        events_in::SHIFT_STARTED => "shift_started",
        events_in::SHIFT_ENDED => "shift_ended",
        events_in::PROPERTY_DEACTIVATED => "property_deactivated",
        events_in::USER_DEACTIVATED => "user_deactivated",
        events_in::BOOKING_CONFIRMED => "booking_confirmed",
        events_in::BOOKING_CANCELLED => "booking_cancelled",
        events_in::BOOKING_COMPLETED => "booking_completed",
        _ => "other",
    }
}
