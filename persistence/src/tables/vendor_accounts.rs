//! A tenant's vendor accounts: the shared GCRA row of each account's request rate
//! (`vendor_rate_limits`, DESIGN §6) and where each adapter's secrets live
//! (`vendor_credentials`, spec `004` §3).

use async_trait::async_trait;
use lockstep_domain::{PropertyId, VendorCode, VendorCredentialId};

use crate::dialect::Stmt;
use crate::model::{CredentialChange, VendorCredentialRecord};
use crate::tx::{Access, ReadWrite, Tx};
use crate::{StoreError, StoreResult};

/// Reads of a tenant's vendor accounts.
#[async_trait]
pub trait ReadOnlyVendorAccountTable: Send {
    /// The vendor credential record of a property's adapter.
    async fn vendor_credential(
        &mut self,
        property: &PropertyId,
        vendor: VendorCode,
        environment: &str,
    ) -> StoreResult<Option<VendorCredentialRecord>>;
}

/// Writes of a tenant's vendor accounts.
#[async_trait]
pub trait VendorAccountTable: ReadOnlyVendorAccountTable {
    /// GCRA over an account's request rate, shared by every node: takes the account's next
    /// slot, no earlier than `now_us` and `interval_us` after the slot before it, and
    /// returns it (µs since the epoch). One statement: the row lock orders every node.
    async fn reserve_rate_slot(
        &mut self,
        account: &str,
        now_us: i64,
        interval_us: i64,
    ) -> StoreResult<i64>;

    /// The vendor answered 429 with Retry-After: no slot of the account before
    /// `until_us` (a hold never pulls the account back).
    async fn hold_rate_until(&mut self, account: &str, until_us: i64) -> StoreResult<()>;

    /// Records where an adapter's secrets live and their fingerprint (one row per
    /// property, vendor and environment); a changed fingerprint is a rotation. V-2:
    /// pointers only, never secret bytes.
    async fn record_vendor_credential(
        &mut self,
        rec: &VendorCredentialRecord,
    ) -> StoreResult<CredentialChange>;
}

#[async_trait]
impl<A: Access> ReadOnlyVendorAccountTable for Tx<A> {
    async fn vendor_credential(
        &mut self,
        property: &PropertyId,
        vendor: VendorCode,
        environment: &str,
    ) -> StoreResult<Option<VendorCredentialRecord>> {
        let stmt = Stmt::new(
            "SELECT id, secret_resource_name, fingerprint_sha256, rotates_at, updated_at FROM vendor_credentials \
             WHERE tenant_id = $1 AND property_id = $2 AND vendor = $3 AND environment = $4",
        )
        .bind(self.tenant)
        .bind(property.as_str())
        .bind(vendor.as_str())
        .bind(environment);
        let row = self.conn.fetch_optional(stmt).await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(VendorCredentialRecord {
            id: VendorCredentialId::parse(r.get("id")?)
                .map_err(|e| StoreError::Corrupt(format!("vendor credential id: {e:?}")))?,
            tenant_id: self.tenant,
            property_id: property.clone(),
            vendor,
            environment: environment.to_owned(),
            secret_resource_name: r.get("secret_resource_name")?,
            fingerprint: r.get("fingerprint_sha256")?,
            rotates_at: r.ts("rotates_at")?,
            updated_at: r.ts("updated_at")?,
        }))
    }
}

#[async_trait]
impl VendorAccountTable for Tx<ReadWrite> {
    async fn reserve_rate_slot(
        &mut self,
        account: &str,
        now_us: i64,
        interval_us: i64,
    ) -> StoreResult<i64> {
        let stmt = Stmt::new(
            "INSERT INTO vendor_rate_limits (tenant_id, account_key, tat_us) VALUES ($1, $2, $3 + $4) \
             ON CONFLICT (tenant_id, account_key) DO UPDATE SET \
             tat_us = CASE WHEN vendor_rate_limits.tat_us > $3 THEN vendor_rate_limits.tat_us ELSE $3 END + $4 \
             RETURNING tat_us - $4 AS slot",
        )
        .bind(self.tenant)
        .bind(account)
        .bind(now_us)
        .bind(interval_us);
        let row = self.conn.fetch_one(stmt).await?;
        row.get("slot")
    }

    async fn hold_rate_until(&mut self, account: &str, until_us: i64) -> StoreResult<()> {
        let stmt = Stmt::new(
            "INSERT INTO vendor_rate_limits (tenant_id, account_key, tat_us) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, account_key) DO UPDATE SET \
             tat_us = CASE WHEN vendor_rate_limits.tat_us > $3 THEN vendor_rate_limits.tat_us ELSE $3 END",
        )
        .bind(self.tenant)
        .bind(account)
        .bind(until_us);
        self.conn.execute(stmt).await?;
        Ok(())
    }

    async fn record_vendor_credential(
        &mut self,
        rec: &VendorCredentialRecord,
    ) -> StoreResult<CredentialChange> {
        self.own(rec.tenant_id, "vendor credential")?;
        let lock = self.conn.dialect().for_update();
        let stmt = Stmt::new(format!(
            "SELECT fingerprint_sha256 FROM vendor_credentials WHERE tenant_id = $1 AND property_id = $2 AND vendor = $3 AND environment = $4{lock}"
        ))
        .bind(self.tenant)
        .bind(rec.property_id.as_str())
        .bind(rec.vendor.as_str())
        .bind(&rec.environment);
        let current = self
            .conn
            .fetch_optional(stmt)
            .await?
            .map(|r| r.get::<String>("fingerprint_sha256"))
            .transpose()?;
        // The same eight values for either statement; an insert adds the row's id.
        let (change, sql) = match current {
            Some(f) if f == rec.fingerprint => return Ok(CredentialChange::Unchanged),
            Some(_) => (
                CredentialChange::Rotated,
                "UPDATE vendor_credentials SET secret_resource_name = $5, fingerprint_sha256 = $6, rotates_at = $7, updated_at = $8 \
                 WHERE tenant_id = $1 AND property_id = $2 AND vendor = $3 AND environment = $4",
            ),
            None => (
                CredentialChange::New,
                "INSERT INTO vendor_credentials (tenant_id, property_id, vendor, environment, secret_resource_name, fingerprint_sha256, rotates_at, updated_at, created_at, id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
            ),
        };
        let mut stmt = Stmt::new(sql)
            .bind(self.tenant)
            .bind(rec.property_id.as_str())
            .bind(rec.vendor.as_str())
            .bind(&rec.environment)
            .bind(&rec.secret_resource_name)
            .bind(&rec.fingerprint)
            .bind(rec.rotates_at)
            .bind(rec.updated_at);
        if change == CredentialChange::New {
            stmt = stmt.bind(rec.id.as_str());
        }
        self.conn.execute(stmt).await?;
        Ok(change)
    }
}
