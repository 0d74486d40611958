//! Vostio bodies as the adapter sends and reads them, shared by the adapter and the
//! simulator, with `TryFrom` into Lockstep's types.
//!
//! Reconstructed, not from public docs: Vostio's integration API is documented only to
//! ASSA ABLOY partners. The OAuth2 bodies follow RFC 6749 (§4.4 client-credentials grant,
//! §5.1 token reply, §5.2 error reply) and are standard; the key and environment bodies
//! below (camelCase JSON, RFC 3339 UTC timestamps, `items`/`nextPageToken` paging, a flat
//! `{code, message}` error body) are the most plausible shape for ASSA ABLOY's cloud APIs
//! and are labelled as a reconstruction wherever they are used.
//!
//! Types that carry a token, a secret or a key id (our `vendorRef`) deliberately do not
//! derive `Debug`, so they cannot be logged by accident.

use chrono::{DateTime, Utc};
use lockstep_domain::{KeyCredentialKind, VendorRef};
use serde::{Deserialize, Serialize};

use crate::VendorEntry;

/// `grant_type` of the OAuth2 client-credentials grant (RFC 6749 §4.4.2).
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// `keyType` of a mobile key (reconstructed).
pub const KEY_TYPE_MOBILE: &str = "mobileKey";
/// `keyType` of an RFID card key, encoded at an encoder (reconstructed).
pub const KEY_TYPE_CARD: &str = "card";
/// `status` of a key that opens its doors (reconstructed).
pub const STATUS_ACTIVE: &str = "active";
/// `status` of a card key created remotely and not yet written to a card (reconstructed).
pub const STATUS_PENDING_ENCODING: &str = "pendingEncoding";
/// Largest `pageSize` the list endpoint accepts (reconstructed).
pub const MAX_PAGE_SIZE: u32 = 100;

/// A body we could not read (one type for every adapter).
pub use crate::http_kit::WireError;

/// The Vostio `keyType` for a Lockstep credential kind; `None` for kinds Vostio cannot
/// hold (keypad PINs, QR codes, NFC tags).
pub fn key_type(kind: KeyCredentialKind) -> Option<&'static str> {
    match kind {
        KeyCredentialKind::MobileApp => Some(KEY_TYPE_MOBILE),
        KeyCredentialKind::RfidCard => Some(KEY_TYPE_CARD),
        KeyCredentialKind::PinCode | KeyCredentialKind::QrCode | KeyCredentialKind::NfcTag => None,
    }
}

/// `POST <oauthTokenUrl>` form (RFC 6749 §4.4.2). The client id and secret travel in an
/// HTTP Basic `Authorization` header (RFC 6749 §2.3.1), not in this form.
#[derive(Serialize, Deserialize)]
pub struct TokenRequest {
    /// Always [`GRANT_CLIENT_CREDENTIALS`].
    pub grant_type: String,
    /// Optional scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// `POST <oauthTokenUrl>` success body (RFC 6749 §5.1).
#[derive(Serialize, Deserialize)]
pub struct TokenResponse {
    /// The bearer token.
    pub access_token: String,
    /// `Bearer`.
    #[serde(default)]
    pub token_type: String,
    /// Lifetime of the token, in seconds.
    pub expires_in: i64,
}

/// The token endpoint's error body (RFC 6749 §5.2).
pub use crate::http_kit::OAuthError as OAuthErrorResponse;

/// The error body of every API call that fails (reconstructed): HTTP 4xx/5xx with a
/// stable lowercase `code`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiErrorResponse {
    /// e.g. `key_not_found`, `door_not_found`, `invalid_validity`.
    pub code: String,
    /// Human text (never read by the adapter: it may echo request values).
    #[serde(default)]
    pub message: String,
    /// The vendor's id of the failed request, for support tickets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// `GET /v1/environments/{environmentId}` reply (the health probe).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentRecord {
    /// The environment id (the config's `environmentRef`).
    pub id: String,
    /// The hotel's name.
    #[serde(default)]
    pub name: String,
    /// The hotel's IANA time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// The guest a key is made for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyHolder {
    /// Vostio's id of the key holder (in replies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Our reference of the holder: Lockstep sends the credential label, never guest PII.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// One door (room, floor door, common area) a key opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRight {
    /// The Vostio door id (Lockstep's `DeviceRef`).
    pub door_id: String,
}

/// `POST /v1/environments/{environmentId}/keys` body (reconstructed).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateKeyRequest {
    /// [`KEY_TYPE_MOBILE`] or [`KEY_TYPE_CARD`].
    pub key_type: String,
    /// Our label (credential id and device), kept by Vostio so `find` can reconcile.
    pub external_id: String,
    /// The holder, created with the key.
    pub key_holder: KeyHolder,
    /// The doors it opens (Lockstep sends one: a credential for several rooms is several
    /// vendor objects, DESIGN §6).
    pub access_rights: Vec<AccessRight>,
    /// Start of validity.
    pub valid_from: DateTime<Utc>,
    /// End of validity.
    pub valid_to: DateTime<Utc>,
}

/// `PATCH /v1/environments/{environmentId}/keys/{keyId}` body (reconstructed): only the
/// validity period moves; the key, its holder and its doors stay.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateKeyRequest {
    /// New start of validity.
    pub valid_from: DateTime<Utc>,
    /// New end of validity.
    pub valid_to: DateTime<Utc>,
}

/// One key as Vostio returns it (create, patch and list replies; reconstructed).
#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    /// Vostio's key id: our `vendorRef`.
    pub id: String,
    /// [`KEY_TYPE_MOBILE`] or [`KEY_TYPE_CARD`] (others possible for keys made in the
    /// Vostio portal).
    pub key_type: String,
    /// [`STATUS_ACTIVE`], [`STATUS_PENDING_ENCODING`], ...
    #[serde(default)]
    pub status: String,
    /// Our label, for keys we created; absent for keys made at the front desk.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The holder.
    #[serde(default)]
    pub key_holder: KeyHolder,
    /// The doors it opens.
    #[serde(default)]
    pub access_rights: Vec<AccessRight>,
    /// Start of validity.
    pub valid_from: DateTime<Utc>,
    /// End of validity (absent for a key that never expires).
    #[serde(default)]
    pub valid_to: Option<DateTime<Utc>>,
    /// When Vostio created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

impl KeyRecord {
    /// Whether the key opens `door_id`.
    pub fn opens(&self, door_id: &str) -> bool {
        self.access_rights.iter().any(|a| a.door_id == door_id)
    }
}

/// `GET /v1/environments/{environmentId}/keys` query (reconstructed).
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListKeysQuery {
    /// Only keys that open this door.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub door_id: Option<String>,
    /// Only keys with this external id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Page size, at most [`MAX_PAGE_SIZE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    /// The `nextPageToken` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
}

/// One page of `GET /v1/environments/{environmentId}/keys` (reconstructed).
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListKeysResponse {
    /// The keys on this page.
    #[serde(default)]
    pub items: Vec<KeyRecord>,
    /// Absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl TryFrom<KeyRecord> for VendorEntry {
    type Error = WireError;

    fn try_from(r: KeyRecord) -> Result<Self, Self::Error> {
        if r.id.trim().is_empty() {
            return Err(WireError {
                field: "id",
                reason: "empty",
            });
        }
        Ok(VendorEntry {
            vendor_ref: VendorRef::new(r.id),
            label: r.external_id.unwrap_or_default(),
            valid_from: r.valid_from,
            valid_until: r.valid_to.unwrap_or(DateTime::<Utc>::MAX_UTC),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_cover_what_vostio_holds() {
        assert_eq!(key_type(KeyCredentialKind::MobileApp), Some("mobileKey"));
        assert_eq!(key_type(KeyCredentialKind::RfidCard), Some("card"));
        assert_eq!(key_type(KeyCredentialKind::PinCode), None);
        assert_eq!(key_type(KeyCredentialKind::QrCode), None);
        assert_eq!(key_type(KeyCredentialKind::NfcTag), None);
    }

    #[test]
    fn a_key_without_end_lists_as_open_ended() {
        let r: KeyRecord = serde_json::from_str(
            r#"{"id":"k1","keyType":"card","validFrom":"2024-05-01T14:00:00Z"}"#,
        )
        .expect("minimal record parses");
        let e = VendorEntry::try_from(r).expect("converts");
        assert_eq!(e.valid_until, DateTime::<Utc>::MAX_UTC);
        assert_eq!(e.label, "");
    }
}

/// `GET /v1/environments/{env}/doors/{doorId}` (reconstructed, like the rest of this
/// API): a door's lock and its health.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct DoorRecord {
    /// Door id: the device ref.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether the lock is reachable (directly or through its hub).
    pub online: Option<bool>,
    /// Battery, percent.
    pub battery_level: Option<i64>,
    /// Lock firmware.
    pub firmware_version: Option<String>,
    /// The lock's clock when last read, RFC 3339.
    pub lock_time: Option<String>,
}
