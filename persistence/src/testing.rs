//! Test harness shared by this crate's integration tests and by the tests of the crates
//! above it (enable the `testing` feature in their `[dev-dependencies]`).
//!
//! Postgres: [`fresh_pg_database`] creates a database named `lockstep_t_<ulid>[_<run tag>]` as the
//! owner role, runs the migrations in it and hands back URLs for the owner, the service
//! role (`lockstep_app`, under RLS) and the worker role (`lockstep_worker`). Create one per
//! test binary ([`shared_pg_database`]) and give each test its own tenant ids. The server
//! and roles come from `scripts/services`; the admin URL from
//! `LOCKSTEP_TEST_PG_ADMIN_URL`, default [`DEFAULT_ADMIN_URL`].
//!
//! SQLite: [`TempSqlite`] is a fresh database file under the temp directory, removed
//! (best effort) on drop.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Row};
use tokio::sync::OnceCell;

use crate::crypto::Cipher;
use crate::pg::{self, PgStore};
use crate::sqlite::SqliteStore;

/// The admin URL used when `LOCKSTEP_TEST_PG_ADMIN_URL` is not set (role `lockstep_owner`,
/// which has `CREATEDB`).
pub const DEFAULT_ADMIN_URL: &str =
    "postgres://lockstep_owner:lockstep_owner@127.0.0.1:5432/lockstep";

/// Environment variable naming the admin URL.
pub const ADMIN_URL_ENV: &str = "LOCKSTEP_TEST_PG_ADMIN_URL";

/// Prefix of the per-run test databases.
pub const DB_PREFIX: &str = "lockstep_t_";

/// Environment variable with a tag for this run of the suite (`scripts/test` sets it):
/// each database made is named `lockstep_t_<ulid>_<tag>`, and the script drops the run's
/// databases when the suite ends, whatever became of the test processes.
pub const RUN_TAG_ENV: &str = "LOCKSTEP_TEST_RUN_TAG";

/// The name of a new test database: the prefix, a lowercase ULID (its age, for
/// [`drop_stale_databases`]) and the run's tag when it is a safe one.
fn new_db_name() -> String {
    let id = ulid::Ulid::new().to_string().to_lowercase();
    match std::env::var(RUN_TAG_ENV) {
        Ok(tag)
            if (1..=12).contains(&tag.len())
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
        {
            format!("{DB_PREFIX}{id}_{tag}")
        }
        _ => format!("{DB_PREFIX}{id}"),
    }
}

/// Test databases older than this are dropped (best effort) when a new one is made, so
/// leftovers of earlier runs don't pile up.
const STALE_AFTER_MS: u64 = 2 * 60 * 60 * 1000;

/// The service role and its password (created by `scripts/services`).
const APP_ROLE: (&str, &str) = ("lockstep_app", "lockstep_app");
/// The cross-tenant worker role and its password.
const WORKER_ROLE: (&str, &str) = ("lockstep_worker", "lockstep_worker");

/// A freshly created and migrated Postgres database.
#[derive(Clone, Debug)]
pub struct PgTestDb {
    /// Database name, `lockstep_t_<ulid lowercase>`, then `_<run tag>` under `scripts/test`.
    pub name: String,
    /// URL of the owner role (ran the migrations; still subject to `FORCE` RLS).
    pub owner_url: String,
    /// URL of the service role `lockstep_app` (no `BYPASSRLS`).
    pub app_url: String,
    /// URL of the cross-tenant worker role `lockstep_worker`.
    pub worker_url: String,
}

impl PgTestDb {
    /// A store on this database with a service pool of `max_connections`. Connect one per
    /// test: a pool is bound to the runtime that created it, and each `#[tokio::test]` has
    /// its own.
    pub async fn connect_store(
        &self,
        cipher: Cipher,
        max_connections: u32,
    ) -> anyhow::Result<PgStore> {
        PgStore::connect(&self.app_url, &self.worker_url, cipher, max_connections)
            .await
            .context("connecting the test store as lockstep_app / lockstep_worker")
    }
}

/// The admin URL for tests.
pub fn admin_url() -> String {
    std::env::var(ADMIN_URL_ENV).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

fn url_for(admin: &PgConnectOptions, db: &str, role: Option<(&str, &str)>) -> String {
    let mut o = admin.clone().database(db);
    if let Some((user, password)) = role {
        o = o.username(user).password(password);
    }
    o.to_url_lossy().to_string()
}

/// Creates a fresh database as the owner role, migrates it, and returns its URLs.
pub async fn fresh_pg_database() -> anyhow::Result<PgTestDb> {
    let admin_url = admin_url();
    let admin = PgConnectOptions::from_str(&admin_url)
        .with_context(|| format!("{ADMIN_URL_ENV} is not a Postgres URL"))?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin.clone())
        .await
        .with_context(|| {
            format!("connecting to the test Postgres (is it running? try `bash scripts/services`; or set {ADMIN_URL_ENV})")
        })?;
    drop_stale_databases(&pool).await;
    let name = new_db_name();
    // The name is ours (prefix, lowercase ULID, a checked tag), safe to quote into DDL.
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&pool)
        .await
        .with_context(|| format!("creating test database {name}"))?;
    pool.close().await;

    let db = PgTestDb {
        owner_url: url_for(&admin, &name, None),
        app_url: url_for(&admin, &name, Some(APP_ROLE)),
        worker_url: url_for(&admin, &name, Some(WORKER_ROLE)),
        name,
    };
    pg::migrate(&db.owner_url)
        .await
        .with_context(|| format!("migrating test database {}", db.name))?;
    Ok(db)
}

/// Drops test databases whose ULID says they are older than [`STALE_AFTER_MS`]. Best
/// effort: errors (another owner, a concurrent drop) are ignored.
async fn drop_stale_databases(pool: &sqlx::PgPool) {
    let Ok(rows) =
        sqlx::query("SELECT datname FROM pg_database WHERE datname LIKE 'lockstep\\_t\\_%'")
            .fetch_all(pool)
            .await
    else {
        return;
    };
    let now_ms = ulid::Ulid::new().timestamp_ms();
    for row in rows {
        let Ok(name) = row.try_get::<String, _>("datname") else {
            continue;
        };
        let Some(id) = name.strip_prefix(DB_PREFIX).and_then(|rest| rest.get(..26)) else {
            continue;
        };
        let Ok(id) = ulid::Ulid::from_string(&id.to_uppercase()) else {
            continue;
        };
        if now_ms.saturating_sub(id.timestamp_ms()) > STALE_AFTER_MS {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(pool)
                .await;
        }
    }
}

static SHARED: OnceCell<PgTestDb> = OnceCell::const_new();

/// One fresh database per test binary, made on first use and shared by every test in it.
/// Only URLs are shared; each test connects its own pools.
pub async fn shared_pg_database() -> anyhow::Result<&'static PgTestDb> {
    SHARED.get_or_try_init(fresh_pg_database).await
}

/// A cipher with a fixed test key.
pub fn test_cipher() -> Cipher {
    Cipher::new("test-v1", &[7u8; 32])
}

/// A fresh SQLite database file under the temp directory; the file and its WAL
/// companions are removed (best effort) on drop.
#[derive(Debug)]
pub struct TempSqlite {
    /// Path of the database file.
    pub path: PathBuf,
}

impl TempSqlite {
    /// A new, not yet created, path.
    pub fn new() -> Self {
        let name = format!(
            "lockstep-test-{}.db",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        Self {
            path: std::env::temp_dir().join(name),
        }
    }

    /// Opens (creates and migrates) the store on this file.
    pub async fn open(&self, cipher: Cipher) -> anyhow::Result<SqliteStore> {
        let path = self.path.to_str().context("temp path is not UTF-8")?;
        SqliteStore::open(path, cipher)
            .await
            .with_context(|| format!("opening sqlite store at {path}"))
    }
}

impl Default for TempSqlite {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempSqlite {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The Postgres plans of the statements a piece of work runs (issue 11: the hot queries
/// have the indexes they need). Inside [`capture`], every statement the stores run through
/// a transaction of this task is `EXPLAIN`ed first, with its arguments, in the same
/// transaction; outside it nothing changes. Tests only: the `testing` feature.
pub mod plans {
    use std::future::Future;
    use std::sync::{Arc, Mutex};

    tokio::task_local! {
        static SINK: Arc<Mutex<Vec<Planned>>>;
    }

    /// One statement and the plan Postgres chose for it.
    #[derive(Clone, Debug)]
    pub struct Planned {
        /// The statement's text, as the store sends it.
        pub sql: String,
        /// `EXPLAIN (FORMAT JSON)`'s answer.
        pub plan: serde_json::Value,
    }

    impl Planned {
        /// The tables the plan reads by a sequential scan.
        pub fn seq_scans(&self) -> Vec<String> {
            fn walk(node: &serde_json::Value, out: &mut Vec<String>) {
                if node.get("Node Type").and_then(|t| t.as_str()) == Some("Seq Scan") {
                    if let Some(rel) = node.get("Relation Name").and_then(|r| r.as_str()) {
                        out.push(rel.to_owned());
                    }
                }
                for child in node
                    .get("Plans")
                    .and_then(|p| p.as_array())
                    .into_iter()
                    .flatten()
                {
                    walk(child, out);
                }
            }
            let mut out = Vec::new();
            for top in self.plan.as_array().into_iter().flatten() {
                if let Some(plan) = top.get("Plan") {
                    walk(plan, &mut out);
                }
            }
            out
        }
    }

    /// Runs `work` and returns, beside its output, the plans of the statements it ran.
    pub async fn capture<F: Future>(work: F) -> (F::Output, Vec<Planned>) {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let out = SINK.scope(sink.clone(), work).await;
        let planned = std::mem::take(&mut *sink.lock().unwrap_or_else(|e| e.into_inner()));
        (out, planned)
    }

    pub(crate) fn capturing() -> bool {
        SINK.try_with(|_| ()).is_ok()
    }

    pub(crate) fn record(sql: &str, plan: serde_json::Value) {
        let _ = SINK.try_with(|sink| {
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Planned {
                    sql: sql.to_owned(),
                    plan,
                })
        });
    }
}
