//! Postgres-only guarantees: row-level security over every tenant table, no tenant
//! carried over on a pooled connection, and an append-only audit for the service role
//! (spec 004 §4, DESIGN §5).

use anyhow::{ensure, Context};
use lockstep_domain::TenantId;
use lockstep_persistence::testing::{shared_pg_database, test_cipher};
use lockstep_persistence::{Store, UnitOfWork};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use crate::support::{audit_row, day, property, seed_everything};

/// Every table with a `tenant_id` column. A new tenant table must be added here, and
/// gets RLS checked by the tests below.
const TENANT_TABLES: &[&str] = &[
    "deactivated_properties",
    "deactivated_users",
    "encode_jobs",
    "encoder_sessions",
    "inbox",
    "key_credential_attempts",
    "key_credential_devices",
    "key_credential_rooms",
    "key_credential_saga",
    "key_credentials",
    "key_kind_policies",
    "lock_audit",
    "lock_audit_heads",
    "lock_audit_roots",
    "lock_device_rooms",
    "lock_devices",
    "mailbox",
    "master_keys",
    "offline_issuance",
    "outbox",
    "provisional_credentials",
    "vendor_adapters",
    "vendor_credentials",
    "vendor_rate_limits",
    "webhook_inbox",
];

async fn pool(url: &str, max: u32) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .connect(url)
        .await?)
}

async fn begin_as(
    pool: &PgPool,
    tenant: Option<TenantId>,
) -> anyhow::Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    if let Some(t) = tenant {
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(t.to_string())
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

/// Runs `sql` in a savepoint and expects it to fail with `code`.
async fn expect_refused(
    tx: &mut Transaction<'static, Postgres>,
    sql: &str,
    binds: &[String],
    code: &str,
) -> anyhow::Result<String> {
    let mut sp = sqlx::Connection::begin(&mut **tx).await?;
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(b);
    }
    let res = q.execute(&mut *sp).await;
    sp.rollback().await?;
    match res {
        Ok(r) => anyhow::bail!(
            "`{sql}` succeeded ({} rows) but must be refused",
            r.rows_affected()
        ),
        Err(e) => {
            ensure!(
                sqlstate(&e).as_deref() == Some(code),
                "`{sql}` failed with {e} (want SQLSTATE {code})"
            );
            Ok(e.to_string())
        }
    }
}

/// Spec 004 §4: for every tenant table, the service role under tenant A can neither see,
/// update nor insert tenant B's rows, and sees nothing at all without a tenant. The table
/// list comes from the catalog, so a new tenant table without a policy fails here.
#[tokio::test]
async fn rls_isolates_tenants_on_every_tenant_table() -> anyhow::Result<()> {
    let db = shared_pg_database().await?;
    let store = db.connect_store(test_cipher(), 2).await?;
    let a = TenantId::generate();
    let b = TenantId::generate();
    seed_everything(&store, a).await?;
    seed_everything(&store, b).await?;

    // The catalog, read as the owner (information_schema would hide tables without grants).
    let owner = pool(&db.owner_url, 1).await?;
    let rows = sqlx::query(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, \
                (SELECT count(*) FROM pg_policies p WHERE p.schemaname = 'public' AND p.tablename = c.relname) AS policies \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') \
           AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND a.attnum > 0 AND NOT a.attisdropped) \
         ORDER BY c.relname",
    )
    .fetch_all(&owner)
    .await?;
    let tables: Vec<String> = rows
        .iter()
        .map(|r| r.try_get("relname"))
        .collect::<Result<_, _>>()?;
    assert_eq!(tables, TENANT_TABLES, "tenant tables of the schema");
    for r in &rows {
        let name: String = r.try_get("relname")?;
        ensure!(
            r.try_get::<bool, _>("relrowsecurity")?,
            "{name}: row level security not enabled"
        );
        ensure!(
            r.try_get::<bool, _>("relforcerowsecurity")?,
            "{name}: row level security not forced"
        );
        ensure!(r.try_get::<i64, _>("policies")? >= 1, "{name}: no policy");
    }
    let bypass: bool =
        sqlx::query_scalar("SELECT rolbypassrls FROM pg_roles WHERE rolname = 'lockstep_app'")
            .fetch_one(&owner)
            .await?;
    ensure!(!bypass, "lockstep_app must not bypass RLS");
    let updatable: Vec<String> = sqlx::query_scalar(
        "SELECT t FROM unnest($1::text[]) AS t WHERE has_table_privilege('lockstep_app', 'public.' || t, 'UPDATE') ORDER BY t",
    )
    .bind(TENANT_TABLES)
    .fetch_all(&owner)
    .await?;
    let insertable: Vec<String> = sqlx::query_scalar(
        "SELECT t FROM unnest($1::text[]) AS t WHERE has_table_privilege('lockstep_app', 'public.' || t, 'INSERT') ORDER BY t",
    )
    .bind(TENANT_TABLES)
    .fetch_all(&owner)
    .await?;
    owner.close().await;
    assert_eq!(
        TENANT_TABLES
            .iter()
            .filter(|t| !insertable.iter().any(|i| i == *t))
            .collect::<Vec<_>>(),
        vec![&"lock_audit_heads"],
        "the service role inserts into every tenant table but the linker's"
    );
    assert_eq!(
        updatable.len(),
        TENANT_TABLES.len() - 7,
        "all but inbox, lock_audit, lock_audit_roots, deactivated_users, deactivated_properties and key_credential_attempts (insert-only) and lock_audit_heads (the linker's): {updatable:?}"
    );

    let app = pool(&db.app_url, 1).await?;
    let mut tx = begin_as(&app, Some(a)).await?;
    let (ta, tb) = (a.to_string(), b.to_string());
    for table in TENANT_TABLES {
        let own: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE tenant_id = $1::uuid"
        ))
        .bind(&ta)
        .fetch_one(&mut *tx)
        .await?;
        ensure!(own > 0, "{table}: the seed wrote no row for tenant A");
        let theirs: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE tenant_id = $1::uuid"
        ))
        .bind(&tb)
        .fetch_one(&mut *tx)
        .await?;
        assert_eq!(
            theirs, 0,
            "{table}: tenant B's rows are visible under tenant A"
        );
        let all_visible: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE tenant_id <> $1::uuid"
        ))
        .bind(&ta)
        .fetch_one(&mut *tx)
        .await?;
        assert_eq!(all_visible, 0, "{table}: other tenants' rows are visible");

        if updatable.iter().any(|t| t == table) {
            let n = sqlx::query(&format!(
                "UPDATE {table} SET tenant_id = tenant_id WHERE tenant_id = $1::uuid"
            ))
            .bind(&tb)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            assert_eq!(n, 0, "{table}: an update reached tenant B's rows");
            // Moving an own row to tenant B breaks WITH CHECK.
            let msg = expect_refused(
                &mut tx,
                &format!("UPDATE {table} SET tenant_id = $1::uuid WHERE tenant_id = $2::uuid"),
                &[tb.clone(), ta.clone()],
                "42501",
            )
            .await?;
            ensure!(msg.contains("row-level security"), "{table}: {msg}");
        }

        // A copy of an own row relabelled as tenant B is refused by WITH CHECK (checked
        // before unique keys, so the copied key does not matter).
        let msg = expect_refused(
            &mut tx,
            &format!(
                "INSERT INTO {table} SELECT (jsonb_populate_record(NULL::{table}, to_jsonb(r) || jsonb_build_object('tenant_id', $1::text))).* FROM {table} r WHERE r.tenant_id = $2::uuid LIMIT 1"
            ),
            &[tb.clone(), ta.clone()],
            "42501",
        )
        .await?;
        if insertable.iter().any(|t| t == table) {
            ensure!(msg.contains("row-level security"), "{table}: {msg}");
        } else {
            ensure!(msg.contains("permission denied"), "{table}: {msg}");
        }
    }
    tx.commit().await?;

    // Without a tenant, nothing is visible.
    let mut tx = begin_as(&app, None).await?;
    for table in TENANT_TABLES {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut *tx)
            .await?;
        assert_eq!(n, 0, "{table}: rows visible without a tenant");
    }
    tx.commit().await?;
    app.close().await;
    Ok(())
}

/// DESIGN §5: the tenant is set with `set_config(…, true)`, so it ends with the
/// transaction and a pooled connection carries no tenant into the next one.
#[tokio::test]
async fn pooled_connection_carries_no_tenant_into_next_transaction() -> anyhow::Result<()> {
    let db = shared_pg_database().await?;
    let store = db.connect_store(test_cipher(), 1).await?;
    let a = TenantId::generate();
    seed_everything(&store, a).await?;

    // One connection, so both transactions run on it.
    let app = pool(&db.app_url, 1).await?;
    let mut tx = begin_as(&app, Some(a)).await?;
    let pid1: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM key_credentials")
        .fetch_one(&mut *tx)
        .await?;
    assert_eq!(n, 2, "the seed's guest and master credentials");
    tx.commit().await?;

    let mut tx = begin_as(&app, None).await?;
    let pid2: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await?;
    assert_eq!(pid1, pid2, "same pooled connection");
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('app.tenant_id', true)")
            .fetch_one(&mut *tx)
            .await?;
    ensure!(
        setting.as_deref().unwrap_or("").is_empty(),
        "tenant leaked: {setting:?}"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM key_credentials")
        .fetch_one(&mut *tx)
        .await?;
    assert_eq!(n, 0);
    tx.commit().await?;

    // The store's own pool behaves the same (it has one connection here).
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('app.tenant_id', true)")
            .fetch_one(store.app_pool())
            .await?;
    ensure!(
        setting.as_deref().unwrap_or("").is_empty(),
        "store pool leaked tenant: {setting:?}"
    );
    app.close().await;
    Ok(())
}

/// The audit trail is append-only for the service role: UPDATE and DELETE are refused.
#[tokio::test]
async fn lock_audit_is_append_only_for_the_service_role() -> anyhow::Result<()> {
    let db = shared_pg_database().await?;
    let store = db.connect_store(test_cipher(), 1).await?;
    let a = TenantId::generate();
    seed_everything(&store, a).await?;

    let app = pool(&db.app_url, 1).await?;
    let mut tx = begin_as(&app, Some(a)).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM lock_audit")
        .fetch_one(&mut *tx)
        .await?;
    assert_eq!(n, 1);
    for sql in [
        "UPDATE lock_audit SET reason = 'rewritten' WHERE tenant_id = $1::uuid",
        "DELETE FROM lock_audit WHERE tenant_id = $1::uuid",
    ] {
        let msg = expect_refused(&mut tx, sql, &[a.to_string()], "42501").await?;
        ensure!(msg.contains("permission denied"), "{sql}: {msg}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM lock_audit")
        .fetch_one(&mut *tx)
        .await?;
    assert_eq!(n, 1);
    tx.commit().await?;
    app.close().await;
    Ok(())
}

/// Migrations are recorded and running them again is a no-op.
#[tokio::test]
async fn pg_migrate_twice_is_a_no_op() -> anyhow::Result<()> {
    let db = shared_pg_database().await?;
    lockstep_persistence::pg::migrate(&db.owner_url).await?;
    let owner = pool(&db.owner_url, 1).await?;
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _lockstep_migrations ORDER BY version")
            .fetch_all(&owner)
            .await
            .context("migrations table")?;
    let expected: Vec<i64> = lockstep_persistence::migrate::POSTGRES
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, expected);
    owner.close().await;
    Ok(())
}

/// Migration 0002 backfills the I-9 copies of the room links of credentials written under
/// 0001 (FORCE RLS would hide them from the owner), 0020 turns their state into liveness,
/// and the exclusion constraint then guards them.
#[tokio::test]
async fn pg_migration_0002_backfills_room_links_of_existing_credentials() -> anyhow::Result<()> {
    use lockstep_persistence::testing::{admin_url, DB_PREFIX};
    use lockstep_persistence::{migrate, StoreError};
    use std::str::FromStr;

    let admin = sqlx::postgres::PgConnectOptions::from_str(&admin_url())?;
    let name = format!(
        "{DB_PREFIX}{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let admin_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin.clone())
        .await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&admin_pool)
        .await?;
    admin_pool.close().await;
    let owner_url = sqlx::ConnectOptions::to_url_lossy(&admin.clone().database(&name)).to_string();

    // The schema as 0001 left it, with data.
    let owner = pool(&owner_url, 1).await?;
    sqlx::raw_sql(
        "CREATE TABLE _lockstep_migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&owner)
    .await?;
    sqlx::raw_sql(migrate::POSTGRES[0].sql)
        .execute(&owner)
        .await?;
    sqlx::query("INSERT INTO _lockstep_migrations (version, name) VALUES (1, 'init')")
        .execute(&owner)
        .await?;
    let tenant = TenantId::generate();
    let mut tx = begin_as(&owner, Some(tenant)).await?;
    for (id, holder, rsv, staff, state) in [
        ("kc_a", "guest", Some("rsv-a"), None, "active"),
        ("kc_m", "staff_master", None, Some("staff-1"), "active"),
        ("kc_r", "guest", Some("rsv-r"), None, "revoked"),
    ] {
        sqlx::query(
            "INSERT INTO key_credentials (id, tenant_id, property_id, holder_kind, reservation_id, guest_id, staff_user_id, kind, valid_from, valid_until, state, vendor, vendor_adapter_id, idempotency_key, created_at, updated_at) \
             VALUES ($1, $2, 'prop-1', $3, $4, CASE WHEN $4::text IS NULL THEN NULL ELSE 'guest-1' END, $5, 'pin_code', $6, $7, $8, 'ttlock', 'vad_1', $1, $6, $6)",
        )
        .bind(id)
        .bind(tenant.as_uuid())
        .bind(holder)
        .bind(rsv)
        .bind(staff)
        .bind(crate::support::day(0))
        .bind(crate::support::day(4))
        .bind(state)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO key_credential_rooms (tenant_id, key_credential_id, room_id) VALUES ($1, $2, 'r101')")
            .bind(tenant.as_uuid())
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;

    lockstep_persistence::pg::migrate(&owner_url).await?;

    let mut tx = begin_as(&owner, Some(tenant)).await?;
    let rows = sqlx::query(
        "SELECT key_credential_id, property_id, reservation_id, is_master, live, lower(validity) AS f, upper(validity) AS u, lower_inc(validity) AS li, upper_inc(validity) AS ui \
         FROM key_credential_rooms ORDER BY key_credential_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    owner.close().await;
    let got: Vec<(String, String, Option<String>, bool, bool)> = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get("key_credential_id")?,
                r.try_get("property_id")?,
                r.try_get("reservation_id")?,
                r.try_get("is_master")?,
                r.try_get("live")?,
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
                true
            ),
            ("kc_m".into(), "prop-1".into(), None, true, true),
            (
                "kc_r".into(),
                "prop-1".into(),
                Some("rsv-r".into()),
                false,
                false
            ),
        ]
    );
    for r in &rows {
        assert_eq!(
            r.try_get::<chrono::DateTime<chrono::Utc>, _>("f")?,
            crate::support::day(0)
        );
        assert_eq!(
            r.try_get::<chrono::DateTime<chrono::Utc>, _>("u")?,
            crate::support::day(4)
        );
        ensure!(
            r.try_get::<bool, _>("li")? && !r.try_get::<bool, _>("ui")?,
            "[)"
        );
    }

    // The backfilled link now holds r101 against another reservation's stay.
    let db = lockstep_persistence::testing::PgTestDb {
        name: name.clone(),
        owner_url: owner_url.clone(),
        app_url: sqlx::ConnectOptions::to_url_lossy(
            &admin
                .clone()
                .database(&name)
                .username("lockstep_app")
                .password("lockstep_app"),
        )
        .to_string(),
        worker_url: sqlx::ConnectOptions::to_url_lossy(
            &admin
                .clone()
                .database(&name)
                .username("lockstep_worker")
                .password("lockstep_worker"),
        )
        .to_string(),
    };
    let store = db.connect_store(test_cipher(), 1).await?;
    let reg = crate::support::Registry {
        tenant,
        adapter: lockstep_domain::VendorAdapterId::generate(),
        devices: [
            lockstep_domain::LockDeviceId::generate(),
            lockstep_domain::LockDeviceId::generate(),
        ],
    };
    let c = crate::support::stay(
        &reg,
        &crate::support::reservation(),
        &["r101"],
        crate::support::day(2),
        crate::support::day(3),
    )?;
    let res = lockstep_persistence::Store::commit(
        &store,
        crate::support::insert(c.snapshot(), crate::support::t0()),
    )
    .await;
    ensure!(matches!(res, Err(StoreError::Overlap)), "{res:?}");
    Ok(())
}

/// DESIGN §12: the audit chain shows any edit, deletion, insertion or reordering made
/// behind the service's back (here by the table owner, who is not bound by its grants).
#[tokio::test]
async fn a_tampered_audit_chain_is_detected_at_the_tampered_row() -> anyhow::Result<()> {
    use lockstep_persistence::audit::{row_hash, verify_chain, ChainFault};
    let db = shared_pg_database().await?;
    let store = db.connect_store(test_cipher(), 1).await?;
    let tenant = TenantId::generate();
    let credential = lockstep_domain::KeyCredentialId::generate();
    for i in 0..5 {
        let mut uow = UnitOfWork::new(tenant, None, day(i));
        uow.audit.push(audit_row(tenant, &credential, day(i)));
        store.commit(uow).await?;
    }
    lockstep_persistence::audit::link_chain(&store, tenant, &property()).await?;
    let chain = store.audit_chain(tenant, &property()).await?;
    assert_eq!(chain.len(), 5);
    assert_eq!(verify_chain(&chain).0, vec![], "intact");

    let owner = pool(&db.owner_url, 1).await?;
    // each tampering runs in a transaction that is rolled back after the check
    let check = |statements: &'static [&'static str], bind: String| {
        let (owner, property) = (owner.clone(), property());
        async move {
            let mut tx = begin_as(&owner, Some(tenant)).await?;
            for sql in statements {
                let n = sqlx::query(sql)
                    .bind(&bind)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                ensure!(n >= 1, "{sql} changed nothing");
            }
            // read the chain as the verifier would, inside the tampering transaction
            let chain = read_chain(&mut tx, tenant, &property).await?;
            tx.rollback().await?;
            anyhow::Ok(verify_chain(&chain).0)
        }
    };
    let t = tenant.to_string();
    let edited = check(
        &["UPDATE lock_audit SET reason = 'nothing to see' WHERE tenant_id = $1::uuid AND chain_seq = 3"],
        t.clone(),
    )
    .await?;
    assert_eq!(edited, vec![ChainFault::Content { seq: 3 }], "edit");
    let deleted = check(
        &["DELETE FROM lock_audit WHERE tenant_id = $1::uuid AND chain_seq = 2"],
        t.clone(),
    )
    .await?;
    assert!(
        deleted.contains(&ChainFault::Sequence {
            expected: 2,
            found: 3
        }) && deleted.contains(&ChainFault::Link { seq: 3 }),
        "delete: {deleted:?}"
    );
    let reordered = check(
        &[
            "UPDATE lock_audit SET chain_seq = 100 WHERE tenant_id = $1::uuid AND chain_seq = 2",
            "UPDATE lock_audit SET chain_seq = 2 WHERE tenant_id = $1::uuid AND chain_seq = 4",
            "UPDATE lock_audit SET chain_seq = 4 WHERE tenant_id = $1::uuid AND chain_seq = 100",
        ],
        t.clone(),
    )
    .await?;
    assert!(
        reordered.contains(&ChainFault::Link { seq: 2 }),
        "reorder: {reordered:?}"
    );
    // an inserted row, even one whose own hash is right, does not link into the chain
    let mut forged = audit_row(tenant, &credential, day(2));
    forged.reason = Some("forged".into());
    let prev = &chain[1].row_hash;
    let hash = row_hash(prev, 3, &forged);
    let inserted = {
        let mut tx = begin_as(&owner, Some(tenant)).await?;
        sqlx::query("UPDATE lock_audit SET chain_seq = chain_seq + 100 WHERE tenant_id = $1::uuid AND chain_seq >= 3")
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE lock_audit SET chain_seq = chain_seq - 99 WHERE tenant_id = $1::uuid AND chain_seq >= 100")
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO lock_audit (id, tenant_id, property_id, key_credential_id, actor_kind, action, reason, vendor, trace_id, created_at, payload, chain_seq, prev_hash, row_hash) \
             VALUES ($1, $2::uuid, $3, $4, 'saga', 'requested', 'forged', 'ttlock', 'trace-1', $5, $6, 3, $7, $8)",
        )
        .bind(&forged.id)
        .bind(&t)
        .bind(property().as_str())
        .bind(credential.as_str())
        .bind(forged.created_at)
        .bind(&forged.payload)
        .bind(prev)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        let chain = read_chain(&mut tx, tenant, &property()).await?;
        tx.rollback().await?;
        verify_chain(&chain).0
    };
    // the forged row itself checks out; everything from the row after it does not (its
    // link, and the moved rows' numbers, which their hashes cover)
    assert_eq!(
        inserted.first(),
        Some(&ChainFault::Link { seq: 4 }),
        "insert: {inserted:?}"
    );
    assert!(
        inserted.iter().all(|f| matches!(
            f,
            ChainFault::Link { seq } | ChainFault::Content { seq } if *seq >= 4
        )),
        "insert: {inserted:?}"
    );
    // nothing of it stayed
    assert_eq!(
        verify_chain(&store.audit_chain(tenant, &property()).await?).0,
        vec![]
    );
    owner.close().await;
    Ok(())
}

/// The chain as stored, read inside `tx` (the store's own reader runs in its own).
async fn read_chain(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    property: &lockstep_domain::PropertyId,
) -> anyhow::Result<Vec<lockstep_persistence::audit::ChainedAuditRow>> {
    let rows = sqlx::query(
        "SELECT id, key_credential_id, device_id, actor_kind, action, reason, vendor, trace_id, created_at, payload, chain_seq, prev_hash, row_hash \
         FROM lock_audit WHERE tenant_id = $1::uuid AND property_id = $2 AND chain_seq IS NOT NULL ORDER BY chain_seq",
    )
    .bind(tenant.to_string())
    .bind(property.as_str())
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(lockstep_persistence::audit::ChainedAuditRow {
                row: lockstep_persistence::AuditRow {
                    id: r.try_get("id")?,
                    tenant_id: tenant,
                    property_id: property.clone(),
                    credential_id: r
                        .try_get::<Option<String>, _>("key_credential_id")?
                        .map(|c| lockstep_domain::KeyCredentialId::parse(&c))
                        .transpose()
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?,
                    device_id: None,
                    actor_kind: r.try_get("actor_kind")?,
                    action: r.try_get("action")?,
                    reason: r.try_get("reason")?,
                    vendor: r
                        .try_get::<Option<String>, _>("vendor")?
                        .map(|v| lockstep_domain::VendorCode::parse(&v))
                        .transpose()
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?,
                    trace_id: r.try_get("trace_id")?,
                    created_at: r.try_get("created_at")?,
                    payload: r.try_get("payload")?,
                },
                seq: r.try_get("chain_seq")?,
                prev_hash: r.try_get("prev_hash")?,
                row_hash: r.try_get("row_hash")?,
            })
        })
        .collect()
}

/// DESIGN §12: someone who can write the database edits a row and recomputes every later
/// hash and the head, so the chain links again; the signed root, made with a key held
/// outside the database, no longer matches the rows it covers, and a root re-signed by
/// another key is refused too.
#[tokio::test]
async fn a_recomputed_chain_is_caught_by_the_signed_root() -> anyhow::Result<()> {
    use lockstep_persistence::audit::{row_hash, seal_chains, verify_all, verify_chain};
    let db = shared_pg_database().await?;
    let store = db.connect_store(test_cipher(), 1).await?;
    let tenant = TenantId::generate();
    let credential = lockstep_domain::KeyCredentialId::generate();
    for i in 0..4 {
        let mut uow = UnitOfWork::new(tenant, None, day(i));
        uow.audit.push(audit_row(tenant, &credential, day(i)));
        store.commit(uow).await?;
    }
    lockstep_persistence::audit::link_chain(&store, tenant, &property()).await?;
    let key = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let sealed = seal_chains(&store, &key, day(5)).await?;
    let ours: Vec<_> = sealed.iter().filter(|s| s.tenant_id == tenant).collect();
    assert_eq!(ours.len(), 1);
    assert_eq!((ours[0].from_seq, ours[0].to_seq), (1, 4));
    let mine = |reports: Vec<lockstep_persistence::audit::ChainReport>| {
        reports
            .into_iter()
            .find(|r| r.tenant_id == tenant)
            .expect("the tenant's chain")
    };
    let report = mine(verify_all(&store, &key.verifying_key()).await?);
    assert!(report.intact(), "{report:?}");
    assert_eq!((report.rows, report.sealed_rows), (4, 4));
    // nothing new: sealing again writes nothing for this chain
    assert!(seal_chains(&store, &key, day(6))
        .await?
        .iter()
        .all(|s| s.tenant_id != tenant));

    // the edit, with the chain recomputed from the edited row on
    let owner = pool(&db.owner_url, 1).await?;
    let mut tx = begin_as(&owner, Some(tenant)).await?;
    sqlx::query(
        "UPDATE lock_audit SET reason = 'rewritten' WHERE tenant_id = $1::uuid AND chain_seq = 2",
    )
    .bind(tenant.to_string())
    .execute(&mut *tx)
    .await?;
    let mut chain = read_chain(&mut tx, tenant, &property()).await?;
    let mut prev = chain[0].row_hash.clone();
    for r in chain.iter_mut().skip(1) {
        r.prev_hash = prev.clone();
        r.row_hash = row_hash(&prev, r.seq, &r.row);
        sqlx::query("UPDATE lock_audit SET prev_hash = $2, row_hash = $3 WHERE tenant_id = $1::uuid AND chain_seq = $4")
            .bind(tenant.to_string())
            .bind(&r.prev_hash)
            .bind(&r.row_hash)
            .bind(r.seq)
            .execute(&mut *tx)
            .await?;
        prev = r.row_hash.clone();
    }
    sqlx::query("UPDATE lock_audit_heads SET head_hash = $2 WHERE tenant_id = $1::uuid")
        .bind(tenant.to_string())
        .bind(&prev)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    owner.close().await;
    assert_eq!(
        verify_chain(&store.audit_chain(tenant, &property()).await?).0,
        vec![],
        "the recomputed chain links"
    );
    let report = mine(verify_all(&store, &key.verifying_key()).await?);
    assert!(!report.intact());
    assert_eq!(report.bad_seals, vec![(1, 4, "rows it covers changed")]);
    // a verifier holding another public key accepts none of it
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
    let report = mine(verify_all(&store, &other).await?);
    assert_eq!(report.bad_seals, vec![(1, 4, "signed by another key")]);
    Ok(())
}

/// Issue 11: a step's audit rows take no lock another step of the same property waits for.
/// The second writer appends and commits while the first still holds its transaction
/// open (before, it waited on the chain's head until the first committed); the linker
/// then links every row of both, gap-free. The worker role may write a row's link
/// columns and nothing else of it.
#[tokio::test]
async fn audit_writers_of_one_property_do_not_wait_on_each_other() -> anyhow::Result<()> {
    use lockstep_persistence::audit::{link_chain, verify_chain};
    use lockstep_persistence::tables::AuditTable;
    use lockstep_persistence::Storage;
    let db = shared_pg_database().await?;
    let store = db.connect_store(test_cipher(), 3).await?;
    let tenant = TenantId::generate();
    let credential = lockstep_domain::KeyCredentialId::generate();
    let mut first = store.begin(tenant, None).await?;
    first
        .append_audit(&[audit_row(tenant, &credential, day(1))])
        .await?;
    let second = async {
        let mut tx = store.begin(tenant, None).await?;
        tx.append_audit(&[
            audit_row(tenant, &credential, day(2)),
            audit_row(tenant, &credential, day(3)),
        ])
        .await?;
        tx.commit().await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), second)
        .await
        .context("the second writer waited on the first")??;
    first.commit().await?;

    assert_eq!(link_chain(&store, tenant, &property()).await?, 3);
    let chain = store.audit_chain(tenant, &property()).await?;
    assert_eq!(
        chain
            .iter()
            .map(|r| (r.seq, r.row.created_at))
            .collect::<Vec<_>>(),
        vec![(1, day(1)), (2, day(2)), (3, day(3))]
    );
    assert_eq!(verify_chain(&chain).0, vec![]);

    let worker = pool(&db.worker_url, 1).await?;
    let mut tx = begin_as(&worker, None).await?;
    let msg = expect_refused(
        &mut tx,
        "UPDATE lock_audit SET reason = 'rewritten' WHERE tenant_id = $1::uuid",
        &[tenant.to_string()],
        "42501",
    )
    .await?;
    ensure!(msg.contains("permission denied"), "{msg}");
    tx.rollback().await?;
    worker.close().await;
    Ok(())
}

/// Issue 11, statistics and indexes: `migrate` leaves every table analyzed, and the
/// statements of a saga step — intake, the mailbox, credentials, door truth, saga state,
/// the outbox, the timers — find an index for every table they read: on a database where
/// sequential scans are disabled (the planner then scans a table only when no index can
/// serve), running them through the store adds no sequential scan of a hot table.
#[tokio::test]
async fn migrate_analyzes_and_the_step_path_scans_no_hot_table() -> anyhow::Result<()> {
    let db = lockstep_persistence::testing::fresh_pg_database().await?;
    let owner = pool(&db.owner_url, 1).await?;
    let never: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_stat_user_tables WHERE last_analyze IS NULL AND last_autoanalyze IS NULL ORDER BY 1",
    )
    .fetch_all(&owner)
    .await?;
    ensure!(
        never.is_empty(),
        "tables never analyzed after migrate: {never:?}"
    );

    sqlx::raw_sql(&format!(
        "ALTER DATABASE {} SET enable_seqscan = off",
        db.name
    ))
    .execute(&owner)
    .await?;
    const HOT: &[&str] = &[
        "inbox",
        "mailbox",
        "key_credentials",
        "key_credential_rooms",
        "key_credential_devices",
        "key_credential_saga",
        "outbox",
        "lock_audit",
    ];
    let scans = |owner: PgPool| async move {
        let rows = sqlx::query(
            "SELECT relname::text AS t, seq_scan, coalesce(idx_scan, 0) AS idx_scan FROM pg_stat_user_tables WHERE relname = ANY($1)",
        )
        .bind(HOT)
        .fetch_all(&owner)
        .await?;
        anyhow::Ok(
            rows.iter()
                .map(|r| {
                    (
                        r.get::<String, _>("t"),
                        (r.get::<i64, _>("seq_scan"), r.get::<i64, _>("idx_scan")),
                    )
                })
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
    };
    let before = scans(owner.clone()).await?;

    {
        let store = db.connect_store(test_cipher(), 2).await?;
        let tenant = TenantId::generate();
        let seeded = seed_everything(&store, tenant).await?;
        let (credential, reservation) = (seeded.credential.id().clone(), seeded.reservation);
        let now = crate::support::t0();
        // the reads of a step, and of the timers and the outbox
        store
            .next_mailbox_entry(tenant, &seeded.subject, now)
            .await?;
        store
            .credentials_by_reservation(tenant, &reservation)
            .await?;
        store.credential_devices(tenant, &credential).await?;
        store.load_saga(tenant, &seeded.subject).await?;
        store
            .due_subjects(Some(0), now, 100, &["reservation.cancelled"])
            .await?;
        store
            .due_subjects(None, now, 100, &["reservation.cancelled"])
            .await?;
        store.mailbox_depth().await?;
        store.unpublished(now, 100).await?;
        lockstep_persistence::Storage::close(&store).await;
    }
    // the store's backends exit and flush their counters: wait until the index scans of
    // the mailbox (every step reads it) show, so the comparison below is not vacuous
    let idx = |m: &std::collections::BTreeMap<String, (i64, i64)>| m.get("mailbox").map(|c| c.1);
    let mut after = scans(owner.clone()).await?;
    for _ in 0..100 {
        if idx(&after) != idx(&before) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = scans(owner.clone()).await?;
    }
    ensure!(
        idx(&after) > idx(&before),
        "the store's index scans never showed in the statistics: {before:?} → {after:?}"
    );
    let scanned: Vec<_> = HOT
        .iter()
        .filter(|t| after.get(**t).map(|c| c.0) != before.get(**t).map(|c| c.0))
        .map(|t| format!("{t}: {:?} → {:?}", before.get(*t), after.get(*t)))
        .collect();
    ensure!(
        scanned.is_empty(),
        "sequential scans of hot tables with seqscan disabled (a statement without an index): {scanned:?}"
    );
    Ok(())
}

/// Issue 11: two nodes' linkers do not wait on each other. While one worker transaction
/// holds a chain's head (linking, not yet committed), the other's `link_pending` returns 0
/// at once instead of waiting for that commit (`SKIP LOCKED`); the rows are the holder's,
/// and once it commits nothing is left pending.
#[tokio::test]
async fn a_linker_skips_a_chain_another_linker_holds() -> anyhow::Result<()> {
    use lockstep_persistence::tables::AuditLinkTable;
    use lockstep_persistence::Storage;
    let db = shared_pg_database().await?;
    let store = db.connect_store(test_cipher(), 3).await?;
    let tenant = TenantId::generate();
    let credential = lockstep_domain::KeyCredentialId::generate();
    for i in 1..=4 {
        let mut uow = UnitOfWork::new(tenant, None, day(i));
        uow.audit.push(audit_row(tenant, &credential, day(i)));
        store.commit(uow).await?;
        if i == 1 {
            // the chain's head exists (a new head's insert is waited for like any key)
            let mut w = store.worker().await?;
            assert_eq!(w.link_pending(tenant, &property(), 10).await?, 1);
            w.commit().await?;
        }
    }
    let mut holder = store.worker().await?;
    assert_eq!(holder.link_pending(tenant, &property(), 2).await?, 2);
    let other = async {
        let mut w = store.worker().await?;
        let n = w.link_pending(tenant, &property(), 10).await?;
        w.commit().await?;
        anyhow::Ok(n)
    };
    let skipped = tokio::time::timeout(std::time::Duration::from_secs(5), other)
        .await
        .context("the second linker waited on the first")??;
    assert_eq!(skipped, 0, "the held chain is skipped");
    assert_eq!(holder.link_pending(tenant, &property(), 10).await?, 1);
    holder.commit().await?;
    let chain = store.audit_chain(tenant, &property()).await?;
    assert_eq!(
        chain.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    Ok(())
}
