//! The Kisi adapter: mobile keys (the Kisi app) as group role assignments, through Kisi's
//! public REST API (`https://api.kisi.io`, JSON, `Authorization: KISI-LOGIN <api key>`).
//!
//! A Lockstep credential on a device is one **group role assignment** ("access right" in
//! Kisi's web UI): the role `group_basic` of one Kisi user on one group that grants the
//! door, valid from `valid_from` to `valid_until`. The role assignment's id is our
//! `vendorRef`.
//!
//! - **Device ref**: `"<group_id>:<lock_id>"`. Kisi grants doors to groups, not to people,
//!   and `GET /group_locks` can only be scoped by group, so the device ref names the group
//!   that Lockstep's onboarding set up for the door (normally a group holding just that
//!   lock) and the lock itself. The first issue on a device checks once, with
//!   `GET /group_locks?group_id=&lock_id=`, that the group really grants the lock
//!   (`Refused{lock_not_in_group}` otherwise); the answer is cached.
//! - **User**: one Kisi user per label, created on first issue with
//!   `email = <label, lowercased, [a-z0-9._-] kept, other characters as '-'>@<user_email_domain>`,
//!   `name = label`, `metadata.lockstep_label = label`, `send_emails: false`,
//!   `confirm: true`. No guest PII goes to Kisi; delivering the app login to the guest is not
//!   this adapter's job. Users are not deleted on revoke (a user without access rights opens
//!   nothing).
//!
//! Endpoints used (public, from Kisi's OpenAPI description at api.kisi.io/docs and the
//! "Assign access rights" / "Remove access rights" guides at docs.kisi.io):
//! - `GET /users?email=&limit=` → `[User]`: find the user of a label.
//! - `POST /users` `{"user": {email, name, send_emails, confirm, metadata}}` → `User`.
//! - `GET /group_locks?group_id=&lock_id=&limit=` → `[GroupLock]`: the device check.
//! - `POST /role_assignments` `{"role_assignment": {applies_to_type: "Group",
//!   applies_to_id, assignee_type: "User", assignee_id, role_id: "group_basic",
//!   notify: false, valid_from, valid_until}}` → `RoleAssignment` (200). Not idempotent:
//!   callers reconcile first with `find`.
//! - `GET /role_assignments?applies_to_type=Group&applies_to_id=&assignee_type=User&
//!   assignee_id=&role_id=&limit=&offset=` → `[RoleAssignment]` with `X-Collection-Range:
//!   start-end/total`; used by `find` and, paged by 250, by `list`.
//! - `PATCH /role_assignments/{id}` → 204; used by `update`. 404 is `NotFound`.
//! - `DELETE /role_assignments/{id}` → 204; 404 counts as success (idempotent revoke).
//! - `GET /locks/{id}` → `Lock` with `online` (its controller's connection): the device
//!   health probe. Kisi readers are mains-powered and expose no battery, firmware or
//!   clock, so only reachability is reported.
//! - `GET /places?limit=1` as the health probe.
//!
//! Reconstructed, not from public docs:
//! - The body of `PATCH /role_assignments/{id}` for a group assignment: the published
//!   schema is garbled (its only time field is named `notify`); `valid_from`/`valid_until`,
//!   as in the create request, are sent.
//! - HTTP 429 carries `Retry-After` (Kisi documents a limit of 5 requests per second per
//!   user, not the reply); both seconds and HTTP dates are read.
//! - The codes `000401`/`000429` in error bodies (a public 404 reply shows `000404`).
//! - Kisi accepting an address under `user_email_domain` for a user that never logs in
//!   with email: operators set a domain they own.
//!
//! Only `mobile_app` is issued. PINs, cards, QR codes and NFC tags are refused with
//! `unsupported_kind`: Kisi's card API enrolls physical cards, not something Lockstep
//! issues remotely, and Kisi has no keypad PINs.
//!
//! `list` returns only the group's assignments to users under `user_email_domain` (those
//! Lockstep created): a coworking group also holds the members and staff of the space, and
//! drift reconciliation must never take those for orphans.

pub mod errors;
#[cfg(feature = "sim")]
pub mod simulator;
pub mod webhook;
pub mod wire;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lockstep_domain::{Clock, DeviceRef, KeyCredentialKind, VendorRef};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tracing::debug;

use self::errors::{classify, Failure};
use self::wire::{
    RoleAssignment, APPLIES_TO_GROUP, ASSIGNEE_USER, COLLECTION_RANGE_HEADER, LABEL_METADATA_KEY,
    MAX_PAGE_SIZE, ROLE_GROUP_BASIC,
};
use crate::http_kit::{gone_is_ok, Transport};
use crate::{IssueRequest, LockPort, VendorEntry, VendorError};

#[cfg(feature = "sim")]
pub use self::simulator::{
    KisiSimulator, RunningSimulator, SimConfig, SimCounters, SimFaults, SimHandle,
    SimRoleAssignment, SimUser,
};

/// A secret string: `Debug` is redacted and there is no `Display` (one type for every
/// adapter, [`crate::secrets::Secret`]).
pub use crate::secrets::Secret;

/// How to reach one Kisi organization.
#[derive(Clone, Debug)]
pub struct KisiConfig {
    /// e.g. `https://api.kisi.io` (no trailing slash needed).
    pub api_base_url: String,
    /// The API key (sent as `Authorization: KISI-LOGIN <key>`).
    pub api_key: Secret,
    /// Domain of the email addresses of the users the adapter creates.
    pub user_email_domain: String,
    /// Timeout of each HTTP call.
    pub call_timeout: Duration,
    /// Secrets re-read at each use (rotation without restart); empty: the fixed values.
    pub secret_refs: crate::secrets::SecretRefs,
}

impl KisiConfig {
    /// Kisi's production API.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.kisi.io";
    /// Timeout of each call unless configured.
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
    /// Email domain of created users unless configured.
    pub const DEFAULT_USER_EMAIL_DOMAIN: &'static str = "kisi-guests.lockstep.invalid";

    /// A config with the default email domain and call timeout.
    pub fn new(api_base_url: impl Into<String>, api_key: Secret) -> Self {
        Self {
            api_base_url: api_base_url.into(),
            api_key,
            user_email_domain: Self::DEFAULT_USER_EMAIL_DOMAIN.to_owned(),
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
            secret_refs: crate::secrets::SecretRefs::default(),
        }
    }
}

/// A parsed Kisi device ref: `"<group_id>:<lock_id>"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KisiDevice {
    /// The group whose `group_basic` role opens the door.
    pub group_id: i64,
    /// The door.
    pub lock_id: i64,
}

impl KisiDevice {
    /// Reads `"<group_id>:<lock_id>"`.
    pub fn parse(device: &DeviceRef) -> Result<Self, VendorError> {
        let bad = || VendorError::Refused {
            code: "invalid_device".into(),
            detail: "a kisi device ref must be \"<group_id>:<lock_id>\"".into(),
        };
        let (g, l) = device.expose().trim().split_once(':').ok_or_else(bad)?;
        Ok(Self {
            group_id: g.trim().parse().map_err(|_| bad())?,
            lock_id: l.trim().parse().map_err(|_| bad())?,
        })
    }

    /// The device ref of this group and lock.
    pub fn to_device_ref(self) -> DeviceRef {
        DeviceRef::new(format!("{}:{}", self.group_id, self.lock_id))
    }
}

/// The email the adapter gives the Kisi user of `label` (no PII: derived from our id).
pub fn user_email(label: &str, domain: &str) -> String {
    let mut local: String = label
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    local.truncate(64);
    let local = local.trim_matches('.');
    let local = if local.is_empty() { "lockstep" } else { local };
    format!("{local}@{domain}")
}

/// The Kisi [`LockPort`].
pub struct KisiAdapter {
    config: KisiConfig,
    base: String,
    auth_header: HeaderValue,
    email_suffix: String,
    net: Transport,
    /// Devices whose group was seen to grant their lock.
    checked_devices: Mutex<HashSet<KisiDevice>>,
}

impl fmt::Debug for KisiAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KisiAdapter")
            .field("api_base_url", &self.base)
            .field("user_email_domain", &self.config.user_email_domain)
            .finish_non_exhaustive()
    }
}

const VENDOR: &str = "kisi";
/// Kisi refuses offsets beyond 20 000.
const MAX_OFFSET: u32 = 20_000;

/// One successful exchange: the body and the `X-Collection-Range` total.
struct Reply {
    body: Vec<u8>,
    total: Option<u64>,
}

impl KisiAdapter {
    /// An adapter for one Kisi organization. Fails if the HTTP client cannot be built or the
    /// API key cannot be sent in a header.
    pub fn new(config: KisiConfig, clock: Arc<dyn Clock>) -> Result<Self, VendorError> {
        let net = Transport::new(VENDOR, config.call_timeout, clock)?;
        let mut auth_header =
            HeaderValue::from_str(&format!("KISI-LOGIN {}", config.api_key.expose())).map_err(
                |_| VendorError::Auth {
                    detail: "api key is not a valid header value".into(),
                },
            )?;
        auth_header.set_sensitive(true);
        let base = config.api_base_url.trim_end_matches('/').to_owned();
        let email_suffix = format!("@{}", config.user_email_domain.to_ascii_lowercase());
        Ok(Self {
            config,
            base,
            auth_header,
            email_suffix,
            net,
            checked_devices: Mutex::new(HashSet::new()),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The API key's header, read again at each request when the key rotates.
    fn auth_header(&self) -> Result<HeaderValue, VendorError> {
        if self.config.secret_refs.is_empty() {
            return Ok(self.auth_header.clone());
        }
        let key = self
            .config
            .secret_refs
            .current("api_key", &self.config.api_key)?;
        let mut h =
            HeaderValue::from_str(&format!("KISI-LOGIN {}", key.expose())).map_err(|_| {
                VendorError::Auth {
                    detail: "api key is not a valid header value".into(),
                }
            })?;
        h.set_sensitive(true);
        Ok(h)
    }

    fn authed(&self, rb: RequestBuilder) -> Result<RequestBuilder, VendorError> {
        Ok(rb
            .header(AUTHORIZATION, self.auth_header()?)
            .header(ACCEPT, "application/json"))
    }

    /// Sends one request; any non-2xx status becomes a [`VendorError`].
    async fn exchange(&self, op: &'static str, rb: RequestBuilder) -> Result<Reply, VendorError> {
        let reply = self.net.send(op, self.authed(rb)?).await?;
        if reply.is_success() {
            let total = reply
                .headers
                .get(COLLECTION_RANGE_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(wire::collection_total);
            return Ok(Reply {
                body: reply.body,
                total,
            });
        }
        let err_body: wire::ErrorBody = serde_json::from_slice(&reply.body).unwrap_or_default();
        let fields = if reply.status == StatusCode::UNPROCESSABLE_ENTITY {
            serde_json::from_slice::<wire::ValidationErrors>(&reply.body)
                .map(|v| v.errors.into_keys().collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let failure = Failure {
            status: reply.status.as_u16(),
            code: err_body.code,
            fields,
            retry_after: reply.retry_after,
        };
        Err(self.net.failed(op, reply.status, classify(&failure)))
    }

    /// Sends one request and reads a JSON `T`.
    async fn json<T: DeserializeOwned>(
        &self,
        op: &'static str,
        rb: RequestBuilder,
    ) -> Result<(T, Option<u64>), VendorError> {
        let reply = self.exchange(op, rb).await?;
        Ok((self.net.parse(op, &reply.body)?, reply.total))
    }

    /// Checks once per device that its group grants its lock.
    async fn check_device(&self, device: KisiDevice) -> Result<(), VendorError> {
        if self.checked_devices.lock().await.contains(&device) {
            return Ok(());
        }
        let rb = self.net.http().get(self.url("/group_locks")).query(&[
            ("group_id", device.group_id.to_string()),
            ("lock_id", device.lock_id.to_string()),
            ("limit", "1".to_owned()),
        ]);
        let links: Vec<wire::GroupLock> = match self.json("fetch_group_locks", rb).await {
            Ok((links, _)) => links,
            Err(VendorError::NotFound) => Vec::new(),
            Err(e) => return Err(e),
        };
        if !links
            .iter()
            .any(|l| l.group_id == device.group_id && l.lock_id == device.lock_id)
        {
            return Err(VendorError::Refused {
                code: "lock_not_in_group".into(),
                detail: "the device's group does not grant its lock".into(),
            });
        }
        self.checked_devices.lock().await.insert(device);
        Ok(())
    }

    /// The Kisi user of `label`, if it exists.
    async fn find_user(&self, label: &str) -> Result<Option<wire::User>, VendorError> {
        let email = user_email(label, &self.config.user_email_domain);
        let rb = self
            .net
            .http()
            .get(self.url("/users"))
            .query(&[("email", email.as_str()), ("limit", "10")]);
        let (users, _): (Vec<wire::User>, _) = self.json("fetch_users", rb).await?;
        let Some(user) = users.into_iter().find(|u| {
            u.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(&email))
        }) else {
            return Ok(None);
        };
        // Two labels may share an email once slugged: the user is ours only if it carries
        // this very label.
        let carried = user
            .metadata
            .as_ref()
            .and_then(|m| m.get(LABEL_METADATA_KEY))
            .and_then(|v| v.as_str())
            .or(user.name.as_deref());
        if carried != Some(label) {
            return Err(VendorError::Refused {
                code: "label_conflict".into(),
                detail: "the vendor user for this label carries another label".into(),
            });
        }
        Ok(Some(user))
    }

    /// The Kisi user of `label`, created if needed.
    async fn ensure_user(&self, label: &str) -> Result<i64, VendorError> {
        if let Some(u) = self.find_user(label).await? {
            return Ok(u.id);
        }
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert(
            LABEL_METADATA_KEY.to_owned(),
            serde_json::Value::String(label.to_owned()),
        );
        let body = wire::CreateUserRequest {
            user: wire::NewUser {
                email: user_email(label, &self.config.user_email_domain),
                name: Some(label.to_owned()),
                send_emails: Some(false),
                confirm: Some(true),
                access_enabled: Some(true),
                metadata,
                notes: None,
            },
        };
        let rb = self.net.http().post(self.url("/users")).json(&body);
        match self.json::<wire::User>("create_user", rb).await {
            Ok((u, _)) => {
                debug!(vendor = VENDOR, "user created");
                Ok(u.id)
            }
            // Taken meanwhile (another task, or a create whose reply was lost): use it.
            Err(e @ VendorError::Refused { .. }) => match self.find_user(label).await? {
                Some(u) => Ok(u.id),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The group role assignments matching `filter`, all pages.
    async fn fetch_assignments(
        &self,
        op: &'static str,
        filter: &[(&str, String)],
    ) -> Result<Vec<RoleAssignment>, VendorError> {
        let mut out = Vec::new();
        let mut offset: u32 = 0;
        loop {
            let mut q: Vec<(&str, String)> = filter.to_vec();
            q.push(("limit", MAX_PAGE_SIZE.to_string()));
            q.push(("offset", offset.to_string()));
            let rb = self.net.http().get(self.url("/role_assignments")).query(&q);
            let (page, total): (Vec<RoleAssignment>, _) = self.json(op, rb).await?;
            let n = u32::try_from(page.len()).unwrap_or(u32::MAX);
            out.extend(page);
            offset = offset.saturating_add(n);
            let more = n >= MAX_PAGE_SIZE && total.is_none_or(|t| u64::from(offset) < t);
            if !more || offset >= MAX_OFFSET {
                break;
            }
        }
        Ok(out)
    }

    fn is_ours(&self, r: &RoleAssignment) -> bool {
        r.user()
            .and_then(|u| u.email.as_deref())
            .is_some_and(|e| e.to_ascii_lowercase().ends_with(&self.email_suffix))
    }
}

fn require_mobile(kind: KeyCredentialKind) -> Result<(), VendorError> {
    if matches!(kind, KeyCredentialKind::MobileApp) {
        Ok(())
    } else {
        Err(VendorError::Refused {
            code: "unsupported_kind".into(),
            detail: "kisi issues mobile app keys only".into(),
        })
    }
}

fn assignment_id(vendor_ref: &VendorRef) -> Result<i64, VendorError> {
    vendor_ref
        .expose()
        .trim()
        .parse()
        .map_err(|_| VendorError::Refused {
            code: "invalid_vendor_ref".into(),
            detail: "a kisi vendor ref must be an integer role assignment id".into(),
        })
}

#[async_trait::async_trait]
impl LockPort for KisiAdapter {
    crate::http_kit::http_port_basics!(vendor: Kisi, can: [mobile_key, remote_revoke, remote_issue]);

    fn account(&self) -> String {
        let key = crate::secrets::fingerprint(self.config.api_key.expose());
        self.net
            .account(&self.config.api_base_url, &format!("key:{key}"))
    }

    fn default_rate_per_minute(&self) -> Option<u32> {
        // Kisi: 5 requests a second per user (the API key's)
        Some(300)
    }

    fn check_device(&self, device: &DeviceRef) -> Result<(), VendorError> {
        KisiDevice::parse(device).map(drop)
    }

    async fn probe(&self, device: &DeviceRef) -> Result<crate::DeviceProbe, VendorError> {
        let device = KisiDevice::parse(device)?;
        let rb = self
            .net
            .http()
            .get(self.url(&format!("/locks/{}", device.lock_id)));
        let (lock, _): (wire::Lock, _) = self.json("fetch_lock", rb).await?;
        Ok(crate::DeviceProbe {
            online: lock.online.unwrap_or(true),
            // Kisi controllers are mains-powered and report neither battery nor clock
            battery_percent: None,
            firmware: None,
            device_time: None,
        })
    }

    async fn issue(&self, req: &IssueRequest) -> Result<VendorRef, VendorError> {
        let device = KisiDevice::parse(&req.device)?;
        require_mobile(req.kind)?;
        self.check_device(device).await?;
        let user_id = self.ensure_user(&req.label).await?;
        let body = wire::CreateRoleAssignmentRequest {
            role_assignment: wire::NewRoleAssignment {
                applies_to_type: Some(APPLIES_TO_GROUP.to_owned()),
                applies_to_id: Some(device.group_id),
                assignee_type: Some(ASSIGNEE_USER.to_owned()),
                assignee_id: Some(user_id),
                role_id: ROLE_GROUP_BASIC.to_owned(),
                notify: Some(false),
                valid_from: Some(wire::to_kisi_time(req.validity.from())),
                valid_until: Some(wire::to_kisi_time(req.validity.until())),
                ..wire::NewRoleAssignment::default()
            },
        };
        let rb = self
            .net
            .http()
            .post(self.url("/role_assignments"))
            .json(&body);
        let (created, _): (RoleAssignment, _) = match self.json("create_role_assignment", rb).await
        {
            Ok(r) => r,
            Err(VendorError::NotFound) => {
                // The group (or the user just found) is gone: forget the device check.
                self.checked_devices.lock().await.remove(&device);
                return Err(VendorError::Refused {
                    code: "group_not_found".into(),
                    detail: "the vendor does not know the device's group".into(),
                });
            }
            Err(e) => return Err(e),
        };
        debug!(vendor = VENDOR, "role assignment created");
        Ok(VendorRef::new(created.id.to_string()))
    }

    async fn find(&self, req: &IssueRequest) -> Result<Option<VendorRef>, VendorError> {
        let device = KisiDevice::parse(&req.device)?;
        let Some(user) = self.find_user(&req.label).await? else {
            return Ok(None);
        };
        let found = self
            .fetch_assignments(
                "fetch_role_assignments",
                &[
                    ("applies_to_type", APPLIES_TO_GROUP.to_owned()),
                    ("applies_to_id", device.group_id.to_string()),
                    ("assignee_type", ASSIGNEE_USER.to_owned()),
                    ("assignee_id", user.id.to_string()),
                    ("role_id", ROLE_GROUP_BASIC.to_owned()),
                ],
            )
            .await?;
        Ok(found
            .iter()
            .find(|r| {
                r.group() == Some(device.group_id)
                    && r.user().map(|u| u.id).or(r.assignee_id).or(r.user_id) == Some(user.id)
            })
            .map(|r| VendorRef::new(r.id.to_string())))
    }

    async fn update(&self, req: &IssueRequest, vendor_ref: &VendorRef) -> Result<(), VendorError> {
        KisiDevice::parse(&req.device)?;
        require_mobile(req.kind)?;
        let id = assignment_id(vendor_ref)?;
        let body = wire::UpdateRoleAssignmentRequest {
            role_assignment: wire::RoleAssignmentPatch {
                role_id: None,
                valid_from: Some(wire::to_kisi_time(req.validity.from())),
                valid_until: Some(wire::to_kisi_time(req.validity.until())),
            },
        };
        let rb = self
            .net
            .http()
            .patch(self.url(&format!("/role_assignments/{id}")))
            .json(&body);
        self.exchange("update_role_assignment", rb).await?;
        debug!(vendor = VENDOR, "role assignment window changed");
        Ok(())
    }

    async fn revoke(&self, device: &DeviceRef, vendor_ref: &VendorRef) -> Result<(), VendorError> {
        KisiDevice::parse(device)?;
        let id = assignment_id(vendor_ref)?;
        let rb = self
            .net
            .http()
            .delete(self.url(&format!("/role_assignments/{id}")));
        let res = self.exchange("delete_role_assignment", rb).await;
        gone_is_ok(VENDOR, "role assignment", res.map(drop))
    }

    async fn list(&self, device: &DeviceRef) -> Result<Vec<VendorEntry>, VendorError> {
        let device = KisiDevice::parse(device)?;
        let all = self
            .fetch_assignments(
                "list_role_assignments",
                &[
                    ("applies_to_type", APPLIES_TO_GROUP.to_owned()),
                    ("applies_to_id", device.group_id.to_string()),
                    ("assignee_type", ASSIGNEE_USER.to_owned()),
                ],
            )
            .await?;
        all.into_iter()
            .filter(|r| r.group() == Some(device.group_id) && self.is_ours(r))
            .map(|r| {
                VendorEntry::try_from(r).map_err(|w| VendorError::Unavailable {
                    detail: w.to_string(),
                })
            })
            .collect()
    }

    async fn health(&self) -> Result<(), VendorError> {
        let rb = self
            .net
            .http()
            .get(self.url("/places"))
            .query(&[("limit", "1")]);
        let _: (Vec<wire::Place>, _) = self.json("fetch_places", rb).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_refs_name_group_and_lock() {
        let d = KisiDevice::parse(&DeviceRef::new("45274:9021")).unwrap();
        assert_eq!(
            d,
            KisiDevice {
                group_id: 45274,
                lock_id: 9021
            }
        );
        assert_eq!(d.to_device_ref().expose(), "45274:9021");
        for bad in ["45274", "a:b", ":1", ""] {
            assert!(KisiDevice::parse(&DeviceRef::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_emails_are_derived_from_the_label_only() {
        assert_eq!(
            user_email("key_01HABC:45274:9021", "g.example"),
            "key_01habc-45274-9021@g.example"
        );
        assert_eq!(user_email("", "g.example"), "lockstep@g.example");
        assert!(user_email(&"x".repeat(200), "d").len() <= 64 + 2);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let cfg = KisiConfig::new("http://x", Secret::new("s3cr3t-key"));
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
        let a = KisiAdapter::new(cfg, Arc::new(lockstep_domain::SystemClock)).unwrap();
        assert!(!format!("{a:?}").contains("s3cr3t"));
    }
}
