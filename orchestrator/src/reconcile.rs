//! The host's reconciler of provisional credentials (spec `003` §5, I-7, O-2, O-3; DESIGN
//! §8): each credential a desktop minted offline and synced on reconnect is judged once
//! and its verdict stored with what it caused, in one transaction of the tenant.
//!
//! A valid one (its certificate known, of this tenant and property, in force when it was
//! minted and unrevoked; its signature verifying with the key the certificate binds; its
//! window within the certificate's cap and I-7's 48 h, starting no earlier than the
//! certificate; its kind allowed by the certificate and the property's policy; its stay
//! known) becomes an active `KeyCredential` with `provisional = true`, through the same
//! aggregate, outbox and audit rows as the saga's, and the same I-9 exclusion at commit.
//! Anything else is `revoked`, with a reason and `revoked.v1` (`wasProvisional = true`),
//! and no credential. The same item sent again is answered from the stored verdict.
//!
//! O-2: [`cascade_certificate_revocation`] revokes every credential a revoked certificate
//! minted that was materialized, and sends each to its stay's saga for forced re-issue
//! (`lockstep.internal.reissue_provisional`).

use std::sync::Arc;

use async_trait::async_trait;
use lockstep_actors::events_out;
use lockstep_domain::{
    Clock, DomainEventKind, GuestId, HolderKind, IssueIntent, KeyCredential, KeyCredentialId,
    KeyCredentialKind, KeyCredentialScope, OfflineIssuance, PropertyId, ReservationId,
    RevokeReason, RoomId, ScopedRoom, TenantId, Timestamp, ValidityWindow, VendorAdapterId,
    VendorCode,
};
use lockstep_persistence::{
    AuditRow, CredentialWrite, InternalEvent, OutboxRow, ProvisionalRecord, ProvisionalTable as _,
    ProvisionalVerdict, ReadOnlyCredentialTable as _, ReadOnlyMailboxTable as _,
    ReadOnlyProvisionalTable as _, Store, StoreError, UnitOfWork,
};
use lockstep_relay::protocol::{ProvisionalCredential, SyncItem, SyncOutcome};
use lockstep_relay::reconcile::{DesktopIdentity, Reconciler};
use serde_json::json;
use tracing::{info, warn};

/// I-7: a provisional credential is valid for at most 48 hours.
const MAX_WINDOW_HOURS: i64 = 48;

/// The reconciler the node's relay hands provisional batches to.
#[derive(Clone)]
pub struct HostReconciler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    outbox_ready: Option<Arc<tokio::sync::Notify>>,
}

impl std::fmt::Debug for HostReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostReconciler").finish_non_exhaustive()
    }
}

/// What judging one item decided (before it is stored).
struct Judged {
    verdict: ProvisionalVerdict,
    reason: Option<&'static str>,
    /// When valid: the credential to materialize.
    credential: Option<KeyCredential>,
    /// Where a refused item's event names its vendor.
    vendor: VendorCode,
}

impl Judged {
    fn refuse(verdict: ProvisionalVerdict, reason: &'static str) -> Self {
        Self {
            verdict,
            reason: Some(reason),
            credential: None,
            vendor: VendorCode::GenericWiegand,
        }
    }
}

impl HostReconciler {
    /// A reconciler on the node's store and business clock.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            outbox_ready: None,
        }
    }

    /// Wakes the outbox publisher when verdicts put events in the outbox.
    pub fn with_outbox_ready(mut self, ready: Arc<tokio::sync::Notify>) -> Self {
        self.outbox_ready = Some(ready);
        self
    }

    /// Verdict of one item: the stored one when it was judged before.
    async fn one(
        &self,
        desktop: &DesktopIdentity,
        item: &ProvisionalCredential,
    ) -> Result<SyncItem, StoreError> {
        let tenant = desktop.tenant_id;
        {
            let mut tx = self.store.read(tenant).await?;
            let known = tx
                .provisional(&item.certificate_id, item.provisional_id.as_str())
                .await?;
            drop(tx);
            if let Some(p) = known {
                return Ok(answer(item, &p));
            }
        }
        let now = self.clock.now();
        let judged = self.judge(desktop, item).await?;
        let first = self.store_verdict(desktop, item, judged, now).await;
        let record = match first {
            Err(StoreError::Overlap) => {
                // I-9: another stay's live credential holds a room for an overlapping
                // window: the newcomer is refused, like the saga's would fail.
                let refused = Judged::refuse(ProvisionalVerdict::Invalid, "room_overlap");
                self.store_verdict(desktop, item, refused, now).await?
            }
            other => other?,
        };
        Ok(answer(item, &record))
    }

    /// Checks an item against its certificate, the policy and the stay.
    async fn judge(
        &self,
        desktop: &DesktopIdentity,
        item: &ProvisionalCredential,
    ) -> Result<Judged, StoreError> {
        use ProvisionalVerdict::{Forged, Invalid};
        let tenant = desktop.tenant_id;
        let property = &desktop.property_id;
        let Some(cert) = self
            .store
            .offline_cert(tenant, &item.certificate_id)
            .await?
        else {
            return Ok(Judged::refuse(Forged, "unknown_certificate"));
        };
        if cert.tenant_id != tenant || &cert.property_id != property {
            return Ok(Judged::refuse(Invalid, "wrong_property"));
        }
        if !signature_verifies(&cert, item) {
            return Ok(Judged::refuse(Forged, "bad_signature"));
        }
        // In force when minted (the domain's rule): a revocation that doubts the key (O-2)
        // vouches for nothing; a rotation only for what was minted before it.
        match cert.vouches_for(item.minted_at) {
            Ok(()) => {}
            Err(lockstep_domain::Unvouched::Revoked) => {
                return Ok(Judged::refuse(Invalid, "certificate_revoked"))
            }
            Err(lockstep_domain::Unvouched::OutsideTerm) => {
                return Ok(Judged::refuse(Invalid, "certificate_expired"))
            }
        }
        let cap = cert.max_valid_window_hours.min(MAX_WINDOW_HOURS);
        if item.valid_until <= item.valid_from
            || item.valid_until - item.valid_from > chrono::Duration::hours(cap)
        {
            return Ok(Judged::refuse(Invalid, "window_exceeded"));
        }
        if item.valid_from < cert.issued_at {
            return Ok(Judged::refuse(Invalid, "window_before_certificate"));
        }
        let Ok(kind) = KeyCredentialKind::parse(&item.kind) else {
            return Ok(Judged::refuse(Invalid, "kind_not_allowed"));
        };
        let policy_allows = self
            .store
            .get_policy(tenant, property)
            .await?
            .is_some_and(|p| {
                p.allow_offline_issuance_kinds
                    .iter()
                    .any(|k| k == &item.kind)
            });
        if !cert.allowed_kinds.contains(&kind) || !policy_allows {
            return Ok(Judged::refuse(Invalid, "kind_not_allowed"));
        }
        // The stay: a guest credential needs its reservation and guest (I-2), and rooms of
        // this property with a lock (I-11, I-12).
        let Some(reservation) = item
            .reservation_id
            .as_deref()
            .and_then(|r| ReservationId::parse(r).ok())
        else {
            return Ok(Judged::refuse(Invalid, "unknown_reservation"));
        };
        let Some(guest) = self.guest_of(tenant, &reservation).await? else {
            return Ok(Judged::refuse(Invalid, "unknown_reservation"));
        };
        let mut rooms = Vec::with_capacity(item.room_ids.len());
        for r in &item.room_ids {
            match RoomId::parse(r) {
                Ok(r) => rooms.push(r),
                Err(_) => return Ok(Judged::refuse(Invalid, "unknown_room")),
            }
        }
        let known = self.store.property_rooms(tenant, property).await?;
        if rooms.is_empty() || rooms.iter().any(|r| !known.contains(r)) {
            return Ok(Judged::refuse(Invalid, "unknown_room"));
        }
        let devices = self
            .store
            .devices_for_rooms(tenant, property, &rooms)
            .await?;
        let (vendor, adapter) = devices
            .iter()
            .find(|d| d.vendor == VendorCode::GenericWiegand)
            .or_else(|| devices.first())
            .map(|d| (d.vendor, d.vendor_adapter_id.clone()))
            .unwrap_or((
                VendorCode::GenericWiegand,
                VendorAdapterId::from_ulid(ulid::Ulid::nil()),
            ));
        let Ok(validity) = ValidityWindow::new(item.valid_from, item.valid_until) else {
            return Ok(Judged::refuse(Invalid, "window_exceeded"));
        };
        let now = self.clock.now();
        let mut cred = match KeyCredential::request(
            IssueIntent {
                id: KeyCredentialId::generate(),
                tenant_id: tenant,
                property_id: property.clone(),
                holder_kind: HolderKind::Guest,
                reservation_id: Some(reservation),
                guest_id: Some(guest),
                staff_user_id: None,
                kind,
                rooms: rooms
                    .iter()
                    .map(|r| ScopedRoom {
                        tenant_id: tenant,
                        property_id: property.clone(),
                        room_id: r.clone(),
                    })
                    .collect(),
                scope: KeyCredentialScope::default(),
                validity,
                vendor,
                vendor_adapter_id: adapter,
                provisional: true,
                idempotency_key: format!("provisional:{}:{}", cert.id, item.provisional_id),
                replaces_id: None,
                trace_id: None,
            },
            now,
        ) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "a provisional credential the domain refuses");
                return Ok(Judged::refuse(Invalid, "invalid_credential"));
            }
        };
        // Minted and handed over at the desk: it is at the door already.
        let issued = cred
            .mark_pending(now)
            .and_then(|_| cred.mark_active(now))
            .is_ok();
        if !issued {
            return Ok(Judged::refuse(Invalid, "invalid_credential"));
        }
        Ok(Judged {
            verdict: ProvisionalVerdict::Valid,
            reason: None,
            credential: Some(cred),
            vendor,
        })
    }

    /// The guest of a stay Lockstep knows (its saga, from the confirm).
    async fn guest_of(
        &self,
        tenant: TenantId,
        reservation: &ReservationId,
    ) -> Result<Option<GuestId>, StoreError> {
        let subject = format!("reservation:{reservation}");
        let Some(v) = self.store.load_saga(tenant, &subject).await? else {
            return Ok(None);
        };
        let Ok(saga) = lockstep_actors::saga_codec::reservation_from_json(&v) else {
            return Ok(None);
        };
        if saga.ended.is_some() {
            return Ok(None);
        }
        Ok(saga.guest_id)
    }

    /// Stores the verdict with what it causes, in one transaction: the credential, its
    /// events and audit rows when valid; `revoked.v1` when not. An item stored by a
    /// concurrent sync in between is answered from what that one stored.
    async fn store_verdict(
        &self,
        desktop: &DesktopIdentity,
        item: &ProvisionalCredential,
        judged: Judged,
        now: Timestamp,
    ) -> Result<ProvisionalRecord, StoreError> {
        let tenant = desktop.tenant_id;
        let mut uow = UnitOfWork::new(tenant, None, now);
        // a materialized credential's end: (id, valid until, stay)
        let mut expiry: Option<(KeyCredentialId, Timestamp, ReservationId)> = None;
        let credential_id = match judged.credential {
            Some(mut cred) => {
                if let Some(r) = cred.reservation_id() {
                    expiry = Some((cred.id().clone(), cred.validity().until(), r.clone()));
                }
                for e in cred.take_pending_events() {
                    uow.outbox.push(events_out::outbox_row(&e, now));
                    uow.audit.push(audit(
                        tenant,
                        &desktop.property_id,
                        Some(cred.id().clone()),
                        Some(cred.vendor()),
                        e.kind.audit_action(),
                        e.kind.reason(),
                        now,
                        json!({
                            "version": e.version,
                            "provisional": true,
                            "certificateId": item.certificate_id,
                            "provisionalId": item.provisional_id.as_str(),
                            "desktopDeviceId": desktop.desktop_device_id,
                        }),
                    ));
                }
                let id = cred.id().clone();
                uow.credentials.push(CredentialWrite {
                    snapshot: cred.snapshot(),
                    expected_version: None,
                });
                id
            }
            None => {
                let id = KeyCredentialId::generate();
                if let Some(row) = refused_event(desktop, item, &id, judged.vendor, now) {
                    uow.outbox.push(row);
                }
                uow.audit.push(audit(
                    tenant,
                    &desktop.property_id,
                    None,
                    None,
                    "provisional_refused",
                    judged.reason,
                    now,
                    json!({
                        "keyId": id.as_str(),
                        "certificateId": item.certificate_id,
                        "provisionalId": item.provisional_id.as_str(),
                        "desktopDeviceId": desktop.desktop_device_id,
                    }),
                ));
                id
            }
        };
        let record = ProvisionalRecord {
            id: ulid::Ulid::new().to_string(),
            tenant_id: tenant,
            certificate_id: item.certificate_id.clone(),
            provisional_id: item.provisional_id.as_str().to_owned(),
            property_id: desktop.property_id.clone(),
            desktop_device_id: desktop.desktop_device_id.clone(),
            kind: item.kind.clone(),
            reservation_id: item.reservation_id.clone(),
            room_ids: item.room_ids.clone(),
            valid_from: item.valid_from,
            valid_until: item.valid_until,
            minted_at: item.minted_at,
            card_number: item.card_number.as_ref().map(|c| c.expose().to_owned()),
            signature: item.signature.as_str().to_owned(),
            verdict: judged.verdict,
            reason: judged.reason.map(str::to_owned),
            credential_id: Some(credential_id.as_str().to_owned()),
            handoff_message_id: None,
            verified_at: now,
            reissue_flagged_at: None,
            reissue_message_id: None,
        };
        let mut tx = self.store.begin(tenant, None).await?;
        if !tx.record_provisional(&record).await? {
            // judged by a concurrent sync: its verdict stands, nothing of ours is kept
            let stored = tx
                .provisional(&item.certificate_id, item.provisional_id.as_str())
                .await?;
            tx.rollback().await?;
            return stored.ok_or_else(|| StoreError::Corrupt("provisional vanished".into()));
        }
        // I-7: the stay's saga revokes it as `expired` at its end, like its own keys
        if let Some((id, until, reservation)) = expiry {
            let subject = format!("reservation:{reservation}");
            match tx.subject_partition(&subject).await? {
                Some(partition) => uow.events.push(InternalEvent {
                    property_id: desktop.property_id.clone(),
                    partition,
                    subject,
                    topic: lockstep_actors::events_in::INTERNAL_EXPIRE.into(),
                    payload: json!({ "credentialId": id.as_str() }),
                    due_at: until,
                }),
                None => warn!(
                    credential = %id,
                    "the stay's saga has no mailbox; the provisional key gets no expiry timer"
                ),
            }
        }
        tx.apply(&uow).await?;
        tx.commit().await?;
        info!(
            certificate = %item.certificate_id,
            verdict = record.verdict.as_str(),
            reason = record.reason.as_deref().unwrap_or(""),
            "provisional credential reconciled"
        );
        Ok(record)
    }
}

#[async_trait]
impl Reconciler for HostReconciler {
    async fn reconcile(
        &self,
        desktop: &DesktopIdentity,
        batch: &lockstep_relay::protocol::ProvisionalBatch,
    ) -> Vec<SyncItem> {
        let mut out = Vec::with_capacity(batch.items.len());
        for item in &batch.items {
            let verdict = match self.one(desktop, item).await {
                Ok(v) => v,
                Err(e) => {
                    // nothing stored: the desktop keeps it and sends it again
                    warn!(error = %e, "reconciling a provisional credential failed");
                    SyncItem {
                        provisional_id: item.provisional_id.clone(),
                        outcome: SyncOutcome::Deferred,
                        credential_id: None,
                        reason: Some("try_again".into()),
                    }
                }
            };
            out.push(verdict);
        }
        if let Some(ready) = &self.outbox_ready {
            ready.notify_one();
        }
        out
    }
}

/// Whether the item's signature verifies with the key its certificate binds.
fn signature_verifies(cert: &OfflineIssuance, item: &ProvisionalCredential) -> bool {
    use base64::Engine as _;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&cert.public_key_ed25519)
    else {
        return false;
    };
    let Ok(bytes) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        return false;
    };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&bytes) else {
        return false;
    };
    key.verify_strict(
        item.signed_payload().as_bytes(),
        &item.signature.to_signature(),
    )
    .is_ok()
}

fn answer(item: &ProvisionalCredential, p: &ProvisionalRecord) -> SyncItem {
    let valid = p.verdict == ProvisionalVerdict::Valid;
    SyncItem {
        provisional_id: item.provisional_id.clone(),
        outcome: if valid {
            SyncOutcome::Accepted
        } else {
            SyncOutcome::Revoked
        },
        credential_id: if valid { p.credential_id.clone() } else { None },
        reason: p.reason.clone(),
    }
}

#[allow(clippy::too_many_arguments)]
fn audit(
    tenant: TenantId,
    property: &PropertyId,
    credential_id: Option<KeyCredentialId>,
    vendor: Option<VendorCode>,
    action: &str,
    reason: Option<&str>,
    now: Timestamp,
    payload: serde_json::Value,
) -> AuditRow {
    AuditRow {
        id: ulid::Ulid::new().to_string(),
        tenant_id: tenant,
        property_id: property.clone(),
        credential_id,
        device_id: None,
        actor_kind: "reconciler".into(),
        action: action.into(),
        reason: reason.map(str::to_owned),
        vendor,
        trace_id: None,
        created_at: now,
        payload,
    }
}

/// `revoked.v1` for a provisional credential refused at sync: it never became a credential
/// here, so the event carries the id the refusal was recorded under. `None` when the item
/// names a kind no event can carry.
fn refused_event(
    desktop: &DesktopIdentity,
    item: &ProvisionalCredential,
    id: &KeyCredentialId,
    vendor: VendorCode,
    now: Timestamp,
) -> Option<OutboxRow> {
    let kind = KeyCredentialKind::parse(&item.kind).ok()?;
    let mut data = json!({
        "keyId": id.as_str(),
        "tenantId": desktop.tenant_id.to_string(),
        "propertyId": desktop.property_id.as_str(),
        "holderKind": HolderKind::Guest.as_str(),
        "kind": kind.as_str(),
        "roomIds": item.room_ids,
        "validFrom": item.valid_from.to_rfc3339(),
        "validUntil": item.valid_until.to_rfc3339(),
        "vendor": vendor.as_str(),
        "version": 1,
        "occurredAt": now.to_rfc3339(),
        "reason": RevokeReason::Security.as_str(),
        "metadata": { "wasProvisional": true },
    });
    if let (Some(r), Some(obj)) = (&item.reservation_id, data.as_object_mut()) {
        obj.insert("reservationId".into(), json!(r));
    }
    let subject = DomainEventKind::Revoked {
        reason: RevokeReason::Security,
    }
    .subject();
    let event_id = ulid::Ulid::new().to_string();
    let envelope = json!({
        "id": event_id,
        "subject": subject,
        "time": now.to_rfc3339(),
        "tenantId": desktop.tenant_id.to_string(),
        "propertyId": desktop.property_id.as_str(),
        "traceId": null,
        "data": data,
    });
    Some(OutboxRow {
        id: event_id,
        tenant_id: desktop.tenant_id,
        aggregate_id: id.as_str().to_owned(),
        topic: subject.to_owned(),
        payload: data,
        envelope,
        created_at: now,
        publish_attempts: 0,
    })
}

/// O-2: a revoked certificate's materialized provisional credentials are flagged and
/// revoked (`security`, `revoked.v1` with `wasProvisional = true`), each with its audit
/// rows, in one transaction with the flags. Answers how many were revoked; a second call
/// finds nothing left to flag.
pub async fn cascade_certificate_revocation(
    store: &dyn Store,
    tenant: TenantId,
    certificate_id: &str,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let mut attempt = 0;
    loop {
        match cascade_once(store, tenant, certificate_id, now).await {
            Err(e)
                if attempt < 4
                    && (e.is_transient() || matches!(e, StoreError::Conflict { .. })) =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn cascade_once(
    store: &dyn Store,
    tenant: TenantId,
    certificate_id: &str,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let mut tx = store.begin(tenant, None).await?;
    let flagged = tx
        .flag_provisionals_for_reissue(certificate_id, now)
        .await?;
    let mut uow = UnitOfWork::new(tenant, None, now);
    for p in &flagged {
        let Some(id) = p
            .credential_id
            .as_deref()
            .and_then(|c| KeyCredentialId::parse(c).ok())
        else {
            continue;
        };
        let Some(mut cred) = tx.get_credential(&id).await? else {
            continue;
        };
        let version = cred.version();
        if cred.is_terminal() {
            continue;
        }
        cred.revoke(RevokeReason::Security, now)
            .map_err(|e| StoreError::Constraint(e.to_string()))?;
        for e in cred.take_pending_events() {
            uow.outbox.push(events_out::outbox_row(&e, now));
            uow.audit.push(audit(
                tenant,
                &p.property_id,
                Some(id.clone()),
                Some(cred.vendor()),
                e.kind.audit_action(),
                e.kind.reason(),
                now,
                json!({
                    "version": e.version,
                    "provisional": true,
                    "certificateId": certificate_id,
                    "provisionalId": p.provisional_id,
                    "cascade": "certificate_revoked",
                }),
            ));
        }
        // O-2: flagged for forced re-issue; the stay's saga makes it its online check
        if let Some(reservation) = cred.reservation_id() {
            let subject = format!("reservation:{reservation}");
            match tx.subject_partition(&subject).await? {
                Some(partition) => uow.events.push(InternalEvent {
                    property_id: cred.property_id().clone(),
                    partition,
                    subject,
                    topic: lockstep_actors::events_in::INTERNAL_REISSUE_PROVISIONAL.into(),
                    payload: json!({ "credentialId": id.as_str() }),
                    due_at: now,
                }),
                None => warn!(
                    credential = %id,
                    "O-2: the stay's saga has no mailbox; its key is not re-issued"
                ),
            }
        }
        uow.credentials.push(CredentialWrite {
            snapshot: cred.snapshot(),
            expected_version: Some(version),
        });
    }
    let n = uow.credentials.len();
    tx.apply(&uow).await?;
    tx.commit().await?;
    if n > 0 {
        info!(
            certificate = certificate_id,
            revoked = n,
            "O-2: provisional credentials of a revoked certificate revoked"
        );
    }
    Ok(n)
}
