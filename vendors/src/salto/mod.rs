//! The Salto KS adapter: time-limited access for one guest on one IQ-connected lock
//! through the Salto KS Connect API (cloud, `connect.my-clay.com`; acceptance
//! `clp-accept-user.my-clay.com`), JSON over HTTPS with an OpenID Connect bearer token.
//!
//! Salto KS grants access through access groups: a group holds users, locks and time
//! schedules, and its users open its locks during its schedules. One Lockstep credential
//! on one device is one access group named with our label (`customer_reference`), holding
//! one site user (also named with our label, in `alias` and `last_name`), the device's lock
//! and one continuous time schedule for the validity window. The group id is our
//! `vendorRef`. Kinds: `pin_code` is the site user's PIN (only on a lock whose
//! `lock_type` has a keypad, e.g. `escutcheon_pin`; otherwise `unsupported_kind`);
//! `mobile_app` is the user's Salto digital key (the KS app key that comes with site
//! access); `rfid_card` is a tag the desk encoder registers on the same user (the adapter
//! creates the user and access; the tag itself is written at the desk). `qr_code` and
//! `nfc_tag` are `unsupported_kind`.
//!
//! Endpoints used:
//! - `POST {identity}/connect/token`, HTTP Basic `client_id:client_secret`, form
//!   `grant_type=password`, `username`, `password`, `scope=user_api.full_access` →
//!   `{access_token, expires_in, token_type, scope}`. Cached until shortly before
//!   `expires_in` (3600 s measured) runs out; a Connect API 401 fetches a new token once
//!   and retries once.
//! - `GET /v1.2/sites/{site_id}`: the health probe.
//! - `GET /v1.2/sites/{site_id}/locks/{lock_id}`: `lock_type` tells a keypad (PIN only).
//! - `GET|POST /v1.2/sites/{site_id}/users`, `DELETE /v1.2/sites/{site_id}/users/{id}`,
//!   `PUT /v1.2/sites/{site_id}/users/{id}/pin` (`{pin}`).
//! - `GET|POST /v1.2/sites/{site_id}/access_groups`,
//!   `GET|DELETE /v1.2/sites/{site_id}/access_groups/{group_id}`,
//!   `GET|POST /v1.2/sites/{site_id}/access_groups/{group_id}/users` (`{user_id}`).
//! - `GET|POST /v1.1/sites/{site_id}/access_groups/{group_id}/locks` (`{lock_id}`).
//! - `GET|POST /v1.1/sites/{site_id}/access_groups/{group_id}/time_schedules` and
//!   `PATCH .../time_schedules/{id}`: `update` moves the window in place, so the user, its
//!   PIN and its digital key stay.
//!
//! Lists are `{items, next_page_link, count}` pages (`$top=100`), followed through
//! `next_page_link` (only when it points at the configured API).
//!
//! `issue` is resumable: every step first looks for what an earlier attempt left (the
//! user by alias, the group by name, its schedule, member and lock) and creates only what
//! is missing, and the lock is added last. `find` therefore reports a group only once it
//! holds the device's lock; an unfinished group is completed by the next `issue`, never
//! duplicated. `revoke` deletes the site users named with the group's label, then the
//! group; already gone is `Ok`.
//!
//! Real vs reconstructed:
//! - Real (public docs and recorded traffic of integrators): the hosts, the token request
//!   (Basic auth, password grant, `user_api.full_access`), the paths above, the page shape,
//!   the site, lock and site-user fields read here, the `{ErrorCode, Message}` error body,
//!   time schedules with naive `start_date`/`end_date` in the site's time zone and
//!   weekday switches.
//! - Reconstructed, not from public docs: which fields `POST .../users` requires; the
//!   shape of an access group's member list (`id` = platform user id); the `ErrorCode`
//!   values (see [`errors`]); 409 for a PIN another user of the site already has; 429 with
//!   `Retry-After` (Salto documents no rate limit). Setting a chosen PIN needs the KS Pro
//!   subscription (`pin_enabled` on the site).
//! - Device health (`probe`): `online` and `battery_level` of the lock object are real
//!   (recorded: `"battery_level": "fresh"`); the other battery states (`low`, `very_low`,
//!   `empty`) and `firmware_version` are reconstructed. Salto reports a battery *state*, so
//!   it is mapped onto a percent band (fresh 100, low 15, very_low 5, empty 0) that trips
//!   the D-4 threshold on `low`. Salto KS exposes no lock clock, so no clock skew.
//! - The site's time zone is configured as a fixed offset ([`SaltoConfig::site_utc_offset`]):
//!   this crate has no time-zone database, so daylight-saving changes inside a window are
//!   not followed (a window crossing one is off by the DST shift at one end).
//! - `list` costs one call per access group of the site (plus one per matching group for
//!   its schedule): Salto has no "groups of a lock" query in the public API. `issue` and
//!   `revoke` page through the site's users and groups to find ours by name (OData
//!   `$filter` would be cheaper but its support on these routes is not documented).
//! - A retried `issue` sends the PIN again (Salto never reads a PIN back, and setting the
//!   same PIN on the same user is harmless); everything else is only created if missing.

pub mod errors;
#[cfg(feature = "sim")]
pub mod simulator;
pub mod webhook;
pub mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use lockstep_domain::{Clock, DeviceRef, KeyCredentialKind, VendorRef};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, warn};

use self::errors::{classify, classify_token_error};
use crate::http_kit::{CallError, Grant, TokenCache, TokenEndpoint, Transport};
use crate::{IssueRequest, LockPort, VendorEntry, VendorError};

#[cfg(feature = "sim")]
pub use self::simulator::{
    RunningSimulator, SaltoSimulator, SimAccessGroup, SimConfig, SimCounters, SimFaults, SimHandle,
    SimLockHealth, SimSiteUser,
};

/// A secret string: `Debug` is redacted and there is no `Display` (one type for every
/// adapter, [`crate::secrets::Secret`]).
pub use crate::secrets::Secret;

/// How to reach one Salto KS site.
#[derive(Clone, Debug)]
pub struct SaltoConfig {
    /// The Connect API, e.g. `https://connect.my-clay.com` (no trailing slash needed).
    pub api_base_url: String,
    /// The identity server, e.g. `https://identity.eu.my-clay.com`.
    pub identity_base_url: String,
    /// The site's UUID.
    pub site_id: String,
    /// The OAuth client id Salto issued.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: Secret,
    /// The KS system user (e-mail) that administers the site.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// Token scope; [`wire::SCOPE_FULL_ACCESS`] unless told otherwise.
    pub scope: String,
    /// Role ids given to the guests' site users (the site's basic user role); empty sends
    /// none and lets Salto apply its default.
    pub guest_role_ids: Vec<String>,
    /// The site's offset from UTC, in which Salto reads time schedules.
    pub site_utc_offset: FixedOffset,
    /// Timeout of each HTTP call.
    pub call_timeout: Duration,
    /// Secrets re-read at each use (rotation without restart); empty: the fixed values.
    pub secret_refs: crate::secrets::SecretRefs,
}

impl SaltoConfig {
    /// Timeout of each call unless configured.
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
    /// Salto's production Connect API.
    pub const PRODUCTION_API: &'static str = "https://connect.my-clay.com";
    /// Salto's production identity server.
    pub const PRODUCTION_IDENTITY: &'static str = "https://identity.eu.my-clay.com";
    /// Salto's acceptance (sandbox) Connect API.
    pub const ACCEPT_API: &'static str = "https://clp-accept-user.my-clay.com";
    /// Salto's acceptance identity server.
    pub const ACCEPT_IDENTITY: &'static str = "https://identity-acc.eu.my-clay.com";

    /// A config with the full-access scope, no guest role, a UTC site and the default
    /// call timeout.
    pub fn new(
        api_base_url: impl Into<String>,
        identity_base_url: impl Into<String>,
        site_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Secret,
        username: impl Into<String>,
        password: Secret,
    ) -> Self {
        Self {
            api_base_url: api_base_url.into(),
            identity_base_url: identity_base_url.into(),
            site_id: site_id.into(),
            client_id: client_id.into(),
            client_secret,
            username: username.into(),
            password,
            scope: wire::SCOPE_FULL_ACCESS.to_owned(),
            guest_role_ids: Vec::new(),
            site_utc_offset: utc(),
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
            secret_refs: crate::secrets::SecretRefs::default(),
        }
    }
}

fn utc() -> FixedOffset {
    FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!("offset 0 is in range"))
}

/// The Salto KS [`LockPort`].
pub struct SaltoAdapter {
    config: SaltoConfig,
    api: String,
    identity: String,
    site: String,
    net: Transport,
    tokens: TokenCache,
}

impl fmt::Debug for SaltoAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaltoAdapter")
            .field("api_base_url", &self.api)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

const VENDOR: &str = "salto";
/// Safety cap on list paging (100 per page).
const MAX_PAGES: usize = 100;
/// The first name of every site user Lockstep creates (no guest PII goes to the vendor).
const USER_FIRST_NAME: &str = "Lockstep";

/// One request to the Connect API.
struct Call<'a> {
    op: &'static str,
    method: Method,
    url: String,
    body: Option<Vec<u8>>,
    query: &'a [(&'a str, String)],
    /// Whether a 409 here means a PIN collision.
    pin_route: bool,
}

impl SaltoAdapter {
    /// An adapter for one Salto KS site. Fails only if the HTTP client cannot be built.
    pub fn new(config: SaltoConfig, clock: Arc<dyn Clock>) -> Result<Self, VendorError> {
        let net = Transport::new(VENDOR, config.call_timeout, clock)?;
        let api = config.api_base_url.trim_end_matches('/').to_owned();
        let identity = config.identity_base_url.trim_end_matches('/').to_owned();
        let site = segment(&config.site_id).ok_or_else(|| VendorError::Refused {
            code: "invalid_site".into(),
            detail: "a salto site id must be a uuid".into(),
        })?;
        Ok(Self {
            config,
            api,
            identity,
            site,
            net,
            tokens: TokenCache::default(),
        })
    }

    fn v12(&self, rest: &str) -> String {
        format!("{}/v1.2/sites/{}{}", self.api, self.site, rest)
    }

    fn v11(&self, rest: &str) -> String {
        format!("{}/v1.1/sites/{}{}", self.api, self.site, rest)
    }

    /// One authenticated call; on a stale token, fetches a new one and retries once.
    /// Returns the reply body of a 2xx.
    async fn call(&self, c: Call<'_>) -> Result<Body, VendorError> {
        let build = |token: &Secret| {
            let mut rb = self
                .net
                .http()
                .request(c.method.clone(), &c.url)
                .bearer_auth(token.expose());
            if !c.query.is_empty() {
                rb = rb.query(c.query);
            }
            if let Some(body) = &c.body {
                rb = rb
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            rb
        };
        self.tokens
            .authed(&self.net, self, c.op, |token| {
                self.exchange(c.op, build(token), c.pin_route)
            })
            .await
    }

    /// Sends one request and reads Salto's reply.
    async fn exchange(
        &self,
        op: &'static str,
        rb: RequestBuilder,
        pin_route: bool,
    ) -> Result<Body, CallError> {
        let reply = self.net.send(op, rb).await?;
        if reply.is_success() {
            return Ok(Body(reply.body));
        }
        let code = serde_json::from_slice::<wire::ApiError>(&reply.body)
            .ok()
            .map(|e| e.error_code);
        match classify(reply.status.as_u16(), code, pin_route, reply.retry_after) {
            CallError::StaleToken => Err(CallError::StaleToken),
            CallError::Vendor(e) => Err(self.net.failed(op, reply.status, e).into()),
        }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        op: &'static str,
        url: String,
    ) -> Result<T, VendorError> {
        let body = self
            .call(Call {
                op,
                method: Method::GET,
                url,
                body: None,
                query: &[],
                pin_route: false,
            })
            .await?;
        self.net.parse(op, &body.0)
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        op: &'static str,
        method: Method,
        url: String,
        body: &B,
    ) -> Result<T, VendorError> {
        let reply = self.send_raw(op, method, url, body, false).await?;
        self.net.parse(op, &reply.0)
    }

    async fn send_raw<B: Serialize>(
        &self,
        op: &'static str,
        method: Method,
        url: String,
        body: &B,
        pin_route: bool,
    ) -> Result<Body, VendorError> {
        let bytes = serde_json::to_vec(body).map_err(|_| VendorError::Refused {
            code: "invalid_parameter".into(),
            detail: "request body could not be written".into(),
        })?;
        self.call(Call {
            op,
            method,
            url,
            body: Some(bytes),
            query: &[],
            pin_route,
        })
        .await
    }

    /// DELETE; already gone is `Ok`.
    async fn delete(&self, op: &'static str, url: String) -> Result<(), VendorError> {
        match self
            .call(Call {
                op,
                method: Method::DELETE,
                url,
                body: None,
                query: &[],
                pin_route: false,
            })
            .await
        {
            Ok(_) | Err(VendorError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every item of a paged list, following `next_page_link`.
    async fn list_all<T: DeserializeOwned>(
        &self,
        op: &'static str,
        url: String,
    ) -> Result<Vec<T>, VendorError> {
        let mut out = Vec::new();
        let first_query = [("$top", wire::PAGE_SIZE.to_string())];
        let mut next = Some((url, true));
        let mut pages = 0;
        while let Some((url, first)) = next.take() {
            let body = self
                .call(Call {
                    op,
                    method: Method::GET,
                    url,
                    body: None,
                    query: if first { &first_query } else { &[] },
                    pin_route: false,
                })
                .await?;
            let page: wire::Page<T> = self.net.parse(op, &body.0)?;
            let empty = page.items.is_empty();
            out.extend(page.items);
            pages += 1;
            if empty || pages >= MAX_PAGES {
                break;
            }
            if let Some(link) = page.next_page_link.filter(|l| !l.is_empty()) {
                next = Some((self.follow(op, &link)?, false));
            }
        }
        Ok(out)
    }

    /// A `next_page_link` as a URL on our API (a link elsewhere would carry our token).
    fn follow(&self, op: &'static str, link: &str) -> Result<String, VendorError> {
        if link.starts_with('/') {
            return Ok(format!("{}{}", self.api, link));
        }
        if link
            .strip_prefix(&self.api)
            .is_some_and(|rest| rest.starts_with('/'))
        {
            return Ok(link.to_owned());
        }
        warn!(vendor = VENDOR, op, "page link points outside the api");
        Err(VendorError::Unavailable {
            detail: "malformed vendor body: next_page_link: outside the api".into(),
        })
    }

    async fn groups(&self) -> Result<Vec<wire::AccessGroup>, VendorError> {
        self.list_all("list_access_groups", self.v12("/access_groups"))
            .await
    }

    async fn group_by_label(&self, label: &str) -> Result<Option<wire::AccessGroup>, VendorError> {
        Ok(self
            .groups()
            .await?
            .into_iter()
            .find(|g| g.customer_reference.as_deref() == Some(label)))
    }

    async fn group_locks(&self, group: &str) -> Result<Vec<wire::GroupLock>, VendorError> {
        self.list_all(
            "list_group_locks",
            self.v11(&format!("/access_groups/{group}/locks")),
        )
        .await
    }

    async fn group_schedules(&self, group: &str) -> Result<Vec<wire::TimeSchedule>, VendorError> {
        self.list_all(
            "list_time_schedules",
            self.v11(&format!("/access_groups/{group}/time_schedules")),
        )
        .await
    }

    async fn group_users(&self, group: &str) -> Result<Vec<wire::GroupUser>, VendorError> {
        self.list_all(
            "list_group_users",
            self.v12(&format!("/access_groups/{group}/users")),
        )
        .await
    }

    async fn users_by_alias(&self, label: &str) -> Result<Vec<wire::SiteUser>, VendorError> {
        Ok(self
            .list_all::<wire::SiteUser>("list_site_users", self.v12("/users"))
            .await?
            .into_iter()
            .filter(|u| u.alias.as_deref() == Some(label))
            .collect())
    }

    /// Creates the group's schedule for `req.validity`, or moves the existing one.
    async fn set_window(&self, group: &str, req: &IssueRequest) -> Result<(), VendorError> {
        let want = wire::TimeSchedule::window(
            req.validity.from(),
            req.validity.until(),
            self.config.site_utc_offset,
        );
        let existing = self.group_schedules(group).await?;
        match existing.first() {
            Some(s) => {
                let mut same = s.clone();
                same.id = None;
                if same == want {
                    return Ok(());
                }
                let id =
                    s.id.as_deref()
                        .and_then(segment)
                        .ok_or_else(|| VendorError::Unavailable {
                            detail: "malformed vendor body: id: missing or not a uuid".into(),
                        })?;
                let _: wire::TimeSchedule = self
                    .send(
                        "update_time_schedule",
                        Method::PATCH,
                        self.v11(&format!("/access_groups/{group}/time_schedules/{id}")),
                        &want,
                    )
                    .await?;
            }
            None => {
                let _: wire::TimeSchedule = self
                    .send(
                        "create_time_schedule",
                        Method::POST,
                        self.v11(&format!("/access_groups/{group}/time_schedules")),
                        &want,
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

/// A 2xx reply body (no `Debug`: the PIN route answers the PIN).
struct Body(Vec<u8>);

/// An id that is safe as one URL path segment (Salto ids are UUIDs).
fn segment(id: &str) -> Option<String> {
    let id = id.trim();
    (!id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| id.to_owned())
}

fn lock_id(device: &DeviceRef) -> Result<String, VendorError> {
    segment(device.expose()).ok_or_else(|| VendorError::Refused {
        code: "invalid_device".into(),
        detail: "a salto device ref must be a lock uuid".into(),
    })
}

fn group_id(vendor_ref: &VendorRef) -> Result<String, VendorError> {
    segment(vendor_ref.expose()).ok_or_else(|| VendorError::Refused {
        code: "invalid_vendor_ref".into(),
        detail: "a salto vendor ref must be an access group uuid".into(),
    })
}

fn unsupported(detail: &str) -> VendorError {
    VendorError::Refused {
        code: "unsupported_kind".into(),
        detail: detail.into(),
    }
}

impl TokenEndpoint for SaltoAdapter {
    async fn fetch_token(&self) -> Result<Grant, VendorError> {
        let refs = &self.config.secret_refs;
        let password = refs.current("password", &self.config.password)?;
        let client_secret = refs.current("client_secret", &self.config.client_secret)?;
        let form = wire::TokenRequest {
            grant_type: "password",
            username: &self.config.username,
            password: password.expose(),
            scope: &self.config.scope,
        };
        let rb = self
            .net
            .http()
            .post(format!("{}/connect/token", self.identity))
            .basic_auth(&self.config.client_id, Some(client_secret.expose()))
            .form(&form);
        self.net
            .grant(rb, |status, body| {
                let oauth: Option<wire::OAuthError> = serde_json::from_slice(body).ok();
                classify_token_error(status, oauth.as_ref().map(|o| o.error.as_str()))
            })
            .await
    }
}

#[async_trait::async_trait]
impl LockPort for SaltoAdapter {
    // Spec 003 §6.1: card encoding, offline issuance (limited, via SVN propagation),
    // floors and (partially) areas are Salto's; mobile keys and PINs through KS.
    crate::http_kit::http_port_basics!(
        vendor: Salto,
        account: api_base_url / client_id,
        can: [mobile_key, card_encoding, pin, remote_revoke, remote_issue, offline_issuance, scope_floors, scope_areas],
    );

    fn default_rate_per_minute(&self) -> Option<u32> {
        // Salto documents no rate limit
        None
    }

    fn check_device(&self, device: &DeviceRef) -> Result<(), VendorError> {
        lock_id(device).map(drop)
    }

    async fn probe(&self, device: &DeviceRef) -> Result<crate::DeviceProbe, VendorError> {
        let lock = lock_id(device)?;
        let l: wire::Lock = self
            .get("get_lock", self.v12(&format!("/locks/{lock}")))
            .await?;
        Ok(crate::DeviceProbe {
            // a lock object without the flag says nothing about reachability
            online: l.online.unwrap_or(true),
            battery_percent: l.battery_percent(),
            firmware: l.firmware_version,
            // Salto KS exposes no lock clock: locks keep time from the site's IQ
            device_time: None,
        })
    }

    async fn issue(&self, req: &IssueRequest) -> Result<VendorRef, VendorError> {
        let lock = lock_id(&req.device)?;
        let pin = match req.kind {
            KeyCredentialKind::PinCode => Some(req.required_pin()?),
            KeyCredentialKind::MobileApp | KeyCredentialKind::RfidCard => None,
            KeyCredentialKind::QrCode | KeyCredentialKind::NfcTag => {
                return Err(unsupported(
                    "salto ks issues pins, digital keys and tags only",
                ))
            }
        };
        if pin.is_some() {
            let l: wire::Lock = match self
                .get("get_lock", self.v12(&format!("/locks/{lock}")))
                .await
            {
                Ok(l) => l,
                Err(VendorError::NotFound) => {
                    return Err(VendorError::Refused {
                        code: "lock_not_found".into(),
                        detail: "the vendor does not know the lock".into(),
                    })
                }
                Err(e) => return Err(e),
            };
            if !l.has_keypad() {
                return Err(unsupported("the lock has no keypad"));
            }
        }

        // 1. The site user, reused from an earlier attempt when there is one.
        let user = match self.users_by_alias(&req.label).await?.into_iter().next() {
            Some(u) => u,
            None => {
                self.send(
                    "create_site_user",
                    Method::POST,
                    self.v12("/users"),
                    &wire::CreateSiteUser {
                        first_name: USER_FIRST_NAME.to_owned(),
                        last_name: req.label.clone(),
                        alias: req.label.clone(),
                        use_pin: pin.is_some(),
                        role_ids: self.config.guest_role_ids.clone(),
                        blocked: false,
                    },
                )
                .await?
            }
        };
        let site_user = segment(&user.id).ok_or_else(|| VendorError::Unavailable {
            detail: "malformed vendor body: id: not a uuid".into(),
        })?;

        // 2. The PIN (setting the same PIN again is harmless).
        if let Some(pin) = pin {
            self.send_raw(
                "set_pin",
                Method::PUT,
                self.v12(&format!("/users/{site_user}/pin")),
                &wire::SetPin { pin: pin.expose() },
                true,
            )
            .await?;
        }

        // 3. The access group, named with our label.
        let group = match self.group_by_label(&req.label).await? {
            Some(g) => g,
            None => {
                self.send(
                    "create_access_group",
                    Method::POST,
                    self.v12("/access_groups"),
                    &wire::CreateAccessGroup {
                        customer_reference: req.label.clone(),
                    },
                )
                .await?
            }
        };
        let g = segment(&group.id).ok_or_else(|| VendorError::Unavailable {
            detail: "malformed vendor body: id: not a uuid".into(),
        })?;

        // 4. The window.
        self.set_window(&g, req).await?;

        // 5. The member.
        if !self
            .group_users(&g)
            .await?
            .iter()
            .any(|m| m.id == user.user.id)
        {
            let _: wire::GroupUser = self
                .send(
                    "add_group_user",
                    Method::POST,
                    self.v12(&format!("/access_groups/{g}/users")),
                    &wire::AddGroupUser {
                        user_id: user.user.id.clone(),
                    },
                )
                .await?;
        }

        // 6. The lock, last: from here the access is live and `find` reports it.
        if !self.group_locks(&g).await?.iter().any(|l| l.id == lock) {
            let _: wire::GroupLock = self
                .send(
                    "add_group_lock",
                    Method::POST,
                    self.v11(&format!("/access_groups/{g}/locks")),
                    &wire::AddGroupLock {
                        lock_id: lock.clone(),
                    },
                )
                .await?;
        }
        debug!(vendor = VENDOR, "access granted");
        Ok(VendorRef::new(group.id))
    }

    async fn find(&self, req: &IssueRequest) -> Result<Option<VendorRef>, VendorError> {
        let lock = lock_id(&req.device)?;
        let Some(group) = self.group_by_label(&req.label).await? else {
            return Ok(None);
        };
        let Some(g) = segment(&group.id) else {
            return Ok(None);
        };
        // A group without the lock is an unfinished issue: `issue` completes it.
        let complete = self.group_locks(&g).await?.iter().any(|l| l.id == lock);
        Ok(complete.then(|| VendorRef::new(group.id)))
    }

    async fn update(&self, req: &IssueRequest, vendor_ref: &VendorRef) -> Result<(), VendorError> {
        lock_id(&req.device)?;
        let g = group_id(vendor_ref)?;
        self.set_window(&g, req).await?;
        debug!(vendor = VENDOR, "access window moved");
        Ok(())
    }

    async fn revoke(&self, device: &DeviceRef, vendor_ref: &VendorRef) -> Result<(), VendorError> {
        lock_id(device)?;
        let g = group_id(vendor_ref)?;
        let group: wire::AccessGroup = match self
            .get("get_access_group", self.v12(&format!("/access_groups/{g}")))
            .await
        {
            Ok(group) => group,
            Err(VendorError::NotFound) => {
                debug!(vendor = VENDOR, "access group already gone");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // The users first (their PINs and keys die with them), then the group: a retry
        // after a failure in between still finds the group and its label.
        if let Some(label) = group
            .customer_reference
            .as_deref()
            .filter(|l| !l.is_empty())
        {
            for u in self.users_by_alias(label).await? {
                if let Some(id) = segment(&u.id) {
                    self.delete("delete_site_user", self.v12(&format!("/users/{id}")))
                        .await?;
                }
            }
        }
        self.delete(
            "delete_access_group",
            self.v12(&format!("/access_groups/{g}")),
        )
        .await?;
        debug!(vendor = VENDOR, "access revoked");
        Ok(())
    }

    async fn list(&self, device: &DeviceRef) -> Result<Vec<VendorEntry>, VendorError> {
        let lock = lock_id(device)?;
        let mut out = Vec::new();
        for group in self.groups().await? {
            let Some(g) = segment(&group.id) else {
                continue;
            };
            let locks = match self.group_locks(&g).await {
                Ok(l) => l,
                // Deleted between the two calls.
                Err(VendorError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            if !locks.iter().any(|l| l.id == lock) {
                continue;
            }
            let schedules = match self.group_schedules(&g).await {
                Ok(s) => s,
                Err(VendorError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            let (valid_from, valid_until) = match schedules.first() {
                Some(s) => s.utc_window(self.config.site_utc_offset).map_err(|w| {
                    VendorError::Unavailable {
                        detail: w.to_string(),
                    }
                })?,
                None => (DateTime::<Utc>::UNIX_EPOCH, DateTime::<Utc>::MAX_UTC),
            };
            out.push(VendorEntry {
                vendor_ref: VendorRef::new(group.id),
                label: group.customer_reference.unwrap_or_default(),
                valid_from,
                valid_until,
            });
        }
        Ok(out)
    }

    async fn health(&self) -> Result<(), VendorError> {
        let _: wire::Site = self.get("get_site", self.v12("")).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuid_like_ids_become_path_segments() {
        assert_eq!(
            segment("4d77312f-4a87-41db-a97b-f9d948dcc908").as_deref(),
            Some("4d77312f-4a87-41db-a97b-f9d948dcc908")
        );
        assert_eq!(segment("../x"), None);
        assert_eq!(segment("a/b"), None);
        assert_eq!(segment(""), None);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let cfg = SaltoConfig::new(
            "http://x",
            "http://id",
            "site",
            "cid",
            Secret::new("s3cr3t-client"),
            "user",
            Secret::new("s3cr3t-pass"),
        );
        let s = format!("{cfg:?}");
        assert!(!s.contains("s3cr3t"), "{s}");
    }
}
