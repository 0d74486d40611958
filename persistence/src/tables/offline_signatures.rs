//! Lockstep's signature of each offline-issuance certificate, kept beside it in
//! `offline_issuance` (issue 12): the relay checks a desktop's certificate against the
//! stored signature, so a certificate row written behind Lockstep's back (without the
//! signing key) authenticates nobody.

use async_trait::async_trait;

use crate::dialect::Stmt;
use crate::tx::{Access, ReadWrite, Tx};
use crate::StoreResult;

/// Reads of certificate signatures.
#[async_trait]
pub trait ReadOnlyOfflineCertSignatureTable: Send {
    /// The stored signature (base64) of a certificate and the id of the key that made it;
    /// `None` when the certificate is unknown or was stored without one.
    async fn offline_cert_signature(
        &mut self,
        certificate_id: &str,
    ) -> StoreResult<Option<(String, Option<String>)>>;
}

/// Writes of certificate signatures.
#[async_trait]
pub trait OfflineCertSignatureTable: ReadOnlyOfflineCertSignatureTable {
    /// Stores the signature of a stored certificate; `false` when there is no such
    /// certificate.
    async fn set_offline_cert_signature(
        &mut self,
        certificate_id: &str,
        signature: &str,
        key_id: &str,
    ) -> StoreResult<bool>;
}

#[async_trait]
impl<A: Access> ReadOnlyOfflineCertSignatureTable for Tx<A> {
    async fn offline_cert_signature(
        &mut self,
        certificate_id: &str,
    ) -> StoreResult<Option<(String, Option<String>)>> {
        let stmt = Stmt::new(
            "SELECT issuer_signature, issuer_key_id FROM offline_issuance WHERE tenant_id = $1 AND id = $2",
        )
        .bind(self.tenant)
        .bind(certificate_id);
        let Some(row) = self.conn.fetch_optional(stmt).await? else {
            return Ok(None);
        };
        let signature: Option<String> = row.get("issuer_signature")?;
        let key_id: Option<String> = row.get("issuer_key_id")?;
        Ok(signature.map(|s| (s, key_id)))
    }
}

#[async_trait]
impl OfflineCertSignatureTable for Tx<ReadWrite> {
    async fn set_offline_cert_signature(
        &mut self,
        certificate_id: &str,
        signature: &str,
        key_id: &str,
    ) -> StoreResult<bool> {
        let stmt = Stmt::new(
            "UPDATE offline_issuance SET issuer_signature = $3, issuer_key_id = $4 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(self.tenant)
        .bind(certificate_id)
        .bind(signature)
        .bind(key_id);
        Ok(self.conn.execute(stmt).await? == 1)
    }
}
