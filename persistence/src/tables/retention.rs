//! Retention (spec `004` §8, issue 13): the worker path deletes rows past their live
//! retention in bounded batches, by primary key from a `LIMIT`ed select, in short
//! transactions that take no table lock. The audit chain is pruned by
//! [`crate::AuditLinkTable::prune_sealed_audit`], which keeps it verifiable.

use async_trait::async_trait;
use lockstep_domain::Timestamp;

use crate::dialect::Stmt;
use crate::tx::{ReadWrite, WorkerTx};
use crate::StoreResult;

/// A table retention prunes by age alone (spec `004` §8). `key_credentials` (terminal
/// credentials are kept while the tenant is active) and `vendor_credentials` (replaced in
/// place) are not pruned; `lock_audit` is pruned by sealed stretch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Retained {
    /// `key_credential_attempts`, by `attempted_at`.
    Attempts,
    /// `lock_devices` decommissioned, by `decommissioned_at` (with their room links and
    /// their door-truth rows).
    DecommissionedDevices,
    /// `webhook_inbox` processed, by `processed_at`.
    ProcessedWebhooks,
    /// `outbox` published, by `published_at`.
    PublishedOutbox,
    /// `inbox`, by `processed_at`.
    Inbox,
    /// `offline_issuance` revoked, by `revoked_at`.
    RevokedOfflineCerts,
}

impl Retained {
    /// Every table pruned by age.
    pub const ALL: [Retained; 6] = [
        Retained::Attempts,
        Retained::DecommissionedDevices,
        Retained::ProcessedWebhooks,
        Retained::PublishedOutbox,
        Retained::Inbox,
        Retained::RevokedOfflineCerts,
    ];

    /// The table's name (also the metric label).
    pub fn table(self) -> &'static str {
        match self {
            Retained::Attempts => "key_credential_attempts",
            Retained::DecommissionedDevices => "lock_devices",
            Retained::ProcessedWebhooks => "webhook_inbox",
            Retained::PublishedOutbox => "outbox",
            Retained::Inbox => "inbox",
            Retained::RevokedOfflineCerts => "offline_issuance",
        }
    }

    /// The time a row's retention runs from (NULL: not yet, e.g. unpublished).
    fn since(self) -> &'static str {
        match self {
            Retained::Attempts => "attempted_at",
            Retained::DecommissionedDevices => "decommissioned_at",
            Retained::ProcessedWebhooks | Retained::Inbox => "processed_at",
            Retained::PublishedOutbox => "published_at",
            Retained::RevokedOfflineCerts => "revoked_at",
        }
    }
}

/// The worker path's retention deletes.
#[async_trait]
pub trait RetentionTable: Send {
    /// Deletes up to `max_rows` rows of `table` whose retention ran from before `before`,
    /// oldest first, and records `before` as the table's horizon (`retention_horizons`:
    /// `key_credential_attempts`' append-only trigger lets a delete through only below
    /// it). A decommissioned device goes with its room links and door-truth rows. Returns
    /// how many rows of `table` it deleted.
    async fn prune_expired(
        &mut self,
        table: Retained,
        before: Timestamp,
        max_rows: i64,
    ) -> StoreResult<u64>;
}

#[async_trait]
impl RetentionTable for WorkerTx<ReadWrite> {
    async fn prune_expired(
        &mut self,
        table: Retained,
        before: Timestamp,
        max_rows: i64,
    ) -> StoreResult<u64> {
        let (name, since) = (table.table(), table.since());
        let stmt = Stmt::new(
            "INSERT INTO retention_horizons (table_name, prune_before) VALUES ($1, $2) \
             ON CONFLICT (table_name) DO UPDATE SET prune_before = excluded.prune_before",
        )
        .bind(name)
        .bind(before);
        self.conn.execute(stmt).await?;
        if table == Retained::Inbox {
            // the one composite key
            let stmt = Stmt::new(
                "DELETE FROM inbox WHERE (tenant_id, message_id, consumer_name) IN \
                 (SELECT tenant_id, message_id, consumer_name FROM inbox WHERE processed_at < $1 ORDER BY processed_at LIMIT $2)",
            )
            .bind(before)
            .bind(max_rows);
            return self.conn.execute(stmt).await;
        }
        let stmt = Stmt::new(format!(
            "SELECT id FROM {name} WHERE {since} < $1 ORDER BY {since} LIMIT $2"
        ))
        .bind(before)
        .bind(max_rows);
        let ids: Vec<String> = self
            .conn
            .fetch_all(stmt)
            .await?
            .iter()
            .map(|r| r.get("id"))
            .collect::<StoreResult<_>>()?;
        let dialect = self.conn.dialect();
        let mut deleted = 0;
        for chunk in dialect.chunks(&ids) {
            if table == Retained::DecommissionedDevices {
                // door truth at a door out of service for the whole window says nothing
                // anyone can act on; its PINs go with it
                for dependent in ["key_credential_devices", "lock_device_rooms"] {
                    let stmt = Stmt::new(format!(
                        "DELETE FROM {dependent} WHERE {}",
                        dialect.in_list("device_id", 1, chunk.len())
                    ))
                    .list(chunk);
                    self.conn.execute(stmt).await?;
                }
            }
            let stmt = Stmt::new(format!(
                "DELETE FROM {name} WHERE {}",
                dialect.in_list("id", 1, chunk.len())
            ))
            .list(chunk);
            deleted += self.conn.execute(stmt).await?;
        }
        Ok(deleted)
    }
}
