//! Kisi's event webhooks: a door event posted as JSON, signed.
//!
//! Reconstructed, not from public docs (Kisi documents event webhooks but not their
//! signature scheme publicly): the body is one event
//! `{id, action, actor_type, actor_id, actor_email, actor_name, object_type, object_id,
//! success, created_at}` (the fields of Kisi's event objects), and two headers carry
//! `X-Kisi-Timestamp: <unix seconds>` and `X-Kisi-Signature: sha256=<hex>`, the HMAC-SHA256
//! of `"<timestamp>.<raw body>"` under the webhook's secret; a receiver refuses a signature
//! older or newer than five minutes (replay window) and dedupes on `id`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::webhook::{SignatureError, TOLERANCE_SECONDS};
use crate::{webhook, DoorEvent, DoorMethod};

/// The timestamp header.
pub const TIMESTAMP_HEADER: &str = "x-kisi-timestamp";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-kisi-signature";

/// One Kisi event as its webhook posts it.
#[derive(Clone, Serialize, Deserialize)]
pub struct Event {
    /// The event's id (dedupe key).
    pub id: i64,
    /// `lock.unlock`, ...
    pub action: String,
    /// `User`, ...
    #[serde(default)]
    pub actor_type: Option<String>,
    /// The user.
    #[serde(default)]
    pub actor_id: Option<i64>,
    /// The user's email.
    #[serde(default)]
    pub actor_email: Option<String>,
    /// The user's name (our label, for users the adapter created).
    #[serde(default)]
    pub actor_name: Option<String>,
    /// `Lock`.
    #[serde(default)]
    pub object_type: Option<String>,
    /// The lock.
    pub object_id: i64,
    /// Whether the door opened.
    pub success: bool,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl Event {
    /// The door event it reports (an unlock by a user's mobile key); `None` for events
    /// that are not door operations.
    pub fn door_event(&self) -> Option<DoorEvent> {
        (self.action == "lock.unlock" && self.object_type.as_deref() == Some("Lock")).then(|| {
            DoorEvent {
                event_id: self.id.to_string(),
                at: self.created_at,
                method: DoorMethod::MobileApp,
                granted: self.success,
                label: self.actor_name.clone(),
            }
        })
    }
}

/// The `X-Kisi-Signature` value of `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "sha256={}",
        webhook::sign_timestamped(secret, timestamp, body)
    )
}

/// Checks a delivery: the timestamp within [`TOLERANCE_SECONDS`] of `now` and the signature
/// over `"<timestamp>.<body>"` (compared in constant time).
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let hex = signature.and_then(|s| s.trim().strip_prefix("sha256="));
    webhook::verify_timestamped(secret, timestamp, hex, body, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_signature_verifies_once_within_its_window_and_never_altered() {
        let body = br#"{"id":1,"action":"lock.unlock"}"#;
        webhook::testing::assert_timestamped_signature(sign, verify, body, br#"{"id":2}"#);
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let t = now.timestamp().to_string();
        assert_eq!(
            verify("s3cret", Some(&t), Some("md5=00"), body, now),
            Err(SignatureError::Malformed)
        );
    }
}
