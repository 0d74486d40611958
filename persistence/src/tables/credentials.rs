//! `key_credentials` and their room links `key_credential_rooms` (I-9).

use async_trait::async_trait;
use lockstep_domain::credential::KeyCredentialSnapshot;
use lockstep_domain::{
    FailureReason, HolderKind, KeyCredential, KeyCredentialId, KeyCredentialKind,
    KeyCredentialScope, KeyCredentialState, PropertyId, ReservationId, RevokeReason, RoomId,
    SuspendReason, ValidityWindow, VendorAdapterId, VendorCode,
};

use crate::dialect::{Dialect, Row, Stmt};
use crate::model::{CredentialFilter, PropertyCredential};
use crate::tx::{Access, ReadWrite, Tx};
use crate::{StoreError, StoreResult};

/// Reads of a tenant's credentials.
#[async_trait]
pub trait ReadOnlyCredentialTable: Send {
    /// One credential.
    async fn get_credential(&mut self, id: &KeyCredentialId) -> StoreResult<Option<KeyCredential>>;

    /// A page of credentials matching `filter`, by id, at most `limit`.
    async fn list_credentials(
        &mut self,
        filter: &CredentialFilter,
        limit: i64,
    ) -> StoreResult<Vec<KeyCredential>>;

    /// The credentials of a reservation, oldest first.
    async fn credentials_by_reservation(
        &mut self,
        reservation: &ReservationId,
    ) -> StoreResult<Vec<KeyCredential>>;

    /// A property's credentials in any of `states` (every state when empty), oldest
    /// first, with what routes each to its saga (bulk revoke on property deactivation).
    async fn credentials_of_property(
        &mut self,
        property: &PropertyId,
        states: &[&str],
    ) -> StoreResult<Vec<PropertyCredential>>;
}

/// Writes of a tenant's credentials. Every write also rewrites the credential's room
/// links, which carry its state and window so the schema can refuse I-9 overlaps.
#[async_trait]
pub trait CredentialTable: ReadOnlyCredentialTable {
    /// Inserts a new credential. I-9: a live guest credential of another reservation on
    /// one of its rooms for an overlapping window is [`StoreError::Overlap`].
    async fn insert_credential(&mut self, credential: &KeyCredentialSnapshot) -> StoreResult<()>;

    /// Writes a credential over the stored `expected_version` ([`StoreError::Conflict`]
    /// when it moved or the credential is not the tenant's); I-9 as on insert.
    async fn update_credential(
        &mut self,
        credential: &KeyCredentialSnapshot,
        expected_version: i64,
    ) -> StoreResult<()>;
}

/// The scope's stored JSON.
fn scope_to_json(s: &KeyCredentialScope) -> serde_json::Value {
    serde_json::json!({ "floors": s.floors, "areas": s.areas })
}

fn scope_from_json(v: &serde_json::Value) -> KeyCredentialScope {
    let list = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(|x| x.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    KeyCredentialScope {
        floors: list("floors"),
        areas: list("areas"),
    }
}

/// An optional column parsed into a domain type.
pub(crate) fn opt_parse<T>(
    v: Option<String>,
    f: impl Fn(&str) -> Result<T, lockstep_domain::DomainError>,
) -> StoreResult<Option<T>> {
    v.map(|s| f(&s).map_err(StoreError::from)).transpose()
}

fn credential_from_row(row: &Row, rooms: Vec<RoomId>) -> StoreResult<KeyCredential> {
    let snap = KeyCredentialSnapshot {
        id: KeyCredentialId::parse(row.get("id")?)?,
        tenant_id: row.tenant("tenant_id")?,
        property_id: PropertyId::parse(row.get("property_id")?)?,
        holder_kind: HolderKind::parse(row.get("holder_kind")?)?,
        reservation_id: opt_parse(row.get("reservation_id")?, ReservationId::parse)?,
        guest_id: opt_parse(row.get("guest_id")?, lockstep_domain::GuestId::parse)?,
        staff_user_id: opt_parse(row.get("staff_user_id")?, lockstep_domain::UserId::parse)?,
        kind: KeyCredentialKind::parse(row.get("kind")?)?,
        rooms,
        scope: scope_from_json(&row.json("scope")?),
        validity: ValidityWindow::new(row.ts("valid_from")?, row.ts("valid_until")?)?,
        state: KeyCredentialState::parse(row.get("state")?)?,
        vendor: VendorCode::parse(row.get("vendor")?)?,
        vendor_adapter_id: VendorAdapterId::parse(row.get("vendor_adapter_id")?)?,
        provisional: row.get("provisional")?,
        idempotency_key: row.get("idempotency_key")?,
        issued_at: row.opt_ts("issued_at")?,
        suspended_at: row.opt_ts("suspended_at")?,
        revoked_at: row.opt_ts("revoked_at")?,
        failure_reason: opt_parse(row.get("failure_reason")?, FailureReason::parse)?,
        suspend_reason: opt_parse(row.get("suspend_reason")?, SuspendReason::parse)?,
        revoke_reason: opt_parse(row.get("revoke_reason")?, RevokeReason::parse)?,
        replaces_id: opt_parse(row.get("replaces_id")?, KeyCredentialId::parse)?,
        replaced_by_id: opt_parse(row.get("replaced_by_id")?, KeyCredentialId::parse)?,
        version: row.get("version")?,
        created_at: row.ts("created_at")?,
        updated_at: row.ts("updated_at")?,
    };
    Ok(KeyCredential::restore(snap)?)
}

impl<A: Access> Tx<A> {
    /// Credentials from their rows, each with its rooms (read in the same transaction).
    async fn with_rooms(&mut self, rows: Vec<Row>) -> StoreResult<Vec<KeyCredential>> {
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let stmt = Stmt::new(
                "SELECT room_id FROM key_credential_rooms WHERE tenant_id = $1 AND key_credential_id = $2 ORDER BY room_id",
            )
            .bind(self.tenant)
            .bind(row.get::<&str>("id")?);
            let ids: Vec<Row> = self.conn.fetch_all(stmt).await?;
            let rooms = ids
                .iter()
                .map(|r| Ok(RoomId::parse(r.get("room_id")?)?))
                .collect::<StoreResult<Vec<_>>>()?;
            out.push(credential_from_row(row, rooms)?);
        }
        Ok(out)
    }
}

#[async_trait]
impl<A: Access> ReadOnlyCredentialTable for Tx<A> {
    async fn get_credential(&mut self, id: &KeyCredentialId) -> StoreResult<Option<KeyCredential>> {
        let stmt = Stmt::new("SELECT * FROM key_credentials WHERE tenant_id = $1 AND id = $2")
            .bind(self.tenant)
            .bind(id.as_str());
        let rows = self.conn.fetch_all(stmt).await?;
        Ok(self.with_rooms(rows).await?.pop())
    }

    async fn list_credentials(
        &mut self,
        filter: &CredentialFilter,
        limit: i64,
    ) -> StoreResult<Vec<KeyCredential>> {
        let stmt = Stmt::new(
            "SELECT * FROM key_credentials c WHERE c.tenant_id = $1 \
             AND ($2 IS NULL OR c.property_id = $2) \
             AND ($3 IS NULL OR c.reservation_id = $3) \
             AND ($4 IS NULL OR c.guest_id = $4) \
             AND ($5 IS NULL OR c.staff_user_id = $5) \
             AND ($6 IS NULL OR c.state = $6) \
             AND ($7 IS NULL OR EXISTS (SELECT 1 FROM key_credential_rooms r \
                  WHERE r.tenant_id = c.tenant_id AND r.key_credential_id = c.id AND r.room_id = $7)) \
             AND ($8 IS NULL OR (c.state IN ('pending', 'active') \
                  AND c.valid_from <= $8 AND $8 < c.valid_until)) \
             AND ($9 IS NULL OR c.id > $9) \
             ORDER BY c.id LIMIT $10",
        )
        .bind(self.tenant)
        .bind(&filter.property_id)
        .bind(&filter.reservation_id)
        .bind(&filter.guest_id)
        .bind(&filter.staff_user_id)
        .bind(&filter.state)
        .bind(&filter.room_id)
        .bind(filter.opens_at)
        .bind(&filter.after)
        .bind(limit);
        let rows = self.conn.fetch_all(stmt).await?;
        self.with_rooms(rows).await
    }

    async fn credentials_by_reservation(
        &mut self,
        reservation: &ReservationId,
    ) -> StoreResult<Vec<KeyCredential>> {
        let stmt = Stmt::new(
            "SELECT * FROM key_credentials WHERE tenant_id = $1 AND reservation_id = $2 ORDER BY created_at, id",
        )
        .bind(self.tenant)
        .bind(reservation.as_str());
        let rows = self.conn.fetch_all(stmt).await?;
        self.with_rooms(rows).await
    }

    async fn credentials_of_property(
        &mut self,
        property: &PropertyId,
        states: &[&str],
    ) -> StoreResult<Vec<PropertyCredential>> {
        let filter = if states.is_empty() {
            String::new()
        } else {
            // six states at most: one statement in either dialect
            format!(
                " AND {}",
                self.conn.dialect().in_list("c.state", 3, states.len())
            )
        };
        let mut stmt = Stmt::new(format!(
            "SELECT c.id, c.state, c.holder_kind, c.reservation_id, c.staff_user_id, m.shift_id FROM key_credentials c \
             LEFT JOIN master_keys m ON m.tenant_id = c.tenant_id AND m.key_credential_id = c.id \
             WHERE c.tenant_id = $1 AND c.property_id = $2{filter} ORDER BY c.created_at, c.id"
        ))
        .bind(self.tenant)
        .bind(property.as_str());
        if !states.is_empty() {
            stmt = stmt.list(states);
        }
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| {
                Ok(PropertyCredential {
                    id: KeyCredentialId::parse(r.get("id")?)?,
                    state: r.get("state")?,
                    holder_kind: r.get("holder_kind")?,
                    reservation_id: r.get("reservation_id")?,
                    staff_user_id: r.get("staff_user_id")?,
                    shift_id: r.get("shift_id")?,
                })
            })
            .collect()
    }
}

/// A credential I-9 holds to its rooms (requested, pending, active, suspended), as SQL
/// over `key_credentials c`: what a room link keeps as `live` (migration 0020).
const LIVE: &str = "c.state IN ('requested','pending','active','suspended')";

impl Tx<ReadWrite> {
    /// Writes a new credential's room links from the row just written: property,
    /// reservation, holder, liveness and window, so the I-9 constraint (Postgres: an
    /// exclusion over a `tstzrange`; SQLite: triggers) sees the credential as it is now
    /// (DESIGN §12). Rooms go in sorted order (the aggregate sorts them), so two racing
    /// writers meet on the same room first and cannot deadlock.
    async fn link_rooms(&mut self, s: &KeyCredentialSnapshot) -> StoreResult<()> {
        match self.conn.dialect() {
            Dialect::Postgres => {
                let stmt = Stmt::new(format!(
                    "INSERT INTO key_credential_rooms (tenant_id, key_credential_id, room_id, property_id, reservation_id, is_master, live, validity) \
                     SELECT c.tenant_id, c.id, r.room_id, c.property_id, c.reservation_id, c.holder_kind = 'staff_master', {LIVE}, tstzrange(c.valid_from, c.valid_until, '[)') \
                     FROM key_credentials c CROSS JOIN unnest($3::text[]) WITH ORDINALITY AS r(room_id, n) WHERE c.tenant_id = $1 AND c.id = $2 ORDER BY r.n",
                ))
                .bind(self.tenant)
                .bind(s.id.as_str())
                .list(&s.rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>());
                self.conn.execute(stmt).await?;
            }
            Dialect::Sqlite => {
                for room in &s.rooms {
                    let stmt = Stmt::new(format!(
                        "INSERT INTO key_credential_rooms (tenant_id, key_credential_id, room_id, property_id, reservation_id, is_master, live, valid_from, valid_until) \
                         SELECT c.tenant_id, c.id, $3, c.property_id, c.reservation_id, c.holder_kind = 'staff_master', {LIVE}, c.valid_from, c.valid_until \
                         FROM key_credentials c WHERE c.tenant_id = $1 AND c.id = $2",
                    ))
                    .bind(self.tenant)
                    .bind(s.id.as_str())
                    .bind(room.as_str());
                    self.conn.execute(stmt).await?;
                }
            }
        }
        Ok(())
    }

    /// Brings an updated credential's room links to the row just written, touching only
    /// what I-9 reads and what changed (issue 11). Postgres, in one statement: the links of
    /// rooms it lost go, the kept ones are rewritten only when liveness, window or
    /// reservation changed, rooms it gained are linked; a step that only moves the
    /// credential between live states (requested → pending → active) writes no link,
    /// where each rewrite used to be a new entry in, and a check of, the exclusion
    /// index. SQLite (one writer per file, no such index) writes them again.
    async fn relink_rooms(&mut self, s: &KeyCredentialSnapshot) -> StoreResult<()> {
        match self.conn.dialect() {
            Dialect::Postgres => {
                let stmt = Stmt::new(format!(
                    "WITH c AS (\
                       SELECT c.tenant_id, c.id, c.property_id, c.reservation_id, c.holder_kind = 'staff_master' AS is_master, {LIVE} AS live, \
                              tstzrange(c.valid_from, c.valid_until, '[)') AS validity \
                         FROM key_credentials c WHERE c.tenant_id = $1 AND c.id = $2), \
                     gone AS (\
                       DELETE FROM key_credential_rooms k WHERE k.tenant_id = $1 AND k.key_credential_id = $2 AND k.room_id <> ALL($3::text[])), \
                     kept AS (\
                       UPDATE key_credential_rooms k SET reservation_id = c.reservation_id, live = c.live, validity = c.validity FROM c \
                        WHERE k.tenant_id = $1 AND k.key_credential_id = $2 AND k.room_id = ANY($3::text[]) \
                          AND (k.live <> c.live OR k.validity <> c.validity OR k.reservation_id IS DISTINCT FROM c.reservation_id)) \
                     INSERT INTO key_credential_rooms (tenant_id, key_credential_id, room_id, property_id, reservation_id, is_master, live, validity) \
                     SELECT c.tenant_id, c.id, r.room_id, c.property_id, c.reservation_id, c.is_master, c.live, c.validity \
                       FROM c CROSS JOIN unnest($3::text[]) WITH ORDINALITY AS r(room_id, n) \
                      WHERE NOT EXISTS (SELECT 1 FROM key_credential_rooms k WHERE k.key_credential_id = $2 AND k.room_id = r.room_id) \
                      ORDER BY r.n",
                ))
                .bind(self.tenant)
                .bind(s.id.as_str())
                .list(&s.rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>());
                self.conn.execute(stmt).await?;
                Ok(())
            }
            Dialect::Sqlite => {
                let stmt = Stmt::new(
                    "DELETE FROM key_credential_rooms WHERE tenant_id = $1 AND key_credential_id = $2",
                )
                .bind(self.tenant)
                .bind(s.id.as_str());
                self.conn.execute(stmt).await?;
                self.link_rooms(s).await
            }
        }
    }
}

/// Binds what a write may change, in this order: scope, valid_from, valid_until, state,
/// issued_at, suspended_at, revoked_at, failure_reason, suspend_reason, revoke_reason,
/// replaced_by_id, version, updated_at.
fn bind_changes<'a>(stmt: Stmt<'a>, s: &'a KeyCredentialSnapshot) -> Stmt<'a> {
    stmt.bind(scope_to_json(&s.scope))
        .bind(s.validity.from())
        .bind(s.validity.until())
        .bind(s.state.as_str())
        .bind(s.issued_at)
        .bind(s.suspended_at)
        .bind(s.revoked_at)
        .bind(s.failure_reason.map(|r| r.as_str()))
        .bind(s.suspend_reason.map(|r| r.as_str()))
        .bind(s.revoke_reason.map(|r| r.as_str()))
        .bind(s.replaced_by_id.as_ref().map(|r| r.as_str()))
        .bind(s.version)
        .bind(s.updated_at)
}

#[async_trait]
impl CredentialTable for Tx<ReadWrite> {
    async fn insert_credential(&mut self, s: &KeyCredentialSnapshot) -> StoreResult<()> {
        let stmt = Stmt::new(
            "INSERT INTO key_credentials (id, tenant_id, property_id, holder_kind, reservation_id, guest_id, staff_user_id, kind, vendor, vendor_adapter_id, provisional, idempotency_key, replaces_id, created_at, \
             scope, valid_from, valid_until, state, issued_at, suspended_at, revoked_at, failure_reason, suspend_reason, revoke_reason, replaced_by_id, version, updated_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$25,$26,$27)",
        )
        .bind(s.id.as_str())
        .bind(self.tenant)
        .bind(s.property_id.as_str())
        .bind(s.holder_kind.as_str())
        .bind(s.reservation_id.as_ref().map(|r| r.as_str()))
        .bind(s.guest_id.as_ref().map(|r| r.as_str()))
        .bind(s.staff_user_id.as_ref().map(|r| r.as_str()))
        .bind(s.kind.as_str())
        .bind(s.vendor.as_str())
        .bind(s.vendor_adapter_id.as_str())
        .bind(s.provisional)
        .bind(&s.idempotency_key)
        .bind(s.replaces_id.as_ref().map(|r| r.as_str()))
        .bind(s.created_at);
        self.conn.execute(bind_changes(stmt, s)).await?;
        self.link_rooms(s).await
    }

    async fn update_credential(
        &mut self,
        s: &KeyCredentialSnapshot,
        expected_version: i64,
    ) -> StoreResult<()> {
        let stmt = Stmt::new(
            "UPDATE key_credentials SET scope = $4, valid_from = $5, valid_until = $6, state = $7, issued_at = $8, suspended_at = $9, revoked_at = $10, \
             failure_reason = $11, suspend_reason = $12, revoke_reason = $13, replaced_by_id = $14, version = $15, updated_at = $16 \
             WHERE tenant_id = $1 AND id = $2 AND version = $3",
        )
        .bind(self.tenant)
        .bind(s.id.as_str())
        .bind(expected_version);
        if self.conn.execute(bind_changes(stmt, s)).await? != 1 {
            return Err(StoreError::Conflict {
                entity: "key_credentials",
            });
        }
        self.relink_rooms(s).await
    }
}
