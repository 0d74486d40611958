//! Salto KS Connect API bodies as Salto sends and expects them (snake_case JSON, list
//! replies wrapped in `{items, next_page_link, count}`), shared by the adapter and the
//! simulator, with `TryFrom` into Lockstep's types.
//!
//! Shapes marked "measured" follow replies recorded from a Salto KS acceptance site
//! (`GET /v1.2/sites/{id}`, `/locks`, `/users`); shapes marked "reconstructed" are not in
//! the public docs and were chosen as the most plausible (see the module doc of
//! [`super`]).
//!
//! Types that carry a token, a secret or a PIN deliberately do not derive `Debug`, so
//! they cannot be logged by accident.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// The scope that grants the Connect API (measured in the token's claims).
pub const SCOPE_FULL_ACCESS: &str = "user_api.full_access";
/// Date-time format of time schedules: naive wall-clock in the site's time zone.
pub const SCHEDULE_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";
/// First and last second of the daily filter of a continuous (check-in/check-out) window.
pub const DAY_START: &str = "00:00:00";
/// See [`DAY_START`].
pub const DAY_END: &str = "23:59:59";
/// Page size asked of list endpoints (OData `$top`).
pub const PAGE_SIZE: u32 = 100;

/// A body we could not read (one type for every adapter).
pub use crate::http_kit::WireError;

/// `POST {identity}/connect/token` form (resource-owner password grant; the client id and
/// secret travel as HTTP Basic authentication, not in the form).
#[derive(Serialize, Deserialize)]
pub struct TokenRequest<'a> {
    /// `password`.
    pub grant_type: &'a str,
    /// The KS system user's e-mail.
    pub username: &'a str,
    /// Its password.
    pub password: &'a str,
    /// [`SCOPE_FULL_ACCESS`].
    pub scope: &'a str,
}

/// `POST {identity}/connect/token` success body (OpenID Connect).
#[derive(Serialize, Deserialize)]
pub struct TokenResponse {
    /// The bearer token.
    pub access_token: String,
    /// Lifetime in seconds (3600 measured).
    pub expires_in: i64,
    /// `Bearer`.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Granted scopes.
    #[serde(default)]
    pub scope: Option<String>,
}

/// The token endpoint's error body (RFC 6749 §5.2).
pub use crate::http_kit::OAuthError;

/// The Connect API's error body: `{ErrorCode, Message}`. `ErrorCode` is seen both as a
/// number and as a string of digits, so both are accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// Salto's code.
    #[serde(rename = "ErrorCode", deserialize_with = "lenient_code")]
    pub error_code: i64,
    /// Salto's message (never copied into a Lockstep error).
    #[serde(rename = "Message", default)]
    pub message: String,
}

/// Every list reply: `{items, next_page_link, count}` (measured).
#[derive(Serialize, Deserialize)]
pub struct Page<T> {
    /// This page.
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
    /// The next page's link (absolute or path), `null` on the last page.
    #[serde(default)]
    pub next_page_link: Option<String>,
    /// Total count when asked for (`null` otherwise).
    #[serde(default)]
    pub count: Option<i64>,
}

/// `GET /v1.2/sites/{site_id}` (measured; only what the health probe reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Site {
    /// Site UUID.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub customer_reference: Option<String>,
    /// The short id shown in the web app.
    #[serde(default)]
    pub site_uid: Option<String>,
    /// IANA zone the IQ applies schedules in.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Whether PIN codes are enabled on the site (KS Pro).
    #[serde(default)]
    pub pin_enabled: Option<bool>,
    /// Whether the subscription is valid.
    #[serde(default)]
    pub subscription_valid: Option<bool>,
}

/// `GET /v1.2/sites/{site_id}/locks/{lock_id}` (measured; only what the adapter reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lock {
    /// Lock UUID: Lockstep's `DeviceRef`.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub customer_reference: Option<String>,
    /// e.g. `escutcheon_pin`, `cylinder`, `escutcheon`: a type ending in `_pin` has a keypad.
    #[serde(default)]
    pub lock_type: Option<String>,
    /// Whether the lock is online through its IQ.
    #[serde(default)]
    pub online: Option<bool>,
    /// Floor, when set.
    #[serde(default)]
    pub floor: Option<String>,
    /// Battery state, e.g. `fresh` (as recorded); not a percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_level: Option<String>,
    /// Firmware version (reconstructed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
}

impl Lock {
    /// The battery state as a percent band for the D-4 threshold: `fresh` 100, `low` 15,
    /// `very_low`/`critical` 5, `empty` 0; another state is unknown.
    pub fn battery_percent(&self) -> Option<i32> {
        match self.battery_level.as_deref()? {
            "fresh" | "normal" => Some(100),
            "low" => Some(15),
            "very_low" | "critical" => Some(5),
            "empty" => Some(0),
            _ => None,
        }
    }

    /// Whether the lock has a keypad (its `lock_type` names a PIN variant).
    pub fn has_keypad(&self) -> bool {
        self.lock_type
            .as_deref()
            .is_some_and(|t| t.split('_').any(|part| part == "pin"))
    }
}

/// `POST /v1.2/sites/{site_id}/users` body (field names as used by integrators; which
/// are required is not public).
#[derive(Serialize, Deserialize)]
pub struct CreateSiteUser {
    /// First name (Lockstep sends a fixed word: no guest PII goes to the vendor).
    pub first_name: String,
    /// Last name: our label.
    pub last_name: String,
    /// Alias: our label, used to find the user again.
    pub alias: String,
    /// Whether the user opens keypads with a PIN.
    pub use_pin: bool,
    /// Roles given to the user (the site's guest role), when configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub role_ids: Vec<String>,
    /// Never blocked at creation.
    #[serde(default)]
    pub blocked: bool,
}

/// The platform user inside a site user (measured).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRef {
    /// Platform user id (the id access groups take).
    pub id: String,
    /// First name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// E-mail, none for the users Lockstep creates.
    #[serde(default)]
    pub email: Option<String>,
}

/// A site user as `/v1.2/sites/{site_id}/users` returns it (measured, abridged).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteUser {
    /// Site user id (the id the `/users/{id}` routes take).
    pub id: String,
    /// The platform user.
    pub user: UserRef,
    /// Our label, for the users Lockstep creates.
    #[serde(default)]
    pub alias: Option<String>,
    /// `subscribed` or `suspended`.
    #[serde(default)]
    pub subscription_state: Option<String>,
    /// Whether the user opens keypads with a PIN.
    #[serde(default)]
    pub use_pin: Option<bool>,
    /// Whether the user is blocked.
    #[serde(default)]
    pub blocked: Option<bool>,
}

/// `PUT /v1.2/sites/{site_id}/users/{site_user_id}/pin` body. The reply carries no PIN
/// Lockstep reads (Salto answers the PIN as a bare string).
#[derive(Serialize, Deserialize)]
pub struct SetPin<'a> {
    /// The digits.
    pub pin: &'a str,
}

/// `POST /v1.2/sites/{site_id}/access_groups` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateAccessGroup {
    /// The group's name: our label.
    pub customer_reference: String,
}

/// An access group (as created and listed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessGroup {
    /// Its id: Lockstep's `vendorRef`.
    pub id: String,
    /// Its name: our label, for groups Lockstep created.
    #[serde(default)]
    pub customer_reference: Option<String>,
}

/// `POST /v1.2/sites/{site_id}/access_groups/{group_id}/users` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddGroupUser {
    /// Platform user id ([`UserRef::id`]).
    pub user_id: String,
}

/// A member of an access group (reconstructed: `id` is the platform user id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupUser {
    /// Platform user id.
    pub id: String,
    /// First name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
}

/// `POST /v1.1/sites/{site_id}/access_groups/{group_id}/locks` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddGroupLock {
    /// Lock UUID.
    pub lock_id: String,
}

/// A lock of an access group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupLock {
    /// Lock UUID.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub customer_reference: Option<String>,
}

/// A time schedule of an access group: body of `POST` and `PATCH`
/// `/v1.1/sites/{site_id}/access_groups/{group_id}/time_schedules[/{id}]` and item of its
/// list (`id` present in replies only).
///
/// A check-in/check-out window is sent the way the KS web app does: the exact start and
/// end in `start_date`/`end_date` (naive wall-clock in the site's time zone), every
/// weekday on, and a daily filter of `00:00:00`–`23:59:59` that never clips the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeSchedule {
    /// Its id (replies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Start of validity, [`SCHEDULE_FORMAT`].
    pub start_date: Option<String>,
    /// End of validity, [`SCHEDULE_FORMAT`].
    pub end_date: Option<String>,
    /// Daily start.
    pub start_time: String,
    /// Daily end.
    pub end_time: String,
    /// Weekday switches.
    pub monday: bool,
    /// See `monday`.
    pub tuesday: bool,
    /// See `monday`.
    pub wednesday: bool,
    /// See `monday`.
    pub thursday: bool,
    /// See `monday`.
    pub friday: bool,
    /// See `monday`.
    pub saturday: bool,
    /// See `monday`.
    pub sunday: bool,
}

impl TimeSchedule {
    /// A continuous window from `from` to `until`, written in the site's `offset`.
    pub fn window(from: DateTime<Utc>, until: DateTime<Utc>, offset: FixedOffset) -> Self {
        Self {
            id: None,
            start_date: Some(to_site_time(from, offset)),
            end_date: Some(to_site_time(until, offset)),
            start_time: DAY_START.to_owned(),
            end_time: DAY_END.to_owned(),
            monday: true,
            tuesday: true,
            wednesday: true,
            thursday: true,
            friday: true,
            saturday: true,
            sunday: true,
        }
    }

    /// The window in UTC: an absent start is the epoch, an absent end is open.
    pub fn utc_window(
        &self,
        offset: FixedOffset,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), WireError> {
        let from = match &self.start_date {
            Some(s) => from_site_time(s, offset, "start_date")?,
            None => DateTime::<Utc>::UNIX_EPOCH,
        };
        let until = match &self.end_date {
            Some(s) => from_site_time(s, offset, "end_date")?,
            None => DateTime::<Utc>::MAX_UTC,
        };
        Ok((from, until))
    }
}

/// `t` as naive wall-clock at `offset`, [`SCHEDULE_FORMAT`].
pub fn to_site_time(t: DateTime<Utc>, offset: FixedOffset) -> String {
    t.with_timezone(&offset).format(SCHEDULE_FORMAT).to_string()
}

/// Reads a schedule date-time (naive wall-clock at `offset`; fractional seconds and a
/// trailing `Z` or offset are tolerated).
pub fn from_site_time(
    s: &str,
    offset: FixedOffset,
    field: &'static str,
) -> Result<DateTime<Utc>, WireError> {
    let bad = WireError {
        field,
        reason: "not a date-time",
    };
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(s, SCHEDULE_FORMAT)
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
        .map_err(|_| bad.clone())?;
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|dt| dt.with_timezone(&Utc))
        .ok_or(bad)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Str(String),
}

fn lenient_code<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match IntOrString::deserialize(d)? {
        IntOrString::Int(n) => Ok(n),
        IntOrString::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom("expected an integer code")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_times_round_trip_through_the_site_offset() {
        let offset = FixedOffset::east_opt(3600).unwrap();
        let t = DateTime::parse_from_rfc3339("2026-08-19T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = to_site_time(t, offset);
        assert_eq!(s, "2026-08-19T13:00:00");
        assert_eq!(from_site_time(&s, offset, "start_date").unwrap(), t);
    }

    #[test]
    fn keypad_is_read_from_the_lock_type() {
        let mut lock = Lock {
            id: "x".into(),
            customer_reference: None,
            lock_type: Some("escutcheon_pin".into()),
            online: None,
            floor: None,
            battery_level: None,
            firmware_version: None,
        };
        assert!(lock.has_keypad());
        lock.lock_type = Some("cylinder".into());
        assert!(!lock.has_keypad());
        lock.lock_type = Some("spinner".into());
        assert!(!lock.has_keypad());
    }

    #[test]
    fn error_code_is_read_as_number_or_string() {
        let a: ApiError = serde_json::from_str(r#"{"ErrorCode":"1100","Message":"x"}"#).unwrap();
        let b: ApiError = serde_json::from_str(r#"{"ErrorCode":3102,"Message":"x"}"#).unwrap();
        assert_eq!((a.error_code, b.error_code), (1100, 3102));
    }
}
