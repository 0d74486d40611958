//! The fault kit every vendor simulator shares (issue 14): the fault switches
//! ([`SimFaults`]), the gate that applies them to each vendor call, the fault counters
//! (`sim_counters!`: rejected, lost and the most calls in flight), the handle
//! ([`SimHandle`]) with its accessors, the door journal around writes, the `/_sim/faults`
//! and `/_sim/counters` routes and the start of the server.
//!
//! A simulator brings its state (a [`KitState`]) with its vendor's wire answers for an
//! outage, a rate limit and an error: adapters classify errors by what their vendor sends,
//! so each simulator keeps its vendor's exact answers. Everything else is written here once.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};

use chrono::{DateTime, Utc};
use lockstep_domain::Clock;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::sim_server::Running;
use crate::ttlock::simulator::journal::{DoorChange, DoorJournal, DoorObject};

/// Fault switches of a simulator. Over HTTP (`POST /_sim/faults`), a JSON object with any
/// subset of these keys; the keys given replace the current values.
///
/// The first six apply to every simulator; the last three only to the vendors whose API
/// has the matching refusal (the others accept and ignore them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimFaults {
    /// Every vendor call answers 503.
    pub outage: bool,
    /// Fixed delay before each vendor call is handled.
    pub latency_ms: u64,
    /// Extra random delay, uniform in `0..=latency_jitter_ms`.
    pub latency_jitter_ms: u64,
    /// Share of vendor calls answered 500 without being applied (0.0 to 1.0).
    pub error_rate: f64,
    /// More calls than this within one second are answered 429 with `Retry-After: 1`.
    pub rate_limit_per_sec: Option<u32>,
    /// Share of writes applied but answered 500: the vendor acted and we never heard (0.0
    /// to 1.0). Which calls are writes is each simulator's: TTLock's adds, deletes and
    /// changes; Salto's POST, PUT, PATCH and DELETE; Vostio's key creates, updates and
    /// deletes; Kisi's role-assignment creates, updates and deletes (not user creation, a
    /// prerequisite the adapter re-finds anyway); Brivo's creates, patches, deletes and
    /// group changes.
    pub lose_response_rate: f64,
    /// The next N PIN settings are refused as a PIN already in use: TTLock's adds (-3007),
    /// Salto's PIN settings (409), Brivo's user creations carrying a PIN.
    pub force_pin_collision_next: u32,
    /// The next write of this operation is applied but answered 500 (one shot). Each
    /// simulator names its writes; Salto's: `create_site_user`, `delete_site_user`, `set_pin`, `create_access_group`,
    /// `delete_access_group`, `add_group_user`, `add_group_lock`, `create_time_schedule`,
    /// `update_time_schedule`.
    pub lose_response_on: Option<String>,
    /// Vostio: creates, updates and deletes are refused with 422 `door_offline`.
    pub door_offline: bool,
    /// TTLock: this one of a lock's lists answers 500 while the others work (`passcodes`,
    /// `ekeys`, `cards`).
    pub fail_list: Option<String>,
}

/// Whether a draw falls within `rate` (0.0 never, 1.0 always).
pub(crate) fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::thread_rng().gen::<f64>() < rate
}

/// The fault state a simulator keeps beside its own: the switches, the current rate-limit
/// window and the calls waiting out the injected latency.
#[derive(Debug, Default)]
pub struct FaultKit {
    pub(crate) faults: SimFaults,
    rate_window: Option<(DateTime<Utc>, u32)>,
    in_flight: u64,
}

impl FaultKit {
    /// Whether this write's response is lost (`lose_response_rate`).
    pub(crate) fn lose_response(&self) -> bool {
        roll(self.faults.lose_response_rate)
    }

    /// Whether the response of this write, the operation `op`, is lost: named by
    /// `lose_response_on` (one shot, then cleared) or drawn by `lose_response_rate`.
    fn lose_response_of(&mut self, op: &str) -> bool {
        let targeted = self.faults.lose_response_on.as_deref() == Some(op);
        if targeted {
            self.faults.lose_response_on = None;
        }
        targeted || self.lose_response()
    }

    /// Whether this PIN setting is refused as a collision (`force_pin_collision_next`),
    /// counting it down.
    pub(crate) fn take_forced_pin_collision(&mut self) -> bool {
        let forced = self.faults.force_pin_collision_next > 0;
        self.faults.force_pin_collision_next =
            self.faults.force_pin_collision_next.saturating_sub(1);
        forced
    }

    /// Counts one call against the rate limit; `true` when it is over.
    fn over_rate_limit(&mut self, limit: u32, now: DateTime<Utc>) -> bool {
        let window = match self.rate_window {
            Some((start, n)) if now - start < chrono::Duration::seconds(1) => (start, n + 1),
            _ => (now, 1),
        };
        self.rate_window = Some(window);
        window.1 > limit
    }
}

/// The fault counters every simulator's counters carry, written by the kit.
pub trait CountsFaults {
    /// Calls answered with an injected 5xx/429 before being applied.
    fn rejected_by_faults_mut(&mut self) -> &mut u64;
    /// Calls applied whose response was then replaced by a 500.
    fn lost_responses_mut(&mut self) -> &mut u64;
    /// The most calls ever waiting out the injected latency at once.
    fn max_in_flight_mut(&mut self) -> &mut u64;
}

/// Declares a simulator's counters: its own fields, then the kit's `rejected_by_faults`,
/// `lost_responses` and `max_in_flight`, with [`CountsFaults`].
macro_rules! sim_counters {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident: u64, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: u64, )*
            /// Calls answered with an injected 5xx/429 before being applied.
            pub rejected_by_faults: u64,
            /// Calls applied whose response was then replaced by a 500.
            pub lost_responses: u64,
            /// The most calls that were ever waiting out the injected latency at the same
            /// time: how many requests a client had in flight at once.
            pub max_in_flight: u64,
        }

        impl $crate::sim_kit::CountsFaults for $name {
            fn rejected_by_faults_mut(&mut self) -> &mut u64 {
                &mut self.rejected_by_faults
            }
            fn lost_responses_mut(&mut self) -> &mut u64 {
                &mut self.lost_responses
            }
            fn max_in_flight_mut(&mut self) -> &mut u64 {
                &mut self.max_in_flight
            }
        }
    };
}
pub(crate) use sim_counters;

/// The accessors of a [`KitState`] whose state keeps its fault state in `kit`, its counters
/// in `counters` and its journal in `journal`.
macro_rules! kit_fields {
    ($counters:ty) => {
        type Counters = $counters;

        fn kit(&mut self) -> &mut $crate::sim_kit::FaultKit {
            &mut self.kit
        }

        fn counters(&mut self) -> &mut $counters {
            &mut self.counters
        }

        fn journal(&mut self) -> &mut $crate::ttlock::simulator::journal::DoorJournal {
            &mut self.journal
        }
    };
}

/// Declares that a simulator's state issues tokens, kept in its `tokens` field.
macro_rules! issues_tokens {
    ($state:ty) => {
        impl $crate::sim_kit::TokenState for $state {
            fn tokens(&mut self) -> &mut $crate::sim_kit::SimTokens {
                &mut self.tokens
            }
        }
    };
}
pub(crate) use issues_tokens;
pub(crate) use kit_fields;

/// Declares a vendor's simulator: the unit struct `$name`, whose `start` serves the
/// default `SimConfig` and `start_with` a given one, `SimHandle` (the kit's handle on the
/// module's `SimState`) and `RunningSimulator`. The calling module has `SimState`,
/// `SimConfig`, `SimHandle::new(SimConfig)` and its `routes`.
macro_rules! simulator {
    ($name:ident, $vendor:literal) => {
        /// Inspects and steers a running simulator from Rust. Cheap to clone.
        pub type SimHandle = $crate::sim_kit::SimHandle<SimState>;

        /// Starts simulators.
        #[derive(Debug)]
        pub struct $name;

        impl $name {
            /// Starts a simulator with the default [`SimConfig`] on `bind` (port 0 picks a
            /// free port) and returns once it listens.
            pub fn start(bind: std::net::SocketAddr) -> std::io::Result<RunningSimulator> {
                Self::start_with(bind, SimConfig::default())
            }

            /// Starts a simulator with `config`.
            pub fn start_with(
                bind: std::net::SocketAddr,
                config: SimConfig,
            ) -> std::io::Result<RunningSimulator> {
                $crate::sim_kit::start($vendor, bind, SimHandle::new(config), routes)
            }
        }

        /// A simulator serving in the background; stopped when dropped.
        pub type RunningSimulator = $crate::sim_server::Running<SimHandle>;
    };
}
pub(crate) use simulator;

/// A simulator's state as the kit sees it: where its faults, counters and journal are,
/// what its doors accept, and its vendor's answers to the injected faults.
pub trait KitState: Send + 'static {
    /// The simulator's counters (declared with `sim_counters!`).
    type Counters: CountsFaults + Copy + Serialize + Send;
    /// How its handlers refuse a call: its vendor's error answer.
    type Refusal: Into<HttpResponse>;
    /// The fault state.
    fn kit(&mut self) -> &mut FaultKit;
    /// The counters.
    fn counters(&mut self) -> &mut Self::Counters;
    /// The door journal.
    fn journal(&mut self) -> &mut DoorJournal;
    /// Every labelled credential every device accepts now, through Lockstep's eyes.
    fn door_view(&self) -> Vec<DoorObject>;
    /// The answer to a call during an outage (status 503).
    fn outage_reply() -> HttpResponse {
        HttpResponse::ServiceUnavailable().body("service unavailable")
    }
    /// The answer to a call over the rate limit (status 429; the kit adds `Retry-After`).
    fn rate_limited_reply() -> HttpResponse {
        HttpResponse::TooManyRequests().body("too many requests")
    }
    /// The answer to a call refused by the error rate (status 500).
    fn error_reply() -> HttpResponse {
        HttpResponse::InternalServerError().body("internal server error")
    }
    /// The answer replacing a write whose response is lost (status 500).
    fn lost_reply() -> HttpResponse {
        Self::error_reply()
    }
}

/// Inspects and steers a running simulator from Rust. Cheap to clone.
pub struct SimHandle<S> {
    state: Arc<Mutex<S>>,
    /// Time for token expiry, the rate-limit window and the vendor's timestamps.
    pub(crate) clock: Arc<dyn Clock>,
}

impl<S> Clone for SimHandle<S> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<S> std::fmt::Debug for SimHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle").finish_non_exhaustive()
    }
}

impl<S: KitState> SimHandle<S> {
    /// A handle on `state`.
    pub(crate) fn with_state(state: S, clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
            clock,
        }
    }

    /// Runs `f` on the state.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        // A panic inside `f` cannot leave the state half-written in a way that matters
        // to a simulator, so a poisoned lock is simply taken over.
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Runs a write on the state; while the journal is on, records what it changed at the
    /// doors.
    pub(crate) fn with_journaled<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        self.with(|s| journaled(s, f))
    }

    /// Starts the door journal (see [`crate::ttlock::simulator::journal`]), keeping the
    /// last `capacity` changes.
    pub fn enable_journal(&self, capacity: usize) {
        self.with(|s| s.journal().enable(capacity));
    }

    /// The journal's changes from `seq` on (1 is the first), oldest first.
    pub fn journal_since(&self, seq: u64) -> Vec<DoorChange> {
        self.with(|s| s.journal().since(seq))
    }

    /// Every labelled credential every device accepts now.
    pub fn door_view(&self) -> Vec<DoorObject> {
        self.with(|s| s.door_view())
    }

    /// All counters.
    pub fn counters(&self) -> S::Counters {
        self.with(|s| *s.counters())
    }

    /// The current faults.
    pub fn faults(&self) -> SimFaults {
        self.with(|s| s.kit().faults.clone())
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: SimFaults) {
        self.update_faults(|f| *f = faults);
    }

    /// Changes some faults.
    pub fn update_faults(&self, f: impl FnOnce(&mut SimFaults)) {
        self.with(|s| {
            let kit = s.kit();
            f(&mut kit.faults);
            kit.rate_window = None;
        });
    }

    /// Applies latency, outage, rate limit and error rate to a vendor call: `Some` is the
    /// vendor's answer to send instead of handling the call.
    pub(crate) async fn gate(&self) -> Option<HttpResponse> {
        let faults = self.faults();
        let jitter = if faults.latency_jitter_ms > 0 {
            rand::thread_rng().gen_range(0..=faults.latency_jitter_ms)
        } else {
            0
        };
        let delay = faults.latency_ms + jitter;
        if delay > 0 {
            self.with(|s| {
                s.kit().in_flight += 1;
                let now = s.kit().in_flight;
                let most = s.counters().max_in_flight_mut();
                *most = (*most).max(now);
            });
            actix_web::rt::time::sleep(Duration::from_millis(delay)).await;
            self.with(|s| s.kit().in_flight -= 1);
        }
        let now = self.clock.now();
        self.with(|s| {
            let kit = s.kit();
            let refuse = if kit.faults.outage {
                Some(S::outage_reply())
            } else if let Some(limit) = kit.faults.rate_limit_per_sec {
                kit.over_rate_limit(limit, now).then(|| {
                    let mut r = S::rate_limited_reply();
                    r.headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                    r
                })
            } else {
                None
            };
            let refuse = refuse.or_else(|| roll(kit.faults.error_rate).then(S::error_reply));
            if refuse.is_some() {
                *s.counters().rejected_by_faults_mut() += 1;
            }
            refuse
        })
    }

    /// Runs a read of the vendor's API: the faults first ([`Self::gate`]), then `f` on the
    /// state at the clock's time, which checks the caller itself and answers or refuses.
    pub(crate) async fn read(
        &self,
        f: impl FnOnce(&mut S, DateTime<Utc>) -> Result<HttpResponse, S::Refusal>,
    ) -> HttpResponse {
        if let Some(r) = self.gate().await {
            return r;
        }
        let now = self.clock.now();
        self.with(|s| f(s, now)).unwrap_or_else(Into::into)
    }

    /// Runs a write of the vendor's API, the operation `op`: as [`Self::read`], recorded in
    /// the door journal while it is on; a success's response may then be lost (applied,
    /// answered the vendor's 500): `lose_response_on` naming `op`, or `lose_response_rate`.
    pub(crate) async fn write(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut S, DateTime<Utc>) -> Result<HttpResponse, S::Refusal>,
    ) -> HttpResponse {
        if let Some(r) = self.gate().await {
            return r;
        }
        let now = self.clock.now();
        let done = self.with_journaled(|s| f(s, now).map(|ok| (ok, s.kit().lose_response_of(op))));
        match done {
            Ok((ok, lost)) => self.lost_or(lost, ok),
            Err(refusal) => refusal.into(),
        }
    }

    /// Runs a call of the vendor's API: a write when `write` names its operation
    /// ([`Self::write`]), else a read ([`Self::read`]).
    pub(crate) async fn call(
        &self,
        write: Option<&'static str>,
        f: impl FnOnce(&mut S, DateTime<Utc>) -> Result<HttpResponse, S::Refusal>,
    ) -> HttpResponse {
        match write {
            Some(op) => self.write(op, f).await,
            None => self.read(f).await,
        }
    }

    /// Runs a read of one of a lock's lists, `name`: as [`Self::read`], answered the
    /// vendor's 500 after the faults' gate when `fail_list` names it.
    pub(crate) async fn read_list(
        &self,
        name: &str,
        f: impl FnOnce(&mut S, DateTime<Utc>) -> Result<HttpResponse, S::Refusal>,
    ) -> HttpResponse {
        self.read(|s, now| {
            if s.kit().faults.fail_list.as_deref() == Some(name) {
                *s.counters().rejected_by_faults_mut() += 1;
                return Ok(S::error_reply());
            }
            f(s, now)
        })
        .await
    }

    /// `ok`, or the vendor's 500 when the write's response is `lost` (counted).
    pub(crate) fn lost_or(&self, lost: bool, ok: HttpResponse) -> HttpResponse {
        if lost {
            self.with(|s| *s.counters().lost_responses_mut() += 1);
            S::lost_reply()
        } else {
            ok
        }
    }
}

/// One call of a simulator's vendor API as its handler sees it: the simulator, the request
/// (its path parameters and query) and its body.
pub(crate) struct SimCall<S> {
    /// The simulator.
    pub(crate) h: web::Data<SimHandle<S>>,
    /// The request.
    pub(crate) req: HttpRequest,
    /// Its body (empty for a GET).
    pub(crate) body: web::Bytes,
}

impl<S> SimCall<S> {
    /// The path parameter `name` of the route (empty when the route has none).
    pub(crate) fn param(&self, name: &str) -> &str {
        self.req.match_info().query(name)
    }
}

impl<S: KitState> FromRequest for SimCall<S> {
    type Error = actix_web::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let h = web::Data::<SimHandle<S>>::extract(req);
        let body = web::Bytes::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            Ok(Self {
                h: h.await?,
                req,
                body: body.await?,
            })
        })
    }
}

/// How a vendor signs its webhook deliveries.
#[derive(Clone, Copy, Debug)]
pub struct Signer {
    /// The header carrying the timestamp (epoch seconds) that is signed, when the vendor
    /// sends it apart.
    pub timestamp_header: Option<&'static str>,
    /// The header carrying the signature.
    pub signature_header: &'static str,
    /// The signature of a body at a timestamp with a secret.
    pub sign: fn(&str, i64, &[u8]) -> String,
}

/// A simulator that posts its vendor's signed webhook for door attempts.
pub trait WebhookState: KitState {
    /// How its vendor signs.
    const SIGNER: Signer;
    /// Where it posts, and what it posted last.
    fn webhook(&mut self) -> &mut SimWebhook;
}

/// Declares that a simulator's state posts webhooks, kept in its `webhook` field and signed
/// by `$signer`.
macro_rules! signed_webhooks {
    ($state:ty, $signer:expr) => {
        impl $crate::sim_kit::WebhookState for $state {
            const SIGNER: $crate::sim_kit::Signer = $signer;

            fn webhook(&mut self) -> &mut $crate::sim_kit::SimWebhook {
                &mut self.webhook
            }
        }
    };
}
pub(crate) use signed_webhooks;

impl<S: WebhookState> SimHandle<S> {
    /// Where deliveries are posted and the secret they are signed with (`None`: nowhere).
    pub fn set_webhook(&self, target: Option<(String, String)>) {
        self.with(|s| s.webhook().target = target);
    }

    /// Sends the last delivery again, as a vendor retries; the receiver's status.
    pub async fn redeliver_last(&self) -> Option<u16> {
        let last = self.with(|s| s.webhook().last.clone())?;
        last.send().await
    }
}

impl<S: WebhookState> SimHandle<S> {
    /// A door attempt: `f` judges it on the state at the clock's time and gives its outcome
    /// and the vendor's event (`None`: no such door); the event is posted signed to the
    /// webhook (awaited, when one is set) and the outcome returned.
    pub(crate) async fn judge_and_post<T, E: Serialize>(
        &self,
        f: impl FnOnce(&mut S, DateTime<Utc>) -> Option<(T, E)>,
    ) -> Option<T> {
        let now = self.clock.now();
        let (outcome, delivery) = self.with(|s| {
            let (outcome, event) = f(s, now)?;
            Some((outcome, webhook_delivery(s, &event, now)))
        })?;
        if let Some(d) = delivery {
            d.send().await;
        }
        Some(outcome)
    }
}

/// The answer to a simulated door attempt (`POST /_sim/.../attempts`): `{"opened"}`, or 404
/// with `unknown` when there is no such door (or user).
pub(crate) fn attempt_reply(opened: Option<bool>, unknown: &'static str) -> HttpResponse {
    match opened {
        Some(opened) => HttpResponse::Ok().json(serde_json::json!({ "opened": opened })),
        None => HttpResponse::NotFound().body(unknown),
    }
}

/// The signed delivery of `event` at `now` to the simulator's webhook, recorded as its
/// last; `None` when it posts nowhere. Sent once the state is released.
fn webhook_delivery<S: WebhookState>(
    s: &mut S,
    event: &impl Serialize,
    now: DateTime<Utc>,
) -> Option<SimDelivery> {
    let delivery = s.webhook().target.as_ref().and_then(|(url, secret)| {
        let body = serde_json::to_vec(event).ok()?;
        let ts = now.timestamp();
        let signer = S::SIGNER;
        let mut headers = vec![("content-type", "application/json".to_owned())];
        headers.extend(signer.timestamp_header.map(|h| (h, ts.to_string())));
        headers.push((signer.signature_header, (signer.sign)(secret, ts, &body)));
        Some(SimDelivery {
            url: url.clone(),
            headers,
            body,
        })
    });
    s.webhook().last.clone_from(&delivery);
    delivery
}

/// The webhook's routes: `POST /_sim/webhook` `{"url", "secret"}` sets where deliveries go;
/// `POST /_sim/webhook/redeliver` sends the last one again, answered `{"status"}` with the
/// receiver's status.
pub(crate) fn webhook_routes<S: WebhookState>(cfg: &mut web::ServiceConfig) {
    cfg.route("/_sim/webhook", web::post().to(post_webhook::<S>))
        .route(
            "/_sim/webhook/redeliver",
            web::post().to(post_redeliver::<S>),
        );
}

#[derive(Deserialize)]
struct WebhookBody {
    url: Option<String>,
    secret: Option<String>,
}

async fn post_webhook<S: WebhookState>(
    h: web::Data<SimHandle<S>>,
    body: web::Json<WebhookBody>,
) -> HttpResponse {
    let b = body.into_inner();
    h.set_webhook(b.url.zip(b.secret));
    HttpResponse::NoContent().finish()
}

async fn post_redeliver<S: WebhookState>(h: web::Data<SimHandle<S>>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": h.redeliver_last().await }))
}

/// The access tokens a simulator issued (test data, never logged).
#[derive(Debug, Default)]
pub struct SimTokens(HashMap<String, IssuedToken>);

#[derive(Debug)]
struct IssuedToken {
    client_id: String,
    expires_at: DateTime<Utc>,
    revoked: bool,
}

/// What a presented token is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TokenCheck<'a> {
    /// Missing, or never issued.
    Unknown,
    /// Issued, and expired (or revoked).
    Expired,
    /// Issued to this client, and valid.
    Valid {
        /// The client it was issued to.
        client_id: &'a str,
    },
}

impl SimTokens {
    /// Issues a new token of `bytes` random bytes in hex to `client_id`, valid until
    /// `expires_at`.
    pub(crate) fn issue(
        &mut self,
        bytes: usize,
        client_id: &str,
        expires_at: DateTime<Utc>,
    ) -> String {
        let token = random_hex(bytes);
        self.0.insert(
            token.clone(),
            IssuedToken {
                client_id: client_id.to_owned(),
                expires_at,
                revoked: false,
            },
        );
        token
    }

    /// What `token` is at `now`.
    pub(crate) fn check(&self, token: Option<&str>, now: DateTime<Utc>) -> TokenCheck<'_> {
        match token.and_then(|t| self.0.get(t)) {
            None => TokenCheck::Unknown,
            Some(t) if t.revoked || now >= t.expires_at => TokenCheck::Expired,
            Some(t) => TokenCheck::Valid {
                client_id: &t.client_id,
            },
        }
    }
}

/// A simulator that issues access tokens.
pub trait TokenState: KitState {
    /// The tokens it issued.
    fn tokens(&mut self) -> &mut SimTokens;
}

impl<S: TokenState> SimHandle<S> {
    /// Makes every token issued so far answer as expired from now on, as after its
    /// lifetime (TTLock's errcode 10004, the others' 401).
    pub fn expire_all_tokens(&self) {
        self.with(|s| s.tokens().0.values_mut().for_each(|t| t.revoked = true));
    }
}

/// The tokens' route: `POST /_sim/tokens/expire` (every issued token expires).
pub(crate) fn token_routes<S: TokenState>(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/_sim/tokens/expire",
        web::post().to(post_expire_tokens::<S>),
    );
}

async fn post_expire_tokens<S: TokenState>(h: web::Data<SimHandle<S>>) -> HttpResponse {
    h.expire_all_tokens();
    HttpResponse::NoContent().finish()
}

/// `bytes` random bytes in lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.gen::<u8>()))
        .collect()
}

/// A token endpoint's OAuth error answer (RFC 6749 §5.2): `status` with
/// `{error, error_description}`.
pub(crate) fn oauth_error(
    status: StatusCode,
    error: &str,
    description: Option<&str>,
) -> HttpResponse {
    HttpResponse::build(status).json(crate::http_kit::OAuthError {
        error: error.to_owned(),
        error_description: description.map(str::to_owned),
    })
}

/// The client id and secret of an `Authorization: Basic` header (RFC 7617; RFC 6749
/// §2.3.1 for an OAuth client), when it carries them.
pub(crate) fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let encoded = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let pair = String::from_utf8(decode_base64(encoded)?).ok()?;
    let (id, secret) = pair.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Standard base64 (with or without padding), for HTTP Basic credentials.
pub(crate) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes: Vec<u8> = s.trim().bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let [_, a, b, c] = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend([a, b, c]),
            3 => out.extend([a, b]),
            2 => out.push(a),
            _ => return None,
        }
    }
    Some(out)
}

/// Runs `f` on `s`; while the journal is on, records what it changed at the doors.
pub(crate) fn journaled<S: KitState, R>(s: &mut S, f: impl FnOnce(&mut S) -> R) -> R {
    if !s.journal().is_enabled() {
        return f(s);
    }
    let before = s.door_view();
    let out = f(s);
    let after = s.door_view();
    s.journal().record(before, after);
    out
}

/// Serves a vendor's simulator (its `routes` and the kit's) on `bind` (port 0 picks a free
/// port) and returns once it listens.
pub(crate) fn start<S: KitState>(
    vendor: &'static str,
    bind: SocketAddr,
    handle: SimHandle<S>,
    routes: fn(&mut web::ServiceConfig),
) -> io::Result<Running<SimHandle<S>>> {
    let running = crate::sim_server::serve(&format!("{vendor}-simulator"), bind, handle, routes)?;
    info!(vendor, addr = %running.addr(), "simulator listening");
    Ok(running)
}

/// The kit's routes: `GET`/`POST /_sim/faults` and `GET /_sim/counters`.
pub(crate) fn routes<S: KitState>(cfg: &mut web::ServiceConfig) {
    cfg.route("/_sim/faults", web::get().to(get_faults::<S>))
        .route("/_sim/faults", web::post().to(post_faults::<S>))
        .route("/_sim/counters", web::get().to(get_counters::<S>));
}

async fn get_faults<S: KitState>(h: web::Data<SimHandle<S>>) -> HttpResponse {
    HttpResponse::Ok().json(h.faults())
}

async fn post_faults<S: KitState>(
    h: web::Data<SimHandle<S>>,
    body: web::Json<serde_json::Value>,
) -> HttpResponse {
    let serde_json::Value::Object(patch) = body.into_inner() else {
        return HttpResponse::BadRequest().body("expected a json object");
    };
    let mut current = match serde_json::to_value(h.faults()) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    current.extend(patch);
    match serde_json::from_value::<SimFaults>(serde_json::Value::Object(current)) {
        Ok(faults) => {
            h.set_faults(faults.clone());
            HttpResponse::Ok().json(faults)
        }
        Err(e) => HttpResponse::BadRequest().body(format!("invalid faults: {e}")),
    }
}

async fn get_counters<S: KitState>(h: web::Data<SimHandle<S>>) -> HttpResponse {
    HttpResponse::Ok().json(h.counters())
}

/// Where a simulator posts its webhooks, and what it posted last (vendors retry a delivery
/// they think failed, so a simulator can send its last one again).
#[derive(Default)]
pub struct SimWebhook {
    /// The URL and the secret deliveries are signed with (`None`: nowhere). The
    /// simulator's secret is test data; it is never logged.
    pub target: Option<(String, String)>,
    /// The last delivery made.
    pub last: Option<SimDelivery>,
    /// The next event number.
    pub next_event: u64,
}

impl SimWebhook {
    /// A new event number (1, 2, ...).
    pub fn next_id(&mut self) -> u64 {
        self.next_event += 1;
        self.next_event
    }
}

/// One webhook delivery of a simulator: where, which headers, what body.
#[derive(Clone)]
pub struct SimDelivery {
    /// The receiver.
    pub url: String,
    /// Headers (content type, timestamp, signature).
    pub headers: Vec<(&'static str, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl SimDelivery {
    /// Posts it; the receiver's status, `None` when it could not be reached.
    pub async fn send(&self) -> Option<u16> {
        let mut rb = reqwest::Client::new().post(&self.url);
        for (k, v) in &self.headers {
            rb = rb.header(*k, v);
        }
        match rb.body(self.body.clone()).send().await {
            Ok(r) => Some(r.status().as_u16()),
            Err(_) => {
                tracing::warn!("simulator webhook delivery failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_basic_credentials() {
        // "Aladdin:open sesame", RFC 7617's example.
        assert_eq!(
            decode_base64("QWxhZGRpbjpvcGVuIHNlc2FtZQ==").as_deref(),
            Some(&b"Aladdin:open sesame"[..])
        );
        assert_eq!(decode_base64("YQ").as_deref(), Some(&b"a"[..]));
        assert_eq!(decode_base64("!!!!"), None);
    }

    #[test]
    fn base64_decodes_a_space_in_a_secret_and_refuses_a_short_chunk() {
        // "user:pa ss" in standard base64.
        assert_eq!(
            decode_base64("dXNlcjpwYSBzcw==").as_deref(),
            Some(&b"user:pa ss"[..])
        );
        assert!(decode_base64("!!!").is_none());
    }
}
