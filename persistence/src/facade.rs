//! The compatibility layer: the old one-call-one-transaction `Store` methods, each
//! opening a transaction and calling the table traits. Callers move off it onto
//! [`crate::Storage`] and the tables.

use lockstep_domain::{
    KeyCredential, KeyCredentialId, LockDeviceId, PropertyId, ReservationId, RoomId, TenantId,
    Timestamp, VendorAdapterId, VendorCode,
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

pub(crate) async fn intake<S: Storage + ?Sized>(
    db: &S,
    msg: &IntakeMessage,
    fence: Option<Fence>,
) -> StoreResult<IntakeOutcome> {
    let mut tx = db.begin(msg.tenant_id, fence).await?;
    if !tx.insert_inbox(msg).await? {
        tx.rollback().await?;
        return Ok(IntakeOutcome::Duplicate);
    }
    tx.enqueue_event(msg).await?;
    tx.commit().await?;
    Ok(IntakeOutcome::Accepted)
}

pub(crate) async fn next_mailbox_entry<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    subject: &str,
    now: Timestamp,
) -> StoreResult<Option<MailboxEntry>> {
    in_read!(db, tenant, |tx| tx.next_mailbox_entry(subject, now).await?)
}

pub(crate) async fn message_outcome<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    message_id: &str,
) -> StoreResult<Option<Option<String>>> {
    in_read!(db, tenant, |tx| tx.message_outcome(message_id).await?)
}

pub(crate) async fn due_subjects<S: Storage + ?Sized>(
    db: &S,
    partition: Option<i32>,
    now: Timestamp,
    limit: i64,
) -> StoreResult<Vec<SubjectRef>> {
    in_worker_read!(db, |tx| tx.due_subjects(partition, now, limit).await?)
}

pub(crate) async fn properties_in_partition<S: Storage + ?Sized>(
    db: &S,
    partition: i32,
) -> StoreResult<Vec<(TenantId, PropertyId)>> {
    in_worker_read!(db, |tx| tx.properties_in_partition(partition).await?)
}

pub(crate) async fn mailbox_depth<S: Storage + ?Sized>(
    db: &S,
) -> StoreResult<(i64, Option<Timestamp>)> {
    in_worker_read!(db, |tx| tx.mailbox_depth().await?)
}

pub(crate) async fn resume_parked<S: Storage + ?Sized>(
    db: &S,
    vendor: VendorCode,
    now: Timestamp,
) -> StoreResult<u64> {
    in_worker!(db, |tx| tx.resume_parked(vendor, now).await?)
}

pub(crate) async fn take_partition<S: Storage + ?Sized>(
    db: &S,
    partition: i32,
    owner: &str,
    now: Timestamp,
) -> StoreResult<Fence> {
    in_worker!(db, |tx| tx.take_partition(partition, owner, now).await?)
}

pub(crate) async fn get_credential<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    id: &KeyCredentialId,
) -> StoreResult<Option<KeyCredential>> {
    in_read!(db, tenant, |tx| tx.get_credential(id).await?)
}

pub(crate) async fn list_credentials<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    filter: &CredentialFilter,
    limit: i64,
) -> StoreResult<Vec<KeyCredential>> {
    in_read!(db, tenant, |tx| tx.list_credentials(filter, limit).await?)
}

pub(crate) async fn credentials_by_reservation<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    reservation: &ReservationId,
) -> StoreResult<Vec<KeyCredential>> {
    in_read!(db, tenant, |tx| tx
        .credentials_by_reservation(reservation)
        .await?)
}

pub(crate) async fn credentials_of_property<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    property: &PropertyId,
    states: &[&str],
) -> StoreResult<Vec<PropertyCredential>> {
    in_read!(db, tenant, |tx| tx
        .credentials_of_property(property, states)
        .await?)
}

pub(crate) async fn credential_devices<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    id: &KeyCredentialId,
) -> StoreResult<Vec<CredentialDevice>> {
    in_read!(db, tenant, |tx| tx.credential_devices(id).await?)
}

pub(crate) async fn device_credentials<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    device: &LockDeviceId,
) -> StoreResult<Vec<CredentialDevice>> {
    in_read!(db, tenant, |tx| tx.device_credentials(device).await?)
}

pub(crate) async fn pending_removals<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    adapters: &[VendorAdapterId],
) -> StoreResult<i64> {
    in_read!(db, tenant, |tx| tx.pending_removals(adapters).await?)
}

pub(crate) async fn door_backlog<S: Storage + ?Sized>(db: &S) -> StoreResult<DoorBacklog> {
    in_worker_read!(db, |tx| tx.door_backlog().await?)
}

pub(crate) async fn load_saga<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    subject: &str,
) -> StoreResult<Option<serde_json::Value>> {
    in_read!(db, tenant, |tx| tx.load_saga(subject).await?)
}

pub(crate) async fn unpublished<S: Storage + ?Sized>(
    db: &S,
    now: Timestamp,
    limit: i64,
) -> StoreResult<Vec<OutboxRow>> {
    in_worker_read!(db, |tx| tx.unpublished(now, limit).await?)
}

pub(crate) async fn mark_published<S: Storage + ?Sized>(
    db: &S,
    ids: &[String],
    now: Timestamp,
) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    in_worker!(db, |tx| tx.mark_published(ids, now).await?)
}

pub(crate) async fn mark_publish_failed<S: Storage + ?Sized>(
    db: &S,
    id: &str,
    error: &str,
    next_attempt_at: Timestamp,
) -> StoreResult<()> {
    in_worker!(db, |tx| tx
        .mark_publish_failed(id, error, next_attempt_at)
        .await?)
}

pub(crate) async fn unroutable_topics<S: Storage + ?Sized>(
    db: &S,
) -> StoreResult<Vec<(String, i64)>> {
    in_worker_read!(db, |tx| tx.unroutable_topics().await?)
}

pub(crate) async fn release_unroutable<S: Storage + ?Sized>(
    db: &S,
    topic: &str,
    now: Timestamp,
    limit: Option<i64>,
) -> StoreResult<u64> {
    in_worker!(db, |tx| tx.release_unroutable(topic, now, limit).await?)
}

pub(crate) async fn outbox_lag<S: Storage + ?Sized>(
    db: &S,
) -> StoreResult<(i64, Option<Timestamp>)> {
    in_worker_read!(db, |tx| tx.outbox_lag().await?)
}

pub(crate) async fn audit_chain<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    property: &PropertyId,
) -> StoreResult<Vec<audit::ChainedAuditRow>> {
    in_read!(db, tenant, |tx| tx.audit_chain(property).await?)
}

pub(crate) async fn insert_audit_root<S: Storage + ?Sized>(
    db: &S,
    root: &audit::SealedRoot,
) -> StoreResult<()> {
    in_write!(db, root.tenant_id, |tx| tx.insert_audit_root(root).await?)
}

pub(crate) async fn audit_roots<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    property: &PropertyId,
) -> StoreResult<Vec<audit::SealedRoot>> {
    in_read!(db, tenant, |tx| tx.audit_roots(property).await?)
}

pub(crate) async fn audit_chains<S: Storage + ?Sized>(
    db: &S,
) -> StoreResult<Vec<(TenantId, PropertyId)>> {
    in_worker_read!(db, |tx| tx.audit_chains().await?)
}

pub(crate) async fn devices_for_rooms<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    property: &PropertyId,
    rooms: &[RoomId],
) -> StoreResult<Vec<Device>> {
    in_read!(db, tenant, |tx| tx
        .devices_for_rooms(property, rooms)
        .await?)
}

pub(crate) async fn property_rooms<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    property: &PropertyId,
) -> StoreResult<Vec<RoomId>> {
    in_read!(db, tenant, |tx| tx.property_rooms(property).await?)
}

pub(crate) async fn device_property<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    device: &LockDeviceId,
) -> StoreResult<Option<PropertyId>> {
    in_read!(db, tenant, |tx| tx.device_property(device).await?)
}

pub(crate) async fn device_health<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    device: &LockDeviceId,
) -> StoreResult<Option<StoredDeviceHealth>> {
    in_read!(db, tenant, |tx| tx.device_health(device).await?)
}

pub(crate) async fn upsert_adapter<S: Storage + ?Sized>(
    db: &S,
    adapter: &AdapterRecord,
) -> StoreResult<()> {
    in_write!(db, adapter.tenant_id, |tx| tx
        .upsert_adapter(adapter)
        .await?)
}

pub(crate) async fn upsert_device<S: Storage + ?Sized>(
    db: &S,
    device: &DeviceRecord,
) -> StoreResult<bool> {
    in_write!(db, device.tenant_id, |tx| tx.upsert_device(device).await?)
}

pub(crate) async fn upsert_policy<S: Storage + ?Sized>(
    db: &S,
    policy: &PolicyRecord,
) -> StoreResult<()> {
    in_write!(db, policy.tenant_id, |tx| tx.upsert_policy(policy).await?)
}

pub(crate) async fn get_policy<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    property: &PropertyId,
) -> StoreResult<Option<PolicyRecord>> {
    in_read!(db, tenant, |tx| tx.get_policy(property).await?)
}

pub(crate) async fn active_masters_of_user<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    staff_user_id: &str,
) -> StoreResult<Vec<MasterKeyRecord>> {
    in_read!(db, tenant, |tx| tx
        .active_masters_of_user(staff_user_id)
        .await?)
}

pub(crate) async fn master_by_id<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    id: &str,
) -> StoreResult<Option<MasterKeyRecord>> {
    in_read!(db, tenant, |tx| tx.master_by_id(id).await?)
}

pub(crate) async fn master_by_credential<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    credential: &KeyCredentialId,
) -> StoreResult<Option<MasterKeyRecord>> {
    in_read!(db, tenant, |tx| tx.master_by_credential(credential).await?)
}

pub(crate) async fn record_user_deactivated<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    user_id: &str,
    at: Timestamp,
) -> StoreResult<()> {
    in_write!(db, tenant, |tx| tx
        .record_user_deactivated(user_id, at)
        .await?)
}

pub(crate) async fn user_deactivated_at<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    user_id: &str,
) -> StoreResult<Option<Timestamp>> {
    in_read!(db, tenant, |tx| tx.user_deactivated_at(user_id).await?)
}

pub(crate) async fn reserve_rate_slot<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    account: &str,
    now_us: i64,
    interval_us: i64,
) -> StoreResult<i64> {
    in_write!(db, tenant, |tx| tx
        .reserve_rate_slot(account, now_us, interval_us)
        .await?)
}

pub(crate) async fn hold_rate_until<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    account: &str,
    until_us: i64,
) -> StoreResult<()> {
    in_write!(db, tenant, |tx| tx
        .hold_rate_until(account, until_us)
        .await?)
}

pub(crate) async fn record_vendor_credential<S: Storage + ?Sized>(
    db: &S,
    rec: &VendorCredentialRecord,
) -> StoreResult<CredentialChange> {
    in_write!(db, rec.tenant_id, |tx| tx
        .record_vendor_credential(rec)
        .await?)
}

pub(crate) async fn vendor_credential<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    property: &PropertyId,
    vendor: VendorCode,
    environment: &str,
) -> StoreResult<Option<VendorCredentialRecord>> {
    in_read!(db, tenant, |tx| tx
        .vendor_credential(property, vendor, environment)
        .await?)
}

pub(crate) async fn seen_vendor_events<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    vendor: VendorCode,
    ids: &[String],
) -> StoreResult<Vec<String>> {
    in_read!(db, tenant, |tx| tx.seen_vendor_events(vendor, ids).await?)
}

pub(crate) async fn webhook_seen<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    vendor: VendorCode,
    external_event_id: &str,
) -> StoreResult<bool> {
    in_read!(db, tenant, |tx| tx
        .webhook_seen(vendor, external_event_id)
        .await?)
}

pub(crate) async fn save_offline_cert<S: Storage + ?Sized>(
    db: &S,
    cert: &lockstep_domain::OfflineIssuance,
) -> StoreResult<()> {
    in_write!(db, cert.tenant_id, |tx| tx.save_offline_cert(cert).await?)
}

pub(crate) async fn offline_cert<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    id: &str,
) -> StoreResult<Option<lockstep_domain::OfflineIssuance>> {
    in_read!(db, tenant, |tx| tx.offline_cert(id).await?)
}

pub(crate) async fn offline_certs_expiring<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    before: Timestamp,
) -> StoreResult<i64> {
    in_read!(db, tenant, |tx| tx.offline_certs_expiring(before).await?)
}

pub(crate) async fn reencrypt<S: Storage + ?Sized>(
    db: &S,
    tenant: TenantId,
    limit: i64,
) -> StoreResult<u64> {
    in_write!(db, tenant, |tx| tx.reencrypt(limit).await?)
}
