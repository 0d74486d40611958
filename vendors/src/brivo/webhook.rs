//! Brivo event subscriptions: an access event posted as JSON to the subscription's URL.
//!
//! **From Brivo's public API reference, in part.** Documented: an event subscription
//! (`POST /v1/api/event-subscriptions`) registers a `url`, an `errorEmail` and `criteria`
//! (`SITE`, `USER`, `ACCESS-POINT`, `AUDIT` with `EQ`/`NE`) and carries a secret word
//! (`encryptedSecretWord`); when an access event meets the criteria its data is POSTed to
//! the URL. The access event's shape is the one `GET /v1/api/events/access` lists:
//! `uuid`, `securityAction {securityActionId, action, exception}`, `actor {id, name}`,
//! `eventObject {id, name, deviceType {id, name}}`, `site {id, siteName}`, `occurred`,
//! `eventData {actorName, objectName, actionAllowed, ...}`.
//!
//! **Reconstructed** (not public): how the secret word authenticates a delivery, and two
//! fields. A delivery carries `X-Brivo-Timestamp: <unix seconds>` and `X-Brivo-Signature:
//! <hex>`, the HMAC-SHA256 of `"<timestamp>.<raw body>"` under the subscription's secret
//! word; `actor.externalId` is the user's `externalId` (Lockstep's label: the adapter's
//! users all share one display name), and `eventData.credentialType` says what was
//! presented (`PIN`, `CARD`, `MOBILE`). A receiver refuses a timestamp more than five
//! minutes off and dedupes on `uuid`. A PIN is never in an event.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::webhook::SignatureError;
use crate::{DoorEvent, DoorMethod};

/// The timestamp header.
pub const TIMESTAMP_HEADER: &str = "x-brivo-timestamp";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-brivo-signature";

/// What happened.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityAction {
    /// Brivo's action id.
    pub security_action_id: i64,
    /// Its name (`Valid Credential`, `Invalid Credential`, ...).
    pub action: String,
    /// Whether it is an exception event.
    #[serde(default)]
    pub exception: bool,
}

/// Who.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    /// The user's id.
    pub id: i64,
    /// The user's display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The user's external id (reconstructed; see the module doc).
    #[serde(default)]
    pub external_id: Option<String>,
}

/// A device type.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceType {
    /// Its id (1: door).
    pub id: i64,
    /// Its name.
    pub name: String,
}

/// Where.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventObject {
    /// The access point (the device ref).
    pub id: i64,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
    /// What it is.
    pub device_type: DeviceType,
}

/// The event's details.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    /// Whether the door opened.
    #[serde(default)]
    pub action_allowed: Option<bool>,
    /// What was presented (reconstructed; see the module doc).
    #[serde(default)]
    pub credential_type: Option<String>,
}

/// One Brivo access event as a subscription posts it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessEvent {
    /// The event's id (dedupe key).
    pub uuid: String,
    /// What happened.
    pub security_action: SecurityAction,
    /// Who, when known.
    #[serde(default)]
    pub actor: Option<Actor>,
    /// Where.
    #[serde(default)]
    pub event_object: Option<EventObject>,
    /// When it happened.
    pub occurred: DateTime<Utc>,
    /// Details.
    #[serde(default)]
    pub event_data: EventData,
}

/// Brivo's device type id of a door.
pub const DEVICE_TYPE_DOOR: i64 = 1;

impl AccessEvent {
    /// The access point it happened at, when it is a door event.
    pub fn access_point(&self) -> Option<i64> {
        self.event_object
            .as_ref()
            .filter(|o| o.device_type.id == DEVICE_TYPE_DOOR)
            .map(|o| o.id)
    }

    /// The door event it reports; `None` for events not at a door or without an outcome
    /// (camera, panel and administrator events).
    pub fn door_event(&self) -> Option<DoorEvent> {
        self.access_point()?;
        let granted = self.event_data.action_allowed?;
        let method = match self.event_data.credential_type.as_deref() {
            Some("PIN") => DoorMethod::PinCode,
            Some("CARD") => DoorMethod::Card,
            Some("MOBILE") => DoorMethod::MobileApp,
            _ => DoorMethod::Other,
        };
        Some(DoorEvent {
            event_id: self.uuid.clone(),
            at: self.occurred,
            method,
            granted,
            label: self.actor.as_ref().and_then(|a| a.external_id.clone()),
        })
    }
}

/// The `X-Brivo-Signature` value of `body` sent at `timestamp` (the tag over
/// `"<timestamp>.<body>"`), and the check of a delivery: the timestamp within five minutes
/// of `now` and the signature over `"<timestamp>.<body>"` (compared in constant time).
pub use crate::webhook::{sign_timestamped as sign, verify_timestamped as verify};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook;

    const BODY: &str = r#"{"uuid":"049e1ca7-592a-4249-8f8c-ebcdc8e28594","securityAction":{"securityActionId":2004,"action":"Valid Credential","exception":false},"actor":{"id":912347,"name":"Lockstep Guest","externalId":"key_01J"},"eventObject":{"id":408023598,"name":"Door 1","deviceType":{"id":1,"name":"Door"}},"site":{"id":7833522,"siteName":"Home base"},"occurred":"2026-12-01T10:00:00Z","processed":"2026-12-01T10:00:01Z","eventData":{"actorName":"Lockstep Guest","objectName":"Door 1","actionAllowed":true,"credentialType":"PIN"}}"#;

    #[test]
    fn a_door_event_is_read_from_brivos_access_event_shape() {
        let e: AccessEvent = serde_json::from_str(BODY).unwrap();
        assert_eq!(e.access_point(), Some(408_023_598));
        let d = e.door_event().unwrap();
        assert!(d.granted);
        assert_eq!(d.method, DoorMethod::PinCode);
        assert_eq!(d.label.as_deref(), Some("key_01J"));
        assert_eq!(d.event_id, "049e1ca7-592a-4249-8f8c-ebcdc8e28594");
        // an unknown PIN: no actor, not allowed
        let unknown: AccessEvent = serde_json::from_str(
            &BODY
                .replace(
                    r#""actor":{"id":912347,"name":"Lockstep Guest","externalId":"key_01J"},"#,
                    "",
                )
                .replace("\"actionAllowed\":true", "\"actionAllowed\":false"),
        )
        .unwrap();
        let d = unknown.door_event().unwrap();
        assert!(!d.granted);
        assert_eq!(d.label, None);
        // a camera's event is no door attempt
        let camera: AccessEvent = serde_json::from_str(
            &BODY.replace(r#"{"id":1,"name":"Door"}"#, r#"{"id":4,"name":"Camera"}"#),
        )
        .unwrap();
        assert!(camera.door_event().is_none(), "not a door");
        let no_outcome: AccessEvent =
            serde_json::from_str(&BODY.replace("\"actionAllowed\":true,", "")).unwrap();
        assert!(no_outcome.door_event().is_none(), "no outcome, no attempt");
    }

    #[test]
    fn a_signature_verifies_once_within_its_window_and_never_altered() {
        let altered = BODY.replace("\"actionAllowed\":true", "\"actionAllowed\":false");
        webhook::testing::assert_timestamped_signature(
            sign,
            verify,
            BODY.as_bytes(),
            altered.as_bytes(),
        );
    }
}
