//! The SQLite store (embedded mode): how its transactions begin, its pools and its
//! migrations. The tables' statements are shared with Postgres (`crate::tables`, through
//! the dialect layer). There is no row-level security in SQLite: every tenant-scoped
//! statement filters on `tenant_id` itself, so tenant scoping holds by query.
//!
//! Concurrency (DESIGN §5): the file runs in WAL mode with foreign keys on and a busy
//! timeout. All writes go through one pool of exactly one connection and every write
//! transaction starts with `BEGIN IMMEDIATE`, so a write never starts deferred and then
//! fails to upgrade with `SQLITE_BUSY`; reads use a separate pool of query-only
//! connections, which WAL lets run beside the writer. The single writer also makes the
//! partition fence check atomic with the commit it guards.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockstep_domain::TenantId;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Sqlite, Transaction};

use crate::crypto::Cipher;
use crate::model::*;
use crate::tx::{Conn, ReadTx, Tx, WorkerReadTx, WorkerTx};
use crate::{migrate, Storage, StoreError, StoreResult};

/// How long a connection waits for a lock held by another connection (or process).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Read connections beside the one writer.
const READERS: u32 = 4;

/// SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    cipher: Arc<Cipher>,
}

/// Makes the database file at `path` readable by its owner only (0600) before SQLite
/// opens it: created empty with that mode when missing (SQLite takes an empty file as a
/// new database), narrowed when an older run left it wider. SQLite gives its `-wal` and
/// `-shm` files the main file's mode; ones left wider are narrowed too. The store holds
/// tenants' stays and encrypted secrets, the desk mirror provisional keys' card numbers.
pub(crate) fn private_file(path: &std::path::Path) -> StoreResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| StoreError::Database(format!("{}: {e}", path.display()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let p = std::path::PathBuf::from(p);
            match std::fs::metadata(&p) {
                Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `path_or_url` — a file path or a
    /// `sqlite:` URL — and applies the SQLite migrations. An in-memory database is not
    /// supported: the reader pool must see the writer's file.
    pub async fn open(path_or_url: &str, cipher: Cipher) -> StoreResult<Self> {
        let base = if path_or_url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(path_or_url)?
        } else {
            private_file(std::path::Path::new(path_or_url))?;
            SqliteConnectOptions::new().filename(path_or_url)
        };
        let base = base
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(base.clone().create_if_missing(true))
            .await?;
        migrate_sqlite(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(base.create_if_missing(false).pragma("query_only", "ON"))
            .await?;
        Ok(Self {
            writer,
            reader,
            cipher: Arc::new(cipher),
        })
    }

    /// The read pool (query-only connections); tests use it to look at raw rows.
    pub fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// The single writer; tests use it to try what the schema must refuse.
    pub fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// Closes both pools, waiting for open connections to finish.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// A write transaction on the single writer connection. `BEGIN IMMEDIATE` takes the
    /// write lock up front (DESIGN §5).
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Applies the SQLite migrations once each, recording them in `_lockstep_migrations`.
/// `BEGIN IMMEDIATE` serializes concurrent migrators on the same file.
async fn migrate_sqlite(pool: &SqlitePool) -> StoreResult<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS _lockstep_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    for m in migrate::SQLITE {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM _lockstep_migrations WHERE version = ?")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_none() {
            sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO _lockstep_migrations (version, name, applied_at) VALUES (?, ?, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))",
            )
            .bind(m.version)
            .bind(m.name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

#[async_trait]
impl Storage for SqliteStore {
    async fn begin(&self, tenant: TenantId, fence: Option<Fence>) -> StoreResult<Tx> {
        // The single writer makes the fence check and the commit that follows atomic: no
        // `take_partition` can run in between.
        let mut conn = Conn::Sqlite(self.begin_write().await?);
        crate::tables::check_fence(&mut conn, fence).await?;
        Ok(Tx::new(conn, tenant, self.cipher.clone()))
    }

    async fn read(&self, tenant: TenantId) -> StoreResult<ReadTx> {
        let conn = Conn::Sqlite(self.reader.begin().await?);
        Ok(ReadTx::new(conn, tenant, self.cipher.clone()))
    }

    async fn worker(&self) -> StoreResult<WorkerTx> {
        Ok(WorkerTx::new(Conn::Sqlite(self.begin_write().await?)))
    }

    async fn worker_read(&self) -> StoreResult<WorkerReadTx> {
        Ok(WorkerReadTx::new(Conn::Sqlite(self.reader.begin().await?)))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn close(&self) {
        SqliteStore::close(self).await;
    }
}
