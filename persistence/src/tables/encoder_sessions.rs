//! `encoder_sessions`: one row per desktop session and encoder (spec `003` §5
//! `EncoderSession`, spec `004` §3), opened when a desktop authenticates at the relay and
//! closed when its connection ends (E-1).

use async_trait::async_trait;
use lockstep_domain::{EncoderSessionId, PropertyId, TenantId, Timestamp};

use crate::dialect::{Row, Stmt};
use crate::tx::{Access, ReadWrite, Tx, WorkerTx};
use crate::StoreResult;

/// One encoder session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderSessionRecord {
    /// `enc_`: this encoder's session.
    pub id: EncoderSessionId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// The desktop.
    pub desktop_device_id: String,
    /// The encoder's model (`hid_omnikey`, ...).
    pub encoder_model: String,
    /// `usb_hid` or `serial`.
    pub transport: String,
    /// The relay connection (`welcome.sessionId`) it came over.
    pub connection_id: String,
    /// The encoder's name on the desktop.
    pub encoder_id: String,
    /// The certificate the desktop authenticated with (`oki_`).
    pub certificate_id: String,
    /// The node whose relay served it.
    pub node_id: String,
    /// When it opened.
    pub opened_at: Timestamp,
    /// When it closed.
    pub closed_at: Option<Timestamp>,
    /// The spec's reason: `graceful`, `usb_disconnect`, `app_quit` or `error`.
    pub close_reason: Option<String>,
    /// The relay's own reason (`heartbeat_timeout`, `server_restart`, ...).
    pub close_detail: Option<String>,
}

/// Reads of a tenant's encoder sessions.
#[async_trait]
pub trait ReadOnlyEncoderSessionTable: Send {
    /// One session by id.
    async fn encoder_session(
        &mut self,
        id: &EncoderSessionId,
    ) -> StoreResult<Option<EncoderSessionRecord>>;

    /// A property's sessions, oldest first; only the open ones when `open_only`.
    async fn encoder_sessions(
        &mut self,
        property: &PropertyId,
        open_only: bool,
    ) -> StoreResult<Vec<EncoderSessionRecord>>;
}

/// Writes of a tenant's encoder sessions.
#[async_trait]
pub trait EncoderSessionTable: ReadOnlyEncoderSessionTable {
    /// Records an opened session; `false` when it was recorded already.
    async fn open_encoder_session(&mut self, session: &EncoderSessionRecord) -> StoreResult<bool>;

    /// Closes an open session; `false` when it is unknown or closed already (the first
    /// close is kept).
    async fn close_encoder_session(
        &mut self,
        id: &EncoderSessionId,
        closed_at: Timestamp,
        reason: &str,
        detail: &str,
    ) -> StoreResult<bool>;
}

/// The worker's scan of sessions left open, across tenants (a restarted node closes its
/// own).
#[async_trait]
pub trait ReadOnlyEncoderSessionScanTable: Send {
    /// Open sessions served by `node` (every node when `None`), oldest first.
    async fn open_encoder_sessions(
        &mut self,
        node: Option<&str>,
    ) -> StoreResult<Vec<(TenantId, EncoderSessionId)>>;
}

fn session_from_row(r: &Row) -> StoreResult<EncoderSessionRecord> {
    Ok(EncoderSessionRecord {
        id: EncoderSessionId::parse(r.get("id")?)?,
        tenant_id: r.tenant("tenant_id")?,
        property_id: PropertyId::parse(r.get("property_id")?)?,
        desktop_device_id: r.get("desktop_device_id")?,
        encoder_model: r.get("encoder_model")?,
        transport: r.get("transport")?,
        connection_id: r.get("connection_id")?,
        encoder_id: r.get("encoder_id")?,
        certificate_id: r.get("certificate_id")?,
        node_id: r.get("node_id")?,
        opened_at: r.ts("opened_at")?,
        closed_at: r.opt_ts("closed_at")?,
        close_reason: r.get("close_reason")?,
        close_detail: r.get("close_detail")?,
    })
}

#[async_trait]
impl<A: Access> ReadOnlyEncoderSessionTable for Tx<A> {
    async fn encoder_session(
        &mut self,
        id: &EncoderSessionId,
    ) -> StoreResult<Option<EncoderSessionRecord>> {
        let stmt = Stmt::new("SELECT * FROM encoder_sessions WHERE tenant_id = $1 AND id = $2")
            .bind(self.tenant)
            .bind(id.as_str());
        let row = self.conn.fetch_optional(stmt).await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn encoder_sessions(
        &mut self,
        property: &PropertyId,
        open_only: bool,
    ) -> StoreResult<Vec<EncoderSessionRecord>> {
        let sql = if open_only {
            "SELECT * FROM encoder_sessions WHERE tenant_id = $1 AND property_id = $2 AND closed_at IS NULL ORDER BY opened_at, id"
        } else {
            "SELECT * FROM encoder_sessions WHERE tenant_id = $1 AND property_id = $2 ORDER BY opened_at, id"
        };
        let stmt = Stmt::new(sql).bind(self.tenant).bind(property.as_str());
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter().map(session_from_row).collect()
    }
}

#[async_trait]
impl EncoderSessionTable for Tx<ReadWrite> {
    async fn open_encoder_session(&mut self, s: &EncoderSessionRecord) -> StoreResult<bool> {
        self.own(s.tenant_id, "encoder session")?;
        let stmt = Stmt::new(
            "INSERT INTO encoder_sessions (id, tenant_id, property_id, desktop_device_id, encoder_model, transport, opened_at, closed_at, close_reason, connection_id, encoder_id, certificate_id, node_id, close_detail) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) ON CONFLICT (id) DO NOTHING",
        )
        .bind(s.id.as_str())
        .bind(self.tenant)
        .bind(s.property_id.as_str())
        .bind(&s.desktop_device_id)
        .bind(&s.encoder_model)
        .bind(&s.transport)
        .bind(s.opened_at)
        .bind(s.closed_at)
        .bind(&s.close_reason)
        .bind(&s.connection_id)
        .bind(&s.encoder_id)
        .bind(&s.certificate_id)
        .bind(&s.node_id)
        .bind(&s.close_detail);
        Ok(self.conn.execute(stmt).await? == 1)
    }

    async fn close_encoder_session(
        &mut self,
        id: &EncoderSessionId,
        closed_at: Timestamp,
        reason: &str,
        detail: &str,
    ) -> StoreResult<bool> {
        let stmt = Stmt::new(
            "UPDATE encoder_sessions SET closed_at = $3, close_reason = $4, close_detail = $5 \
             WHERE tenant_id = $1 AND id = $2 AND closed_at IS NULL",
        )
        .bind(self.tenant)
        .bind(id.as_str())
        .bind(closed_at)
        .bind(reason)
        .bind(detail);
        Ok(self.conn.execute(stmt).await? == 1)
    }
}

#[async_trait]
impl<A: Access> ReadOnlyEncoderSessionScanTable for WorkerTx<A> {
    async fn open_encoder_sessions(
        &mut self,
        node: Option<&str>,
    ) -> StoreResult<Vec<(TenantId, EncoderSessionId)>> {
        let stmt = match node {
            Some(n) => Stmt::new(
                "SELECT tenant_id, id FROM encoder_sessions WHERE closed_at IS NULL AND node_id = $1 ORDER BY opened_at, id",
            )
            .bind(n),
            None => Stmt::new(
                "SELECT tenant_id, id FROM encoder_sessions WHERE closed_at IS NULL ORDER BY opened_at, id",
            ),
        };
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.tenant("tenant_id")?,
                    EncoderSessionId::parse(r.get("id")?)?,
                ))
            })
            .collect()
    }
}
