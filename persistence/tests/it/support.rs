//! Backends under test and fixtures shared by the cases.

use anyhow::Context;
use chrono::{DateTime, Duration};
use lockstep_domain::credential::KeyCredentialSnapshot;
use lockstep_domain::{
    DeviceRef, GuestId, HolderKind, IssueIntent, KeyCredential, KeyCredentialId, KeyCredentialKind,
    KeyCredentialScope, LockDeviceId, Pin, PropertyId, ReservationId, RoomId, ScopedRoom, TenantId,
    Timestamp, ValidityWindow, VendorAdapterId, VendorCode, VendorRef,
};
use lockstep_persistence::testing::{shared_pg_database, test_cipher, TempSqlite};

use lockstep_domain::{KeyCredentialState, UserId};
use lockstep_persistence::testing::fresh_pg_database;
use lockstep_persistence::{
    AdapterRecord, AuditRow, CredentialWrite, Desired, DeviceRecord, DeviceSyncWrite,
    IntakeMessage, MasterKeyRecord, MasterKeyWrite, OutboxRow, PgStore, PolicyRecord, SqliteStore,
    Store, SyncState, UnitOfWork,
};
use sqlx::Row;
use std::sync::Arc;

/// A store under test, with raw access to its tables for what the trait cannot show.
pub enum Backend {
    /// Postgres, on the binary's shared test database.
    Pg(PgStore),
    /// SQLite, on a temp file of its own (removed when the backend drops).
    Sqlite(SqliteStore, #[allow(dead_code)] TempSqlite),
}

impl Backend {
    /// A Postgres store on the shared test database.
    pub async fn postgres() -> anyhow::Result<Self> {
        let db = shared_pg_database().await?;
        Ok(Self::Pg(db.connect_store(test_cipher(), 3).await?))
    }

    /// A SQLite store on a fresh temp file.
    pub async fn sqlite() -> anyhow::Result<Self> {
        let file = TempSqlite::new();
        let store = file.open(test_cipher()).await?;
        Ok(Self::Sqlite(store, file))
    }

    /// The same backend on a database of its own (Postgres: a fresh database; SQLite: a
    /// fresh file), for cases that look at cross-tenant totals.
    pub async fn isolated(&self) -> anyhow::Result<Self> {
        match self {
            Self::Pg(_) => {
                let db = fresh_pg_database().await?;
                Ok(Self::Pg(db.connect_store(test_cipher(), 3).await?))
            }
            Self::Sqlite(..) => Self::sqlite().await,
        }
    }

    /// Two more store instances on this backend's database, each with pools of its own,
    /// as two processes would have.
    pub async fn twin_stores(&self) -> anyhow::Result<[Arc<dyn Store>; 2]> {
        match self {
            Self::Pg(_) => {
                let db = shared_pg_database().await?;
                Ok([
                    Arc::new(db.connect_store(test_cipher(), 3).await?),
                    Arc::new(db.connect_store(test_cipher(), 3).await?),
                ])
            }
            Self::Sqlite(_, file) => Ok([
                Arc::new(file.open(test_cipher()).await?),
                Arc::new(file.open(test_cipher()).await?),
            ]),
        }
    }

    /// Another store on this backend's database with `cipher` (a rotated key ring).
    pub async fn with_cipher(
        &self,
        cipher: lockstep_persistence::Cipher,
    ) -> anyhow::Result<Arc<dyn Store>> {
        match self {
            Self::Pg(_) => Ok(Arc::new(
                shared_pg_database().await?.connect_store(cipher, 3).await?,
            )),
            Self::Sqlite(_, file) => Ok(Arc::new(file.open(cipher).await?)),
        }
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        match self {
            Self::Pg(s) => s,
            Self::Sqlite(s, _) => s,
        }
    }

    /// Rows of `table` belonging to `tenant`, counted directly (Postgres: as the service
    /// role under the tenant, so RLS applies).
    pub async fn count(&self, table: &str, tenant: TenantId) -> anyhow::Result<i64> {
        self.count_where(table, tenant, "TRUE").await
    }

    /// Open drive entries of a credential.
    pub async fn open_drives(
        &self,
        tenant: TenantId,
        credential: &KeyCredentialId,
    ) -> anyhow::Result<i64> {
        // Ids are ours (prefix + ULID): safe to inline.
        let cond = format!(
            "kind = 'drive' AND done_at IS NULL AND credential_id = '{}'",
            credential.as_str()
        );
        self.count_where("mailbox", tenant, &cond).await
    }

    /// Counts `table` rows of the tenant matching a trusted SQL condition.
    pub async fn count_where(
        &self,
        table: &str,
        tenant: TenantId,
        cond: &str,
    ) -> anyhow::Result<i64> {
        match self {
            Self::Pg(s) => {
                let mut tx = s.app_pool().begin().await?;
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(tenant.to_string())
                    .execute(&mut *tx)
                    .await?;
                let n: i64 = sqlx::query_scalar(&format!(
                    "SELECT count(*) FROM {table} WHERE tenant_id = $1 AND ({cond})"
                ))
                .bind(tenant.as_uuid())
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(n)
            }
            Self::Sqlite(s, _) => Ok(sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {table} WHERE tenant_id = ? AND ({cond})"
            ))
            .bind(tenant.to_string())
            .fetch_one(s.read_pool())
            .await?),
        }
    }

    /// Runs `sql` (no parameters) as the service role under `tenant`; the error text when
    /// the database refuses it.
    pub async fn exec_as_tenant(&self, tenant: TenantId, sql: &str) -> Result<u64, String> {
        match self {
            Self::Pg(s) => {
                let mut tx = s.app_pool().begin().await.map_err(|e| e.to_string())?;
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(tenant.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                let n = sqlx::query(sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?
                    .rows_affected();
                tx.commit().await.map_err(|e| e.to_string())?;
                Ok(n)
            }
            Self::Sqlite(s, _) => sqlx::query(sql)
                .execute(s.write_pool())
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| e.to_string()),
        }
    }

    /// Marks a device decommissioned (the registry has no write for it yet).
    pub async fn decommission(
        &self,
        tenant: TenantId,
        device: &LockDeviceId,
    ) -> anyhow::Result<()> {
        // Ids are ours (prefix + ULID): safe to inline.
        let at = match self {
            Self::Pg(_) => "now()",
            Self::Sqlite(..) => "0",
        };
        let sql = format!(
            "UPDATE lock_devices SET decommissioned_at = {at} WHERE id = '{}'",
            device.as_str()
        );
        let n = self
            .exec_as_tenant(tenant, &sql)
            .await
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(n == 1, "one device decommissioned, not {n}");
        Ok(())
    }

    /// Marks a device decommissioned at `at`.
    pub async fn decommission_at(
        &self,
        tenant: TenantId,
        device: &LockDeviceId,
        at: Timestamp,
    ) -> anyhow::Result<()> {
        // Ids are ours (prefix + ULID), the time a number: safe to inline.
        let at = match self {
            Self::Pg(_) => format!("to_timestamp({})", at.timestamp_millis() as f64 / 1000.0),
            Self::Sqlite(..) => at.timestamp_millis().to_string(),
        };
        let sql = format!(
            "UPDATE lock_devices SET decommissioned_at = {at} WHERE id = '{}'",
            device.as_str()
        );
        let n = self
            .exec_as_tenant(tenant, &sql)
            .await
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(n == 1, "one device decommissioned, not {n}");
        Ok(())
    }

    /// The raw secret columns (PIN and vendor ref ciphertexts) of a credential's device
    /// rows, as stored.
    pub async fn raw_secret_columns(
        &self,
        tenant: TenantId,
        credential: &KeyCredentialId,
    ) -> anyhow::Result<Vec<Vec<u8>>> {
        let rows = match self {
            Self::Pg(s) => {
                let mut tx = s.app_pool().begin().await?;
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(tenant.to_string())
                    .execute(&mut *tx)
                    .await?;
                let rows = sqlx::query(
                    "SELECT pin_ciphertext, vendor_ref_ciphertext FROM key_credential_devices WHERE key_credential_id = $1",
                )
                .bind(credential.as_str())
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.try_get("pin_ciphertext")?,
                            r.try_get("vendor_ref_ciphertext")?,
                        ))
                    })
                    .collect::<Result<Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>, sqlx::Error>>()?
            }
            Self::Sqlite(s, _) => {
                let rows = sqlx::query(
                    "SELECT pin_ciphertext, vendor_ref_ciphertext FROM key_credential_devices WHERE tenant_id = ? AND key_credential_id = ?",
                )
                .bind(tenant.to_string())
                .bind(credential.as_str())
                .fetch_all(s.read_pool())
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.try_get("pin_ciphertext")?,
                            r.try_get("vendor_ref_ciphertext")?,
                        ))
                    })
                    .collect::<Result<Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>, sqlx::Error>>()?
            }
        };
        Ok(rows
            .into_iter()
            .flat_map(|(a, b)| [a, b])
            .flatten()
            .collect())
    }
}

/// A fixed, millisecond-precise instant: SQLite stores milliseconds and Postgres
/// microseconds, so round trips compare equal only at millisecond precision.
pub fn t0() -> Timestamp {
    DateTime::from_timestamp_millis(1_767_225_600_123).expect("constant timestamp is in range")
}

/// `t0` plus whole seconds.
pub fn at(secs: i64) -> Timestamp {
    t0() + Duration::seconds(secs)
}

/// A partition number no other test uses (partitions are global, not per tenant).
pub fn random_partition() -> i32 {
    1_000 + (uuid::Uuid::new_v4().as_u128() % 1_000_000_000) as i32
}

/// A globally unique message id (the inbox key is not tenant-scoped).
pub fn message_id() -> String {
    ulid::Ulid::new().to_string()
}

/// The property every fixture uses.
pub fn property() -> PropertyId {
    PropertyId::parse("prop-1").expect("valid property id")
}

/// A room id.
pub fn room(s: &str) -> RoomId {
    RoomId::parse(s).expect("valid room id")
}

/// A tenant's registry: one adapter, two devices (d1 serves r101 and r102, d2 serves r103).
pub struct Registry {
    /// Tenant.
    pub tenant: TenantId,
    /// Adapter.
    pub adapter: VendorAdapterId,
    /// d1, d2.
    pub devices: [LockDeviceId; 2],
}

/// Registers an adapter and two devices for `tenant`.
pub async fn seed_registry(store: &dyn Store, tenant: TenantId) -> anyhow::Result<Registry> {
    let adapter = VendorAdapterId::generate();
    store
        .upsert_adapter(&AdapterRecord {
            id: adapter.clone(),
            tenant_id: tenant,
            property_id: property(),
            vendor: VendorCode::Ttlock,
            environment: "sandbox".into(),
            capabilities: serde_json::json!({ "pin_code": true }),
            config: serde_json::json!({ "baseUrl": "http://127.0.0.1:1" }),
            enabled: true,
            precedence: 100,
            now: t0(),
        })
        .await
        .context("upsert adapter")?;
    let d1 = LockDeviceId::generate();
    let d2 = LockDeviceId::generate();
    for (id, rooms) in [
        (&d1, vec![room("r101"), room("r102")]),
        (&d2, vec![room("r103")]),
    ] {
        store
            .upsert_device(&DeviceRecord {
                id: id.clone(),
                tenant_id: tenant,
                property_id: property(),
                vendor: VendorCode::Ttlock,
                vendor_adapter_id: adapter.clone(),
                device_ref: DeviceRef::new(format!("ttlock-lock-{id}")),
                label: format!("door {id}"),
                capabilities: serde_json::json!({ "pin_code": true }),
                rooms,
                area: None,
                now: t0(),
                on_register: Vec::new(),
            })
            .await
            .context("upsert device")?;
    }
    Ok(Registry {
        tenant,
        adapter,
        devices: [d1, d2],
    })
}

/// A new guest credential of the registry's tenant for `rooms`, requested at `now`.
pub fn new_credential(
    reg: &Registry,
    reservation: &ReservationId,
    rooms: &[&str],
    now: Timestamp,
) -> anyhow::Result<KeyCredential> {
    Ok(KeyCredential::request(
        IssueIntent {
            id: KeyCredentialId::generate(),
            tenant_id: reg.tenant,
            property_id: property(),
            holder_kind: HolderKind::Guest,
            reservation_id: Some(reservation.clone()),
            guest_id: Some(GuestId::parse("guest-1")?),
            staff_user_id: None,
            kind: KeyCredentialKind::PinCode,
            rooms: rooms
                .iter()
                .map(|r| ScopedRoom {
                    tenant_id: reg.tenant,
                    property_id: property(),
                    room_id: room(r),
                })
                .collect(),
            scope: KeyCredentialScope::default(),
            validity: ValidityWindow::new(at(3_600), at(3 * 86_400))?,
            vendor: VendorCode::Ttlock,
            vendor_adapter_id: reg.adapter.clone(),
            provisional: false,
            idempotency_key: format!("idem-{}", ulid::Ulid::new()),
            replaces_id: None,
            trace_id: None,
        },
        now,
    )?)
}

/// `t0` plus whole days.
pub fn day(n: i64) -> Timestamp {
    t0() + Duration::days(n)
}

/// A new guest credential of `reservation` on `rooms` valid over `[from, until)`.
pub fn stay(
    reg: &Registry,
    reservation: &ReservationId,
    rooms: &[&str],
    from: Timestamp,
    until: Timestamp,
) -> anyhow::Result<KeyCredential> {
    let mut s = new_credential(reg, reservation, rooms, t0())?.snapshot();
    s.validity = ValidityWindow::new(from, until)?;
    Ok(KeyCredential::restore(s)?)
}

/// A new `staff_master` credential of `staff` on `rooms` valid over `[from, until)`.
pub fn master_credential(
    reg: &Registry,
    staff: &str,
    rooms: &[&str],
    from: Timestamp,
    until: Timestamp,
) -> anyhow::Result<KeyCredential> {
    // Requested as a guest credential (which needs a room), then made a master one.
    let mut s = new_credential(reg, &reservation(), &["r101"], t0())?.snapshot();
    s.rooms = rooms.iter().map(|r| room(r)).collect();
    s.holder_kind = HolderKind::StaffMaster;
    s.reservation_id = None;
    s.guest_id = None;
    s.staff_user_id = Some(UserId::parse(staff)?);
    s.validity = ValidityWindow::new(from, until)?;
    Ok(KeyCredential::restore(s)?)
}

/// The master key row backed by `credential`.
pub fn master_key(credential: &KeyCredential, scope_kind: &str) -> MasterKeyRecord {
    let s = credential.snapshot();
    MasterKeyRecord {
        id: format!("mky_{}", ulid::Ulid::new()),
        tenant_id: s.tenant_id,
        property_id: s.property_id.clone(),
        staff_user_id: s
            .staff_user_id
            .as_ref()
            .map(|u| u.as_str().to_owned())
            .unwrap_or_default(),
        shift_id: Some("shift-1".into()),
        key_credential_id: s.id.clone(),
        scope_kind: scope_kind.to_owned(),
        scope: serde_json::json!({ "floors": ["3"] }),
        valid_from: s.validity.from(),
        valid_until: s.validity.until(),
        issued_at: s.created_at,
        revoked_at: None,
    }
}

/// A policy of `tenant` for the fixture property.
pub fn policy(tenant: TenantId) -> PolicyRecord {
    PolicyRecord {
        id: format!("kkp_{}", ulid::Ulid::new()),
        tenant_id: tenant,
        property_id: property(),
        preferred_order: vec!["mobile_app".into(), "pin_code".into()],
        fallback_chain: vec!["rfid_card".into()],
        max_valid_until_extension_hours: 168,
        id_verify_required_for: vec!["mobile_app".into()],
        no_show_suspend_after_hours: 2,
        allow_offline_issuance_kinds: vec!["rfid_card".into(), "pin_code".into()],
        updated_at: t0(),
    }
}

/// Writes `credential` moved to `state` (version bumped), expecting its current version.
pub async fn set_state(
    store: &dyn Store,
    credential: &KeyCredential,
    state: KeyCredentialState,
    now: Timestamp,
) -> anyhow::Result<KeyCredential> {
    let mut s = credential.snapshot();
    s.state = state;
    if state == KeyCredentialState::Revoked {
        s.revoked_at = Some(now);
    }
    update(store, credential, s, now).await
}

/// Writes `snapshot` (its version bumped) over `credential`, expecting its current version.
pub async fn update(
    store: &dyn Store,
    credential: &KeyCredential,
    mut snapshot: KeyCredentialSnapshot,
    now: Timestamp,
) -> anyhow::Result<KeyCredential> {
    snapshot.version = credential.version() + 1;
    snapshot.updated_at = now;
    let mut uow = UnitOfWork::new(snapshot.tenant_id, None, now);
    uow.credentials.push(CredentialWrite {
        snapshot: snapshot.clone(),
        expected_version: Some(credential.version()),
    });
    store.commit(uow).await?;
    Ok(KeyCredential::restore(snapshot)?)
}

/// A fresh reservation id.
pub fn reservation() -> ReservationId {
    ReservationId::parse(&format!("rsv-{}", ulid::Ulid::new())).expect("valid reservation id")
}

/// The saga subject of a reservation.
pub fn subject_of(r: &ReservationId) -> String {
    format!("reservation:{}", r.as_str())
}

/// A unit of work inserting `snapshot` as a new credential.
pub fn insert(snapshot: KeyCredentialSnapshot, now: Timestamp) -> UnitOfWork {
    let mut uow = UnitOfWork::new(snapshot.tenant_id, None, now);
    uow.credentials.push(CredentialWrite {
        snapshot,
        expected_version: None,
    });
    uow
}

/// An event for `subject`, received at `received_at`.
pub fn intake_msg(
    tenant: TenantId,
    subject: &str,
    partition: i32,
    received_at: Timestamp,
) -> IntakeMessage {
    IntakeMessage {
        message_id: message_id(),
        consumer: "lockstep.reservations".into(),
        tenant_id: tenant,
        property_id: property(),
        partition,
        subject: subject.to_owned(),
        topic: "reservation.confirmed".into(),
        payload: serde_json::json!({ "revision": 1, "note": "test" }),
        received_at,
    }
}

/// An outbox row of `tenant`.
pub fn outbox_row(tenant: TenantId, aggregate: &str, created_at: Timestamp) -> OutboxRow {
    let id = ulid::Ulid::new().to_string();
    OutboxRow {
        id: id.clone(),
        tenant_id: tenant,
        aggregate_id: aggregate.to_owned(),
        topic: "key_credential.requested".into(),
        payload: serde_json::json!({ "keyCredentialId": aggregate }),
        envelope: serde_json::json!({ "id": id, "data": { "keyCredentialId": aggregate } }),
        created_at,
        publish_attempts: 0,
    }
}

/// An audit row of `tenant` about a credential.
/// An audit row of the property that names no credential.
pub fn audit_row_for_property(tenant: TenantId, created_at: Timestamp) -> AuditRow {
    AuditRow {
        credential_id: None,
        action: "attempt".into(),
        ..audit_row(tenant, &KeyCredentialId::generate(), created_at)
    }
}

pub fn audit_row(
    tenant: TenantId,
    credential: &KeyCredentialId,
    created_at: Timestamp,
) -> AuditRow {
    AuditRow {
        id: ulid::Ulid::new().to_string(),
        tenant_id: tenant,
        property_id: property(),
        credential_id: Some(credential.clone()),
        device_id: None,
        actor_kind: "saga".into(),
        action: "requested".into(),
        reason: None,
        vendor: Some(VendorCode::Ttlock),
        trace_id: Some("trace-1".into()),
        created_at,
        payload: serde_json::json!({ "step": 1 }),
    }
}

/// A pending `present` device write, with an optional PIN and vendor ref.
pub fn device_write(
    credential: &KeyCredentialId,
    device: &LockDeviceId,
    pin: Option<&str>,
    vref: Option<&str>,
) -> anyhow::Result<DeviceSyncWrite> {
    Ok(DeviceSyncWrite {
        credential_id: credential.clone(),
        device_id: device.clone(),
        desired: Desired::Present,
        sync: SyncState::Pending,
        pin: pin.map(Pin::parse).transpose()?,
        vendor_ref: vref.map(VendorRef::new),
        attempts: 0,
        pin_collisions: 0,
        last_error: None,
    })
}

/// What [`seed_everything`] wrote.
pub struct Seeded {
    /// The credential.
    pub credential: KeyCredential,
    /// Its reservation.
    pub reservation: ReservationId,
    /// The saga subject.
    pub subject: String,
}

/// Writes at least one row of every tenant table for `tenant`, through the store: adapter,
/// devices and their rooms, an intake (inbox + mailbox), a credential with rooms, a device
/// row, saga state, an outbox row and an audit row; a master credential with its master
/// key; the property's key-kind policy.
pub async fn seed_everything(store: &dyn Store, tenant: TenantId) -> anyhow::Result<Seeded> {
    let registry = seed_registry(store, tenant).await?;
    let reservation = reservation();
    let subject = subject_of(&reservation);
    store
        .intake(
            &intake_msg(tenant, &subject, random_partition(), t0()),
            None,
        )
        .await?;
    let credential = new_credential(&registry, &reservation, &["r101"], t0())?;
    let mut uow = insert(credential.snapshot(), t0());
    uow.devices.push(device_write(
        credential.id(),
        &registry.devices[0],
        Some("482913"),
        Some("vref-1"),
    )?);
    uow.saga = Some((subject.clone(), serde_json::json!({ "step": "requested" })));
    uow.outbox
        .push(outbox_row(tenant, credential.id().as_str(), t0()));
    uow.audit.push(audit_row(tenant, credential.id(), t0()));
    store.commit(uow).await?;
    // the linker's part: the chain's head
    lockstep_persistence::audit::link_chain(store, tenant, &property()).await?;

    // A master key over the same room, and the property's policy.
    let master = master_credential(&registry, "staff-1", &["r101"], day(0), day(1))?;
    let mut uow = insert(master.snapshot(), t0());
    uow.master = Some(MasterKeyWrite::Insert(master_key(&master, "floors")));
    store.commit(uow).await?;
    store.upsert_policy(&policy(tenant)).await?;
    store
        .record_user_deactivated(tenant, "staff-gone", t0())
        .await?;
    store
        .record_property_deactivated(tenant, &PropertyId::parse("ppt_gone")?, t0())
        .await?;
    store
        .reserve_rate_slot(tenant, "ttlock|seed|app", 0, 600_000)
        .await?;
    store
        .record_vendor_credential(&vendor_credential(tenant, "fp-seed", t0()))
        .await?;
    store
        .insert_audit_root(&lockstep_persistence::audit::SealedRoot {
            tenant_id: tenant,
            property_id: property(),
            from_seq: 1,
            to_seq: 1,
            merkle_root: lockstep_persistence::audit::GENESIS.into(),
            signature: String::new(),
            key_id: String::new(),
            sealed_at: t0(),
        })
        .await?;
    // an offline-issuance certificate
    store
        .save_offline_cert(&lockstep_domain::OfflineIssuance::issue(
            tenant,
            property(),
            "desk-seed",
            "MCowBQYDK2VwAyEA",
            vec![lockstep_domain::KeyCredentialKind::PinCode],
            &[lockstep_domain::KeyCredentialKind::PinCode],
            48,
            t0(),
        )?)
        .await?;
    // a door attempt and the webhook that brought it
    let mut uow = UnitOfWork::new(tenant, None, t0());
    uow.attempts
        .push(lockstep_domain::KeyCredentialAttempt::record(
            tenant,
            lockstep_domain::AttemptReport {
                vendor_event_id: "seed:1".into(),
                attempted_at: t0(),
                granted: true,
                device_id: lockstep_domain::LockDeviceId::generate(),
                property_id: property(),
                vendor: VendorCode::Ttlock,
                method: "pin_code",
            },
            None,
            t0(),
        )?);
    uow.webhooks.push(lockstep_persistence::WebhookInboxRow {
        id: format!("whk_{}", ulid::Ulid::new()),
        vendor: VendorCode::Ttlock,
        external_event_id: "seed:hook".into(),
        kind: "lock_records".into(),
        payload: serde_json::json!({}),
        signature_ok: true,
        received_at: t0(),
        outcome: "processed".into(),
    });
    store.commit(uow).await?;
    // the desk path (issue 12): an encoder session, a card and a provisional verdict
    {
        use lockstep_persistence::tables::{EncodeJobTable, EncoderSessionTable, ProvisionalTable};
        let mut tx = store.begin(tenant, None).await?;
        tx.open_encoder_session(&crate::contract::encoder_sessions::session(
            tenant,
            "node-seed",
            "enc-0",
        ))
        .await?;
        let job = crate::contract::encode_jobs::job(tenant, "wg:seed", "key_seed", &["501"]);
        tx.start_encode_job(&job).await?;
        tx.record_encode_result(
            &job.idempotency_key,
            &lockstep_persistence::EncodeResult::Encoded {
                card_number: "1234567890".into(),
                desktop_device_id: "desk-seed".into(),
                encoder_id: None,
                session_id: None,
            },
            t0(),
        )
        .await?;
        tx.record_provisional(&crate::contract::provisional::provisional(
            tenant,
            "oki_01J00000000000000000000000",
            "p-seed",
            lockstep_persistence::ProvisionalVerdict::Valid,
        ))
        .await?;
        tx.commit().await?;
    }
    Ok(Seeded {
        credential,
        reservation,
        subject,
    })
}

/// A vendor credential row of the test property's TTLock adapter.
pub fn vendor_credential(
    tenant: TenantId,
    fingerprint: &str,
    at: Timestamp,
) -> lockstep_persistence::VendorCredentialRecord {
    lockstep_persistence::VendorCredentialRecord {
        id: lockstep_domain::VendorCredentialId::generate(),
        tenant_id: tenant,
        property_id: property(),
        vendor: VendorCode::Ttlock,
        environment: "sandbox".into(),
        secret_resource_name: "client_secret=file:/run/secrets/ttlock".into(),
        fingerprint: fingerprint.into(),
        rotates_at: at + chrono::Duration::days(90),
        updated_at: at,
    }
}

/// The aggregate as text, to compare every field.
pub fn snapshot_text(c: &KeyCredential) -> String {
    format!("{:?}", c.snapshot())
}

/// I-9's refusal.
pub fn is_overlap(r: &Result<(), lockstep_persistence::StoreError>) -> bool {
    matches!(r, Err(lockstep_persistence::StoreError::Overlap))
}

/// A device registration of `registry`'s tenant and adapter serving room `r190`, with a
/// `registered` outbox row.
pub fn device_record(
    registry: &Registry,
    id: &LockDeviceId,
    property_id: &str,
    vendor_ref: &str,
) -> DeviceRecord {
    DeviceRecord {
        id: id.clone(),
        tenant_id: registry.tenant,
        property_id: PropertyId::parse(property_id).expect("a property id"),
        vendor: VendorCode::Ttlock,
        vendor_adapter_id: registry.adapter.clone(),
        device_ref: DeviceRef::new(vendor_ref),
        label: "door".into(),
        capabilities: serde_json::json!({}),
        rooms: vec![room("r190")],
        area: None,
        now: t0(),
        on_register: vec![outbox_row(registry.tenant, id.as_str(), t0())],
    }
}

/// A drive of `credential` for `subject`, due at `due_at`.
pub fn drive(
    subject: &str,
    partition: i32,
    credential: &KeyCredentialId,
    due_at: Timestamp,
) -> lockstep_persistence::ScheduleDrive {
    lockstep_persistence::ScheduleDrive {
        property_id: property(),
        partition,
        subject: subject.to_owned(),
        credential_id: credential.clone(),
        due_at,
    }
}

/// A door-truth write of `credential` on `device` with `desired` and `sync`.
pub fn door(
    credential: &KeyCredentialId,
    device: &LockDeviceId,
    desired: Desired,
    sync: SyncState,
) -> DeviceSyncWrite {
    DeviceSyncWrite {
        credential_id: credential.clone(),
        device_id: device.clone(),
        desired,
        sync,
        pin: None,
        vendor_ref: None,
        attempts: 0,
        pin_collisions: 0,
        last_error: None,
    }
}
