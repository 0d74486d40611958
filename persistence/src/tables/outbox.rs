//! `outbox`: events Lockstep publishes, written with the step that decided them and
//! published by the worker path (DESIGN §3.6).

use async_trait::async_trait;
use lockstep_domain::Timestamp;

use crate::dialect::{Row, Stmt};
use crate::model::OutboxRow;
use crate::tx::{Access, ReadWrite, Tx, WorkerTx};
use crate::StoreResult;

/// A tenant's side of the outbox: rows written with the step that decided them.
#[async_trait]
pub trait OutboxTable: Send {
    /// Appends rows, due for publishing at their creation time. They are the
    /// transaction's tenant's whatever their `tenant_id` says.
    async fn append_outbox(&mut self, rows: &[OutboxRow]) -> StoreResult<()>;
}

/// The publisher's reads of every tenant's outbox.
#[async_trait]
pub trait ReadOnlyOutboxPublisherTable: Send {
    /// Unpublished rows due for a publish attempt at `now`, in due order, at most `limit`.
    async fn unpublished(&mut self, now: Timestamp, limit: i64) -> StoreResult<Vec<OutboxRow>>;

    /// Topics with rows the broker returned as unroutable (kept with
    /// `last_error = 'unroutable'`), and how many each.
    async fn unroutable_topics(&mut self) -> StoreResult<Vec<(String, i64)>>;

    /// Rows waiting to be published, and the creation time of the oldest (metrics); kept
    /// unroutable rows are counted apart (`unroutable_topics`).
    async fn outbox_lag(&mut self) -> StoreResult<(i64, Option<Timestamp>)>;
}

/// The publisher's writes of every tenant's outbox.
#[async_trait]
pub trait OutboxPublisherTable: ReadOnlyOutboxPublisherTable {
    /// Claims up to `limit` rows due at `now` for one publisher until `lease_until` (their
    /// next attempt moves there), in due order: rows another transaction is claiming are
    /// skipped, so two nodes' publishers never send the same row at once. A publisher that
    /// dies with its claim leaves the rows due again when the lease ends.
    async fn claim_unpublished(
        &mut self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRow>>;

    /// Marks rows published after a clean broker ack (a row published already is left
    /// alone).
    async fn mark_published(&mut self, ids: &[String], now: Timestamp) -> StoreResult<()>;

    /// Records a failed publish attempt and when to try again.
    async fn mark_publish_failed(
        &mut self,
        id: &str,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> StoreResult<()>;

    /// Makes up to `limit` (all with `None`) of a topic's unroutable rows due at `now`,
    /// oldest first; how many.
    async fn release_unroutable(
        &mut self,
        topic: &str,
        now: Timestamp,
        limit: Option<i64>,
    ) -> StoreResult<u64>;
}

#[async_trait]
impl OutboxTable for Tx<ReadWrite> {
    async fn append_outbox(&mut self, rows: &[OutboxRow]) -> StoreResult<()> {
        for o in rows {
            let stmt = Stmt::new(
                "INSERT INTO outbox (id, tenant_id, aggregate_id, topic, payload, envelope, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(&o.id)
            .bind(self.tenant)
            .bind(&o.aggregate_id)
            .bind(&o.topic)
            .bind(&o.payload)
            .bind(&o.envelope)
            .bind(o.created_at);
            self.conn.execute(stmt).await?;
        }
        Ok(())
    }
}

/// The columns a publisher reads.
const PUBLISHER_COLUMNS: &str =
    "id, tenant_id, aggregate_id, topic, payload, envelope, created_at, publish_attempts";

fn outbox_from_row(r: &Row) -> StoreResult<OutboxRow> {
    Ok(OutboxRow {
        id: r.get("id")?,
        tenant_id: r.tenant("tenant_id")?,
        aggregate_id: r.get("aggregate_id")?,
        topic: r.get("topic")?,
        payload: r.json("payload")?,
        envelope: r.json("envelope")?,
        created_at: r.ts("created_at")?,
        publish_attempts: r.get("publish_attempts")?,
    })
}

#[async_trait]
impl<A: Access> ReadOnlyOutboxPublisherTable for WorkerTx<A> {
    async fn unpublished(&mut self, now: Timestamp, limit: i64) -> StoreResult<Vec<OutboxRow>> {
        let stmt = Stmt::new(format!(
            "SELECT {PUBLISHER_COLUMNS} FROM outbox \
             WHERE published_at IS NULL AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(limit);
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn unroutable_topics(&mut self) -> StoreResult<Vec<(String, i64)>> {
        let stmt = Stmt::new(
            "SELECT topic, count(*) AS n FROM outbox WHERE published_at IS NULL AND last_error = 'unroutable' GROUP BY topic ORDER BY topic",
        );
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| Ok((r.get("topic")?, r.get("n")?)))
            .collect()
    }

    async fn outbox_lag(&mut self) -> StoreResult<(i64, Option<Timestamp>)> {
        let stmt = Stmt::new(
            "SELECT count(*) AS n, min(created_at) AS oldest FROM outbox WHERE published_at IS NULL AND (last_error IS NULL OR last_error <> 'unroutable')",
        );
        let row = self.conn.fetch_one(stmt).await?;
        Ok((row.get("n")?, row.opt_ts("oldest")?))
    }
}

#[async_trait]
impl OutboxPublisherTable for WorkerTx<ReadWrite> {
    async fn claim_unpublished(
        &mut self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRow>> {
        let d = self.conn.dialect();
        // the claimed rows first, in due order, locked (others skip them) ...
        let stmt = Stmt::new(format!(
            "SELECT {PUBLISHER_COLUMNS} FROM outbox \
             WHERE published_at IS NULL AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2{}",
            d.for_update_skip_locked()
        ))
        .bind(now)
        .bind(limit);
        let rows = self.conn.fetch_all(stmt).await?;
        let rows: Vec<OutboxRow> = rows
            .iter()
            .map(outbox_from_row)
            .collect::<StoreResult<_>>()?;
        // ... then leased
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        for chunk in d.chunks(&ids) {
            let stmt = Stmt::new(format!(
                "UPDATE outbox SET next_attempt_at = $1 WHERE published_at IS NULL AND {}",
                d.in_list("id", 2, chunk.len())
            ))
            .bind(lease_until)
            .list(chunk);
            self.conn.execute(stmt).await?;
        }
        Ok(rows)
    }

    async fn mark_published(&mut self, ids: &[String], now: Timestamp) -> StoreResult<()> {
        let d = self.conn.dialect();
        for chunk in d.chunks(ids) {
            let stmt = Stmt::new(format!(
                "UPDATE outbox SET published_at = $1, publish_attempts = publish_attempts + 1, last_error = NULL WHERE published_at IS NULL AND {}",
                d.in_list("id", 2, chunk.len())
            ))
            .bind(now)
            .list(chunk);
            self.conn.execute(stmt).await?;
        }
        Ok(())
    }

    async fn mark_publish_failed(
        &mut self,
        id: &str,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> StoreResult<()> {
        let stmt = Stmt::new(
            "UPDATE outbox SET publish_attempts = publish_attempts + 1, last_error = $2, next_attempt_at = $3 WHERE id = $1 AND published_at IS NULL",
        )
        .bind(id)
        .bind(error)
        .bind(next_attempt_at);
        self.conn.execute(stmt).await?;
        Ok(())
    }

    async fn release_unroutable(
        &mut self,
        topic: &str,
        now: Timestamp,
        limit: Option<i64>,
    ) -> StoreResult<u64> {
        let stmt = Stmt::new(
            "UPDATE outbox SET next_attempt_at = $2 WHERE id IN (SELECT id FROM outbox WHERE published_at IS NULL AND last_error = 'unroutable' AND topic = $1 ORDER BY created_at, id LIMIT $3)",
        )
        .bind(topic)
        .bind(now)
        .bind(limit.unwrap_or(i64::MAX));
        self.conn.execute(stmt).await
    }
}
