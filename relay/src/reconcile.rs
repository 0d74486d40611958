//! Provisional credentials a desktop minted offline reach the host here (spec `003` §5,
//! I-7): the relay hands each `provisional_batch` to the host's [`Reconciler`] and answers
//! the desktop `sync_result` with its verdicts. The relay checks only the frame's shape;
//! certificate chain, signatures, windows, kinds and policy are the host's to judge.

use async_trait::async_trait;
use lockstep_domain::{EncoderSessionId, OfflineIssuanceId, PropertyId, TenantId};

use crate::protocol::{ProvisionalBatch, SyncItem, SyncOutcome};

/// The authenticated desktop a batch came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesktopIdentity {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// The desktop.
    pub desktop_device_id: String,
    /// The certificate it authenticated with (a batch may name an earlier, rotated one).
    pub certificate_id: OfflineIssuanceId,
    /// Its session.
    pub session_id: EncoderSessionId,
}

/// Where the relay sends provisional batches.
#[async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// Verdicts on `batch`, one item per credential of the batch, in its order. A verdict
    /// must be durable before it is answered: the same batch sent again (its `sync_result`
    /// lost) gets the same answer.
    async fn reconcile(&self, desktop: &DesktopIdentity, batch: &ProvisionalBatch)
        -> Vec<SyncItem>;
}

/// A reconciler that decides nothing yet: every item is `deferred` (a relay without a
/// host reconciler, tests).
#[derive(Debug, Default)]
pub struct DeferAll;

#[async_trait]
impl Reconciler for DeferAll {
    async fn reconcile(
        &self,
        _desktop: &DesktopIdentity,
        batch: &ProvisionalBatch,
    ) -> Vec<SyncItem> {
        batch
            .items
            .iter()
            .map(|i| SyncItem {
                provisional_id: i.provisional_id.clone(),
                outcome: SyncOutcome::Deferred,
                credential_id: None,
                reason: Some("reconciliation is not available here".into()),
            })
            .collect()
    }
}
