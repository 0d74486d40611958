//! `key_credential_saga`: each saga subject's stored state.

use async_trait::async_trait;
use lockstep_domain::Timestamp;

use crate::dialect::Stmt;
use crate::tx::{Access, ReadWrite, Tx};
use crate::StoreResult;

/// Reads of a tenant's saga state.
#[async_trait]
pub trait ReadOnlySagaTable: Send {
    /// The stored state of a saga subject.
    async fn load_saga(&mut self, subject: &str) -> StoreResult<Option<serde_json::Value>>;
}

/// Writes of a tenant's saga state.
#[async_trait]
pub trait SagaTable: ReadOnlySagaTable {
    /// Creates or replaces the state of a saga subject.
    async fn put_saga(
        &mut self,
        subject: &str,
        state: &serde_json::Value,
        now: Timestamp,
    ) -> StoreResult<()>;
}

#[async_trait]
impl<A: Access> ReadOnlySagaTable for Tx<A> {
    async fn load_saga(&mut self, subject: &str) -> StoreResult<Option<serde_json::Value>> {
        let stmt = Stmt::new(
            "SELECT state FROM key_credential_saga WHERE tenant_id = $1 AND subject = $2",
        )
        .bind(self.tenant)
        .bind(subject);
        let row = self.conn.fetch_optional(stmt).await?;
        row.map(|r| r.json("state")).transpose()
    }
}

#[async_trait]
impl SagaTable for Tx<ReadWrite> {
    async fn put_saga(
        &mut self,
        subject: &str,
        state: &serde_json::Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        let stmt = Stmt::new(
            "INSERT INTO key_credential_saga (tenant_id, subject, state, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, subject) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind(self.tenant)
        .bind(subject)
        .bind(state)
        .bind(now);
        self.conn.execute(stmt).await?;
        Ok(())
    }
}
