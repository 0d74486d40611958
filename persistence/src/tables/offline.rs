//! `offline_issuance`: offline-issuance certificates of desktop relays (spec `003` §5).

use async_trait::async_trait;
use lockstep_domain::{
    KeyCredentialKind, OfflineIssuance, OfflineIssuanceId, OfflineRevokeReason, PropertyId,
    Timestamp,
};

use crate::dialect::{Row, Stmt};
use crate::tx::{Access, ReadWrite, Tx};
use crate::StoreResult;

/// Reads of a tenant's offline-issuance certificates.
#[async_trait]
pub trait ReadOnlyOfflineCertTable: Send {
    /// A certificate by id.
    async fn offline_cert(&mut self, id: &str) -> StoreResult<Option<OfflineIssuance>>;

    /// How many unrevoked certificates expire before `before` (rotation due, O-1).
    async fn offline_certs_expiring(&mut self, before: Timestamp) -> StoreResult<i64>;

    /// The certificates that renewed `id` (rotation), oldest first.
    async fn offline_cert_successors(&mut self, id: &str) -> StoreResult<Vec<OfflineIssuance>>;
}

/// Writes of a tenant's offline-issuance certificates.
#[async_trait]
pub trait OfflineCertTable: ReadOnlyOfflineCertTable {
    /// Stores a certificate, or its revocation (by id). The schema refuses a window over
    /// 48 hours (O-3) and a lifetime other than 90 days (O-1).
    async fn save_offline_cert(&mut self, cert: &OfflineIssuance) -> StoreResult<()>;
}

fn cert_from_row(tenant: lockstep_domain::TenantId, row: &Row) -> StoreResult<OfflineIssuance> {
    let allowed_kinds = row
        .json("allowed_kinds")?
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| KeyCredentialKind::parse(k.as_str().unwrap_or_default()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OfflineIssuance {
        id: OfflineIssuanceId::parse(row.get("id")?)?,
        tenant_id: tenant,
        property_id: PropertyId::parse(row.get("property_id")?)?,
        desktop_device_id: row.get("desktop_device_id")?,
        serial: row.get("serial")?,
        public_key_ed25519: row.get("public_key_ed25519")?,
        allowed_kinds,
        max_valid_window_hours: i64::from(row.get::<i32>("max_valid_window_hours")?),
        issued_at: row.ts("issued_at")?,
        expires_at: row.ts("expires_at")?,
        revoked_at: row.opt_ts("revoked_at")?,
        revoke_reason: row
            .get::<Option<String>>("revoke_reason")?
            .map(|r| OfflineRevokeReason::parse(&r))
            .transpose()?,
        replaces: row
            .get::<Option<String>>("replaces_id")?
            .map(|r| OfflineIssuanceId::parse(&r))
            .transpose()?,
    })
}

#[async_trait]
impl<A: Access> ReadOnlyOfflineCertTable for Tx<A> {
    async fn offline_cert(&mut self, id: &str) -> StoreResult<Option<OfflineIssuance>> {
        let stmt = Stmt::new("SELECT * FROM offline_issuance WHERE tenant_id = $1 AND id = $2")
            .bind(self.tenant)
            .bind(id);
        let row = self.conn.fetch_optional(stmt).await?;
        row.map(|row| cert_from_row(self.tenant, &row)).transpose()
    }

    async fn offline_certs_expiring(&mut self, before: Timestamp) -> StoreResult<i64> {
        let stmt = Stmt::new(
            "SELECT count(*) AS n FROM offline_issuance WHERE tenant_id = $1 AND revoked_at IS NULL AND expires_at < $2",
        )
        .bind(self.tenant)
        .bind(before);
        let row = self.conn.fetch_one(stmt).await?;
        row.get("n")
    }

    async fn offline_cert_successors(&mut self, id: &str) -> StoreResult<Vec<OfflineIssuance>> {
        let stmt = Stmt::new(
            "SELECT * FROM offline_issuance WHERE tenant_id = $1 AND replaces_id = $2 ORDER BY issued_at, id",
        )
        .bind(self.tenant)
        .bind(id);
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|row| cert_from_row(self.tenant, row))
            .collect()
    }
}

#[async_trait]
impl OfflineCertTable for Tx<ReadWrite> {
    async fn save_offline_cert(&mut self, cert: &OfflineIssuance) -> StoreResult<()> {
        self.own(cert.tenant_id, "offline certificate")?;
        let kinds: Vec<&str> = cert.allowed_kinds.iter().map(|k| k.as_str()).collect();
        let stmt = Stmt::new(
            "INSERT INTO offline_issuance (id, tenant_id, property_id, desktop_device_id, serial, public_key_ed25519, allowed_kinds, max_valid_window_hours, issued_at, expires_at, revoked_at, revoke_reason, replaces_id) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) \
             ON CONFLICT (id) DO UPDATE SET revoked_at = excluded.revoked_at, revoke_reason = excluded.revoke_reason",
        )
        .bind(cert.id.as_str())
        .bind(self.tenant)
        .bind(cert.property_id.as_str())
        .bind(&cert.desktop_device_id)
        .bind(&cert.serial)
        .bind(&cert.public_key_ed25519)
        .bind(serde_json::json!(kinds))
        .bind(i32::try_from(cert.max_valid_window_hours).unwrap_or(i32::MAX))
        .bind(cert.issued_at)
        .bind(cert.expires_at)
        .bind(cert.revoked_at)
        .bind(cert.revoke_reason.map(|r| r.as_str()))
        .bind(cert.replaces.as_ref().map(|r| r.as_str()));
        self.conn.execute(stmt).await?;
        Ok(())
    }
}
