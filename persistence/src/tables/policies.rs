//! `key_kind_policies`: each property's KeyKindPolicy (spec `003` §4).

use async_trait::async_trait;
use lockstep_domain::PropertyId;

use crate::dialect::{corrupt, Row, Stmt};
use crate::model::PolicyRecord;
use crate::tx::{Access, ReadWrite, Tx};
use crate::StoreResult;

/// Reads of a tenant's key-kind policies.
#[async_trait]
pub trait ReadOnlyPolicyTable: Send {
    /// The key-kind policy of a property.
    async fn get_policy(&mut self, property: &PropertyId) -> StoreResult<Option<PolicyRecord>>;
}

/// Writes of a tenant's key-kind policies.
#[async_trait]
pub trait PolicyTable: ReadOnlyPolicyTable {
    /// Creates or replaces the policy of (tenant, property); a stored policy keeps its id.
    /// K-1 (non-empty preferred order) and K-2 (at most 720 hours) violations are
    /// [`crate::StoreError::Constraint`].
    async fn upsert_policy(&mut self, policy: &PolicyRecord) -> StoreResult<()>;
}

/// A JSON array of strings.
fn string_list(r: &Row, column: &str) -> StoreResult<Vec<String>> {
    serde_json::from_value(r.json(column)?).map_err(|_| corrupt("expected a JSON array of strings"))
}

#[async_trait]
impl<A: Access> ReadOnlyPolicyTable for Tx<A> {
    async fn get_policy(&mut self, property: &PropertyId) -> StoreResult<Option<PolicyRecord>> {
        let stmt =
            Stmt::new("SELECT * FROM key_kind_policies WHERE tenant_id = $1 AND property_id = $2")
                .bind(self.tenant)
                .bind(property.as_str());
        let row = self.conn.fetch_optional(stmt).await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(PolicyRecord {
            id: r.get("id")?,
            tenant_id: r.tenant("tenant_id")?,
            property_id: PropertyId::parse(r.get("property_id")?)?,
            preferred_order: string_list(&r, "preferred_order")?,
            fallback_chain: string_list(&r, "fallback_chain")?,
            max_valid_until_extension_hours: r.get("max_valid_until_extension_hours")?,
            id_verify_required_for: string_list(&r, "id_verify_required_for")?,
            no_show_suspend_after_hours: r.get("no_show_suspend_after_hours")?,
            allow_offline_issuance_kinds: string_list(&r, "allow_offline_issuance_kinds")?,
            updated_at: r.ts("updated_at")?,
        }))
    }
}

#[async_trait]
impl PolicyTable for Tx<ReadWrite> {
    async fn upsert_policy(&mut self, p: &PolicyRecord) -> StoreResult<()> {
        self.own(p.tenant_id, "policy")?;
        let stmt = Stmt::new(
            "INSERT INTO key_kind_policies (id, tenant_id, property_id, preferred_order, fallback_chain, max_valid_until_extension_hours, id_verify_required_for, no_show_suspend_after_hours, allow_offline_issuance_kinds, updated_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) \
             ON CONFLICT (tenant_id, property_id) DO UPDATE SET preferred_order = excluded.preferred_order, fallback_chain = excluded.fallback_chain, \
             max_valid_until_extension_hours = excluded.max_valid_until_extension_hours, id_verify_required_for = excluded.id_verify_required_for, \
             no_show_suspend_after_hours = excluded.no_show_suspend_after_hours, allow_offline_issuance_kinds = excluded.allow_offline_issuance_kinds, updated_at = excluded.updated_at",
        )
        .bind(&p.id)
        .bind(self.tenant)
        .bind(p.property_id.as_str())
        .bind(serde_json::json!(p.preferred_order))
        .bind(serde_json::json!(p.fallback_chain))
        .bind(p.max_valid_until_extension_hours)
        .bind(serde_json::json!(p.id_verify_required_for))
        .bind(p.no_show_suspend_after_hours)
        .bind(serde_json::json!(p.allow_offline_issuance_kinds))
        .bind(p.updated_at);
        self.conn.execute(stmt).await?;
        Ok(())
    }
}
