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

/// The subjects of the device registry's events (spec `002`).
pub mod device {
    /// A new lock paired to a property.
    pub const REGISTERED: &str = "melmastoon.lock.device.registered.v1";
    /// Health degradation crossed a threshold (clock skew, repeated probe refusals).
    pub const HEALTH_ALERT: &str = "melmastoon.lock.device.health_alert.v1";
    /// Battery below its threshold (D-4).
    pub const BATTERY_LOW: &str = "melmastoon.lock.device.battery_low.v1";
    /// Device marked offline.
    pub const OFFLINE: &str = "melmastoon.lock.device.offline.v1";
    /// Device recovered.
    pub const ONLINE: &str = "melmastoon.lock.device.online.v1";
    /// D-2: retired (`POST /api/v1/lock-devices/{id}/decommission`); spec 002 names no
    /// subject for it (ARCHITECTURE.md deviations).
    pub const DECOMMISSIONED: &str = "melmastoon.lock.device.decommissioned.v1";
}

/// Subjects of door attempts and vendor webhooks (spec `002`).
pub mod intake_events {
    /// A door attempt was recorded.
    pub const AUDIT_ATTEMPT: &str = "melmastoon.lock.audit.attempt.v1";
    /// A webhook was accepted.
    pub const WEBHOOK_RECEIVED: &str = "melmastoon.lock.vendor_webhook.received.v1";
    /// A webhook's handling finished.
    pub const WEBHOOK_PROCESSED: &str = "melmastoon.lock.vendor_webhook.processed.v1";
}

/// An outbox row with the standard envelope around `data`.
pub fn event_row(
    subject: &str,
    tenant_id: lockstep_domain::TenantId,
    property_id: &lockstep_domain::PropertyId,
    aggregate_id: &str,
    data: serde_json::Value,
    at: Timestamp,
) -> OutboxRow {
    let id = ulid::Ulid::new().to_string();
    let envelope = json!({
        "id": id, "subject": subject, "time": at.to_rfc3339(),
        "tenantId": tenant_id.to_string(), "propertyId": property_id.as_str(),
        "traceId": null, "data": data,
    });
    OutboxRow {
        id,
        tenant_id,
        aggregate_id: aggregate_id.to_owned(),
        topic: subject.into(),
        payload: data,
        envelope,
        created_at: at,
        publish_attempts: 0,
    }
}

/// The `audit.attempt.v1` row of a recorded door attempt.
pub fn attempt_row(a: &lockstep_domain::KeyCredentialAttempt) -> OutboxRow {
    event_row(
        intake_events::AUDIT_ATTEMPT,
        a.tenant_id,
        &a.property_id,
        a.id.as_str(),
        json!({
            "attemptId": a.id.as_str(),
            "tenantId": a.tenant_id.to_string(),
            "propertyId": a.property_id.as_str(),
            "keyCredentialId": a.key_credential_id.as_ref().map(|k| k.as_str()),
            "deviceId": a.device_id.as_str(),
            "attemptedAt": a.attempted_at.to_rfc3339(),
            "ingestedAt": a.ingested_at.to_rfc3339(),
            "outcome": a.outcome.as_str(),
            "denyReason": a.deny_reason.map(|r| r.as_str()),
            "vendor": a.vendor.as_str(),
            "vendorEventId": a.vendor_event_id,
            "method": a.method,
        }),
        a.ingested_at,
    )
}

/// Who a device event is about. The vendor's device reference is not part of it: it
/// identifies a lock at the vendor and stays in the encrypted column.
#[derive(Debug, Clone, Copy)]
pub struct DeviceSubject<'a> {
    /// Tenant.
    pub tenant_id: lockstep_domain::TenantId,
    /// Property.
    pub property_id: &'a lockstep_domain::PropertyId,
    /// Device.
    pub device_id: &'a lockstep_domain::LockDeviceId,
    /// Vendor.
    pub vendor: lockstep_domain::VendorCode,
}

/// The outbox row of a device event: `fields` are merged into the common payload.
pub fn device_row(
    subject: &str,
    d: DeviceSubject<'_>,
    fields: serde_json::Value,
    at: Timestamp,
) -> OutboxRow {
    let mut data = json!({
        "deviceId": d.device_id.as_str(),
        "tenantId": d.tenant_id.to_string(),
        "propertyId": d.property_id.as_str(),
        "vendor": d.vendor.as_str(),
        "occurredAt": at.to_rfc3339(),
    });
    if let (Some(obj), serde_json::Value::Object(extra)) = (data.as_object_mut(), fields) {
        obj.extend(extra);
    }
    event_row(
        subject,
        d.tenant_id,
        d.property_id,
        d.device_id.as_str(),
        data,
        at,
    )
}

/// D-2: the event of a device retired at `at` (issue 14).
pub fn decommissioned_row(d: DeviceSubject<'_>, at: Timestamp) -> OutboxRow {
    device_row(
        device::DECOMMISSIONED,
        d,
        json!({ "decommissionedAt": at.to_rfc3339() }),
        at,
    )
}

/// The events a device's health signals raise, each with a bounded metric label. A clock
/// skew at the warning level (over 5 minutes) is a log line and a metric, not an event; at
/// the alert level (over 10 minutes) it is a `health_alert`.
pub fn device_signal_rows(
    d: DeviceSubject<'_>,
    signals: &[lockstep_domain::DeviceSignal],
    health: &lockstep_domain::DeviceHealth,
    at: Timestamp,
) -> Vec<OutboxRow> {
    use lockstep_domain::{DeviceSignal, SkewLevel};
    signals
        .iter()
        .filter_map(|s| match s {
            DeviceSignal::Offline => Some(device_row(
                device::OFFLINE,
                d,
                json!({ "online": false }),
                at,
            )),
            DeviceSignal::Online => {
                Some(device_row(device::ONLINE, d, json!({ "online": true }), at))
            }
            DeviceSignal::BatteryLow { percent, threshold } => Some(device_row(
                device::BATTERY_LOW,
                d,
                json!({ "batteryPercent": percent, "lowThresholdPercent": threshold }),
                at,
            )),
            DeviceSignal::ClockSkew {
                level: SkewLevel::Alert,
                skew_ms,
            } => Some(device_row(
                device::HEALTH_ALERT,
                d,
                json!({
                    "check": "clock_skew",
                    "clockSkewMs": skew_ms,
                    "online": health.online,
                }),
                at,
            )),
            DeviceSignal::ClockSkew { .. } => None,
            DeviceSignal::ProbeFailures { consecutive } => Some(device_row(
                device::HEALTH_ALERT,
                d,
                json!({ "check": "probe_failures", "consecutiveFailures": consecutive }),
                at,
            )),
        })
        .collect()
}

/// A bounded metric label for a signal.
pub fn device_signal_label(s: &lockstep_domain::DeviceSignal) -> &'static str {
    use lockstep_domain::{DeviceSignal, SkewLevel};
    match s {
        DeviceSignal::Offline => "offline",
        DeviceSignal::Online => "online",
        DeviceSignal::BatteryLow { .. } => "battery_low",
        DeviceSignal::ClockSkew {
            level: SkewLevel::Alert,
            ..
        } => "clock_skew_alert",
        DeviceSignal::ClockSkew { .. } => "clock_skew_warn",
        DeviceSignal::ProbeFailures { .. } => "probe_failures",
    }
}
