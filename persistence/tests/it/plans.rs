//! Issue 11, "Statistics": on a database loaded like a busy fleet's and analyzed as
//! `migrate` and the seeding path leave it, the statements of the hot path read the tables
//! that grow with traffic through an index. Every statement the store runs for one
//! saga's steps (intake, the step's reads and commit, the outbox, the audit linker, the
//! node's timers and gauges) is `EXPLAIN`ed with its own arguments
//! (`lockstep_persistence::testing::plans`); a sequential scan of a growing table fails
//! the test and names the statement. Postgres only: SQLite plans are not what production
//! runs.

use anyhow::{ensure, Context};
use lockstep_domain::{KeyCredentialState, TenantId};
use lockstep_persistence::testing::plans::{self, Planned};
use lockstep_persistence::testing::{shared_pg_database, test_cipher, PgTestDb};
use lockstep_persistence::{
    InternalEvent, MailboxUpdate, MasterKeyWrite, PgStore, ScheduleDrive, Store, StoreError,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

use crate::support::{
    audit_row, day, device_write, insert, intake_msg, master_credential, master_key, outbox_row,
    property, reservation, seed_registry, set_state, stay, subject_of, t0, Registry,
};

/// Tables whose rows grow with traffic: a sequential scan of one of them is a plan that
/// gets slower every day the service runs.
const GROWING: &[&str] = &[
    "inbox",
    "mailbox",
    "outbox",
    "key_credentials",
    "key_credential_rooms",
    "key_credential_devices",
    "key_credential_saga",
    "key_credential_attempts",
    "lock_audit",
    "master_keys",
    "webhook_inbox",
];

/// Rows of the rest of the fleet in each growing table.
const FLEET_ROWS: i64 = 20_000;

/// The hot path's statements on a loaded, analyzed database use indexes.
#[tokio::test]
async fn hot_path_statements_read_growing_tables_through_indexes() -> anyhow::Result<()> {
    let db = shared_pg_database().await?;
    let (store, owner, reg) = loaded(db, 40).await?;

    let (worked, planned) = plans::capture(hot_path(&store, &reg)).await;
    worked?;

    ensure!(
        planned.len() >= 30,
        "the capture saw only {} statements: is the store still running them through its transactions?",
        planned.len()
    );
    let scans: Vec<String> = planned
        .iter()
        .filter_map(|p| {
            let tables: Vec<String> = p
                .seq_scans()
                .into_iter()
                .filter(|t| GROWING.contains(&t.as_str()))
                .collect();
            (!tables.is_empty()).then(|| format!("{tables:?} by `{}`", p.sql))
        })
        .collect();
    ensure!(
        scans.is_empty(),
        "{} of {} hot-path statements scan a growing table sequentially:\n{}",
        scans.len(),
        planned.len(),
        scans.join("\n")
    );
    owner.close().await;
    Ok(())
}

/// The check can fail: without the index `0019` adds, an operator command's wait for
/// its outcome (`message_outcome`) reads the mailbox sequentially, and the plan says so.
#[tokio::test]
async fn a_missing_index_shows_as_a_sequential_scan() -> anyhow::Result<()> {
    // its own database: the index it drops must not go missing under other tests
    let db = lockstep_persistence::testing::fresh_pg_database().await?;
    let (store, owner, reg) = loaded(&db, 1).await?;
    let tenant = reg.tenant;

    let lookup = || async {
        store
            .message_outcome(tenant, "msg-that-is-not-there")
            .await
            .map(|o| o.is_none())
    };
    let (absent, with_index) = plans::capture(lookup()).await;
    ensure!(absent?, "an unknown message id has no outcome");
    let scans = |planned: &[Planned]| -> Vec<String> {
        planned.iter().flat_map(Planned::seq_scans).collect()
    };
    ensure!(
        scans(&with_index).is_empty(),
        "with ix_mailbox_message the lookup uses it: {:?}",
        with_index.iter().map(|p| &p.plan).collect::<Vec<_>>()
    );

    sqlx::raw_sql("DROP INDEX ix_mailbox_message; ANALYZE")
        .execute(&owner)
        .await?;
    let (absent, without) = plans::capture(lookup()).await;
    ensure!(absent?, "an unknown message id has no outcome");
    ensure!(
        scans(&without).iter().any(|t| t == "mailbox"),
        "without ix_mailbox_message the lookup should scan mailbox; plans: {:?}",
        without.iter().map(|p| &p.plan).collect::<Vec<_>>()
    );
    owner.close().await;
    Ok(())
}

/// A store on `db` loaded like a busy fleet's and analyzed: another tenant's saga and
/// master key copied [`FLEET_ROWS`] times into every growing table, and `sagas` sagas of
/// a new tenant (its registry returned) through the store; with an owner pool.
async fn loaded(db: &PgTestDb, sagas: i64) -> anyhow::Result<(PgStore, PgPool, Registry)> {
    let store = db.connect_store(test_cipher(), 4).await?;
    let owner = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.owner_url)
        .await?;
    let fleet = TenantId::generate();
    let fleet_reg = seed_registry(&store, fleet).await?;
    one_saga(&store, &fleet_reg, 0).await?;
    one_master_key(&store, &fleet_reg).await?;
    load_fleet(&owner, fleet).await?;
    let reg = seed_registry(&store, TenantId::generate()).await?;
    for i in 1..=sagas {
        one_saga(&store, &reg, i).await?;
    }
    sqlx::raw_sql("ANALYZE").execute(&owner).await?;
    Ok((store, owner, reg))
}

/// A master key of `reg`'s staff member `staff-1` on r101, through the store.
async fn one_master_key(store: &PgStore, reg: &Registry) -> anyhow::Result<()> {
    let master = master_credential(reg, "staff-1", &["r101"], day(0), day(1))?;
    let mut uow = insert(master.snapshot(), t0());
    uow.master = Some(MasterKeyWrite::Insert(master_key(&master, "floors")));
    store.commit(uow).await?;
    Ok(())
}

/// One reservation's saga through the store, as the engine writes it: intake, the
/// credential with its door row, saga state, an outbox and an audit row, the entry done;
/// then the credential active. Each saga has its own day, so no two overlap (I-9).
async fn one_saga(store: &PgStore, reg: &Registry, i: i64) -> anyhow::Result<String> {
    let r = reservation();
    let subject = subject_of(&r);
    let msg = intake_msg(reg.tenant, &subject, (i % 8) as i32, t0());
    store.intake(&msg, None).await?;
    let entry = store
        .next_mailbox_entry(reg.tenant, &subject, day(400))
        .await?
        .context("the intake's mailbox entry")?;
    let c = stay(reg, &r, &["r101"], day(2 * i), day(2 * i + 1))?;
    let mut uow = insert(c.snapshot(), t0());
    uow.devices
        .push(device_write(c.id(), &reg.devices[0], Some("482913"), None)?);
    uow.saga = Some((subject.clone(), serde_json::json!({ "step": "requested" })));
    uow.outbox
        .push(outbox_row(reg.tenant, c.id().as_str(), t0()));
    uow.audit.push(audit_row(reg.tenant, c.id(), t0()));
    uow.mailbox.push(MailboxUpdate::Done {
        id: entry.id,
        subject: entry.subject.clone(),
        outcome: "applied".into(),
    });
    uow.schedule.push(ScheduleDrive {
        property_id: property(),
        partition: entry.partition,
        subject: subject.clone(),
        credential_id: c.id().clone(),
        due_at: t0(),
    });
    store.commit(uow).await?;
    set_state(store, &c, KeyCredentialState::Pending, t0()).await?;
    Ok(subject)
}

/// Copies the fleet tenant's one saga and master key `FLEET_ROWS` times into every growing table, under
/// the fleet tenant (RLS lets the owner role write only the tenant it names), with fresh
/// keys, the copies finished (credentials revoked, entries done, rows published).
async fn load_fleet(owner: &PgPool, fleet: TenantId) -> anyhow::Result<()> {
    let mut tx = owner.begin().await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(fleet.to_string())
        .execute(&mut *tx)
        .await?;
    // (table, the template row, columns left to their defaults, column → expression of
    // the copy `g`)
    type Copy<'a> = (&'a str, &'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let copies: &[Copy] = &[
        (
            "key_credentials",
            "holder_kind = 'guest'",
            &[],
            &[
                ("id", "'kcf_' || g"),
                ("idempotency_key", "'idem-fleet-' || g"),
                ("reservation_id", "'rsv-fleet-' || g"),
                ("state", "'revoked'"),
            ],
        ),
        (
            "key_credentials",
            "holder_kind = 'staff_master'",
            &[],
            &[
                ("id", "'kcm_' || g"),
                ("idempotency_key", "'idem-fleet-master-' || g"),
                ("staff_user_id", "'staff-fleet-' || g"),
                ("state", "'revoked'"),
            ],
        ),
        (
            "master_keys",
            "true",
            &[],
            &[
                ("id", "'mkf_' || g"),
                ("key_credential_id", "'kcm_' || g"),
                ("staff_user_id", "'staff-fleet-' || g"),
                ("revoked_at", "now()"),
            ],
        ),
        (
            "key_credential_rooms",
            "NOT is_master",
            &[],
            &[
                ("key_credential_id", "'kcf_' || g"),
                ("reservation_id", "'rsv-fleet-' || g"),
                ("live", "false"),
            ],
        ),
        (
            "key_credential_devices",
            "true",
            &[],
            &[
                ("key_credential_id", "'kcf_' || g"),
                ("desired", "'absent'"),
                ("sync", "'confirmed'"),
            ],
        ),
        (
            "key_credential_saga",
            "true",
            &[],
            &[("subject", "'reservation:rsv-fleet-' || g")],
        ),
        ("inbox", "true", &[], &[("message_id", "'msg-fleet-' || g")]),
        (
            "mailbox",
            "kind = 'event'",
            &["id"],
            &[
                ("message_id", "'msg-fleet-' || g"),
                ("subject", "'reservation:rsv-fleet-' || g"),
                ("credential_id", "'kcf_' || g"),
                ("done_at", "now()"),
                ("outcome", "'applied'"),
            ],
        ),
        (
            "outbox",
            "true",
            &[],
            &[("id", "'obf_' || g"), ("published_at", "now()")],
        ),
        (
            "lock_audit",
            "true",
            &[],
            &[("id", "'auf_' || g"), ("key_credential_id", "'kcf_' || g")],
        ),
    ];
    for (table, template, defaults, overrides) in copies {
        let columns: Vec<String> = sqlx::query(
            "SELECT column_name::text AS c FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.get::<String, _>("c"))
        .filter(|c| !defaults.contains(&c.as_str()))
        .collect();
        ensure!(!columns.is_empty(), "table {table} has no columns");
        let exprs: Vec<String> = columns
            .iter()
            .map(|c| {
                overrides
                    .iter()
                    .find(|(name, _)| name == c)
                    .map(|(_, e)| (*e).to_owned())
                    .unwrap_or_else(|| format!("t.{c}"))
            })
            .collect();
        let sql = format!(
            "INSERT INTO {table} ({}) SELECT {} FROM (SELECT * FROM {table} WHERE {template} LIMIT 1) t CROSS JOIN generate_series(1, {FLEET_ROWS}) g",
            columns.join(", "),
            exprs.join(", ")
        );
        let n = sqlx::query(&sql)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("copying the fleet's {table}"))?
            .rows_affected();
        ensure!(n as i64 == FLEET_ROWS, "{table}: {n} rows copied");
    }
    tx.commit().await?;
    Ok(())
}

/// One saga's hot path for `reg`'s tenant, and the node's periodic work.
async fn hot_path(store: &PgStore, reg: &Registry) -> Result<(), StoreError> {
    let tenant = reg.tenant;
    let r = reservation();
    let subject = subject_of(&r);
    let msgs: Vec<_> = (0..4)
        .map(|i| {
            let s = if i == 0 {
                subject.clone()
            } else {
                subject_of(&reservation())
            };
            intake_msg(tenant, &s, 3, t0())
        })
        .collect();
    store.intake_batch(&msgs, None).await?;
    store.message_outcome(tenant, &msgs[0].message_id).await?;
    let entry = store
        .next_mailbox_entry(tenant, &subject, day(400))
        .await?
        .ok_or_else(|| StoreError::Database("no entry".into()))?;

    // the step's reads
    store.load_saga(tenant, &subject).await?;
    store.property_deactivated_at(tenant, &property()).await?;
    store.get_policy(tenant, &property()).await?;
    store.property_rooms(tenant, &property()).await?;
    store.area_devices(tenant, &property()).await?;
    store
        .devices_for_rooms(tenant, &property(), &[crate::support::room("r101")])
        .await?;
    store.credentials_by_reservation(tenant, &r).await?;
    store.user_deactivated_at(tenant, "staff-1").await?;
    store.active_masters_of_user(tenant, "staff-1").await?;

    // the step's commit: a credential, its door row, saga, outbox, audit, a drive and a timer
    let c = stay(reg, &r, &["r101"], day(300), day(301))
        .map_err(|e| StoreError::Database(e.to_string()))?;
    let mut uow = insert(c.snapshot(), t0());
    uow.devices.push(
        device_write(c.id(), &reg.devices[0], Some("482913"), None)
            .map_err(|e| StoreError::Database(e.to_string()))?,
    );
    uow.saga = Some((subject.clone(), serde_json::json!({ "step": "requested" })));
    uow.outbox.push(outbox_row(tenant, c.id().as_str(), t0()));
    uow.audit.push(audit_row(tenant, c.id(), t0()));
    uow.mailbox.push(MailboxUpdate::Done {
        id: entry.id,
        subject: entry.subject.clone(),
        outcome: "applied".into(),
    });
    uow.schedule.push(ScheduleDrive {
        property_id: property(),
        partition: 3,
        subject: subject.clone(),
        credential_id: c.id().clone(),
        due_at: t0(),
    });
    uow.events.push(InternalEvent {
        property_id: property(),
        partition: 3,
        subject: subject.clone(),
        topic: "lockstep.internal.expire".into(),
        payload: serde_json::json!({}),
        due_at: day(301),
    });
    store.commit(uow).await?;

    // the drive: the credential and its door rows read, then written active
    store.get_credential(tenant, c.id()).await?;
    store.credential_devices(tenant, c.id()).await?;
    store.master_by_credential(tenant, c.id()).await?;
    set_state(store, &c, KeyCredentialState::Pending, t0())
        .await
        .map_err(|e| StoreError::Database(e.to_string()))?;

    // the outbox, the audit linker, the fan-out's read
    let claimed = store
        .mark_published_then_claim(&[], t0(), day(1), 64)
        .await?;
    let ids: Vec<String> = claimed.iter().map(|r| r.id.clone()).collect();
    store
        .mark_published_then_claim(&ids, t0(), day(1), 64)
        .await?;
    lockstep_persistence::audit::link_chain(store, tenant, &property()).await?;
    store
        .credentials_of_property(tenant, &property(), &["requested", "pending", "active"])
        .await?;

    // the node's periodic work: timers and gauges
    store
        .due_subjects(Some(3), day(400), 100, &["reservation.cancelled"])
        .await?;
    store
        .due_subjects(None, day(400), 100, &["reservation.cancelled"])
        .await?;
    store.mailbox_depth().await?;
    store.outbox_lag().await?;
    store.door_backlog().await?;
    store
        .pending_removals(tenant, std::slice::from_ref(&reg.adapter))
        .await?;
    Ok(())
}
