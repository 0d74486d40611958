//! Brivo API v1 bodies as Brivo sends and expects them (camelCase JSON, ISO 8601 date-times
//! to the second in UTC, listings wrapped in `{data, offset, pageSize, count}`), shared by the
//! adapter and the simulator, with `TryFrom` into Lockstep's types.
//!
//! Types that carry a token, a secret or a PIN deliberately do not derive `Debug`, so they
//! cannot be logged by accident.

use chrono::{DateTime, SecondsFormat, Utc};
use lockstep_domain::VendorRef;
use serde::{Deserialize, Serialize};

use crate::VendorEntry;

/// Largest `pageSize` Brivo accepts on listing calls.
pub const MAX_PAGE_SIZE: i64 = 100;
/// `firstName` of the users we create (Brivo requires a first and a last name; the guest's
/// name is PII and stays in Lockstep).
pub const USER_FIRST_NAME: &str = "Lockstep";
/// `lastName` of the users we create.
pub const USER_LAST_NAME: &str = "Guest";

/// A body we could not read (one type for every adapter).
pub use crate::http_kit::WireError;

/// `POST {auth}/oauth/token` form, password grant. The client id and secret travel in the
/// `Authorization: Basic` header, not here.
#[derive(Serialize)]
pub struct TokenRequest<'a> {
    /// Always `password`.
    pub grant_type: &'a str,
    /// The Brivo administrator.
    pub username: &'a str,
    /// Their password.
    pub password: &'a str,
}

/// `POST {auth}/oauth/token` success body.
#[derive(Serialize, Deserialize)]
pub struct TokenResponse {
    /// The bearer token.
    pub access_token: String,
    /// `bearer`.
    #[serde(default)]
    pub token_type: Option<String>,
    /// The refresh token (unused: a password grant is cheaper than keeping it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Lifetime of the access token, seconds (Brivo documents 60 in its example).
    pub expires_in: i64,
}

/// The token endpoint's error body (RFC 6749 §5.2).
pub use crate::http_kit::OAuthError;

/// The API's error body, `{"code": 404, "message": "User not found"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// The HTTP status again.
    pub code: i64,
    /// Brivo's message (English).
    #[serde(default)]
    pub message: String,
}

/// Every listing call's envelope.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The objects of this page.
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
    /// Offset the listing was run with.
    #[serde(default)]
    pub offset: i64,
    /// Page size the listing was run with.
    #[serde(default)]
    pub page_size: i64,
    /// Total number of results.
    #[serde(default)]
    pub count: i64,
}

/// `POST /v1/api/users` body (also the documented example's shape). `pin`,
/// `effectiveFrom` and `effectiveTo` are the user's PIN and the window it opens doors in.
#[derive(Serialize, Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserRequest {
    /// First name.
    pub first_name: String,
    /// Middle name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    /// Last name.
    pub last_name: String,
    /// Unique within the account: our label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The keypad PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Start of the PIN's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<String>,
    /// End of the PIN's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_to: Option<String>,
    /// Exempt from BLE two-factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ble_two_factor_exempt: Option<bool>,
    /// Emails (never sent by the adapter: guest PII stays in Lockstep).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<serde_json::Value>,
    /// Phone numbers (never sent by the adapter).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phone_numbers: Vec<serde_json::Value>,
}

/// `PATCH /v1/api/users/{userId}` body as the adapter sends it: a new window only, so the
/// PIN, names and `externalId` stay as they are (omitted fields are unchanged).
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PatchUserRequest {
    /// New start of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<String>,
    /// New end of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_to: Option<String>,
    /// A new PIN (never sent by the adapter's `update`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

/// A user as Brivo returns it (create, retrieve, retrieve by external id, group listing).
#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Brivo's user id: our `vendorRef`.
    pub id: i64,
    /// Our label, for users we created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// First name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// The PIN (returned by retrievals; not by listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Start of the PIN's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<String>,
    /// End of the PIN's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_to: Option<String>,
    /// Suspended users open nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<bool>,
}

/// `POST /v1/api/groups` body.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateGroupRequest {
    /// At most 35 characters.
    pub name: String,
}

/// A group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Its id.
    pub id: i64,
    /// Its name.
    #[serde(default)]
    pub name: String,
}

/// `{"id": n}` reference.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct IdRef {
    /// The id.
    pub id: i64,
}

/// `PUT /v1/api/groups/{groupId}/access/access-points/{accessPointId}` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPermissionRequest {
    /// The schedule during which the group may open the access point.
    pub schedule: IdRef,
    /// Whether privacy mode is overridden (never sent by the adapter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_mode_override: Option<bool>,
}

/// An access point (a door: Lockstep's device).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct AccessPoint {
    /// Its id: the device ref.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its control panel.
    pub control_panel_id: Option<i64>,
    /// Its site.
    pub site_id: Option<i64>,
    /// Its site's name.
    pub site_name: Option<String>,
}

/// `GET /control-panels/{id}`: the fields Lockstep reads of a control panel (the panel
/// serves the door's reader; `isOnline` is a labelled reconstruction).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ControlPanel {
    /// Its id.
    pub id: i64,
    /// Firmware.
    pub firmware_version: Option<String>,
    /// Whether it is connected to Brivo's cloud.
    pub is_online: Option<bool>,
}

/// Brivo's date-time format: ISO 8601 to the second, UTC, `Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Reads an ISO 8601 date-time, with `Z` or an offset (Brivo accepts both on input).
pub fn parse_time(s: &str, field: &'static str) -> Result<DateTime<Utc>, WireError> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| WireError {
            field,
            reason: "not an iso 8601 date-time",
        })
}

impl TryFrom<User> for VendorEntry {
    type Error = WireError;

    fn try_from(u: User) -> Result<Self, Self::Error> {
        let valid_from = match u.effective_from.as_deref() {
            Some(s) => parse_time(s, "effectiveFrom")?,
            None => DateTime::<Utc>::UNIX_EPOCH,
        };
        let valid_until = match u.effective_to.as_deref() {
            Some(s) => parse_time(s, "effectiveTo")?,
            None => DateTime::<Utc>::MAX_UTC,
        };
        Ok(VendorEntry {
            vendor_ref: VendorRef::new(u.id.to_string()),
            label: u.external_id.unwrap_or_default(),
            valid_from,
            valid_until,
        })
    }
}
