//! `key_credential_devices`: door truth, one row per (credential, device) with what should
//! be at the door, whether the vendor confirmed it, the encrypted PIN and vendor ref, and
//! the attempts made (DESIGN §3.4–3.5).

use async_trait::async_trait;
use lockstep_domain::{
    DeviceRef, KeyCredentialId, LockDeviceId, Pin, Timestamp, VendorAdapterId, VendorRef,
};

use crate::crypto::Cipher;
use crate::dialect::{corrupt, Row, Stmt};
use crate::model::{context, CredentialDevice, Desired, DeviceSyncWrite, DoorBacklog, SyncState};
use crate::tx::{Access, ReadWrite, Tx, WorkerTx};
use crate::{StoreError, StoreResult};

/// Reads of a tenant's door truth, decrypted.
#[async_trait]
pub trait ReadOnlyDoorTruthTable: Send {
    /// The door truth of a credential on each of its devices, by device.
    async fn credential_devices(
        &mut self,
        id: &KeyCredentialId,
    ) -> StoreResult<Vec<CredentialDevice>>;

    /// The door truth of every credential on a device, by credential (drift
    /// reconciliation).
    async fn device_credentials(
        &mut self,
        device: &LockDeviceId,
    ) -> StoreResult<Vec<CredentialDevice>>;

    /// Rows still to be removed at the door (desired absent, sync pending) on the devices
    /// of any of `adapters` (revocations first after an outage, DESIGN §7).
    async fn pending_removals(&mut self, adapters: &[VendorAdapterId]) -> StoreResult<i64>;
}

/// Writes of a tenant's door truth.
#[async_trait]
pub trait DoorTruthTable: ReadOnlyDoorTruthTable {
    /// Creates or replaces a (credential, device) row at `now`. A PIN or vendor ref is
    /// encrypted, bound to its row; `None` keeps the stored one. A row that becomes
    /// `absent/pending` starts its stale-key window at `learned_at` (kept while it stays
    /// absent; cleared when it is present again).
    async fn put_door_truth(
        &mut self,
        write: &DeviceSyncWrite,
        now: Timestamp,
        learned_at: Timestamp,
    ) -> StoreResult<()>;
}

/// The worker path's view of door truth across tenants.
#[async_trait]
pub trait ReadOnlyDoorBacklogTable: Send {
    /// Door truth not yet confirmed at the door, across tenants (metrics; DESIGN §3.5).
    async fn door_backlog(&mut self) -> StoreResult<DoorBacklog>;
}

/// `SELECT` of door-truth rows joined with their devices (vendor, encrypted device ref),
/// followed by `$rest`.
macro_rules! credential_device_select {
    ($rest:literal) => {
        concat!(
            "SELECT c.*, d.vendor_device_ref_ciphertext, d.vendor_device_ref_kms_version, ",
            "d.vendor_adapter_id FROM key_credential_devices c JOIN lock_devices d ",
            "ON d.id = c.device_id AND d.tenant_id = c.tenant_id ",
            $rest
        )
    };
}

/// An encrypted column pair (`<prefix>_ciphertext`, `<prefix>_kms_version`), decrypted
/// with `context`, when set.
pub(crate) fn decrypt_opt(
    cipher: &Cipher,
    r: &Row,
    prefix: &str,
    context: &str,
) -> StoreResult<Option<String>> {
    match (
        r.get::<Option<Vec<u8>>>(&format!("{prefix}_ciphertext"))?,
        r.get::<Option<String>>(&format!("{prefix}_kms_version"))?,
    ) {
        (Some(ct), Some(v)) => Ok(Some(cipher.decrypt_string(&ct, &v, context)?)),
        _ => Ok(None),
    }
}

fn credential_device_from_row(cipher: &Cipher, r: &Row) -> StoreResult<CredentialDevice> {
    let credential_id = KeyCredentialId::parse(r.get("key_credential_id")?)?;
    let device_id = LockDeviceId::parse(r.get("device_id")?)?;
    let dref = decrypt_opt(
        cipher,
        r,
        "vendor_device_ref",
        &context::device_ref(&device_id),
    )?
    .ok_or_else(|| corrupt("device without a vendor device ref"))?;
    let pin = decrypt_opt(cipher, r, "pin", &context::pin(&credential_id, &device_id))?
        .map(|p| Pin::parse(&p))
        .transpose()?;
    let vendor_ref = decrypt_opt(
        cipher,
        r,
        "vendor_ref",
        &context::vendor_ref(&credential_id, &device_id),
    )?
    .map(VendorRef::new);
    Ok(CredentialDevice {
        credential_id,
        device_ref: DeviceRef::new(dref),
        vendor_adapter_id: VendorAdapterId::parse(r.get("vendor_adapter_id")?)?,
        desired: Desired::parse(r.get("desired")?).ok_or_else(|| corrupt("desired"))?,
        sync: SyncState::parse(r.get("sync")?).ok_or_else(|| corrupt("sync"))?,
        pin,
        vendor_ref,
        attempts: r.get("attempts")?,
        pin_collisions: r.get("pin_collisions")?,
        last_error: r.get("last_error")?,
        removal_requested_at: r.opt_ts("removal_requested_at")?,
        device_id,
    })
}

#[async_trait]
impl<A: Access> ReadOnlyDoorTruthTable for Tx<A> {
    async fn credential_devices(
        &mut self,
        id: &KeyCredentialId,
    ) -> StoreResult<Vec<CredentialDevice>> {
        let stmt = Stmt::new(credential_device_select!(
            "WHERE c.tenant_id = $1 AND c.key_credential_id = $2 ORDER BY c.device_id"
        ))
        .bind(self.tenant)
        .bind(id.as_str());
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| credential_device_from_row(&self.cipher, r))
            .collect()
    }

    async fn device_credentials(
        &mut self,
        device: &LockDeviceId,
    ) -> StoreResult<Vec<CredentialDevice>> {
        let stmt = Stmt::new(credential_device_select!(
            "WHERE c.tenant_id = $1 AND c.device_id = $2 ORDER BY c.key_credential_id"
        ))
        .bind(self.tenant)
        .bind(device.as_str());
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| credential_device_from_row(&self.cipher, r))
            .collect()
    }

    async fn pending_removals(&mut self, adapters: &[VendorAdapterId]) -> StoreResult<i64> {
        let d = self.conn.dialect();
        let mut total = 0;
        for chunk in d.chunks(adapters) {
            let ids: Vec<&str> = chunk.iter().map(|a| a.as_str()).collect();
            let stmt = Stmt::new(format!(
                "SELECT count(*) AS n FROM key_credential_devices c JOIN lock_devices d ON d.tenant_id = c.tenant_id AND d.id = c.device_id \
                 WHERE c.tenant_id = $1 AND c.desired = 'absent' AND c.sync = 'pending' AND {}",
                d.in_list("d.vendor_adapter_id", 2, ids.len())
            ))
            .bind(self.tenant)
            .list(&ids);
            let row = self.conn.fetch_one(stmt).await?;
            total += row.get::<i64>("n")?;
        }
        Ok(total)
    }
}

#[async_trait]
impl DoorTruthTable for Tx<ReadWrite> {
    async fn put_door_truth(
        &mut self,
        d: &DeviceSyncWrite,
        now: Timestamp,
        learned_at: Timestamp,
    ) -> StoreResult<()> {
        let seal = |plain: &str, context: String| self.cipher.encrypt(plain.as_bytes(), &context);
        let (pin_ct, pin_ver) = d
            .pin
            .as_ref()
            .map(|p| seal(p.expose(), context::pin(&d.credential_id, &d.device_id)))
            .transpose()?
            .unzip();
        let (vref_ct, vref_ver) = d
            .vendor_ref
            .as_ref()
            .map(|v| {
                seal(
                    v.expose(),
                    context::vendor_ref(&d.credential_id, &d.device_id),
                )
            })
            .transpose()?
            .unzip();
        let guard = self.conn.dialect().upsert_guard("key_credential_devices");
        let stmt = Stmt::new(format!(
            "INSERT INTO key_credential_devices (tenant_id, key_credential_id, device_id, desired, sync, pin_ciphertext, pin_kms_version, vendor_ref_ciphertext, vendor_ref_kms_version, attempts, pin_collisions, last_error, updated_at, removal_requested_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13, CASE WHEN $4 = 'absent' AND $5 = 'pending' THEN $14 END) \
             ON CONFLICT (key_credential_id, device_id) DO UPDATE SET desired = excluded.desired, sync = excluded.sync, \
             removal_requested_at = CASE WHEN excluded.desired = 'present' THEN NULL WHEN key_credential_devices.desired = 'absent' THEN COALESCE(key_credential_devices.removal_requested_at, $14) ELSE $14 END, \
             pin_ciphertext = COALESCE(excluded.pin_ciphertext, key_credential_devices.pin_ciphertext), pin_kms_version = COALESCE(excluded.pin_kms_version, key_credential_devices.pin_kms_version), \
             vendor_ref_ciphertext = COALESCE(excluded.vendor_ref_ciphertext, key_credential_devices.vendor_ref_ciphertext), vendor_ref_kms_version = COALESCE(excluded.vendor_ref_kms_version, key_credential_devices.vendor_ref_kms_version), \
             attempts = excluded.attempts, pin_collisions = excluded.pin_collisions, last_error = excluded.last_error, updated_at = excluded.updated_at{guard}"
        ))
        .bind(self.tenant)
        .bind(d.credential_id.as_str())
        .bind(d.device_id.as_str())
        .bind(d.desired.as_str())
        .bind(d.sync.as_str())
        .bind(pin_ct)
        .bind(pin_ver)
        .bind(vref_ct)
        .bind(vref_ver)
        .bind(d.attempts)
        .bind(d.pin_collisions)
        .bind(&d.last_error)
        .bind(now)
        .bind(learned_at);
        let n = self.conn.execute(stmt).await?;
        if n != 1 {
            return Err(StoreError::Constraint(
                "key_credential_devices row belongs to another tenant".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl<A: Access> ReadOnlyDoorBacklogTable for WorkerTx<A> {
    async fn door_backlog(&mut self) -> StoreResult<DoorBacklog> {
        let stmt = Stmt::new(
            "SELECT count(*) FILTER (WHERE desired = 'absent') AS removals, min(COALESCE(removal_requested_at, updated_at)) FILTER (WHERE desired = 'absent') AS oldest, \
             count(*) FILTER (WHERE desired = 'present') AS issues FROM key_credential_devices WHERE sync = 'pending'",
        );
        let row = self.conn.fetch_one(stmt).await?;
        Ok(DoorBacklog {
            pending_removals: row.get("removals")?,
            oldest_pending_removal: row.opt_ts("oldest")?,
            pending_issues: row.get("issues")?,
        })
    }
}
