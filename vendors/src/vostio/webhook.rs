//! Vostio access notifications: a door's granted or denied access posted as JSON, signed.
//!
//! **Reconstructed, not from public docs**, like the rest of the Vostio API (see
//! [`super`]): Assa Abloy describes Vostio's access events and its integrations but
//! publishes no notification format. The shape here uses the reconstructed resource API's
//! vocabulary (camelCase, an environment, a door, a key with its `externalId`):
//!
//! ```json
//! {"notificationId": "<id>", "environmentId": "env-0001",
//!  "eventType": "access.granted" | "access.denied" | <other types>,
//!  "occurredAt": "2026-12-01T10:00:00Z", "doorId": "<door id>",
//!  "key": {"id": "<key id>", "keyType": "mobileKey" | "card", "externalId": "<label>"} | null}
//! ```
//!
//! One header carries both the time and the tag, `X-Vostio-Signature: t=<unix seconds>,
//! v1=<hex>`, the tag the HMAC-SHA256 of `"<t>.<raw body>"` under the notification secret;
//! a receiver refuses a `t` more than five minutes off and dedupes on `notificationId`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::webhook::SignatureError;
use crate::{webhook, DoorEvent, DoorMethod};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-vostio-signature";

/// The key an access event names.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventKey {
    /// Vostio's key id.
    pub id: String,
    /// `mobileKey` or `card`.
    #[serde(default)]
    pub key_type: Option<String>,
    /// The external id its creator gave it (Lockstep's label).
    #[serde(default)]
    pub external_id: Option<String>,
}

/// One Vostio notification.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Its id (dedupe key).
    pub notification_id: String,
    /// The environment.
    #[serde(default)]
    pub environment_id: Option<String>,
    /// `access.granted`, `access.denied`, or another type (`door.offline`, ...).
    pub event_type: String,
    /// When the door says it happened.
    pub occurred_at: DateTime<Utc>,
    /// The door (the device ref).
    pub door_id: String,
    /// The key presented, when the door knew it.
    #[serde(default)]
    pub key: Option<EventKey>,
}

impl Notification {
    /// The door event it reports; `None` for notifications that are not access events.
    pub fn door_event(&self) -> Option<DoorEvent> {
        let granted = match self.event_type.as_str() {
            "access.granted" => true,
            "access.denied" => false,
            _ => return None,
        };
        let method = match self.key.as_ref().and_then(|k| k.key_type.as_deref()) {
            Some("mobileKey") => DoorMethod::MobileApp,
            Some("card") => DoorMethod::Card,
            _ => DoorMethod::Other,
        };
        Some(DoorEvent {
            event_id: self.notification_id.clone(),
            at: self.occurred_at,
            method,
            granted,
            label: self.key.as_ref().and_then(|k| k.external_id.clone()),
        })
    }
}

/// The `X-Vostio-Signature` value of `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = webhook::sign_timestamped(secret, timestamp, body);
    format!("t={timestamp},v1={tag}")
}

/// Checks a delivery: `t` within five minutes of `now` and `v1` the tag over `"<t>.<body>"`
/// (compared in constant time).
pub fn verify(
    secret: &str,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let header = signature.ok_or(SignatureError::Malformed)?;
    let field = |name: &str| {
        header
            .split(',')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    };
    webhook::verify_timestamped(secret, field("t"), field("v1"), body, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const BODY: &str = r#"{"notificationId":"ntf-1","environmentId":"env-0001","eventType":"access.granted","occurredAt":"2026-12-01T10:00:00Z","doorId":"door-1","key":{"id":"k-7","keyType":"mobileKey","externalId":"key_01J"}}"#;

    #[test]
    fn access_events_are_door_events_named_by_the_keys_external_id() {
        let n: Notification = serde_json::from_str(BODY).unwrap();
        let d = n.door_event().unwrap();
        assert!(d.granted);
        assert_eq!(d.method, DoorMethod::MobileApp);
        assert_eq!(d.label.as_deref(), Some("key_01J"));
        assert_eq!(d.event_id, "ntf-1");
        let denied: Notification = serde_json::from_str(
            &BODY
                .replace("access.granted", "access.denied")
                .replace("mobileKey", "card"),
        )
        .unwrap();
        let d = denied.door_event().unwrap();
        assert!(!d.granted);
        assert_eq!(d.method, DoorMethod::Card);
        let other: Notification =
            serde_json::from_str(&BODY.replace("access.granted", "door.offline")).unwrap();
        assert!(other.door_event().is_none());
        assert!(serde_json::from_str::<Notification>(r#"{"notificationId":"x"}"#).is_err());
    }

    #[test]
    fn a_signature_verifies_once_within_its_window_and_never_altered() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let ts = now.timestamp();
        let sig = sign("s3cret", ts, BODY.as_bytes());
        assert!(sig.starts_with(&format!("t={ts},v1=")));
        assert_eq!(verify("s3cret", Some(&sig), BODY.as_bytes(), now), Ok(()));
        assert_eq!(
            verify("guess", Some(&sig), BODY.as_bytes(), now),
            Err(SignatureError::Mismatch)
        );
        let altered = BODY.replace("granted", "denied");
        assert_eq!(
            verify("s3cret", Some(&sig), altered.as_bytes(), now),
            Err(SignatureError::Mismatch)
        );
        // a fresh time on an old tag
        let moved = sig.replace(&format!("t={ts}"), &format!("t={}", ts + 5));
        assert_eq!(
            verify("s3cret", Some(&moved), BODY.as_bytes(), now),
            Err(SignatureError::Mismatch)
        );
        let later = now + chrono::Duration::seconds(301);
        assert_eq!(
            verify("s3cret", Some(&sig), BODY.as_bytes(), later),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify("s3cret", None, BODY.as_bytes(), now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify("s3cret", Some("t=1"), BODY.as_bytes(), now),
            Err(SignatureError::Malformed)
        );
    }
}
