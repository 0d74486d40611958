//! The Brivo adapter: keypad PINs on Brivo access points through the Brivo API v1
//! (api.brivo.com/v1/api, JSON; OAuth2 at auth.brivo.com), for coworking sites.
//!
//! A Lockstep credential on one device is one Brivo *user*: `externalId` is our label (the
//! credential id plus device; Brivo guarantees `externalId` unique within the account), `pin`
//! is the PIN, and `effectiveFrom`/`effectiveTo` are the window in which that PIN opens
//! doors. The user is put in one *group* per access point, named `{group_prefix}{apId}`,
//! which holds the permission on that access point (with an always-on schedule from the
//! config: the window is enforced on the user, not the schedule). The `vendorRef` is the
//! Brivo user id; the device ref is the access point id.
//!
//! Endpoints used (all from Brivo's public docs, apidocs.brivo.com):
//! - `POST {auth}/oauth/token`, `grant_type=password` with `Authorization: Basic
//!   base64(client_id:client_secret)` and the `api-key` header → `{access_token, token_type,
//!   refresh_token, expires_in}`. The token is cached until shortly before `expires_in`; an
//!   API call answered 401 fetches a new token once and is retried once.
//! - Every API call carries `api-key` and `Authorization: bearer <token>`.
//! - `GET /groups?filter=name__eq:<name>` (a "contains" match: the exact name is picked
//!   from the results), else `POST /groups {name}`; then
//!   `PUT /groups/{groupId}/access/access-points/{accessPointId} {schedule: {id}}`
//!   (idempotent) before the group id is cached for the access point.
//! - `POST /users {firstName, lastName, externalId, pin, effectiveFrom, effectiveTo}` →
//!   the user; then `PUT /groups/{groupId}/users/{userId}` → 204.
//! - `GET /users/{externalId}/external` → the user or 404: `find` (reconcile before retry).
//!   When the user exists, `find` also (re)puts it in the device's group (an idempotent
//!   PUT), so that a half-done issue (user created, group assignment lost) is completed and
//!   what `find` returns opens the door.
//! - `PATCH /users/{userId} {effectiveFrom, effectiveTo}` (omitted fields unchanged): `update`;
//!   404 is `NotFound`.
//! - `DELETE /users/{userId}` → 204: `revoke` (the PIN and every group membership go with
//!   the user); 404 counts as success.
//! - `GET /groups/{groupId}/users?offset&pageSize=100`: `list`; users the listing returns
//!   without `externalId` or dates are read with `GET /users/{userId}`.
//! - `GET /access-points?pageSize=1`: `health`.
//!
//! Reconstructed, not from public docs:
//! - The body of a refused duplicate PIN: Brivo documents "Duplicate Credential found" (400)
//!   for license plates only; a 400 whose message speaks of a PIN being duplicate, already
//!   present or in use is taken as a PIN collision. Likewise a 400 naming `externalId` is a
//!   duplicate label.
//! - The shape of `GET /groups/{groupId}/users` items (documented as a listing of users;
//!   taken to carry `id`, names, `externalId` and the dates, but not the PIN).
//! - Device health (`probe`): `GET /access-points/{id}` (documented) names the control
//!   panel; `GET /control-panels/{id}` gives `firmwareVersion`, and `isOnline` on it is a
//!   reconstruction (the docs show the panel's last contact, not a flag). Readers are wired:
//!   no battery, and no clock the API reads.
//! - HTTP 429 with `Retry-After` (Brivo documents none; its Mashery gateway's "Developer
//!   Over Rate"/"Over Qps" 403 is also read as a rate limit).
//! - Date-times are sent as `YYYY-MM-DDTHH:MM:SSZ` (documented for responses; inputs are
//!   documented to accept offsets too), so windows are kept to the second.
//!
//! Only `pin_code` is issued. The capabilities announce Brivo's mobile passes (what the
//! vendor can do); a mobile pass is a "digital invitation" sent to the holder's e-mail,
//! which [`IssueRequest`] does not carry, so this adapter refuses `mobile_app` with
//! `unsupported_kind` until the request gains a delivery address. Cards are assigned from
//! existing card numbers, never encoded: `card_encoding` is false and `rfid_card` refused.

pub mod errors;
#[cfg(feature = "sim")]
pub mod simulator;
pub mod webhook;
pub mod wire;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lockstep_domain::{Clock, DeviceRef, KeyCredentialKind, VendorRef};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Mutex;
use tracing::debug;

use self::errors::{classify_api, classify_token};
use crate::http_kit::{gone_is_ok, CallError, Grant, TokenCache, TokenEndpoint, Transport};
use crate::{IssueRequest, LockPort, VendorEntry, VendorError};

#[cfg(feature = "sim")]
pub use self::simulator::{
    BrivoSimulator, RunningSimulator, SimConfig, SimCounters, SimFaults, SimHandle, SimUser,
};

/// A secret string: `Debug` is redacted and there is no `Display` (one type for every
/// adapter, [`crate::secrets::Secret`]).
pub use crate::secrets::Secret;

/// What authenticates us at Brivo.
#[derive(Clone, Debug)]
pub struct BrivoCredentials {
    /// The developer portal's `api-key` (sent on every call).
    pub api_key: Secret,
    /// The password-grant application's client id.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: Secret,
    /// The Brivo administrator the application acts as.
    pub username: String,
    /// Their password.
    pub password: Secret,
}

/// How to reach one Brivo account.
#[derive(Clone, Debug)]
pub struct BrivoConfig {
    /// e.g. `https://api.brivo.com` (`https://api.eu.brivo.com` for EU accounts); the adapter
    /// adds `/v1/api`.
    pub api_base_url: String,
    /// e.g. `https://auth.brivo.com`; the adapter adds `/oauth/token`.
    pub auth_base_url: String,
    /// Api key, client and administrator.
    pub credentials: BrivoCredentials,
    /// The schedule of the per-access-point groups' permission (an always-on schedule such
    /// as Brivo's "24x7 - Always On": the window is on the user).
    pub access_schedule_id: i64,
    /// Prefix of the per-access-point group names (Brivo allows 35 characters per name).
    pub group_prefix: String,
    /// Timeout of each HTTP call.
    pub call_timeout: Duration,
    /// Secrets re-read at each use (rotation without restart); empty: the fixed values.
    pub secret_refs: crate::secrets::SecretRefs,
}

impl BrivoConfig {
    /// Timeout of each call unless configured.
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
    /// Group name prefix unless configured.
    pub const DEFAULT_GROUP_PREFIX: &'static str = "lockstep-ap-";

    /// A config with the default call timeout and group prefix.
    pub fn new(
        api_base_url: impl Into<String>,
        auth_base_url: impl Into<String>,
        credentials: BrivoCredentials,
        access_schedule_id: i64,
    ) -> Self {
        Self {
            api_base_url: api_base_url.into(),
            auth_base_url: auth_base_url.into(),
            credentials,
            access_schedule_id,
            group_prefix: Self::DEFAULT_GROUP_PREFIX.to_owned(),
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
            secret_refs: crate::secrets::SecretRefs::default(),
        }
    }
}

/// The Brivo [`LockPort`].
pub struct BrivoAdapter {
    config: BrivoConfig,
    api_base: Url,
    token_url: Url,
    net: Transport,
    tokens: TokenCache,
    /// Access point id → id of our group holding its permission.
    groups: Mutex<HashMap<i64, i64>>,
}

impl fmt::Debug for BrivoAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrivoAdapter")
            .field("api_base_url", &self.config.api_base_url)
            .field("client_id", &self.config.credentials.client_id)
            .finish_non_exhaustive()
    }
}

const VENDOR: &str = "brivo";
/// Safety cap on listing pages (100 per page).
const MAX_PAGES: i64 = 100;

fn bad_url() -> VendorError {
    VendorError::Refused {
        code: "invalid_config".into(),
        detail: "the configured base url is not a valid http url".into(),
    }
}

impl BrivoAdapter {
    /// An adapter for one Brivo account. Fails if a base URL is invalid or the HTTP client
    /// cannot be built.
    pub fn new(config: BrivoConfig, clock: Arc<dyn Clock>) -> Result<Self, VendorError> {
        let net = Transport::new(VENDOR, config.call_timeout, clock)?;
        let api_base = Url::parse(&format!(
            "{}/v1/api",
            config.api_base_url.trim_end_matches('/')
        ))
        .map_err(|_| bad_url())?;
        let token_url = Url::parse(&format!(
            "{}/oauth/token",
            config.auth_base_url.trim_end_matches('/')
        ))
        .map_err(|_| bad_url())?;
        if api_base.cannot_be_a_base() {
            return Err(bad_url());
        }
        Ok(Self {
            config,
            api_base,
            token_url,
            net,
            tokens: TokenCache::default(),
            groups: Mutex::new(HashMap::new()),
        })
    }

    /// `{api}/v1/api/<segments...>`, each segment percent-encoded (labels may hold `:`).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.api_base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// One authenticated API call with an optional JSON body, answered by a JSON `T` (or
    /// `None` on 204); on a stale token, fetches a new one and retries once.
    async fn call<T, B>(
        &self,
        op: &'static str,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<Option<T>, VendorError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let request = |token: &Secret| -> Result<RequestBuilder, VendorError> {
            let api_key = self
                .config
                .secret_refs
                .current("api_key", &self.config.credentials.api_key)?;
            let rb = self
                .net
                .http()
                .request(method.clone(), url.clone())
                .header("api-key", api_key.expose())
                .header(ACCEPT, HeaderValue::from_static("application/json"));
            let rb = with_bearer(rb, token);
            Ok(match body {
                Some(b) => rb.json(b),
                None => rb.header(CONTENT_TYPE, HeaderValue::from_static("application/json")),
            })
        };
        self.tokens
            .authed(&self.net, self, op, |token| {
                let rb = request(token);
                async move { self.exchange(op, rb?).await }
            })
            .await
    }

    /// Sends one request and reads Brivo's answer (`None`: a success without a body).
    async fn exchange<T: DeserializeOwned>(
        &self,
        op: &'static str,
        rb: RequestBuilder,
    ) -> Result<Option<T>, CallError> {
        let reply = self.net.send(op, rb).await?;
        if !reply.is_success() {
            return match classify_api(reply.status.as_u16(), &reply.body, reply.retry_after) {
                CallError::StaleToken => Err(CallError::StaleToken),
                CallError::Vendor(e) => Err(self.net.failed(op, reply.status, e).into()),
            };
        }
        if reply.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.net.parse(op, &reply.body)?))
    }

    /// A call whose success must carry a body.
    async fn call_json<T, B>(
        &self,
        op: &'static str,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<T, VendorError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        self.call(op, method, url, body)
            .await?
            .ok_or_else(|| VendorError::Unavailable {
                detail: "malformed vendor body: body: empty".into(),
            })
    }

    /// A call whose answer body, if any, is ignored.
    async fn call_unit<B: Serialize + ?Sized>(
        &self,
        op: &'static str,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<(), VendorError> {
        self.call::<serde_json::Value, B>(op, method, url, body)
            .await
            .map(|_| ())
    }

    fn group_name(&self, ap: i64) -> String {
        format!("{}{ap}", self.config.group_prefix)
    }

    /// Our group for access point `ap`: found by name, or (when `create`) created; its
    /// permission on `ap` is (re)put before the id is cached. `None` when absent and not
    /// created.
    async fn group_for(&self, ap: i64, create: bool) -> Result<Option<i64>, VendorError> {
        if let Some(id) = self.groups.lock().await.get(&ap) {
            return Ok(Some(*id));
        }
        let name = self.group_name(ap);
        let mut url = self.url(&["groups"]);
        url.query_pairs_mut()
            .append_pair("filter", &format!("name__eq:{name}"))
            .append_pair("pageSize", &wire::MAX_PAGE_SIZE.to_string());
        let page: wire::Page<wire::Group> = self
            .call_json("list_groups", Method::GET, url, None::<&()>)
            .await?;
        let group_id = match page.data.into_iter().find(|g| g.name == name) {
            Some(g) => g.id,
            None if create => {
                let g: wire::Group = self
                    .call_json(
                        "create_group",
                        Method::POST,
                        self.url(&["groups"]),
                        Some(&wire::CreateGroupRequest { name }),
                    )
                    .await?;
                debug!(vendor = VENDOR, "group created");
                g.id
            }
            None => return Ok(None),
        };
        let permission = wire::AccessPermissionRequest {
            schedule: wire::IdRef {
                id: self.config.access_schedule_id,
            },
            privacy_mode_override: None,
        };
        let url = self.url(&[
            "groups",
            &group_id.to_string(),
            "access",
            "access-points",
            &ap.to_string(),
        ]);
        match self
            .call_unit("grant_access_point", Method::PUT, url, Some(&permission))
            .await
        {
            Ok(()) => {}
            Err(VendorError::NotFound) => {
                return Err(VendorError::Refused {
                    code: "lock_not_found".into(),
                    detail: "the vendor does not know the access point".into(),
                })
            }
            Err(e) => return Err(e),
        }
        self.groups.lock().await.insert(ap, group_id);
        Ok(Some(group_id))
    }

    async fn add_to_group(&self, group_id: i64, user_id: i64) -> Result<(), VendorError> {
        let url = self.url(&[
            "groups",
            &group_id.to_string(),
            "users",
            &user_id.to_string(),
        ]);
        self.call_unit("add_user_to_group", Method::PUT, url, None::<&()>)
            .await
    }

    async fn user(&self, user_id: i64) -> Result<wire::User, VendorError> {
        self.call_json(
            "get_user",
            Method::GET,
            self.url(&["users", &user_id.to_string()]),
            None::<&()>,
        )
        .await
    }

    /// Every member of group `group_id`, all pages.
    async fn group_users(&self, group_id: i64) -> Result<Vec<wire::User>, VendorError> {
        let mut out = Vec::new();
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            let mut url = self.url(&["groups", &group_id.to_string(), "users"]);
            url.query_pairs_mut()
                .append_pair("offset", &offset.to_string())
                .append_pair("pageSize", &wire::MAX_PAGE_SIZE.to_string());
            let page: wire::Page<wire::User> = self
                .call_json("list_group_users", Method::GET, url, None::<&()>)
                .await?;
            let n = i64::try_from(page.data.len()).unwrap_or(i64::MAX);
            out.extend(page.data);
            offset += n;
            if n == 0 || offset >= page.count {
                break;
            }
        }
        Ok(out)
    }
}

fn with_bearer(rb: RequestBuilder, token: &Secret) -> RequestBuilder {
    match HeaderValue::from_str(&format!("bearer {}", token.expose())) {
        Ok(mut v) => {
            v.set_sensitive(true);
            rb.header(AUTHORIZATION, v)
        }
        // A token with bytes a header cannot carry: send none, the API answers 401.
        Err(_) => rb,
    }
}

fn access_point_id(device: &DeviceRef) -> Result<i64, VendorError> {
    device
        .expose()
        .trim()
        .parse()
        .map_err(|_| VendorError::Refused {
            code: "invalid_device".into(),
            detail: "a brivo device ref must be an integer access point id".into(),
        })
}

fn user_id(vendor_ref: &VendorRef) -> Result<i64, VendorError> {
    vendor_ref
        .expose()
        .parse()
        .map_err(|_| VendorError::Refused {
            code: "invalid_vendor_ref".into(),
            detail: "a brivo vendor ref must be an integer user id".into(),
        })
}

fn unsupported(kind: KeyCredentialKind) -> Result<(), VendorError> {
    match kind {
        KeyCredentialKind::PinCode => Ok(()),
        _ => Err(VendorError::Refused {
            code: "unsupported_kind".into(),
            detail: "this adapter issues pin codes only".into(),
        }),
    }
}

impl TokenEndpoint for BrivoAdapter {
    async fn fetch_token(&self) -> Result<Grant, VendorError> {
        let creds = &self.config.credentials;
        let refs = &self.config.secret_refs;
        let client_secret = refs.current("client_secret", &creds.client_secret)?;
        let api_key = refs.current("api_key", &creds.api_key)?;
        let password = refs.current("password", &creds.password)?;
        let rb = self
            .net
            .http()
            .post(self.token_url.clone())
            .basic_auth(&creds.client_id, Some(client_secret.expose()))
            .header("api-key", api_key.expose())
            .form(&wire::TokenRequest {
                grant_type: "password",
                username: &creds.username,
                password: password.expose(),
            });
        self.net.grant(rb, classify_token).await
    }
}

#[async_trait::async_trait]
impl LockPort for BrivoAdapter {
    crate::http_kit::http_port_basics!(
        vendor: Brivo,
        account: api_base_url / credentials.client_id,
        can: [mobile_key, pin, remote_revoke, remote_issue],
    );

    fn default_rate_per_minute(&self) -> Option<u32> {
        // Brivo documents no rate limit
        None
    }

    fn check_device(&self, device: &DeviceRef) -> Result<(), VendorError> {
        access_point_id(device).map(drop)
    }

    async fn probe(&self, device: &DeviceRef) -> Result<crate::DeviceProbe, VendorError> {
        let ap = access_point_id(device)?;
        let point: wire::AccessPoint = self
            .call_json(
                "get_access_point",
                Method::GET,
                self.url(&["access-points", &ap.to_string()]),
                None::<&()>,
            )
            .await?;
        let Some(panel_id) = point.control_panel_id else {
            return Ok(crate::DeviceProbe {
                online: true,
                battery_percent: None,
                firmware: None,
                device_time: None,
            });
        };
        let panel: wire::ControlPanel = self
            .call_json(
                "get_control_panel",
                Method::GET,
                self.url(&["control-panels", &panel_id.to_string()]),
                None::<&()>,
            )
            .await?;
        Ok(crate::DeviceProbe {
            online: panel.is_online.unwrap_or(true),
            // wired readers: no battery; the panel keeps no clock the API reads
            battery_percent: None,
            firmware: panel.firmware_version,
            device_time: None,
        })
    }

    async fn issue(&self, req: &IssueRequest) -> Result<VendorRef, VendorError> {
        let ap = access_point_id(&req.device)?;
        unsupported(req.kind)?;
        let pin = req.required_pin()?;
        let group_id = self
            .group_for(ap, true)
            .await?
            .ok_or_else(|| VendorError::Unavailable {
                detail: "group could not be created".into(),
            })?;
        let body = wire::CreateUserRequest {
            first_name: wire::USER_FIRST_NAME.to_owned(),
            last_name: wire::USER_LAST_NAME.to_owned(),
            external_id: Some(req.label.clone()),
            pin: Some(pin.expose().to_owned()),
            effective_from: Some(wire::format_time(req.validity.from())),
            effective_to: Some(wire::format_time(req.validity.until())),
            ..wire::CreateUserRequest::default()
        };
        let user: wire::User = self
            .call_json(
                "create_user",
                Method::POST,
                self.url(&["users"]),
                Some(&body),
            )
            .await?;
        // If this fails the user exists without access; `find` completes it.
        self.add_to_group(group_id, user.id).await?;
        debug!(vendor = VENDOR, access_point = ap, "pin user created");
        Ok(VendorRef::new(user.id.to_string()))
    }

    async fn find(&self, req: &IssueRequest) -> Result<Option<VendorRef>, VendorError> {
        let ap = access_point_id(&req.device)?;
        let url = self.url(&["users", &req.label, "external"]);
        let user: wire::User = match self
            .call_json("get_user_by_external_id", Method::GET, url, None::<&()>)
            .await
        {
            Ok(u) => u,
            Err(VendorError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if user.external_id.as_deref() != Some(req.label.as_str()) {
            return Ok(None);
        }
        if let Some(group_id) = self.group_for(ap, true).await? {
            self.add_to_group(group_id, user.id).await?;
        }
        Ok(Some(VendorRef::new(user.id.to_string())))
    }

    async fn update(&self, req: &IssueRequest, vendor_ref: &VendorRef) -> Result<(), VendorError> {
        access_point_id(&req.device)?;
        unsupported(req.kind)?;
        let id = user_id(vendor_ref)?;
        let body = wire::PatchUserRequest {
            effective_from: Some(wire::format_time(req.validity.from())),
            effective_to: Some(wire::format_time(req.validity.until())),
            pin: None,
        };
        self.call_unit(
            "patch_user",
            Method::PATCH,
            self.url(&["users", &id.to_string()]),
            Some(&body),
        )
        .await?;
        debug!(vendor = VENDOR, "pin window changed");
        Ok(())
    }

    async fn revoke(&self, device: &DeviceRef, vendor_ref: &VendorRef) -> Result<(), VendorError> {
        access_point_id(device)?;
        let id = user_id(vendor_ref)?;
        let res = self
            .call_unit(
                "delete_user",
                Method::DELETE,
                self.url(&["users", &id.to_string()]),
                None::<&()>,
            )
            .await;
        gone_is_ok(VENDOR, "pin user", res)
    }

    async fn list(&self, device: &DeviceRef) -> Result<Vec<VendorEntry>, VendorError> {
        let ap = access_point_id(device)?;
        let Some(group_id) = self.group_for(ap, false).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for u in self.group_users(group_id).await? {
            let complete =
                u.external_id.is_some() && u.effective_from.is_some() && u.effective_to.is_some();
            let u = if complete {
                u
            } else {
                match self.user(u.id).await {
                    Ok(full) => full,
                    // Deleted between the two calls.
                    Err(VendorError::NotFound) => continue,
                    Err(e) => return Err(e),
                }
            };
            out.push(
                VendorEntry::try_from(u).map_err(|w| VendorError::Unavailable {
                    detail: w.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    async fn health(&self) -> Result<(), VendorError> {
        let mut url = self.url(&["access-points"]);
        url.query_pairs_mut().append_pair("pageSize", "1");
        let _: wire::Page<wire::AccessPoint> = self
            .call_json("list_access_points", Method::GET, url, None::<&()>)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug() {
        let cfg = BrivoConfig::new(
            "http://x",
            "http://y",
            BrivoCredentials {
                api_key: Secret::new("s3cr3t-key"),
                client_id: "cid".into(),
                client_secret: Secret::new("s3cr3t-client"),
                username: "admin".into(),
                password: Secret::new("s3cr3t-pass"),
            },
            1,
        );
        let s = format!("{cfg:?}");
        assert!(!s.contains("s3cr3t"), "{s}");
    }
}
