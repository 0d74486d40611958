//! Carries out one mailbox entry: a consumed event (decided by the domain saga) or a drive
//! of a credential's vendor operations. Every step ends in one [`Store::commit`]; every
//! vendor call is preceded by a commit of its intent (DESIGN §3.4) and, when a previous
//! attempt may have reached the vendor, by a reconcile (`find`) so a retry never creates a
//! second credential at the door.

use std::time::Duration;

use lockstep_domain::saga::{self, Decision, ReservationSaga, SagaCommand};
use lockstep_domain::{
    FailureReason, HolderKind, IssueIntent, KeyCredential, KeyCredentialId, KeyCredentialKind,
    KeyCredentialState, Pin, ScopedRoom, Timestamp, VendorCode,
};
use lockstep_persistence::{
    AuditRow, CredentialDevice, CredentialWrite, Desired, DeviceSyncWrite, MailboxEntry,
    MailboxKind, MailboxUpdate, ScheduleDrive, StoreError, SyncState, UnitOfWork,
};
use lockstep_vendors::{IssueRequest, LockPort, VendorError};
use rand::Rng;
use serde_json::json;

use crate::events_in;
use crate::events_out;
use crate::runtime::Runtime;

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
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Fenced => StepError::Fenced,
            other => StepError::Retry(other.to_string()),
        }
    }
}

/// The delay before retry number `attempt` (1-based): exponential from `base`, capped,
/// with full jitter so a recovering vendor is not hit by a synchronized wave.
pub fn backoff(rt: &Runtime, attempt: i32) -> Duration {
    let base = rt.settings.retry_base.as_millis() as u64;
    let cap = rt.settings.retry_cap.as_millis() as u64;
    let exp = base
        .saturating_mul(1u64 << attempt.clamp(0, 20))
        .min(cap)
        .max(1);
    Duration::from_millis(rand::thread_rng().gen_range(exp / 2..=exp))
}

fn later(now: Timestamp, d: Duration) -> Timestamp {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(300))
}

/// Runs one mailbox entry to its commit.
pub async fn run(rt: &Runtime, entry: &MailboxEntry) -> Result<(), StepError> {
    match &entry.kind {
        MailboxKind::Event { topic, .. } => on_event(rt, entry, topic).await,
        MailboxKind::Drive { credential_id } => drive(rt, entry, credential_id).await,
    }
}

/// Records a failed step as a durable timer: the entry comes due again after a backoff.
pub async fn reschedule(rt: &Runtime, entry: &MailboxEntry, error: &str) -> Result<(), StepError> {
    let now = rt.clock.now();
    let attempts = entry.attempts + 1;
    let mut uow = UnitOfWork::new(entry.tenant_id, rt.fences.for_commit(entry.partition), now);
    uow.mailbox.push(MailboxUpdate::Retry {
        id: entry.id,
        due_at: later(now, backoff(rt, attempts)),
        attempts,
        last_error: error.chars().take(500).collect(),
    });
    rt.store.commit(uow).await?;
    Ok(())
}

fn saga_to_json(s: &ReservationSaga) -> serde_json::Value {
    json!({
        "revision": s.revision,
        "cancelled": s.cancelled,
        "credentialId": s.credential.as_ref().map(|(id, _)| id.as_str()),
    })
}

async fn load_saga(rt: &Runtime, entry: &MailboxEntry) -> Result<ReservationSaga, StepError> {
    let Some(v) = rt.store.load_saga(entry.tenant_id, &entry.subject).await? else {
        return Ok(ReservationSaga::default());
    };
    let credential = match v.get("credentialId").and_then(|c| c.as_str()) {
        Some(id) => {
            let id = KeyCredentialId::parse(id)
                .map_err(|e| StepError::Retry(format!("corrupt saga state: {e:?}")))?;
            // The saga decides on the credential's current state, read from its row.
            let state = rt
                .store
                .get_credential(entry.tenant_id, &id)
                .await?
                .map(|c| c.state())
                .ok_or_else(|| StepError::Retry("saga names a missing credential".into()))?;
            Some((id, state))
        }
        None => None,
    };
    Ok(ReservationSaga {
        revision: v.get("revision").and_then(|r| r.as_i64()),
        cancelled: v
            .get("cancelled")
            .and_then(|c| c.as_bool())
            .unwrap_or(false),
        credential,
    })
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

fn write_credential(c: &KeyCredential, expected: Option<i64>) -> CredentialWrite {
    CredentialWrite {
        snapshot: c.snapshot(),
        expected_version: expected,
    }
}

async fn on_event(rt: &Runtime, entry: &MailboxEntry, topic: &str) -> Result<(), StepError> {
    let now = rt.clock.now();
    let fence = rt.fences.for_commit(entry.partition);
    let mut uow = UnitOfWork::new(entry.tenant_id, fence, now);
    let parsed = match events_in::parse(&entry.payload) {
        Ok(p) => p,
        Err(e) => {
            // Intake validated it; a stored entry that no longer parses is recorded, not retried.
            uow.mailbox.push(MailboxUpdate::Done {
                id: entry.id,
                outcome: format!("rejected:{}", e.label()),
            });
            rt.store.commit(uow).await?;
            rt.metrics
                .saga_steps
                .with_label_values(&[topic_step(topic), "rejected"])
                .inc();
            return Ok(());
        }
    };
    let state = load_saga(rt, entry).await?;
    match saga::decide(&state, &parsed.event) {
        Decision::Ignore(why) => {
            uow.mailbox.push(MailboxUpdate::Done {
                id: entry.id,
                outcome: format!("ignored:{why:?}").to_lowercase(),
            });
            rt.store.commit(uow).await?;
            rt.metrics
                .saga_steps
                .with_label_values(&[topic_step(topic), "ignored"])
                .inc();
            Ok(())
        }
        Decision::Apply { mut next, commands } => {
            for cmd in commands {
                match cmd {
                    SagaCommand::Issue {
                        kind,
                        guest_id,
                        rooms,
                        validity,
                    } => {
                        let devices = rt
                            .store
                            .devices_for_rooms(entry.tenant_id, &entry.property_id, &rooms)
                            .await?;
                        let served: std::collections::BTreeSet<_> = devices
                            .iter()
                            .flat_map(|d| d.rooms.iter().cloned())
                            .collect();
                        let adapter = devices
                            .first()
                            .map(|d| (d.vendor, d.vendor_adapter_id.clone()));
                        let (vendor, adapter_id) = match adapter {
                            Some(a) => a,
                            None => (
                                VendorCode::Ttlock,
                                lockstep_domain::VendorAdapterId::from_ulid(ulid::Ulid::nil()),
                            ),
                        };
                        let intent = IssueIntent {
                            id: KeyCredentialId::generate(),
                            tenant_id: entry.tenant_id,
                            property_id: entry.property_id.clone(),
                            holder_kind: HolderKind::Guest,
                            reservation_id: Some(
                                lockstep_domain::ReservationId::parse(
                                    entry.subject.trim_start_matches("reservation:"),
                                )
                                .map_err(|e| StepError::Retry(format!("{e:?}")))?,
                            ),
                            guest_id: Some(guest_id),
                            staff_user_id: None,
                            kind,
                            // I-11: the rooms were resolved in this tenant's and property's registry.
                            rooms: rooms
                                .iter()
                                .map(|r| ScopedRoom {
                                    tenant_id: entry.tenant_id,
                                    property_id: entry.property_id.clone(),
                                    room_id: r.clone(),
                                })
                                .collect(),
                            scope: Default::default(),
                            validity,
                            vendor,
                            vendor_adapter_id: adapter_id,
                            provisional: false,
                            idempotency_key: parsed.message_id.clone(),
                            replaces_id: None,
                            trace_id: parsed.trace_id.clone(),
                        };
                        let mut cred = KeyCredential::request(intent, now)
                            .map_err(|e| StepError::Retry(format!("{e:?}")))?;
                        let all_served = rooms.iter().all(|r| served.contains(r));
                        if !all_served || kind != KeyCredentialKind::PinCode {
                            let reason = if all_served {
                                FailureReason::KindUnsupported
                            } else {
                                FailureReason::NoCapableDevice
                            };
                            cred.mark_failed(reason, now)
                                .map_err(|e| StepError::Retry(format!("{e:?}")))?;
                        } else {
                            for d in &devices {
                                uow.devices.push(DeviceSyncWrite {
                                    credential_id: cred.id().clone(),
                                    device_id: d.id.clone(),
                                    desired: Desired::Present,
                                    sync: SyncState::Pending,
                                    pin: Some(Pin::generate(Pin::DEFAULT_LEN)),
                                    vendor_ref: None,
                                    attempts: 0,
                                    pin_collisions: 0,
                                    last_error: None,
                                });
                            }
                            uow.schedule.push(ScheduleDrive {
                                property_id: entry.property_id.clone(),
                                partition: entry.partition,
                                subject: entry.subject.clone(),
                                credential_id: cred.id().clone(),
                                due_at: now,
                            });
                        }
                        next.credential = Some((cred.id().clone(), cred.state()));
                        flush_events(&mut cred, &mut uow);
                        uow.credential = Some(write_credential(&cred, None));
                    }
                    SagaCommand::Revoke {
                        credential_id,
                        reason,
                    } => {
                        let mut cred = rt
                            .store
                            .get_credential(entry.tenant_id, &credential_id)
                            .await?
                            .ok_or_else(|| StepError::Retry("credential vanished".into()))?;
                        let expected = cred.version();
                        cred.set_trace_id(parsed.trace_id.clone());
                        cred.revoke(reason, now)
                            .map_err(|e| StepError::Retry(format!("{e:?}")))?;
                        let devices = rt
                            .store
                            .credential_devices(entry.tenant_id, &credential_id)
                            .await?;
                        plan_removal(&devices, &mut uow);
                        if uow.devices.iter().any(|d| d.sync == SyncState::Pending) {
                            uow.schedule.push(ScheduleDrive {
                                property_id: entry.property_id.clone(),
                                partition: entry.partition,
                                subject: entry.subject.clone(),
                                credential_id: credential_id.clone(),
                                due_at: now,
                            });
                        }
                        flush_events(&mut cred, &mut uow);
                        uow.credential = Some(write_credential(&cred, Some(expected)));
                    }
                    SagaCommand::FailCancelledMidFlight { credential_id } => {
                        let mut cred = rt
                            .store
                            .get_credential(entry.tenant_id, &credential_id)
                            .await?
                            .ok_or_else(|| StepError::Retry("credential vanished".into()))?;
                        let expected = cred.version();
                        cred.set_trace_id(parsed.trace_id.clone());
                        cred.mark_failed(FailureReason::CancelledMidFlight, now)
                            .map_err(|e| StepError::Retry(format!("{e:?}")))?;
                        let devices = rt
                            .store
                            .credential_devices(entry.tenant_id, &credential_id)
                            .await?;
                        plan_removal(&devices, &mut uow);
                        flush_events(&mut cred, &mut uow);
                        uow.credential = Some(write_credential(&cred, Some(expected)));
                    }
                }
            }
            uow.saga = Some((entry.subject.clone(), saga_to_json(&next)));
            uow.mailbox.push(MailboxUpdate::Done {
                id: entry.id,
                outcome: "applied".into(),
            });
            rt.store.commit(uow).await?;
            rt.metrics
                .saga_steps
                .with_label_values(&[topic_step(topic), "applied"])
                .inc();
            Ok(())
        }
    }
}

/// Every device should lose the credential. A device never called (attempts 0) holds
/// nothing: confirmed absent at once. Otherwise a delete is pending.
fn plan_removal(devices: &[CredentialDevice], uow: &mut UnitOfWork) {
    for d in devices {
        let mut w = DeviceSyncWrite::from_current(d);
        w.desired = Desired::Absent;
        w.sync = if d.attempts == 0 && d.vendor_ref.is_none() {
            SyncState::Confirmed
        } else {
            SyncState::Pending
        };
        uow.devices.push(w);
    }
}

fn topic_step(topic: &str) -> &'static str {
    match topic {
        events_in::RESERVATION_CONFIRMED => "reservation_confirmed",
        events_in::RESERVATION_CANCELLED => "reservation_cancelled",
        _ => "other",
    }
}

fn issue_request(cred: &KeyCredential, d: &CredentialDevice) -> IssueRequest {
    IssueRequest {
        device: d.device_ref.clone(),
        kind: cred.kind(),
        label: cred.id().as_str().to_owned(),
        pin: d.pin.clone(),
        validity: cred.validity(),
    }
}

async fn timed<T>(
    rt: &Runtime,
    port: &dyn LockPort,
    op: &'static str,
    fut: impl std::future::Future<Output = Result<T, VendorError>>,
) -> Result<T, VendorError> {
    let vendor = port.vendor().as_str();
    // A latency histogram measures real elapsed time, whatever the business clock says.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let res = match tokio::time::timeout(rt.settings.vendor_call_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(VendorError::Unavailable {
            detail: format!("{op} timed out"),
        }),
    };
    rt.metrics
        .vendor_call_seconds
        .with_label_values(&[vendor, op])
        .observe(started.elapsed().as_secs_f64());
    let outcome = match &res {
        Ok(_) => "ok",
        Err(VendorError::Unavailable { .. }) => "unavailable",
        Err(VendorError::RateLimited { .. }) => "rate_limited",
        Err(VendorError::PinCollision) => "pin_collision",
        Err(VendorError::Refused { .. }) => "refused",
        Err(VendorError::Auth { .. }) => "auth",
        Err(VendorError::NotFound) => "not_found",
    };
    rt.metrics
        .vendor_calls
        .with_label_values(&[vendor, op, outcome])
        .inc();
    res
}

/// Drives a credential's per-device vendor operations until every device agrees with what
/// is desired, one vendor call and one commit at a time; revocations before issuances.
async fn drive(
    rt: &Runtime,
    entry: &MailboxEntry,
    credential_id: &KeyCredentialId,
) -> Result<(), StepError> {
    loop {
        let now = rt.clock.now();
        let fence = rt.fences.for_commit(entry.partition);
        let Some(mut cred) = rt
            .store
            .get_credential(entry.tenant_id, credential_id)
            .await?
        else {
            let mut uow = UnitOfWork::new(entry.tenant_id, fence, now);
            uow.mailbox.push(MailboxUpdate::Done {
                id: entry.id,
                outcome: "missing".into(),
            });
            rt.store.commit(uow).await?;
            return Ok(());
        };
        let expected = cred.version();
        let devices = rt
            .store
            .credential_devices(entry.tenant_id, credential_id)
            .await?;
        let next = devices
            .iter()
            .filter(|d| d.sync == SyncState::Pending)
            .min_by_key(|d| (d.desired == Desired::Present, d.device_id.clone()));
        let Some(d) = next else {
            // Everything agrees: activate a pending credential whose devices all hold it.
            let mut uow = UnitOfWork::new(entry.tenant_id, fence, now);
            if cred.state() == KeyCredentialState::Pending
                && devices
                    .iter()
                    .all(|d| d.desired == Desired::Present && d.sync == SyncState::Confirmed)
            {
                cred.mark_active(now)
                    .map_err(|e| StepError::Retry(format!("{e:?}")))?;
                flush_events(&mut cred, &mut uow);
                uow.credential = Some(write_credential(&cred, Some(expected)));
            }
            uow.mailbox.push(MailboxUpdate::Done {
                id: entry.id,
                outcome: "applied".into(),
            });
            rt.store.commit(uow).await?;
            rt.metrics
                .saga_steps
                .with_label_values(&["drive", "applied"])
                .inc();
            return Ok(());
        };
        let port = rt
            .ports
            .get(&d.vendor_adapter_id)
            .ok_or_else(|| StepError::Retry("no adapter registered for device".into()))?;
        let req = issue_request(&cred, d);
        let mut uow = UnitOfWork::new(entry.tenant_id, fence, now);
        let mut w = DeviceSyncWrite::from_current(d);
        match d.desired {
            Desired::Absent => {
                let vref = match &d.vendor_ref {
                    Some(v) => Some(v.clone()),
                    // a previous issue attempt may have reached the vendor: look first
                    None if d.attempts > 0 => timed(rt, port.as_ref(), "find", port.find(&req))
                        .await
                        .map_err(retry)?,
                    None => None,
                };
                if let Some(v) = &vref {
                    match timed(rt, port.as_ref(), "revoke", port.revoke(&d.device_ref, v)).await {
                        Ok(()) | Err(VendorError::NotFound) => {}
                        Err(e) => return Err(retry(e)),
                    }
                }
                w.sync = SyncState::Confirmed;
                w.last_error = None;
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
                rt.store.commit(uow).await?;
            }
            Desired::Present => {
                if cred.state() != KeyCredentialState::Requested
                    && cred.state() != KeyCredentialState::Pending
                {
                    return Err(StepError::Retry(format!(
                        "credential {} cannot be issued",
                        cred.state().as_str()
                    )));
                }
                // Reconcile before retrying: a call that may have landed is looked up first.
                if d.attempts > 0 {
                    if let Some(v) = timed(rt, port.as_ref(), "find", port.find(&req))
                        .await
                        .map_err(retry)?
                    {
                        w.vendor_ref = Some(v);
                        w.sync = SyncState::Confirmed;
                        w.last_error = None;
                        uow.devices.push(w);
                        rt.store.commit(uow).await?;
                        continue;
                    }
                }
                // The saga's retries are exhausted: fail and clean up (failed.v1).
                if entry.attempts >= rt.settings.max_issue_attempts {
                    fail_credential(
                        rt,
                        entry,
                        &mut cred,
                        expected,
                        &devices,
                        FailureReason::VendorUnreachable,
                    )
                    .await?;
                    continue;
                }
                // Commit the intent (and requested → pending) before the call.
                if cred.state() == KeyCredentialState::Requested {
                    cred.mark_pending(now)
                        .map_err(|e| StepError::Retry(format!("{e:?}")))?;
                    uow.credential = Some(write_credential(&cred, Some(expected)));
                }
                w.attempts += 1;
                uow.devices.push(w.clone());
                rt.store.commit(uow).await?;
                match timed(rt, port.as_ref(), "issue", port.issue(&req)).await {
                    Ok(vref) => {
                        rt.failpoints.after_vendor_issue().await;
                        let mut uow = UnitOfWork::new(
                            entry.tenant_id,
                            rt.fences.for_commit(entry.partition),
                            rt.clock.now(),
                        );
                        w.vendor_ref = Some(vref);
                        w.sync = SyncState::Confirmed;
                        w.last_error = None;
                        uow.devices.push(w);
                        rt.store.commit(uow).await?;
                    }
                    Err(VendorError::PinCollision) => {
                        let mut uow = UnitOfWork::new(
                            entry.tenant_id,
                            rt.fences.for_commit(entry.partition),
                            rt.clock.now(),
                        );
                        w.pin_collisions += 1;
                        if w.pin_collisions >= MAX_PIN_COLLISIONS {
                            uow.devices.push(w);
                            rt.store.commit(uow).await?;
                            let mut cred = rt
                                .store
                                .get_credential(entry.tenant_id, credential_id)
                                .await?
                                .ok_or_else(|| StepError::Retry("credential vanished".into()))?;
                            let expected = cred.version();
                            let devices = rt
                                .store
                                .credential_devices(entry.tenant_id, credential_id)
                                .await?;
                            fail_credential(
                                rt,
                                entry,
                                &mut cred,
                                expected,
                                &devices,
                                FailureReason::PinCollisionExhausted,
                            )
                            .await?;
                        } else {
                            // The refused call created nothing: a fresh PIN, attempts reset.
                            w.pin = Some(Pin::generate(Pin::DEFAULT_LEN));
                            w.attempts = 0;
                            uow.devices.push(w);
                            rt.store.commit(uow).await?;
                        }
                    }
                    Err(e) if e.is_retryable() => {
                        // Door truth shows why it is still pending.
                        let mut uow = UnitOfWork::new(
                            entry.tenant_id,
                            rt.fences.for_commit(entry.partition),
                            rt.clock.now(),
                        );
                        w.last_error = Some(e.to_string());
                        uow.devices.push(w);
                        rt.store.commit(uow).await?;
                        return Err(retry(e));
                    }
                    Err(_) => {
                        let mut cred = rt
                            .store
                            .get_credential(entry.tenant_id, credential_id)
                            .await?
                            .ok_or_else(|| StepError::Retry("credential vanished".into()))?;
                        let expected = cred.version();
                        let devices = rt
                            .store
                            .credential_devices(entry.tenant_id, credential_id)
                            .await?;
                        fail_credential(
                            rt,
                            entry,
                            &mut cred,
                            expected,
                            &devices,
                            FailureReason::VendorRefused,
                        )
                        .await?;
                    }
                }
            }
        }
    }
}

fn retry(e: VendorError) -> StepError {
    StepError::Retry(e.to_string())
}

/// Fails the credential and removes it from every device that may hold it (compensation).
async fn fail_credential(
    rt: &Runtime,
    entry: &MailboxEntry,
    cred: &mut KeyCredential,
    expected: i64,
    devices: &[CredentialDevice],
    reason: FailureReason,
) -> Result<(), StepError> {
    let now = rt.clock.now();
    let mut uow = UnitOfWork::new(entry.tenant_id, rt.fences.for_commit(entry.partition), now);
    cred.mark_failed(reason, now)
        .map_err(|e| StepError::Retry(format!("{e:?}")))?;
    plan_removal(devices, &mut uow);
    flush_events(cred, &mut uow);
    uow.credential = Some(write_credential(cred, Some(expected)));
    rt.store.commit(uow).await?;
    Ok(())
}
