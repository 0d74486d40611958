//! The tamper-evident audit: `lock_audit` rows linked into one hash chain per (tenant,
//! property), the chains' heads (`lock_audit_heads`) and their signed roots
//! (`lock_audit_roots`); see [`crate::audit`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use lockstep_domain::{KeyCredentialId, LockDeviceId, PropertyId, TenantId, VendorCode};

use crate::audit::{self as chain, ChainedAuditRow, SealedRoot};
use crate::dialect::Stmt;
use crate::model::AuditRow;
use crate::tables::credentials::opt_parse;
use crate::tx::{Access, ReadWrite, Tx, WorkerTx};
use crate::StoreResult;

/// Reads of a tenant's audit chains.
#[async_trait]
pub trait ReadOnlyAuditTable: Send {
    /// A property's audit chain in sequence order (rows written before the chain existed,
    /// which have no link, are left out).
    async fn audit_chain(&mut self, property: &PropertyId) -> StoreResult<Vec<ChainedAuditRow>>;

    /// The signed roots of a property's audit chain, in chain order.
    async fn audit_roots(&mut self, property: &PropertyId) -> StoreResult<Vec<SealedRoot>>;
}

/// Writes of a tenant's audit chains (appends only).
#[async_trait]
pub trait AuditTable: ReadOnlyAuditTable {
    /// Appends rows, in the order given, each linked to the head of its property's chain
    /// (gap-free sequence, hash over the row and the previous hash). The heads of the
    /// properties touched are locked in property order until the transaction ends, so
    /// chains never fork. The rows are the transaction's tenant's whatever their
    /// `tenant_id` says.
    async fn append_audit(&mut self, rows: &[AuditRow]) -> StoreResult<()>;

    /// Stores a signed root of a stretch of a chain.
    async fn insert_audit_root(&mut self, root: &SealedRoot) -> StoreResult<()>;
}

/// The worker path's list of audit chains.
#[async_trait]
pub trait ReadOnlyAuditHeadTable: Send {
    /// Every (tenant, property) that has an audit chain.
    async fn audit_chains(&mut self) -> StoreResult<Vec<(TenantId, PropertyId)>>;
}

#[async_trait]
impl<A: Access> ReadOnlyAuditTable for Tx<A> {
    async fn audit_chain(&mut self, property: &PropertyId) -> StoreResult<Vec<ChainedAuditRow>> {
        let stmt = Stmt::new(
            "SELECT id, key_credential_id, device_id, actor_kind, action, reason, vendor, trace_id, created_at, payload, chain_seq, prev_hash, row_hash \
             FROM lock_audit WHERE tenant_id = $1 AND property_id = $2 AND chain_seq IS NOT NULL ORDER BY chain_seq",
        )
        .bind(self.tenant)
        .bind(property.as_str());
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| {
                Ok(ChainedAuditRow {
                    row: AuditRow {
                        id: r.get("id")?,
                        tenant_id: self.tenant,
                        property_id: property.clone(),
                        credential_id: opt_parse(
                            r.get("key_credential_id")?,
                            KeyCredentialId::parse,
                        )?,
                        device_id: opt_parse(r.get("device_id")?, LockDeviceId::parse)?,
                        actor_kind: r.get("actor_kind")?,
                        action: r.get("action")?,
                        reason: r.get("reason")?,
                        vendor: opt_parse(r.get("vendor")?, VendorCode::parse)?,
                        trace_id: r.get("trace_id")?,
                        created_at: r.ts("created_at")?,
                        payload: r.json("payload")?,
                    },
                    seq: r.get("chain_seq")?,
                    prev_hash: r.get("prev_hash")?,
                    row_hash: r.get("row_hash")?,
                })
            })
            .collect()
    }

    async fn audit_roots(&mut self, property: &PropertyId) -> StoreResult<Vec<SealedRoot>> {
        let stmt = Stmt::new(
            "SELECT from_seq, to_seq, merkle_root, signature, key_id, sealed_at FROM lock_audit_roots \
             WHERE tenant_id = $1 AND property_id = $2 ORDER BY from_seq",
        )
        .bind(self.tenant)
        .bind(property.as_str());
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| {
                Ok(SealedRoot {
                    tenant_id: self.tenant,
                    property_id: property.clone(),
                    from_seq: r.get("from_seq")?,
                    to_seq: r.get("to_seq")?,
                    merkle_root: r.get("merkle_root")?,
                    signature: r.get("signature")?,
                    key_id: r.get("key_id")?,
                    sealed_at: r.ts("sealed_at")?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl AuditTable for Tx<ReadWrite> {
    async fn append_audit(&mut self, rows: &[AuditRow]) -> StoreResult<()> {
        // The head of each property touched (DESIGN §12): created if new, locked in
        // property order, rows linked in the order given, heads moved last.
        let mut heads: BTreeMap<&str, (i64, String)> = BTreeMap::new();
        for a in rows {
            heads.entry(a.property_id.as_str()).or_default();
        }
        let lock = self.conn.dialect().for_update();
        for (property, head) in heads.iter_mut() {
            let stmt = Stmt::new(
                "INSERT INTO lock_audit_heads (tenant_id, property_id, seq, head_hash) VALUES ($1, $2, 0, $3) ON CONFLICT DO NOTHING",
            )
            .bind(self.tenant)
            .bind(*property)
            .bind(chain::GENESIS);
            self.conn.execute(stmt).await?;
            let stmt = Stmt::new(format!(
                "SELECT seq, head_hash FROM lock_audit_heads WHERE tenant_id = $1 AND property_id = $2{lock}"
            ))
            .bind(self.tenant)
            .bind(*property);
            let r = self.conn.fetch_one(stmt).await?;
            *head = (r.get("seq")?, r.get("head_hash")?);
        }
        for a in rows {
            let head = heads
                .get_mut(a.property_id.as_str())
                .expect("every audited property has a head");
            let mut row = a.clone();
            row.tenant_id = self.tenant;
            let seq = head.0 + 1;
            let hash = chain::row_hash(&head.1, seq, &row);
            let stmt = Stmt::new(
                "INSERT INTO lock_audit (id, tenant_id, property_id, key_credential_id, device_id, actor_kind, action, reason, vendor, trace_id, created_at, payload, chain_seq, prev_hash, row_hash) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)",
            )
            .bind(&a.id)
            .bind(self.tenant)
            .bind(a.property_id.as_str())
            .bind(a.credential_id.as_ref().map(|c| c.as_str()))
            .bind(a.device_id.as_ref().map(|d| d.as_str()))
            .bind(&a.actor_kind)
            .bind(&a.action)
            .bind(&a.reason)
            .bind(a.vendor.map(|v| v.as_str()))
            .bind(&a.trace_id)
            .bind(a.created_at)
            .bind(&a.payload)
            .bind(seq)
            .bind(head.1.as_str())
            .bind(hash.as_str());
            self.conn.execute(stmt).await?;
            *head = (seq, hash);
        }
        for (property, (seq, hash)) in &heads {
            let stmt = Stmt::new(
                "UPDATE lock_audit_heads SET seq = $3, head_hash = $4 WHERE tenant_id = $1 AND property_id = $2",
            )
            .bind(self.tenant)
            .bind(*property)
            .bind(*seq)
            .bind(hash.as_str());
            self.conn.execute(stmt).await?;
        }
        Ok(())
    }

    async fn insert_audit_root(&mut self, root: &SealedRoot) -> StoreResult<()> {
        self.own(root.tenant_id, "audit root")?;
        let stmt = Stmt::new(
            "INSERT INTO lock_audit_roots (tenant_id, property_id, from_seq, to_seq, merkle_root, signature, key_id, sealed_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
        )
        .bind(self.tenant)
        .bind(root.property_id.as_str())
        .bind(root.from_seq)
        .bind(root.to_seq)
        .bind(&root.merkle_root)
        .bind(&root.signature)
        .bind(&root.key_id)
        .bind(root.sealed_at);
        self.conn.execute(stmt).await?;
        Ok(())
    }
}

#[async_trait]
impl<A: Access> ReadOnlyAuditHeadTable for WorkerTx<A> {
    async fn audit_chains(&mut self) -> StoreResult<Vec<(TenantId, PropertyId)>> {
        let stmt = Stmt::new(
            "SELECT tenant_id, property_id FROM lock_audit_heads ORDER BY tenant_id, property_id",
        );
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.tenant("tenant_id")?,
                    PropertyId::parse(r.get("property_id")?)?,
                ))
            })
            .collect()
    }
}
