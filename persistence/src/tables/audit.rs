//! The tamper-evident audit: `lock_audit` rows linked into one hash chain per (tenant,
//! property), the chains' heads (`lock_audit_heads`, with the retention anchor) and their
//! signed roots (`lock_audit_roots`); see [`crate::audit`].
//!
//! A step's transaction only inserts its rows, unlinked; it never touches a head, so steps
//! of one property do not wait on each other's commit (issue 11). The linker, on the
//! worker path, takes a head in its own short transaction and links that chain's pending
//! rows in (created_at, id) order ([`AuditLinkTable::link_pending`]).

use async_trait::async_trait;
use lockstep_domain::{KeyCredentialId, LockDeviceId, PropertyId, TenantId, Timestamp, VendorCode};

use crate::audit::{self as chain, ChainHead, ChainedAuditRow, SealedRoot};
use crate::dialect::{Row, Stmt};
use crate::model::AuditRow;
use crate::tables::credentials::opt_parse;
use crate::tx::{Access, ReadWrite, Tx, WorkerTx};
use crate::StoreResult;

/// The columns of an audit row, as [`audit_row`] reads them.
const ROW_COLUMNS: &str =
    "id, key_credential_id, device_id, actor_kind, action, reason, vendor, trace_id, created_at, payload";

/// Reads of a tenant's audit chains.
#[async_trait]
pub trait ReadOnlyAuditTable: Send {
    /// A property's linked audit rows in sequence order, from the one after its retention
    /// anchor ([`ChainHead::pruned_through_seq`]); rows not linked yet are left out
    /// ([`ReadOnlyAuditTable::pending_audit`]).
    async fn audit_chain(&mut self, property: &PropertyId) -> StoreResult<Vec<ChainedAuditRow>>;

    /// A property's audit rows the linker has not linked yet, in the order it will link
    /// them (created_at, id).
    async fn pending_audit(&mut self, property: &PropertyId) -> StoreResult<Vec<AuditRow>>;

    /// The head of a property's chain (its last link and retention anchor), if the linker
    /// has made one.
    async fn audit_head(&mut self, property: &PropertyId) -> StoreResult<Option<ChainHead>>;

    /// The signed roots of a property's audit chain, in chain order.
    async fn audit_roots(&mut self, property: &PropertyId) -> StoreResult<Vec<SealedRoot>>;
}

/// Writes of a tenant's audit (appends only).
#[async_trait]
pub trait AuditTable: ReadOnlyAuditTable {
    /// Appends rows unlinked (no sequence, no hashes): the linker links them after the
    /// transaction commits. Touches no chain head, so it waits on no other writer. The rows
    /// are the transaction's tenant's whatever their `tenant_id` says.
    async fn append_audit(&mut self, rows: &[AuditRow]) -> StoreResult<()>;

    /// Stores a signed root of a stretch of a chain.
    async fn insert_audit_root(&mut self, root: &SealedRoot) -> StoreResult<()>;
}

/// The worker path's lists of audit chains.
#[async_trait]
pub trait ReadOnlyAuditHeadTable: Send {
    /// Every (tenant, property) that has an audit chain or rows waiting to start one.
    async fn audit_chains(&mut self) -> StoreResult<Vec<(TenantId, PropertyId)>>;

    /// Up to `limit` (tenant, property) pairs with rows waiting for the linker.
    async fn pending_audit_chains(
        &mut self,
        limit: i64,
    ) -> StoreResult<Vec<(TenantId, PropertyId)>>;
}

/// The worker path's writes of the audit chains: linking and retention.
#[async_trait]
pub trait AuditLinkTable: ReadOnlyAuditHeadTable {
    /// Links up to `max_rows` pending rows of one chain: locks its head (created if new),
    /// reads the pending rows in (created_at, id) order, gives each the next sequence
    /// number, the previous hash and its own hash, and moves the head. Returns how many it
    /// linked. Two linkers of one chain never link at once (the head's lock), so the
    /// chain never forks and has no gap; one that finds the head held by another links
    /// nothing and returns 0 (Postgres: `SKIP LOCKED`), leaving the rows to the holder.
    async fn link_pending(
        &mut self,
        tenant: TenantId,
        property: &PropertyId,
        max_rows: i64,
    ) -> StoreResult<u64>;

    /// Retention of one chain (spec `004` §8): deletes up to `max_rows` of its oldest
    /// linked rows that are covered by a signed root and whose whole sealed stretch is
    /// older than `before`, moving the chain's retention anchor to the last row deleted
    /// (its sequence number and hash) in the same transaction, so verification starts
    /// there. Returns how many rows it deleted. Signed roots are kept.
    async fn prune_sealed_audit(
        &mut self,
        tenant: TenantId,
        property: &PropertyId,
        before: Timestamp,
        max_rows: i64,
    ) -> StoreResult<u64>;
}

/// An audit row as stored (link columns aside).
fn audit_row(r: &Row, tenant: TenantId, property: &PropertyId) -> StoreResult<AuditRow> {
    Ok(AuditRow {
        id: r.get("id")?,
        tenant_id: tenant,
        property_id: property.clone(),
        credential_id: opt_parse(r.get("key_credential_id")?, KeyCredentialId::parse)?,
        device_id: opt_parse(r.get("device_id")?, LockDeviceId::parse)?,
        actor_kind: r.get("actor_kind")?,
        action: r.get("action")?,
        reason: r.get("reason")?,
        vendor: opt_parse(r.get("vendor")?, VendorCode::parse)?,
        trace_id: r.get("trace_id")?,
        created_at: r.ts("created_at")?,
        payload: r.json("payload")?,
    })
}

fn chain_head(r: &Row) -> StoreResult<ChainHead> {
    Ok(ChainHead {
        seq: r.get("seq")?,
        head_hash: r.get("head_hash")?,
        pruned_through_seq: r.get("pruned_through_seq")?,
        pruned_through_hash: r.get("pruned_through_hash")?,
    })
}

fn chain_list(rows: &[Row]) -> StoreResult<Vec<(TenantId, PropertyId)>> {
    rows.iter()
        .map(|r| {
            Ok((
                r.tenant("tenant_id")?,
                PropertyId::parse(r.get("property_id")?)?,
            ))
        })
        .collect()
}

#[async_trait]
impl<A: Access> ReadOnlyAuditTable for Tx<A> {
    async fn audit_chain(&mut self, property: &PropertyId) -> StoreResult<Vec<ChainedAuditRow>> {
        let stmt = Stmt::new(format!(
            "SELECT {ROW_COLUMNS}, chain_seq, prev_hash, row_hash \
             FROM lock_audit WHERE tenant_id = $1 AND property_id = $2 AND chain_seq IS NOT NULL ORDER BY chain_seq"
        ))
        .bind(self.tenant)
        .bind(property.as_str());
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| {
                Ok(ChainedAuditRow {
                    row: audit_row(r, self.tenant, property)?,
                    seq: r.get("chain_seq")?,
                    prev_hash: r.get("prev_hash")?,
                    row_hash: r.get("row_hash")?,
                })
            })
            .collect()
    }

    async fn pending_audit(&mut self, property: &PropertyId) -> StoreResult<Vec<AuditRow>> {
        let stmt = Stmt::new(format!(
            "SELECT {ROW_COLUMNS} FROM lock_audit \
             WHERE tenant_id = $1 AND property_id = $2 AND chain_seq IS NULL ORDER BY created_at, id"
        ))
        .bind(self.tenant)
        .bind(property.as_str());
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| audit_row(r, self.tenant, property))
            .collect()
    }

    async fn audit_head(&mut self, property: &PropertyId) -> StoreResult<Option<ChainHead>> {
        let stmt = Stmt::new(
            "SELECT seq, head_hash, pruned_through_seq, pruned_through_hash FROM lock_audit_heads \
             WHERE tenant_id = $1 AND property_id = $2",
        )
        .bind(self.tenant)
        .bind(property.as_str());
        self.conn
            .fetch_optional(stmt)
            .await?
            .as_ref()
            .map(chain_head)
            .transpose()
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
        // Unlinked (DESIGN §12, issue 11): no head is read or locked here; the linker
        // gives the rows their place in the chain once this transaction has committed.
        for a in rows {
            let stmt = Stmt::new(
                "INSERT INTO lock_audit (id, tenant_id, property_id, key_credential_id, device_id, actor_kind, action, reason, vendor, trace_id, created_at, payload) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
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
            .bind(&a.payload);
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
            "SELECT tenant_id, property_id FROM lock_audit_heads \
             UNION SELECT tenant_id, property_id FROM lock_audit WHERE chain_seq IS NULL \
             ORDER BY tenant_id, property_id",
        );
        chain_list(&self.conn.fetch_all(stmt).await?)
    }

    async fn pending_audit_chains(
        &mut self,
        limit: i64,
    ) -> StoreResult<Vec<(TenantId, PropertyId)>> {
        let stmt = Stmt::new(
            "SELECT DISTINCT tenant_id, property_id FROM lock_audit WHERE chain_seq IS NULL \
             ORDER BY tenant_id, property_id LIMIT $1",
        )
        .bind(limit);
        chain_list(&self.conn.fetch_all(stmt).await?)
    }
}

impl WorkerTx<ReadWrite> {
    /// Whether a chain has a head (committed), without locking it.
    async fn head_exists(&mut self, tenant: TenantId, property: &PropertyId) -> StoreResult<bool> {
        let stmt = Stmt::new(
            "SELECT 1 AS one FROM lock_audit_heads WHERE tenant_id = $1 AND property_id = $2",
        )
        .bind(tenant)
        .bind(property.as_str());
        Ok(self.conn.fetch_optional(stmt).await?.is_some())
    }

    /// Locks a chain's head for the rest of the transaction; `None` when it has none, or
    /// (`skip_locked`) when another transaction holds it.
    async fn lock_head(
        &mut self,
        tenant: TenantId,
        property: &PropertyId,
        skip_locked: bool,
    ) -> StoreResult<Option<ChainHead>> {
        let lock = if skip_locked {
            self.conn.dialect().for_update_skip_locked()
        } else {
            self.conn.dialect().for_update()
        };
        let stmt = Stmt::new(format!(
            "SELECT seq, head_hash, pruned_through_seq, pruned_through_hash FROM lock_audit_heads \
             WHERE tenant_id = $1 AND property_id = $2{lock}"
        ))
        .bind(tenant)
        .bind(property.as_str());
        self.conn
            .fetch_optional(stmt)
            .await?
            .as_ref()
            .map(chain_head)
            .transpose()
    }
}

#[async_trait]
impl AuditLinkTable for WorkerTx<ReadWrite> {
    async fn link_pending(
        &mut self,
        tenant: TenantId,
        property: &PropertyId,
        max_rows: i64,
    ) -> StoreResult<u64> {
        // The worker role crosses tenants: every statement names the chain's tenant.
        // Another node's linker holding the head is linking these rows: skipped rather
        // than waited for through its commit (issue 11: no linker waits on a head).
        let head = match self.lock_head(tenant, property, true).await? {
            Some(head) => head,
            None if self.head_exists(tenant, property).await? => return Ok(0),
            None => {
                // a new chain: its head is made (a racing maker's insert is waited for)
                let stmt = Stmt::new(
                    "INSERT INTO lock_audit_heads (tenant_id, property_id, seq, head_hash) VALUES ($1, $2, 0, $3) ON CONFLICT DO NOTHING",
                )
                .bind(tenant)
                .bind(property.as_str())
                .bind(chain::GENESIS);
                self.conn.execute(stmt).await?;
                match self.lock_head(tenant, property, true).await? {
                    Some(head) => head,
                    None => return Ok(0),
                }
            }
        };
        // read after the lock: a linker that held it before us has committed, and its rows
        // are no longer pending
        let stmt = Stmt::new(format!(
            "SELECT {ROW_COLUMNS} FROM lock_audit \
             WHERE tenant_id = $1 AND property_id = $2 AND chain_seq IS NULL ORDER BY created_at, id LIMIT $3"
        ))
        .bind(tenant)
        .bind(property.as_str())
        .bind(max_rows);
        let pending = self.conn.fetch_all(stmt).await?;
        let (mut seq, mut prev) = (head.seq, head.head_hash);
        for r in &pending {
            let row = audit_row(r, tenant, property)?;
            let next = seq + 1;
            let hash = chain::row_hash(&prev, next, &row);
            let stmt = Stmt::new(
                // `coalesce(chain_seq, 0) = 0` says "not linked yet" (sequence numbers start
                // at 1) in a form the planner cannot match to the pending rows' partial
                // index: with `chain_seq IS NULL` it chose that index and scanned every
                // pending row of the tenant for each link (issue 11's benchmark: 1,000
                // buffers a row under a burst); this way it takes the primary key
                "UPDATE lock_audit SET chain_seq = $3, prev_hash = $4, row_hash = $5 \
                 WHERE tenant_id = $1 AND id = $2 AND coalesce(chain_seq, 0) = 0",
            )
            .bind(tenant)
            .bind(&row.id)
            .bind(next)
            .bind(prev.as_str())
            .bind(hash.as_str());
            if self.conn.execute(stmt).await? != 1 {
                return Err(crate::StoreError::Conflict {
                    entity: "audit chain",
                });
            }
            (seq, prev) = (next, hash);
        }
        if pending.is_empty() {
            return Ok(0);
        }
        let stmt = Stmt::new(
            "UPDATE lock_audit_heads SET seq = $3, head_hash = $4 WHERE tenant_id = $1 AND property_id = $2",
        )
        .bind(tenant)
        .bind(property.as_str())
        .bind(seq)
        .bind(prev.as_str());
        self.conn.execute(stmt).await?;
        Ok(pending.len() as u64)
    }

    async fn prune_sealed_audit(
        &mut self,
        tenant: TenantId,
        property: &PropertyId,
        before: Timestamp,
        max_rows: i64,
    ) -> StoreResult<u64> {
        let Some(head) = self.lock_head(tenant, property, false).await? else {
            return Ok(0);
        };
        // the first row too young to go: nothing at or after it is pruned
        let stmt = Stmt::new(
            "SELECT chain_seq FROM lock_audit WHERE tenant_id = $1 AND property_id = $2 \
             AND chain_seq > $3 AND created_at >= $4 ORDER BY chain_seq LIMIT 1",
        )
        .bind(tenant)
        .bind(property.as_str())
        .bind(head.pruned_through_seq)
        .bind(before);
        let young: Option<i64> = match self.conn.fetch_optional(stmt).await? {
            Some(r) => Some(r.get("chain_seq")?),
            None => None,
        };
        let limit = young.unwrap_or(head.seq + 1);
        // the end of the last signed stretch wholly before it (roots cover the chain from 1
        // without gaps: each seal starts after the one before)
        let stmt = Stmt::new(
            "SELECT max(to_seq) AS last_sealed FROM lock_audit_roots \
             WHERE tenant_id = $1 AND property_id = $2 AND to_seq < $3",
        )
        .bind(tenant)
        .bind(property.as_str())
        .bind(limit);
        let through: Option<i64> = self.conn.fetch_one(stmt).await?.get("last_sealed")?;
        let Some(through) = through.filter(|t| *t > head.pruned_through_seq) else {
            return Ok(0);
        };
        let stmt = Stmt::new(
            "SELECT id, chain_seq, row_hash FROM lock_audit WHERE tenant_id = $1 AND property_id = $2 \
             AND chain_seq > $3 AND chain_seq <= $4 ORDER BY chain_seq LIMIT $5",
        )
        .bind(tenant)
        .bind(property.as_str())
        .bind(head.pruned_through_seq)
        .bind(through)
        .bind(max_rows);
        let rows = self.conn.fetch_all(stmt).await?;
        let Some(last) = rows.last() else {
            return Ok(0);
        };
        let (last_seq, last_hash): (i64, String) = (last.get("chain_seq")?, last.get("row_hash")?);
        // the anchor first: SQLite's trigger lets a row go only at or below it
        let stmt = Stmt::new(
            "UPDATE lock_audit_heads SET pruned_through_seq = $3, pruned_through_hash = $4 \
             WHERE tenant_id = $1 AND property_id = $2",
        )
        .bind(tenant)
        .bind(property.as_str())
        .bind(last_seq)
        .bind(last_hash.as_str());
        self.conn.execute(stmt).await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r.get("id"))
            .collect::<StoreResult<_>>()?;
        let dialect = self.conn.dialect();
        let mut deleted = 0;
        for chunk in dialect.chunks(&ids) {
            let stmt = Stmt::new(format!(
                "DELETE FROM lock_audit WHERE tenant_id = $1 AND {}",
                dialect.in_list("id", 2, chunk.len())
            ))
            .bind(tenant)
            .list(chunk);
            deleted += self.conn.execute(stmt).await?;
        }
        Ok(deleted)
    }
}
