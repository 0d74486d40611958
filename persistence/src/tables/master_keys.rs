//! `master_keys`: staff master keys, each backed by a `staff_master` credential (M-1).

use async_trait::async_trait;
use lockstep_domain::{KeyCredentialId, PropertyId, Timestamp};

use crate::dialect::{Row, Stmt};
use crate::model::MasterKeyRecord;
use crate::tx::{Access, ReadWrite, Tx};
use crate::{StoreError, StoreResult};

/// Reads of a tenant's master keys.
#[async_trait]
pub trait ReadOnlyMasterKeyTable: Send {
    /// A staff user's master keys not revoked, oldest first.
    async fn active_masters_of_user(
        &mut self,
        staff_user_id: &str,
    ) -> StoreResult<Vec<MasterKeyRecord>>;

    /// A master key by its id, revoked or not.
    async fn master_by_id(&mut self, id: &str) -> StoreResult<Option<MasterKeyRecord>>;

    /// The master key backed by a credential, revoked or not.
    async fn master_by_credential(
        &mut self,
        credential: &KeyCredentialId,
    ) -> StoreResult<Option<MasterKeyRecord>>;
}

/// Writes of a tenant's master keys.
#[async_trait]
pub trait MasterKeyTable: ReadOnlyMasterKeyTable {
    /// Inserts a key. M-2: a second active key of the same (property, staff user, scope
    /// kind) is [`StoreError::Constraint`], as are a backing credential that is not a
    /// staff master one (M-1), a second key on one credential, and a key of another
    /// tenant.
    async fn insert_master(&mut self, key: &MasterKeyRecord) -> StoreResult<()>;

    /// Revokes a key; revoking again keeps the first time. An unknown id is
    /// [`StoreError::Conflict`].
    async fn revoke_master(&mut self, id: &str, revoked_at: Timestamp) -> StoreResult<()>;
}

fn master_from_row(r: &Row) -> StoreResult<MasterKeyRecord> {
    Ok(MasterKeyRecord {
        id: r.get("id")?,
        tenant_id: r.tenant("tenant_id")?,
        property_id: PropertyId::parse(r.get("property_id")?)?,
        staff_user_id: r.get("staff_user_id")?,
        shift_id: r.get("shift_id")?,
        key_credential_id: KeyCredentialId::parse(r.get("key_credential_id")?)?,
        scope_kind: r.get("scope_kind")?,
        scope: r.json("scope")?,
        valid_from: r.ts("valid_from")?,
        valid_until: r.ts("valid_until")?,
        issued_at: r.ts("issued_at")?,
        revoked_at: r.opt_ts("revoked_at")?,
    })
}

#[async_trait]
impl<A: Access> ReadOnlyMasterKeyTable for Tx<A> {
    async fn active_masters_of_user(
        &mut self,
        staff_user_id: &str,
    ) -> StoreResult<Vec<MasterKeyRecord>> {
        let stmt = Stmt::new(
            "SELECT * FROM master_keys WHERE tenant_id = $1 AND staff_user_id = $2 AND revoked_at IS NULL ORDER BY issued_at, id",
        )
        .bind(self.tenant)
        .bind(staff_user_id);
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter().map(master_from_row).collect()
    }

    async fn master_by_id(&mut self, id: &str) -> StoreResult<Option<MasterKeyRecord>> {
        let stmt = Stmt::new("SELECT * FROM master_keys WHERE tenant_id = $1 AND id = $2")
            .bind(self.tenant)
            .bind(id);
        let row = self.conn.fetch_optional(stmt).await?;
        row.as_ref().map(master_from_row).transpose()
    }

    async fn master_by_credential(
        &mut self,
        credential: &KeyCredentialId,
    ) -> StoreResult<Option<MasterKeyRecord>> {
        let stmt =
            Stmt::new("SELECT * FROM master_keys WHERE tenant_id = $1 AND key_credential_id = $2")
                .bind(self.tenant)
                .bind(credential.as_str());
        let row = self.conn.fetch_optional(stmt).await?;
        row.as_ref().map(master_from_row).transpose()
    }
}

#[async_trait]
impl MasterKeyTable for Tx<ReadWrite> {
    async fn insert_master(&mut self, k: &MasterKeyRecord) -> StoreResult<()> {
        self.own(k.tenant_id, "master key")?;
        let stmt = Stmt::new(
            "INSERT INTO master_keys (id, tenant_id, property_id, staff_user_id, shift_id, key_credential_id, scope_kind, scope, valid_from, valid_until, issued_at, revoked_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
        )
        .bind(&k.id)
        .bind(self.tenant)
        .bind(k.property_id.as_str())
        .bind(&k.staff_user_id)
        .bind(&k.shift_id)
        .bind(k.key_credential_id.as_str())
        .bind(&k.scope_kind)
        .bind(&k.scope)
        .bind(k.valid_from)
        .bind(k.valid_until)
        .bind(k.issued_at)
        .bind(k.revoked_at);
        self.conn.execute(stmt).await?;
        Ok(())
    }

    async fn revoke_master(&mut self, id: &str, revoked_at: Timestamp) -> StoreResult<()> {
        let stmt = Stmt::new(
            "UPDATE master_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE tenant_id = $1 AND id = $2",
        )
        .bind(self.tenant)
        .bind(id)
        .bind(revoked_at);
        let n = self.conn.execute(stmt).await?;
        if n != 1 {
            return Err(StoreError::Conflict {
                entity: "master_keys",
            });
        }
        Ok(())
    }
}
