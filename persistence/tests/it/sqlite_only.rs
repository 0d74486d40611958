//! SQLite-only guarantees: WAL, foreign keys and a busy timeout on every connection; a
//! single writer so concurrent steps never fail with `SQLITE_BUSY`; migrations recorded
//! once; the audit append-only by trigger (DESIGN §5).

use std::str::FromStr;

use anyhow::ensure;
use lockstep_domain::TenantId;
use lockstep_persistence::testing::{test_cipher, TempSqlite};
use lockstep_persistence::{IntakeOutcome, Store, UnitOfWork};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::support::*;

#[tokio::test]
async fn sqlite_connections_use_wal_foreign_keys_and_busy_timeout() -> anyhow::Result<()> {
    let file = TempSqlite::new();
    let store = file.open(test_cipher()).await?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.read_pool())
        .await?;
    assert_eq!(mode.to_lowercase(), "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.read_pool())
        .await?;
    assert_eq!(fk, 1);
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(store.read_pool())
        .await?;
    assert!(busy >= 1_000, "busy timeout {busy} ms");
    // The read pool cannot write.
    let err = sqlx::query("DELETE FROM outbox")
        .execute(store.read_pool())
        .await;
    ensure!(err.is_err(), "read pool must be query-only");
    store.close().await;
    Ok(())
}

/// Many concurrent steps (intake + commit) all succeed: the single writer with
/// `BEGIN IMMEDIATE` queues them instead of failing with `SQLITE_BUSY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_writes_never_fail_busy() -> anyhow::Result<()> {
    let file = TempSqlite::new();
    let store = file.open(test_cipher()).await?;
    let tenant = TenantId::generate();
    let reg = seed_registry(&store, tenant).await?;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        // A room each: different reservations on one room at once would break I-9.
        let room = format!("r{i}");
        let cred = new_credential(&reg, &reservation(), &[room.as_str()], t0())?;
        tasks.push(tokio::spawn(async move {
            let subject = format!("reservation:rsv-{i}");
            let outcome = store
                .intake(&intake_msg(tenant, &subject, 1, t0()), None)
                .await?;
            anyhow::ensure!(outcome == IntakeOutcome::Accepted);
            let _ = store.next_mailbox_entry(tenant, &subject, t0()).await?;
            store.commit(insert(cred.snapshot(), t0())).await?;
            let mut uow = UnitOfWork::new(tenant, None, t0());
            uow.saga = Some((subject, serde_json::json!(i)));
            store.commit(uow).await?;
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    assert_eq!(store.mailbox_depth().await?.0, 40);
    store.close().await;
    Ok(())
}

/// Reopening a file keeps its data and does not re-run migrations.
#[tokio::test]
async fn sqlite_reopen_keeps_data_and_records_migrations_once() -> anyhow::Result<()> {
    let file = TempSqlite::new();
    let tenant = TenantId::generate();
    let store = file.open(test_cipher()).await?;
    let seeded = seed_everything(&store, tenant).await?;
    store.close().await;

    let url = format!("sqlite://{}", file.path.display());
    let store = lockstep_persistence::SqliteStore::open(&url, test_cipher()).await?;
    assert!(store
        .get_credential(tenant, seeded.credential.id())
        .await?
        .is_some());
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _lockstep_migrations ORDER BY version")
            .fetch_all(store.read_pool())
            .await?;
    let expected: Vec<i64> = lockstep_persistence::migrate::SQLITE
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, expected);
    store.close().await;
    Ok(())
}

/// The audit is append-only in SQLite too (by trigger): a row is linked once and deleted
/// only below its chain's retention anchor.
#[tokio::test]
async fn sqlite_lock_audit_is_append_only() -> anyhow::Result<()> {
    let file = TempSqlite::new();
    let tenant = TenantId::generate();
    let store = file.open(test_cipher()).await?;
    seed_everything(&store, tenant).await?;
    store.close().await;

    let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", file.path.display()))?
        .connect()
        .await?;
    // the seed's row is linked: its link is not rewritten either, and no retention anchor
    // covers it
    for sql in [
        "UPDATE lock_audit SET reason = 'rewritten'",
        "UPDATE lock_audit SET chain_seq = 99",
        "UPDATE lock_audit SET row_hash = 'forged'",
        "DELETE FROM lock_audit",
    ] {
        let err = sqlx::query(sql).execute(&mut conn).await.expect_err(sql);
        ensure!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM lock_audit")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(n, 1);
    conn.close().await?;
    Ok(())
}

/// (credential, property, reservation, is_master, live, valid_from, valid_until).
type RoomLink = (String, String, Option<String>, bool, bool, i64, i64);

/// Migration 0002 rebuilds the room links with the I-9 copies of credentials written
/// under 0001, 0020 turns their state into liveness, and the triggers then guard them.
#[tokio::test]
async fn sqlite_migration_0002_backfills_room_links_of_existing_credentials() -> anyhow::Result<()>
{
    use lockstep_persistence::{migrate, StoreError};
    use sqlx::Row;

    let file = TempSqlite::new();
    let tenant = TenantId::generate();
    let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", file.path.display()))?
        .create_if_missing(true)
        .foreign_keys(true)
        .connect()
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE _lockstep_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(&mut conn)
    .await?;
    sqlx::raw_sql(migrate::SQLITE[0].sql)
        .execute(&mut conn)
        .await?;
    sqlx::query(
        "INSERT INTO _lockstep_migrations (version, name, applied_at) VALUES (1, 'init', 0)",
    )
    .execute(&mut conn)
    .await?;
    let (from, until) = (day(0).timestamp_millis(), day(4).timestamp_millis());
    for (id, holder, rsv, staff, state) in [
        ("kc_a", "guest", Some("rsv-a"), None, "active"),
        ("kc_m", "staff_master", None, Some("staff-1"), "active"),
        ("kc_r", "guest", Some("rsv-r"), None, "revoked"),
    ] {
        sqlx::query(
            "INSERT INTO key_credentials (id, tenant_id, property_id, holder_kind, reservation_id, guest_id, staff_user_id, kind, valid_from, valid_until, state, vendor, vendor_adapter_id, idempotency_key, created_at, updated_at) \
             VALUES (?1, ?2, 'prop-1', ?3, ?4, CASE WHEN ?4 IS NULL THEN NULL ELSE 'guest-1' END, ?5, 'pin_code', ?6, ?7, ?8, 'ttlock', 'vad_1', ?1, ?6, ?6)",
        )
        .bind(id)
        .bind(tenant.to_string())
        .bind(holder)
        .bind(rsv)
        .bind(staff)
        .bind(from)
        .bind(until)
        .bind(state)
        .execute(&mut conn)
        .await?;
        sqlx::query("INSERT INTO key_credential_rooms (tenant_id, key_credential_id, room_id) VALUES (?, ?, 'r101')")
            .bind(tenant.to_string())
            .bind(id)
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;

    let store = file.open(test_cipher()).await?;
    let rows = sqlx::query(
        "SELECT key_credential_id, property_id, reservation_id, is_master, live, valid_from, valid_until FROM key_credential_rooms ORDER BY key_credential_id",
    )
    .fetch_all(store.read_pool())
    .await?;
    let got: Vec<RoomLink> = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get("key_credential_id")?,
                r.try_get("property_id")?,
                r.try_get("reservation_id")?,
                r.try_get("is_master")?,
                r.try_get("live")?,
                r.try_get("valid_from")?,
                r.try_get("valid_until")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    assert_eq!(
        got,
        vec![
            (
                "kc_a".into(),
                "prop-1".into(),
                Some("rsv-a".into()),
                false,
                true,
                from,
                until
            ),
            (
                "kc_m".into(),
                "prop-1".into(),
                None,
                true,
                true,
                from,
                until
            ),
            (
                "kc_r".into(),
                "prop-1".into(),
                Some("rsv-r".into()),
                false,
                false,
                from,
                until
            ),
        ]
    );

    let reg = Registry {
        tenant,
        adapter: lockstep_domain::VendorAdapterId::generate(),
        devices: [
            lockstep_domain::LockDeviceId::generate(),
            lockstep_domain::LockDeviceId::generate(),
        ],
    };
    let c = stay(&reg, &reservation(), &["r101"], day(2), day(3))?;
    let res = store.commit(insert(c.snapshot(), t0())).await;
    ensure!(matches!(res, Err(StoreError::Overlap)), "{res:?}");
    store.close().await;
    Ok(())
}
