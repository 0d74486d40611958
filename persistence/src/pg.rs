//! The Postgres store (production): how its transactions begin, its pools and its
//! migrations; the tables' statements are shared with SQLite (`crate::tables`). Two pools:
//! `app` runs as the service role under RLS, the tenant set per transaction (`Tx`,
//! `ReadTx`); `worker` runs as the narrow cross-tenant role, used only by the worker
//! transactions (`WorkerTx`, `WorkerReadTx`: the outbox publisher, the timer and
//! partition scans, the backlog and the chain list; DESIGN §5).

use std::sync::Arc;

use async_trait::async_trait;
use lockstep_domain::TenantId;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::crypto::Cipher;
use crate::model::*;
use crate::tx::{Conn, ReadTx, Tx, WorkerReadTx, WorkerTx};
use crate::{migrate, Storage, StoreResult};

/// Postgres store.
#[derive(Clone, Debug)]
pub struct PgStore {
    app: PgPool,
    worker: PgPool,
    cipher: Arc<Cipher>,
}

/// Runs the Postgres migrations as the owner role (`lockstep migrate`).
pub async fn migrate(owner_url: &str) -> StoreResult<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(owner_url)
        .await?;
    // Under the same lock as the migrations: two concurrent `CREATE TABLE IF NOT EXISTS`
    // can both miss the table and one then fails on the catalog's unique index.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7410019)")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS _lockstep_migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    for m in migrate::POSTGRES {
        let mut tx = pool.begin().await?;
        // serialize concurrent migrators
        sqlx::query("SELECT pg_advisory_xact_lock(7410019)")
            .execute(&mut *tx)
            .await?;
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM _lockstep_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_none() {
            sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO _lockstep_migrations (version, name) VALUES ($1, $2)")
                .bind(m.version)
                .bind(m.name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    // The planner's statistics (issue 11): a fresh or freshly migrated database is
    // analyzed here, by its owner (only an owner may), so the first minutes of traffic do
    // not run on plans guessed for empty tables; autovacuum keeps them current after.
    sqlx::raw_sql("ANALYZE").execute(&pool).await?;
    pool.close().await;
    Ok(())
}

/// Connection options for `url` whose sessions plan each execution of a prepared statement
/// with its parameters (`plan_cache_mode = force_custom_plan`), issue 11. sqlx keeps a
/// connection's prepared statements for its whole life, and Postgres settles on a generic
/// plan after five executions: on a fresh database those five ran on tiny tables, where
/// every index costs the same, and the plan it kept (the first index that leads with
/// `tenant_id`) then scanned every row of the tenant for each lookup by id as the tables
/// grew (measured: 2,500 buffers a row for the audit linker, 1,900 for a credential
/// update, during a 3,000-stay burst in the first minute). Re-planning costs a little CPU
/// on every statement and chooses from the table as it is.
fn planned_per_execution(url: &str) -> StoreResult<sqlx::postgres::PgConnectOptions> {
    use std::str::FromStr;
    Ok(sqlx::postgres::PgConnectOptions::from_str(url)?
        .options([("plan_cache_mode", "force_custom_plan")]))
}

impl PgStore {
    /// Connects the service pool and the worker pool.
    pub async fn connect(
        app_url: &str,
        worker_url: &str,
        cipher: Cipher,
        max_connections: u32,
    ) -> StoreResult<Self> {
        let app = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(planned_per_execution(app_url)?)
            .await?;
        let worker = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(planned_per_execution(worker_url)?)
            .await?;
        Ok(Self {
            app,
            worker,
            cipher: Arc::new(cipher),
        })
    }

    /// The service pool (tests use it to prove isolation).
    pub fn app_pool(&self) -> &PgPool {
        &self.app
    }
}

#[async_trait]
impl Storage for PgStore {
    async fn begin(&self, tenant: TenantId, fence: Option<Fence>) -> StoreResult<Tx> {
        let tx = self.app.begin().await?;
        let mut conn = Conn::Pg(with_tenant(tx, tenant).await?);
        crate::tables::check_fence(&mut conn, fence).await?;
        Ok(Tx::new(conn, tenant, self.cipher.clone()))
    }

    async fn read(&self, tenant: TenantId) -> StoreResult<ReadTx> {
        let tx = self.app.begin_with("BEGIN READ ONLY").await?;
        let conn = Conn::Pg(with_tenant(tx, tenant).await?);
        Ok(ReadTx::new(conn, tenant, self.cipher.clone()))
    }

    async fn worker(&self) -> StoreResult<WorkerTx> {
        Ok(WorkerTx::new(Conn::Pg(self.worker.begin().await?)))
    }

    async fn worker_read(&self) -> StoreResult<WorkerReadTx> {
        Ok(WorkerReadTx::new(Conn::Pg(
            self.worker.begin_with("BEGIN READ ONLY").await?,
        )))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.app).await?;
        Ok(())
    }

    async fn close(&self) {
        self.app.close().await;
        self.worker.close().await;
    }
}

/// Sets the transaction's tenant for row-level security. Transaction-local: gone at
/// commit, so a pooled connection carries no tenant into the next transaction (DESIGN §5).
async fn with_tenant(
    mut tx: Transaction<'static, Postgres>,
    tenant: TenantId,
) -> StoreResult<Transaction<'static, Postgres>> {
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}
