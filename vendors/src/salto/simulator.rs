//! A Salto KS Connect API simulator with fault injection (DESIGN §6), built on actix-web.
//!
//! It speaks the subset of the API the adapter uses, with Salto's paths, JSON bodies,
//! `{items, next_page_link, count}` pages (`$top`/`$skip`) and `{ErrorCode, Message}`
//! errors, and plays the identity server too (`POST /connect/token`, HTTP Basic client
//! authentication, password grant). It validates bearer tokens (those it issued; 401
//! otherwise), the site id (404), unknown users, groups, locks and schedules (404),
//! malformed bodies (400), a PIN another user of the site holds (409, `ErrorCode` 1301)
//! and a PIN on a site user created without `use_pin` (400).
//!
//! Faults ([`SimFaults`]) are set from Rust through [`SimHandle`] or with
//! `POST /_sim/faults` (a JSON object; the keys given replace the current values).
//! Inspection over HTTP: `GET /_sim/faults`, `GET /_sim/counters`,
//! `GET /_sim/access_groups`, `GET /_sim/users`; control: `POST /_sim/locks/{lock_id}`
//! (adds a lock; body `{"lock_type": "..."}` optional, default `escutcheon_pin`),
//! `POST /_sim/tokens/expire` (every issued token answers 401 from then on). Door attempts
//! post signed event notifications (`webhooks`: `POST /_sim/webhook`,
//! `POST /_sim/locks/{lock_id}/attempts`, `POST /_sim/webhook/redeliver`).
//!
//! The server runs on a thread of its own with its own actix `System`, so
//! [`SaltoSimulator::start`] works the same from any runtime or a test, and returns once
//! the socket is bound. Its data are fake: PINs it stores are visible through its
//! inspection API on purpose. It never logs them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use lockstep_domain::{Clock, SystemClock};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::errors as code;
use super::wire::{self, ApiError};
use super::{SaltoConfig, Secret};
pub use crate::sim_kit::SimFaults;
use crate::sim_kit::{oauth_error, FaultKit, KitState, SimTokens, TokenCheck};
use crate::ttlock::simulator::journal::{DoorJournal, DoorObject};

mod webhooks;

/// The site of the default configuration.
pub const SIM_SITE_ID: &str = "00d20e57-9ac2-4b76-a65d-7911bfb00da2";
/// OAuth client id of the default account.
pub const SIM_CLIENT_ID: &str = "sim-salto-client";
/// Its client secret.
pub const SIM_CLIENT_SECRET: &str = "sim-salto-client-secret";
/// The default system user.
pub const SIM_USERNAME: &str = "system@sim.example";
/// Its password.
pub const SIM_PASSWORD: &str = "sim-salto-password";
/// Lock type of locks added without one (a keypad escutcheon, as measured).
pub const KEYPAD_LOCK_TYPE: &str = "escutcheon_pin";

/// What the simulator starts with.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The one site it serves.
    pub site_id: String,
    /// Accepted OAuth client id.
    pub client_id: String,
    /// Its secret.
    pub client_secret: Secret,
    /// Accepted system user.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// Locks of the site: id → `lock_type`.
    pub locks: BTreeMap<String, String>,
    /// Largest page served whatever `$top` asks (Salto: 100).
    pub max_page_size: usize,
    /// `expires_in` of issued tokens, seconds (Salto: 3600).
    pub token_ttl_secs: i64,
    /// Time for token expiry and the rate-limit window.
    pub clock: Arc<dyn Clock>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            site_id: SIM_SITE_ID.to_owned(),
            client_id: SIM_CLIENT_ID.to_owned(),
            client_secret: Secret::new(SIM_CLIENT_SECRET),
            username: SIM_USERNAME.to_owned(),
            password: Secret::new(SIM_PASSWORD),
            locks: BTreeMap::new(),
            max_page_size: wire::PAGE_SIZE as usize,
            token_ttl_secs: 3600,
            clock: Arc::new(SystemClock),
        }
    }
}

/// A site user held by the simulator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimSiteUser {
    /// Site user id.
    pub id: String,
    /// Platform user id.
    pub user_id: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Alias.
    pub alias: String,
    /// Whether it may use a PIN.
    pub use_pin: bool,
    /// Its PIN, once set.
    pub pin: Option<String>,
}

/// An access group held by the simulator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimAccessGroup {
    /// Its id.
    pub id: String,
    /// Its name.
    pub customer_reference: String,
    /// Platform user ids of its members.
    pub user_ids: Vec<String>,
    /// Its locks.
    pub lock_ids: Vec<String>,
    /// Its time schedules (with ids).
    pub time_schedules: Vec<wire::TimeSchedule>,
}

crate::sim_kit::sim_counters! {
    /// How many calls the simulator has seen.
    pub struct SimCounters {
        /// Tokens issued.
        pub tokens_issued: u64,
        /// Site users created.
        pub users_created: u64,
        /// Site users deleted.
        pub users_deleted: u64,
        /// PINs set.
        pub pins_set: u64,
        /// Access groups created.
        pub groups_created: u64,
        /// Access groups deleted.
        pub groups_deleted: u64,
        /// Time schedules created.
        pub schedules_created: u64,
        /// Time schedules changed.
        pub schedules_updated: u64,
        /// Members and locks added to groups.
        pub group_links_added: u64,
        /// Read calls served.
        pub reads: u64,
    }
}

/// The simulator's state behind its [`SimHandle`].
pub struct SimState {
    config: SimConfig,
    users: Vec<SimSiteUser>,
    groups: Vec<SimAccessGroup>,
    tokens: SimTokens,
    kit: FaultKit,
    counters: SimCounters,
    next_id: u64,
    /// Health of the locks not in the default state.
    lock_health: HashMap<String, SimLockHealth>,
    /// Client secrets accepted besides the configured one (a rotation's overlap).
    extra_client_secrets: Vec<String>,
    /// Whether the configured client secret is retired.
    configured_secret_retired: bool,
    journal: DoorJournal,
    /// Where door events are posted (`webhooks`).
    webhook: crate::sim_kit::SimWebhook,
}

/// A lock's health as the simulator reports it (`online`, `battery_level`,
/// `firmware_version` of the lock object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimLockHealth {
    /// Whether its IQ reaches it.
    pub online: bool,
    /// Battery state (`fresh`, `low`, `very_low`, `empty`).
    pub battery_level: String,
    /// Firmware.
    pub firmware_version: String,
}

impl Default for SimLockHealth {
    fn default() -> Self {
        Self {
            online: true,
            battery_level: "fresh".into(),
            firmware_version: "0.2.14".into(),
        }
    }
}

impl KitState for SimState {
    crate::sim_kit::kit_fields!(SimCounters);
    type Refusal = Refusal;

    /// What every lock accepts, through Lockstep's eyes: an access group holding the lock
    /// and at least one user opens it for the group's reference, in its first schedule's
    /// window (read as UTC, the adapter's default site offset); a PIN on a member makes it
    /// a `pin_code`, else the members' digital keys make it a `mobile_app`.
    fn door_view(&self) -> Vec<DoorObject> {
        let utc = chrono::FixedOffset::east_opt(0).expect("zero is a valid offset");
        let mut out = Vec::new();
        for g in &self.groups {
            let members: Vec<&SimSiteUser> = self
                .users
                .iter()
                .filter(|u| g.user_ids.contains(&u.user_id))
                .collect();
            if members.is_empty() {
                continue;
            }
            let kind = if members.iter().any(|u| u.pin.is_some()) {
                lockstep_domain::KeyCredentialKind::PinCode
            } else {
                lockstep_domain::KeyCredentialKind::MobileApp
            };
            let window = g
                .time_schedules
                .first()
                .and_then(|t| t.utc_window(utc).ok());
            for lock in &g.lock_ids {
                out.push(DoorObject {
                    device: lock.clone(),
                    label: g.customer_reference.clone(),
                    kind,
                    valid_from: window.map(|w| w.0),
                    valid_until: window.map(|w| w.1),
                });
            }
        }
        out
    }

    /// A Connect API error (`{ErrorCode, Message}`) for a lost write.
    fn lost_reply() -> HttpResponse {
        HttpResponse::InternalServerError().json(ApiError {
            error_code: code::INTERNAL,
            message: "Internal server error".to_owned(),
        })
    }
}

crate::sim_kit::issues_tokens!(SimState);

crate::sim_kit::signed_webhooks!(
    SimState,
    crate::sim_kit::Signer {
        timestamp_header: Some(crate::salto::webhook::TIMESTAMP_HEADER),
        signature_header: crate::salto::webhook::SIGNATURE_HEADER,
        sign: crate::salto::webhook::sign,
    }
);

impl SimState {
    fn new_id(&mut self, kind: u32) -> String {
        self.next_id += 1;
        format!("{kind:08x}-5a17-4000-8000-{:012x}", self.next_id)
    }
}

impl SimHandle {
    fn new(config: SimConfig) -> Self {
        let clock = config.clock.clone();
        let state = SimState {
            extra_client_secrets: Vec::new(),
            configured_secret_retired: false,
            lock_health: HashMap::new(),
            config,
            journal: DoorJournal::default(),
            webhook: crate::sim_kit::SimWebhook::default(),
            users: Vec::new(),
            groups: Vec::new(),
            tokens: SimTokens::default(),
            kit: FaultKit::default(),
            counters: SimCounters::default(),
            next_id: 0,
        };
        Self::with_state(state, clock)
    }

    /// Adds a lock with a keypad (`escutcheon_pin`), or replaces its type.
    pub fn add_lock(&self, lock_id: &str) {
        self.add_lock_of_type(lock_id, KEYPAD_LOCK_TYPE);
    }

    /// Changes one lock's health (online, battery, firmware).
    pub fn update_lock_health(&self, lock_id: &str, f: impl FnOnce(&mut SimLockHealth)) {
        self.with(|s| f(s.lock_health.entry(lock_id.to_owned()).or_default()));
    }

    /// Adds a lock of `lock_type` (e.g. `cylinder`, which has no keypad).
    pub fn add_lock_of_type(&self, lock_id: &str, lock_type: &str) {
        self.with(|s| {
            s.config
                .locks
                .insert(lock_id.to_owned(), lock_type.to_owned());
        });
    }

    /// Every access group.
    pub fn access_groups(&self) -> Vec<SimAccessGroup> {
        self.with(|s| s.groups.clone())
    }

    /// Every site user.
    pub fn site_users(&self) -> Vec<SimSiteUser> {
        self.with(|s| s.users.clone())
    }

    /// Accepts `secret` as the client's secret too (the overlap of a rotation).
    pub fn accept_client_secret(&self, secret: &str) {
        self.with(|s| s.extra_client_secrets.push(secret.to_owned()));
    }

    /// Stops accepting the configured client secret (the end of a rotation's overlap).
    pub fn retire_configured_client_secret(&self) {
        self.with(|s| s.configured_secret_retired = true);
    }
}

crate::sim_kit::simulator!(SaltoSimulator, "salto");

impl RunningSimulator {
    /// An adapter config for the default site and account.
    pub fn default_adapter_config(&self) -> SaltoConfig {
        SaltoConfig::new(
            self.base_url(),
            self.base_url(),
            SIM_SITE_ID,
            SIM_CLIENT_ID,
            Secret::new(SIM_CLIENT_SECRET),
            SIM_USERNAME,
            Secret::new(SIM_PASSWORD),
        )
    }
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/connect/token", web::post().to(token))
        .route("/v1.2/sites/{site}", web::get().to(get_site))
        .route("/v1.2/sites/{site}/locks/{lock}", web::get().to(get_lock))
        .route("/v1.2/sites/{site}/users", web::get().to(list_users))
        .route("/v1.2/sites/{site}/users", web::post().to(create_user))
        .route(
            "/v1.2/sites/{site}/users/{user}",
            web::delete().to(delete_user),
        )
        .route(
            "/v1.2/sites/{site}/users/{user}/pin",
            web::put().to(set_pin),
        )
        .route(
            "/v1.2/sites/{site}/access_groups",
            web::get().to(list_groups),
        )
        .route(
            "/v1.2/sites/{site}/access_groups",
            web::post().to(create_group),
        )
        .route(
            "/v1.2/sites/{site}/access_groups/{group}",
            web::get().to(get_group),
        )
        .route(
            "/v1.2/sites/{site}/access_groups/{group}",
            web::delete().to(delete_group),
        )
        .route(
            "/v1.2/sites/{site}/access_groups/{group}/users",
            web::get().to(list_group_users),
        )
        .route(
            "/v1.2/sites/{site}/access_groups/{group}/users",
            web::post().to(add_group_user),
        )
        .route(
            "/v1.1/sites/{site}/access_groups/{group}/locks",
            web::get().to(list_group_locks),
        )
        .route(
            "/v1.1/sites/{site}/access_groups/{group}/locks",
            web::post().to(add_group_lock),
        )
        .route(
            "/v1.1/sites/{site}/access_groups/{group}/time_schedules",
            web::get().to(list_schedules),
        )
        .route(
            "/v1.1/sites/{site}/access_groups/{group}/time_schedules",
            web::post().to(create_schedule),
        )
        .route(
            "/v1.1/sites/{site}/access_groups/{group}/time_schedules/{schedule}",
            web::patch().to(update_schedule),
        )
        .route("/_sim/access_groups", web::get().to(sim_groups))
        .route("/_sim/users", web::get().to(sim_users))
        .route("/_sim/locks/{lock}", web::post().to(sim_add_lock))
        .configure(crate::sim_kit::token_routes::<SimState>)
        .configure(webhooks::routes)
        .configure(crate::sim_kit::routes::<SimState>);
}

/// A Connect API refusal: a status with `{ErrorCode, Message}`, or a bare 401 for a token
/// it did not issue or that expired.
pub struct Refusal {
    status: StatusCode,
    error: Option<(i64, &'static str)>,
}

impl From<Refusal> for HttpResponse {
    fn from(r: Refusal) -> Self {
        match r.error {
            Some((code, message)) => HttpResponse::build(r.status).json(ApiError {
                error_code: code,
                message: message.to_owned(),
            }),
            None => HttpResponse::build(r.status).finish(),
        }
    }
}

fn refusal(status: StatusCode, code: i64, message: &'static str) -> Refusal {
    Refusal {
        status,
        error: Some((code, message)),
    }
}

fn not_found(message: &'static str) -> Refusal {
    refusal(StatusCode::NOT_FOUND, code::NOT_FOUND, message)
}

fn bad_request(message: &'static str) -> Refusal {
    refusal(StatusCode::BAD_REQUEST, code::INVALID_PARAMETER, message)
}

fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|_| bad_request("The request body is not valid"))
}

/// One Connect API call as its handler sees it.
type Call = crate::sim_kit::SimCall<SimState>;

/// Runs one Connect API call: faults, bearer token, site, then `f`; a write (`Some` of
/// its operation) is journaled and may have its response lost.
async fn run(
    c: &Call,
    write: Option<&'static str>,
    f: impl FnOnce(&mut SimState) -> Result<HttpResponse, Refusal>,
) -> HttpResponse {
    let bearer = c
        .req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    c.h.call(write, |s, now| {
        if !matches!(s.tokens.check(bearer, now), TokenCheck::Valid { .. }) {
            return Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                error: None,
            });
        }
        if c.param("site") != s.config.site_id {
            return Err(not_found("Site not found"));
        }
        let out = f(s)?;
        if write.is_none() {
            s.counters.reads += 1;
        }
        Ok(out)
    })
    .await
}

/// One page of `items` as Salto pages: `$top` (at most the configured size) and `$skip`.
fn page<T: Serialize>(
    s: &SimState,
    req: &HttpRequest,
    items: Vec<T>,
) -> Result<HttpResponse, Refusal> {
    let q = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map_err(|_| bad_request("Invalid query"))?;
    let num = |k: &str, default: usize| -> Result<usize, Refusal> {
        match q.get(k) {
            Some(v) => v.trim().parse().map_err(|_| bad_request("Invalid query")),
            None => Ok(default),
        }
    };
    let max = s.config.max_page_size.max(1);
    let top = num("$top", max)?.clamp(1, max);
    let skip = num("$skip", 0)?;
    let total = items.len();
    let next =
        (skip + top < total).then(|| format!("{}?$top={top}&$skip={}", req.path(), skip + top));
    let items: Vec<T> = items.into_iter().skip(skip).take(top).collect();
    Ok(HttpResponse::Ok().json(wire::Page {
        items,
        next_page_link: next,
        count: None,
    }))
}

fn group_mut<'a>(s: &'a mut SimState, id: &str) -> Result<&'a mut SimAccessGroup, Refusal> {
    s.groups
        .iter_mut()
        .find(|g| g.id == id)
        .ok_or_else(|| not_found("Access group not found"))
}

fn to_wire_user(u: &SimSiteUser) -> wire::SiteUser {
    wire::SiteUser {
        id: u.id.clone(),
        user: wire::UserRef {
            id: u.user_id.clone(),
            first_name: Some(u.first_name.clone()),
            last_name: Some(u.last_name.clone()),
            email: None,
        },
        alias: Some(u.alias.clone()),
        subscription_state: Some("subscribed".to_owned()),
        use_pin: Some(u.use_pin),
        blocked: Some(false),
    }
}

async fn token(
    h: web::Data<SimHandle>,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    if let Some(r) = h.gate().await {
        return r;
    }
    let now = h.clock.now();
    let basic = crate::sim_kit::basic_credentials(&req);
    h.with(|s| {
        let client_ok = basic.as_ref().is_some_and(|(id, secret)| {
            *id == s.config.client_id
                && ((!s.configured_secret_retired && secret == s.config.client_secret.expose())
                    || s.extra_client_secrets.iter().any(|x| x == secret))
        });
        if !client_ok {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", None);
        }
        if form.get("grant_type").map(String::as_str) != Some("password") {
            return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", None);
        }
        if form.get("username") != Some(&s.config.username)
            || form.get("password").map(String::as_str) != Some(s.config.password.expose())
        {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None);
        }
        let scope_ok = form
            .get("scope")
            .is_some_and(|sc| sc.split(' ').any(|x| x == wire::SCOPE_FULL_ACCESS));
        if !scope_ok {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", None);
        }
        let access_token = s.tokens.issue(
            24,
            &s.config.client_id,
            now + chrono::Duration::seconds(s.config.token_ttl_secs),
        );
        s.counters.tokens_issued += 1;
        HttpResponse::Ok().json(wire::TokenResponse {
            access_token,
            expires_in: s.config.token_ttl_secs,
            token_type: Some("Bearer".to_owned()),
            scope: Some(wire::SCOPE_FULL_ACCESS.to_owned()),
        })
    })
}

async fn get_site(c: Call) -> HttpResponse {
    run(&c, None, |s| {
        Ok(HttpResponse::Ok().json(wire::Site {
            id: s.config.site_id.clone(),
            customer_reference: Some("Simulated hotel".to_owned()),
            site_uid: Some("SIM0000000001".to_owned()),
            time_zone: Some("Etc/UTC".to_owned()),
            pin_enabled: Some(true),
            subscription_valid: Some(true),
        }))
    })
    .await
}

async fn get_lock(c: Call) -> HttpResponse {
    let lock = c.param("lock");
    run(&c, None, |s| {
        let lock_type = s
            .config
            .locks
            .get(lock)
            .ok_or_else(|| not_found("Lock not found"))?;
        let health = s.lock_health.get(lock).cloned().unwrap_or_default();
        Ok(HttpResponse::Ok().json(wire::Lock {
            id: lock.to_owned(),
            customer_reference: Some(format!("Door {lock}")),
            lock_type: Some(lock_type.clone()),
            online: Some(health.online),
            floor: None,
            battery_level: Some(health.battery_level),
            firmware_version: Some(health.firmware_version),
        }))
    })
    .await
}

async fn list_users(c: Call) -> HttpResponse {
    run(&c, None, |s| {
        let items: Vec<wire::SiteUser> = s.users.iter().map(to_wire_user).collect();
        page(s, &c.req, items)
    })
    .await
}

async fn create_user(c: Call) -> HttpResponse {
    run(&c, Some("create_site_user"), |s| {
        let b: wire::CreateSiteUser = json_body(&c.body)?;
        if b.first_name.trim().is_empty() && b.last_name.trim().is_empty() {
            return Err(bad_request("A name is required"));
        }
        let id = s.new_id(0x5173);
        let user_id = s.new_id(0x0e5e);
        let user = SimSiteUser {
            id,
            user_id,
            first_name: b.first_name,
            last_name: b.last_name,
            alias: b.alias,
            use_pin: b.use_pin,
            pin: None,
        };
        let reply = to_wire_user(&user);
        s.users.push(user);
        s.counters.users_created += 1;
        Ok(HttpResponse::Created().json(reply))
    })
    .await
}

async fn delete_user(c: Call) -> HttpResponse {
    let user = c.param("user");
    run(&c, Some("delete_site_user"), |s| {
        let pos = s
            .users
            .iter()
            .position(|u| u.id == user)
            .ok_or_else(|| not_found("User not found"))?;
        let removed = s.users.remove(pos);
        for g in &mut s.groups {
            g.user_ids.retain(|id| *id != removed.user_id);
        }
        s.counters.users_deleted += 1;
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

async fn set_pin(c: Call) -> HttpResponse {
    let user = c.param("user");
    run(&c, Some("set_pin"), |s| {
        let b: HashMap<String, String> = json_body(&c.body)?;
        let pin = b.get("pin").cloned().unwrap_or_default();
        if !(4..=8).contains(&pin.len()) || !pin.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad_request("The pin must have 4 to 8 digits"));
        }
        let Some(pos) = s.users.iter().position(|u| u.id == user) else {
            return Err(not_found("User not found"));
        };
        if !s.users[pos].use_pin {
            return Err(bad_request("The user does not use a pin"));
        }
        let collision = s
            .users
            .iter()
            .any(|u| u.id != user && u.pin.as_deref() == Some(pin.as_str()));
        // Counted down whether or not the PIN really collides.
        if s.kit.take_forced_pin_collision() || collision {
            return Err(refusal(
                StatusCode::CONFLICT,
                code::PIN_IN_USE,
                "The pin is already in use",
            ));
        }
        s.users[pos].pin = Some(pin.clone());
        s.counters.pins_set += 1;
        Ok(HttpResponse::Ok().json(pin))
    })
    .await
}

async fn list_groups(c: Call) -> HttpResponse {
    run(&c, None, |s| {
        let items: Vec<wire::AccessGroup> = s
            .groups
            .iter()
            .map(|g| wire::AccessGroup {
                id: g.id.clone(),
                customer_reference: Some(g.customer_reference.clone()),
            })
            .collect();
        page(s, &c.req, items)
    })
    .await
}

async fn create_group(c: Call) -> HttpResponse {
    run(&c, Some("create_access_group"), |s| {
        let b: wire::CreateAccessGroup = json_body(&c.body)?;
        if b.customer_reference.trim().is_empty() {
            return Err(bad_request("A name is required"));
        }
        let id = s.new_id(0xa6);
        s.groups.push(SimAccessGroup {
            id: id.clone(),
            customer_reference: b.customer_reference.clone(),
            user_ids: Vec::new(),
            lock_ids: Vec::new(),
            time_schedules: Vec::new(),
        });
        s.counters.groups_created += 1;
        Ok(HttpResponse::Created().json(wire::AccessGroup {
            id,
            customer_reference: Some(b.customer_reference),
        }))
    })
    .await
}

async fn get_group(c: Call) -> HttpResponse {
    let group = c.param("group");
    run(&c, None, |s| {
        let g = group_mut(s, group)?;
        Ok(HttpResponse::Ok().json(wire::AccessGroup {
            id: g.id.clone(),
            customer_reference: Some(g.customer_reference.clone()),
        }))
    })
    .await
}

async fn delete_group(c: Call) -> HttpResponse {
    let group = c.param("group");
    run(&c, Some("delete_access_group"), |s| {
        let pos = s
            .groups
            .iter()
            .position(|g| g.id == group)
            .ok_or_else(|| not_found("Access group not found"))?;
        s.groups.remove(pos);
        s.counters.groups_deleted += 1;
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

async fn list_group_users(c: Call) -> HttpResponse {
    let group = c.param("group");
    run(&c, None, |s| {
        let ids = group_mut(s, group)?.user_ids.clone();
        let items: Vec<wire::GroupUser> = ids
            .iter()
            .filter_map(|id| s.users.iter().find(|u| &u.user_id == id))
            .map(|u| wire::GroupUser {
                id: u.user_id.clone(),
                first_name: Some(u.first_name.clone()),
                last_name: Some(u.last_name.clone()),
            })
            .collect();
        page(s, &c.req, items)
    })
    .await
}

async fn add_group_user(c: Call) -> HttpResponse {
    let group = c.param("group");
    run(&c, Some("add_group_user"), |s| {
        let b: wire::AddGroupUser = json_body(&c.body)?;
        let Some(u) = s.users.iter().find(|u| u.user_id == b.user_id).cloned() else {
            return Err(not_found("User not found"));
        };
        let g = group_mut(s, group)?;
        if !g.user_ids.contains(&u.user_id) {
            g.user_ids.push(u.user_id.clone());
        }
        s.counters.group_links_added += 1;
        Ok(HttpResponse::Created().json(wire::GroupUser {
            id: u.user_id,
            first_name: Some(u.first_name),
            last_name: Some(u.last_name),
        }))
    })
    .await
}

async fn list_group_locks(c: Call) -> HttpResponse {
    let group = c.param("group");
    run(&c, None, |s| {
        let items: Vec<wire::GroupLock> = group_mut(s, group)?
            .lock_ids
            .iter()
            .map(|id| wire::GroupLock {
                id: id.clone(),
                customer_reference: Some(format!("Door {id}")),
            })
            .collect();
        page(s, &c.req, items)
    })
    .await
}

async fn add_group_lock(c: Call) -> HttpResponse {
    let group = c.param("group");
    run(&c, Some("add_group_lock"), |s| {
        let b: wire::AddGroupLock = json_body(&c.body)?;
        if !s.config.locks.contains_key(&b.lock_id) {
            return Err(not_found("Lock not found"));
        }
        let g = group_mut(s, group)?;
        if !g.lock_ids.contains(&b.lock_id) {
            g.lock_ids.push(b.lock_id.clone());
        }
        s.counters.group_links_added += 1;
        Ok(HttpResponse::Created().json(wire::GroupLock {
            customer_reference: Some(format!("Door {}", b.lock_id)),
            id: b.lock_id,
        }))
    })
    .await
}

async fn list_schedules(c: Call) -> HttpResponse {
    let group = c.param("group");
    run(&c, None, |s| {
        let items = group_mut(s, group)?.time_schedules.clone();
        page(s, &c.req, items)
    })
    .await
}

/// Checks a schedule body: dates readable and in order, times readable.
fn valid_schedule(b: &wire::TimeSchedule) -> Result<(), Refusal> {
    let offset = super::utc();
    let (from, until) = b
        .utc_window(offset)
        .map_err(|_| bad_request("Invalid date"))?;
    let time_ok = |t: &str| chrono::NaiveTime::parse_from_str(t, "%H:%M:%S").is_ok();
    if from >= until || !time_ok(&b.start_time) || !time_ok(&b.end_time) {
        return Err(bad_request("Invalid time schedule"));
    }
    Ok(())
}

async fn create_schedule(c: Call) -> HttpResponse {
    let group = c.param("group");
    run(&c, Some("create_time_schedule"), |s| {
        let mut b: wire::TimeSchedule = json_body(&c.body)?;
        valid_schedule(&b)?;
        let id = s.new_id(0x75);
        b.id = Some(id);
        group_mut(s, group)?.time_schedules.push(b.clone());
        s.counters.schedules_created += 1;
        Ok(HttpResponse::Created().json(b))
    })
    .await
}

async fn update_schedule(c: Call) -> HttpResponse {
    let (group, schedule) = (c.param("group"), c.param("schedule"));
    run(&c, Some("update_time_schedule"), |s| {
        let mut b: wire::TimeSchedule = json_body(&c.body)?;
        valid_schedule(&b)?;
        let g = group_mut(s, group)?;
        let Some(slot) = g
            .time_schedules
            .iter_mut()
            .find(|t| t.id.as_deref() == Some(schedule))
        else {
            return Err(not_found("Time schedule not found"));
        };
        b.id = Some(schedule.to_owned());
        *slot = b.clone();
        s.counters.schedules_updated += 1;
        Ok(HttpResponse::Ok().json(b))
    })
    .await
}

async fn sim_groups(h: web::Data<SimHandle>) -> HttpResponse {
    HttpResponse::Ok().json(h.access_groups())
}

async fn sim_users(h: web::Data<SimHandle>) -> HttpResponse {
    HttpResponse::Ok().json(h.site_users())
}

#[derive(Deserialize)]
struct AddLockBody {
    lock_type: Option<String>,
}

async fn sim_add_lock(
    h: web::Data<SimHandle>,
    p: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let lock_type = serde_json::from_slice::<AddLockBody>(&body)
        .ok()
        .and_then(|b| b.lock_type)
        .unwrap_or_else(|| KEYPAD_LOCK_TYPE.to_owned());
    h.add_lock_of_type(&p, &lock_type);
    HttpResponse::NoContent().finish()
}
