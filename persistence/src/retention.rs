//! The retention job (spec `004` §8, issue 13): every table the spec gives a live
//! retention is pruned in bounded batches, one short worker transaction per batch, so it
//! never holds a lock a saga step waits for. Cold storage (the spec's BigQuery sink) is
//! not built: what leaves the hot store is gone.
//!
//! The audit chain stays verifiable: only stretches covered by a signed root and wholly
//! older than the window go, and the chain keeps the last deleted row's sequence number
//! and hash as its anchor ([`crate::audit::verify_all`] starts there). Signed roots are
//! kept.

use std::collections::BTreeMap;

use chrono::Duration;
use lockstep_domain::Timestamp;

use crate::tables::{AuditLinkTable, ReadOnlyAuditHeadTable, Retained, RetentionTable};
use crate::{Storage, StoreResult};

/// Rows deleted per transaction.
pub const BATCH: i64 = 500;

/// The label of the audit chain in [`run`]'s counts.
pub const LOCK_AUDIT: &str = "lock_audit";

/// How long each table's rows live (`None`: not pruned). The defaults are the spec's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// `key_credential_attempts` (90 days).
    pub attempts: Option<Duration>,
    /// `lock_audit`, sealed stretches only (90 days).
    pub audit: Option<Duration>,
    /// `lock_devices` after decommissioning (30 days).
    pub decommissioned_devices: Option<Duration>,
    /// `webhook_inbox` after processing (30 days).
    pub processed_webhooks: Option<Duration>,
    /// `outbox` after publishing (7 days).
    pub published_outbox: Option<Duration>,
    /// `inbox` (30 days).
    pub inbox: Option<Duration>,
    /// `offline_issuance` after revocation (90 days).
    pub revoked_offline_certs: Option<Duration>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            attempts: Some(Duration::days(90)),
            audit: Some(Duration::days(90)),
            decommissioned_devices: Some(Duration::days(30)),
            processed_webhooks: Some(Duration::days(30)),
            published_outbox: Some(Duration::days(7)),
            inbox: Some(Duration::days(30)),
            revoked_offline_certs: Some(Duration::days(90)),
        }
    }
}

impl RetentionPolicy {
    /// How long rows of `table` live.
    pub fn window(&self, table: Retained) -> Option<Duration> {
        match table {
            Retained::Attempts => self.attempts,
            Retained::DecommissionedDevices => self.decommissioned_devices,
            Retained::ProcessedWebhooks => self.processed_webhooks,
            Retained::PublishedOutbox => self.published_outbox,
            Retained::Inbox => self.inbox,
            Retained::RevokedOfflineCerts => self.revoked_offline_certs,
        }
    }
}

/// One run of the retention job at `now`: every table pruned of rows past its window,
/// [`BATCH`] rows per transaction. Returns the rows deleted per table name (every table
/// of the policy, zero included; the audit chain as [`LOCK_AUDIT`]).
pub async fn run<S: Storage + ?Sized>(
    store: &S,
    policy: &RetentionPolicy,
    now: Timestamp,
) -> StoreResult<BTreeMap<&'static str, u64>> {
    let mut pruned = BTreeMap::new();
    for table in Retained::ALL {
        let Some(window) = policy.window(table) else {
            continue;
        };
        let before = now - window;
        let mut total = 0;
        loop {
            let mut tx = store.worker().await?;
            let n = tx.prune_expired(table, before, BATCH).await?;
            tx.commit().await?;
            total += n;
            if n < BATCH as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
        pruned.insert(table.table(), total);
    }
    if let Some(window) = policy.audit {
        let before = now - window;
        let mut tx = store.worker_read().await?;
        let chains = tx.audit_chains().await?;
        tx.commit().await?;
        let mut total = 0;
        for (tenant, property) in chains {
            loop {
                let mut tx = store.worker().await?;
                let n = tx
                    .prune_sealed_audit(tenant, &property, before, BATCH)
                    .await?;
                tx.commit().await?;
                total += n;
                if n < BATCH as u64 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        pruned.insert(LOCK_AUDIT, total);
    }
    Ok(pruned)
}
