//! Lockstep's storage: Postgres (production) and SQLite (embedded) behind one storage API,
//! their migrations, the persistent mailbox and durable timers, inbox and outbox, door
//! truth, the audit hash chain, and the envelope encryption of PINs, vendor refs, device
//! refs and adapter configs at rest.
//!
//! The API is restate's `storage-api` shape. A [`Storage`] (one per process, held as
//! `Arc<dyn Storage>` or `Arc<dyn Store>`) opens transactions whose type says which path a
//! call is on: [`Tx`] (one tenant, read-write, checked against the partition's fence),
//! [`ReadTx`] (one tenant, read-only), [`WorkerTx`] and [`WorkerReadTx`] (the narrow
//! cross-tenant worker path, DESIGN §5). Tables are small traits over them, one per table
//! group ([`tables`]: a `ReadOnly…Table` for the reads and a `…Table` for the writes),
//! implemented once for both backends: a saga step names the tables it touches
//! (`tx: &mut (impl CredentialTable + DoorTruthTable)`), reads inside the transaction that
//! writes, and ends with [`Tx::commit`]. The SQL and the row mapping are written once;
//! what Postgres and SQLite do differently (value types, lists, row locks, the statements
//! that really differ) sits in one dialect layer, and how a transaction begins
//! (`set_config` for row-level security and the fence lock, or `BEGIN IMMEDIATE` on
//! SQLite's single writer) in [`pg`] and [`sqlite`].
//!
//! [`Store`] is the compatibility layer callers move off: the former one-call-one-
//! transaction methods, each a transaction over the tables, with [`Store::commit`]
//! applying a [`UnitOfWork`].
//!
//! Architecture Invariant: only this crate writes SQL. It depends on `domain` and on no
//! crate above it (no actors, no vendors, no HTTP, no broker). Every write of a saga step
//! goes through one transaction: state, door truth, outbox, audit and mailbox progress land
//! together or not at all (DESIGN §3).
//!
//! Architecture Invariant: only `pg.rs` and `sqlite.rs` open transactions, and only the
//! worker transaction types reach across tenants.

pub mod audit;
pub mod crypto;
mod dialect;
mod facade;
pub mod migrate;
pub mod mirror;
pub mod model;
pub mod pg;
pub mod retention;
pub mod sqlite;
pub mod tables;
#[cfg(feature = "testing")]
pub mod testing;
mod tx;

pub use crypto::{Cipher, Kms, LocalKms};
pub use facade::Store;
pub use model::*;
pub use pg::PgStore;
pub use sqlite::SqliteStore;
pub use tables::*;
pub use tx::{Access, ReadOnly, ReadTx, ReadWrite, Storage, Tx, WorkerReadTx, WorkerTx};

/// Errors of the store. Messages never carry secrets or vendor refs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The partition's epoch moved: another node owns it now (DESIGN §4).
    #[error("partition fenced: another node owns it")]
    Fenced,
    /// An optimistic version check failed.
    #[error("concurrent modification of {entity}")]
    Conflict {
        /// What.
        entity: &'static str,
    },
    /// I-9: a live guest credential of another reservation already holds one of the rooms
    /// for an overlapping window. Retrying cannot succeed: fail the newcomer.
    #[error("I-9: another reservation's credential overlaps this one on a room")]
    Overlap,
    /// A constraint of the schema refused the write.
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// Stored data failed to decode or decrypt.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            // Postgres: exclusion_violation of `ex_kcr_no_overlap`; SQLite: the trigger's
            // message.
            if db.code().as_deref() == Some(OVERLAP_SQLSTATE)
                || db.message().starts_with(OVERLAP_TRIGGER_PREFIX)
            {
                return StoreError::Overlap;
            }
            if db.is_unique_violation() || db.is_check_violation() || db.is_foreign_key_violation()
            {
                return StoreError::Constraint(db.message().to_owned());
            }
        }
        StoreError::Database(e.to_string())
    }
}

impl StoreError {
    /// Whether the database aborted the transaction to break a deadlock or a serialization
    /// conflict (Postgres): the same transaction run again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Database(msg)
            if msg.contains("deadlock detected") || msg.contains("could not serialize access"))
    }
}

impl From<lockstep_domain::DomainError> for StoreError {
    fn from(e: lockstep_domain::DomainError) -> Self {
        StoreError::Corrupt(format!("{e:?}"))
    }
}

/// SQLSTATE of an exclusion-constraint violation (Postgres).
const OVERLAP_SQLSTATE: &str = "23P01";
/// How the SQLite I-9 triggers' messages begin.
const OVERLAP_TRIGGER_PREFIX: &str = "I-9:";

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;
