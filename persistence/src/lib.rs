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
pub use model::*;
pub use pg::PgStore;
pub use sqlite::SqliteStore;
pub use tables::*;
pub use tx::{Access, ReadOnly, ReadTx, ReadWrite, Storage, Tx, WorkerReadTx, WorkerTx};

use async_trait::async_trait;
use lockstep_domain::{
    KeyCredential, KeyCredentialId, LockDeviceId, PropertyId, ReservationId, RoomId, TenantId,
    Timestamp, VendorCode,
};

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

/// The store, as the actors and the orchestrator see it. Tenant-scoped calls take the
/// tenant and run under it (Postgres: `set_config('app.tenant_id', …, true)` inside the
/// transaction, so RLS applies). Calls marked *worker path* are the narrow cross-tenant
/// path (DESIGN §5).
#[async_trait]
pub trait Store: Storage {
    /// Inbox dedupe and mailbox insert in one transaction (DESIGN §3.1). Acknowledge the
    /// broker only after this returns.
    async fn intake(&self, msg: &IntakeMessage, fence: Option<Fence>)
        -> StoreResult<IntakeOutcome>;

    /// The oldest open, due mailbox entry of a subject.
    async fn next_mailbox_entry(
        &self,
        tenant: TenantId,
        subject: &str,
        now: Timestamp,
    ) -> StoreResult<Option<MailboxEntry>>;

    /// Subjects with due work in a partition (all partitions when `None`); worker path.
    async fn due_subjects(
        &self,
        partition: Option<i32>,
        now: Timestamp,
        limit: i64,
    ) -> StoreResult<Vec<SubjectRef>>;

    /// The (tenant, property) pairs with work in a partition (drift reconciliation); worker
    /// path.
    async fn properties_in_partition(
        &self,
        partition: i32,
    ) -> StoreResult<Vec<(TenantId, PropertyId)>>;

    /// Open mailbox entries and the due time of the oldest (metrics); worker path.
    async fn mailbox_depth(&self) -> StoreResult<(i64, Option<Timestamp>)>;

    /// Applies one saga step atomically.
    async fn commit(&self, uow: UnitOfWork) -> StoreResult<()>;

    /// The stored saga state of a subject.
    async fn load_saga(
        &self,
        tenant: TenantId,
        subject: &str,
    ) -> StoreResult<Option<serde_json::Value>>;

    /// One credential.
    async fn get_credential(
        &self,
        tenant: TenantId,
        id: &KeyCredentialId,
    ) -> StoreResult<Option<KeyCredential>>;

    /// A page of the tenant's credentials matching `filter`, by id, at most `limit`.
    async fn list_credentials(
        &self,
        tenant: TenantId,
        filter: &CredentialFilter,
        limit: i64,
    ) -> StoreResult<Vec<KeyCredential>>;

    /// Credentials of a reservation, oldest first.
    async fn credentials_by_reservation(
        &self,
        tenant: TenantId,
        reservation: &ReservationId,
    ) -> StoreResult<Vec<KeyCredential>>;

    /// Door truth and vendor intents of a credential, decrypted.
    async fn credential_devices(
        &self,
        tenant: TenantId,
        id: &KeyCredentialId,
    ) -> StoreResult<Vec<CredentialDevice>>;

    /// Door truth and vendor intents of every credential on a device (drift reconciliation).
    async fn device_credentials(
        &self,
        tenant: TenantId,
        device: &LockDeviceId,
    ) -> StoreResult<Vec<CredentialDevice>>;

    /// Live devices serving any of the rooms, with the rooms each serves.
    async fn devices_for_rooms(
        &self,
        tenant: TenantId,
        property: &PropertyId,
        rooms: &[RoomId],
    ) -> StoreResult<Vec<Device>>;

    /// Records that a user was deactivated (idempotent: the first time is kept).
    async fn record_user_deactivated(
        &self,
        tenant: TenantId,
        user_id: &str,
        at: Timestamp,
    ) -> StoreResult<()>;

    /// When a user was deactivated, if ever.
    async fn user_deactivated_at(
        &self,
        tenant: TenantId,
        user_id: &str,
    ) -> StoreResult<Option<Timestamp>>;

    /// GCRA over a vendor account's request rate, shared by every node (DESIGN §6): takes
    /// the account's next slot, no earlier than `now_us` and `interval_us` after the slot
    /// before it, and returns it (µs since the epoch): the request may be sent then.
    async fn reserve_rate_slot(
        &self,
        tenant: TenantId,
        account: &str,
        now_us: i64,
        interval_us: i64,
    ) -> StoreResult<i64>;

    /// The vendor answered 429 with Retry-After: no slot of the account before `until_us`.
    async fn hold_rate_until(
        &self,
        tenant: TenantId,
        account: &str,
        until_us: i64,
    ) -> StoreResult<()>;

    /// Every room with a live lock at the property (master-key scopes `rooms_all`).
    async fn property_rooms(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Vec<RoomId>>;

    /// Creates or updates a vendor adapter row.
    async fn upsert_adapter(&self, adapter: &AdapterRecord) -> StoreResult<()>;

    /// Creates or updates a device and its room links; `Ok(true)` when it registered a new
    /// device (its `on_register` outbox rows are then written in the same transaction).
    /// D-1: a second device with the same vendor ref in the tenant's property and vendor is
    /// `Err(Constraint)` (unique on the ref's blind index).
    async fn upsert_device(&self, device: &DeviceRecord) -> StoreResult<bool>;

    /// Records where an adapter's secrets live and their fingerprint (one row per tenant,
    /// property, vendor and environment); a changed fingerprint is a rotation: the row's
    /// pointer, fingerprint, `rotates_at` and `updated_at` move. V-2: no secret bytes.
    async fn record_vendor_credential(
        &self,
        rec: &VendorCredentialRecord,
    ) -> StoreResult<CredentialChange>;

    /// The vendor credential of a property's adapter.
    async fn vendor_credential(
        &self,
        tenant: TenantId,
        property: &PropertyId,
        vendor: VendorCode,
        environment: &str,
    ) -> StoreResult<Option<VendorCredentialRecord>>;

    /// A property's audit chain in sequence order (rows written before the chain existed,
    /// which have no link, are left out).
    async fn audit_chain(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Vec<audit::ChainedAuditRow>>;

    /// Stores a signed root of an audit chain.
    async fn insert_audit_root(&self, root: &audit::SealedRoot) -> StoreResult<()>;

    /// The signed roots of a property's audit chain, in chain order.
    async fn audit_roots(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Vec<audit::SealedRoot>>;

    /// Every (tenant, property) that has an audit chain; worker path (cross-tenant).
    async fn audit_chains(&self) -> StoreResult<Vec<(TenantId, PropertyId)>>;

    /// Stores an offline-issuance certificate, or its revocation (by id).
    async fn save_offline_cert(&self, cert: &lockstep_domain::OfflineIssuance) -> StoreResult<()>;

    /// An offline-issuance certificate of the tenant.
    async fn offline_cert(
        &self,
        tenant: TenantId,
        id: &str,
    ) -> StoreResult<Option<lockstep_domain::OfflineIssuance>>;

    /// How many of the tenant's unrevoked offline-issuance certificates expire before
    /// `before` (rotation due, O-1).
    async fn offline_certs_expiring(&self, tenant: TenantId, before: Timestamp)
        -> StoreResult<i64>;

    /// Key rotation: re-encrypts up to `limit` of the tenant's values (PINs, vendor refs,
    /// vendor device refs, adapter configs) that are under another key version than the
    /// cipher's current one; returns how many. Run until it answers 0.
    async fn reencrypt(&self, tenant: TenantId, limit: i64) -> StoreResult<u64>;

    /// Which of `ids` (vendor event ids) already have a door attempt.
    async fn seen_vendor_events(
        &self,
        tenant: TenantId,
        vendor: VendorCode,
        ids: &[String],
    ) -> StoreResult<Vec<String>>;

    /// Whether a webhook delivery was recorded already.
    async fn webhook_seen(
        &self,
        tenant: TenantId,
        vendor: VendorCode,
        external_event_id: &str,
    ) -> StoreResult<bool>;

    /// Where the message `message_id` of a tenant stands in the mailbox (operator commands
    /// wait on it): `None` if it was never stored, `Some(None)` while it waits, and
    /// `Some(Some(outcome))` once a step handled it.
    async fn message_outcome(
        &self,
        tenant: TenantId,
        message_id: &str,
    ) -> StoreResult<Option<Option<String>>>;

    /// The property of a live (not decommissioned) device, `None` if unknown or retired.
    async fn device_property(
        &self,
        tenant: TenantId,
        device: &LockDeviceId,
    ) -> StoreResult<Option<PropertyId>>;

    /// The registry's view of a device's health, `None` for an unknown device.
    async fn device_health(
        &self,
        tenant: TenantId,
        device: &LockDeviceId,
    ) -> StoreResult<Option<StoredDeviceHealth>>;

    /// A vendor is healthy again: brings its parked drives forward so the backlog drains
    /// now, removals due first (DESIGN §7); worker path. Returns how many were resumed.
    async fn resume_parked(&self, vendor: VendorCode, now: Timestamp) -> StoreResult<u64>;

    /// Unpublished outbox rows due for a publish attempt; worker path.
    async fn unpublished(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<OutboxRow>>;

    /// Marks rows published after a clean broker ack; worker path.
    async fn mark_published(&self, ids: &[String], now: Timestamp) -> StoreResult<()>;

    /// Records a failed publish and when to try again; worker path.
    async fn mark_publish_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> StoreResult<()>;

    /// Subjects with unpublished rows the broker returned as unroutable (kept with
    /// `last_error = 'unroutable'` and no due attempt), and how many each; worker path.
    async fn unroutable_topics(&self) -> StoreResult<Vec<(String, i64)>>;

    /// Makes up to `limit` (all when `None`) of a subject's unroutable rows due at `now`,
    /// oldest first; returns how many; worker path.
    async fn release_unroutable(
        &self,
        topic: &str,
        now: Timestamp,
        limit: Option<i64>,
    ) -> StoreResult<u64>;

    /// Door truth still to be removed at the door (desired absent, sync pending) on the
    /// devices of any of `adapters` (revocations first after an outage, DESIGN §7).
    async fn pending_removals(
        &self,
        tenant: TenantId,
        adapters: &[lockstep_domain::VendorAdapterId],
    ) -> StoreResult<i64>;

    /// Unpublished outbox rows and the age basis of the oldest (metrics); worker path.
    async fn outbox_lag(&self) -> StoreResult<(i64, Option<Timestamp>)>;

    /// Takes ownership of a partition: bumps its epoch and returns the new fence; worker
    /// path. Commits carrying an older fence fail with [`StoreError::Fenced`].
    async fn take_partition(
        &self,
        partition: i32,
        owner: &str,
        now: Timestamp,
    ) -> StoreResult<Fence>;

    /// Creates or replaces the key-kind policy of (tenant, property). A stored policy
    /// keeps its id. K-1 (non-empty preferred order) and K-2 (at most 720 hours) violations
    /// fail with [`StoreError::Constraint`].
    async fn upsert_policy(&self, policy: &PolicyRecord) -> StoreResult<()>;

    /// The key-kind policy of a property.
    async fn get_policy(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Option<PolicyRecord>>;

    /// A staff user's master keys not revoked, oldest first.
    async fn active_masters_of_user(
        &self,
        tenant: TenantId,
        staff_user_id: &str,
    ) -> StoreResult<Vec<MasterKeyRecord>>;

    /// A master key by its id, revoked or not.
    async fn master_by_id(
        &self,
        tenant: TenantId,
        id: &str,
    ) -> StoreResult<Option<MasterKeyRecord>>;

    /// The master key backed by a credential, revoked or not.
    async fn master_by_credential(
        &self,
        tenant: TenantId,
        credential: &KeyCredentialId,
    ) -> StoreResult<Option<MasterKeyRecord>>;

    /// Credentials of a property in any of `states` (every state when empty), oldest
    /// first, with what routes each to its saga (bulk revoke on property deactivation).
    async fn credentials_of_property(
        &self,
        tenant: TenantId,
        property: &PropertyId,
        states: &[&str],
    ) -> StoreResult<Vec<PropertyCredential>>;

    /// Door truth not yet confirmed at the door, across tenants; worker path.
    async fn door_backlog(&self) -> StoreResult<DoorBacklog>;
}
