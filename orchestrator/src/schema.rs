//! The event contract (`docs/events/*.schema.json`), compiled once and checked at intake.

use std::collections::HashMap;

use lockstep_actors::events_in::{self, Parsed, Rejection};
use serde_json::Value;

/// Consumed schemas, by subject.
const CONSUMED: &[(&str, &str)] = &[
    (
        events_in::RESERVATION_CONFIRMED,
        include_str!("../../docs/events/melmastoon.reservation.confirmed.v1.schema.json"),
    ),
    (
        events_in::RESERVATION_CANCELLED,
        include_str!("../../docs/events/melmastoon.reservation.cancelled.v1.schema.json"),
    ),
    (
        events_in::RESERVATION_CHECKED_OUT,
        include_str!("../../docs/events/melmastoon.reservation.checked_out.v1.schema.json"),
    ),
    (
        events_in::RESERVATION_DATES_CHANGED,
        include_str!("../../docs/events/melmastoon.reservation.dates_changed.v1.schema.json"),
    ),
    (
        events_in::RESERVATION_NO_SHOW,
        include_str!("../../docs/events/melmastoon.reservation.no_show.v1.schema.json"),
    ),
    (
        events_in::RESERVATION_FRAUD_FLAGGED,
        include_str!("../../docs/events/melmastoon.reservation.fraud_flagged.v1.schema.json"),
    ),
    (
        events_in::SHIFT_STARTED,
        include_str!("../../docs/events/melmastoon.staff.shift.started.v1.schema.json"),
    ),
    (
        events_in::SHIFT_ENDED,
        include_str!("../../docs/events/melmastoon.staff.shift.ended.v1.schema.json"),
    ),
    (
        events_in::PROPERTY_DEACTIVATED,
        include_str!("../../docs/events/melmastoon.tenant.property.deactivated.v1.schema.json"),
    ),
    (
        events_in::BOOKING_CONFIRMED,
        include_str!("../../docs/events/melmastoon.booking.confirmed.v1.schema.json"),
    ),
    (
        events_in::BOOKING_CANCELLED,
        include_str!("../../docs/events/melmastoon.booking.cancelled.v1.schema.json"),
    ),
    (
        events_in::BOOKING_COMPLETED,
        include_str!("../../docs/events/melmastoon.booking.completed.v1.schema.json"),
    ),
    (
        events_in::USER_DEACTIVATED,
        include_str!("../../docs/events/melmastoon.iam.user.deactivated.v1.schema.json"),
    ),
];

/// Produced schemas, by subject.
pub const PRODUCED: &[(&str, &str)] = &[
    (
        "melmastoon.lock.credential.requested.v1",
        include_str!("../../docs/events/melmastoon.lock.credential.requested.v1.schema.json"),
    ),
    (
        "melmastoon.lock.credential.issued.v1",
        include_str!("../../docs/events/melmastoon.lock.credential.issued.v1.schema.json"),
    ),
    (
        "melmastoon.lock.credential.failed.v1",
        include_str!("../../docs/events/melmastoon.lock.credential.failed.v1.schema.json"),
    ),
    (
        "melmastoon.lock.credential.revoked.v1",
        include_str!("../../docs/events/melmastoon.lock.credential.revoked.v1.schema.json"),
    ),
    (
        "melmastoon.lock.credential.suspended.v1",
        include_str!("../../docs/events/melmastoon.lock.credential.suspended.v1.schema.json"),
    ),
    (
        "melmastoon.lock.credential.unsuspended.v1",
        include_str!("../../docs/events/melmastoon.lock.credential.unsuspended.v1.schema.json"),
    ),
    (
        "melmastoon.lock.credential.updated.v1",
        include_str!("../../docs/events/melmastoon.lock.credential.updated.v1.schema.json"),
    ),
    (
        "melmastoon.lock.master_key.issued.v1",
        include_str!("../../docs/events/melmastoon.lock.master_key.issued.v1.schema.json"),
    ),
    (
        "melmastoon.lock.master_key.expired.v1",
        include_str!("../../docs/events/melmastoon.lock.master_key.expired.v1.schema.json"),
    ),
    (
        "melmastoon.lock.device.registered.v1",
        include_str!("../../docs/events/melmastoon.lock.device.registered.v1.schema.json"),
    ),
    (
        "melmastoon.lock.device.health_alert.v1",
        include_str!("../../docs/events/melmastoon.lock.device.health_alert.v1.schema.json"),
    ),
    (
        "melmastoon.lock.device.battery_low.v1",
        include_str!("../../docs/events/melmastoon.lock.device.battery_low.v1.schema.json"),
    ),
    (
        "melmastoon.lock.device.offline.v1",
        include_str!("../../docs/events/melmastoon.lock.device.offline.v1.schema.json"),
    ),
    (
        "melmastoon.lock.device.online.v1",
        include_str!("../../docs/events/melmastoon.lock.device.online.v1.schema.json"),
    ),
    (
        "melmastoon.lock.device.decommissioned.v1",
        include_str!("../../docs/events/melmastoon.lock.device.decommissioned.v1.schema.json"),
    ),
    (
        "melmastoon.lock.audit.attempt.v1",
        include_str!("../../docs/events/melmastoon.lock.audit.attempt.v1.schema.json"),
    ),
    (
        "melmastoon.lock.anomaly.detected.v1",
        include_str!("../../docs/events/melmastoon.lock.anomaly.detected.v1.schema.json"),
    ),
    (
        "melmastoon.lock.vendor_webhook.received.v1",
        include_str!("../../docs/events/melmastoon.lock.vendor_webhook.received.v1.schema.json"),
    ),
    (
        "melmastoon.lock.vendor_webhook.processed.v1",
        include_str!("../../docs/events/melmastoon.lock.vendor_webhook.processed.v1.schema.json"),
    ),
    (
        "melmastoon.lock.encoder_session.opened.v1",
        include_str!("../../docs/events/melmastoon.lock.encoder_session.opened.v1.schema.json"),
    ),
    (
        "melmastoon.lock.encoder_session.closed.v1",
        include_str!("../../docs/events/melmastoon.lock.encoder_session.closed.v1.schema.json"),
    ),
    (
        "melmastoon.lock.vendor_adapter.health_changed.v1",
        include_str!(
            "../../docs/events/melmastoon.lock.vendor_adapter.health_changed.v1.schema.json"
        ),
    ),
];

const ENVELOPE: &str = include_str!("../../docs/events/envelope.schema.json");

/// Largest accepted message.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Compiled validators.
pub struct EventSchemas {
    envelope: jsonschema::Validator,
    consumed: HashMap<&'static str, jsonschema::Validator>,
    produced: HashMap<&'static str, jsonschema::Validator>,
}

impl std::fmt::Debug for EventSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSchemas").finish_non_exhaustive()
    }
}

fn compile(text: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(text).expect("checked-in schemas are valid JSON");
    jsonschema::validator_for(&schema).expect("checked-in schemas compile")
}

fn first_error(v: &jsonschema::Validator, instance: &Value, what: &str) -> Option<String> {
    v.iter_errors(instance).next().map(|e| {
        let path = e.instance_path().to_string();
        let mut msg = format!("{what}{path}: {e}");
        msg.truncate(300);
        msg
    })
}

impl EventSchemas {
    /// Compiles every schema (the checked-in files are tested to compile).
    pub fn new() -> Self {
        Self {
            envelope: compile(ENVELOPE),
            consumed: CONSUMED.iter().map(|(s, t)| (*s, compile(t))).collect(),
            produced: PRODUCED.iter().map(|(s, t)| (*s, compile(t))).collect(),
        }
    }

    /// Validates raw bytes of a consumed message against the envelope and its subject's
    /// schema, then parses it into domain values.
    pub fn check_consumed(&self, bytes: &[u8]) -> Result<(Value, Parsed), Rejection> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(Rejection::Malformed(format!(
                "message over {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        // one reader for what enters: a key given twice is `duplicate_key` (issue 14)
        let value = crate::json::parse(bytes).map_err(Rejection::from)?;
        if let Some(e) = first_error(&self.envelope, &value, "envelope") {
            return Err(Rejection::Malformed(e));
        }
        let subject = value
            .get("subject")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(schema) = self.consumed.get(subject) else {
            return Err(Rejection::UnknownSubject);
        };
        let data = value.get("data").cloned().unwrap_or(Value::Null);
        if let Some(e) = first_error(schema, &data, "data") {
            return Err(Rejection::Invalid(e));
        }
        let parsed = events_in::parse(&value)?;
        Ok((value, parsed))
    }

    /// Validates a produced envelope (tests and a debug assertion at publish).
    pub fn check_produced(&self, envelope: &Value) -> Result<(), String> {
        if let Some(e) = first_error(&self.envelope, envelope, "envelope") {
            return Err(e);
        }
        let subject = envelope
            .get("subject")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let schema = self
            .produced
            .get(subject)
            .ok_or_else(|| format!("no schema for {subject}"))?;
        let data = envelope.get("data").cloned().unwrap_or(Value::Null);
        match first_error(schema, &data, "data") {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Default for EventSchemas {
    fn default() -> Self {
        Self::new()
    }
}
