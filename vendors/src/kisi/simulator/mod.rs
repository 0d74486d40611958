//! A Kisi REST API simulator with fault injection (DESIGN §6), built on actix-web.
//!
//! It speaks the subset of the API the adapter uses, with Kisi's paths, JSON bodies wrapped
//! in a root key, HTTP statuses and error bodies (`{"code", "error"}`, and
//! `{"errors": {field: [..]}}` for 422): `GET /places`, `GET|POST /users`,
//! `GET /group_locks`, `GET|POST /role_assignments`,
//! `GET|PATCH|DELETE /role_assignments/{id}`. Every call needs
//! `Authorization: KISI-LOGIN <key>` with a key it knows (401 `000401` otherwise).
//! It refuses unknown groups and users (404 `000404`), a missing or malformed field, a
//! role other than `group_basic`/`group_manager`, a window whose end is not after its start
//! (422), a taken email (422) and a `GET /group_locks` without `group_id` (400). The
//! create request is accepted in its current form (`applies_to_*`, `assignee_*`) and in the
//! deprecated form the public guides still show (`user_id`, `group_id`). Lists are paged
//! with `limit` (at most 250) and `offset` and answer `X-Collection-Range: start-end/total`.
//!
//! Faults ([`SimFaults`]) are set from Rust through [`SimHandle`] or from another process
//! with `POST /_sim/faults` (a JSON object; the keys given replace the current values).
//! Inspection over HTTP: `GET /_sim/faults`, `GET /_sim/counters`, `GET /_sim/users`,
//! `GET /_sim/groups/{group_id}/role_assignments`; control:
//! `POST /_sim/groups/{group_id}/locks/{lock_id}` (adds a group granting a lock).
//!
//! Kisi has no keypad PINs, so there is no PIN-collision fault: a role assignment cannot
//! collide with another.
//!
//! The server runs on a thread of its own with its own actix `System`, so
//! [`KisiSimulator::start`] works the same from `#[tokio::main]`, `#[actix_web::main]` or a
//! test, and returns once the socket is bound.

pub mod webhooks;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use lockstep_domain::{Clock, SystemClock};
use serde::Serialize;

use super::errors as code;
use super::wire::{
    self, from_kisi_time, to_kisi_time, ErrorBody, RoleAssignment, ValidationErrors,
    APPLIES_TO_GROUP, ASSIGNEE_USER, MAX_PAGE_SIZE, ROLE_GROUP_BASIC, ROLE_GROUP_MANAGER,
};
use super::{KisiConfig, Secret};
pub use crate::sim_kit::SimFaults;
use crate::sim_kit::{FaultKit, KitState};
use crate::ttlock::simulator::journal::{DoorJournal, DoorObject};

/// The API key of the default configuration.
pub const SIM_API_KEY: &str = "sim-kisi-api-key";
/// The id of the one place the simulator has.
pub const SIM_PLACE_ID: i64 = 3289;

/// What the simulator starts with.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Accepted API keys.
    pub api_keys: Vec<Secret>,
    /// Groups and the locks each grants.
    pub groups: Vec<(i64, Vec<i64>)>,
    /// Time for `created_at` and the rate-limit window.
    pub clock: Arc<dyn Clock>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            api_keys: vec![Secret::new(SIM_API_KEY)],
            groups: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A user held by the simulator.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimUser {
    /// Its id.
    pub id: i64,
    /// Email (unique, compared case-insensitively).
    pub email: String,
    /// Name.
    pub name: String,
    /// Metadata.
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Notes.
    pub notes: Option<String>,
}

/// A group role assignment held by the simulator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimRoleAssignment {
    /// Its id (the adapter's `vendorRef`).
    pub id: i64,
    /// The group.
    pub group_id: i64,
    /// The user.
    pub user_id: i64,
    /// The role.
    pub role_id: String,
    /// Whether the user was to be emailed.
    pub notify: bool,
    /// Start of validity.
    pub valid_from: Option<DateTime<Utc>>,
    /// End of validity.
    pub valid_until: Option<DateTime<Utc>>,
    /// Creation.
    pub created_at: DateTime<Utc>,
    /// Last update.
    pub updated_at: DateTime<Utc>,
}

crate::sim_kit::sim_counters! {
    /// How many calls the simulator has seen.
    pub struct SimCounters {
        /// Users created.
        pub users_created: u64,
        /// Role assignments created (including those whose response was then lost).
        pub creates: u64,
        /// Role assignments updated (including those whose response was then lost).
        pub updates: u64,
        /// Role assignments deleted (including those whose response was then lost).
        pub deletes: u64,
        /// Role-assignment list pages served.
        pub lists: u64,
        /// Calls refused for a missing or unknown API key.
        pub unauthorized: u64,
    }
}

/// The simulator's state behind its [`SimHandle`].
pub struct SimState {
    api_keys: Vec<Secret>,
    groups: BTreeMap<i64, BTreeSet<i64>>,
    users: BTreeMap<i64, SimUser>,
    assignments: BTreeMap<i64, SimRoleAssignment>,
    kit: FaultKit,
    counters: SimCounters,
    next_user_id: i64,
    next_assignment_id: i64,
    next_group_lock_id: i64,
    /// Locks whose controller is offline.
    offline_locks: BTreeSet<i64>,
    /// Where door events are posted, and the secret they are signed with.
    webhook: crate::sim_kit::SimWebhook,
    next_event_id: i64,
    journal: DoorJournal,
}

impl KitState for SimState {
    crate::sim_kit::kit_fields!(SimCounters);
    type Refusal = Refusal;

    /// What every lock accepts, through Lockstep's eyes: each group role assignment opens
    /// every lock of its group (device `"<group_id>:<lock_id>"`) for its user's label
    /// (`metadata.lockstep_label`, else the user's name), as a mobile key.
    fn door_view(&self) -> Vec<DoorObject> {
        let mut out = Vec::new();
        for a in self.assignments.values() {
            let Some(user) = self.users.get(&a.user_id) else {
                continue;
            };
            let label = user
                .metadata
                .get("lockstep_label")
                .and_then(|v| v.as_str())
                .unwrap_or(&user.name)
                .to_owned();
            for lock in self.groups.get(&a.group_id).into_iter().flatten() {
                out.push(DoorObject {
                    device: format!("{}:{lock}", a.group_id),
                    label: label.clone(),
                    kind: lockstep_domain::KeyCredentialKind::MobileApp,
                    valid_from: a.valid_from,
                    valid_until: a.valid_until,
                });
            }
        }
        out
    }

    fn outage_reply() -> HttpResponse {
        *error(
            StatusCode::SERVICE_UNAVAILABLE,
            code::UNEXPECTED,
            "Service unavailable.",
        )
        .0
    }

    fn rate_limited_reply() -> HttpResponse {
        HttpResponse::TooManyRequests().json(ErrorBody {
            code: Some(code::TOO_MANY_REQUESTS.to_owned()),
            error: Some("Too many requests.".to_owned()),
        })
    }

    fn error_reply() -> HttpResponse {
        *error(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::UNEXPECTED,
            "An unexpected issue occured.",
        )
        .0
    }
}

crate::sim_kit::signed_webhooks!(
    SimState,
    crate::sim_kit::Signer {
        timestamp_header: Some(crate::kisi::webhook::TIMESTAMP_HEADER),
        signature_header: crate::kisi::webhook::SIGNATURE_HEADER,
        sign: crate::kisi::webhook::sign,
    }
);

impl SimHandle {
    fn new(config: SimConfig) -> Self {
        let state = SimState {
            api_keys: config.api_keys,
            groups: config
                .groups
                .into_iter()
                .map(|(g, locks)| (g, locks.into_iter().collect()))
                .collect(),
            users: BTreeMap::new(),
            assignments: BTreeMap::new(),
            kit: FaultKit::default(),
            counters: SimCounters::default(),
            next_user_id: 70_001,
            next_assignment_id: 910_001,
            next_group_lock_id: 5_001,
            offline_locks: BTreeSet::new(),
            webhook: crate::sim_kit::SimWebhook::default(),
            next_event_id: 8_800_001,
            journal: DoorJournal::default(),
        };
        Self::with_state(state, config.clock)
    }

    /// Adds a group granting `lock_id` (or adds the lock to an existing group).
    pub fn add_group_lock(&self, group_id: i64, lock_id: i64) {
        self.with(|s| {
            s.groups.entry(group_id).or_default().insert(lock_id);
        });
    }

    /// Takes a lock's controller offline (or back online).
    pub fn set_lock_online(&self, lock_id: i64, online: bool) {
        self.with(|s| {
            if online {
                s.offline_locks.remove(&lock_id);
            } else {
                s.offline_locks.insert(lock_id);
            }
        });
    }

    /// Adds a group granting no lock.
    pub fn add_group(&self, group_id: i64) {
        self.with(|s| {
            s.groups.entry(group_id).or_default();
        });
    }

    /// Accepts another API key.
    pub fn add_api_key(&self, key: &str) {
        self.with(|s| s.api_keys.push(Secret::new(key)));
    }

    /// Stops accepting `key` (the end of a rotation's overlap).
    pub fn remove_api_key(&self, key: &str) {
        self.with(|s| s.api_keys.retain(|k| k.expose() != key));
    }

    /// Every user.
    pub fn users(&self) -> Vec<SimUser> {
        self.with(|s| s.users.values().cloned().collect())
    }

    /// The role assignments of one group, oldest first.
    pub fn role_assignments(&self, group_id: i64) -> Vec<SimRoleAssignment> {
        self.with(|s| {
            s.assignments
                .values()
                .filter(|a| a.group_id == group_id)
                .cloned()
                .collect()
        })
    }

    /// Every role assignment.
    pub fn all_role_assignments(&self) -> Vec<SimRoleAssignment> {
        self.with(|s| s.assignments.values().cloned().collect())
    }

    /// Puts a member on a group directly (no HTTP, no fault): a user with `email` and
    /// `name` (created if needed) with `group_basic` for the window. `None` if the group is
    /// unknown. Returns the role assignment id.
    pub fn seed_member(
        &self,
        group_id: i64,
        email: &str,
        name: &str,
        valid_from: Option<DateTime<Utc>>,
        valid_until: Option<DateTime<Utc>>,
    ) -> Option<i64> {
        let now = self.clock.now();
        self.with_journaled(|s| {
            if !s.groups.contains_key(&group_id) {
                return None;
            }
            let user_id = match s
                .users
                .values()
                .find(|u| u.email.eq_ignore_ascii_case(email))
            {
                Some(u) => u.id,
                None => {
                    let id = s.next_user_id;
                    s.next_user_id += 1;
                    s.users.insert(
                        id,
                        SimUser {
                            id,
                            email: email.to_owned(),
                            name: name.to_owned(),
                            metadata: BTreeMap::new(),
                            notes: None,
                        },
                    );
                    id
                }
            };
            let id = s.next_assignment_id;
            s.next_assignment_id += 1;
            s.assignments.insert(
                id,
                SimRoleAssignment {
                    id,
                    group_id,
                    user_id,
                    role_id: ROLE_GROUP_BASIC.to_owned(),
                    notify: false,
                    valid_from,
                    valid_until,
                    created_at: now,
                    updated_at: now,
                },
            );
            Some(id)
        })
    }
}

crate::sim_kit::simulator!(KisiSimulator, "kisi");

impl RunningSimulator {
    /// An adapter config for the default API key.
    pub fn default_adapter_config(&self) -> KisiConfig {
        KisiConfig::new(self.base_url(), Secret::new(SIM_API_KEY))
    }
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/places", web::get().to(list_places))
        .route("/users", web::get().to(list_users))
        .route("/users", web::post().to(create_user))
        .route("/group_locks", web::get().to(list_group_locks))
        .route("/locks/{id}", web::get().to(get_lock))
        .route("/role_assignments", web::get().to(list_assignments))
        .route("/role_assignments", web::post().to(create_assignment))
        .route("/role_assignments/{id}", web::get().to(get_assignment))
        .route("/role_assignments/{id}", web::patch().to(update_assignment))
        .route(
            "/role_assignments/{id}",
            web::delete().to(delete_assignment),
        )
        .configure(webhooks::routes)
        .configure(crate::sim_kit::routes::<SimState>)
        .route("/_sim/users", web::get().to(get_users))
        .route(
            "/_sim/groups/{group_id}/locks/{lock_id}",
            web::post().to(post_group_lock),
        )
        .route(
            "/_sim/groups/{group_id}/role_assignments",
            web::get().to(get_group_assignments),
        );
}

type Params = HashMap<String, String>;

/// A Kisi error reply.
pub struct Refusal(Box<HttpResponse>);

impl Refusal {
    fn new(r: HttpResponse) -> Self {
        Self(Box::new(r))
    }
}

/// A validity window as the simulator stores it.
type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn error(status: StatusCode, code: &str, msg: &str) -> Refusal {
    Refusal::new(HttpResponse::build(status).json(ErrorBody {
        code: Some(code.to_owned()),
        error: Some(msg.to_owned()),
    }))
}

fn not_found() -> Refusal {
    error(StatusCode::NOT_FOUND, code::NOT_FOUND, "Not found.")
}

fn invalid(field: &str, msg: &str) -> Refusal {
    let mut errors = BTreeMap::new();
    errors.insert(field.to_owned(), vec![msg.to_owned()]);
    Refusal::new(HttpResponse::UnprocessableEntity().json(ValidationErrors { errors }))
}

impl From<Refusal> for HttpResponse {
    fn from(r: Refusal) -> Self {
        *r.0
    }
}

/// One Kisi API call as its handler sees it.
type Call = crate::sim_kit::SimCall<SimState>;

/// Runs a Kisi API call: the faults, the API key, then `f`; a write (`Some` of its
/// operation) is journaled and may have its response lost.
async fn api(
    c: &Call,
    write: Option<&'static str>,
    f: impl FnOnce(&mut SimState, DateTime<Utc>) -> Result<HttpResponse, Refusal>,
) -> HttpResponse {
    let key = c
        .req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("KISI-LOGIN "))
        .map(str::trim);
    c.h.call(write, |s, now| {
        if !key.is_some_and(|k| s.api_keys.iter().any(|a| a.expose() == k)) {
            s.counters.unauthorized += 1;
            return Err(error(
                StatusCode::UNAUTHORIZED,
                code::UNAUTHORIZED,
                "Unauthorized.",
            ));
        }
        f(s, now)
    })
    .await
}

fn opt_i64(p: &Params, key: &str) -> Result<Option<i64>, Refusal> {
    match p.get(key).map(|v| v.trim()) {
        Some(v) if !v.is_empty() => v.parse().map(Some).map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "000400",
                "A parameter is not an integer.",
            )
        }),
        _ => Ok(None),
    }
}

/// `limit` (default `default`, at most `max`) and `offset` (default 0).
fn page(p: &Params, default: i64, max: i64) -> Result<(usize, usize), Refusal> {
    let limit = opt_i64(p, "limit")?.unwrap_or(default).clamp(1, max);
    let offset = opt_i64(p, "offset")?.unwrap_or(0).clamp(0, 20_000);
    Ok((
        usize::try_from(offset).unwrap_or(0),
        usize::try_from(limit).unwrap_or(1),
    ))
}

/// A paged JSON array with `X-Collection-Range`.
fn paged<T: Serialize>(items: Vec<T>, offset: usize, limit: usize) -> HttpResponse {
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(offset).take(limit).collect();
    let end = (offset + page.len()).saturating_sub(1).max(offset);
    HttpResponse::Ok()
        .insert_header((
            wire::COLLECTION_RANGE_HEADER,
            format!("{offset}-{end}/{total}"),
        ))
        .json(page)
}

fn user_json(u: &SimUser) -> wire::User {
    wire::User {
        id: u.id,
        resource_type: Some("User".to_owned()),
        name: Some(u.name.clone()),
        email: Some(u.email.clone()),
        metadata: Some(u.metadata.clone()),
        notes: u.notes.clone(),
        access_enabled: Some(true),
        created_at: None,
        updated_at: None,
    }
}

fn assignment_json(s: &SimState, a: &SimRoleAssignment) -> RoleAssignment {
    let user = s.users.get(&a.user_id).map(|u| wire::Ref {
        id: u.id,
        resource_type: Some("User".to_owned()),
        name: Some(u.name.clone()),
        email: Some(u.email.clone()),
    });
    let group = wire::Ref {
        id: a.group_id,
        resource_type: Some("Group".to_owned()),
        name: Some(format!("sim group {}", a.group_id)),
        email: None,
    };
    RoleAssignment {
        id: a.id,
        resource_type: Some("RoleAssignment".to_owned()),
        role_id: Some(a.role_id.clone()),
        notify: Some(a.notify),
        applies_to_type: Some(APPLIES_TO_GROUP.to_owned()),
        applies_to_id: Some(a.group_id),
        applies_to: Some(group),
        assignee_type: Some(ASSIGNEE_USER.to_owned()),
        assignee_id: Some(a.user_id),
        assignee: user.clone(),
        user_id: Some(a.user_id),
        user,
        group_id: Some(a.group_id),
        kind: Some("group".to_owned()),
        scope: Some("group".to_owned()),
        valid_from: a.valid_from.map(to_kisi_time),
        valid_until: a.valid_until.map(to_kisi_time),
        created_at: Some(to_kisi_time(a.created_at)),
        updated_at: Some(to_kisi_time(a.updated_at)),
    }
}

async fn list_places(c: Call, q: web::Query<Params>) -> HttpResponse {
    api(&c, None, |_, _| {
        let (offset, limit) = page(&q, 10, 100)?;
        let place = wire::Place {
            id: SIM_PLACE_ID,
            name: Some("Sim place".to_owned()),
        };
        Ok(paged(vec![place], offset, limit))
    })
    .await
}

async fn list_users(c: Call, q: web::Query<Params>) -> HttpResponse {
    api(&c, None, |s, _| {
        let (offset, limit) = page(&q, 50, 100)?;
        let email = q.get("email").map(|e| e.trim().to_ascii_lowercase());
        let query = q.get("query").map(|e| e.trim().to_ascii_lowercase());
        let users: Vec<wire::User> = s
            .users
            .values()
            .filter(|u| {
                email
                    .as_ref()
                    .is_none_or(|e| &u.email.to_ascii_lowercase() == e)
            })
            .filter(|u| {
                query.as_ref().is_none_or(|t| {
                    u.email.to_ascii_lowercase().contains(t)
                        || u.name.to_ascii_lowercase().contains(t)
                })
            })
            .map(user_json)
            .collect();
        Ok(paged(users, offset, limit))
    })
    .await
}

/// Creates a user: not a write whose response is lost (a prerequisite the adapter
/// re-finds anyway).
async fn create_user(c: Call) -> HttpResponse {
    api(&c, None, |s, _| {
        let body: wire::CreateUserRequest = serde_json::from_slice(&c.body)
            .map_err(|_| invalid("user", "is missing or invalid"))?;
        let u = body.user;
        let email = u.email.trim().to_owned();
        if email.is_empty() || !email.contains('@') {
            return Err(invalid("email", "can't be blank or invalid"));
        }
        if s.users
            .values()
            .any(|x| x.email.eq_ignore_ascii_case(&email))
        {
            return Err(invalid("email", "has already been taken"));
        }
        let id = s.next_user_id;
        s.next_user_id += 1;
        let user = SimUser {
            id,
            name: u.name.unwrap_or_default(),
            email,
            metadata: u.metadata,
            notes: u.notes,
        };
        let reply = HttpResponse::Ok().json(user_json(&user));
        s.users.insert(id, user);
        s.counters.users_created += 1;
        Ok(reply)
    })
    .await
}

async fn list_group_locks(c: Call, q: web::Query<Params>) -> HttpResponse {
    api(&c, None, |s, _| {
        let (offset, limit) = page(&q, 10, i64::from(MAX_PAGE_SIZE))?;
        let Some(group_id) = opt_i64(&q, "group_id")? else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "000400",
                "group_id is required.",
            ));
        };
        let lock_filter = opt_i64(&q, "lock_id")?;
        let Some(locks) = s.groups.get(&group_id) else {
            return Err(not_found());
        };
        let base = s.next_group_lock_id;
        let links: Vec<wire::GroupLock> = locks
            .iter()
            .enumerate()
            .filter(|(_, l)| lock_filter.is_none_or(|f| f == **l))
            .map(|(i, l)| wire::GroupLock {
                id: base + i64::try_from(i).unwrap_or(0) + group_id * 1_000,
                group_id,
                lock_id: *l,
                place_id: Some(SIM_PLACE_ID),
            })
            .collect();
        Ok(paged(links, offset, limit))
    })
    .await
}

async fn list_assignments(c: Call, q: web::Query<Params>) -> HttpResponse {
    api(&c, None, |s, _| {
        let (offset, limit) = page(&q, 10, i64::from(MAX_PAGE_SIZE))?;
        let applies_to_type = q.get("applies_to_type").map(String::as_str);
        if applies_to_type.is_some_and(|t| t != APPLIES_TO_GROUP) {
            // The simulator holds group assignments only.
            return Ok(paged(Vec::<RoleAssignment>::new(), offset, limit));
        }
        let assignee_type = q.get("assignee_type").map(String::as_str);
        if assignee_type.is_some_and(|t| t != ASSIGNEE_USER) {
            return Ok(paged(Vec::<RoleAssignment>::new(), offset, limit));
        }
        let group = opt_i64(&q, "applies_to_id")?.or(opt_i64(&q, "group_id")?);
        let user = opt_i64(&q, "assignee_id")?.or(opt_i64(&q, "user_id")?);
        let role = q.get("role_id").cloned();
        s.counters.lists += 1;
        let items: Vec<RoleAssignment> = s
            .assignments
            .values()
            .filter(|a| group.is_none_or(|g| a.group_id == g))
            .filter(|a| user.is_none_or(|u| a.user_id == u))
            .filter(|a| role.as_ref().is_none_or(|r| &a.role_id == r))
            .map(|a| assignment_json(s, a))
            .collect();
        Ok(paged(items, offset, limit))
    })
    .await
}

fn parse_window(from: Option<&str>, until: Option<&str>) -> Result<Window, Refusal> {
    let from = from
        .map(|s| from_kisi_time(s, "valid_from"))
        .transpose()
        .map_err(|_| invalid("valid_from", "is not a valid time"))?;
    let until = until
        .map(|s| from_kisi_time(s, "valid_until"))
        .transpose()
        .map_err(|_| invalid("valid_until", "is not a valid time"))?;
    if let (Some(f), Some(u)) = (from, until) {
        if u <= f {
            return Err(invalid("valid_until", "must be after valid_from"));
        }
    }
    Ok((from, until))
}

async fn create_assignment(c: Call) -> HttpResponse {
    api(&c, Some("create_role_assignment"), |s, now| {
        let body: wire::CreateRoleAssignmentRequest = serde_json::from_slice(&c.body)
            .map_err(|_| invalid("role_assignment", "is missing or invalid"))?;
        let r = body.role_assignment;
        let group_id = match r.applies_to_type.as_deref() {
            Some(APPLIES_TO_GROUP) => r.applies_to_id,
            Some(_) => return Err(invalid("applies_to_type", "is not supported")),
            None => r.group_id,
        }
        .ok_or_else(|| invalid("applies_to_id", "can't be blank"))?;
        let user_id = match r.assignee_type.as_deref() {
            Some(ASSIGNEE_USER) => r.assignee_id,
            Some(_) => return Err(invalid("assignee_type", "is not supported")),
            None => r.user_id,
        }
        .ok_or_else(|| invalid("assignee_id", "can't be blank"))?;
        if r.role_id != ROLE_GROUP_BASIC && r.role_id != ROLE_GROUP_MANAGER {
            return Err(invalid("role_id", "is not included in the list"));
        }
        let (valid_from, valid_until) =
            parse_window(r.valid_from.as_deref(), r.valid_until.as_deref())?;
        if !s.groups.contains_key(&group_id) || !s.users.contains_key(&user_id) {
            return Err(not_found());
        }
        let id = s.next_assignment_id;
        s.next_assignment_id += 1;
        let a = SimRoleAssignment {
            id,
            group_id,
            user_id,
            role_id: r.role_id,
            notify: r.notify.unwrap_or(false),
            valid_from,
            valid_until,
            created_at: now,
            updated_at: now,
        };
        let reply = HttpResponse::Ok().json(assignment_json(s, &a));
        s.assignments.insert(id, a);
        s.counters.creates += 1;
        Ok(reply)
    })
    .await
}

/// `GET /locks/{id}`: a lock of a group, with its controller's `online` state.
async fn get_lock(c: Call, path: web::Path<i64>) -> HttpResponse {
    let id = path.into_inner();
    api(&c, None, |s, _| {
        if !s.groups.values().any(|locks| locks.contains(&id)) {
            return Err(not_found());
        }
        Ok(HttpResponse::Ok().json(wire::Lock {
            id,
            name: format!("Door {id}"),
            place_id: Some(SIM_PLACE_ID),
            online: Some(!s.offline_locks.contains(&id)),
            configured: Some(true),
        }))
    })
    .await
}

async fn get_assignment(c: Call, path: web::Path<i64>) -> HttpResponse {
    let id = path.into_inner();
    api(&c, None, |s, _| match s.assignments.get(&id) {
        Some(a) => Ok(HttpResponse::Ok().json(assignment_json(s, a))),
        None => Err(not_found()),
    })
    .await
}

async fn update_assignment(c: Call, path: web::Path<i64>) -> HttpResponse {
    let id = path.into_inner();
    api(&c, Some("update_role_assignment"), |s, now| {
        let body: wire::UpdateRoleAssignmentRequest = serde_json::from_slice(&c.body)
            .map_err(|_| invalid("role_assignment", "is missing or invalid"))?;
        let p = body.role_assignment;
        if let Some(role) = &p.role_id {
            if role != ROLE_GROUP_BASIC && role != ROLE_GROUP_MANAGER {
                return Err(invalid("role_id", "is not included in the list"));
            }
        }
        let Some(a) = s.assignments.get_mut(&id) else {
            return Err(not_found());
        };
        // Fields not sent keep their value; the window is checked as it will be.
        let from = p.valid_from.or(a.valid_from.map(to_kisi_time));
        let until = p.valid_until.or(a.valid_until.map(to_kisi_time));
        let (from, until) = parse_window(from.as_deref(), until.as_deref())?;
        a.valid_from = from;
        a.valid_until = until;
        if let Some(role) = p.role_id {
            a.role_id = role;
        }
        a.updated_at = now;
        s.counters.updates += 1;
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

async fn delete_assignment(c: Call, path: web::Path<i64>) -> HttpResponse {
    let id = path.into_inner();
    api(&c, Some("delete_role_assignment"), |s, _| {
        if s.assignments.remove(&id).is_none() {
            return Err(not_found());
        }
        s.counters.deletes += 1;
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

async fn get_users(h: web::Data<SimHandle>) -> HttpResponse {
    HttpResponse::Ok().json(h.users())
}

async fn post_group_lock(h: web::Data<SimHandle>, path: web::Path<(i64, i64)>) -> HttpResponse {
    let (group_id, lock_id) = path.into_inner();
    h.add_group_lock(group_id, lock_id);
    HttpResponse::NoContent().finish()
}

async fn get_group_assignments(h: web::Data<SimHandle>, path: web::Path<i64>) -> HttpResponse {
    HttpResponse::Ok().json(h.role_assignments(path.into_inner()))
}
