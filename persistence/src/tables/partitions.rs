//! `partition_epochs`: which node owns each partition, and the fence every write of a
//! partition carries (DESIGN §4).

use async_trait::async_trait;
use lockstep_domain::Timestamp;

use crate::dialect::Stmt;
use crate::model::Fence;
use crate::tx::{Access, Conn, ReadWrite, WorkerTx};
use crate::{StoreError, StoreResult};

/// The worker path's reads of partition ownership.
#[async_trait]
pub trait ReadOnlyPartitionTable: Send {
    /// The partition's current fence, `None` if no node ever took it.
    async fn current_fence(&mut self, partition: i32) -> StoreResult<Option<Fence>>;
}

/// The worker path's writes of partition ownership.
#[async_trait]
pub trait PartitionTable: ReadOnlyPartitionTable {
    /// Takes ownership of a partition: bumps its epoch and returns the new fence.
    /// Transactions begun with an older fence fail with [`StoreError::Fenced`].
    async fn take_partition(
        &mut self,
        partition: i32,
        owner: &str,
        now: Timestamp,
    ) -> StoreResult<Fence>;
}

/// Fails with [`StoreError::Fenced`] unless the partition is at the fence's epoch. In
/// Postgres the epoch row stays share-locked to the end of the transaction, so
/// `take_partition` waits for it; in SQLite the single writer excludes it.
pub(crate) async fn check_fence(conn: &mut Conn, fence: Option<Fence>) -> StoreResult<()> {
    let Some(f) = fence else { return Ok(()) };
    let lock = conn.dialect().for_share();
    let row = conn
        .fetch_optional(
            Stmt::new(format!(
                "SELECT epoch FROM partition_epochs WHERE partition = $1{lock}"
            ))
            .bind(f.partition),
        )
        .await?;
    let epoch: Option<i64> = row.map(|r| r.get("epoch")).transpose()?;
    if epoch == Some(f.epoch) {
        Ok(())
    } else {
        Err(StoreError::Fenced)
    }
}

#[async_trait]
impl<A: Access> ReadOnlyPartitionTable for WorkerTx<A> {
    async fn current_fence(&mut self, partition: i32) -> StoreResult<Option<Fence>> {
        let stmt =
            Stmt::new("SELECT epoch FROM partition_epochs WHERE partition = $1").bind(partition);
        let row = self.conn.fetch_optional(stmt).await?;
        row.map(|r| {
            Ok(Fence {
                partition,
                epoch: r.get("epoch")?,
            })
        })
        .transpose()
    }
}

#[async_trait]
impl PartitionTable for WorkerTx<ReadWrite> {
    async fn take_partition(
        &mut self,
        partition: i32,
        owner: &str,
        now: Timestamp,
    ) -> StoreResult<Fence> {
        let stmt = Stmt::new(
            "INSERT INTO partition_epochs (partition, epoch, owner, taken_at) VALUES ($1, 1, $2, $3) ON CONFLICT (partition) DO UPDATE SET epoch = partition_epochs.epoch + 1, owner = EXCLUDED.owner, taken_at = EXCLUDED.taken_at RETURNING epoch",
        )
        .bind(partition)
        .bind(owner)
        .bind(now);
        let row = self.conn.fetch_one(stmt).await?;
        Ok(Fence {
            partition,
            epoch: row.get("epoch")?,
        })
    }
}
