//! The compatibility layer: the store as actors and orchestrator called it before the
//! storage API, one call one transaction. Each method opens a transaction of the right kind
//! and calls the table traits; nothing here writes SQL. Callers move off it onto
//! [`crate::Storage`] and the tables (a saga step then reads and writes in one
//! transaction instead of several).

use async_trait::async_trait;
use lockstep_domain::{
    KeyCredential, KeyCredentialId, LockDeviceId, PropertyId, ReservationId, RoomId, TenantId,
    Timestamp, VendorCode,
};

use crate::model::*;
use crate::tables::*;
use crate::{audit, Storage, StoreResult};

/// Reads in one read-only transaction of `tenant`: `in_read!(db, tenant, |tx| expr)`, where
/// `expr` may use `.await?` on `tx`.
macro_rules! in_read {
    ($db:expr, $tenant:expr, |$tx:ident| $body:expr) => {{
        let mut $tx = $db.read($tenant).await?;
        let out = $body;
        $tx.commit().await?;
        Ok(out)
    }};
}

/// Writes in one read-write transaction of `tenant` (no fence).
macro_rules! in_write {
    ($db:expr, $tenant:expr, |$tx:ident| $body:expr) => {{
        let mut $tx = $db.begin($tenant, None).await?;
        let out = $body;
        $tx.commit().await?;
        Ok(out)
    }};
}

/// Reads on the worker path.
macro_rules! in_worker_read {
    ($db:expr, |$tx:ident| $body:expr) => {{
        let mut $tx = $db.worker_read().await?;
        let out = $body;
        $tx.commit().await?;
        Ok(out)
    }};
}

/// Writes on the worker path.
macro_rules! in_worker {
    ($db:expr, |$tx:ident| $body:expr) => {{
        let mut $tx = $db.worker().await?;
        let out = $body;
        $tx.commit().await?;
        Ok(out)
    }};
}

/// The compatibility layer over [`Storage`]: every method is one transaction over the
/// tables, implemented once for every store. Tenant-scoped calls open a [`crate::ReadTx`]
/// or [`crate::Tx`] of the tenant (Postgres: `set_config('app.tenant_id', …, true)`
/// inside the transaction, so RLS applies); calls marked *worker path* open a
/// [`crate::WorkerReadTx`] or [`crate::WorkerTx`] (DESIGN §5). New code uses the tables.
#[async_trait]
pub trait Store: Storage {
    /// Inbox dedupe and mailbox insert in one transaction (DESIGN §3.1). Acknowledge the
    /// broker only after this returns.
    async fn intake(
        &self,
        msg: &IntakeMessage,
        fence: Option<Fence>,
    ) -> StoreResult<IntakeOutcome> {
        let mut tx = self.begin(msg.tenant_id, fence).await?;
        if !tx.insert_inbox(msg).await? {
            tx.rollback().await?;
            return Ok(IntakeOutcome::Duplicate);
        }
        tx.enqueue_event(msg).await?;
        tx.commit().await?;
        Ok(IntakeOutcome::Accepted)
    }

    /// [`Store::intake`] of many messages of one tenant in one transaction (a partition
    /// consumer's batch, issue 11): each message is deduped alone, the outcomes come back
    /// in order, and nothing is stored unless everything is. Acknowledge the broker only
    /// after this returns. [`crate::StoreError::Conflict`] when the messages name several tenants.
    async fn intake_batch(
        &self,
        msgs: &[IntakeMessage],
        fence: Option<Fence>,
    ) -> StoreResult<Vec<IntakeOutcome>> {
        let Some(first) = msgs.first() else {
            return Ok(Vec::new());
        };
        if msgs.iter().any(|m| m.tenant_id != first.tenant_id) {
            return Err(crate::StoreError::Conflict {
                entity: "intake batch of several tenants",
            });
        }
        let mut tx = self.begin(first.tenant_id, fence).await?;
        // two statements for the batch, however long (issue 11)
        let recorded = tx.insert_inbox_batch(msgs).await?;
        let new: Vec<&IntakeMessage> = msgs
            .iter()
            .zip(&recorded)
            .filter_map(|(m, new)| new.then_some(m))
            .collect();
        tx.enqueue_events(&new).await?;
        tx.commit().await?;
        Ok(recorded
            .into_iter()
            .map(|new| {
                if new {
                    IntakeOutcome::Accepted
                } else {
                    IntakeOutcome::Duplicate
                }
            })
            .collect())
    }

    /// The oldest open, due mailbox entry of a subject.
    async fn next_mailbox_entry(
        &self,
        tenant: TenantId,
        subject: &str,
        now: Timestamp,
    ) -> StoreResult<Option<MailboxEntry>> {
        in_read!(self, tenant, |tx| tx
            .next_mailbox_entry(subject, now)
            .await?)
    }

    /// Subjects with due work in a partition (all partitions when `None`), removals
    /// first; worker path.
    async fn due_subjects(
        &self,
        partition: Option<i32>,
        now: Timestamp,
        limit: i64,
        removal_topics: &[&str],
    ) -> StoreResult<Vec<DueSubject>> {
        in_worker_read!(self, |tx| tx
            .due_subjects(partition, now, limit, removal_topics)
            .await?)
    }

    /// The (tenant, property) pairs with work in a partition (drift reconciliation); worker
    /// path.
    async fn properties_in_partition(
        &self,
        partition: i32,
    ) -> StoreResult<Vec<(TenantId, PropertyId)>> {
        in_worker_read!(self, |tx| tx.properties_in_partition(partition).await?)
    }

    /// Open mailbox entries and the due time of the oldest (metrics); worker path.
    async fn mailbox_depth(&self) -> StoreResult<(i64, Option<Timestamp>)> {
        in_worker_read!(self, |tx| tx.mailbox_depth().await?)
    }

    /// Applies one saga step atomically: every write of `uow`, in one fenced transaction
    /// of its tenant, through the tables. Postgres may abort a commit to break a deadlock or
    /// a serialization conflict (two commits racing on the I-9 exclusion index can deadlock
    /// instead of one seeing the violation); the commit is data, so it runs again.
    async fn commit(&self, uow: UnitOfWork) -> StoreResult<()> {
        let mut attempt = 0u64;
        loop {
            match apply(self, &uow).await {
                Err(e) if attempt < 4 && e.is_transient() => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// The stored saga state of a subject.
    async fn load_saga(
        &self,
        tenant: TenantId,
        subject: &str,
    ) -> StoreResult<Option<serde_json::Value>> {
        in_read!(self, tenant, |tx| tx.load_saga(subject).await?)
    }

    /// One credential.
    async fn get_credential(
        &self,
        tenant: TenantId,
        id: &KeyCredentialId,
    ) -> StoreResult<Option<KeyCredential>> {
        in_read!(self, tenant, |tx| tx.get_credential(id).await?)
    }

    /// A page of the tenant's credentials matching `filter`, by id, at most `limit`.
    async fn list_credentials(
        &self,
        tenant: TenantId,
        filter: &CredentialFilter,
        limit: i64,
    ) -> StoreResult<Vec<KeyCredential>> {
        in_read!(self, tenant, |tx| tx
            .list_credentials(filter, limit)
            .await?)
    }

    /// Credentials of a reservation, oldest first.
    async fn credentials_by_reservation(
        &self,
        tenant: TenantId,
        reservation: &ReservationId,
    ) -> StoreResult<Vec<KeyCredential>> {
        in_read!(self, tenant, |tx| tx
            .credentials_by_reservation(reservation)
            .await?)
    }

    /// Door truth and vendor intents of a credential, decrypted.
    async fn credential_devices(
        &self,
        tenant: TenantId,
        id: &KeyCredentialId,
    ) -> StoreResult<Vec<CredentialDevice>> {
        in_read!(self, tenant, |tx| tx.credential_devices(id).await?)
    }

    /// Door truth and vendor intents of every credential on a device (drift reconciliation).
    async fn device_credentials(
        &self,
        tenant: TenantId,
        device: &LockDeviceId,
    ) -> StoreResult<Vec<CredentialDevice>> {
        in_read!(self, tenant, |tx| tx.device_credentials(device).await?)
    }

    /// Live devices serving any of the rooms, with the rooms each serves.
    async fn devices_for_rooms(
        &self,
        tenant: TenantId,
        property: &PropertyId,
        rooms: &[RoomId],
    ) -> StoreResult<Vec<Device>> {
        in_read!(self, tenant, |tx| tx
            .devices_for_rooms(property, rooms)
            .await?)
    }

    /// Records that a user was deactivated (idempotent: the first time is kept).
    async fn record_user_deactivated(
        &self,
        tenant: TenantId,
        user_id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        in_write!(self, tenant, |tx| tx
            .record_user_deactivated(user_id, at)
            .await?)
    }

    /// When a user was deactivated, if ever.
    async fn user_deactivated_at(
        &self,
        tenant: TenantId,
        user_id: &str,
    ) -> StoreResult<Option<Timestamp>> {
        in_read!(self, tenant, |tx| tx.user_deactivated_at(user_id).await?)
    }

    /// Records that a property was deactivated (idempotent: the first time is kept).
    async fn record_property_deactivated(
        &self,
        tenant: TenantId,
        property: &PropertyId,
        at: Timestamp,
    ) -> StoreResult<()> {
        in_write!(self, tenant, |tx| tx
            .record_property_deactivated(property, at)
            .await?)
    }

    /// When a property was deactivated, if ever.
    async fn property_deactivated_at(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Option<Timestamp>> {
        in_read!(self, tenant, |tx| tx
            .property_deactivated_at(property)
            .await?)
    }

    /// GCRA over a vendor account's request rate, shared by every node (DESIGN §6): takes
    /// the account's next slot, no earlier than `now_us` and `interval_us` after the slot
    /// before it, and returns it (µs since the epoch): the request may be sent then.
    async fn reserve_rate_slot(
        &self,
        tenant: TenantId,
        account: &str,
        now_us: i64,
        interval_us: i64,
    ) -> StoreResult<i64> {
        in_write!(self, tenant, |tx| tx
            .reserve_rate_slot(account, now_us, interval_us)
            .await?)
    }

    /// The vendor answered 429 with Retry-After: no slot of the account before `until_us`.
    async fn hold_rate_until(
        &self,
        tenant: TenantId,
        account: &str,
        until_us: i64,
    ) -> StoreResult<()> {
        in_write!(self, tenant, |tx| tx
            .hold_rate_until(account, until_us)
            .await?)
    }

    /// Live devices that open a common area or the back of house (migration 0016).
    async fn area_devices(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Vec<Device>> {
        in_read!(self, tenant, |tx| tx.area_devices(property).await?)
    }

    /// Every room with a live lock at the property (master-key scopes `rooms_all`).
    async fn property_rooms(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Vec<RoomId>> {
        in_read!(self, tenant, |tx| tx.property_rooms(property).await?)
    }

    /// Creates or updates a vendor adapter row.
    async fn upsert_adapter(&self, adapter: &AdapterRecord) -> StoreResult<()> {
        in_write!(self, adapter.tenant_id, |tx| tx
            .upsert_adapter(adapter)
            .await?)
    }

    /// Creates or updates a device and its room links; `Ok(true)` when it registered a new
    /// device (its `on_register` outbox rows are then written in the same transaction).
    /// D-1: a second device with the same vendor ref in the tenant's property and vendor is
    /// `Err(Constraint)` (unique on the ref's blind index).
    async fn upsert_device(&self, device: &DeviceRecord) -> StoreResult<bool> {
        in_write!(self, device.tenant_id, |tx| tx
            .upsert_device(device)
            .await?)
    }

    /// Records where an adapter's secrets live and their fingerprint (one row per tenant,
    /// property, vendor and environment); a changed fingerprint is a rotation: the row's
    /// pointer, fingerprint, `rotates_at` and `updated_at` move. V-2: no secret bytes.
    async fn record_vendor_credential(
        &self,
        rec: &VendorCredentialRecord,
    ) -> StoreResult<CredentialChange> {
        in_write!(self, rec.tenant_id, |tx| tx
            .record_vendor_credential(rec)
            .await?)
    }

    /// The vendor credential of a property's adapter.
    async fn vendor_credential(
        &self,
        tenant: TenantId,
        property: &PropertyId,
        vendor: VendorCode,
        environment: &str,
    ) -> StoreResult<Option<VendorCredentialRecord>> {
        in_read!(self, tenant, |tx| tx
            .vendor_credential(property, vendor, environment)
            .await?)
    }

    /// A property's linked audit rows in sequence order, from its retention anchor on (rows
    /// the linker has not reached are in [`Store::pending_audit`]).
    async fn audit_chain(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Vec<audit::ChainedAuditRow>> {
        in_read!(self, tenant, |tx| tx.audit_chain(property).await?)
    }

    /// A property's audit rows not linked yet, in the order the linker will link them.
    async fn pending_audit(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Vec<AuditRow>> {
        in_read!(self, tenant, |tx| tx.pending_audit(property).await?)
    }

    /// The head of a property's audit chain (last link, retention anchor), if it has one.
    async fn audit_head(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Option<audit::ChainHead>> {
        in_read!(self, tenant, |tx| tx.audit_head(property).await?)
    }

    /// Stores a signed root of an audit chain.
    async fn insert_audit_root(&self, root: &audit::SealedRoot) -> StoreResult<()> {
        in_write!(self, root.tenant_id, |tx| tx
            .insert_audit_root(root)
            .await?)
    }

    /// The signed roots of a property's audit chain, in chain order.
    async fn audit_roots(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Vec<audit::SealedRoot>> {
        in_read!(self, tenant, |tx| tx.audit_roots(property).await?)
    }

    /// Every (tenant, property) that has an audit chain or rows waiting for one; worker
    /// path (cross-tenant).
    async fn audit_chains(&self) -> StoreResult<Vec<(TenantId, PropertyId)>> {
        in_worker_read!(self, |tx| tx.audit_chains().await?)
    }

    /// Stores an offline-issuance certificate, or its revocation (by id).
    async fn save_offline_cert(&self, cert: &lockstep_domain::OfflineIssuance) -> StoreResult<()> {
        in_write!(self, cert.tenant_id, |tx| tx
            .save_offline_cert(cert)
            .await?)
    }

    /// An offline-issuance certificate of the tenant.
    async fn offline_cert(
        &self,
        tenant: TenantId,
        id: &str,
    ) -> StoreResult<Option<lockstep_domain::OfflineIssuance>> {
        in_read!(self, tenant, |tx| tx.offline_cert(id).await?)
    }

    /// How many of the tenant's unrevoked offline-issuance certificates expire before
    /// `before` (rotation due, O-1).
    async fn offline_certs_expiring(
        &self,
        tenant: TenantId,
        before: Timestamp,
    ) -> StoreResult<i64> {
        in_read!(self, tenant, |tx| tx.offline_certs_expiring(before).await?)
    }

    /// Key rotation: re-encrypts up to `limit` of the tenant's values (PINs, vendor refs,
    /// vendor device refs, adapter configs) that are under another key version than the
    /// cipher's current one; returns how many. Run until it answers 0.
    async fn reencrypt(&self, tenant: TenantId, limit: i64) -> StoreResult<u64> {
        in_write!(self, tenant, |tx| tx.reencrypt(limit).await?)
    }

    /// Which of `ids` (vendor event ids) already have a door attempt.
    async fn seen_vendor_events(
        &self,
        tenant: TenantId,
        vendor: VendorCode,
        ids: &[String],
    ) -> StoreResult<Vec<String>> {
        in_read!(self, tenant, |tx| tx
            .seen_vendor_events(vendor, ids)
            .await?)
    }

    /// Whether a webhook delivery was recorded already.
    async fn webhook_seen(
        &self,
        tenant: TenantId,
        vendor: VendorCode,
        external_event_id: &str,
    ) -> StoreResult<bool> {
        in_read!(self, tenant, |tx| tx
            .webhook_seen(vendor, external_event_id)
            .await?)
    }

    /// Where the message `message_id` of a tenant stands in the mailbox (operator commands
    /// wait on it): `None` if it was never stored, `Some(None)` while it waits, and
    /// `Some(Some(outcome))` once a step handled it.
    async fn message_outcome(
        &self,
        tenant: TenantId,
        message_id: &str,
    ) -> StoreResult<Option<Option<String>>> {
        in_read!(self, tenant, |tx| tx.message_outcome(message_id).await?)
    }

    /// A page of a property's live devices by id (D-2: never a decommissioned one).
    async fn list_devices(
        &self,
        tenant: TenantId,
        property: &PropertyId,
        after: Option<&LockDeviceId>,
        limit: i64,
    ) -> StoreResult<Vec<Device>> {
        in_read!(self, tenant, |tx| tx
            .list_devices(property, after, limit)
            .await?)
    }

    /// D-4: sets a live device's battery threshold; `false` if unknown or decommissioned.
    async fn set_battery_threshold(
        &self,
        tenant: TenantId,
        device: &LockDeviceId,
        threshold: lockstep_domain::BatteryThreshold,
    ) -> StoreResult<bool> {
        in_write!(self, tenant, |tx| tx
            .set_battery_threshold(device, threshold)
            .await?)
    }

    /// D-2: retires a device, writing `on_decommission` only when it was live.
    async fn decommission_device(
        &self,
        tenant: TenantId,
        device: &LockDeviceId,
        now: Timestamp,
        on_decommission: &[OutboxRow],
    ) -> StoreResult<Decommission> {
        in_write!(self, tenant, |tx| tx
            .decommission_device(device, now, on_decommission)
            .await?)
    }

    /// The property of a live (not decommissioned) device, `None` if unknown or retired.
    async fn device_property(
        &self,
        tenant: TenantId,
        device: &LockDeviceId,
    ) -> StoreResult<Option<PropertyId>> {
        in_read!(self, tenant, |tx| tx.device_property(device).await?)
    }

    /// The registry's view of a device's health, `None` for an unknown device.
    async fn device_health(
        &self,
        tenant: TenantId,
        device: &LockDeviceId,
    ) -> StoreResult<Option<StoredDeviceHealth>> {
        in_read!(self, tenant, |tx| tx.device_health(device).await?)
    }

    /// A vendor is healthy again: brings its parked drives forward so the backlog drains
    /// now, removals due first (DESIGN §7); worker path. Returns how many were resumed.
    async fn resume_parked(&self, vendor: VendorCode, now: Timestamp) -> StoreResult<u64> {
        in_worker!(self, |tx| tx.resume_parked(vendor, now).await?)
    }

    /// Unpublished outbox rows due for a publish attempt; worker path.
    async fn unpublished(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<OutboxRow>> {
        in_worker_read!(self, |tx| tx.unpublished(now, limit).await?)
    }

    /// Claims up to `limit` due outbox rows for this publisher until `lease_until`
    /// (concurrent publishers take disjoint rows); worker path.
    async fn claim_unpublished(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRow>> {
        in_worker!(self, |tx| tx
            .claim_unpublished(now, lease_until, limit)
            .await?)
    }

    /// Marks rows published after a clean broker ack; worker path.
    async fn mark_published(&self, ids: &[String], now: Timestamp) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        in_worker!(self, |tx| tx.mark_published(ids, now).await?)
    }

    /// Marks `published` rows published and claims the next due rows, in one
    /// transaction (issue 11: the publisher's marks ride on its next claim instead of a
    /// transaction of their own); worker path.
    async fn mark_published_then_claim(
        &self,
        published: &[String],
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRow>> {
        in_worker!(self, |tx| {
            if !published.is_empty() {
                tx.mark_published(published, now).await?;
            }
            tx.claim_unpublished(now, lease_until, limit).await?
        })
    }

    /// Records a failed publish and when to try again; worker path.
    async fn mark_publish_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> StoreResult<()> {
        in_worker!(self, |tx| tx
            .mark_publish_failed(id, error, next_attempt_at)
            .await?)
    }

    /// Subjects with unpublished rows the broker returned as unroutable (kept with
    /// `last_error = 'unroutable'` and no due attempt), and how many each; worker path.
    async fn unroutable_topics(&self) -> StoreResult<Vec<(String, i64)>> {
        in_worker_read!(self, |tx| tx.unroutable_topics().await?)
    }

    /// Makes up to `limit` (all when `None`) of a subject's unroutable rows due at `now`,
    /// oldest first; returns how many; worker path.
    async fn release_unroutable(
        &self,
        topic: &str,
        now: Timestamp,
        limit: Option<i64>,
    ) -> StoreResult<u64> {
        in_worker!(self, |tx| tx.release_unroutable(topic, now, limit).await?)
    }

    /// Door truth still to be removed at the door (desired absent, sync pending) on the
    /// devices of any of `adapters` (revocations first after an outage, DESIGN §7).
    async fn pending_removals(
        &self,
        tenant: TenantId,
        adapters: &[lockstep_domain::VendorAdapterId],
    ) -> StoreResult<i64> {
        in_read!(self, tenant, |tx| tx.pending_removals(adapters).await?)
    }

    /// Removal messages of `topics` due by `now` and not yet decided at properties with a
    /// device of any of `adapters` (revocations first after an outage, DESIGN §7).
    async fn undecided_removals(
        &self,
        tenant: TenantId,
        adapters: &[lockstep_domain::VendorAdapterId],
        topics: &[&str],
        now: Timestamp,
    ) -> StoreResult<i64> {
        in_read!(self, tenant, |tx| tx
            .undecided_removals(adapters, topics, now)
            .await?)
    }

    /// Outbox rows waiting to be published and the age basis of the oldest (metrics; kept
    /// unroutable rows are counted apart); worker path.
    async fn outbox_lag(&self) -> StoreResult<(i64, Option<Timestamp>)> {
        in_worker_read!(self, |tx| tx.outbox_lag().await?)
    }

    /// Takes ownership of a partition: bumps its epoch and returns the new fence; worker
    /// path. Commits carrying an older fence fail with [`crate::StoreError::Fenced`].
    async fn take_partition(
        &self,
        partition: i32,
        owner: &str,
        now: Timestamp,
    ) -> StoreResult<Fence> {
        in_worker!(self, |tx| tx.take_partition(partition, owner, now).await?)
    }

    /// Creates or replaces the key-kind policy of (tenant, property). A stored policy
    /// keeps its id. K-1 (non-empty preferred order) and K-2 (at most 720 hours) violations
    /// fail with [`crate::StoreError::Constraint`].
    async fn upsert_policy(&self, policy: &PolicyRecord) -> StoreResult<()> {
        in_write!(self, policy.tenant_id, |tx| tx
            .upsert_policy(policy)
            .await?)
    }

    /// The key-kind policy of a property.
    async fn get_policy(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Option<PolicyRecord>> {
        in_read!(self, tenant, |tx| tx.get_policy(property).await?)
    }

    /// A staff user's master keys not revoked, oldest first.
    async fn active_masters_of_user(
        &self,
        tenant: TenantId,
        staff_user_id: &str,
    ) -> StoreResult<Vec<MasterKeyRecord>> {
        in_read!(self, tenant, |tx| tx
            .active_masters_of_user(staff_user_id)
            .await?)
    }

    /// A master key by its id, revoked or not.
    async fn master_by_id(
        &self,
        tenant: TenantId,
        id: &str,
    ) -> StoreResult<Option<MasterKeyRecord>> {
        in_read!(self, tenant, |tx| tx.master_by_id(id).await?)
    }

    /// The master key backed by a credential, revoked or not.
    async fn master_by_credential(
        &self,
        tenant: TenantId,
        credential: &KeyCredentialId,
    ) -> StoreResult<Option<MasterKeyRecord>> {
        in_read!(self, tenant, |tx| tx
            .master_by_credential(credential)
            .await?)
    }

    /// Credentials of a property in any of `states` (every state when empty), oldest
    /// first, with what routes each to its saga (bulk revoke on property deactivation).
    async fn credentials_of_property(
        &self,
        tenant: TenantId,
        property: &PropertyId,
        states: &[&str],
    ) -> StoreResult<Vec<PropertyCredential>> {
        in_read!(self, tenant, |tx| tx
            .credentials_of_property(property, states)
            .await?)
    }

    /// Door truth not yet confirmed at the door, across tenants; worker path.
    async fn door_backlog(&self) -> StoreResult<DoorBacklog> {
        in_worker_read!(self, |tx| tx.door_backlog().await?)
    }
}

/// Every store is the compatibility layer too.
impl<S: Storage + ?Sized> Store for S {}

/// One attempt of [`Store::commit`]: a transaction that applies the step's writes.
async fn apply<S: Storage + ?Sized>(db: &S, uow: &UnitOfWork) -> StoreResult<()> {
    let mut tx = db.begin(uow.tenant_id, uow.fence).await?;
    tx.apply(uow).await?;
    tx.commit().await
}

impl crate::tx::Tx {
    /// Writes everything a step produced, in the order the schema's locks expect
    /// (credentials and their room links first, the mailbox last; audit rows go in unlinked),
    /// without committing: a step that read inside this transaction commits once.
    pub async fn apply(&mut self, uow: &UnitOfWork) -> StoreResult<()> {
        let tx = self;
        for w in &uow.credentials {
            match w.expected_version {
                None => tx.insert_credential(&w.snapshot).await?,
                Some(v) => tx.update_credential(&w.snapshot, v).await?,
            }
        }
        match &uow.master {
            Some(MasterKeyWrite::Insert(k)) => tx.insert_master(k).await?,
            Some(MasterKeyWrite::Revoke { id, revoked_at }) => {
                tx.revoke_master(id, *revoked_at).await?
            }
            None => {}
        }
        let learned_at = uow.learned_at.unwrap_or(uow.now);
        for d in &uow.devices {
            tx.put_door_truth(d, uow.now, learned_at).await?;
        }
        if let Some((subject, state)) = &uow.saga {
            tx.put_saga(subject, state, uow.now).await?;
        }
        tx.append_outbox(&uow.outbox).await?;
        for a in &uow.attempts {
            tx.insert_attempt(a).await?;
        }
        for w in &uow.webhooks {
            tx.insert_webhook(w, uow.now).await?;
        }
        for h in &uow.device_health {
            tx.record_device_health(h, uow.now).await?;
        }
        tx.append_audit(&uow.audit).await?;
        for m in &uow.mailbox {
            match m {
                MailboxUpdate::Done {
                    id,
                    subject,
                    outcome,
                } => tx.complete_entry(subject, *id, outcome, uow.now).await?,
                MailboxUpdate::Retry {
                    id,
                    subject,
                    due_at,
                    attempts,
                    last_error,
                } => {
                    tx.retry_entry(subject, *id, *due_at, *attempts, last_error)
                        .await?
                }
            }
        }
        for s in &uow.schedule {
            tx.schedule_drive(s, uow.now).await?;
        }
        for e in &uow.events {
            tx.enqueue_internal(e, uow.now).await?;
        }
        Ok(())
    }
}
