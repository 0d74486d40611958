//! Lockstep's configuration: a TOML file (optional) overlaid by `LOCKSTEP__`-prefixed
//! environment variables, parsed into a raw serde struct with defaults and then validated
//! into [`Settings`] (ripgrep's two steps). A bad value names its key and why.
//!
//! Architecture Invariant: this crate knows nothing of the runtime; it depends on no other
//! Lockstep crate, and it never reads a secret's value (secrets are references resolved by
//! the secret store at start-up).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML does not parse or has the wrong shape.
    #[error("config is invalid: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("config key `{key}` is invalid: {reason}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// Why, and what to do.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Where a secret's value comes from. The value itself is never stored in the config.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    /// An environment variable's name.
    Env(String),
    /// A file's path (its content, trimmed).
    File(PathBuf),
    /// Inline value: development and the demo only.
    Value(String),
}

/// Which deployment.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// SQLite, in-process bus, built-in simulators, demo tenant.
    #[default]
    Embedded,
    /// Postgres and RabbitMQ.
    Production,
}

/// Raw config as read.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawSettings {
    /// Mode.
    pub mode: Mode,
    /// Node name (partition ownership, logs).
    pub node_id: Option<String>,
    /// HTTP.
    pub http: RawHttp,
    /// Storage.
    pub database: RawDatabase,
    /// Encryption at rest.
    pub encryption: RawEncryption,
    /// RabbitMQ (production).
    pub amqp: RawAmqp,
    /// Saga tunables.
    pub saga: RawSaga,
    /// Demo tenant and simulator (embedded).
    pub demo: RawDemo,
    /// Properties, adapters and devices to register at start-up.
    pub properties: Vec<RawProperty>,
    /// Vendor circuit breakers.
    pub breaker: RawBreaker,
    /// The clock (chaos runs play hours in minutes).
    pub clock: RawClock,
    /// Drift reconciliation.
    pub drift: RawDrift,
    /// Vendor secret rotation checks.
    pub secrets: RawSecrets,
    /// Bearer JWTs of the platform's identity provider.
    pub auth: Option<RawAuth>,
    /// Offline-issuance certificates.
    pub offline: RawOffline,
    /// The desktop relay front-desk agents connect to (issue 12).
    pub relay: RawRelay,
    /// How long rows live in the hot store (spec `004` §8).
    pub retention: RawRetention,
}

/// Retention (spec `004` §8): how often the job runs and how many days each table's rows
/// live. Unset keys are the spec's values.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawRetention {
    /// Seconds between runs (0: never). Default 3600.
    pub interval_s: Option<u64>,
    /// `key_credential_attempts`, from the attempt. Default 90.
    pub key_credential_attempts_days: Option<u32>,
    /// `lock_audit`, sealed stretches only. Default 90.
    pub lock_audit_days: Option<u32>,
    /// `lock_devices`, from decommissioning. Default 30.
    pub lock_devices_decommissioned_days: Option<u32>,
    /// `webhook_inbox`, from processing. Default 30.
    pub webhook_inbox_processed_days: Option<u32>,
    /// `outbox`, from publishing. Default 7.
    pub outbox_published_days: Option<u32>,
    /// `inbox`. Default 30.
    pub inbox_days: Option<u32>,
    /// `offline_issuance`, from revocation. Default 90.
    pub offline_issuance_revoked_days: Option<u32>,
}

/// Validated retention: the interval and each table's days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Between runs (`None`: off).
    pub interval: Option<Duration>,
    /// `key_credential_attempts`.
    pub key_credential_attempts_days: u32,
    /// `lock_audit`.
    pub lock_audit_days: u32,
    /// `lock_devices` decommissioned.
    pub lock_devices_decommissioned_days: u32,
    /// `webhook_inbox` processed.
    pub webhook_inbox_processed_days: u32,
    /// `outbox` published.
    pub outbox_published_days: u32,
    /// `inbox`.
    pub inbox_days: u32,
    /// `offline_issuance` revoked.
    pub offline_issuance_revoked_days: u32,
}

fn retention_settings(r: &RawRetention) -> Result<RetentionSettings, ConfigError> {
    let days = |key: &str, v: Option<u32>, default: u32| match v.unwrap_or(default) {
        0 => Err(invalid(
            &format!("retention.{key}"),
            "must be at least 1 (rows are kept at least a day)",
        )),
        d => Ok(d),
    };
    Ok(RetentionSettings {
        interval: match r.interval_s.unwrap_or(3_600) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        },
        key_credential_attempts_days: days(
            "key_credential_attempts_days",
            r.key_credential_attempts_days,
            90,
        )?,
        lock_audit_days: days("lock_audit_days", r.lock_audit_days, 90)?,
        lock_devices_decommissioned_days: days(
            "lock_devices_decommissioned_days",
            r.lock_devices_decommissioned_days,
            30,
        )?,
        webhook_inbox_processed_days: days(
            "webhook_inbox_processed_days",
            r.webhook_inbox_processed_days,
            30,
        )?,
        outbox_published_days: days("outbox_published_days", r.outbox_published_days, 7)?,
        inbox_days: days("inbox_days", r.inbox_days, 30)?,
        offline_issuance_revoked_days: days(
            "offline_issuance_revoked_days",
            r.offline_issuance_revoked_days,
            90,
        )?,
    })
}

/// The desktop relay (DESIGN §8): the WebSocket server front-desk agents connect to. It
/// runs when `enabled = true` or `bind` is set, and in the embedded demo unless
/// `enabled = false`; otherwise it is off, and a `generic-wiegand` adapter refuses to
/// start. Timeouts left unset keep the relay's defaults (spec `003` §6: 8 s ack).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawRelay {
    /// Run the relay (default: only in the embedded demo, or when `bind` is set).
    pub enabled: Option<bool>,
    /// Listen address (default `127.0.0.1:0`: any free loopback port, printed at start; in
    /// the embedded demo 10 ports above `[demo] simulator_bind`, i.e. 18090).
    /// The relay speaks plain WebSocket: put a TLS-terminating ingress in front of it.
    pub bind: Option<String>,
    /// The URL desktops are given (`relayWsBaseUrl`; default `ws://<bind>/relay/v1`).
    pub public_url: Option<String>,
    /// The name desktops sign for (default `lockstep-relay`).
    pub audience: Option<String>,
    /// A job not acknowledged within this goes to another desktop, ms (default 8000).
    pub ack_timeout_ms: Option<u64>,
    /// An acknowledged job must have its result within this, ms (default 120000).
    pub result_timeout_ms: Option<u64>,
    /// Heartbeat interval, ms (default 5000).
    pub heartbeat_interval_ms: Option<u64>,
    /// A silent desktop is disconnected after this, ms (default 15000).
    pub idle_timeout_ms: Option<u64>,
    /// A connection must authenticate within this, ms (default 10000).
    pub handshake_timeout_ms: Option<u64>,
    /// A job whose desktop dropped after acknowledging waits this long for it, ms
    /// (default 3000).
    pub reconnect_grace_ms: Option<u64>,
    /// A job some desktop took (and may hold the card of) waits this long for that
    /// desktop to return before another desktop encodes it, ms (default 60000).
    pub holder_grace_ms: Option<u64>,
    /// Connections the relay gets to close at shutdown, ms (default 3000).
    pub shutdown_grace_ms: Option<u64>,
    /// Connections allowed between accept and authentication (default 256).
    pub max_unauthenticated: Option<usize>,
    /// Jobs one desktop may hold unanswered (default 16).
    pub max_jobs_per_desktop: Option<usize>,
}

/// Validated relay settings; `None` durations keep the relay's own defaults.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Listen address.
    pub bind: SocketAddr,
    /// The URL desktops are given, when configured.
    pub public_url: Option<String>,
    /// Audience.
    pub audience: Option<String>,
    /// Ack timeout.
    pub ack_timeout: Option<Duration>,
    /// Result timeout.
    pub result_timeout: Option<Duration>,
    /// Heartbeat interval.
    pub heartbeat_interval: Option<Duration>,
    /// Idle timeout.
    pub idle_timeout: Option<Duration>,
    /// Handshake timeout.
    pub handshake_timeout: Option<Duration>,
    /// Reconnect grace.
    pub reconnect_grace: Option<Duration>,
    /// Holder grace (the desk dispatch's).
    pub holder_grace: Option<Duration>,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Unauthenticated connection cap.
    pub max_unauthenticated: Option<usize>,
    /// Jobs per desktop.
    pub max_jobs_per_desktop: Option<usize>,
}

/// Offline-issuance certificates (spec `003` §5).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawOffline {
    /// The Ed25519 seed (64 hex digits) certificates are signed with; unset in embedded
    /// mode: generated into the data dir; unset in production: certificates are refused.
    pub signing_key: Option<SecretSource>,
    /// Its key id, named in every certificate (default `offline-v1`).
    pub key_id: Option<String>,
}

/// The identity provider whose JWTs the API accepts (issue 6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Verification keys by `kid`.
    pub keys: Vec<RawJwtKey>,
}

/// One JWT verification key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtKey {
    /// `kid`.
    pub kid: String,
    /// `EdDSA` or `HS256`.
    pub alg: String,
    /// `EdDSA`: the Ed25519 public key, 64 hex digits.
    #[serde(default)]
    pub public_key: Option<String>,
    /// `HS256`: the shared secret.
    #[serde(default)]
    pub secret: Option<SecretSource>,
}

/// Vendor secret rotation checks (US-MEL-0081).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawSecrets {
    /// How often every adapter's secrets are re-read and fingerprinted, ms (0: only at
    /// start). Default 60 s.
    pub check_interval_ms: Option<u64>,
}

/// Drift reconciliation (DESIGN §6).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawDrift {
    /// How often each owned property's devices are compared with the vendor, ms (0: never).
    pub interval_ms: Option<u64>,
}

/// Circuit breaker tunables (spec `002`: trip on > 25 % errors or p99 > 5 s).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawBreaker {
    /// Sliding window, ms.
    pub window_ms: Option<u64>,
    /// Calls in the window before the breaker may trip.
    pub min_calls: Option<u32>,
    /// Error share that trips it, 0..1: the window's rate must be above it with 99.9 %
    /// confidence (the lower bound of its Wilson interval), not only on its raw share.
    pub error_rate: Option<f64>,
    /// p99 latency that trips it, ms.
    pub p99_ms: Option<u64>,
    /// How long it stays open before probing, ms.
    pub open_ms: Option<u64>,
    /// The longest an open breaker waits between probes, ms: each failed probe doubles
    /// the wait from `open_ms` up to this (default 300000).
    pub open_max_ms: Option<u64>,
    /// How often a vendor account held for an account-level error (rejected credentials,
    /// suspended account, exhausted quota) is tried again, real-time ms (default 30000).
    pub account_probe_ms: Option<u64>,
    /// Concurrent probes while half-open.
    pub half_open_probes: Option<u32>,
}

/// Clock settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawClock {
    /// Business time runs this many times faster than the wall clock (chaos tests only;
    /// 1 in production).
    pub scale: Option<f64>,
}

/// HTTP settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawHttp {
    /// Listen address.
    pub bind: Option<String>,
    /// Bearer token of trusted platform services (intake in embedded mode, reads).
    pub service_token: Option<SecretSource>,
    /// How long a client has to send a request's head, and then (from there) its whole
    /// body, in milliseconds (default 10000): a request that stalls is answered 408 and
    /// its connection closed, so it cannot hold a worker.
    pub read_timeout_ms: Option<u64>,
}

/// Storage settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawDatabase {
    /// SQLite file (embedded).
    pub sqlite_path: Option<PathBuf>,
    /// Service role URL (production; runs under RLS).
    pub url: Option<SecretSource>,
    /// Worker role URL (production; the narrow cross-tenant path).
    pub worker_url: Option<SecretSource>,
    /// Owner role URL (migrations).
    pub owner_url: Option<SecretSource>,
    /// Pool size of the service role.
    pub max_connections: Option<u32>,
    /// Run migrations at start-up.
    pub migrate_on_start: Option<bool>,
}

/// Encryption settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawEncryption {
    /// Key version label.
    pub key_version: Option<String>,
    /// 64 hex digits.
    pub key: Option<SecretSource>,
    /// Keys of earlier versions, kept to read what they encrypted until the running node
    /// has re-encrypted it (key rotation).
    pub previous_keys: Option<Vec<RawPreviousKey>>,
    /// The version whose key keys the blind indexes (the first key's; required once there
    /// are previous keys, so lookups survive rotations).
    pub index_key_version: Option<String>,
}

/// An earlier encryption key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreviousKey {
    /// Its version label.
    pub version: String,
    /// 64 hex digits.
    pub key: SecretSource,
}

/// RabbitMQ settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawAmqp {
    /// Broker URL.
    pub url: Option<SecretSource>,
    /// Topic exchange of the platform.
    pub exchange: Option<String>,
    /// Prefix of Lockstep's own queues and exchanges.
    pub prefix: Option<String>,
    /// Number of partition queues.
    pub partitions: Option<u32>,
    /// This node's index (home partitions).
    pub node_index: Option<u32>,
    /// Number of nodes (home partitions).
    pub node_count: Option<u32>,
    /// Tick interval, ms.
    pub tick_interval_ms: Option<u64>,
    /// Delay before subscribing to non-home partitions as standby, ms.
    pub standby_delay_ms: Option<u64>,
    /// Deliveries before a message is dead-lettered.
    pub delivery_limit: Option<u32>,
    /// How often an event the broker returned as unroutable (nothing bound to its subject
    /// yet) is tried again, ms: one probe per subject, and on success the subject's whole
    /// kept backlog goes out.
    pub unroutable_probe_ms: Option<u64>,
    /// Who may publish what (DESIGN §4): a subject prefix (`melmastoon.reservation.`) to
    /// the broker user of the service that owns it. When set, a consumed message is
    /// accepted only if its AMQP `user_id` (validated by RabbitMQ) is the owner of the
    /// longest matching prefix; a subject no prefix matches is refused.
    pub publishers: Option<std::collections::BTreeMap<String, String>>,
}

/// Saga tunables.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawSaga {
    /// Issue attempts before failing.
    pub max_issue_attempts: Option<i32>,
    /// First retry delay, ms.
    pub retry_base_ms: Option<u64>,
    /// Longest retry delay, ms.
    pub retry_cap_ms: Option<u64>,
    /// Vendor call timeout, ms.
    pub vendor_call_timeout_ms: Option<u64>,
    /// Idle time before a credential actor passivates, ms.
    pub passivate_after_ms: Option<u64>,
    /// Outage fallback (DESIGN §7): how long a guest's issue may wait on its vendor before
    /// the saga walks the KeyKindPolicy fallback chain to another adapter, s (0 = never;
    /// an open breaker or held account falls back at once).
    pub outage_fallback_after_s: Option<u64>,
}

/// Demo settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawDemo {
    /// Seed the demo tenant and run the built-in TTLock simulator.
    pub enabled: Option<bool>,
    /// The built-in TTLock simulator's listen address (default `127.0.0.1:18080`); the
    /// Salto, Vostio, Kisi and Brivo simulators take the next four ports and the demo's
    /// relay the tenth above it. Port 0: any free port for each.
    pub simulator_bind: Option<String>,
}

/// A property with its adapters and devices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProperty {
    /// Tenant UUID.
    pub tenant_id: String,
    /// Property id.
    pub property_id: String,
    /// Adapters.
    #[serde(default)]
    pub adapters: Vec<RawAdapter>,
    /// Devices.
    #[serde(default)]
    pub devices: Vec<RawDevice>,
    /// The property's KeyKindPolicy (spec `003` §4); defaults when absent.
    #[serde(default)]
    pub policy: Option<RawPolicy>,
    /// The property's door anomaly rules (US-MEL-0079); each rule's defaults when absent.
    #[serde(default)]
    pub anomalies: Option<RawAnomalies>,
}

/// Door anomaly rules of a property, `[properties.anomalies]` (validated by the domain:
/// ranges, and only the keys a rule takes). A rule not named keeps its defaults.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RawAnomalies {
    /// The door opened for a revoked, suspended, expired or not-yet-valid key
    /// (`enabled`, `grace_secs`; default on, 60).
    pub invalid_credential_entry: RawAnomalyRule,
    /// A key used at a device serving none of its rooms (`enabled`, `include_denied`;
    /// default on, granted attempts only).
    pub wrong_room: RawAnomalyRule,
    /// A staff master tried outside its shift (`enabled`, `grace_secs`; default on, 300).
    pub master_outside_shift: RawAnomalyRule,
    /// Denials at one device (`enabled`, `threshold`, `window_secs`; default on, 5 in 300).
    pub denied_burst: RawAnomalyRule,
    /// One key at two devices sharing no room (`enabled`, `window_secs`; default on, 5).
    pub impossible_travel: RawAnomalyRule,
}

/// One anomaly rule's settings (each rule takes some of them).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RawAnomalyRule {
    /// Whether the rule runs (default true).
    pub enabled: Option<bool>,
    /// Allowance for lock clocks, seconds.
    pub grace_secs: Option<i64>,
    /// Whether denied attempts count too.
    pub include_denied: Option<bool>,
    /// Denials that make a burst.
    pub threshold: Option<i64>,
    /// The rule's window, seconds.
    pub window_secs: Option<i64>,
}

/// A property's KeyKindPolicy (validated by the domain, K-1 and K-2).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RawPolicy {
    /// Kinds tried first, in order.
    pub preferred_order: Option<Vec<String>>,
    /// Kinds tried after a failure of the preferred ones.
    pub fallback_chain: Option<Vec<String>>,
    /// Cap on extending validUntil, hours (K-2: ≤ 720).
    pub max_valid_until_extension_hours: Option<i32>,
    /// Kinds that need an ID-document check first.
    pub id_verify_required_for: Option<Vec<String>>,
    /// Hours after `reservation.no_show` before the credential is suspended.
    pub no_show_suspend_after_hours: Option<i32>,
    /// Kinds a desktop may mint offline.
    pub allow_offline_issuance_kinds: Option<Vec<String>>,
}

/// A vendor adapter. Which fields a vendor needs:
/// - `ttlock`: `api_base_url`, `client_id`, `client_secret`, `username`, `password`;
///   with the relay running, IC cards (`rfid_card`) are read at the front desk;
/// - `generic-wiegand`: nothing (cards are encoded at the front desk through the relay,
///   which must run); optional `desktop_ack_timeout_ms`;
/// - `salto`: `api_base_url`, `auth_base_url` (identity server), `site_id`, `client_id`,
///   `client_secret`, `username`, `password`;
/// - `assa-abloy` (Vostio): `api_base_url`, `auth_base_url` (OAuth token URL),
///   `site_id` (environment ref), `client_id`, `client_secret`;
/// - `kisi`: `api_base_url`, `api_key`;
/// - `brivo`: `api_base_url`, `auth_base_url`, `api_key`, `client_id`, `client_secret`,
///   `username`, `password`, `access_schedule_id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdapter {
    /// `vad_…` id.
    pub id: String,
    /// Vendor code (`ttlock`, `salto`, `assa-abloy`, `kisi`, `brivo`, `generic-wiegand`).
    pub vendor: String,
    /// `sandbox` or `production`.
    #[serde(default = "sandbox")]
    pub environment: String,
    /// API base URL (required for every vendor but `generic-wiegand`, where it is the
    /// relay URL desktops are given, `relayWsBaseUrl`; default `[relay] public_url`).
    #[serde(default)]
    pub api_base_url: String,
    /// Identity / OAuth server URL, where the vendor has one apart.
    #[serde(default)]
    pub auth_base_url: Option<String>,
    /// OAuth client id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// OAuth client secret.
    #[serde(default)]
    pub client_secret: Option<SecretSource>,
    /// Account user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Account password.
    #[serde(default)]
    pub password: Option<SecretSource>,
    /// API key.
    #[serde(default)]
    pub api_key: Option<SecretSource>,
    /// The secret the vendor signs its webhooks with (Kisi, Salto, Vostio; Brivo: the event
    /// subscription's secret word); unset: signed webhooks of this adapter are refused.
    #[serde(default)]
    pub webhook_secret: Option<SecretSource>,
    /// The vendor's site (Salto) or environment (Vostio).
    #[serde(default)]
    pub site_id: Option<String>,
    /// Brivo: the always-on schedule of the door permissions.
    #[serde(default)]
    pub access_schedule_id: Option<i64>,
    /// Requests per minute the vendor account allows. Unset: the vendor's documented limit
    /// (TTLock 100); 0: no limit (simulators, test accounts).
    #[serde(default)]
    pub rate_limit_per_min: Option<u32>,
    /// `generic-wiegand`: how long a desktop has to acknowledge an encode job, ms
    /// (`desktopAckTimeoutMs`, default 8000).
    #[serde(default)]
    pub desktop_ack_timeout_ms: Option<u64>,
    /// Spec `003` §3 `enabled` (default true): a disabled adapter takes no new work (no new
    /// key is issued at its doors); the keys it holds are still updated and removed.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Spec `003` §3 `precedence` (default 100, as spec `004`'s DDL): where several adapters
    /// serve a stay's rooms, the lowest is tried first.
    #[serde(default = "default_precedence")]
    pub precedence: i32,
}

fn yes() -> bool {
    true
}

fn default_precedence() -> i32 {
    100
}

fn sandbox() -> String {
    "sandbox".into()
}

/// A lock.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    /// `lck_…` id.
    pub id: String,
    /// Adapter id.
    pub adapter: String,
    /// The vendor's device id (TTLock `lockId`).
    pub vendor_device_ref: String,
    /// Label.
    pub label: String,
    /// Rooms it opens (none for a door of an area only).
    #[serde(default)]
    pub rooms: Vec<String>,
    /// The common area or back of house it opens, if any (`lobby`, `gym`, `pool`, `spa`,
    /// `parking`, `back_of_house`): what master keys with area scopes open (spec `003` §4).
    #[serde(default)]
    pub area: Option<String>,
    /// D-4: the battery level in percent below which the device raises `battery_low`, 5 to
    /// 50. Set at every start when given; unset, the device keeps what it has (25 % when
    /// new, or what `PATCH /api/v1/lock-devices/{id}` set).
    #[serde(default)]
    pub battery_low_threshold_percent: Option<i64>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Mode.
    pub mode: Mode,
    /// Node name.
    pub node_id: String,
    /// HTTP listen address.
    pub http_bind: SocketAddr,
    /// Service token source.
    pub service_token: Option<SecretSource>,
    /// How long a client may take to send a request's head, and then its body.
    pub http_read_timeout: Duration,
    /// SQLite file.
    pub sqlite_path: PathBuf,
    /// Postgres URLs (production).
    pub postgres: Option<PostgresSettings>,
    /// Encryption key version.
    pub key_version: String,
    /// Encryption key source (`None` in embedded mode: generated into the data dir).
    pub key: Option<SecretSource>,
    /// Earlier key versions (read only, until re-encrypted).
    pub previous_keys: Vec<RawPreviousKey>,
    /// The version keying the blind indexes (defaults to `key_version`).
    pub index_key_version: String,
    /// RabbitMQ (production).
    pub amqp: Option<AmqpSettings>,
    /// Saga tunables.
    pub saga: SagaTunables,
    /// Demo on.
    pub demo: bool,
    /// Simulator bind.
    pub simulator_bind: SocketAddr,
    /// Properties.
    pub properties: Vec<RawProperty>,
    /// Breaker tunables, as given (defaults are the domain's).
    pub breaker: RawBreaker,
    /// Clock scale (1.0 = wall time).
    pub clock_scale: f64,
    /// Drift reconciliation interval (`None`: off).
    pub drift_interval: Option<Duration>,
    /// Secret fingerprint check interval (`None`: only at start).
    pub secret_check_interval: Option<Duration>,
    /// JWT verification (`None`: only the service token is accepted).
    pub auth: Option<RawAuth>,
    /// Offline-issuance signing key and its id.
    pub offline: RawOffline,
    /// The desktop relay (`None`: not running).
    pub relay: Option<RelaySettings>,
    /// Retention (spec `004` §8).
    pub retention: RetentionSettings,
}

/// Postgres URLs.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// Service role.
    pub url: SecretSource,
    /// Worker role.
    pub worker_url: SecretSource,
    /// Owner role, for migrations.
    pub owner_url: Option<SecretSource>,
    /// Pool size.
    pub max_connections: u32,
    /// Migrate at start.
    pub migrate_on_start: bool,
}

/// RabbitMQ settings.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// URL.
    pub url: SecretSource,
    /// Platform exchange.
    pub exchange: String,
    /// Prefix of Lockstep's queues.
    pub prefix: String,
    /// Partitions.
    pub partitions: u32,
    /// Node index.
    pub node_index: u32,
    /// Node count.
    pub node_count: u32,
    /// Tick interval.
    pub tick_interval: Duration,
    /// Standby delay.
    pub standby_delay: Duration,
    /// Delivery limit.
    pub delivery_limit: u32,
    /// Interval of the unroutable-event probe.
    pub unroutable_probe: Duration,
    /// Subject prefix → owning broker user; empty: publishers are not checked.
    pub publishers: std::collections::BTreeMap<String, String>,
}

impl AmqpSettings {
    /// Whether broker user `user_id` may publish `subject`: always when no publishers are
    /// configured; otherwise only the owner of the longest prefix of `subject`.
    pub fn may_publish(&self, subject: &str, user_id: Option<&str>) -> bool {
        if self.publishers.is_empty() {
            return true;
        }
        self.publishers
            .iter()
            .filter(|(prefix, _)| subject.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .is_some_and(|(_, owner)| Some(owner.as_str()) == user_id)
    }
}

/// Saga tunables.
#[derive(Debug, Clone)]
pub struct SagaTunables {
    /// Issue attempts.
    pub max_issue_attempts: i32,
    /// First retry delay.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
    /// Vendor call timeout.
    pub vendor_call_timeout: Duration,
    /// Passivation.
    pub passivate_after: Duration,
    /// Outage fallback bound (zero: never fall back on an outage).
    pub outage_fallback_after: Duration,
}

/// Environment prefix.
pub const ENV_PREFIX: &str = "LOCKSTEP__";

/// Reads the file (if any) and the environment, then validates.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let mut table = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?;
            text.parse::<toml::Table>()
                .map_err(|e| ConfigError::Parse(e.to_string()))?
        }
        None => toml::Table::new(),
    };
    overlay_env(&mut table, std::env::vars());
    let raw: RawSettings = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
    validate(raw)
}

/// Applies `LOCKSTEP__A__B=value` as `a.b = value` (a TOML literal when it parses as one,
/// else a string).
pub fn overlay_env(table: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) {
    for (k, v) in vars {
        let Some(path) = k.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(|s| s.to_lowercase()).collect();
        let value = format!("x = {v}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("x"))
            .unwrap_or(toml::Value::String(v));
        let mut cur = &mut *table;
        for (i, key) in keys.iter().enumerate() {
            if i + 1 == keys.len() {
                cur.insert(key.clone(), value.clone());
            } else {
                let entry = cur
                    .entry(key.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if !entry.is_table() {
                    *entry = toml::Value::Table(toml::Table::new());
                }
                let Some(next) = entry.as_table_mut() else {
                    break;
                };
                cur = next;
            }
        }
    }
}

fn addr(key: &str, v: Option<&str>, default: &str) -> Result<SocketAddr, ConfigError> {
    v.unwrap_or(default)
        .parse()
        .map_err(|_| invalid(key, "must be an address like 127.0.0.1:8080"))
}

/// Validates raw settings.
pub fn validate(raw: RawSettings) -> Result<Settings, ConfigError> {
    let ms = Duration::from_millis;
    let saga = SagaTunables {
        max_issue_attempts: raw.saga.max_issue_attempts.unwrap_or(40),
        retry_base: ms(raw.saga.retry_base_ms.unwrap_or(500)),
        retry_cap: ms(raw.saga.retry_cap_ms.unwrap_or(300_000)),
        vendor_call_timeout: ms(raw.saga.vendor_call_timeout_ms.unwrap_or(15_000)),
        passivate_after: ms(raw.saga.passivate_after_ms.unwrap_or(30_000)),
        outage_fallback_after: Duration::from_secs(raw.saga.outage_fallback_after_s.unwrap_or(120)),
    };
    if saga.max_issue_attempts < 1 {
        return Err(invalid("saga.max_issue_attempts", "must be at least 1"));
    }
    if saga.retry_base > saga.retry_cap {
        return Err(invalid(
            "saga.retry_base_ms",
            "must not exceed saga.retry_cap_ms",
        ));
    }
    let (postgres, amqp) = match raw.mode {
        Mode::Embedded => (None, None),
        Mode::Production => {
            let url = raw.database.url.clone().ok_or_else(|| {
                invalid(
                    "database.url",
                    "production mode needs the service role's Postgres URL",
                )
            })?;
            let worker_url = raw.database.worker_url.clone().ok_or_else(|| {
                invalid(
                    "database.worker_url",
                    "production mode needs the worker role's Postgres URL",
                )
            })?;
            let a = &raw.amqp;
            let partitions = a.partitions.unwrap_or(8);
            if !(1..=1024).contains(&partitions) {
                return Err(invalid("amqp.partitions", "must be 1 to 1024"));
            }
            let node_count = a.node_count.unwrap_or(1).max(1);
            let node_index = a.node_index.unwrap_or(0);
            if node_index >= node_count {
                return Err(invalid("amqp.node_index", "must be below amqp.node_count"));
            }
            // The limit is for poison, never for Lockstep's own outages (DESIGN §4): a
            // store outage holds deliveries rather than returning them, but a node killed
            // or a broker restarted returns its prefetched messages once each.
            let delivery_limit = a.delivery_limit.unwrap_or(20);
            if delivery_limit < 1 {
                return Err(invalid("amqp.delivery_limit", "must be at least 1"));
            }
            (
                Some(PostgresSettings {
                    url,
                    worker_url,
                    owner_url: raw.database.owner_url.clone(),
                    max_connections: raw.database.max_connections.unwrap_or(10),
                    migrate_on_start: raw.database.migrate_on_start.unwrap_or(false),
                }),
                Some(AmqpSettings {
                    url: a.url.clone().ok_or_else(|| {
                        invalid("amqp.url", "production mode needs the RabbitMQ URL")
                    })?,
                    exchange: a
                        .exchange
                        .clone()
                        .unwrap_or_else(|| "melmastoon.events".into()),
                    prefix: a.prefix.clone().unwrap_or_else(|| "lockstep".into()),
                    partitions,
                    node_index,
                    node_count,
                    tick_interval: ms(a.tick_interval_ms.unwrap_or(2_000)),
                    standby_delay: ms(a.standby_delay_ms.unwrap_or(5_000)),
                    delivery_limit,
                    unroutable_probe: ms(a.unroutable_probe_ms.unwrap_or(60_000).max(100)),
                    publishers: a.publishers.clone().unwrap_or_default(),
                }),
            )
        }
    };
    if raw.mode == Mode::Production && raw.encryption.key.is_none() {
        return Err(invalid(
            "encryption.key",
            "production mode needs an encryption key (64 hex digits)",
        ));
    }
    let key_version = raw
        .encryption
        .key_version
        .clone()
        .unwrap_or_else(|| "local-v1".into());
    let previous_keys = raw.encryption.previous_keys.clone().unwrap_or_default();
    let index_key_version = match (&raw.encryption.index_key_version, previous_keys.is_empty()) {
        (Some(v), _) => v.clone(),
        (None, true) => key_version.clone(),
        (None, false) => return Err(invalid(
            "encryption.index_key_version",
            "with previous_keys, name the version that keyed the blind indexes (the first key's)",
        )),
    };
    if index_key_version != key_version
        && !previous_keys.iter().any(|k| k.version == index_key_version)
    {
        return Err(invalid(
            "encryption.index_key_version",
            "must be key_version or one of previous_keys",
        ));
    }
    if previous_keys.iter().any(|k| k.version == key_version) {
        return Err(invalid(
            "encryption.previous_keys",
            "must not repeat the current key_version",
        ));
    }
    let simulator_bind = addr(
        "demo.simulator_bind",
        raw.demo.simulator_bind.as_deref(),
        "127.0.0.1:18080",
    )?;
    Ok(Settings {
        mode: raw.mode,
        node_id: raw
            .node_id
            .unwrap_or_else(|| format!("node-{}", std::process::id())),
        http_bind: addr("http.bind", raw.http.bind.as_deref(), "127.0.0.1:8080")?,
        service_token: raw.http.service_token,
        http_read_timeout: match raw.http.read_timeout_ms {
            Some(0) => return Err(invalid("http.read_timeout_ms", "must be more than zero")),
            v => ms(v.unwrap_or(10_000)),
        },
        sqlite_path: raw
            .database
            .sqlite_path
            .unwrap_or_else(|| PathBuf::from(".lockstep/lockstep.sqlite")),
        postgres,
        key_version,
        key: raw.encryption.key,
        previous_keys,
        index_key_version,
        amqp,
        saga,
        demo: raw.demo.enabled.unwrap_or(raw.mode == Mode::Embedded),
        simulator_bind,
        properties: raw.properties,
        breaker: raw.breaker,
        drift_interval: match raw.drift.interval_ms.unwrap_or(900_000) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
        auth: raw.auth,
        offline: raw.offline,
        relay: relay_settings(&raw.relay, raw.mode, raw.demo.enabled, simulator_bind)?,
        retention: retention_settings(&raw.retention)?,
        secret_check_interval: match raw.secrets.check_interval_ms.unwrap_or(60_000) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
        clock_scale: {
            let scale = raw.clock.scale.unwrap_or(1.0);
            if !(1.0..=100_000.0).contains(&scale) {
                return Err(invalid("clock.scale", "must be between 1 and 100000"));
            }
            scale
        },
    })
}

/// The address `offset` ports above the demo's TTLock simulator (`[demo] simulator_bind`,
/// default 18080): the other simulators take 18081 to 18084 and the relay 18090, so a
/// demo's addresses are the same on every run. Port 0 there means any free port for all.
pub fn demo_port(simulator_bind: SocketAddr, offset: u16) -> SocketAddr {
    let port = match simulator_bind.port() {
        0 => 0,
        p => p.saturating_add(offset),
    };
    SocketAddr::new(simulator_bind.ip(), port)
}

/// The relay runs when enabled, when given an address, and in the embedded demo unless
/// switched off. The demo's relay listens beside its simulators ([`demo_port`] 10) so its
/// URL stays the same from run to run.
fn relay_settings(
    r: &RawRelay,
    mode: Mode,
    demo: Option<bool>,
    simulator_bind: SocketAddr,
) -> Result<Option<RelaySettings>, ConfigError> {
    let demo = demo.unwrap_or(mode == Mode::Embedded) && mode == Mode::Embedded;
    let on = match r.enabled {
        Some(on) => on,
        None => r.bind.is_some() || demo,
    };
    if !on {
        return Ok(None);
    }
    let ms = |key: &str, v: Option<u64>| -> Result<Option<Duration>, ConfigError> {
        match v {
            Some(0) => Err(invalid(key, "must be more than zero")),
            v => Ok(v.map(Duration::from_millis)),
        }
    };
    if let Some(url) = &r.public_url {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(invalid("relay.public_url", "must be a ws:// or wss:// URL"));
        }
    }
    Ok(Some(RelaySettings {
        bind: match &r.bind {
            Some(b) => addr("relay.bind", Some(b), "")?,
            None if demo => demo_port(simulator_bind, 10),
            None => addr("relay.bind", None, "127.0.0.1:0")?,
        },
        public_url: r.public_url.clone(),
        audience: r.audience.clone(),
        ack_timeout: ms("relay.ack_timeout_ms", r.ack_timeout_ms)?,
        result_timeout: ms("relay.result_timeout_ms", r.result_timeout_ms)?,
        heartbeat_interval: ms("relay.heartbeat_interval_ms", r.heartbeat_interval_ms)?,
        idle_timeout: ms("relay.idle_timeout_ms", r.idle_timeout_ms)?,
        handshake_timeout: ms("relay.handshake_timeout_ms", r.handshake_timeout_ms)?,
        reconnect_grace: ms("relay.reconnect_grace_ms", r.reconnect_grace_ms)?,
        holder_grace: ms("relay.holder_grace_ms", r.holder_grace_ms)?,
        shutdown_grace: Duration::from_millis(r.shutdown_grace_ms.unwrap_or(3_000)),
        max_unauthenticated: r.max_unauthenticated,
        max_jobs_per_desktop: r.max_jobs_per_desktop,
    }))
}

/// Resolves a secret reference to its value.
pub fn resolve_secret(s: &SecretSource) -> Result<String, ConfigError> {
    match s {
        SecretSource::Value(v) => Ok(v.clone()),
        SecretSource::Env(name) => std::env::var(name)
            .map_err(|_| invalid(&format!("env:{name}"), "environment variable is not set")),
        SecretSource::File(p) => std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .map_err(|e| invalid(&format!("file:{}", p.display()), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_amqp_for_tests() -> AmqpSettings {
        AmqpSettings {
            url: SecretSource::Value("amqp://x".into()),
            exchange: "melmastoon.events".into(),
            prefix: "lockstep".into(),
            partitions: 4,
            node_index: 0,
            node_count: 1,
            tick_interval: Duration::from_secs(2),
            standby_delay: Duration::from_secs(5),
            delivery_limit: 3,
            unroutable_probe: Duration::from_secs(60),
            publishers: Default::default(),
        }
    }

    #[test]
    fn defaults_to_embedded_mode_with_a_demo() {
        let s = validate(RawSettings::default()).unwrap();
        assert_eq!(s.mode, Mode::Embedded);
        assert!(s.demo);
        assert!(s.postgres.is_none() && s.amqp.is_none());
    }

    #[test]
    fn retention_defaults_to_the_spec_and_refuses_zero_days() {
        let s = validate(RawSettings::default()).unwrap();
        assert_eq!(
            s.retention,
            RetentionSettings {
                interval: Some(Duration::from_secs(3_600)),
                key_credential_attempts_days: 90,
                lock_audit_days: 90,
                lock_devices_decommissioned_days: 30,
                webhook_inbox_processed_days: 30,
                outbox_published_days: 7,
                inbox_days: 30,
                offline_issuance_revoked_days: 90,
            }
        );
        let raw: RawSettings =
            toml::from_str("[retention]\ninterval_s = 0\noutbox_published_days = 14\n").unwrap();
        let s = validate(raw).unwrap();
        assert_eq!(s.retention.interval, None);
        assert_eq!(s.retention.outbox_published_days, 14);
        let raw: RawSettings = toml::from_str("[retention]\ninbox_days = 0\n").unwrap();
        let e = validate(raw).unwrap_err().to_string();
        assert!(e.contains("retention.inbox_days"), "{e}");
    }

    #[test]
    fn production_mode_names_the_missing_key() {
        let raw = RawSettings {
            mode: Mode::Production,
            ..Default::default()
        };
        let e = validate(raw).unwrap_err().to_string();
        assert!(e.contains("database.url"), "{e}");
    }

    #[test]
    fn environment_overlays_nested_keys() {
        let mut t = toml::Table::new();
        overlay_env(
            &mut t,
            vec![
                (
                    "LOCKSTEP__HTTP__BIND".to_string(),
                    "127.0.0.1:9999".to_string(),
                ),
                ("LOCKSTEP__AMQP__PARTITIONS".to_string(), "4".to_string()),
                ("OTHER".to_string(), "x".to_string()),
            ]
            .into_iter(),
        );
        let raw: RawSettings = toml::Value::Table(t).try_into().unwrap();
        assert_eq!(raw.http.bind.as_deref(), Some("127.0.0.1:9999"));
        assert_eq!(raw.amqp.partitions, Some(4));
        let owners: std::collections::BTreeMap<String, String> = [
            (
                "melmastoon.reservation.".to_owned(),
                "reservation-service".to_owned(),
            ),
            (
                "melmastoon.reservation.no_show".to_owned(),
                "night-audit".to_owned(),
            ),
        ]
        .into();
        let a = AmqpSettings {
            publishers: owners,
            ..settings_amqp_for_tests()
        };
        assert!(a.may_publish(
            "melmastoon.reservation.confirmed.v1",
            Some("reservation-service")
        ));
        assert!(!a.may_publish("melmastoon.reservation.confirmed.v1", Some("night-audit")));
        assert!(!a.may_publish("melmastoon.reservation.confirmed.v1", None));
        assert!(a.may_publish("melmastoon.reservation.no_show.v1", Some("night-audit")));
        assert!(!a.may_publish(
            "melmastoon.staff.shift.started.v1",
            Some("reservation-service")
        ));
        let open = settings_amqp_for_tests();
        assert!(open.may_publish("melmastoon.staff.shift.started.v1", None));
    }

    #[test]
    fn property_anomaly_rules_are_read_per_rule_and_unknown_keys_refused() {
        let raw: RawSettings = toml::from_str(
            r#"
[[properties]]
tenant_id = "5f0c7a4e-7a2b-4c1d-9e8f-0a1b2c3d4e5f"
property_id = "ppt_a"

[properties.anomalies]
denied_burst = { threshold = 8, window_secs = 120 }
impossible_travel = { enabled = false }
"#,
        )
        .unwrap();
        let a = raw.properties[0].anomalies.clone().unwrap();
        assert_eq!(a.denied_burst.threshold, Some(8));
        assert_eq!(a.denied_burst.window_secs, Some(120));
        assert_eq!(a.impossible_travel.enabled, Some(false));
        assert_eq!(a.wrong_room, RawAnomalyRule::default());
        let typo = toml::from_str::<RawSettings>(
            r#"
[[properties]]
tenant_id = "5f0c7a4e-7a2b-4c1d-9e8f-0a1b2c3d4e5f"
property_id = "ppt_a"
[properties.anomalies]
denied_burst = { treshold = 8 }
"#,
        );
        assert!(typo.is_err(), "a misspelt key is named, not ignored");
    }

    #[test]
    fn a_device_may_open_an_area_instead_of_rooms() {
        let raw: RawSettings = toml::from_str(
            r#"
[[properties]]
tenant_id = "5f0c7a4e-7a2b-4c1d-9e8f-0a1b2c3d4e5f"
property_id = "ppt_a"

[[properties.devices]]
id = "lck_a"
adapter = "vad_a"
vendor_device_ref = "1"
label = "Room 1"
rooms = ["rmu_1"]

[[properties.devices]]
id = "lck_b"
adapter = "vad_a"
vendor_device_ref = "2"
label = "Gym"
area = "gym"
"#,
        )
        .unwrap();
        let d = &raw.properties[0].devices;
        assert_eq!((d[0].rooms.len(), d[0].area.as_deref()), (1, None));
        assert!(d[1].rooms.is_empty(), "rooms default to none");
        assert_eq!(d[1].area.as_deref(), Some("gym"));
    }

    /// D-4 (issue 14): a device's own battery threshold is read from its table; unset it is
    /// `None` (the store's 25 % or what the API set).
    #[test]
    fn a_device_may_carry_its_battery_threshold() {
        let raw: RawSettings = toml::from_str(
            r#"
[[properties]]
tenant_id = "5f0c7a4e-7a2b-4c1d-9e8f-0a1b2c3d4e5f"
property_id = "ppt_a"

[[properties.devices]]
id = "lck_a"
adapter = "vad_a"
vendor_device_ref = "1"
label = "Room 1"
rooms = ["rmu_1"]
battery_low_threshold_percent = 10

[[properties.devices]]
id = "lck_b"
adapter = "vad_a"
vendor_device_ref = "2"
label = "Room 2"
rooms = ["rmu_2"]
"#,
        )
        .unwrap();
        let d = &raw.properties[0].devices;
        assert_eq!(d[0].battery_low_threshold_percent, Some(10));
        assert_eq!(d[1].battery_low_threshold_percent, None);
    }

    #[test]
    fn the_relay_runs_in_the_embedded_demo_or_when_given_an_address() {
        let demo = validate(RawSettings::default()).unwrap();
        let relay = demo.relay.expect("the embedded demo runs a relay");
        assert_eq!(relay.bind.ip().to_string(), "127.0.0.1");
        // the demo's addresses are stable: beside the TTLock simulator's, or all free ports
        assert_eq!(bind_port(&relay), 18090);
        assert_eq!(demo_port(demo.simulator_bind, 4).port(), 18084);
        let moved = |bind: &str| {
            validate(RawSettings {
                demo: RawDemo {
                    simulator_bind: Some(bind.into()),
                    ..Default::default()
                },
                ..Default::default()
            })
            .unwrap()
        };
        let s = moved("127.0.0.1:19000");
        assert_eq!(bind_port(s.relay.as_ref().unwrap()), 19010);
        assert_eq!(demo_port(s.simulator_bind, 1).port(), 19001);
        let s = moved("127.0.0.1:0");
        assert_eq!(bind_port(s.relay.as_ref().unwrap()), 0);
        assert_eq!(demo_port(s.simulator_bind, 2).port(), 0);
        let off = validate(RawSettings {
            relay: RawRelay {
                enabled: Some(false),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        assert!(off.relay.is_none());
        let bound = validate(RawSettings {
            demo: RawDemo {
                enabled: Some(false),
                ..Default::default()
            },
            relay: RawRelay {
                bind: Some("0.0.0.0:8790".into()),
                ack_timeout_ms: Some(2000),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap()
        .relay
        .expect("a bind address turns the relay on");
        assert_eq!(bind_port(&bound), 8790);
        assert_eq!(bound.ack_timeout, Some(Duration::from_secs(2)));
        let no_demo = validate(RawSettings {
            demo: RawDemo {
                enabled: Some(false),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        assert!(no_demo.relay.is_none(), "off unless configured");
        let e = validate(RawSettings {
            relay: RawRelay {
                bind: Some("nowhere".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("relay.bind"), "{e}");
    }

    fn bind_port(r: &RelaySettings) -> u16 {
        r.bind.port()
    }

    #[test]
    fn a_bad_address_is_refused_with_its_key() {
        let raw = RawSettings {
            http: RawHttp {
                bind: Some("nowhere".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = validate(raw).unwrap_err().to_string();
        assert!(e.contains("http.bind"), "{e}");
    }
}
