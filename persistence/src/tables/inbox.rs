//! `inbox`: the broker deliveries already stored (DESIGN §3.1).

use std::collections::HashSet;

use async_trait::async_trait;

use crate::dialect::{values, values_rows, Stmt};
use crate::model::IntakeMessage;
use crate::tx::Tx;
use crate::StoreResult;

/// The inbox: dedupe of broker deliveries on (tenant, message id, consumer).
#[async_trait]
pub trait InboxTable: Send {
    /// Records a delivery; `false` when the tenant's inbox had it already (a redelivery:
    /// store nothing else for it). Acknowledge the broker only after the commit.
    async fn insert_inbox(&mut self, msg: &IntakeMessage) -> StoreResult<bool>;

    /// [`InboxTable::insert_inbox`] of many messages in ONE statement (a partition
    /// consumer's batch, issue 11: under a burst every round trip waits its turn for a
    /// busy CPU, and a batch of 32 paid 64 of them): `true` for each message recorded
    /// now, in order; `false` for one the inbox had, or that came earlier in `msgs`.
    async fn insert_inbox_batch(&mut self, msgs: &[IntakeMessage]) -> StoreResult<Vec<bool>>;
}

/// The inbox row's columns, bound per message in this order.
const INBOX_COLUMNS: usize = 5;

#[async_trait]
impl InboxTable for Tx {
    async fn insert_inbox(&mut self, msg: &IntakeMessage) -> StoreResult<bool> {
        let recorded = self.insert_inbox_batch(std::slice::from_ref(msg)).await?;
        Ok(recorded.first() == Some(&true))
    }

    async fn insert_inbox_batch(&mut self, msgs: &[IntakeMessage]) -> StoreResult<Vec<bool>> {
        for m in msgs {
            self.own(m.tenant_id, "inbox message")?;
        }
        let mut recorded: HashSet<(String, String)> = HashSet::new();
        for chunk in msgs.chunks(values_rows(INBOX_COLUMNS)) {
            let mut stmt = Stmt::new(format!(
                "INSERT INTO inbox (message_id, consumer_name, tenant_id, topic, processed_at) VALUES {} ON CONFLICT DO NOTHING RETURNING message_id, consumer_name",
                values(chunk.len(), INBOX_COLUMNS)
            ));
            for m in chunk {
                stmt = stmt
                    .bind(&m.message_id)
                    .bind(&m.consumer)
                    .bind(self.tenant)
                    .bind(&m.topic)
                    .bind(m.received_at);
            }
            for row in self.conn.fetch_all(stmt).await? {
                recorded.insert((row.get("message_id")?, row.get("consumer_name")?));
            }
        }
        // each recorded key answers `true` once: to its first message in the batch (a
        // repeat in a later chunk met the row as a conflict and was not recorded again)
        Ok(msgs
            .iter()
            .map(|m| recorded.remove(&(m.message_id.clone(), m.consumer.clone())))
            .collect())
    }
}
