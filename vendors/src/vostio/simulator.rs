//! A Vostio simulator with fault injection (DESIGN §6), built on actix-web.
//!
//! It speaks the reconstructed API the adapter uses (see the module doc of
//! [`super`]: not from public docs): `POST /oauth2/token` (RFC 6749 client-credentials
//! grant, client credentials in HTTP Basic or in the form), and under `/api`:
//! `GET /v1/environments/{env}`, `POST|GET /v1/environments/{env}/keys`,
//! `PATCH|DELETE /v1/environments/{env}/keys/{keyId}`. It validates bearer tokens (those
//! it issued; 401 `unauthorized`), the client's right to the environment (403
//! `forbidden`), unknown environments (404 `environment_not_found`), unknown doors (404
//! `door_not_found`), unknown keys (404 `key_not_found`), malformed bodies (400
//! `validation_failed`), empty windows (400 `invalid_validity`), key types other than
//! `mobileKey`/`card` (422 `key_type_not_supported`) and a full door (422
//! `key_limit_reached`).
//!
//! Faults ([`SimFaults`]) are set from Rust through [`SimHandle`] or from another process
//! with `POST /_sim/faults` (a JSON object; the keys given replace the current values).
//! Inspection over HTTP: `GET /_sim/faults`, `GET /_sim/counters`,
//! `GET /_sim/environments/{env}/keys`; control: `POST /_sim/environments/{env}/doors/{door}`
//! (adds an environment and a door), `POST /_sim/tokens/expire` (every issued token
//! answers 401 from then on); door attempts post signed access notifications (`webhooks`:
//! `POST /_sim/webhook`, `POST /_sim/environments/{env}/doors/{door}/attempts`,
//! `POST /_sim/webhook/redeliver`). Vostio holds no PINs, so there is no PIN-collision switch;
//! `door_offline` stands in for the lock-side refusal.
//!
//! The server runs on a thread of its own with its own actix `System`, so
//! [`VostioSimulator::start`] works the same from `#[tokio::main]`, `#[actix_web::main]`
//! or a test, and returns once the socket is bound.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use lockstep_domain::{Clock, SystemClock};
use rand::Rng;
use serde::Serialize;

use super::errors::{self as code, oauth};
use super::wire::{self, ApiErrorResponse};
use super::{Secret, VostioConfig};
pub use crate::sim_kit::SimFaults;
use crate::sim_kit::{oauth_error, FaultKit, KitState, SimTokens, TokenCheck};
use crate::ttlock::simulator::journal::{DoorJournal, DoorObject};

mod webhooks;

/// A door holds at most this many keys (reconstructed limit).
pub const MAX_KEYS_PER_DOOR: usize = 500;
/// Client id of the default client.
pub const SIM_CLIENT_ID: &str = "sim-vostio-client";
/// Client secret of the default client.
pub const SIM_CLIENT_SECRET: &str = "sim-vostio-secret";
/// The environment the default client may use.
pub const SIM_ENVIRONMENT: &str = "env-0001";

/// A client the simulator accepts at `/oauth2/token`.
#[derive(Clone, Debug)]
pub struct SimClient {
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: Secret,
    /// Environments its tokens may use.
    pub environments: Vec<String>,
}

impl SimClient {
    /// A client allowed into `environments`.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        environments: Vec<String>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: Secret::new(client_secret),
            environments,
        }
    }
}

impl Default for SimClient {
    /// [`SIM_CLIENT_ID`] / [`SIM_CLIENT_SECRET`], allowed into [`SIM_ENVIRONMENT`].
    fn default() -> Self {
        Self::new(
            SIM_CLIENT_ID,
            SIM_CLIENT_SECRET,
            vec![SIM_ENVIRONMENT.to_owned()],
        )
    }
}

/// What the simulator starts with.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Accepted clients.
    pub clients: Vec<SimClient>,
    /// Environments and their doors.
    pub environments: BTreeMap<String, Vec<String>>,
    /// `expires_in` of issued tokens, seconds.
    pub token_ttl_secs: i64,
    /// Time for token expiry, rate windows and `createdAt`.
    pub clock: Arc<dyn Clock>,
}

impl Default for SimConfig {
    /// The default client and [`SIM_ENVIRONMENT`] without doors.
    fn default() -> Self {
        Self {
            clients: vec![SimClient::default()],
            environments: BTreeMap::from([(SIM_ENVIRONMENT.to_owned(), Vec::new())]),
            token_ttl_secs: 3600,
            clock: Arc::new(SystemClock),
        }
    }
}

/// One key held by a simulated environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimKey {
    /// Its id (the adapter's `vendorRef`).
    pub id: String,
    /// `mobileKey` or `card`.
    pub key_type: String,
    /// `active` or `pendingEncoding`.
    pub status: String,
    /// The creator's external id (`None` for front-desk keys).
    pub external_id: Option<String>,
    /// Vostio's key-holder id.
    pub key_holder_id: String,
    /// The holder's external id.
    pub key_holder_external_id: Option<String>,
    /// Doors it opens.
    pub door_ids: Vec<String>,
    /// Start of validity.
    pub valid_from: DateTime<Utc>,
    /// End of validity (`None`: never expires).
    pub valid_to: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl SimKey {
    fn record(&self) -> wire::KeyRecord {
        wire::KeyRecord {
            id: self.id.clone(),
            key_type: self.key_type.clone(),
            status: self.status.clone(),
            external_id: self.external_id.clone(),
            key_holder: wire::KeyHolder {
                id: Some(self.key_holder_id.clone()),
                external_id: self.key_holder_external_id.clone(),
            },
            access_rights: self
                .door_ids
                .iter()
                .map(|d| wire::AccessRight { door_id: d.clone() })
                .collect(),
            valid_from: self.valid_from,
            valid_to: self.valid_to,
            created_at: Some(self.created_at),
        }
    }
}

crate::sim_kit::sim_counters! {
    /// How many calls the simulator has seen.
    pub struct SimCounters {
        /// Tokens issued.
        pub tokens_issued: u64,
        /// Keys created (including those whose response was then lost).
        pub creates: u64,
        /// Keys updated (including those whose response was then lost).
        pub updates: u64,
        /// Keys deleted (including those whose response was then lost).
        pub deletes: u64,
        /// List pages served.
        pub lists: u64,
    }
}

#[derive(Default)]
struct SimEnvironment {
    doors: BTreeSet<String>,
    keys: Vec<SimKey>,
    /// Health of the doors not in the default state.
    door_health: HashMap<String, SimDoorHealth>,
}

/// A door lock's health as the simulator reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimDoorHealth {
    /// Reachable.
    pub online: bool,
    /// Battery, percent.
    pub battery_level: i64,
    /// Firmware.
    pub firmware_version: String,
    /// The lock's clock minus the simulator's.
    pub clock_skew: chrono::Duration,
}

impl Default for SimDoorHealth {
    fn default() -> Self {
        Self {
            online: true,
            battery_level: 92,
            firmware_version: "3.4.1".into(),
            clock_skew: chrono::Duration::zero(),
        }
    }
}

/// The simulator's state behind its [`SimHandle`].
pub struct SimState {
    clients: Vec<SimClient>,
    environments: BTreeMap<String, SimEnvironment>,
    tokens: SimTokens,
    kit: FaultKit,
    counters: SimCounters,
    token_ttl_secs: i64,
    journal: DoorJournal,
    /// Where door events are posted (`webhooks`).
    webhook: crate::sim_kit::SimWebhook,
}

impl KitState for SimState {
    crate::sim_kit::kit_fields!(SimCounters);
    type Refusal = Refusal;

    /// What every door accepts, through Lockstep's eyes: each key made with an external id
    /// (Lockstep's label), on each door of its access rights; `card` keys count from their
    /// creation (pending encoding), as the adapter's `find` does.
    fn door_view(&self) -> Vec<DoorObject> {
        let mut out = Vec::new();
        for env in self.environments.values() {
            for k in &env.keys {
                let Some(label) = &k.external_id else {
                    continue;
                };
                let kind = if k.key_type == wire::KEY_TYPE_CARD {
                    lockstep_domain::KeyCredentialKind::RfidCard
                } else {
                    lockstep_domain::KeyCredentialKind::MobileApp
                };
                for door in &k.door_ids {
                    out.push(DoorObject {
                        device: door.clone(),
                        label: label.clone(),
                        kind,
                        valid_from: Some(k.valid_from),
                        valid_until: k.valid_to,
                    });
                }
            }
        }
        out
    }

    fn outage_reply() -> HttpResponse {
        refusal(503, code::UNAVAILABLE, "service unavailable").into()
    }

    fn rate_limited_reply() -> HttpResponse {
        refusal(429, code::RATE_LIMITED, "too many requests").into()
    }

    fn error_reply() -> HttpResponse {
        refusal(500, code::INTERNAL, "internal server error").into()
    }
}

crate::sim_kit::issues_tokens!(SimState);

crate::sim_kit::signed_webhooks!(
    SimState,
    crate::sim_kit::Signer {
        timestamp_header: None,
        signature_header: crate::vostio::webhook::SIGNATURE_HEADER,
        sign: crate::vostio::webhook::sign,
    }
);

impl SimHandle {
    fn new(config: SimConfig) -> Self {
        let environments = config
            .environments
            .into_iter()
            .map(|(env, doors)| {
                (
                    env,
                    SimEnvironment {
                        doors: doors.into_iter().collect(),
                        keys: Vec::new(),
                        door_health: HashMap::new(),
                    },
                )
            })
            .collect();
        let state = SimState {
            clients: config.clients,
            environments,
            tokens: SimTokens::default(),
            kit: FaultKit::default(),
            counters: SimCounters::default(),
            token_ttl_secs: config.token_ttl_secs,
            journal: DoorJournal::default(),
            webhook: crate::sim_kit::SimWebhook::default(),
        };
        Self::with_state(state, config.clock)
    }

    /// Adds a door to an environment, creating the environment if needed.
    pub fn add_door(&self, environment: &str, door_id: &str) {
        self.with(|s| {
            s.environments
                .entry(environment.to_owned())
                .or_default()
                .doors
                .insert(door_id.to_owned());
        });
    }

    /// Changes one door's health (online, battery, firmware, clock).
    pub fn update_door_health(
        &self,
        environment: &str,
        door_id: &str,
        f: impl FnOnce(&mut SimDoorHealth),
    ) {
        self.with(|s| {
            let env = s.environments.entry(environment.to_owned()).or_default();
            f(env.door_health.entry(door_id.to_owned()).or_default());
        });
    }

    /// Adds an accepted client.
    pub fn add_client(&self, client: SimClient) {
        self.with(|s| s.clients.push(client));
    }

    /// Stops accepting every client whose secret is `client_secret` (the end of a
    /// rotation's overlap).
    pub fn remove_clients_with_secret(&self, client_secret: &str) {
        self.with(|s| {
            s.clients
                .retain(|c| c.client_secret.expose() != client_secret)
        });
    }

    /// The keys of one environment, oldest first (empty for an unknown environment).
    pub fn keys(&self, environment: &str) -> Vec<SimKey> {
        self.with(|s| {
            s.environments
                .get(environment)
                .map(|e| e.keys.clone())
                .unwrap_or_default()
        })
    }

    /// The keys of one environment that open `door_id`.
    pub fn keys_on_door(&self, environment: &str, door_id: &str) -> Vec<SimKey> {
        self.keys(environment)
            .into_iter()
            .filter(|k| k.door_ids.iter().any(|d| d == door_id))
            .collect()
    }

    /// Puts a key on a door directly (no HTTP, no fault), e.g. a front-desk key made in
    /// the Vostio portal (`external_id: None`). `None` if the environment or door is
    /// unknown.
    pub fn seed_key(
        &self,
        environment: &str,
        door_id: &str,
        external_id: Option<&str>,
        valid_from: DateTime<Utc>,
        valid_to: Option<DateTime<Utc>>,
    ) -> Option<String> {
        let now = self.clock.now();
        self.with(|s| {
            let env = s.environments.get_mut(environment)?;
            if !env.doors.contains(door_id) {
                return None;
            }
            let id = new_id("k");
            env.keys.push(SimKey {
                id: id.clone(),
                key_type: wire::KEY_TYPE_CARD.to_owned(),
                status: wire::STATUS_ACTIVE.to_owned(),
                external_id: external_id.map(str::to_owned),
                key_holder_id: new_id("kh"),
                key_holder_external_id: external_id.map(str::to_owned),
                door_ids: vec![door_id.to_owned()],
                valid_from,
                valid_to,
                created_at: now,
            });
            Some(id)
        })
    }
}

crate::sim_kit::simulator!(VostioSimulator, "vostio");

impl RunningSimulator {
    /// `http://<addr>/api`, the adapter's `cloud_base_url`.
    pub fn cloud_base_url(&self) -> String {
        format!("{}/api", self.base_url())
    }

    /// `http://<addr>/oauth2/token`, the adapter's `oauth_token_url`.
    pub fn oauth_token_url(&self) -> String {
        format!("{}/oauth2/token", self.base_url())
    }

    /// An adapter config for the default client and [`SIM_ENVIRONMENT`].
    pub fn default_adapter_config(&self) -> VostioConfig {
        VostioConfig::new(
            self.cloud_base_url(),
            self.oauth_token_url(),
            Secret::new(SIM_CLIENT_ID),
            Secret::new(SIM_CLIENT_SECRET),
            SIM_ENVIRONMENT,
        )
    }
}

/// Runs a simulator until it fails or the process receives Ctrl-C: for a standalone
/// simulator process (chaos tests). `doors` go into [`SIM_ENVIRONMENT`].
pub async fn run_standalone(bind: SocketAddr, doors: Vec<String>) -> io::Result<()> {
    let config = SimConfig {
        environments: BTreeMap::from([(SIM_ENVIRONMENT.to_owned(), doors)]),
        ..SimConfig::default()
    };
    VostioSimulator::start_with(bind, config)?
        .serve_until_ctrl_c("vostio")
        .await
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/oauth2/token", web::post().to(token))
        .route("/api/v1/environments/{env}", web::get().to(get_environment))
        .route(
            "/api/v1/environments/{env}/keys",
            web::post().to(create_key),
        )
        .route("/api/v1/environments/{env}/keys", web::get().to(list_keys))
        .route(
            "/api/v1/environments/{env}/doors/{door}",
            web::get().to(get_door),
        )
        .route(
            "/api/v1/environments/{env}/keys/{key}",
            web::patch().to(update_key),
        )
        .route(
            "/api/v1/environments/{env}/keys/{key}",
            web::delete().to(delete_key),
        )
        .route(
            "/_sim/environments/{env}/doors/{door}",
            web::post().to(post_door),
        )
        .route("/_sim/environments/{env}/keys", web::get().to(get_env_keys))
        .configure(crate::sim_kit::token_routes::<SimState>)
        .configure(webhooks::routes)
        .configure(crate::sim_kit::routes::<SimState>);
}

/// An API error: status and `{code, message}`.
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
}

impl From<Refusal> for HttpResponse {
    fn from(r: Refusal) -> Self {
        let mut resp = HttpResponse::build(r.status);
        if r.status == StatusCode::UNAUTHORIZED {
            resp.insert_header(("WWW-Authenticate", "Bearer error=\"invalid_token\""));
        }
        resp.json(ApiErrorResponse {
            code: r.code.to_owned(),
            message: r.message.to_owned(),
            correlation_id: Some(new_id("corr")),
        })
    }
}

fn refusal(status: u16, code: &'static str, message: &'static str) -> Refusal {
    Refusal {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        code,
        message,
    }
}

fn new_id(prefix: &str) -> String {
    let bytes: [u8; 12] = rand::thread_rng().gen();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// One Vostio API call as its handler sees it.
type Call = crate::sim_kit::SimCall<SimState>;

/// Checks the bearer token and the client's right to the call's environment (`{env}`),
/// which must exist.
fn authorize<'s>(
    s: &'s mut SimState,
    c: &Call,
    now: DateTime<Utc>,
) -> Result<&'s mut SimEnvironment, Refusal> {
    let env = c.param("env");
    let unauthorized = || refusal(401, code::UNAUTHORIZED, "invalid or expired token");
    let TokenCheck::Valid { client_id } = s.tokens.check(bearer(&c.req), now) else {
        return Err(unauthorized());
    };
    let allowed = s
        .clients
        .iter()
        .any(|c| c.client_id == client_id && c.environments.iter().any(|e| e == env));
    if !allowed {
        return Err(refusal(403, code::FORBIDDEN, "environment not granted"));
    }
    s.environments
        .get_mut(env)
        .ok_or_else(|| refusal(404, code::ENVIRONMENT_NOT_FOUND, "environment not found"))
}

/// The client id and secret from HTTP Basic (RFC 6749 §2.3.1) or, failing that, the form.
fn client_credentials(
    req: &HttpRequest,
    form: &HashMap<String, String>,
) -> Option<(String, String)> {
    crate::sim_kit::basic_credentials(req).or_else(|| {
        Some((
            form.get("client_id")?.clone(),
            form.get("client_secret")?.clone(),
        ))
    })
}

async fn token(
    h: web::Data<SimHandle>,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    if let Some(r) = h.gate().await {
        return r;
    }
    if form.get("grant_type").map(String::as_str) != Some(wire::GRANT_CLIENT_CREDENTIALS) {
        return oauth_error(StatusCode::BAD_REQUEST, oauth::UNSUPPORTED_GRANT_TYPE, None);
    }
    let Some((client_id, secret)) = client_credentials(&req, &form) else {
        return oauth_error(StatusCode::UNAUTHORIZED, oauth::INVALID_CLIENT, None);
    };
    let now = h.clock.now();
    h.with(|s| {
        let known = s
            .clients
            .iter()
            .any(|c| c.client_id == client_id && c.client_secret.expose() == secret);
        if !known {
            return oauth_error(StatusCode::UNAUTHORIZED, oauth::INVALID_CLIENT, None);
        }
        let access_token = s.tokens.issue(
            24,
            &client_id,
            now + chrono::Duration::seconds(s.token_ttl_secs),
        );
        s.counters.tokens_issued += 1;
        HttpResponse::Ok().json(wire::TokenResponse {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_in: s.token_ttl_secs,
        })
    })
}

async fn get_environment(c: Call) -> HttpResponse {
    c.h.read(|s, now| {
        authorize(s, &c, now)?;
        let env = c.param("env");
        Ok(HttpResponse::Ok().json(wire::EnvironmentRecord {
            name: format!("sim hotel {env}"),
            id: env.to_owned(),
            time_zone: Some("Europe/Stockholm".to_owned()),
        }))
    })
    .await
}

async fn get_door(c: Call) -> HttpResponse {
    let door = c.param("door");
    c.h.read(|s, now| {
        let environment = authorize(s, &c, now)?;
        if !environment.doors.contains(door) {
            return Err(refusal(404, code::DOOR_NOT_FOUND, "door not found"));
        }
        let health = environment
            .door_health
            .get(door)
            .cloned()
            .unwrap_or_default();
        Ok(HttpResponse::Ok().json(wire::DoorRecord {
            name: format!("Door {door}"),
            id: door.to_owned(),
            online: Some(health.online),
            battery_level: Some(health.battery_level),
            firmware_version: Some(health.firmware_version),
            lock_time: health
                .online
                .then(|| (now + health.clock_skew).to_rfc3339()),
        }))
    })
    .await
}

async fn create_key(c: Call) -> HttpResponse {
    c.h.write("create_key", |s, now| {
        let door_offline = s.kit.faults.door_offline;
        let environment = authorize(s, &c, now)?;
        let create: wire::CreateKeyRequest = serde_json::from_slice(&c.body)
            .map_err(|_| refusal(400, code::VALIDATION_FAILED, "malformed body"))?;
        let status = match create.key_type.as_str() {
            wire::KEY_TYPE_MOBILE => wire::STATUS_ACTIVE,
            wire::KEY_TYPE_CARD => wire::STATUS_PENDING_ENCODING,
            _ => {
                return Err(refusal(
                    422,
                    code::KEY_TYPE_NOT_SUPPORTED,
                    "key type not supported",
                ))
            }
        };
        if create.access_rights.is_empty() || create.external_id.trim().is_empty() {
            return Err(refusal(400, code::VALIDATION_FAILED, "missing field"));
        }
        if create.valid_from >= create.valid_to {
            return Err(refusal(
                400,
                code::INVALID_VALIDITY,
                "validFrom must precede validTo",
            ));
        }
        for right in &create.access_rights {
            if !environment.doors.contains(&right.door_id) {
                return Err(refusal(404, code::DOOR_NOT_FOUND, "door not found"));
            }
            let held = environment
                .keys
                .iter()
                .filter(|k| k.door_ids.contains(&right.door_id))
                .count();
            if held >= MAX_KEYS_PER_DOOR {
                return Err(refusal(422, code::KEY_LIMIT_REACHED, "door is full"));
            }
        }
        if door_offline {
            return Err(refusal(422, code::DOOR_OFFLINE, "door offline"));
        }
        let key = SimKey {
            id: new_id("k"),
            key_type: create.key_type,
            status: status.to_owned(),
            external_id: Some(create.external_id),
            key_holder_id: new_id("kh"),
            key_holder_external_id: create.key_holder.external_id,
            door_ids: create
                .access_rights
                .into_iter()
                .map(|a| a.door_id)
                .collect(),
            valid_from: create.valid_from,
            valid_to: Some(create.valid_to),
            created_at: now,
        };
        let record = key.record();
        environment.keys.push(key);
        s.counters.creates += 1;
        Ok(HttpResponse::Created().json(record))
    })
    .await
}

async fn list_keys(c: Call, query: web::Query<wire::ListKeysQuery>) -> HttpResponse {
    c.h.read(|s, now| {
        let environment = authorize(s, &c, now)?;
        let size = query
            .page_size
            .unwrap_or(wire::MAX_PAGE_SIZE)
            .clamp(1, wire::MAX_PAGE_SIZE) as usize;
        let offset = match &query.page_token {
            Some(t) => t
                .parse::<usize>()
                .map_err(|_| refusal(400, code::VALIDATION_FAILED, "bad page token"))?,
            None => 0,
        };
        let matching: Vec<&SimKey> = environment
            .keys
            .iter()
            .filter(|k| {
                query
                    .door_id
                    .as_ref()
                    .is_none_or(|d| k.door_ids.contains(d))
                    && query
                        .external_id
                        .as_ref()
                        .is_none_or(|e| k.external_id.as_ref() == Some(e))
            })
            .collect();
        let items: Vec<wire::KeyRecord> = matching
            .iter()
            .skip(offset)
            .take(size)
            .map(|k| k.record())
            .collect();
        let next = offset + items.len();
        let page = wire::ListKeysResponse {
            next_page_token: (next < matching.len()).then(|| next.to_string()),
            items,
        };
        s.counters.lists += 1;
        Ok(HttpResponse::Ok().json(page))
    })
    .await
}

async fn update_key(c: Call) -> HttpResponse {
    let key_id = c.param("key");
    c.h.write("update_key", |s, now| {
        let door_offline = s.kit.faults.door_offline;
        let environment = authorize(s, &c, now)?;
        let update: wire::UpdateKeyRequest = serde_json::from_slice(&c.body)
            .map_err(|_| refusal(400, code::VALIDATION_FAILED, "malformed body"))?;
        let key = environment
            .keys
            .iter_mut()
            .find(|k| k.id == key_id)
            .ok_or_else(|| refusal(404, code::KEY_NOT_FOUND, "key not found"))?;
        if update.valid_from >= update.valid_to {
            return Err(refusal(
                400,
                code::INVALID_VALIDITY,
                "validFrom must precede validTo",
            ));
        }
        if door_offline {
            return Err(refusal(422, code::DOOR_OFFLINE, "door offline"));
        }
        key.valid_from = update.valid_from;
        key.valid_to = Some(update.valid_to);
        let record = key.record();
        s.counters.updates += 1;
        Ok(HttpResponse::Ok().json(record))
    })
    .await
}

async fn delete_key(c: Call) -> HttpResponse {
    let key_id = c.param("key");
    c.h.write("delete_key", |s, now| {
        let door_offline = s.kit.faults.door_offline;
        let environment = authorize(s, &c, now)?;
        let pos = environment
            .keys
            .iter()
            .position(|k| k.id == key_id)
            .ok_or_else(|| refusal(404, code::KEY_NOT_FOUND, "key not found"))?;
        if door_offline {
            return Err(refusal(422, code::DOOR_OFFLINE, "door offline"));
        }
        environment.keys.remove(pos);
        s.counters.deletes += 1;
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

async fn post_door(h: web::Data<SimHandle>, path: web::Path<(String, String)>) -> HttpResponse {
    let (env, door) = path.into_inner();
    h.add_door(&env, &door);
    HttpResponse::NoContent().finish()
}

async fn get_env_keys(h: web::Data<SimHandle>, path: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok().json(h.keys(&path.into_inner()))
}
