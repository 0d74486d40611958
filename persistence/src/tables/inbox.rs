//! `inbox`: the broker deliveries already stored (DESIGN §3.1).

use std::collections::HashSet;

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

    /// [`InboxTable::insert_inbox`] of many messages in ONE statement (a partition
    /// consumer's batch, issue 11: under a burst every round trip waits its turn for a
    /// busy CPU, and a batch of 32 paid 64 of them): `true` for each message recorded
    /// now, in order; `false` for one the inbox had, or that came earlier in `msgs`.
    async fn insert_inbox_batch(&mut self, msgs: &[IntakeMessage]) -> StoreResult<Vec<bool>>;
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

    async fn insert_inbox_batch(&mut self, msgs: &[IntakeMessage]) -> StoreResult<Vec<bool>> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        for m in msgs {
            self.own(m.tenant_id, "inbox message")?;
        }
        let mut stmt = Stmt::new(format!(
            "INSERT INTO inbox (message_id, consumer_name, tenant_id, topic, processed_at) VALUES {} ON CONFLICT DO NOTHING RETURNING message_id, consumer_name",
            values(msgs.len(), 5)
        ));
        for m in msgs {
            stmt = stmt
                .bind(&m.message_id)
                .bind(&m.consumer)
                .bind(self.tenant)
                .bind(&m.topic)
                .bind(m.received_at);
        }
        let mut recorded: HashSet<(String, String)> = HashSet::new();
        for row in self.conn.fetch_all(stmt).await? {
            recorded.insert((row.get("message_id")?, row.get("consumer_name")?));
        }
        // each recorded key answers `true` once: to its first message in the batch
        Ok(msgs
            .iter()
            .map(|m| recorded.remove(&(m.message_id.clone(), m.consumer.clone())))
            .collect())
    }
}

/// `($1, …, $k), ($k+1, …), …`: the placeholders of `rows` rows of `columns` values, for a
/// multi-row `VALUES` both backends take.
pub(crate) fn values(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
