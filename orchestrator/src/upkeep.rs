//! Background upkeep of the store: the audit linker (issue 11) and the retention job
//! (spec `004` §8, issue 13). Both run on every node, on the worker path, in short
//! transactions: a linker that finds a chain's head held by another node's linker skips
//! the chain (its rows are the holder's), and two retention runs delete each row once.

use std::sync::Arc;
use std::time::Duration;

use lockstep_config::RetentionSettings;
use lockstep_domain::Clock;
use lockstep_persistence::retention::{self, RetentionPolicy, LOCK_AUDIT};
use lockstep_persistence::{Retained, Store};
use prometheus::{IntCounterVec, Opts, Registry};
use tracing::{debug, info, warn};

/// After a commit wrote audit rows, how long the linker gathers others before it links
/// them (at most one run per gather under a burst).
pub const LINK_GATHER: Duration = Duration::from_millis(200);
/// How often the linker looks without being woken: rows written outside a saga step
/// (webhooks, the desk, operator tools) or by a node that died before linking them.
pub const LINK_FALLBACK: Duration = Duration::from_secs(2);

/// Links the audit rows steps wrote for as long as the node runs: woken by `ready` (a
/// commit with audit rows), after [`LINK_GATHER`], or every [`LINK_FALLBACK`]. An idle
/// node polled every 200 ms before, five transactions a second for nothing. A failure is
/// logged once until the linker succeeds again; the rows wait, nothing is lost.
pub async fn audit_linker(store: Arc<dyn Store>, ready: Arc<tokio::sync::Notify>) {
    let mut failing = false;
    loop {
        match lockstep_persistence::audit::link_all(store.as_ref()).await {
            Ok(n) => {
                if failing {
                    info!("audit linker: linking again");
                    failing = false;
                }
                if n > 0 {
                    debug!(rows = n, "audit rows linked");
                }
            }
            Err(e) if !failing => {
                warn!(error = %e, "audit linker: linking failed, the rows wait");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = ready.notified() => {}
            () = tokio::time::sleep(LINK_FALLBACK) => {}
        }
        tokio::time::sleep(LINK_GATHER).await;
    }
}

/// The retention policy of the configured days.
pub fn policy(s: &RetentionSettings) -> RetentionPolicy {
    let days = |d: u32| Some(chrono::Duration::days(i64::from(d)));
    RetentionPolicy {
        attempts: days(s.key_credential_attempts_days),
        audit: days(s.lock_audit_days),
        decommissioned_devices: days(s.lock_devices_decommissioned_days),
        processed_webhooks: days(s.webhook_inbox_processed_days),
        published_outbox: days(s.outbox_published_days),
        inbox: days(s.inbox_days),
        revoked_offline_certs: days(s.offline_issuance_revoked_days),
    }
}

/// `lockstep_retention_pruned_rows_total{table}`: rows the retention job deleted. Every
/// table's series exists at 0 from the start.
#[derive(Clone, Debug)]
pub struct RetentionMetrics {
    pruned: IntCounterVec,
}

impl RetentionMetrics {
    /// Registers the counter in `registry` (the node's `/metrics`).
    pub fn register(registry: &Registry) -> anyhow::Result<Self> {
        let pruned = IntCounterVec::new(
            Opts::new(
                "lockstep_retention_pruned_rows_total",
                "Rows deleted by the retention job (spec 004 section 8), by table",
            ),
            &["table"],
        )?;
        registry.register(Box::new(pruned.clone()))?;
        for t in Retained::ALL {
            pruned.with_label_values(&[t.table()]);
        }
        pruned.with_label_values(&[LOCK_AUDIT]);
        Ok(Self { pruned })
    }

    /// Counts and logs one run's deletions.
    fn record(&self, pruned: &std::collections::BTreeMap<&'static str, u64>) {
        for (table, n) in pruned {
            if *n > 0 {
                self.pruned.with_label_values(&[table]).inc_by(*n);
                info!(table, rows = n, "retention pruned rows");
            }
        }
    }
}

/// Runs the retention job now and then every `every`, in business time from `clock`.
pub async fn retention_loop(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: RetentionMetrics,
    policy: RetentionPolicy,
    every: Duration,
) {
    loop {
        match retention::run(store.as_ref(), &policy, clock.now()).await {
            Ok(pruned) => metrics.record(&pruned),
            Err(e) => warn!(error = %e, "retention run failed; the next run tries again"),
        }
        tokio::time::sleep(every).await;
    }
}
