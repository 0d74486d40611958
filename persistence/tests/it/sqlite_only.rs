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
        let cred = new_credential(&reg, &reservation(), &["r101"], t0())?;
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

/// The audit is append-only in SQLite too (by trigger).
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
    for sql in [
        "UPDATE lock_audit SET reason = 'rewritten'",
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
