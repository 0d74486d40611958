//! Door attempts (`key_credential_attempts`, spec `003` §1.5, append-only: A-1) and the
//! vendor webhook deliveries that brought them (`webhook_inbox`).

use async_trait::async_trait;
use lockstep_domain::{KeyCredentialAttempt, Timestamp, VendorCode};

use crate::dialect::Stmt;
use crate::model::WebhookInboxRow;
use crate::tx::{Access, ReadWrite, Tx};
use crate::StoreResult;

/// Reads of a tenant's door attempts and webhook deliveries.
#[async_trait]
pub trait ReadOnlyDoorAttemptTable: Send {
    /// Which of `ids` (a vendor's event ids) already have a door attempt.
    async fn seen_vendor_events(
        &mut self,
        vendor: VendorCode,
        ids: &[String],
    ) -> StoreResult<Vec<String>>;

    /// Whether a vendor's webhook delivery was recorded already.
    async fn webhook_seen(
        &mut self,
        vendor: VendorCode,
        external_event_id: &str,
    ) -> StoreResult<bool>;
}

/// Writes of a tenant's door attempts and webhook deliveries (appends only).
#[async_trait]
pub trait DoorAttemptTable: ReadOnlyDoorAttemptTable {
    /// Appends a door attempt. A-2: a second attempt with the same (vendor, vendor event
    /// id) is [`crate::StoreError::Constraint`].
    async fn insert_attempt(&mut self, attempt: &KeyCredentialAttempt) -> StoreResult<()>;

    /// Records a handled webhook delivery (once per vendor and external id).
    async fn insert_webhook(
        &mut self,
        webhook: &WebhookInboxRow,
        now: Timestamp,
    ) -> StoreResult<()>;
}

#[async_trait]
impl<A: Access> ReadOnlyDoorAttemptTable for Tx<A> {
    async fn seen_vendor_events(
        &mut self,
        vendor: VendorCode,
        ids: &[String],
    ) -> StoreResult<Vec<String>> {
        let d = self.conn.dialect();
        let mut seen = Vec::new();
        for chunk in d.chunks(ids) {
            let stmt = Stmt::new(format!(
                "SELECT vendor_event_id FROM key_credential_attempts WHERE tenant_id = $1 AND vendor = $2 AND {}",
                d.in_list("vendor_event_id", 3, chunk.len())
            ))
            .bind(self.tenant)
            .bind(vendor.as_str())
            .list(chunk);
            let rows = self.conn.fetch_all(stmt).await?;
            for r in &rows {
                seen.push(r.get("vendor_event_id")?);
            }
        }
        Ok(seen)
    }

    async fn webhook_seen(
        &mut self,
        vendor: VendorCode,
        external_event_id: &str,
    ) -> StoreResult<bool> {
        let stmt = Stmt::new(
            "SELECT count(*) AS n FROM webhook_inbox WHERE tenant_id = $1 AND vendor = $2 AND external_event_id = $3",
        )
        .bind(self.tenant)
        .bind(vendor.as_str())
        .bind(external_event_id);
        let row = self.conn.fetch_one(stmt).await?;
        Ok(row.get::<i64>("n")? > 0)
    }
}

#[async_trait]
impl DoorAttemptTable for Tx<ReadWrite> {
    async fn insert_attempt(&mut self, a: &KeyCredentialAttempt) -> StoreResult<()> {
        let stmt = Stmt::new(
            "INSERT INTO key_credential_attempts (id, tenant_id, property_id, key_credential_id, device_id, attempted_at, ingested_at, outcome, deny_reason, vendor, vendor_event_id, metadata) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
        )
        .bind(a.id.as_str())
        .bind(self.tenant)
        .bind(a.property_id.as_str())
        .bind(a.key_credential_id.as_ref().map(|k| k.as_str()))
        .bind(a.device_id.as_str())
        .bind(a.attempted_at)
        .bind(a.ingested_at)
        .bind(a.outcome.as_str())
        .bind(a.deny_reason.map(|r| r.as_str()))
        .bind(a.vendor.as_str())
        .bind(&a.vendor_event_id)
        .bind(serde_json::json!({ "method": a.method, "clamped": a.clamped }));
        self.conn.execute(stmt).await?;
        Ok(())
    }

    async fn insert_webhook(&mut self, w: &WebhookInboxRow, now: Timestamp) -> StoreResult<()> {
        let stmt = Stmt::new(
            "INSERT INTO webhook_inbox (id, tenant_id, vendor, external_event_id, type, payload, signature_ok, received_at, processed_at, processed_outcome) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        )
        .bind(&w.id)
        .bind(self.tenant)
        .bind(w.vendor.as_str())
        .bind(&w.external_event_id)
        .bind(&w.kind)
        .bind(&w.payload)
        .bind(w.signature_ok)
        .bind(w.received_at)
        .bind(now)
        .bind(&w.outcome);
        self.conn.execute(stmt).await?;
        Ok(())
    }
}
