//! The SQLite store (embedded mode), a port of [`crate::pg::PgStore`] with the same
//! behaviour. There is no row-level security in SQLite: every tenant-scoped query filters on
//! `tenant_id` itself, so tenant scoping holds by query.
//!
//! Concurrency (DESIGN §5): the file runs in WAL mode with foreign keys on and a busy
//! timeout. All writes go through one pool of exactly one connection and every write
//! transaction starts with `BEGIN IMMEDIATE`, so a write never starts deferred and then
//! fails to upgrade with `SQLITE_BUSY`; reads use a separate pool of query-only
//! connections, which WAL lets run beside the writer. The single writer also makes the
//! partition fence check atomic with the commit it guards.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockstep_domain::{
    KeyCredential, KeyCredentialId, LockDeviceId, PropertyId, ReservationId, RoomId, TenantId,
    Timestamp, VendorAdapterId, VendorCode,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Sqlite, Transaction};

use crate::audit;
use crate::crypto::Cipher;
use crate::model::*;
use crate::pg::scope_to_json;
use crate::tx::{Conn, ReadTx, Tx, WorkerReadTx, WorkerTx};
use crate::{migrate, Storage, Store, StoreError, StoreResult};

/// How long a connection waits for a lock held by another connection (or process).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Read connections beside the one writer.
const READERS: u32 = 4;

/// SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    cipher: Arc<Cipher>,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `path_or_url` — a file path or a
    /// `sqlite:` URL — and applies the SQLite migrations. An in-memory database is not
    /// supported: the reader pool must see the writer's file.
    pub async fn open(path_or_url: &str, cipher: Cipher) -> StoreResult<Self> {
        let base = if path_or_url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(path_or_url)?
        } else {
            SqliteConnectOptions::new().filename(path_or_url)
        };
        let base = base
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(base.clone().create_if_missing(true))
            .await?;
        migrate_sqlite(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(base.create_if_missing(false).pragma("query_only", "ON"))
            .await?;
        Ok(Self {
            writer,
            reader,
            cipher: Arc::new(cipher),
        })
    }

    /// The read pool (query-only connections); tests use it to look at raw rows.
    pub fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// The single writer; tests use it to try what the schema must refuse.
    pub fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// Closes both pools, waiting for open connections to finish.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// A write transaction on the single writer connection. `BEGIN IMMEDIATE` takes the
    /// write lock up front (DESIGN §5).
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The single writer makes this read and the commit that follows atomic: no
    /// `take_partition` can run in between.
    async fn check_fence(
        tx: &mut Transaction<'static, Sqlite>,
        fence: Option<Fence>,
    ) -> StoreResult<()> {
        if let Some(f) = fence {
            let epoch: Option<i64> =
                sqlx::query_scalar("SELECT epoch FROM partition_epochs WHERE partition = ?")
                    .bind(f.partition)
                    .fetch_optional(&mut **tx)
                    .await?;
            if epoch != Some(f.epoch) {
                return Err(StoreError::Fenced);
            }
        }
        Ok(())
    }
}

/// Applies the SQLite migrations once each, recording them in `_lockstep_migrations`.
/// `BEGIN IMMEDIATE` serializes concurrent migrators on the same file.
async fn migrate_sqlite(pool: &SqlitePool) -> StoreResult<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS _lockstep_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    for m in migrate::SQLITE {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM _lockstep_migrations WHERE version = ?")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_none() {
            sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO _lockstep_migrations (version, name, applied_at) VALUES (?, ?, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))",
            )
            .bind(m.version)
            .bind(m.name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Timestamps are stored as Unix milliseconds.
fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

#[async_trait]
impl Storage for SqliteStore {
    async fn begin(&self, tenant: TenantId, fence: Option<Fence>) -> StoreResult<Tx> {
        // The single writer makes the fence check and the commit that follows atomic: no
        // `take_partition` can run in between.
        let mut conn = Conn::Sqlite(self.begin_write().await?);
        crate::tables::check_fence(&mut conn, fence).await?;
        Ok(Tx::new(conn, tenant, self.cipher.clone()))
    }

    async fn read(&self, tenant: TenantId) -> StoreResult<ReadTx> {
        let conn = Conn::Sqlite(self.reader.begin().await?);
        Ok(ReadTx::new(conn, tenant, self.cipher.clone()))
    }

    async fn worker(&self) -> StoreResult<WorkerTx> {
        Ok(WorkerTx::new(Conn::Sqlite(self.begin_write().await?)))
    }

    async fn worker_read(&self) -> StoreResult<WorkerReadTx> {
        Ok(WorkerReadTx::new(Conn::Sqlite(self.reader.begin().await?)))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn close(&self) {
        SqliteStore::close(self).await;
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn intake(
        &self,
        msg: &IntakeMessage,
        fence: Option<Fence>,
    ) -> StoreResult<IntakeOutcome> {
        crate::facade::intake(self, msg, fence).await
    }

    async fn next_mailbox_entry(
        &self,
        tenant: TenantId,
        subject: &str,
        now: Timestamp,
    ) -> StoreResult<Option<MailboxEntry>> {
        crate::facade::next_mailbox_entry(self, tenant, subject, now).await
    }

    async fn due_subjects(
        &self,
        partition: Option<i32>,
        now: Timestamp,
        limit: i64,
    ) -> StoreResult<Vec<SubjectRef>> {
        crate::facade::due_subjects(self, partition, now, limit).await
    }

    async fn properties_in_partition(
        &self,
        partition: i32,
    ) -> StoreResult<Vec<(TenantId, PropertyId)>> {
        crate::facade::properties_in_partition(self, partition).await
    }

    async fn mailbox_depth(&self) -> StoreResult<(i64, Option<Timestamp>)> {
        crate::facade::mailbox_depth(self).await
    }

    async fn commit(&self, uow: UnitOfWork) -> StoreResult<()> {
        let t = uow.tenant_id.to_string();
        let now = ms(uow.now);
        // Encrypt before taking the write lock: the single writer is the bottleneck.
        let mut device_secrets = Vec::with_capacity(uow.devices.len());
        for d in &uow.devices {
            let pin = d
                .pin
                .as_ref()
                .map(|p| {
                    self.cipher.encrypt(
                        p.expose().as_bytes(),
                        &context::pin(&d.credential_id, &d.device_id),
                    )
                })
                .transpose()?;
            let vref = d
                .vendor_ref
                .as_ref()
                .map(|v| {
                    self.cipher.encrypt(
                        v.expose().as_bytes(),
                        &context::vendor_ref(&d.credential_id, &d.device_id),
                    )
                })
                .transpose()?;
            device_secrets.push((pin, vref));
        }

        let mut tx = self.begin_write().await?;
        Self::check_fence(&mut tx, uow.fence).await?;

        for w in &uow.credentials {
            let s = &w.snapshot;
            match w.expected_version {
                None => {
                    sqlx::query(
                        "INSERT INTO key_credentials (id, tenant_id, property_id, holder_kind, reservation_id, guest_id, staff_user_id, kind, scope, valid_from, valid_until, state, vendor, vendor_adapter_id, provisional, idempotency_key, issued_at, suspended_at, revoked_at, failure_reason, suspend_reason, revoke_reason, replaces_id, replaced_by_id, version, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    )
                    .bind(s.id.as_str())
                    .bind(&t)
                    .bind(s.property_id.as_str())
                    .bind(s.holder_kind.as_str())
                    .bind(s.reservation_id.as_ref().map(|r| r.as_str()))
                    .bind(s.guest_id.as_ref().map(|r| r.as_str()))
                    .bind(s.staff_user_id.as_ref().map(|r| r.as_str()))
                    .bind(s.kind.as_str())
                    .bind(scope_to_json(&s.scope).to_string())
                    .bind(ms(s.validity.from()))
                    .bind(ms(s.validity.until()))
                    .bind(s.state.as_str())
                    .bind(s.vendor.as_str())
                    .bind(s.vendor_adapter_id.as_str())
                    .bind(s.provisional)
                    .bind(&s.idempotency_key)
                    .bind(s.issued_at.map(ms))
                    .bind(s.suspended_at.map(ms))
                    .bind(s.revoked_at.map(ms))
                    .bind(s.failure_reason.map(|r| r.as_str()))
                    .bind(s.suspend_reason.map(|r| r.as_str()))
                    .bind(s.revoke_reason.map(|r| r.as_str()))
                    .bind(s.replaces_id.as_ref().map(|r| r.as_str()))
                    .bind(s.replaced_by_id.as_ref().map(|r| r.as_str()))
                    .bind(s.version)
                    .bind(ms(s.created_at))
                    .bind(ms(s.updated_at))
                    .execute(&mut *tx)
                    .await?;
                }
                Some(expected) => {
                    let n = sqlx::query(
                        "UPDATE key_credentials SET scope = ?, valid_from = ?, valid_until = ?, state = ?, issued_at = ?, suspended_at = ?, revoked_at = ?, failure_reason = ?, suspend_reason = ?, revoke_reason = ?, replaced_by_id = ?, version = ?, updated_at = ? WHERE id = ? AND tenant_id = ? AND version = ?",
                    )
                    .bind(scope_to_json(&s.scope).to_string())
                    .bind(ms(s.validity.from()))
                    .bind(ms(s.validity.until()))
                    .bind(s.state.as_str())
                    .bind(s.issued_at.map(ms))
                    .bind(s.suspended_at.map(ms))
                    .bind(s.revoked_at.map(ms))
                    .bind(s.failure_reason.map(|r| r.as_str()))
                    .bind(s.suspend_reason.map(|r| r.as_str()))
                    .bind(s.revoke_reason.map(|r| r.as_str()))
                    .bind(s.replaced_by_id.as_ref().map(|r| r.as_str()))
                    .bind(s.version)
                    .bind(ms(s.updated_at))
                    .bind(s.id.as_str())
                    .bind(&t)
                    .bind(expected)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n != 1 {
                        return Err(StoreError::Conflict {
                            entity: "key_credentials",
                        });
                    }
                    sqlx::query(
                        "DELETE FROM key_credential_rooms WHERE tenant_id = ? AND key_credential_id = ?",
                    )
                    .bind(&t)
                    .bind(s.id.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
            }
            // The room links copy property, reservation, holder, state and window from the
            // row just written, so the I-9 triggers see the credential as it is now
            // (DESIGN §12).
            for room in &s.rooms {
                sqlx::query(
                    "INSERT INTO key_credential_rooms (tenant_id, key_credential_id, room_id, property_id, reservation_id, is_master, state, valid_from, valid_until) \
                     SELECT c.tenant_id, c.id, ?, c.property_id, c.reservation_id, c.holder_kind = 'staff_master', c.state, c.valid_from, c.valid_until \
                     FROM key_credentials c WHERE c.tenant_id = ? AND c.id = ?",
                )
                .bind(room.as_str())
                .bind(&t)
                .bind(s.id.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }

        if let Some(m) = &uow.master {
            match m {
                MasterKeyWrite::Insert(k) => {
                    if k.tenant_id != uow.tenant_id {
                        return Err(StoreError::Constraint(
                            "master key of another tenant".into(),
                        ));
                    }
                    sqlx::query(
                        "INSERT INTO master_keys (id, tenant_id, property_id, staff_user_id, shift_id, key_credential_id, scope_kind, scope, valid_from, valid_until, issued_at, revoked_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    )
                    .bind(&k.id)
                    .bind(&t)
                    .bind(k.property_id.as_str())
                    .bind(&k.staff_user_id)
                    .bind(&k.shift_id)
                    .bind(k.key_credential_id.as_str())
                    .bind(&k.scope_kind)
                    .bind(k.scope.to_string())
                    .bind(ms(k.valid_from))
                    .bind(ms(k.valid_until))
                    .bind(ms(k.issued_at))
                    .bind(k.revoked_at.map(ms))
                    .execute(&mut *tx)
                    .await?;
                }
                MasterKeyWrite::Revoke { id, revoked_at } => {
                    let n = sqlx::query(
                        "UPDATE master_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND id = ?",
                    )
                    .bind(ms(*revoked_at))
                    .bind(&t)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n != 1 {
                        return Err(StoreError::Conflict {
                            entity: "master_keys",
                        });
                    }
                }
            }
        }

        for (d, (pin, vref)) in uow.devices.iter().zip(device_secrets) {
            let (pin_ct, pin_ver) = pin.unzip();
            let (vref_ct, vref_ver) = vref.unzip();
            // The composite foreign keys already tie the row to the tenant; the WHERE on
            // the upsert keeps the update tenant-scoped by query as well.
            let n = sqlx::query(
                "INSERT INTO key_credential_devices (tenant_id, key_credential_id, device_id, desired, sync, pin_ciphertext, pin_kms_version, vendor_ref_ciphertext, vendor_ref_kms_version, attempts, pin_collisions, last_error, updated_at, removal_requested_at) \
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13, CASE WHEN ?4 = 'absent' AND ?5 = 'pending' THEN ?14 END) \
                 ON CONFLICT (key_credential_id, device_id) DO UPDATE SET desired = excluded.desired, sync = excluded.sync, \
                 removal_requested_at = CASE WHEN excluded.desired = 'present' THEN NULL WHEN key_credential_devices.desired = 'absent' THEN COALESCE(key_credential_devices.removal_requested_at, ?14) ELSE ?14 END, \
                 pin_ciphertext = COALESCE(excluded.pin_ciphertext, key_credential_devices.pin_ciphertext), pin_kms_version = COALESCE(excluded.pin_kms_version, key_credential_devices.pin_kms_version), \
                 vendor_ref_ciphertext = COALESCE(excluded.vendor_ref_ciphertext, key_credential_devices.vendor_ref_ciphertext), vendor_ref_kms_version = COALESCE(excluded.vendor_ref_kms_version, key_credential_devices.vendor_ref_kms_version), \
                 attempts = excluded.attempts, pin_collisions = excluded.pin_collisions, last_error = excluded.last_error, updated_at = excluded.updated_at \
                 WHERE key_credential_devices.tenant_id = excluded.tenant_id",
            )
            .bind(&t)
            .bind(d.credential_id.as_str())
            .bind(d.device_id.as_str())
            .bind(d.desired.as_str())
            .bind(d.sync.as_str())
            .bind(pin_ct)
            .bind(pin_ver)
            .bind(vref_ct)
            .bind(vref_ver)
            .bind(d.attempts)
            .bind(d.pin_collisions)
            .bind(&d.last_error)
            .bind(now)
            .bind(ms(uow.learned_at.unwrap_or(uow.now)))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err(StoreError::Constraint(
                    "key_credential_devices row belongs to another tenant".into(),
                ));
            }
        }

        if let Some((subject, state)) = &uow.saga {
            sqlx::query(
                "INSERT INTO key_credential_saga (tenant_id, subject, state, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, subject) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            )
            .bind(&t)
            .bind(subject)
            .bind(state.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }

        insert_outbox(&mut tx, &t, &uow.outbox).await?;

        for a in &uow.attempts {
            sqlx::query(
                "INSERT INTO key_credential_attempts (id, tenant_id, property_id, key_credential_id, device_id, attempted_at, ingested_at, outcome, deny_reason, vendor, vendor_event_id, metadata) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
            )
            .bind(a.id.as_str())
            .bind(&t)
            .bind(a.property_id.as_str())
            .bind(a.key_credential_id.as_ref().map(|k| k.as_str()))
            .bind(a.device_id.as_str())
            .bind(ms(a.attempted_at))
            .bind(ms(a.ingested_at))
            .bind(a.outcome.as_str())
            .bind(a.deny_reason.map(|r| r.as_str()))
            .bind(a.vendor.as_str())
            .bind(&a.vendor_event_id)
            .bind(serde_json::json!({ "method": a.method, "clamped": a.clamped }).to_string())
            .execute(&mut *tx)
            .await?;
        }
        for w in &uow.webhooks {
            sqlx::query(
                "INSERT INTO webhook_inbox (id, tenant_id, vendor, external_event_id, type, payload, signature_ok, received_at, processed_at, processed_outcome) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
            )
            .bind(&w.id)
            .bind(&t)
            .bind(w.vendor.as_str())
            .bind(&w.external_event_id)
            .bind(&w.kind)
            .bind(w.payload.to_string())
            .bind(w.signature_ok)
            .bind(ms(w.received_at))
            .bind(ms(uow.now))
            .bind(&w.outcome)
            .execute(&mut *tx)
            .await?;
        }

        for h in &uow.device_health {
            let n = sqlx::query(
                "UPDATE lock_devices SET online = ?3, battery_percent = ?4, firmware = ?5, clock_skew_ms = ?6, health_probed_at = ?7, \
                 last_seen_at = CASE WHEN ?3 THEN ?7 ELSE last_seen_at END WHERE tenant_id = ?1 AND id = ?2",
            )
            .bind(&t)
            .bind(h.device_id.as_str())
            .bind(h.health.online)
            .bind(h.health.battery_percent.map(i64::from))
            .bind(&h.health.firmware)
            .bind(h.health.clock_skew_ms)
            .bind(ms(uow.now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err(StoreError::Constraint("unknown lock device".into()));
            }
        }

        // The audit chain of each property touched (DESIGN §12); one writer holds the
        // database, so reading the heads is enough.
        let mut heads: BTreeMap<String, (i64, String)> = BTreeMap::new();
        for a in &uow.audit {
            let property = a.property_id.as_str().to_owned();
            if heads.contains_key(&property) {
                continue;
            }
            let head: Option<(i64, String)> = sqlx::query_as(
                "SELECT seq, head_hash FROM lock_audit_heads WHERE tenant_id = ? AND property_id = ?",
            )
            .bind(&t)
            .bind(&property)
            .fetch_optional(&mut *tx)
            .await?;
            heads.insert(
                property,
                head.unwrap_or_else(|| (0, audit::GENESIS.to_owned())),
            );
        }
        for a in &uow.audit {
            let head = heads
                .get_mut(a.property_id.as_str())
                .expect("every audited property has a head");
            let mut row = a.clone();
            row.tenant_id = uow.tenant_id;
            let seq = head.0 + 1;
            let hash = audit::row_hash(&head.1, seq, &row);
            sqlx::query(
                "INSERT INTO lock_audit (id, tenant_id, property_id, key_credential_id, device_id, actor_kind, action, reason, vendor, trace_id, created_at, payload, chain_seq, prev_hash, row_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            )
            .bind(&a.id)
            .bind(&t)
            .bind(a.property_id.as_str())
            .bind(a.credential_id.as_ref().map(|c| c.as_str()))
            .bind(a.device_id.as_ref().map(|c| c.as_str()))
            .bind(&a.actor_kind)
            .bind(&a.action)
            .bind(&a.reason)
            .bind(a.vendor.map(|v| v.as_str()))
            .bind(&a.trace_id)
            .bind(ms(a.created_at))
            .bind(a.payload.to_string())
            .bind(seq)
            .bind(&head.1)
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
            *head = (seq, hash);
        }
        for (property, (seq, hash)) in &heads {
            sqlx::query(
                "INSERT INTO lock_audit_heads (tenant_id, property_id, seq, head_hash) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (tenant_id, property_id) DO UPDATE SET seq = ?3, head_hash = ?4",
            )
            .bind(&t)
            .bind(property)
            .bind(seq)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        }

        for m in &uow.mailbox {
            let n = match m {
                MailboxUpdate::Done { id, outcome } => sqlx::query(
                    "UPDATE mailbox SET done_at = ?, outcome = ? WHERE id = ? AND tenant_id = ? AND done_at IS NULL",
                )
                .bind(now)
                .bind(outcome)
                .bind(id)
                .bind(&t)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                MailboxUpdate::Retry {
                    id,
                    due_at,
                    attempts,
                    last_error,
                } => sqlx::query(
                    "UPDATE mailbox SET due_at = ?, attempts = ?, last_error = ? WHERE id = ? AND tenant_id = ? AND done_at IS NULL",
                )
                .bind(ms(*due_at))
                .bind(attempts)
                .bind(last_error)
                .bind(id)
                .bind(&t)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            };
            if n != 1 {
                return Err(StoreError::Conflict { entity: "mailbox" });
            }
        }

        for s in &uow.schedule {
            let n = sqlx::query(
                "UPDATE mailbox SET due_at = MIN(due_at, ?) WHERE tenant_id = ? AND credential_id = ? AND kind = 'drive' AND done_at IS NULL",
            )
            .bind(ms(s.due_at))
            .bind(&t)
            .bind(s.credential_id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                sqlx::query(
                    "INSERT INTO mailbox (tenant_id, property_id, partition, subject, kind, credential_id, due_at, created_at) VALUES (?, ?, ?, ?, 'drive', ?, ?, ?)",
                )
                .bind(&t)
                .bind(s.property_id.as_str())
                .bind(s.partition)
                .bind(&s.subject)
                .bind(s.credential_id.as_str())
                .bind(ms(s.due_at))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }

        for e in &uow.events {
            sqlx::query(
                "INSERT INTO mailbox (tenant_id, property_id, partition, subject, kind, message_id, topic, payload, due_at, created_at) VALUES (?, ?, ?, ?, 'event', ?, ?, ?, ?, ?)",
            )
            .bind(&t)
            .bind(e.property_id.as_str())
            .bind(e.partition)
            .bind(&e.subject)
            .bind(ulid::Ulid::new().to_string())
            .bind(&e.topic)
            .bind(e.payload.to_string())
            .bind(ms(e.due_at))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }

        tx.commit().await?;
        Ok(())
    }

    async fn load_saga(
        &self,
        tenant: TenantId,
        subject: &str,
    ) -> StoreResult<Option<serde_json::Value>> {
        crate::facade::load_saga(self, tenant, subject).await
    }

    async fn get_credential(
        &self,
        tenant: TenantId,
        id: &KeyCredentialId,
    ) -> StoreResult<Option<KeyCredential>> {
        crate::facade::get_credential(self, tenant, id).await
    }

    async fn list_credentials(
        &self,
        tenant: TenantId,
        filter: &CredentialFilter,
        limit: i64,
    ) -> StoreResult<Vec<KeyCredential>> {
        crate::facade::list_credentials(self, tenant, filter, limit).await
    }

    async fn credentials_by_reservation(
        &self,
        tenant: TenantId,
        reservation: &ReservationId,
    ) -> StoreResult<Vec<KeyCredential>> {
        crate::facade::credentials_by_reservation(self, tenant, reservation).await
    }

    async fn credential_devices(
        &self,
        tenant: TenantId,
        id: &KeyCredentialId,
    ) -> StoreResult<Vec<CredentialDevice>> {
        crate::facade::credential_devices(self, tenant, id).await
    }

    async fn device_credentials(
        &self,
        tenant: TenantId,
        device: &LockDeviceId,
    ) -> StoreResult<Vec<CredentialDevice>> {
        crate::facade::device_credentials(self, tenant, device).await
    }

    async fn devices_for_rooms(
        &self,
        tenant: TenantId,
        property: &PropertyId,
        rooms: &[RoomId],
    ) -> StoreResult<Vec<Device>> {
        crate::facade::devices_for_rooms(self, tenant, property, rooms).await
    }

    async fn record_user_deactivated(
        &self,
        tenant: TenantId,
        user_id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        crate::facade::record_user_deactivated(self, tenant, user_id, at).await
    }

    async fn user_deactivated_at(
        &self,
        tenant: TenantId,
        user_id: &str,
    ) -> StoreResult<Option<Timestamp>> {
        crate::facade::user_deactivated_at(self, tenant, user_id).await
    }

    async fn reserve_rate_slot(
        &self,
        tenant: TenantId,
        account: &str,
        now_us: i64,
        interval_us: i64,
    ) -> StoreResult<i64> {
        crate::facade::reserve_rate_slot(self, tenant, account, now_us, interval_us).await
    }

    async fn hold_rate_until(
        &self,
        tenant: TenantId,
        account: &str,
        until_us: i64,
    ) -> StoreResult<()> {
        crate::facade::hold_rate_until(self, tenant, account, until_us).await
    }

    async fn property_rooms(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Vec<RoomId>> {
        crate::facade::property_rooms(self, tenant, property).await
    }

    async fn upsert_adapter(&self, adapter: &AdapterRecord) -> StoreResult<()> {
        crate::facade::upsert_adapter(self, adapter).await
    }

    async fn upsert_device(&self, device: &DeviceRecord) -> StoreResult<bool> {
        crate::facade::upsert_device(self, device).await
    }

    async fn record_vendor_credential(
        &self,
        rec: &VendorCredentialRecord,
    ) -> StoreResult<CredentialChange> {
        crate::facade::record_vendor_credential(self, rec).await
    }

    async fn vendor_credential(
        &self,
        tenant: TenantId,
        property: &PropertyId,
        vendor: VendorCode,
        environment: &str,
    ) -> StoreResult<Option<VendorCredentialRecord>> {
        crate::facade::vendor_credential(self, tenant, property, vendor, environment).await
    }

    async fn audit_chain(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Vec<audit::ChainedAuditRow>> {
        crate::facade::audit_chain(self, tenant, property).await
    }

    async fn audit_chains(&self) -> StoreResult<Vec<(TenantId, PropertyId)>> {
        crate::facade::audit_chains(self).await
    }

    async fn insert_audit_root(&self, root: &audit::SealedRoot) -> StoreResult<()> {
        crate::facade::insert_audit_root(self, root).await
    }

    async fn audit_roots(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Vec<audit::SealedRoot>> {
        crate::facade::audit_roots(self, tenant, property).await
    }

    async fn save_offline_cert(&self, cert: &lockstep_domain::OfflineIssuance) -> StoreResult<()> {
        crate::facade::save_offline_cert(self, cert).await
    }

    async fn offline_certs_expiring(
        &self,
        tenant: TenantId,
        before: Timestamp,
    ) -> StoreResult<i64> {
        crate::facade::offline_certs_expiring(self, tenant, before).await
    }

    async fn offline_cert(
        &self,
        tenant: TenantId,
        id: &str,
    ) -> StoreResult<Option<lockstep_domain::OfflineIssuance>> {
        crate::facade::offline_cert(self, tenant, id).await
    }

    async fn reencrypt(&self, tenant: TenantId, limit: i64) -> StoreResult<u64> {
        crate::facade::reencrypt(self, tenant, limit).await
    }

    async fn seen_vendor_events(
        &self,
        tenant: TenantId,
        vendor: VendorCode,
        ids: &[String],
    ) -> StoreResult<Vec<String>> {
        crate::facade::seen_vendor_events(self, tenant, vendor, ids).await
    }

    async fn webhook_seen(
        &self,
        tenant: TenantId,
        vendor: VendorCode,
        external_event_id: &str,
    ) -> StoreResult<bool> {
        crate::facade::webhook_seen(self, tenant, vendor, external_event_id).await
    }

    async fn message_outcome(
        &self,
        tenant: TenantId,
        message_id: &str,
    ) -> StoreResult<Option<Option<String>>> {
        crate::facade::message_outcome(self, tenant, message_id).await
    }

    async fn device_property(
        &self,
        tenant: TenantId,
        device: &LockDeviceId,
    ) -> StoreResult<Option<PropertyId>> {
        crate::facade::device_property(self, tenant, device).await
    }

    async fn device_health(
        &self,
        tenant: TenantId,
        device: &LockDeviceId,
    ) -> StoreResult<Option<StoredDeviceHealth>> {
        crate::facade::device_health(self, tenant, device).await
    }

    async fn resume_parked(&self, vendor: VendorCode, now: Timestamp) -> StoreResult<u64> {
        crate::facade::resume_parked(self, vendor, now).await
    }

    async fn unpublished(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<OutboxRow>> {
        crate::facade::unpublished(self, now, limit).await
    }

    async fn mark_published(&self, ids: &[String], now: Timestamp) -> StoreResult<()> {
        crate::facade::mark_published(self, ids, now).await
    }

    async fn mark_publish_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> StoreResult<()> {
        crate::facade::mark_publish_failed(self, id, error, next_attempt_at).await
    }

    async fn unroutable_topics(&self) -> StoreResult<Vec<(String, i64)>> {
        crate::facade::unroutable_topics(self).await
    }

    async fn release_unroutable(
        &self,
        topic: &str,
        now: Timestamp,
        limit: Option<i64>,
    ) -> StoreResult<u64> {
        crate::facade::release_unroutable(self, topic, now, limit).await
    }

    async fn pending_removals(
        &self,
        tenant: TenantId,
        adapters: &[VendorAdapterId],
    ) -> StoreResult<i64> {
        crate::facade::pending_removals(self, tenant, adapters).await
    }

    async fn outbox_lag(&self) -> StoreResult<(i64, Option<Timestamp>)> {
        crate::facade::outbox_lag(self).await
    }

    async fn take_partition(
        &self,
        partition: i32,
        owner: &str,
        now: Timestamp,
    ) -> StoreResult<Fence> {
        crate::facade::take_partition(self, partition, owner, now).await
    }

    async fn upsert_policy(&self, policy: &PolicyRecord) -> StoreResult<()> {
        crate::facade::upsert_policy(self, policy).await
    }

    async fn get_policy(
        &self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Option<PolicyRecord>> {
        crate::facade::get_policy(self, tenant, property).await
    }

    async fn active_masters_of_user(
        &self,
        tenant: TenantId,
        staff_user_id: &str,
    ) -> StoreResult<Vec<MasterKeyRecord>> {
        crate::facade::active_masters_of_user(self, tenant, staff_user_id).await
    }

    async fn master_by_id(
        &self,
        tenant: TenantId,
        id: &str,
    ) -> StoreResult<Option<MasterKeyRecord>> {
        crate::facade::master_by_id(self, tenant, id).await
    }

    async fn master_by_credential(
        &self,
        tenant: TenantId,
        credential: &KeyCredentialId,
    ) -> StoreResult<Option<MasterKeyRecord>> {
        crate::facade::master_by_credential(self, tenant, credential).await
    }

    async fn credentials_of_property(
        &self,
        tenant: TenantId,
        property: &PropertyId,
        states: &[&str],
    ) -> StoreResult<Vec<PropertyCredential>> {
        crate::facade::credentials_of_property(self, tenant, property, states).await
    }

    async fn door_backlog(&self) -> StoreResult<DoorBacklog> {
        crate::facade::door_backlog(self).await
    }
}

/// Writes outbox rows inside `tx`.
async fn insert_outbox(
    tx: &mut Transaction<'static, Sqlite>,
    t: &str,
    rows: &[OutboxRow],
) -> StoreResult<()> {
    for o in rows {
        sqlx::query(
            "INSERT INTO outbox (id, tenant_id, aggregate_id, topic, payload, envelope, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        )
        .bind(&o.id)
        .bind(t)
        .bind(&o.aggregate_id)
        .bind(&o.topic)
        .bind(o.payload.to_string())
        .bind(o.envelope.to_string())
        .bind(ms(o.created_at))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
