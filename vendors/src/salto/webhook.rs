//! Salto KS event notifications: a lock's entry or rejection posted as JSON, signed.
//!
//! **Reconstructed, not from public docs.** Salto documents entry and rejection
//! notifications of selected users on selected locks (email and app push, "Events and
//! Incidents notifications in Salto KS") and says its Connect API is a partner programme;
//! the webhook form of those events and its signature are not public. The shape here uses
//! the vocabulary of the Connect API the adapter already speaks (snake_case, a site, a
//! lock id, a site user with its `alias`):
//!
//! ```json
//! {"id": "<event uuid>", "type": "entry" | "rejection" | <incident types>,
//!  "site_id": "...", "occurred_at": "2026-12-01T10:00:00Z",
//!  "lock": {"id": "<lock id>"},
//!  "opening_method": "pin" | "digital_key" | "tag" | "remote" | ...,
//!  "user": {"id": "<site user id>", "alias": "<alias>"} | null}
//! ```
//!
//! Two headers carry `X-Salto-Timestamp: <unix seconds>` and `X-Salto-Signature: <hex>`,
//! the HMAC-SHA256 of `"<timestamp>.<raw body>"` under the webhook's secret; a receiver
//! refuses a timestamp more than five minutes off and dedupes on `id`. A PIN or a tag's
//! number is never in an event: the user is named, not the code that was typed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::webhook::SignatureError;
use crate::{DoorEvent, DoorMethod};

/// The timestamp header.
pub const TIMESTAMP_HEADER: &str = "x-salto-timestamp";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-salto-signature";

/// The lock an event happened at.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventLock {
    /// Its id (the device ref).
    pub id: String,
}

/// The site user an event names.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventUser {
    /// Site user id.
    pub id: String,
    /// Its alias (Lockstep's label, for users the adapter created).
    #[serde(default)]
    pub alias: Option<String>,
}

/// One Salto KS event as its notification posts it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// The event's id (dedupe key).
    pub id: String,
    /// `entry`, `rejection`, or an incident (`intrusion`, `tamper`, `low_battery`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The site.
    #[serde(default)]
    pub site_id: Option<String>,
    /// When the lock says it happened.
    pub occurred_at: DateTime<Utc>,
    /// The lock.
    pub lock: EventLock,
    /// How the door was tried: `pin`, `digital_key`, `tag`, `remote`.
    #[serde(default)]
    pub opening_method: Option<String>,
    /// Who, when the lock knew the user.
    #[serde(default)]
    pub user: Option<EventUser>,
}

impl Event {
    /// The door event it reports; `None` for incidents and other non-door events.
    pub fn door_event(&self) -> Option<DoorEvent> {
        let granted = match self.kind.as_str() {
            "entry" => true,
            "rejection" => false,
            _ => return None,
        };
        let method = match self.opening_method.as_deref() {
            Some("pin") => DoorMethod::PinCode,
            Some("digital_key") => DoorMethod::MobileApp,
            Some("tag") => DoorMethod::Card,
            Some("remote") => DoorMethod::Remote,
            _ => DoorMethod::Other,
        };
        Some(DoorEvent {
            event_id: self.id.clone(),
            at: self.occurred_at,
            method,
            granted,
            label: self.user.as_ref().and_then(|u| u.alias.clone()),
        })
    }
}

/// The `X-Salto-Signature` value of `body` sent at `timestamp` (the tag over
/// `"<timestamp>.<body>"`), and the check of a delivery: the timestamp within five minutes
/// of `now` and the signature over `"<timestamp>.<body>"` (compared in constant time).
pub use crate::webhook::{sign_timestamped as sign, verify_timestamped as verify};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook;

    const BODY: &str = r#"{"id":"9a1e","type":"entry","site_id":"s","occurred_at":"2026-12-01T10:00:00Z","lock":{"id":"lock-a"},"opening_method":"pin","user":{"id":"u1","alias":"key_01J"}}"#;

    #[test]
    fn an_entry_is_a_granted_door_event_named_by_the_users_alias() {
        let e: Event = serde_json::from_str(BODY).unwrap();
        let d = e.door_event().unwrap();
        assert!(d.granted);
        assert_eq!(d.method, DoorMethod::PinCode);
        assert_eq!(d.label.as_deref(), Some("key_01J"));
        assert_eq!(d.event_id, "9a1e");
        assert_eq!(e.lock.id, "lock-a");
        let r: Event = serde_json::from_str(
            &BODY
                .replace("\"entry\"", "\"rejection\"")
                .replace(",\"user\":{\"id\":\"u1\",\"alias\":\"key_01J\"}", ""),
        )
        .unwrap();
        let d = r.door_event().unwrap();
        assert!(!d.granted);
        assert_eq!(d.label, None, "an unknown PIN names nobody");
        let i: Event = serde_json::from_str(&BODY.replace("\"entry\"", "\"tamper\"")).unwrap();
        assert!(i.door_event().is_none(), "an incident is no door attempt");
        assert!(serde_json::from_str::<Event>(r#"{"id":"x"}"#).is_err());
    }

    #[test]
    fn a_signature_verifies_once_within_its_window_and_never_altered() {
        let altered = BODY.replace("entry", "rejection");
        webhook::testing::assert_timestamped_signature(
            sign,
            verify,
            BODY.as_bytes(),
            altered.as_bytes(),
        );
    }
}
