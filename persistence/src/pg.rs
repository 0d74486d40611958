//! The Postgres store (production). Two pools: `app` runs as the service role under RLS
//! with the tenant set per transaction; `worker` runs as the narrow cross-tenant role
//! used only by the outbox publisher and the partition scanner (DESIGN §5).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use lockstep_domain::{
    KeyCredential, KeyCredentialId, KeyCredentialScope, LockDeviceId, PropertyId, ReservationId,
    RoomId, TenantId, Timestamp, VendorAdapterId, VendorCode,
};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::audit;
use crate::crypto::Cipher;
use crate::model::*;
use crate::tx::{Conn, ReadTx, Tx, WorkerReadTx, WorkerTx};
use crate::{migrate, Storage, Store, StoreError, StoreResult};

/// Postgres store.
#[derive(Clone, Debug)]
pub struct PgStore {
    app: PgPool,
    worker: PgPool,
    cipher: Arc<Cipher>,
}

/// Runs the Postgres migrations as the owner role (`lockstep migrate`).
pub async fn migrate(owner_url: &str) -> StoreResult<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(owner_url)
        .await?;
    // Under the same lock as the migrations: two concurrent `CREATE TABLE IF NOT EXISTS`
    // can both miss the table and one then fails on the catalog's unique index.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7410019)")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS _lockstep_migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    for m in migrate::POSTGRES {
        let mut tx = pool.begin().await?;
        // serialize concurrent migrators
        sqlx::query("SELECT pg_advisory_xact_lock(7410019)")
            .execute(&mut *tx)
            .await?;
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM _lockstep_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_none() {
            sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO _lockstep_migrations (version, name) VALUES ($1, $2)")
                .bind(m.version)
                .bind(m.name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    pool.close().await;
    Ok(())
}

impl PgStore {
    /// Connects the service pool and the worker pool.
    pub async fn connect(
        app_url: &str,
        worker_url: &str,
        cipher: Cipher,
        max_connections: u32,
    ) -> StoreResult<Self> {
        let app = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(app_url)
            .await?;
        let worker = PgPoolOptions::new()
            .max_connections(4)
            .connect(worker_url)
            .await?;
        Ok(Self {
            app,
            worker,
            cipher: Arc::new(cipher),
        })
    }

    /// The service pool (tests use it to prove isolation).
    pub fn app_pool(&self) -> &PgPool {
        &self.app
    }

    async fn begin_tenant(&self, tenant: TenantId) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.app.begin().await?;
        // Transaction-local: gone at commit, so a pooled connection carries no tenant into
        // the next transaction (DESIGN §5).
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    async fn check_fence(
        tx: &mut Transaction<'static, Postgres>,
        fence: Option<Fence>,
    ) -> StoreResult<()> {
        if let Some(f) = fence {
            let epoch: Option<i64> = sqlx::query_scalar(
                "SELECT epoch FROM partition_epochs WHERE partition = $1 FOR SHARE",
            )
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

/// Whether a database error is Postgres breaking a deadlock or a serialization conflict.
fn is_transient(msg: &str) -> bool {
    msg.contains("deadlock detected") || msg.contains("could not serialize access")
}

pub(crate) fn scope_to_json(s: &KeyCredentialScope) -> serde_json::Value {
    serde_json::json!({ "floors": s.floors, "areas": s.areas })
}

#[async_trait]
impl Storage for PgStore {
    async fn begin(&self, tenant: TenantId, fence: Option<Fence>) -> StoreResult<Tx> {
        let tx = self.app.begin().await?;
        let mut conn = Conn::Pg(with_tenant(tx, tenant).await?);
        crate::tables::check_fence(&mut conn, fence).await?;
        Ok(Tx::new(conn, tenant, self.cipher.clone()))
    }

    async fn read(&self, tenant: TenantId) -> StoreResult<ReadTx> {
        let tx = self.app.begin_with("BEGIN READ ONLY").await?;
        let conn = Conn::Pg(with_tenant(tx, tenant).await?);
        Ok(ReadTx::new(conn, tenant, self.cipher.clone()))
    }

    async fn worker(&self) -> StoreResult<WorkerTx> {
        Ok(WorkerTx::new(Conn::Pg(self.worker.begin().await?)))
    }

    async fn worker_read(&self) -> StoreResult<WorkerReadTx> {
        Ok(WorkerReadTx::new(Conn::Pg(
            self.worker.begin_with("BEGIN READ ONLY").await?,
        )))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.app).await?;
        Ok(())
    }

    async fn close(&self) {
        self.app.close().await;
        self.worker.close().await;
    }
}

/// Sets the transaction's tenant for row-level security. Transaction-local: gone at
/// commit, so a pooled connection carries no tenant into the next transaction (DESIGN §5).
async fn with_tenant(
    mut tx: Transaction<'static, Postgres>,
    tenant: TenantId,
) -> StoreResult<Transaction<'static, Postgres>> {
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

#[async_trait]
impl Store for PgStore {
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
        // A commit is a pure transaction built from data: when Postgres aborts it to break a
        // deadlock or a serialization conflict (two commits racing on the I-9 exclusion
        // index can deadlock instead of one seeing the violation), it is run again.
        let mut attempt = 0u64;
        loop {
            let res: StoreResult<()> = async {
                let tenant = uow.tenant_id;
                let t = tenant.as_uuid();
                let mut tx = self.begin_tenant(tenant).await?;
                Self::check_fence(&mut tx, uow.fence).await?;

                for w in &uow.credentials {
                    let s = &w.snapshot;
                    let args = (
                        s.id.as_str(),
                        s.property_id.as_str(),
                        s.holder_kind.as_str(),
                        s.reservation_id.as_ref().map(|r| r.as_str().to_owned()),
                        s.guest_id.as_ref().map(|r| r.as_str().to_owned()),
                        s.staff_user_id.as_ref().map(|r| r.as_str().to_owned()),
                    );
                    match w.expected_version {
                        None => {
                            sqlx::query(
                                "INSERT INTO key_credentials (id, tenant_id, property_id, holder_kind, reservation_id, guest_id, staff_user_id, kind, scope, valid_from, valid_until, state, vendor, vendor_adapter_id, provisional, idempotency_key, issued_at, suspended_at, revoked_at, failure_reason, suspend_reason, revoke_reason, replaces_id, replaced_by_id, version, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$25,$26,$27)",
                            )
                            .bind(args.0)
                            .bind(t)
                            .bind(args.1)
                            .bind(args.2)
                            .bind(args.3)
                            .bind(args.4)
                            .bind(args.5)
                            .bind(s.kind.as_str())
                            .bind(scope_to_json(&s.scope))
                            .bind(s.validity.from())
                            .bind(s.validity.until())
                            .bind(s.state.as_str())
                            .bind(s.vendor.as_str())
                            .bind(s.vendor_adapter_id.as_str())
                            .bind(s.provisional)
                            .bind(&s.idempotency_key)
                            .bind(s.issued_at)
                            .bind(s.suspended_at)
                            .bind(s.revoked_at)
                            .bind(s.failure_reason.map(|r| r.as_str()))
                            .bind(s.suspend_reason.map(|r| r.as_str()))
                            .bind(s.revoke_reason.map(|r| r.as_str()))
                            .bind(s.replaces_id.as_ref().map(|r| r.as_str().to_owned()))
                            .bind(s.replaced_by_id.as_ref().map(|r| r.as_str().to_owned()))
                            .bind(s.version)
                            .bind(s.created_at)
                            .bind(s.updated_at)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Some(expected) => {
                            let n = sqlx::query(
                                "UPDATE key_credentials SET scope = $3, valid_from = $4, valid_until = $5, state = $6, issued_at = $7, suspended_at = $8, revoked_at = $9, failure_reason = $10, suspend_reason = $11, revoke_reason = $12, replaced_by_id = $13, version = $14, updated_at = $15 WHERE id = $1 AND version = $2",
                            )
                            .bind(args.0)
                            .bind(expected)
                            .bind(scope_to_json(&s.scope))
                            .bind(s.validity.from())
                            .bind(s.validity.until())
                            .bind(s.state.as_str())
                            .bind(s.issued_at)
                            .bind(s.suspended_at)
                            .bind(s.revoked_at)
                            .bind(s.failure_reason.map(|r| r.as_str()))
                            .bind(s.suspend_reason.map(|r| r.as_str()))
                            .bind(s.revoke_reason.map(|r| r.as_str()))
                            .bind(s.replaced_by_id.as_ref().map(|r| r.as_str().to_owned()))
                            .bind(s.version)
                            .bind(s.updated_at)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                            if n != 1 {
                                return Err(StoreError::Conflict {
                                    entity: "key_credentials",
                                });
                            }
                            sqlx::query("DELETE FROM key_credential_rooms WHERE key_credential_id = $1")
                                .bind(args.0)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    // The room links copy property, reservation, holder, state and window from the
                    // row just written, so I-9's exclusion constraint sees the credential as it is
                    // now (DESIGN §12). Rooms go in sorted order (the aggregate sorts them), so two
                    // racing writers meet on the same room first and cannot deadlock.
                    let rooms: Vec<&str> = s.rooms.iter().map(|r| r.as_str()).collect();
                    sqlx::query(
                        "INSERT INTO key_credential_rooms (tenant_id, key_credential_id, room_id, property_id, reservation_id, is_master, state, validity) \
                         SELECT c.tenant_id, c.id, r.room_id, c.property_id, c.reservation_id, c.holder_kind = 'staff_master', c.state, tstzrange(c.valid_from, c.valid_until, '[)') \
                         FROM key_credentials c CROSS JOIN unnest($2::text[]) WITH ORDINALITY AS r(room_id, n) WHERE c.tenant_id = $1 AND c.id = $3 ORDER BY r.n",
                    )
                    .bind(t)
                    .bind(&rooms)
                    .bind(args.0)
                    .execute(&mut *tx)
                    .await?;
                }

                if let Some(m) = &uow.master {
                    match m {
                        MasterKeyWrite::Insert(k) => {
                            if k.tenant_id != tenant {
                                return Err(StoreError::Constraint(
                                    "master key of another tenant".into(),
                                ));
                            }
                            sqlx::query(
                                "INSERT INTO master_keys (id, tenant_id, property_id, staff_user_id, shift_id, key_credential_id, scope_kind, scope, valid_from, valid_until, issued_at, revoked_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
                            )
                            .bind(&k.id)
                            .bind(t)
                            .bind(k.property_id.as_str())
                            .bind(&k.staff_user_id)
                            .bind(&k.shift_id)
                            .bind(k.key_credential_id.as_str())
                            .bind(&k.scope_kind)
                            .bind(&k.scope)
                            .bind(k.valid_from)
                            .bind(k.valid_until)
                            .bind(k.issued_at)
                            .bind(k.revoked_at)
                            .execute(&mut *tx)
                            .await?;
                        }
                        MasterKeyWrite::Revoke { id, revoked_at } => {
                            let n = sqlx::query(
                                "UPDATE master_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE tenant_id = $1 AND id = $2",
                            )
                            .bind(t)
                            .bind(id)
                            .bind(revoked_at)
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
                    sqlx::query(
                        "INSERT INTO key_credential_devices (tenant_id, key_credential_id, device_id, desired, sync, pin_ciphertext, pin_kms_version, vendor_ref_ciphertext, vendor_ref_kms_version, attempts, pin_collisions, last_error, updated_at, removal_requested_at) \
                         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13, CASE WHEN $4 = 'absent' AND $5 = 'pending' THEN $14::timestamptz END) \
                         ON CONFLICT (key_credential_id, device_id) DO UPDATE SET desired = EXCLUDED.desired, sync = EXCLUDED.sync, \
                         removal_requested_at = CASE WHEN EXCLUDED.desired = 'present' THEN NULL WHEN key_credential_devices.desired = 'absent' THEN COALESCE(key_credential_devices.removal_requested_at, $14::timestamptz) ELSE $14::timestamptz END, \
                         pin_ciphertext = COALESCE(EXCLUDED.pin_ciphertext, key_credential_devices.pin_ciphertext), pin_kms_version = COALESCE(EXCLUDED.pin_kms_version, key_credential_devices.pin_kms_version), \
                         vendor_ref_ciphertext = COALESCE(EXCLUDED.vendor_ref_ciphertext, key_credential_devices.vendor_ref_ciphertext), vendor_ref_kms_version = COALESCE(EXCLUDED.vendor_ref_kms_version, key_credential_devices.vendor_ref_kms_version), \
                         attempts = EXCLUDED.attempts, pin_collisions = EXCLUDED.pin_collisions, last_error = EXCLUDED.last_error, updated_at = EXCLUDED.updated_at",
                    )
                    .bind(t)
                    .bind(d.credential_id.as_str())
                    .bind(d.device_id.as_str())
                    .bind(d.desired.as_str())
                    .bind(d.sync.as_str())
                    .bind(pin.as_ref().map(|p| p.0.clone()))
                    .bind(pin.as_ref().map(|p| p.1.clone()))
                    .bind(vref.as_ref().map(|p| p.0.clone()))
                    .bind(vref.as_ref().map(|p| p.1.clone()))
                    .bind(d.attempts)
                    .bind(d.pin_collisions)
                    .bind(&d.last_error)
                    .bind(uow.now)
                    .bind(uow.learned_at.unwrap_or(uow.now))
                    .execute(&mut *tx)
                    .await?;
                }

                if let Some((subject, state)) = &uow.saga {
                    sqlx::query(
                        "INSERT INTO key_credential_saga (tenant_id, subject, state, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, subject) DO UPDATE SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at",
                    )
                    .bind(t)
                    .bind(subject)
                    .bind(state)
                    .bind(uow.now)
                    .execute(&mut *tx)
                    .await?;
                }

                insert_outbox(&mut tx, t, &uow.outbox).await?;

                for a in &uow.attempts {
                    sqlx::query(
                        "INSERT INTO key_credential_attempts (id, tenant_id, property_id, key_credential_id, device_id, attempted_at, ingested_at, outcome, deny_reason, vendor, vendor_event_id, metadata) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
                    )
                    .bind(a.id.as_str())
                    .bind(t)
                    .bind(a.property_id.as_str())
                    .bind(a.key_credential_id.as_ref().map(|k| k.as_str()))
                    .bind(a.device_id.as_str())
                    .bind(a.attempted_at)
                    .bind(a.ingested_at)
                    .bind(a.outcome.as_str())
                    .bind(a.deny_reason.map(|r| r.as_str()))
                    .bind(a.vendor.as_str())
                    .bind(&a.vendor_event_id)
                    .bind(serde_json::json!({ "method": a.method, "clamped": a.clamped }))
                    .execute(&mut *tx)
                    .await?;
                }
                for w in &uow.webhooks {
                    sqlx::query(
                        "INSERT INTO webhook_inbox (id, tenant_id, vendor, external_event_id, type, payload, signature_ok, received_at, processed_at, processed_outcome) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                    )
                    .bind(&w.id)
                    .bind(t)
                    .bind(w.vendor.as_str())
                    .bind(&w.external_event_id)
                    .bind(&w.kind)
                    .bind(&w.payload)
                    .bind(w.signature_ok)
                    .bind(w.received_at)
                    .bind(uow.now)
                    .bind(&w.outcome)
                    .execute(&mut *tx)
                    .await?;
                }

                for h in &uow.device_health {
                    let n = sqlx::query(
                        "UPDATE lock_devices SET online = $3, battery_percent = $4, firmware = $5, clock_skew_ms = $6, health_probed_at = $7, \
                         last_seen_at = CASE WHEN $3 THEN $7 ELSE last_seen_at END WHERE tenant_id = $1 AND id = $2",
                    )
                    .bind(t)
                    .bind(h.device_id.as_str())
                    .bind(h.health.online)
                    .bind(h.health.battery_percent.map(i16::from))
                    .bind(&h.health.firmware)
                    .bind(h.health.clock_skew_ms)
                    .bind(uow.now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n != 1 {
                        return Err(StoreError::Constraint("unknown lock device".into()));
                    }
                }

                // The audit chain of each property touched (DESIGN §12): heads locked in
                // property order, rows linked in the order given, heads moved last.
                let mut heads: BTreeMap<String, (i64, String)> = BTreeMap::new();
                for a in &uow.audit {
                    heads.entry(a.property_id.as_str().to_owned()).or_default();
                }
                for (property, head) in heads.iter_mut() {
                    sqlx::query(
                        "INSERT INTO lock_audit_heads (tenant_id, property_id, seq, head_hash) VALUES ($1, $2, 0, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(t)
                    .bind(property)
                    .bind(audit::GENESIS)
                    .execute(&mut *tx)
                    .await?;
                    *head = sqlx::query_as(
                        "SELECT seq, head_hash FROM lock_audit_heads WHERE tenant_id = $1 AND property_id = $2 FOR UPDATE",
                    )
                    .bind(t)
                    .bind(property)
                    .fetch_one(&mut *tx)
                    .await?;
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
                        "INSERT INTO lock_audit (id, tenant_id, property_id, key_credential_id, device_id, actor_kind, action, reason, vendor, trace_id, created_at, payload, chain_seq, prev_hash, row_hash) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)",
                    )
                    .bind(&a.id)
                    .bind(t)
                    .bind(a.property_id.as_str())
                    .bind(a.credential_id.as_ref().map(|c| c.as_str().to_owned()))
                    .bind(a.device_id.as_ref().map(|c| c.as_str().to_owned()))
                    .bind(&a.actor_kind)
                    .bind(&a.action)
                    .bind(&a.reason)
                    .bind(a.vendor.map(|v| v.as_str()))
                    .bind(&a.trace_id)
                    .bind(a.created_at)
                    .bind(&a.payload)
                    .bind(seq)
                    .bind(&head.1)
                    .bind(&hash)
                    .execute(&mut *tx)
                    .await?;
                    *head = (seq, hash);
                }
                for (property, (seq, hash)) in &heads {
                    sqlx::query(
                        "UPDATE lock_audit_heads SET seq = $3, head_hash = $4 WHERE tenant_id = $1 AND property_id = $2",
                    )
                    .bind(t)
                    .bind(property)
                    .bind(seq)
                    .bind(hash)
                    .execute(&mut *tx)
                    .await?;
                }

                for m in &uow.mailbox {
                    let n = match m {
                        MailboxUpdate::Done { id, outcome } => sqlx::query(
                            "UPDATE mailbox SET done_at = $2, outcome = $3 WHERE id = $1 AND done_at IS NULL",
                        )
                        .bind(id)
                        .bind(uow.now)
                        .bind(outcome)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected(),
                        MailboxUpdate::Retry { id, due_at, attempts, last_error } => sqlx::query(
                            "UPDATE mailbox SET due_at = $2, attempts = $3, last_error = $4 WHERE id = $1 AND done_at IS NULL",
                        )
                        .bind(id)
                        .bind(due_at)
                        .bind(attempts)
                        .bind(last_error)
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
                        "UPDATE mailbox SET due_at = LEAST(due_at, $3) WHERE tenant_id = $1 AND credential_id = $2 AND kind = 'drive' AND done_at IS NULL",
                    )
                    .bind(t)
                    .bind(s.credential_id.as_str())
                    .bind(s.due_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n == 0 {
                        sqlx::query(
                            "INSERT INTO mailbox (tenant_id, property_id, partition, subject, kind, credential_id, due_at, created_at) VALUES ($1, $2, $3, $4, 'drive', $5, $6, $7)",
                        )
                        .bind(t)
                        .bind(s.property_id.as_str())
                        .bind(s.partition)
                        .bind(&s.subject)
                        .bind(s.credential_id.as_str())
                        .bind(s.due_at)
                        .bind(uow.now)
                        .execute(&mut *tx)
                        .await?;
                    }
                }

                for e in &uow.events {
                    sqlx::query(
                        "INSERT INTO mailbox (tenant_id, property_id, partition, subject, kind, message_id, topic, payload, due_at, created_at) VALUES ($1, $2, $3, $4, 'event', $5, $6, $7, $8, $9)",
                    )
                    .bind(t)
                    .bind(e.property_id.as_str())
                    .bind(e.partition)
                    .bind(&e.subject)
                    .bind(ulid::Ulid::new().to_string())
                    .bind(&e.topic)
                    .bind(&e.payload)
                    .bind(e.due_at)
                    .bind(uow.now)
                    .execute(&mut *tx)
                    .await?;
                }

                tx.commit().await?;
                Ok(())
                }
            .await;
            match res {
                Err(StoreError::Database(msg)) if attempt < 4 && is_transient(&msg) => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                }
                other => return other,
            }
        }
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
    tx: &mut Transaction<'static, Postgres>,
    t: uuid::Uuid,
    rows: &[OutboxRow],
) -> StoreResult<()> {
    for o in rows {
        sqlx::query(
            "INSERT INTO outbox (id, tenant_id, aggregate_id, topic, payload, envelope, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&o.id)
        .bind(t)
        .bind(&o.aggregate_id)
        .bind(&o.topic)
        .bind(&o.payload)
        .bind(&o.envelope)
        .bind(o.created_at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
