//! The store contract: what every backend must do, one `async fn` per behaviour, split by
//! table group and run against each backend by `store_contract_tests!`. Each table trait's
//! methods are called directly on a transaction (`tx`, `rtx`, `w`) somewhere in its
//! module (`tidy::every_table_method_has_a_direct_contract_test` checks it); the cases
//! written against `Store` pin the compatibility layer.

pub mod attempts;
pub mod audit;
pub mod credentials;
pub mod devices;
pub mod door_truth;
pub mod encode_jobs;
pub mod encoder_sessions;
pub mod inbox;
pub mod mailbox;
pub mod master_keys;
pub mod offline;
pub mod offline_signatures;
pub mod outbox;
pub mod partitions;
pub mod policies;
pub mod provisional;
pub mod retention;
pub mod rotation;
pub mod saga;
pub mod transactions;
pub mod unit_of_work;
pub mod users;
pub mod vendor_accounts;

/// What every case module uses.
mod prelude {
    pub use anyhow::{ensure, Context};
    pub use lockstep_domain::{
        FailureReason, KeyCredentialScope, KeyCredentialState, RevokeReason, SuspendReason,
        TenantId, ValidityWindow, VendorCode, VendorRef,
    };
    pub use lockstep_persistence::tables::*;
    pub use lockstep_persistence::{
        CredentialFilter, CredentialWrite, Desired, DoorBacklog, DueSubject, EncodeJobState,
        EncodeResult, EncoderSessionRecord, IntakeOutcome, InternalEvent, MailboxKind,
        MailboxUpdate, MasterKeyWrite, NewEncodeJob, PropertyCredential, ProvisionalRecord,
        ProvisionalVerdict, ScheduleDrive, Storage, Store, StoreError, SyncState, UnitOfWork,
    };

    pub use crate::support::*;
}
