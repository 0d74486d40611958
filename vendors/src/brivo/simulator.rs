//! A Brivo API v1 simulator with fault injection (DESIGN §6), built on actix-web.
//!
//! It speaks the subset of the API the adapter uses, with Brivo's paths, JSON bodies,
//! `{data, offset, pageSize, count}` listings and `{code, message}` errors:
//! `POST /oauth/token` (password grant, `Authorization: Basic`), and under `/v1/api`:
//! `GET /access-points`, `GET|POST /groups`, `PUT /groups/{g}/access/access-points/{ap}`,
//! `PUT /groups/{g}/users/{u}`, `GET /groups/{g}/users`, `POST /users`,
//! `GET|PATCH|DELETE /users/{u}`, `GET /users/{externalId}/external`. Every API call needs the
//! `api-key` header (else 403 `<h1>Developer Inactive</h1>`, as Brivo's gateway answers) and a
//! bearer token the simulator issued (else 401). It refuses unknown access points, groups
//! and users (404), a second user with the same `externalId` or the same PIN (400), and
//! bodies without the required fields (400).
//!
//! Faults ([`SimFaults`]) are set from Rust through [`SimHandle`] or from another process
//! with `POST /_sim/faults` (a JSON object; the keys given replace the current values).
//! Inspection over HTTP: `GET /_sim/faults`, `GET /_sim/counters`, `GET /_sim/users`;
//! control: `POST /_sim/access-points/{id}` (adds an access point), `POST /_sim/tokens/expire`
//! (every issued token answers 401 from then on). Door attempts post signed access events
//! (`webhooks`: `POST /_sim/webhook`, `POST /_sim/access-points/{id}/attempts`,
//! `POST /_sim/webhook/redeliver`).
//!
//! The server runs on a thread of its own with its own actix `System`, so
//! [`BrivoSimulator::start`] works from any runtime or a plain test, and returns once the
//! socket is bound. Its data are fake: PINs are visible through its inspection API on
//! purpose. It never logs them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use lockstep_domain::{Clock, SystemClock};
use serde::Serialize;

use super::errors::{DUPLICATE_EXTERNAL_ID_MESSAGE, DUPLICATE_PIN_MESSAGE};
use super::wire::{self, ApiError};
use super::{BrivoConfig, BrivoCredentials, Secret};
pub use crate::sim_kit::SimFaults;
use crate::sim_kit::{oauth_error, FaultKit, KitState, SimTokens, TokenCheck};
use crate::ttlock::simulator::journal::{DoorJournal, DoorObject};

mod webhooks;

/// Api key the simulator accepts.
pub const SIM_API_KEY: &str = "sim-api-key";
/// Client id of the simulator's application.
pub const SIM_CLIENT_ID: &str = "sim-client-id";
/// Its client secret.
pub const SIM_CLIENT_SECRET: &str = "sim-client-secret";
/// The administrator's username.
pub const SIM_USERNAME: &str = "sim-admin";
/// The administrator's password.
pub const SIM_PASSWORD: &str = "sim-password";
/// The always-on schedule ("24x7 - Always On") every simulator knows.
pub const SIM_SCHEDULE_ID: i64 = 439_955;

/// What the simulator starts with.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Access points that exist (ids).
    pub access_points: Vec<i64>,
    /// `expires_in` of issued tokens, seconds.
    pub token_ttl_secs: i64,
    /// Time for token expiry.
    pub clock: Arc<dyn Clock>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            access_points: Vec::new(),
            token_ttl_secs: 3600,
            clock: Arc::new(SystemClock),
        }
    }
}

/// One user held by the simulator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimUser {
    /// Its id (the adapter's `vendorRef`).
    pub id: i64,
    /// Its external id.
    pub external_id: Option<String>,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// The PIN.
    pub pin: Option<String>,
    /// Start of the PIN's validity.
    pub effective_from: Option<DateTime<Utc>>,
    /// End of the PIN's validity.
    pub effective_to: Option<DateTime<Utc>>,
    /// Groups it belongs to.
    pub groups: BTreeSet<i64>,
}

crate::sim_kit::sim_counters! {
    /// How many calls the simulator has seen.
    pub struct SimCounters {
        /// Tokens issued.
        pub tokens_issued: u64,
        /// Users created (including those whose response was then lost).
        pub users_created: u64,
        /// Users patched.
        pub users_patched: u64,
        /// Users deleted.
        pub users_deleted: u64,
        /// Groups created.
        pub groups_created: u64,
        /// Group memberships put.
        pub memberships_put: u64,
        /// Listing pages served.
        pub lists: u64,
    }
}

#[derive(Clone, Debug)]
struct SimGroup {
    name: String,
    access_points: BTreeMap<i64, i64>,
}

/// The simulator's state behind its [`SimHandle`].
pub struct SimState {
    access_points: BTreeSet<i64>,
    /// Access points whose control panel is offline.
    offline_access_points: BTreeSet<i64>,
    groups: BTreeMap<i64, SimGroup>,
    users: BTreeMap<i64, SimUser>,
    tokens: SimTokens,
    kit: FaultKit,
    counters: SimCounters,
    next_id: i64,
    token_ttl_secs: i64,
    /// The client secrets accepted now (a rotation's overlap holds two).
    client_secrets: Vec<String>,
    journal: DoorJournal,
    /// Where door events are posted (`webhooks`).
    webhook: crate::sim_kit::SimWebhook,
}

impl KitState for SimState {
    crate::sim_kit::kit_fields!(SimCounters);
    type Refusal = Reject;

    /// What every access point accepts, through Lockstep's eyes: each user with an external
    /// id (Lockstep's label), on every access point of each of its groups, in its effective
    /// window; a user with a PIN is a `pin_code`.
    fn door_view(&self) -> Vec<DoorObject> {
        let mut out = Vec::new();
        for u in self.users.values() {
            let Some(label) = &u.external_id else {
                continue;
            };
            let kind = if u.pin.is_some() {
                lockstep_domain::KeyCredentialKind::PinCode
            } else {
                lockstep_domain::KeyCredentialKind::MobileApp
            };
            for g in u.groups.iter().filter_map(|g| self.groups.get(g)) {
                for ap in g.access_points.keys() {
                    out.push(DoorObject {
                        device: ap.to_string(),
                        label: label.clone(),
                        kind,
                        valid_from: u.effective_from,
                        valid_until: u.effective_to,
                    });
                }
            }
        }
        out
    }

    fn outage_reply() -> HttpResponse {
        HttpResponse::ServiceUnavailable().json(ApiError {
            code: 503,
            message: "Service unavailable".into(),
        })
    }

    fn rate_limited_reply() -> HttpResponse {
        HttpResponse::TooManyRequests().json(ApiError {
            code: 429,
            message: "Too many requests".into(),
        })
    }

    fn error_reply() -> HttpResponse {
        HttpResponse::InternalServerError().json(ApiError {
            code: 500,
            message: "Internal server error".into(),
        })
    }
}

crate::sim_kit::issues_tokens!(SimState);

crate::sim_kit::signed_webhooks!(
    SimState,
    crate::sim_kit::Signer {
        timestamp_header: Some(crate::brivo::webhook::TIMESTAMP_HEADER),
        signature_header: crate::brivo::webhook::SIGNATURE_HEADER,
        sign: crate::brivo::webhook::sign,
    }
);

impl SimHandle {
    fn new(config: SimConfig) -> Self {
        let state = SimState {
            client_secrets: vec![SIM_CLIENT_SECRET.to_owned()],
            access_points: config.access_points.into_iter().collect(),
            offline_access_points: BTreeSet::new(),
            groups: BTreeMap::new(),
            users: BTreeMap::new(),
            tokens: SimTokens::default(),
            kit: FaultKit::default(),
            counters: SimCounters::default(),
            next_id: 442_211,
            token_ttl_secs: config.token_ttl_secs,
            journal: DoorJournal::default(),
            webhook: crate::sim_kit::SimWebhook::default(),
        };
        Self::with_state(state, config.clock)
    }

    /// Adds an access point (no-op if it exists).
    /// Takes the control panel of an access point offline (or back online).
    pub fn set_access_point_online(&self, access_point: i64, online: bool) {
        self.with(|s| {
            if online {
                s.offline_access_points.remove(&access_point);
            } else {
                s.offline_access_points.insert(access_point);
            }
        });
    }

    pub fn add_access_point(&self, id: i64) {
        self.with(|s| {
            s.access_points.insert(id);
        });
    }

    /// Every user, by id.
    pub fn users(&self) -> Vec<SimUser> {
        self.with(|s| s.users.values().cloned().collect())
    }

    /// The users that may open access point `ap` (members of a group with a permission on
    /// it).
    pub fn users_on(&self, ap: i64) -> Vec<SimUser> {
        self.with(|s| {
            let groups: BTreeSet<i64> = s
                .groups
                .iter()
                .filter(|(_, g)| g.access_points.contains_key(&ap))
                .map(|(id, _)| *id)
                .collect();
            s.users
                .values()
                .filter(|u| !u.groups.is_disjoint(&groups))
                .cloned()
                .collect()
        })
    }

    /// Names of the groups, by id.
    pub fn group_names(&self) -> BTreeMap<i64, String> {
        self.with(|s| s.groups.iter().map(|(k, g)| (*k, g.name.clone())).collect())
    }

    /// Accepts `secret` as the client's secret too (the overlap of a rotation).
    pub fn accept_client_secret(&self, secret: &str) {
        self.with(|s| s.client_secrets.push(secret.to_owned()));
    }

    /// Stops accepting `secret` (the end of a rotation's overlap).
    pub fn retire_client_secret(&self, secret: &str) {
        self.with(|s| s.client_secrets.retain(|x| x != secret));
    }

    /// Issues a bearer token directly (no HTTP, no fault): for tests replaying documented
    /// requests.
    pub fn issue_token(&self) -> String {
        let now = self.clock.now();
        self.with(|s| new_token(s, now))
    }
}

fn new_token(s: &mut SimState, now: DateTime<Utc>) -> String {
    let token = s.tokens.issue(
        16,
        SIM_CLIENT_ID,
        now + chrono::Duration::seconds(s.token_ttl_secs),
    );
    s.counters.tokens_issued += 1;
    token
}

crate::sim_kit::simulator!(BrivoSimulator, "brivo");

impl RunningSimulator {
    /// An adapter config for the simulator's application and administrator.
    pub fn default_adapter_config(&self) -> BrivoConfig {
        BrivoConfig::new(
            self.base_url(),
            self.base_url(),
            BrivoCredentials {
                api_key: Secret::new(SIM_API_KEY),
                client_id: SIM_CLIENT_ID.to_owned(),
                client_secret: Secret::new(SIM_CLIENT_SECRET),
                username: SIM_USERNAME.to_owned(),
                password: Secret::new(SIM_PASSWORD),
            },
            SIM_SCHEDULE_ID,
        )
    }
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/oauth/token", web::post().to(token))
        .route("/v1/api/access-points", web::get().to(list_access_points))
        .route(
            "/v1/api/access-points/{id}",
            web::get().to(get_access_point),
        )
        .route(
            "/v1/api/control-panels/{id}",
            web::get().to(get_control_panel),
        )
        .route("/v1/api/groups", web::get().to(list_groups))
        .route("/v1/api/groups", web::post().to(create_group))
        .route(
            "/v1/api/groups/{group_id}/access/access-points/{ap_id}",
            web::put().to(grant_access_point),
        )
        .route(
            "/v1/api/groups/{group_id}/users/{user_id}",
            web::put().to(add_user_to_group),
        )
        .route(
            "/v1/api/groups/{group_id}/users",
            web::get().to(list_group_users),
        )
        .route("/v1/api/users", web::post().to(create_user))
        .route(
            "/v1/api/users/{external_id}/external",
            web::get().to(get_user_by_external_id),
        )
        .route("/v1/api/users/{user_id}", web::get().to(get_user))
        .route("/v1/api/users/{user_id}", web::patch().to(patch_user))
        .route("/v1/api/users/{user_id}", web::delete().to(delete_user))
        .configure(crate::sim_kit::routes::<SimState>)
        .route("/_sim/users", web::get().to(get_users))
        .route(
            "/_sim/access-points/{id}",
            web::post().to(post_access_point),
        )
        .configure(crate::sim_kit::token_routes::<SimState>)
        .configure(webhooks::routes);
}

type Params = HashMap<String, String>;

/// A Brivo error answer: the status and `{code, message}`.
struct Refusal {
    status: u16,
    message: &'static str,
}

impl From<Refusal> for HttpResponse {
    fn from(r: Refusal) -> Self {
        let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
        HttpResponse::build(status).json(ApiError {
            code: i64::from(r.status),
            message: r.message.to_owned(),
        })
    }
}

/// An error answer of a handler, boxed (an `HttpResponse` is large).
pub struct Reject(Box<HttpResponse>);

impl From<Refusal> for Reject {
    fn from(r: Refusal) -> Self {
        Self(Box::new(r.into()))
    }
}

impl From<Reject> for HttpResponse {
    fn from(r: Reject) -> Self {
        *r.0
    }
}

impl From<HttpResponse> for Reject {
    fn from(r: HttpResponse) -> Self {
        Self(Box::new(r))
    }
}

fn refuse(status: u16, message: &'static str) -> Refusal {
    Refusal { status, message }
}

/// Standard base64 with padding (for the `Authorization: Basic` check).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Checks the `api-key` header and the bearer token of an API call.
fn authorize(s: &SimState, req: &HttpRequest, now: DateTime<Utc>) -> Result<(), Reject> {
    let key_ok = req
        .headers()
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == SIM_API_KEY);
    if !key_ok {
        return Err(HttpResponse::Forbidden()
            .content_type("text/html")
            .body("<h1>Developer Inactive</h1>")
            .into());
    }
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("bearer ")
                .or_else(|| v.strip_prefix("Bearer "))
        });
    let unauthorized = |desc| oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", Some(desc));
    match s.tokens.check(token, now) {
        TokenCheck::Unknown => Err(unauthorized("Invalid access token").into()),
        TokenCheck::Expired => Err(unauthorized("Access token expired").into()),
        TokenCheck::Valid { .. } => Ok(()),
    }
}

/// One Brivo API call as its handler sees it.
type Call = crate::sim_kit::SimCall<SimState>;

/// Runs `f` on the state after the faults and authorization checks; a write (`Some` of
/// its operation) is journaled and may have its response lost.
async fn api(
    c: &Call,
    write: Option<&'static str>,
    f: impl FnOnce(&mut SimState) -> Result<HttpResponse, Reject>,
) -> HttpResponse {
    c.h.call(write, |s, now| {
        authorize(s, &c.req, now)?;
        f(s)
    })
    .await
}

async fn token(h: web::Data<SimHandle>, req: HttpRequest, form: web::Form<Params>) -> HttpResponse {
    if let Some(r) = h.gate().await {
        return r;
    }
    let oauth = |status, error, desc| oauth_error(status, error, Some(desc));
    let key_ok = req
        .headers()
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == SIM_API_KEY);
    if !key_ok {
        return HttpResponse::Forbidden()
            .content_type("text/html")
            .body("<h1>Developer Inactive</h1>");
    }
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let basic_ok = h.with(|s| {
        s.client_secrets.iter().any(|secret| {
            given.as_deref()
                == Some(
                    format!(
                        "Basic {}",
                        base64(format!("{SIM_CLIENT_ID}:{secret}").as_bytes())
                    )
                    .as_str(),
                )
        })
    });
    if !basic_ok {
        return oauth(StatusCode::UNAUTHORIZED, "unauthorized", "Bad credentials");
    }
    if form.get("grant_type").map(String::as_str) != Some("password") {
        return oauth(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant type",
        );
    }
    if form.get("username").map(String::as_str) != Some(SIM_USERNAME)
        || form.get("password").map(String::as_str) != Some(SIM_PASSWORD)
    {
        return oauth(StatusCode::BAD_REQUEST, "invalid_grant", "Bad credentials");
    }
    let now = h.clock.now();
    h.with(|s| {
        let access_token = new_token(s, now);
        HttpResponse::Ok().json(wire::TokenResponse {
            access_token,
            token_type: Some("bearer".into()),
            refresh_token: Some(crate::sim_kit::random_hex(16)),
            expires_in: s.token_ttl_secs,
        })
    })
}

fn page_params(q: &Params) -> Result<(usize, usize), Reject> {
    let num = |key: &str, default: i64| -> Result<i64, Reject> {
        match q.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| refuse(400, "Invalid criteria provided").into()),
        }
    };
    let offset = num("offset", 0)?;
    let page_size = num("pageSize", 20)?;
    if offset < 0 || !(1..=wire::MAX_PAGE_SIZE).contains(&page_size) {
        return Err(refuse(400, "Invalid criteria provided").into());
    }
    Ok((
        usize::try_from(offset).unwrap_or(0),
        usize::try_from(page_size).unwrap_or(20),
    ))
}

fn page<T: Serialize>(all: Vec<T>, offset: usize, page_size: usize) -> HttpResponse {
    let count = all.len();
    let data: Vec<T> = all.into_iter().skip(offset).take(page_size).collect();
    HttpResponse::Ok().json(wire::Page {
        data,
        offset: i64::try_from(offset).unwrap_or(i64::MAX),
        page_size: i64::try_from(page_size).unwrap_or(i64::MAX),
        count: i64::try_from(count).unwrap_or(i64::MAX),
    })
}

async fn list_access_points(c: Call, q: web::Query<Params>) -> HttpResponse {
    api(&c, None, |s| {
        let (offset, size) = page_params(&q)?;
        s.counters.lists += 1;
        let all: Vec<wire::AccessPoint> = s
            .access_points
            .iter()
            .map(|id| wire::AccessPoint {
                id: *id,
                name: format!("Door {id}"),
                control_panel_id: Some(1111),
                site_id: Some(11111),
                site_name: Some("Site 1".into()),
            })
            .collect();
        Ok(page(all, offset, size))
    })
    .await
}

/// The simulator's panels: one per access point, id `1000 + ap`.
const PANEL_BASE: i64 = 1000;

async fn get_access_point(c: Call, path: web::Path<i64>) -> HttpResponse {
    let id = path.into_inner();
    api(&c, None, |s| {
        if !s.access_points.contains(&id) {
            return Err(refuse(404, "Access point not found").into());
        }
        Ok(HttpResponse::Ok().json(wire::AccessPoint {
            id,
            name: format!("Door {id}"),
            control_panel_id: Some(PANEL_BASE + id),
            site_id: Some(11111),
            site_name: Some("Site 1".into()),
        }))
    })
    .await
}

async fn get_control_panel(c: Call, path: web::Path<i64>) -> HttpResponse {
    let id = path.into_inner();
    api(&c, None, |s| {
        let ap = id - PANEL_BASE;
        if !s.access_points.contains(&ap) {
            return Err(refuse(404, "Control panel not found").into());
        }
        Ok(HttpResponse::Ok().json(wire::ControlPanel {
            id,
            firmware_version: Some("6.2.4.1".into()),
            is_online: Some(!s.offline_access_points.contains(&ap)),
        }))
    })
    .await
}

async fn list_groups(c: Call, q: web::Query<Params>) -> HttpResponse {
    api(&c, None, |s| {
        let (offset, size) = page_params(&q)?;
        // `name__eq:x` is documented as "name contains x".
        let needle = match q.get("filter") {
            None => None,
            Some(f) => Some(
                f.strip_prefix("name__eq:")
                    .ok_or_else(|| Reject::from(refuse(400, "Invalid criteria provided")))?
                    .to_owned(),
            ),
        };
        s.counters.lists += 1;
        let all: Vec<wire::Group> = s
            .groups
            .iter()
            .filter(|(_, g)| needle.as_deref().is_none_or(|n| g.name.contains(n)))
            .map(|(id, g)| wire::Group {
                id: *id,
                name: g.name.clone(),
            })
            .collect();
        Ok(page(all, offset, size))
    })
    .await
}

async fn create_group(c: Call) -> HttpResponse {
    api(&c, Some("create_group"), |s| {
        let body: wire::CreateGroupRequest = serde_json::from_slice(&c.body).map_err(|_| {
            Reject::from(refuse(
                400,
                "Group creation requires a name parameter of 35 characters or less",
            ))
        })?;
        if body.name.is_empty() || body.name.chars().count() > 35 {
            return Err(refuse(
                400,
                "Group creation requires a name parameter of 35 characters or less",
            )
            .into());
        }
        let id = s.next_id;
        s.next_id += 1;
        s.groups.insert(
            id,
            SimGroup {
                name: body.name.clone(),
                access_points: BTreeMap::new(),
            },
        );
        s.counters.groups_created += 1;
        Ok(HttpResponse::Ok().json(wire::Group {
            id,
            name: body.name,
        }))
    })
    .await
}

async fn grant_access_point(c: Call, path: web::Path<(i64, i64)>) -> HttpResponse {
    let (group_id, ap) = path.into_inner();
    api(&c, Some("grant_access_point"), |s| {
        let body: wire::AccessPermissionRequest = serde_json::from_slice(&c.body)
            .map_err(|_| Reject::from(refuse(400, "The request body is not formatted properly")))?;
        if !s.access_points.contains(&ap) {
            return Err(refuse(404, "Unknown Access Point").into());
        }
        if body.schedule.id != SIM_SCHEDULE_ID {
            return Err(refuse(404, "The requested resource was not found.").into());
        }
        let Some(group) = s.groups.get_mut(&group_id) else {
            return Err(refuse(404, "Group not found/ Unknown Group").into());
        };
        group.access_points.insert(ap, body.schedule.id);
        Ok(HttpResponse::Ok().json(serde_json::json!({
            "accessPoint": {"id": ap, "name": format!("Door {ap}")},
            "schedule": {"id": body.schedule.id, "name": "24x7 - Always On"},
            "privacyModeOverride": body.privacy_mode_override.unwrap_or(false),
        })))
    })
    .await
}

async fn add_user_to_group(c: Call, path: web::Path<(i64, i64)>) -> HttpResponse {
    let (group_id, user_id) = path.into_inner();
    api(&c, Some("add_user_to_group"), |s| {
        if !s.groups.contains_key(&group_id) {
            return Err(refuse(404, "Group not found").into());
        }
        let Some(user) = s.users.get_mut(&user_id) else {
            return Err(refuse(400, "Invalid criteria provided").into());
        };
        user.groups.insert(group_id);
        s.counters.memberships_put += 1;
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

/// A user as the group listing shows it (no PIN).
fn summary(u: &SimUser) -> wire::User {
    wire::User {
        pin: None,
        ..full(u)
    }
}

/// A user as retrievals show it.
fn full(u: &SimUser) -> wire::User {
    wire::User {
        id: u.id,
        external_id: u.external_id.clone(),
        first_name: Some(u.first_name.clone()),
        last_name: Some(u.last_name.clone()),
        pin: u.pin.clone(),
        effective_from: u.effective_from.map(wire::format_time),
        effective_to: u.effective_to.map(wire::format_time),
        suspended: Some(false),
    }
}

async fn list_group_users(c: Call, path: web::Path<i64>, q: web::Query<Params>) -> HttpResponse {
    let group_id = path.into_inner();
    api(&c, None, |s| {
        let (offset, size) = page_params(&q)?;
        if !s.groups.contains_key(&group_id) {
            return Err(refuse(404, "Group not found").into());
        }
        s.counters.lists += 1;
        let all: Vec<wire::User> = s
            .users
            .values()
            .filter(|u| u.groups.contains(&group_id))
            .map(summary)
            .collect();
        Ok(page(all, offset, size))
    })
    .await
}

fn optional_time(v: Option<&str>, field: &'static str) -> Result<Option<DateTime<Utc>>, Refusal> {
    v.map(|t| wire::parse_time(t, field))
        .transpose()
        .map_err(|_| refuse(400, "Invalid criteria provided"))
}

fn valid_pin(pin: &str) -> bool {
    (4..=9).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit())
}

async fn create_user(c: Call) -> HttpResponse {
    api(&c, Some("create_user"), |s| {
        let body: wire::CreateUserRequest = serde_json::from_slice(&c.body)
            .map_err(|_| Reject::from(refuse(400, "Invalid criteria provided")))?;
        if body.first_name.trim().is_empty() || body.last_name.trim().is_empty() {
            return Err(refuse(400, "Invalid criteria provided").into());
        }
        let from = optional_time(body.effective_from.as_deref(), "effectiveFrom")?;
        let to = optional_time(body.effective_to.as_deref(), "effectiveTo")?;
        if let (Some(f), Some(t)) = (from, to) {
            if f >= t {
                return Err(refuse(400, "Invalid criteria provided").into());
            }
        }
        if let Some(ext) = &body.external_id {
            if s.users
                .values()
                .any(|u| u.external_id.as_deref() == Some(ext))
            {
                return Err(refuse(400, DUPLICATE_EXTERNAL_ID_MESSAGE).into());
            }
        }
        if let Some(pin) = &body.pin {
            if !valid_pin(pin) {
                return Err(refuse(400, "Invalid criteria provided").into());
            }
            if s.kit.take_forced_pin_collision() {
                return Err(refuse(400, DUPLICATE_PIN_MESSAGE).into());
            }
            if s.users.values().any(|u| u.pin.as_deref() == Some(pin)) {
                return Err(refuse(400, DUPLICATE_PIN_MESSAGE).into());
            }
        }
        let id = s.next_id;
        s.next_id += 1;
        let user = SimUser {
            id,
            external_id: body.external_id,
            first_name: body.first_name,
            last_name: body.last_name,
            pin: body.pin,
            effective_from: from,
            effective_to: to,
            groups: BTreeSet::new(),
        };
        let reply = full(&user);
        s.users.insert(id, user);
        s.counters.users_created += 1;
        Ok(HttpResponse::Ok().json(reply))
    })
    .await
}

async fn get_user_by_external_id(c: Call, path: web::Path<String>) -> HttpResponse {
    let ext = path.into_inner();
    api(&c, None, |s| {
        s.users
            .values()
            .find(|u| u.external_id.as_deref() == Some(ext.as_str()))
            .map(|u| HttpResponse::Ok().json(full(u)))
            .ok_or_else(|| refuse(404, "User not found").into())
    })
    .await
}

async fn get_user(c: Call, path: web::Path<i64>) -> HttpResponse {
    let id = path.into_inner();
    api(&c, None, |s| {
        s.users
            .get(&id)
            .map(|u| HttpResponse::Ok().json(full(u)))
            .ok_or_else(|| refuse(404, "User not found").into())
    })
    .await
}

async fn patch_user(c: Call, path: web::Path<i64>) -> HttpResponse {
    let id = path.into_inner();
    api(&c, Some("patch_user"), |s| {
        let body: wire::PatchUserRequest = serde_json::from_slice(&c.body)
            .map_err(|_| Reject::from(refuse(400, "Invalid criteria provided")))?;
        let from = optional_time(body.effective_from.as_deref(), "effectiveFrom")?;
        let to = optional_time(body.effective_to.as_deref(), "effectiveTo")?;
        if let Some(pin) = &body.pin {
            if !valid_pin(pin) {
                return Err(refuse(400, "Invalid criteria provided").into());
            }
            if s.users
                .values()
                .any(|u| u.id != id && u.pin.as_deref() == Some(pin))
            {
                return Err(refuse(400, DUPLICATE_PIN_MESSAGE).into());
            }
        }
        let Some(user) = s.users.get_mut(&id) else {
            return Err(refuse(404, "User not found").into());
        };
        let new_from = from.or(user.effective_from);
        let new_to = to.or(user.effective_to);
        if let (Some(f), Some(t)) = (new_from, new_to) {
            if f >= t {
                return Err(refuse(400, "Invalid criteria provided").into());
            }
        }
        user.effective_from = new_from;
        user.effective_to = new_to;
        if let Some(pin) = body.pin {
            user.pin = Some(pin);
        }
        let reply = full(user);
        s.counters.users_patched += 1;
        Ok(HttpResponse::Ok().json(reply))
    })
    .await
}

async fn delete_user(c: Call, path: web::Path<i64>) -> HttpResponse {
    let id = path.into_inner();
    api(&c, Some("delete_user"), |s| {
        if s.users.remove(&id).is_none() {
            return Err(refuse(404, "User not found").into());
        }
        s.counters.users_deleted += 1;
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

async fn get_users(h: web::Data<SimHandle>) -> HttpResponse {
    HttpResponse::Ok().json(h.users())
}

async fn post_access_point(h: web::Data<SimHandle>, path: web::Path<i64>) -> HttpResponse {
    h.add_access_point(path.into_inner());
    HttpResponse::NoContent().finish()
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_the_documented_client_signature() {
        // apidocs.brivo.com, Authentication: ABC-123-456:qwerty98765.
        assert_eq!(
            base64(b"ABC-123-456:qwerty98765"),
            "QUJDLTEyMy00NTY6cXdlcnR5OTg3NjU="
        );
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
