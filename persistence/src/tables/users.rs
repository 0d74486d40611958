//! `deactivated_users` and `deactivated_properties`: users the identity service and
//! properties the tenant service deactivated, per tenant.

use async_trait::async_trait;
use lockstep_domain::{PropertyId, Timestamp};

use crate::dialect::Stmt;
use crate::tx::{Access, ReadWrite, Tx};
use crate::StoreResult;

/// Reads of a tenant's deactivated users.
#[async_trait]
pub trait ReadOnlyUserTable: Send {
    /// When a user was deactivated, if ever.
    async fn user_deactivated_at(&mut self, user_id: &str) -> StoreResult<Option<Timestamp>>;
    /// When a property was deactivated, if ever.
    async fn property_deactivated_at(
        &mut self,
        property: &PropertyId,
    ) -> StoreResult<Option<Timestamp>>;
}

/// Writes of a tenant's deactivated users.
#[async_trait]
pub trait UserTable: ReadOnlyUserTable {
    /// Records that a user was deactivated; the first time is kept.
    async fn record_user_deactivated(&mut self, user_id: &str, at: Timestamp) -> StoreResult<()>;
    /// Records that a property was deactivated; the first time is kept.
    async fn record_property_deactivated(
        &mut self,
        property: &PropertyId,
        at: Timestamp,
    ) -> StoreResult<()>;
}

#[async_trait]
impl<A: Access> ReadOnlyUserTable for Tx<A> {
    async fn user_deactivated_at(&mut self, user_id: &str) -> StoreResult<Option<Timestamp>> {
        let stmt = Stmt::new(
            "SELECT deactivated_at FROM deactivated_users WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(self.tenant)
        .bind(user_id);
        let row = self.conn.fetch_optional(stmt).await?;
        Ok(row.map(|r| r.ts("deactivated_at")).transpose()?)
    }

    async fn property_deactivated_at(
        &mut self,
        property: &PropertyId,
    ) -> StoreResult<Option<Timestamp>> {
        let stmt = Stmt::new(
            "SELECT deactivated_at FROM deactivated_properties WHERE tenant_id = $1 AND property_id = $2",
        )
        .bind(self.tenant)
        .bind(property.as_str());
        let row = self.conn.fetch_optional(stmt).await?;
        Ok(row.map(|r| r.ts("deactivated_at")).transpose()?)
    }
}

#[async_trait]
impl UserTable for Tx<ReadWrite> {
    async fn record_user_deactivated(&mut self, user_id: &str, at: Timestamp) -> StoreResult<()> {
        let stmt = Stmt::new(
            "INSERT INTO deactivated_users (tenant_id, user_id, deactivated_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(self.tenant)
        .bind(user_id)
        .bind(at);
        self.conn.execute(stmt).await?;
        Ok(())
    }

    async fn record_property_deactivated(
        &mut self,
        property: &PropertyId,
        at: Timestamp,
    ) -> StoreResult<()> {
        let stmt = Stmt::new(
            "INSERT INTO deactivated_properties (tenant_id, property_id, deactivated_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(self.tenant)
        .bind(property.as_str())
        .bind(at);
        self.conn.execute(stmt).await?;
        Ok(())
    }
}
