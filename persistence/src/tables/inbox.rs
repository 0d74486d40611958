//! `inbox`: the broker deliveries already stored (DESIGN §3.1).

use async_trait::async_trait;

use crate::dialect::Stmt;
use crate::model::IntakeMessage;
use crate::tx::Tx;
use crate::StoreResult;

/// The inbox: dedupe of broker deliveries on (tenant, message id, consumer).
#[async_trait]
pub trait InboxTable: Send {
    /// Records a delivery; `false` when the tenant's inbox had it already (a redelivery:
    /// store nothing else for it). Acknowledge the broker only after the commit.
    async fn insert_inbox(&mut self, msg: &IntakeMessage) -> StoreResult<bool>;
}

#[async_trait]
impl InboxTable for Tx {
    async fn insert_inbox(&mut self, msg: &IntakeMessage) -> StoreResult<bool> {
        self.own(msg.tenant_id, "inbox message")?;
        let stmt = Stmt::new(
            "INSERT INTO inbox (message_id, consumer_name, tenant_id, topic, processed_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&msg.message_id)
        .bind(&msg.consumer)
        .bind(self.tenant)
        .bind(&msg.topic)
        .bind(msg.received_at);
        let n = self.conn.execute(stmt).await?;
        Ok(n == 1)
    }
}
