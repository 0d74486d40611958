//! Lockstep's storage: one set of store traits (`Store`) implemented for Postgres
//! (production) and SQLite (embedded), their migrations, the persistent mailbox and durable
//! timers, inbox and outbox, the door-truth rows and the audit trail, and the envelope
//! encryption of PINs, vendor refs and device refs at rest.
//!
//! Architecture Invariant: only this crate writes SQL. It depends on `domain` and on no
//! crate above it (no actors, no vendors, no HTTP, no broker). Every write of a saga step
//! goes through [`Store::commit`] as one transaction: state, door truth, outbox, audit
//! and mailbox progress land together or not at all (DESIGN §3).

pub mod audit;
pub mod crypto;
mod dialect;
mod facade;
pub mod migrate;
pub mod model;
pub mod pg;
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
