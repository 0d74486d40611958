//! Key rotation (spec `004` §5): moves a tenant's encrypted columns to the cipher's current
//! key version.

use async_trait::async_trait;
use lockstep_domain::{KeyCredentialId, LockDeviceId};

use crate::crypto::Cipher;
use crate::dialect::Stmt;
use crate::model::context;
use crate::tx::{ReadWrite, Tx};
use crate::StoreResult;

/// Re-encryption of a tenant's secrets under the current key.
#[async_trait]
pub trait KeyRotationTable: Send {
    /// Re-encrypts up to `limit` rows of each encrypted table (PINs and vendor refs, vendor
    /// device refs, adapter configs) that are under another key version than the cipher's
    /// current one; how many rows moved. Run until it answers 0.
    async fn reencrypt(&mut self, limit: i64) -> StoreResult<u64>;
}

/// `blob` (with its key version) decrypted and encrypted again under the current key;
/// an absent value stays absent.
fn again(
    cipher: &Cipher,
    blob: Option<Vec<u8>>,
    version: Option<String>,
    context: &str,
) -> StoreResult<(Option<Vec<u8>>, Option<String>)> {
    match (blob, version) {
        (Some(b), Some(v)) => {
            let (ct, nv) = cipher.encrypt(&cipher.decrypt(&b, &v, context)?, context)?;
            Ok((Some(ct), Some(nv)))
        }
        (b, v) => Ok((b, v)),
    }
}

#[async_trait]
impl KeyRotationTable for Tx<ReadWrite> {
    async fn reencrypt(&mut self, limit: i64) -> StoreResult<u64> {
        let current = self.cipher.current_version().to_owned();
        let mut n = 0u64;
        // PINs and vendor refs of (credential, device)
        let stmt = Stmt::new(
            "SELECT key_credential_id, device_id, pin_ciphertext, pin_kms_version, vendor_ref_ciphertext, vendor_ref_kms_version \
             FROM key_credential_devices WHERE tenant_id = $1 \
             AND ((pin_kms_version IS NOT NULL AND pin_kms_version <> $2) OR (vendor_ref_kms_version IS NOT NULL AND vendor_ref_kms_version <> $2)) LIMIT $3",
        )
        .bind(self.tenant)
        .bind(current.as_str())
        .bind(limit);
        let rows = self.conn.fetch_all(stmt).await?;
        for r in &rows {
            let c = KeyCredentialId::parse(r.get("key_credential_id")?)?;
            let d = LockDeviceId::parse(r.get("device_id")?)?;
            let (pin, pin_v) = again(
                &self.cipher,
                r.get("pin_ciphertext")?,
                r.get("pin_kms_version")?,
                &context::pin(&c, &d),
            )?;
            let (vref, vref_v) = again(
                &self.cipher,
                r.get("vendor_ref_ciphertext")?,
                r.get("vendor_ref_kms_version")?,
                &context::vendor_ref(&c, &d),
            )?;
            let stmt = Stmt::new(
                "UPDATE key_credential_devices SET pin_ciphertext = $4, pin_kms_version = $5, vendor_ref_ciphertext = $6, vendor_ref_kms_version = $7 \
                 WHERE tenant_id = $1 AND key_credential_id = $2 AND device_id = $3",
            )
            .bind(self.tenant)
            .bind(c.as_str())
            .bind(d.as_str())
            .bind(pin)
            .bind(pin_v)
            .bind(vref)
            .bind(vref_v);
            self.conn.execute(stmt).await?;
            n += 1;
        }
        // vendor device refs and adapter configs: one encrypted column per row
        for (table, col, ctx_of) in context::single_secret_columns() {
            let stmt = Stmt::new(format!(
                "SELECT id, {col}_ciphertext AS ct, {col}_kms_version AS ver FROM {table} \
                         WHERE tenant_id = $1 AND {col}_kms_version <> $2 LIMIT $3"
            ))
            .bind(self.tenant)
            .bind(current.as_str())
            .bind(limit);
            let rows = self.conn.fetch_all(stmt).await?;
            for r in &rows {
                let id: String = r.get("id")?;
                let (ct, v) = again(&self.cipher, r.get("ct")?, r.get("ver")?, &ctx_of(&id)?)?;
                let stmt = Stmt::new(format!(
                    "UPDATE {table} SET {col}_ciphertext = $3, {col}_kms_version = $4 WHERE tenant_id = $1 AND id = $2"
                ))
                .bind(self.tenant)
                .bind(id.as_str())
                .bind(ct)
                .bind(v);
                self.conn.execute(stmt).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}
