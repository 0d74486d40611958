//! Kisi REST API bodies exactly as Kisi sends and expects them (snake_case JSON, requests
//! wrapped in a root key such as `{"role_assignment": {...}}`, times as RFC 3339 strings),
//! shared by the adapter and the simulator, with `TryFrom` into Lockstep's types.
//!
//! Field names follow Kisi's published OpenAPI description (api.kisi.io/docs) and the
//! "Assign access rights" / "Remove access rights" guides (docs.kisi.io). Replies carry many
//! more fields than are modelled here; unknown fields are ignored and every modelled field
//! that is not needed is optional, so a richer reply still parses.
//!
//! Types that carry a role-assignment id (our `vendorRef`) deliberately do not derive
//! `Debug`, so they cannot be logged by accident.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use lockstep_domain::VendorRef;
use serde::{Deserialize, Serialize};

use crate::VendorEntry;

/// The role that lets a user unlock the doors of a group ("the most common use case" in
/// Kisi's guide).
pub const ROLE_GROUP_BASIC: &str = "group_basic";
/// The group manager role (never issued by the adapter; accepted by the simulator).
pub const ROLE_GROUP_MANAGER: &str = "group_manager";
/// `applies_to_type` of a group-level role assignment.
pub const APPLIES_TO_GROUP: &str = "Group";
/// `assignee_type` of a user.
pub const ASSIGNEE_USER: &str = "User";
/// Largest `limit` Kisi accepts on `GET /role_assignments` and `GET /group_locks`.
pub const MAX_PAGE_SIZE: u32 = 250;
/// The `metadata` key under which the adapter keeps our label on the Kisi user.
pub const LABEL_METADATA_KEY: &str = "lockstep_label";
/// The response header that tells the range and total of a page, e.g. `0-9/200`.
pub const COLLECTION_RANGE_HEADER: &str = "X-Collection-Range";

/// A body we could not read (one type for every adapter).
pub use crate::http_kit::WireError;

/// Kisi's error body (`components.schemas.Error`), e.g.
/// `{"code": "afc516", "error": "Wrong email address or password."}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A six-character identifier of the error (`afc516`, `fcd8ef`, `000404`...).
    #[serde(default)]
    pub code: Option<String>,
    /// The English message (never copied into our errors).
    #[serde(default)]
    pub error: Option<String>,
}

/// Kisi's validation error body (`components.schemas.Errors`, HTTP 422), e.g.
/// `{"errors": {"email": ["can't be blank or invalid"]}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ValidationErrors {
    /// Messages by field name.
    #[serde(default)]
    pub errors: BTreeMap<String, Vec<String>>,
}

/// `POST /users` body.
#[derive(Serialize, Deserialize)]
pub struct CreateUserRequest {
    /// The user.
    pub user: NewUser,
}

/// The `user` of [`CreateUserRequest`].
#[derive(Serialize, Deserialize)]
pub struct NewUser {
    /// Required by Kisi; for Lockstep, an address derived from our label (no guest PII).
    pub email: String,
    /// Display name: our label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether Kisi emails the user (false: Lockstep delivers the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_emails: Option<bool>,
    /// Auto-confirm the user on creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<bool>,
    /// Whether the user may access locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_enabled: Option<bool>,
    /// Free metadata (basic types only); holds our label under [`LABEL_METADATA_KEY`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Free notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// A user as Kisi returns it (`GET /users`, `POST /users`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// Kisi's user id.
    pub id: i64,
    /// Always `User`.
    #[serde(default)]
    pub resource_type: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Email.
    #[serde(default)]
    pub email: Option<String>,
    /// Free metadata.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, serde_json::Value>>,
    /// Free notes.
    #[serde(default)]
    pub notes: Option<String>,
    /// Whether the user may access locks.
    #[serde(default)]
    pub access_enabled: Option<bool>,
    /// Creation time.
    #[serde(default)]
    pub created_at: Option<String>,
    /// Last update.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// One group–lock link as `GET /group_locks` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupLock {
    /// The link's id.
    pub id: i64,
    /// The group.
    pub group_id: i64,
    /// The lock.
    pub lock_id: i64,
    /// The place.
    #[serde(default)]
    pub place_id: Option<i64>,
}

/// `GET /locks/{id}`: the fields Lockstep reads of a Kisi lock.
#[derive(Debug, Serialize, Deserialize)]
pub struct Lock {
    /// The lock.
    pub id: i64,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// The place.
    #[serde(default)]
    pub place_id: Option<i64>,
    /// Whether its controller is connected to Kisi.
    #[serde(default)]
    pub online: Option<bool>,
    /// Whether it is set up.
    #[serde(default)]
    pub configured: Option<bool>,
}

/// `POST /role_assignments` body.
#[derive(Serialize, Deserialize)]
pub struct CreateRoleAssignmentRequest {
    /// The role assignment.
    pub role_assignment: NewRoleAssignment,
}

/// The `role_assignment` of [`CreateRoleAssignmentRequest`]: the current form
/// (`applies_to_*`, `assignee_*`) and the deprecated one the guides still show
/// (`user_id`, `group_id`). The adapter sends the current form; the simulator accepts both.
#[derive(Serialize, Deserialize, Default)]
pub struct NewRoleAssignment {
    /// `Group` for a group-level assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies_to_type: Option<String>,
    /// The group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies_to_id: Option<i64>,
    /// `User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_type: Option<String>,
    /// The user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<i64>,
    /// Deprecated form of `assignee_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    /// Deprecated form of `applies_to_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<i64>,
    /// [`ROLE_GROUP_BASIC`].
    pub role_id: String,
    /// Whether Kisi emails the user about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<bool>,
    /// Start of validity (RFC 3339), `null` for "from now".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// End of validity (RFC 3339), `null` for "no end".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
}

/// `PATCH /role_assignments/{id}` body, as the adapter sends it: a new window only.
///
/// Kisi's published schema for the group variant of this request is garbled (its `notify`
/// is typed as a date-time "when the role assignment stops to be valid"); sending
/// `valid_from`/`valid_until`, the fields of the create request, is inferred from it.
#[derive(Serialize, Deserialize)]
pub struct UpdateRoleAssignmentRequest {
    /// The changes.
    pub role_assignment: RoleAssignmentPatch,
}

/// The `role_assignment` of [`UpdateRoleAssignmentRequest`].
#[derive(Serialize, Deserialize, Default)]
pub struct RoleAssignmentPatch {
    /// New role (never sent by the adapter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    /// New start of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// New end of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
}

/// An embedded `{id, resource_type, name, email}` reference (`assignee`, `applies_to`,
/// `group`, `user`).
#[derive(Clone, Serialize, Deserialize, Default)]
pub struct Ref {
    /// Its id.
    pub id: i64,
    /// `User`, `Group`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its email (users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A role assignment as Kisi returns it (`GET /role_assignments`, `POST /role_assignments`).
/// Only `id` is required: the guides' examples show as little as
/// `{"id", "user_id", "role_id"}`.
#[derive(Clone, Serialize, Deserialize, Default)]
pub struct RoleAssignment {
    /// Kisi's id: our `vendorRef`.
    pub id: i64,
    /// Always `RoleAssignment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// The role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    /// Whether the user was emailed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<bool>,
    /// `Organization`, `Place` or `Group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies_to_type: Option<String>,
    /// The organization, place or group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies_to_id: Option<i64>,
    /// The organization, place or group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies_to: Option<Ref>,
    /// `User`, `Team` or `Guest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_type: Option<String>,
    /// The assignee id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<i64>,
    /// The assignee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<Ref>,
    /// Deprecated: the user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    /// Deprecated: the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Ref>,
    /// Deprecated: the group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<i64>,
    /// Deprecated: `organization`, `place` or `group`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Deprecated twin of `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Start of validity (group assignments), `null` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// End of validity (group assignments), `null` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// Creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Last update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

impl RoleAssignment {
    /// The group it applies to, whichever form the reply uses.
    pub fn group(&self) -> Option<i64> {
        match self.applies_to_type.as_deref() {
            Some(APPLIES_TO_GROUP) => self.applies_to_id,
            Some(_) => None,
            None => self.group_id,
        }
    }

    /// The assigned user, whichever form the reply uses.
    pub fn user(&self) -> Option<&Ref> {
        match self.assignee_type.as_deref() {
            Some(ASSIGNEE_USER) | None => self.assignee.as_ref().or(self.user.as_ref()),
            Some(_) => None,
        }
    }
}

/// A place (`GET /places`, the health probe).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Place {
    /// Its id.
    pub id: i64,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `t` as Kisi writes times: RFC 3339, UTC, milliseconds, `Z`.
pub fn to_kisi_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads a Kisi time (any RFC 3339 offset).
pub fn from_kisi_time(s: &str, field: &'static str) -> Result<DateTime<Utc>, WireError> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| WireError {
            field,
            reason: "not an rfc 3339 time",
        })
}

/// The `total` of an `X-Collection-Range` header (`start-end/total`).
pub fn collection_total(header: &str) -> Option<u64> {
    header.rsplit_once('/')?.1.trim().parse().ok()
}

impl TryFrom<RoleAssignment> for VendorEntry {
    type Error = WireError;

    fn try_from(r: RoleAssignment) -> Result<Self, Self::Error> {
        // An open start or end is an open window, as for TTLock's permanent passcodes.
        let valid_from = match r.valid_from.as_deref() {
            Some(s) => from_kisi_time(s, "valid_from")?,
            None => DateTime::<Utc>::UNIX_EPOCH,
        };
        let valid_until = match r.valid_until.as_deref() {
            Some(s) => from_kisi_time(s, "valid_until")?,
            None => DateTime::<Utc>::MAX_UTC,
        };
        let label = r.user().and_then(|u| u.name.clone()).unwrap_or_default();
        Ok(VendorEntry {
            vendor_ref: VendorRef::new(r.id.to_string()),
            label,
            valid_from,
            valid_until,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_at_millisecond_precision() {
        let t = from_kisi_time("2023-05-24T14:15:22Z", "t").unwrap();
        assert_eq!(to_kisi_time(t), "2023-05-24T14:15:22.000Z");
        assert_eq!(from_kisi_time(&to_kisi_time(t), "t").unwrap(), t);
        assert!(from_kisi_time("yesterday", "t").is_err());
    }

    #[test]
    fn collection_range_gives_the_total() {
        assert_eq!(collection_total("0-9/200"), Some(200));
        assert_eq!(collection_total("10-19/15"), Some(15));
        assert_eq!(collection_total("nonsense"), None);
    }
}
