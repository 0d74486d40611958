//! The storage API: one small trait per table group, implemented once over the
//! transaction types ([`crate::Tx`] and the others) and written once for both backends
//! through the dialect layer (restate's `storage-api` is the model).
//!
//! A tenant table has a `ReadOnly…Table` trait (implemented by [`crate::Tx`] and
//! [`crate::ReadTx`]) and a `…Table` trait for its writes (implemented by [`crate::Tx`]
//! only). The worker path's tables are implemented by [`crate::WorkerTx`] and
//! [`crate::WorkerReadTx`] only. A saga step names the tables it touches:
//! `async fn step(tx: &mut (impl CredentialTable + DoorTruthTable)) -> StoreResult<()>`.

mod attempts;
mod audit;
mod credentials;
mod devices;
mod door_truth;
mod encode_jobs;
mod encoder_sessions;
mod inbox;
mod mailbox;
mod master_keys;
mod offline;
mod offline_signatures;
mod outbox;
mod partitions;
mod policies;
mod provisional;
mod retention;
mod rotation;
mod saga;
mod users;
mod vendor_accounts;

pub use attempts::{DoorAttemptTable, ReadOnlyDoorAttemptTable};
pub use audit::{AuditLinkTable, AuditTable, ReadOnlyAuditHeadTable, ReadOnlyAuditTable};
pub use credentials::{CredentialTable, ReadOnlyCredentialTable};
pub use devices::{DeviceTable, ReadOnlyDeviceTable};
pub use door_truth::{DoorTruthTable, ReadOnlyDoorBacklogTable, ReadOnlyDoorTruthTable};
pub use encode_jobs::{
    door_index, EncodeJobRecord, EncodeJobState, EncodeJobTable, EncodeResult, NewEncodeJob,
    ReadOnlyEncodeJobTable,
};
pub use encoder_sessions::{
    EncoderSessionRecord, EncoderSessionTable, ReadOnlyEncoderSessionScanTable,
    ReadOnlyEncoderSessionTable,
};
pub use inbox::InboxTable;
pub use mailbox::{MailboxTable, ReadOnlyMailboxTable, ReadOnlyTimerTable, TimerTable};
pub use master_keys::{MasterKeyTable, ReadOnlyMasterKeyTable};
pub use offline::{OfflineCertTable, ReadOnlyOfflineCertTable};
pub use offline_signatures::{OfflineCertSignatureTable, ReadOnlyOfflineCertSignatureTable};
pub use outbox::{OutboxPublisherTable, OutboxTable, ReadOnlyOutboxPublisherTable};
pub(crate) use partitions::check_fence;
pub use partitions::{PartitionTable, ReadOnlyPartitionTable};
pub use policies::{PolicyTable, ReadOnlyPolicyTable};
pub use provisional::{
    ProvisionalRecord, ProvisionalTable, ProvisionalVerdict, ReadOnlyProvisionalTable,
};
pub use retention::{Retained, RetentionTable};
pub use rotation::KeyRotationTable;
pub use saga::{ReadOnlySagaTable, SagaTable};
pub use users::{ReadOnlyUserTable, UserTable};
pub use vendor_accounts::{ReadOnlyVendorAccountTable, VendorAccountTable};
