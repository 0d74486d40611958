//! Produced events: the envelope and payloads Lockstep publishes through the outbox
//! (`docs/events/lock.credential.*.schema.json`). Never a PIN, a vendorRef, or guest PII
//! (I-8, epic `000` "PII minimised in events").

use lockstep_domain::{DomainEvent, DomainEventKind, HolderKind, RevokeReason, Timestamp};
use lockstep_persistence::OutboxRow;
use serde_json::json;

/// The outbox row for a domain event.
pub fn outbox_row(e: &DomainEvent, created_at: Timestamp) -> OutboxRow {
    let id = ulid::Ulid::new().to_string();
    let mut data = json!({
        "keyId": e.credential_id.as_str(),
        "tenantId": e.tenant_id.to_string(),
        "propertyId": e.property_id.as_str(),
        "holderKind": e.holder_kind.as_str(),
        "kind": e.credential_kind.as_str(),
        "roomIds": e.rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "validFrom": e.validity.from().to_rfc3339(),
        "validUntil": e.validity.until().to_rfc3339(),
        "vendor": e.vendor.as_str(),
        "version": e.version,
        "occurredAt": e.occurred_at.to_rfc3339(),
    });
    if let Some(obj) = data.as_object_mut() {
        if let Some(r) = &e.reservation_id {
            obj.insert("reservationId".into(), json!(r.as_str()));
        }
        if let Some(u) = &e.staff_user_id {
            obj.insert("staffUserId".into(), json!(u.as_str()));
        }
        if let Some(reason) = e.kind.reason() {
            obj.insert("reason".into(), json!(reason));
        }
        if matches!(e.kind, DomainEventKind::Revoked { .. }) {
            obj.insert(
                "metadata".into(),
                json!({ "wasProvisional": e.provisional }),
            );
        }
    }
    let envelope = json!({
        "id": id,
        "subject": e.kind.subject(),
        "time": created_at.to_rfc3339(),
        "tenantId": e.tenant_id.to_string(),
        "propertyId": e.property_id.as_str(),
        "traceId": e.trace_id,
        "data": data,
    });
    OutboxRow {
        id,
        tenant_id: e.tenant_id,
        aggregate_id: e.credential_id.as_str().to_owned(),
        topic: e.kind.subject().to_owned(),
        payload: data,
        envelope,
        created_at,
        publish_attempts: 0,
    }
}

/// The master-key event of spec `002` that accompanies a staff credential's transition:
/// `master_key.issued.v1` when it becomes active, `master_key.expired.v1` when the shift's
/// end revokes it.
pub fn master_row(e: &DomainEvent, created_at: Timestamp) -> Option<OutboxRow> {
    if e.holder_kind != HolderKind::StaffMaster {
        return None;
    }
    let subject = match e.kind {
        DomainEventKind::Issued => "melmastoon.lock.master_key.issued.v1",
        DomainEventKind::Revoked {
            reason: RevokeReason::Expired,
        } => "melmastoon.lock.master_key.expired.v1",
        _ => return None,
    };
    let mut row = outbox_row(e, created_at);
    row.envelope["subject"] = json!(subject);
    row.topic = subject.to_owned();
    Some(row)
}
