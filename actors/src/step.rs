//! Carries out one mailbox entry: a consumed event (decided by the domain sagas), one of a
//! saga's internal events (its timers and feedback), or a drive of a credential's vendor
//! operations. Every step ends in one [`Store::commit`]; every vendor call is preceded by a
//! commit of its intent (DESIGN §3.4) and, when a previous attempt may have reached the
//! vendor, by a reconcile (`find`) so a retry never creates a second credential at the door.
//!
//! Sagas are single writers of their subject (a reservation, a shift). Property- and
//! user-wide events never write another subject's credentials directly: they send each
//! owning subject an internal event, and its own actor carries it out.

use std::time::Duration;

use backon::BackoffBuilder;
use lockstep_domain::master::{resolve_scope, CommonArea, LayoutRoom, MasterScope, PropertyLayout};
use lockstep_domain::saga::{
    self, Decision, ReservationEvent, ReservationSaga, SagaCommand, SagaContext,
};
use lockstep_domain::shift::{
    ActiveMaster, ShiftCommand, ShiftContext, ShiftDecision, ShiftEvent, ShiftSaga,
};
use lockstep_domain::{
    DeviceRef, DomainError, FailureReason, HolderKind, IssueIntent, KeyCredential, KeyCredentialId,
    KeyCredentialKind, KeyCredentialState, KeyKindPolicy, KeyKindPolicyId, LockCapabilities,
    MasterKeyId, Pin, ReservationId, RevokeReason, RoomId, ScopedRoom, ShiftId, SuspendReason,
    Timestamp, UpdateInput, UserId, VendorAdapterId, VendorCode, VendorRef,
};
use lockstep_persistence::{
    AuditRow, CredentialDevice, CredentialWrite, Desired, DeviceSyncWrite, InternalEvent,
    MailboxEntry, MailboxKind, MailboxUpdate, MasterKeyRecord, MasterKeyWrite, ScheduleDrive,
    StoreError, SyncState, UnitOfWork,
};
use lockstep_vendors::{IssueRequest, VendorError};
use serde_json::json;
use tracing::warn;

use crate::db::StepDb;
use crate::events_in::{self, Consumed};
use crate::events_out;
use crate::runtime::Runtime;
use crate::saga_codec;
use crate::vendor::{VendorOp, VendorReply};

/// PIN collisions tolerated before the credential fails (spec `002`, "PIN collision").
pub const MAX_PIN_COLLISIONS: i32 = 3;

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

/// Runs one mailbox entry to its commit.
pub async fn run(rt: &Runtime, db: &mut StepDb<'_>, entry: &MailboxEntry) -> Result<(), StepError> {
    match &entry.kind {
        MailboxKind::Event { topic, .. } if topic.starts_with("lockstep.internal.") => {
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

fn done(entry: &MailboxEntry, outcome: impl Into<String>) -> MailboxUpdate {
    MailboxUpdate::Done {
        id: entry.id,
        outcome: outcome.into(),
    }
}

/// An internal event for `subject`, due at `due_at`.
fn internal_event(
    entry: &MailboxEntry,
    subject: &str,
    topic: &str,
    payload: serde_json::Value,
    due_at: Timestamp,
) -> InternalEvent {
    InternalEvent {
        property_id: entry.property_id.clone(),
        partition: entry.partition,
        subject: subject.to_owned(),
        topic: topic.to_owned(),
        payload,
        due_at,
    }
}

/// Tells a reservation saga what became of its credential (active, failed): the saga then
/// updates, suspends or falls back to the next kind.
fn observe(entry: &MailboxEntry, c: &KeyCredential, uow: &mut UnitOfWork) {
    if !entry.subject.starts_with("reservation:") {
        return;
    }
    uow.events.push(internal_event(
        entry,
        &entry.subject,
        events_in::INTERNAL_CREDENTIAL_OBSERVED,
        json!({
            "credentialId": c.id().as_str(),
            "state": c.state().as_str(),
            "failureReason": c.failure_reason().map(|f| f.as_str()),
        }),
        uow.now,
    ));
}

/// Tells the reservation saga in the same commit that its credential became active, when
/// that changes nothing but the saga's own record (the common case): the observation costs
/// no mailbox round trip. `false` when the saga would act on it (an update or suspension
/// decided while the key was on its way): the caller then sends the observation through
/// the mailbox, where the saga's step carries its commands out.
async fn observe_inline(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
    c: &KeyCredential,
    uow: &mut UnitOfWork,
) -> Result<bool, StepError> {
    if !entry.subject.starts_with("reservation:") {
        return Ok(true);
    }
    let Some(v) = db.load_saga(entry.tenant_id, &entry.subject).await? else {
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
                entry.subject.clone(),
                saga_codec::reservation_to_json(&next),
            ));
            Ok(true)
        }
        Decision::Apply { .. } => Ok(false),
    }
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
}

async fn on_event(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
    topic: &str,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let parsed = match events_in::parse(&entry.payload) {
        Ok(p) => p,
        Err(e) => {
            // Intake validated it; a stored entry that no longer parses is recorded, not retried.
            let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
            uow.mailbox
                .push(done(entry, format!("rejected:{}", e.label())));
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
            .push(done(entry, "refused:property_deactivated"));
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
    entry: &MailboxEntry,
    topic: &str,
) -> Result<(), StepError> {
    match topic {
        events_in::INTERNAL_NO_SHOW_DUE => {
            let id = reservation_of(entry)?;
            reservation_step(
                rt,
                db,
                entry,
                &id,
                ReservationEvent::NoShowSuspendDue,
                None,
                "no_show_timer",
            )
            .await
        }
        events_in::INTERNAL_CREDENTIAL_OBSERVED => {
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
            reservation_step(rt, db, entry, &id, event, None, "observed").await
        }
        events_in::INTERNAL_EXPIRE => {
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
                uow.mailbox.push(done(entry, "not_due"));
                db.commit(uow).await?;
                Ok(())
            }
        }
        events_in::INTERNAL_REISSUE => reissue_on_device(rt, db, entry).await,
        events_in::INTERNAL_REISSUE_PROVISIONAL => reissue_provisional(rt, db, entry).await,
        events_in::INTERNAL_UNSUSPEND => operator_unsuspend(rt, db, entry).await,
        events_in::INTERNAL_SUSPEND => operator_suspend(rt, db, entry).await,
        events_in::INTERNAL_UPDATE => operator_update(rt, db, entry).await,
        events_in::INTERNAL_REPLACE => operator_replace(rt, db, entry).await,
        events_in::INTERNAL_REVOKE => {
            let p = &entry.payload;
            let id = KeyCredentialId::parse(p["credentialId"].as_str().unwrap_or_default())
                .map_err(domain_err)?;
            let reason = RevokeReason::parse(p["reason"].as_str().unwrap_or("security"))
                .map_err(domain_err)?;
            if let Some(user) = p["userId"].as_str() {
                if entry.subject.starts_with("shift:") {
                    let user = UserId::parse(user).map_err(domain_err)?;
                    let shift = ShiftId::parse(entry.subject.trim_start_matches("shift:"))
                        .map_err(domain_err)?;
                    return shift_step(
                        rt,
                        db,
                        entry,
                        &shift,
                        &user.clone(),
                        ShiftEvent::UserDeactivated {
                            staff_user_id: user,
                        },
                        &[],
                        "user_deactivated",
                    )
                    .await;
                }
            }
            revoke_one(rt, db, entry, &id, reason).await
        }
        _ => {
            let mut uow = unit(entry, rt.fences.for_commit(entry.partition), rt.clock.now());
            uow.mailbox.push(done(entry, "rejected:unknown_internal"));
            db.commit(uow).await?;
            Ok(())
        }
    }
}

fn reservation_of(entry: &MailboxEntry) -> Result<ReservationId, StepError> {
    ReservationId::parse(entry.subject.trim_start_matches("reservation:")).map_err(domain_err)
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

/// The property's KeyKindPolicy, or the default one (spec `003` §4).
async fn policy(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
) -> Result<KeyKindPolicy, StepError> {
    let now = rt.clock.now();
    let Some(p) = db.get_policy(entry.tenant_id, &entry.property_id).await? else {
        return Ok(KeyKindPolicy::default_for(
            KeyKindPolicyId::generate(),
            entry.tenant_id,
            entry.property_id.clone(),
            now,
        ));
    };
    let kinds = |v: &[String]| -> Result<Vec<KeyCredentialKind>, StepError> {
        v.iter()
            .map(|k| KeyCredentialKind::parse(k).map_err(domain_err))
            .collect()
    };
    KeyKindPolicy::new(lockstep_domain::KeyKindPolicyInput {
        id: KeyKindPolicyId::parse(&p.id).unwrap_or_else(|_| KeyKindPolicyId::generate()),
        tenant_id: entry.tenant_id,
        property_id: entry.property_id.clone(),
        preferred_order: kinds(&p.preferred_order)?,
        fallback_chain: kinds(&p.fallback_chain)?,
        max_valid_until_extension_hours: Some(i64::from(p.max_valid_until_extension_hours)),
        id_verify_required_for: kinds(&p.id_verify_required_for)?,
        no_show_suspend_after_hours: Some(i64::from(p.no_show_suspend_after_hours)),
        allow_offline_issuance_kinds: kinds(&p.allow_offline_issuance_kinds)?,
        updated_at: p.updated_at,
    })
    .map_err(domain_err)
}

/// What the adapters serving `rooms` can do (I-6). With one adapter serving them (or none
/// serving all), the first device's adapter, as always. With several (DESIGN §7, outage
/// fallback), what those whose vendor is up can do together, or all of them when none is:
/// the saga then chooses and falls back only among kinds a working adapter can issue.
async fn capabilities(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
    rooms: &[RoomId],
    avoid: Option<&VendorAdapterId>,
) -> Result<LockCapabilities, StepError> {
    let devices = taking_new_work(
        &rt.ports,
        db.devices_for_rooms(entry.tenant_id, &entry.property_id, rooms)
            .await?,
    );
    let adapters = serving(&rt.ports, &devices, rooms);
    if adapters.len() < 2 {
        return Ok(devices
            .first()
            .and_then(|d| rt.ports.port(&d.vendor_adapter_id))
            .map(|p| p.capabilities())
            .unwrap_or_default());
    }
    let others: Vec<VendorAdapterId> = adapters
        .iter()
        .filter(|a| Some(*a) != avoid)
        .cloned()
        .collect();
    if let Some(up) = up_capabilities(rt, &others).await {
        return Ok(up);
    }
    Ok(adapters
        .iter()
        .filter_map(|a| rt.ports.port(a))
        .fold(LockCapabilities::default(), |c, p| {
            union(c, p.capabilities())
        }))
}

/// `adapters` with `avoid` (if among them) last.
fn avoided_last(
    mut adapters: Vec<VendorAdapterId>,
    avoid: Option<&VendorAdapterId>,
) -> Vec<VendorAdapterId> {
    adapters.sort_by_key(|a| Some(a) == avoid);
    adapters
}

/// `devices` without those of adapters that take no new work (spec `003` §3 `enabled`):
/// where a new key may go. Removals and updates of keys already at a door use every device.
fn taking_new_work(
    ports: &crate::PortRegistry,
    mut devices: Vec<lockstep_persistence::Device>,
) -> Vec<lockstep_persistence::Device> {
    devices.retain(|d| ports.choice(&d.vendor_adapter_id).0);
    devices
}

/// The adapters that serve every one of `rooms` with their devices, by `precedence`
/// (spec `003` §3: lower preferred), then in device order.
fn serving(
    ports: &crate::PortRegistry,
    devices: &[lockstep_persistence::Device],
    rooms: &[RoomId],
) -> Vec<VendorAdapterId> {
    let mut out = serving_in_device_order(devices, rooms);
    out.sort_by_key(|a| ports.choice(a).1);
    out
}

fn serving_in_device_order(
    devices: &[lockstep_persistence::Device],
    rooms: &[RoomId],
) -> Vec<VendorAdapterId> {
    let mut out: Vec<VendorAdapterId> = Vec::new();
    for d in devices {
        let a = &d.vendor_adapter_id;
        if !out.contains(a)
            && rooms.iter().all(|r| {
                devices
                    .iter()
                    .any(|x| &x.vendor_adapter_id == a && x.rooms.contains(r))
            })
        {
            out.push(a.clone());
        }
    }
    out
}

/// What the adapters among `adapters` whose vendor is up (breaker closed, account not
/// held) can do together; `None` when none is up.
async fn up_capabilities(rt: &Runtime, adapters: &[VendorAdapterId]) -> Option<LockCapabilities> {
    let mut caps = None;
    for a in adapters {
        if rt.ports.outage(a).await.is_none() {
            if let Some(p) = rt.ports.port(a) {
                caps = Some(union(caps.unwrap_or_default(), p.capabilities()));
            }
        }
    }
    caps
}

fn union(a: LockCapabilities, b: LockCapabilities) -> LockCapabilities {
    LockCapabilities {
        mobile_key: a.mobile_key || b.mobile_key,
        card_encoding: a.card_encoding || b.card_encoding,
        pin: a.pin || b.pin,
        qr: a.qr || b.qr,
        nfc: a.nfc || b.nfc,
        remote_revoke: a.remote_revoke || b.remote_revoke,
        remote_issue: a.remote_issue || b.remote_issue,
        offline_issuance: a.offline_issuance || b.offline_issuance,
        scope_floors: a.scope_floors || b.scope_floors,
        scope_areas: a.scope_areas || b.scope_areas,
    }
}

/// The devices a new credential of `kind` goes to. With one adapter serving the rooms,
/// all of them, as always. With several (DESIGN §7), one adapter's: the first that can
/// issue `kind` and whose vendor is up (never `avoid`, the adapter a fallback leaves),
/// else the first that can issue it at all.
async fn route(
    rt: &Runtime,
    devices: Vec<lockstep_persistence::Device>,
    rooms: &[RoomId],
    kind: KeyCredentialKind,
    avoid: Option<&VendorAdapterId>,
) -> Vec<lockstep_persistence::Device> {
    let adapters = serving(&rt.ports, &devices, rooms);
    if adapters.len() < 2 {
        return devices;
    }
    let adapters = avoided_last(adapters, avoid);
    let capable: Vec<VendorAdapterId> = adapters
        .into_iter()
        .filter(|a| {
            rt.ports
                .port(a)
                .is_some_and(|p| p.capabilities().supports(kind))
        })
        .collect();
    let mut chosen = None;
    for a in &capable {
        if Some(a) != avoid && rt.ports.outage(a).await.is_none() {
            chosen = Some(a.clone());
            break;
        }
    }
    match chosen.or_else(|| capable.first().cloned()) {
        Some(a) => devices
            .into_iter()
            .filter(|d| d.vendor_adapter_id == a)
            .collect(),
        None => devices,
    }
}

/// Outage fallback (DESIGN §7): whether a guest's credential still waiting on `adapter`
/// should fail as `vendor_unreachable`, so that the saga walks the KeyKindPolicy fallback
/// chain exactly as it does for a refused kind. Yes when the bound is set, the vendor is
/// down (breaker open, account held) or the credential has waited past the bound, and the
/// chain holds a kind not tried for this stay that another adapter, up, can issue for its
/// rooms. Otherwise it keeps waiting as before (a lone vendor's outage parks it).
async fn outage_fallback(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
    cred: &KeyCredential,
    adapter: &VendorAdapterId,
) -> Result<bool, StepError> {
    let bound = rt.settings.outage_fallback_after;
    if bound.is_zero()
        || cred.reservation_id().is_none()
        || !matches!(
            cred.state(),
            KeyCredentialState::Requested | KeyCredentialState::Pending
        )
    {
        return Ok(false);
    }
    // No other adapter serves the rooms (the common case): nothing to fall back to, and
    // nothing else to ask.
    let devices = taking_new_work(
        &rt.ports,
        db.devices_for_rooms(entry.tenant_id, &entry.property_id, cred.rooms())
            .await?,
    );
    let others: Vec<VendorAdapterId> = serving(&rt.ports, &devices, cred.rooms())
        .into_iter()
        .filter(|a| a != adapter)
        .collect();
    if others.is_empty() {
        return Ok(false);
    }
    let waited = rt.clock.now() - cred.snapshot().created_at;
    let overdue = waited.to_std().is_ok_and(|w| w >= bound);
    if !overdue && rt.ports.outage(adapter).await.is_none() {
        return Ok(false);
    }
    let Some(caps) = up_capabilities(rt, &others).await else {
        return Ok(false);
    };
    let Some(json) = db.load_saga(entry.tenant_id, &entry.subject).await? else {
        return Ok(false);
    };
    let Ok(saga) = saga_codec::reservation_from_json(&json) else {
        return Ok(false);
    };
    if saga.ended.is_some()
        || saga.gave_up.is_some()
        || saga.credential.as_ref().map(|c| &c.id) != Some(cred.id())
    {
        return Ok(false);
    }
    let policy = policy(rt, db, entry).await?;
    let mut k = cred.kind();
    while let Some(next) = policy.next_after(k, &caps, false) {
        if !saga.tried_kinds.contains(&next) {
            return Ok(true);
        }
        k = next;
    }
    Ok(false)
}

async fn reservation_step(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
    reservation_id: &ReservationId,
    event: ReservationEvent,
    trace_id: Option<String>,
    label: &'static str,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let state = match db.load_saga(entry.tenant_id, &entry.subject).await? {
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
            uow.mailbox
                .push(done(entry, format!("ignored:{why:?}").to_lowercase()));
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
                        idempotency_key: format!("{}:{}", entry.subject, credential_id),
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
                        events_in::INTERNAL_NO_SHOW_DUE,
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
                        payload: json!({ "subject": entry.subject }),
                    });
                }
            }
        }
        touched.into_uow(&mut uow);
        uow.saga = Some((
            entry.subject.clone(),
            saga_codec::reservation_to_json(&next),
        ));
        uow.mailbox.push(done(entry, "applied"));
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

enum Holder {
    Guest {
        reservation_id: ReservationId,
        guest_id: lockstep_domain::GuestId,
    },
    Staff {
        staff_user_id: UserId,
    },
}

struct Intent {
    id: KeyCredentialId,
    holder: Holder,
    kind: KeyCredentialKind,
    rooms: Vec<RoomId>,
    scope: lockstep_domain::KeyCredentialScope,
    validity: lockstep_domain::ValidityWindow,
    replaces: Option<KeyCredentialId>,
    trace_id: Option<String>,
    idempotency_key: String,
    /// An adapter a fallback leaves (its vendor kept the previous key waiting, DESIGN §7).
    avoid: Option<VendorAdapterId>,
}

/// Requests a credential; with every room served, writes its door-truth rows (PINs for
/// `pin_code`) and schedules its drive; otherwise (or when `force_fail`) fails it at once
/// and tells the saga.
async fn issue(
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
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
fn expire_at(entry: &MailboxEntry, uow: &mut UnitOfWork, id: &KeyCredentialId, at: Timestamp) {
    uow.events.push(internal_event(
        entry,
        &entry.subject,
        events_in::INTERNAL_EXPIRE,
        json!({ "credentialId": id.as_str() }),
        at,
    ));
}

fn schedule(entry: &MailboxEntry, uow: &mut UnitOfWork, id: &KeyCredentialId) {
    uow.schedule.push(ScheduleDrive {
        property_id: entry.property_id.clone(),
        partition: entry.partition,
        subject: entry.subject.clone(),
        credential_id: id.clone(),
        due_at: uow.now,
    });
}

/// Every device should lose the credential. A device never called (attempts 0, or a fresh
/// intent of this drain that was never sent) holds nothing: confirmed absent at once.
/// Otherwise a delete is pending.
fn plan_removal(devices: &[CredentialDevice], uow: &mut UnitOfWork, never_sent: bool) -> bool {
    let mut pending = false;
    for d in devices {
        if d.desired == Desired::Absent && d.sync == SyncState::Confirmed {
            continue;
        }
        let mut w = DeviceSyncWrite::from_current(d);
        w.desired = Desired::Absent;
        w.sync = if (d.attempts == 0 || never_sent) && d.vendor_ref.is_none() {
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
    entry: &MailboxEntry,
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
    entry: &MailboxEntry,
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

async fn revoke(
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
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

async fn fail_mid_flight(
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
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
async fn suspend(
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
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

/// Moves an active or suspended credential's end and rooms; the door follows: devices of
/// new rooms get it, devices of dropped rooms lose it, the others get the new window.
async fn update(
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
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
    let mut changed = false;
    for d in &current {
        let keep = wanted.iter().any(|w| w.id == d.device_id);
        let mut w = DeviceSyncWrite::from_current(d);
        if keep && active {
            // the window moved: the vendor must be told
            w.desired = Desired::Present;
            w.sync = SyncState::Pending;
        } else if !keep {
            w.desired = Desired::Absent;
            w.sync = if d.attempts == 0 && d.vendor_ref.is_none() {
                SyncState::Confirmed
            } else {
                SyncState::Pending
            };
        } else {
            continue;
        }
        changed |= w.sync == SyncState::Pending;
        uow.devices.push(w);
    }
    // A door added by the change takes new work: not at a disabled adapter, and, where the
    // key's own adapters serve the room, only theirs (another vendor's door of the same
    // room would get a second key, maybe of a kind it cannot issue; spec 003 §3).
    let own: Vec<&VendorAdapterId> = wanted
        .iter()
        .filter(|w| current.iter().any(|c| c.device_id == w.id))
        .map(|w| &w.vendor_adapter_id)
        .chain(std::iter::once(c.vendor_adapter_id()))
        .collect();
    let ports = &db.rt().ports;
    let added: Vec<&lockstep_persistence::Device> = wanted
        .iter()
        .filter(|w| !current.iter().any(|c| c.device_id == w.id))
        .filter(|w| ports.choice(&w.vendor_adapter_id).0)
        .filter(|w| {
            own.contains(&&w.vendor_adapter_id)
                || !w.rooms.iter().any(|r| {
                    wanted
                        .iter()
                        .any(|x| x.rooms.contains(r) && own.contains(&&x.vendor_adapter_id))
                })
        })
        .collect();
    for d in added {
        uow.devices.push(DeviceSyncWrite {
            credential_id: id.clone(),
            device_id: d.id.clone(),
            desired: if active {
                Desired::Present
            } else {
                Desired::Absent
            },
            sync: if active {
                SyncState::Pending
            } else {
                SyncState::Confirmed
            },
            pin: pin.clone().or_else(|| {
                (c.kind() == KeyCredentialKind::PinCode).then(|| Pin::generate(Pin::DEFAULT_LEN))
            }),
            vendor_ref: None,
            attempts: 0,
            pin_collisions: 0,
            last_error: None,
        });
        changed |= active;
    }
    if changed {
        schedule(entry, uow, id);
    }
    Ok(())
}

/// An internal revoke on behalf of a property- or user-wide event, in the owning subject.
async fn revoke_one(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
    id: &KeyCredentialId,
    reason: RevokeReason,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let mut touched = Touched::default();
    let state = match touched.get(db, entry.tenant_id, id).await? {
        Some(i) => touched.creds[i].0.state(),
        None => KeyCredentialState::Revoked,
    };
    match state {
        KeyCredentialState::Requested => {
            fail_mid_flight(db, entry, &mut uow, &mut touched, id).await?
        }
        KeyCredentialState::Pending
        | KeyCredentialState::Active
        | KeyCredentialState::Suspended => {
            revoke(db, entry, &mut uow, &mut touched, id, reason, None).await?;
        }
        KeyCredentialState::Revoked | KeyCredentialState::Failed => {}
    }
    for (c, _) in &touched.creds {
        if c.is_terminal() {
            observe(entry, c, &mut uow);
        }
    }
    touched.into_uow(&mut uow);
    uow.mailbox.push(done(entry, "applied"));
    db.commit(uow).await?;
    rt.metrics
        .saga_steps
        .with_label_values(&["internal_revoke", "applied"])
        .inc();
    Ok(())
}

fn credential_of_payload(entry: &MailboxEntry) -> Result<KeyCredentialId, StepError> {
    KeyCredentialId::parse(entry.payload["credentialId"].as_str().unwrap_or_default())
        .map_err(domain_err)
}

async fn reservation_saga(
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
) -> Result<Option<ReservationSaga>, StepError> {
    if !entry.subject.starts_with("reservation:") {
        return Ok(None);
    }
    Ok(Some(
        match db.load_saga(entry.tenant_id, &entry.subject).await? {
            Some(v) => saga_codec::reservation_from_json(&v)
                .map_err(|e| StepError::Retry(e.to_string()))?,
            None => ReservationSaga::default(),
        },
    ))
}

/// Drift found the credential missing at a device: if it should still be there, its door
/// truth goes back to pending and the drive puts it back (same PIN; the vendor's update
/// answers NotFound and the drive issues it anew).
async fn reissue_on_device(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
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
    let mut outcome = "not_needed";
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
                outcome = "applied";
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
async fn operator_update(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let id = credential_of_payload(entry)?;
    let p = &entry.payload;
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let mut touched = Touched::default();
    let Some(i) = touched.get(db, entry.tenant_id, &id).await? else {
        uow.mailbox.push(done(entry, "rejected:unknown_credential"));
        db.commit(uow).await?;
        return Ok(());
    };
    let c = touched.creds[i].0.clone();
    let outcome = if !matches!(
        c.state(),
        KeyCredentialState::Active | KeyCredentialState::Suspended
    ) {
        "rejected:invalid_state"
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
        let base = saga
            .as_ref()
            .and_then(|s| s.issued_until_of(&id))
            .unwrap_or(c.validity().until());
        if policy(rt, db, entry)
            .await?
            .check_extension(base, valid_until)
            .is_err()
        {
            "rejected:k2"
        } else {
            update(db, entry, &mut uow, &mut touched, &id, valid_until, &rooms).await?;
            if let Some(s) = saga.as_mut() {
                if let Ok(w) =
                    lockstep_domain::ValidityWindow::new(c.validity().from(), valid_until)
                {
                    s.operator_updated(&id, w, rooms.clone());
                    uow.saga = Some((entry.subject.clone(), saga_codec::reservation_to_json(s)));
                }
            }
            "applied"
        }
    };
    touched.into_uow(&mut uow);
    uow.mailbox.push(done(entry, outcome));
    db.commit(uow).await?;
    rt.metrics
        .saga_steps
        .with_label_values(&["operator_update", outcome])
        .inc();
    Ok(())
}

/// An operator suspends an active credential: it leaves the door (its PIN kept) until an
/// operator unsuspends it. Suspending a suspended one is a no-op; any other state is
/// refused (`rejected:invalid_state`).
async fn operator_suspend(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let id = credential_of_payload(entry)?;
    let reason = SuspendReason::parse(entry.payload["reason"].as_str().unwrap_or("manual"))
        .map_err(domain_err)?;
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let mut touched = Touched::default();
    let outcome = match touched.get(db, entry.tenant_id, &id).await? {
        None => "rejected:unknown_credential",
        Some(i) => match touched.creds[i].0.state() {
            KeyCredentialState::Active => {
                suspend(db, entry, &mut uow, &mut touched, &id, reason).await?;
                "applied"
            }
            KeyCredentialState::Suspended => "applied",
            _ => "rejected:invalid_state",
        },
    };
    touched.into_uow(&mut uow);
    uow.mailbox.push(done(entry, outcome));
    db.commit(uow).await?;
    rt.metrics
        .saga_steps
        .with_label_values(&["operator_suspend", outcome])
        .inc();
    Ok(())
}

/// An operator unsuspends a credential: it returns to the door (its PIN kept), and the
/// reservation's saga stops holding it back.
async fn operator_unsuspend(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let id = credential_of_payload(entry)?;
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let mut touched = Touched::default();
    let mut outcome = "applied";
    if let Some(i) = touched.get(db, entry.tenant_id, &id).await? {
        let c = &mut touched.creds[i].0;
        match c.unsuspend(now) {
            Ok(_) => {
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
                        entry.subject.clone(),
                        saga_codec::reservation_to_json(&saga),
                    ));
                }
            }
            Err(_) => outcome = "rejected:not_suspended",
        }
    }
    touched.into_uow(&mut uow);
    uow.mailbox.push(done(entry, outcome));
    db.commit(uow).await?;
    rt.metrics
        .saga_steps
        .with_label_values(&["operator_unsuspend", outcome])
        .inc();
    Ok(())
}

/// Lost-key replace: the old credential is revoked (`lost`) and a new one of the same kind,
/// rooms and window is issued, in one unit of work, with lineage both ways (I-4,
/// `linkReplacement`); the reservation's saga follows the new one.
async fn operator_replace(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let id = credential_of_payload(entry)?;
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let mut touched = Touched::default();
    let Some(i) = touched.get(db, entry.tenant_id, &id).await? else {
        uow.mailbox.push(done(entry, "rejected:unknown_credential"));
        db.commit(uow).await?;
        return Ok(());
    };
    let old = touched.creds[i].0.clone();
    let replaceable = matches!(
        old.state(),
        KeyCredentialState::Active | KeyCredentialState::Suspended
    ) && old.holder_kind() == HolderKind::Guest;
    if !replaceable {
        // masters are renewed by their shift; terminal credentials have nothing to replace
        uow.mailbox.push(done(entry, "rejected:not_replaceable"));
        db.commit(uow).await?;
        return Ok(());
    }
    revoke(
        db,
        entry,
        &mut uow,
        &mut touched,
        &id,
        RevokeReason::Lost,
        None,
    )
    .await?;
    let new_id = KeyCredentialId::generate();
    let (Some(reservation_id), Some(guest_id)) =
        (old.reservation_id().cloned(), old.guest_id().cloned())
    else {
        return Err(StepError::Retry(
            "guest credential without reservation (I-2)".into(),
        ));
    };
    let intent = Intent {
        id: new_id.clone(),
        holder: Holder::Guest {
            reservation_id,
            guest_id,
        },
        kind: old.kind(),
        rooms: old.rooms().to_vec(),
        scope: old.scope().clone(),
        validity: old.validity(),
        replaces: Some(id.clone()),
        trace_id: None,
        idempotency_key: format!("{}:replace:{}", entry.subject, id),
        avoid: None,
    };
    issue(db, entry, &mut uow, &mut touched, intent, None).await?;
    if let Some(mut saga) = reservation_saga(db, entry).await? {
        saga.adopt_replacement(
            &id,
            lockstep_domain::saga::TrackedCredential {
                id: new_id,
                kind: old.kind(),
                state: KeyCredentialState::Requested,
                failure_reason: None,
                validity: old.validity(),
                rooms: old.rooms().to_vec(),
                issued_until: old.validity().until(),
            },
        );
        uow.saga = Some((
            entry.subject.clone(),
            saga_codec::reservation_to_json(&saga),
        ));
    }
    touched.into_uow(&mut uow);
    uow.mailbox.push(done(entry, "applied"));
    db.commit(uow).await?;
    rt.metrics
        .saga_steps
        .with_label_values(&["operator_replace", "applied"])
        .inc();
    Ok(())
}

/// O-2: a provisional credential revoked because the certificate that minted it was is
/// flagged for forced re-issue; this is the saga's online check. The stay gets a key of
/// the same kind for its rooms and window (the saga's, else the provisional's), through
/// the normal issue path, naming the revoked one as what it replaces, unless the stay
/// ended, the saga gave up, or the stay already holds a live key of the saga's own (one
/// live credential per stay).
async fn reissue_provisional(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let id = credential_of_payload(entry)?;
    let mut uow = unit(entry, rt.fences.for_commit(entry.partition), now);
    let mut touched = Touched::default();
    let outcome = |o: &'static str| {
        rt.metrics
            .saga_steps
            .with_label_values(&["reissue_provisional", o])
            .inc();
        o
    };
    let Some(i) = touched.get(db, entry.tenant_id, &id).await? else {
        uow.mailbox
            .push(done(entry, outcome("rejected:unknown_credential")));
        db.commit(uow).await?;
        return Ok(());
    };
    let old = touched.creds[i].0.clone();
    let (Some(reservation_id), Some(guest_id)) =
        (old.reservation_id().cloned(), old.guest_id().cloned())
    else {
        uow.mailbox
            .push(done(entry, outcome("rejected:not_a_stay")));
        db.commit(uow).await?;
        return Ok(());
    };
    if !old.provisional()
        || old.state() != KeyCredentialState::Revoked
        || old.replaced_by_id().is_some()
    {
        uow.mailbox
            .push(done(entry, outcome("rejected:not_flagged")));
        db.commit(uow).await?;
        return Ok(());
    }
    let Some(mut saga) = reservation_saga(db, entry).await? else {
        uow.mailbox
            .push(done(entry, outcome("rejected:not_a_stay")));
        db.commit(uow).await?;
        return Ok(());
    };
    if saga.ended.is_some() || saga.gave_up.is_some() {
        uow.mailbox.push(done(entry, outcome("stay_ended")));
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
        uow.mailbox.push(done(entry, outcome("covered")));
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
        idempotency_key: format!("{}:reissue:{}", entry.subject, id),
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
        entry.subject.clone(),
        saga_codec::reservation_to_json(&saga),
    ));
    touched.into_uow(&mut uow);
    uow.mailbox.push(done(entry, outcome("reissued")));
    db.commit(uow).await?;
    Ok(())
}

/// `tenant.property.deactivated`: every live credential of the property is revoked
/// (`security`), each by the saga that owns it.
async fn property_deactivated(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
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
        let subject = match (&c.reservation_id, &c.shift_id) {
            (Some(r), _) => format!("reservation:{r}"),
            (None, Some(s)) => format!("shift:{s}"),
            (None, None) => continue,
        };
        uow.events.push(internal_event(
            entry,
            &subject,
            events_in::INTERNAL_REVOKE,
            json!({ "credentialId": c.id.as_str(), "reason": "security" }),
            now,
        ));
    }
    uow.mailbox
        .push(done(entry, format!("fanned_out:{}", live.len())));
    db.commit(uow).await?;
    rt.metrics
        .saga_steps
        .with_label_values(&["property_deactivated", "applied"])
        .inc();
    Ok(())
}

/// `iam.user.deactivated`, already fanned out to this property: each of the user's live
/// masters here is revoked by its shift's saga.
async fn user_deactivated(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
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
        let subject = match &m.shift_id {
            Some(s) => format!("shift:{s}"),
            None => continue,
        };
        n += 1;
        uow.events.push(internal_event(
            entry,
            &subject,
            events_in::INTERNAL_REVOKE,
            json!({ "credentialId": m.key_credential_id.as_str(), "reason": "security", "userId": user.as_str() }),
            now,
        ));
    }
    uow.mailbox.push(done(entry, format!("fanned_out:{n}")));
    db.commit(uow).await?;
    rt.metrics
        .saga_steps
        .with_label_values(&["user_deactivated", "applied"])
        .inc();
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

#[allow(clippy::too_many_arguments)] // the shift's ids, its event and its rooms
async fn shift_step(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
    shift_id: &ShiftId,
    staff_user_id: &UserId,
    event: ShiftEvent,
    scope_rooms: &[RoomId],
    label: &'static str,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let mut state = match db.load_saga(entry.tenant_id, &entry.subject).await? {
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
            uow.mailbox
                .push(done(entry, format!("ignored:{why:?}").to_lowercase()));
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
                    idempotency_key: format!("{}:{}", entry.subject, credential_id),
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
    uow.saga = Some((entry.subject.clone(), saga_codec::shift_to_json(&next)));
    uow.mailbox.push(done(entry, "applied"));
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

/// What the doors of a resolved master scope can do together: the rooms' adapters as for
/// any credential, and every adapter of the areas' doors (a master has one kind, which
/// every door must take).
async fn master_capabilities(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
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

/// Whether a consumed event for this subject is waiting: the drive then yields between
/// vendor calls, so a cancellation that arrives while an issue is in flight is recorded
/// before the credential could become active (DESIGN §3.5).
async fn event_waiting(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
) -> Result<bool, StepError> {
    Ok(matches!(
        db.next_mailbox_entry(entry.tenant_id, &entry.subject, rt.clock.now())
            .await?,
        Some(MailboxEntry {
            kind: MailboxKind::Event { .. },
            ..
        })
    ))
}

/// Drives a credential's per-device vendor operations until every device agrees with what
/// is desired, one vendor call and one commit at a time; removals before issuances.
async fn drive(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
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
                    uow.mailbox.push(done(entry, "missing"));
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
        let next = devices
            .iter()
            .filter(|d| d.sync == SyncState::Pending)
            .min_by_key(|d| (d.desired == Desired::Present, d.device_id.clone()));
        let Some(d) = next else {
            // Everything agrees: activate a pending credential whose devices all hold it.
            let mut uow = unit(entry, fence, now);
            if cred.state() == KeyCredentialState::Pending
                && devices
                    .iter()
                    .all(|d| d.desired == Desired::Present && d.sync == SyncState::Confirmed)
            {
                cred.mark_active(now).map_err(domain_err)?;
                observe(entry, &cred, &mut uow);
                flush_events(&mut cred, &mut uow);
                uow.credentials.push(CredentialWrite {
                    snapshot: cred.snapshot(),
                    expected_version: Some(expected),
                });
            }
            uow.mailbox.push(done(entry, "applied"));
            db.commit(uow).await?;
            rt.metrics
                .saga_steps
                .with_label_values(&["drive", "applied"])
                .inc();
            return Ok(());
        };
        let adapter = d.vendor_adapter_id.clone();
        let req = issue_request(&cred, d);
        let mut uow = unit(entry, fence, now);
        let mut w = DeviceSyncWrite::from_current(d);
        let holds = matches!(
            cred.state(),
            KeyCredentialState::Requested
                | KeyCredentialState::Pending
                | KeyCredentialState::Active
        );
        if d.desired == Desired::Absent || !holds {
            let vref = match &d.vendor_ref {
                Some(v) => Some(v.clone()),
                // a previous issue attempt may have reached the vendor: look first
                None if d.attempts > 0 => {
                    vendor_find(rt, db, &adapter, &req).await.map_err(retry)?
                }
                None => None,
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
        if let Some(v) = &d.vendor_ref {
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
        if d.attempts > 0 && !fresh {
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
        // Something new for the door waits while the account drains its removals or is
        // held (DESIGN §7); asked before an attempt is committed, so it costs none.
        if let Some(why) = rt.ports.addition_gate(&adapter) {
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
        // that reached the vendor and failed there, not waits behind an open breaker or a
        // held account, nor time (a 12-hour outage costs no budget).
        if d.attempts >= rt.settings.max_issue_attempts
            && cred.state() != KeyCredentialState::Active
        {
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
        // Commit the intent (and requested → pending) before the call, unless the
        // decision committed it.
        let mut expected = expected;
        if !fresh {
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
                let last = cred.state() == KeyCredentialState::Pending
                    && devices.iter().all(|x| {
                        x.device_id == device
                            || (x.desired == Desired::Present && x.sync == SyncState::Confirmed)
                    });
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
                    uow.mailbox.push(done(entry, "applied"));
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
                if w.pin_collisions >= MAX_PIN_COLLISIONS {
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

async fn refail(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &MailboxEntry,
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
    entry: &MailboxEntry,
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
