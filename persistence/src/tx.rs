//! Transactions: what a caller holds while it reads and writes tables.
//!
//! A [`Storage`] opens four kinds, and the type says which path a call is on:
//!
//! | type | path | Postgres | SQLite |
//! |---|---|---|---|
//! | [`Tx`] | one tenant, read-write, fenced | service pool, `set_config('app.tenant_id', …, true)`, fence row `FOR SHARE` | the single writer, `BEGIN IMMEDIATE` |
//! | [`ReadTx`] | one tenant, read-only | service pool, `BEGIN READ ONLY`, the same `set_config` | a read connection |
//! | [`WorkerTx`] | every tenant, read-write (DESIGN §5) | worker pool (`lockstep_worker`) | the single writer, `BEGIN IMMEDIATE` |
//! | [`WorkerReadTx`] | every tenant, read-only | worker pool, `BEGIN READ ONLY` | a read connection |
//!
//! The table traits (`crate::tables`) are implemented on these types: a tenant table's
//! reads (`ReadOnly…Table`) on `Tx` and `ReadTx`, its writes on `Tx` only; the worker
//! tables (timers, outbox publisher, partitions, backlog and chain scans) on the worker
//! types only. Reads inside a `Tx` see its own writes. Nothing is visible to others before
//! [`Tx::commit`]; dropping a transaction rolls it back.
//!
//! SQLite has one writer connection: a `Tx` or `WorkerTx` holds it until it ends, so a
//! task must not open a second write transaction while it holds one.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use lockstep_domain::TenantId;
use sqlx::{Postgres, Sqlite};

use crate::crypto::Cipher;
use crate::dialect::{Dialect, Row, Stmt};
use crate::model::Fence;
use crate::{StoreError, StoreResult};

/// Opens transactions on a store (Postgres or SQLite). The runtime holds one per process,
/// as `Arc<dyn Storage>` (or `Arc<dyn Store>`, which is one).
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// A read-write transaction of `tenant`. With a `fence`, it fails with
    /// [`StoreError::Fenced`] unless the partition is still at that epoch, and no
    /// `take_partition` can move it before this transaction ends (DESIGN §4).
    async fn begin(&self, tenant: TenantId, fence: Option<Fence>) -> StoreResult<Tx>;

    /// A read-only transaction of `tenant`: one snapshot for every read in it.
    async fn read(&self, tenant: TenantId) -> StoreResult<ReadTx>;

    /// A read-write transaction on the cross-tenant worker path (outbox publisher,
    /// timer and partition scans; DESIGN §5).
    async fn worker(&self) -> StoreResult<WorkerTx>;

    /// A read-only transaction on the cross-tenant worker path.
    async fn worker_read(&self) -> StoreResult<WorkerReadTx>;

    /// A cheap round trip to the database (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// Closes the connection pools (on shutdown, inside the runtime); calls after it fail.
    async fn close(&self);
}

mod sealed {
    pub trait Sealed {}
}

/// What a transaction may do: [`ReadWrite`] or [`ReadOnly`].
pub trait Access: sealed::Sealed + Send + Sync + 'static {}

/// Marker: the transaction reads and writes.
#[derive(Debug)]
pub enum ReadWrite {}

/// Marker: the transaction only reads.
#[derive(Debug)]
pub enum ReadOnly {}

impl sealed::Sealed for ReadWrite {}
impl sealed::Sealed for ReadOnly {}
impl Access for ReadWrite {}
impl Access for ReadOnly {}

/// An open database transaction of either backend.
pub(crate) enum Conn {
    /// Postgres.
    Pg(sqlx::Transaction<'static, Postgres>),
    /// SQLite.
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

impl Conn {
    /// The SQL this connection speaks.
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Self::Pg(_) => Dialect::Postgres,
            Self::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Runs a statement; how many rows it changed.
    pub(crate) async fn execute(&mut self, s: Stmt<'_>) -> StoreResult<u64> {
        #[cfg(feature = "testing")]
        self.explain_when_capturing(&s).await?;
        Ok(match self {
            Self::Pg(tx) => s.pg().execute(&mut **tx).await?.rows_affected(),
            Self::Sqlite(tx) => s.sqlite().execute(&mut **tx).await?.rows_affected(),
        })
    }

    /// Every row of a query.
    pub(crate) async fn fetch_all(&mut self, s: Stmt<'_>) -> StoreResult<Vec<Row>> {
        #[cfg(feature = "testing")]
        self.explain_when_capturing(&s).await?;
        Ok(match self {
            Self::Pg(tx) => s
                .pg()
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(Row::Pg)
                .collect(),
            Self::Sqlite(tx) => s
                .sqlite()
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
        })
    }

    /// The first row of a query, if any.
    pub(crate) async fn fetch_optional(&mut self, s: Stmt<'_>) -> StoreResult<Option<Row>> {
        #[cfg(feature = "testing")]
        self.explain_when_capturing(&s).await?;
        Ok(match self {
            Self::Pg(tx) => s.pg().fetch_optional(&mut **tx).await?.map(Row::Pg),
            Self::Sqlite(tx) => s.sqlite().fetch_optional(&mut **tx).await?.map(Row::Sqlite),
        })
    }

    /// Under [`crate::testing::plans::capture`]: the Postgres plan of `s`, with its
    /// arguments, recorded before it runs (an `EXPLAIN` without `ANALYZE` runs nothing).
    #[cfg(feature = "testing")]
    async fn explain_when_capturing(&mut self, s: &Stmt<'_>) -> StoreResult<()> {
        use sqlx::Row as _;
        let Self::Pg(tx) = self else {
            return Ok(());
        };
        if !crate::testing::plans::capturing() {
            return Ok(());
        }
        let sql = format!("EXPLAIN (FORMAT JSON) {}", s.sql());
        let row = s.pg_with(&sql).fetch_one(&mut **tx).await?;
        let plan: serde_json::Value = row.try_get(0)?;
        crate::testing::plans::record(s.sql(), plan);
        Ok(())
    }

    /// The one row of a query.
    pub(crate) async fn fetch_one(&mut self, s: Stmt<'_>) -> StoreResult<Row> {
        self.fetch_optional(s)
            .await?
            .ok_or_else(|| StoreError::Database("query returned no row".into()))
    }

    async fn commit(self) -> StoreResult<()> {
        match self {
            Self::Pg(tx) => tx.commit().await?,
            Self::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }

    async fn rollback(self) -> StoreResult<()> {
        match self {
            Self::Pg(tx) => tx.rollback().await?,
            Self::Sqlite(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

/// A transaction of one tenant. `Tx` (= `Tx<ReadWrite>`) reads and writes and is fenced;
/// [`ReadTx`] only reads. Postgres applies row-level security to every statement in it;
/// SQLite statements filter on the tenant themselves.
pub struct Tx<A: Access = ReadWrite> {
    pub(crate) conn: Conn,
    pub(crate) tenant: TenantId,
    pub(crate) cipher: Arc<Cipher>,
    access: PhantomData<fn() -> A>,
}

/// A read-only transaction of one tenant.
pub type ReadTx = Tx<ReadOnly>;

impl<A: Access> std::fmt::Debug for Tx<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("tenant", &self.tenant)
            .field("dialect", &self.conn.dialect())
            .finish()
    }
}

impl<A: Access> Tx<A> {
    pub(crate) fn new(conn: Conn, tenant: TenantId, cipher: Arc<Cipher>) -> Self {
        Self {
            conn,
            tenant,
            cipher,
            access: PhantomData,
        }
    }

    /// The tenant every statement of this transaction runs under.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Makes every write of the transaction durable and visible, together.
    pub async fn commit(self) -> StoreResult<()> {
        self.conn.commit().await
    }

    /// Discards every write of the transaction (dropping it does the same).
    pub async fn rollback(self) -> StoreResult<()> {
        self.conn.rollback().await
    }

    /// Refuses a record of another tenant: the transaction writes only its own tenant's
    /// rows (Postgres' row-level security refuses them too; SQLite has no such check).
    pub(crate) fn own(&self, tenant: TenantId, what: &str) -> StoreResult<()> {
        if tenant == self.tenant {
            Ok(())
        } else {
            Err(StoreError::Constraint(format!("{what} of another tenant")))
        }
    }
}

/// A transaction on the narrow cross-tenant worker path (DESIGN §5): the outbox publisher,
/// the timer and partition scans, the door backlog and the audit chain list. `WorkerTx`
/// (= `WorkerTx<ReadWrite>`) reads and writes; [`WorkerReadTx`] only reads.
pub struct WorkerTx<A: Access = ReadWrite> {
    pub(crate) conn: Conn,
    access: PhantomData<fn() -> A>,
}

/// A read-only transaction on the worker path.
pub type WorkerReadTx = WorkerTx<ReadOnly>;

impl<A: Access> std::fmt::Debug for WorkerTx<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerTx")
            .field("dialect", &self.conn.dialect())
            .finish()
    }
}

impl<A: Access> WorkerTx<A> {
    pub(crate) fn new(conn: Conn) -> Self {
        Self {
            conn,
            access: PhantomData,
        }
    }

    /// Makes every write of the transaction durable and visible, together.
    pub async fn commit(self) -> StoreResult<()> {
        self.conn.commit().await
    }

    /// Discards every write of the transaction (dropping it does the same).
    pub async fn rollback(self) -> StoreResult<()> {
        self.conn.rollback().await
    }
}
