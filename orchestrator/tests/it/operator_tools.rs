//! Issue 13, operator tools, through the real binary against a production node on Postgres
//! and RabbitMQ: `lockstep status` (and `GET /api/v1/status`) tells a running node's
//! state; `lockstep dlq list|show|replay` reads the dead-letter queue with each message's
//! reason, and a replay goes through intake's validation like a new message, is applied
//! once, and leaves the queue (must-show 5).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use lockstep_persistence::testing::fresh_pg_database;
use serde_json::Value;

use crate::harness::*;

const TENANT: &str = "3a9f0c1e-2b4d-4e6f-8a0b-1c2d3e4f5a6b";
const TOKEN: &str = "it-operator-token";
const PROPERTY: &str = "ppt_ops";
const LOCKS: [i64; 3] = [6101, 6102, 6103];
const CONFIRMED: &str = "melmastoon.reservation.confirmed.v1";
const ISSUED: &str = "melmastoon.lock.credential.issued.v1";
const REQUESTED: &str = "melmastoon.lock.credential.requested.v1";

fn prod_config(
    dir: &Path,
    db: &lockstep_persistence::testing::PgTestDb,
    vhost: &Vhost,
    sim: &lockstep_vendors::ttlock::RunningSimulator,
    node: &str,
) -> anyhow::Result<std::path::PathBuf> {
    write_production_config(
        dir,
        db,
        vhost,
        sim,
        &ProdConfig {
            node_id: node,
            token: TOKEN,
            tenant: TENANT,
            properties: vec![(PROPERTY, LOCKS.to_vec())],
            policy: None,
            adapter_base: 900,
            tick_ms: 250,
        },
    )
}

/// `[amqp.publishers]` must be the config's last table: appended.
fn with_publishers(config: &Path, reservation_owner: &str) -> anyhow::Result<()> {
    let toml = std::fs::read_to_string(config)?;
    let base = toml.split("\n[amqp.publishers]").next().unwrap_or(&toml);
    std::fs::write(
        config,
        format!(
            "{base}\n[amqp.publishers]\n\"melmastoon.reservation.\" = \"{reservation_owner}\"\n"
        ),
    )?;
    Ok(())
}

async fn status_json(node: &Lockstep, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
    let mut r = reqwest::Client::new().get(format!("{}/api/v1/status", node.http));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_readiness_breakers_backlog_outbox_and_partitions_of_a_running_node(
) -> anyhow::Result<()> {
    let dir = scratch("status");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let sim = simulator(&LOCKS)?;
    let config = prod_config(&dir, &db, &vhost, &sim, "it-status")?;
    let broker = Broker::connect(&vhost.url).await?;
    let produced = broker
        .collect("it.lock-events", "melmastoon.events", "melmastoon.lock.#")
        .await?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
    wait_ready(&node).await?;
    // one stay issued, so the vendor's breaker has been through a call
    broker
        .publish(
            CONFIRMED,
            &confirmed(
                "evt-status-1",
                TENANT,
                PROPERTY,
                "rsv_status_1",
                1,
                &["rmu_6101"],
                "2027-05-01T14:00:00Z",
                "2027-05-02T10:00:00Z",
            ),
        )
        .await?;
    wait_for("the stay issued", Duration::from_secs(60), || {
        let n = produced.key_ids(ISSUED).len();
        async move { (n == 1).then_some(()) }
    })
    .await?;

    assert_eq!(status_json(&node, None).await?.0, 401, "a token is needed");
    let (code, s) = wait_for(
        "the node owning every partition",
        Duration::from_secs(60),
        || async {
            let (code, s) = status_json(&node, Some(TOKEN)).await.ok()?;
            (s["partitions"]["owned"].as_array()?.len() == 4).then_some((code, s))
        },
    )
    .await?;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["nodeId"], "it-status");
    assert_eq!(s["ready"]["store"], true);
    assert_eq!(s["ready"]["bus"], true);
    assert_eq!(s["ready"]["draining"], false);
    assert_eq!(s["partitions"]["configured"], 4);
    assert!(
        s["breakers"].as_array().is_some_and(|b| b
            .iter()
            .any(|b| b["vendor"] == "ttlock" && b["state"] == "closed")),
        "{s}"
    );
    assert!(s["backlog"]["openMailboxEntries"].as_i64().is_some(), "{s}");
    assert!(s["outbox"]["unpublishedRows"].as_i64().is_some(), "{s}");
    assert_eq!(s["outbox"]["unroutableRows"], 0, "{s}");
    assert!(s["door"]["pendingRemovals"].as_i64().is_some(), "{s}");
    assert_eq!(s["relay"], Value::Null, "no relay runs in this process");
    assert_eq!(s["unavailable"], serde_json::json!([]));
    assert!(
        s["vendorAccountsHeld"]
            .as_array()
            .is_some_and(|h| h.iter().all(|h| h["accounts"] == 0)),
        "{s}"
    );

    // the command line asks the same node (the token from the config)
    let cfg = config.to_string_lossy().into_owned();
    let run = lockstep_cli(&["status", "--config", &cfg, "--url", &node.http, "--json"]).await?;
    assert!(run.ok, "{run:?}");
    let printed: Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(printed["partitions"]["configured"], 4);
    assert_eq!(printed["nodeId"], "it-status");
    let run = lockstep_cli(&["status", "--config", &cfg, "--url", &node.http]).await?;
    assert!(run.ok, "{run:?}");
    for line in [
        "node it-status",
        "breakers:      ttlock/sandbox closed",
        "partitions:    owns 4 of 4",
        "relay:         not running on this node",
        "accounts held: none",
    ] {
        assert!(run.stdout.contains(line), "{line:?} in\n{}", run.stdout);
    }
    let refused = lockstep_cli(&[
        "status", "--config", &cfg, "--url", &node.http, "--token", "wrong",
    ])
    .await?;
    assert!(!refused.ok && refused.stderr.contains("401"), "{refused:?}");
    println!("status:\n{}", run.stdout);
    Ok(())
}

async fn dlq_list(cfg: &str) -> anyhow::Result<Vec<Value>> {
    let run = lockstep_cli(&["dlq", "list", "--config", cfg, "--json"]).await?;
    anyhow::ensure!(run.ok, "dlq list failed: {run:?}");
    let v: Value = serde_json::from_str(&run.stdout)?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

async fn wait_dlq(cfg: &str, what: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    wait_for(what, Duration::from_secs(60), || async {
        let items = dlq_list(cfg).await.ok()?;
        (items.len() == n).then_some(items)
    })
    .await
}

fn reasons(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .filter_map(|i| i["reason"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_with_reasons_and_a_fixed_one_replays_once_and_is_applied_once(
) -> anyhow::Result<()> {
    let dir = scratch("dlq-tools");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let sim = simulator(&LOCKS)?;
    let config = prod_config(&dir, &db, &vhost, &sim, "it-dlq")?;
    // the reservation system's broker user, misspelt in Lockstep's config
    let reservations = BrokerUser::fresh(&vhost, "it-reservations")?;
    with_publishers(&config, "reservation-service")?;
    let cfg = config.to_string_lossy().into_owned();
    let watcher = Broker::connect(&vhost.url).await?;
    let produced = watcher
        .collect("it.lock-events", "melmastoon.events", "melmastoon.lock.#")
        .await?;
    let mut node = Lockstep::spawn(&dir, &["--config", &cfg], &[]).await?;
    wait_ready(&node).await?;

    let publisher = Broker::connect(&reservations.url).await?;
    let me = reservations.name.as_str();
    publisher
        .publish_as(CONFIRMED, b"this is not json", me)
        .await?;
    let mut v2: Value = serde_json::from_slice(&confirmed(
        "evt-dlq-v2",
        TENANT,
        PROPERTY,
        "rsv_dlq_v2",
        1,
        &["rmu_6102"],
        "2027-05-01T14:00:00Z",
        "2027-05-02T10:00:00Z",
    ))?;
    v2["subject"] = "melmastoon.reservation.confirmed.v2".into();
    publisher
        .publish_as(CONFIRMED, &serde_json::to_vec(&v2)?, me)
        .await?;
    // a good stay from the right user, refused for the config's typo: sent twice (the
    // publisher retried), the same envelope id both times
    let stay = confirmed(
        "evt-dlq-stay",
        TENANT,
        PROPERTY,
        "rsv_dlq_1",
        1,
        &["rmu_6103"],
        "2027-05-01T14:00:00Z",
        "2027-05-02T10:00:00Z",
    );
    for _ in 0..2 {
        publisher.publish_as(CONFIRMED, &stay, me).await?;
    }

    // listed with their reasons, and left in the queue by reading
    let items = wait_dlq(&cfg, "four dead letters", 4).await?;
    assert_eq!(
        reasons(&items),
        ["malformed", "unauthorized_publisher", "unknown_subject"]
            .map(String::from)
            .into()
    );
    for i in &items {
        assert_eq!(i["source"], "lockstep", "{i}");
        assert!(i["detail"].as_str().is_some_and(|d| !d.is_empty()), "{i}");
        assert_eq!(i["originalUserId"], me, "{i}");
    }
    let unauthorized: Vec<&Value> = items
        .iter()
        .filter(|i| i["reason"] == "unauthorized_publisher")
        .collect();
    assert_eq!(unauthorized.len(), 2);
    assert!(unauthorized
        .iter()
        .all(|i| i["subject"] == CONFIRMED && i["envelopeId"] == "evt-dlq-stay"));
    let unknown = items
        .iter()
        .find(|i| i["reason"] == "unknown_subject")
        .expect("listed");
    assert_eq!(unknown["subject"], "melmastoon.reservation.confirmed.v2");
    assert_eq!(dlq_list(&cfg).await?.len(), 4, "reading leaves them queued");
    let human = lockstep_cli(&["dlq", "list", "--config", &cfg]).await?;
    assert!(
        human.ok && human.stdout.contains("4 dead letter(s)"),
        "{human:?}"
    );
    let id = unauthorized[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let shown = lockstep_cli(&["dlq", "show", &id, "--config", &cfg]).await?;
    assert!(shown.ok, "{shown:?}");
    let shown: Value = serde_json::from_str(&shown.stdout)?;
    assert_eq!(
        shown["headers"]["x-lockstep-reason"],
        "unauthorized_publisher"
    );
    assert_eq!(shown["body"]["data"]["reservationId"], "rsv_dlq_1");
    assert_eq!(shown["bodyTruncated"], false);

    // a replay is judged by its original publisher: before the fix it is refused again
    let again = lockstep_cli(&[
        "dlq",
        "replay",
        &id,
        "--config",
        &cfg,
        "--operator",
        "it-operator",
        "--json",
    ])
    .await?;
    assert!(again.ok, "{again:?}");
    let items = wait_for(
        "the replay dead-lettered again",
        Duration::from_secs(60),
        || async {
            let items = dlq_list(&cfg).await.ok()?;
            items
                .iter()
                .any(|i| i["replayedBy"] == "it-operator")
                .then_some(items)
        },
    )
    .await?;
    assert_eq!(
        items.len(),
        4,
        "the original left, its refused replay came back"
    );
    let refused = items
        .iter()
        .find(|i| i["replayedBy"] == "it-operator")
        .expect("found above");
    assert_eq!(refused["reason"], "unauthorized_publisher");
    assert_eq!(
        refused["originalUserId"], me,
        "still the original publisher's"
    );
    assert!(produced.key_ids(REQUESTED).is_empty());

    // the config fixed, the node restarted: both copies replayed, applied once
    with_publishers(&config, me)?;
    let (status, _) = node.terminate(Duration::from_secs(60)).await?;
    assert!(status.success());
    node = Lockstep::spawn(&dir, &["--config", &cfg], &[]).await?;
    wait_ready(&node).await?;
    let run = lockstep_cli(&[
        "dlq",
        "replay",
        "--reason",
        "unauthorized_publisher",
        "--config",
        &cfg,
        "--operator",
        "it-operator",
        "--json",
    ])
    .await?;
    assert!(run.ok, "{run:?}");
    let replayed: Value = serde_json::from_str(&run.stdout)?;
    let replayed = replayed["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(replayed.len(), 2, "{replayed:?}");
    assert!(replayed
        .iter()
        .all(|r| r["outcome"] == "replayed" && r["auditId"].is_string()));
    wait_for("the stay issued", Duration::from_secs(60), || {
        let n = produced.key_ids(ISSUED).len();
        async move { (n == 1).then_some(()) }
    })
    .await?;
    let left = wait_dlq(&cfg, "the two unfixable ones left", 2).await?;
    assert_eq!(
        reasons(&left),
        ["malformed", "unknown_subject"].map(String::from).into()
    );
    // applied once: one credential, one requested.v1 and one issued.v1
    let http = reqwest::Client::new();
    let creds: Value = http
        .get(format!(
            "{}/api/v1/key-credentials?reservationId=rsv_dlq_1",
            node.http
        ))
        .bearer_auth(TOKEN)
        .header("x-tenant-id", TENANT)
        .send()
        .await?
        .json()
        .await?;
    let creds = creds["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(creds.len(), 1, "{creds:?}");
    let key = creds[0]["id"].as_str().unwrap_or_default().to_owned();
    // both copies stored by this node: one accepted, the other a duplicate of it
    wait_for(
        "one accepted and one duplicate",
        Duration::from_secs(60),
        || async {
            let accepted = metric(
                &node.http,
                "lockstep_intake_messages_total{outcome=\"accepted\"}",
            )
            .await?;
            let duplicate = metric(
                &node.http,
                "lockstep_intake_messages_total{outcome=\"duplicate\"}",
            )
            .await?;
            (accepted == 1.0 && duplicate == 1.0).then_some(())
        },
    )
    .await?;
    let issued: Vec<Value> = {
        let mut seen = BTreeSet::new();
        produced
            .all()
            .into_iter()
            .map(|m| m["body"].clone())
            .filter(|b| b["subject"] == ISSUED && b["data"]["reservationId"] == "rsv_dlq_1")
            .filter(|b| seen.insert(b["id"].to_string()))
            .collect()
    };
    assert_eq!(issued.len(), 1, "one issued.v1: {issued:?}");
    assert_eq!(
        produced.key_ids(REQUESTED),
        BTreeSet::from([key.clone()]),
        "one credential requested"
    );
    assert_eq!(
        sim.handle().passcodes(6103).len(),
        1,
        "one passcode at the door"
    );

    // each replay is in the property's audit chain, naming the operator and the publisher
    let store = db
        .connect_store(
            lockstep_persistence::Cipher::from_hex("local-v1", &"11".repeat(32))?,
            2,
        )
        .await?;
    // The CLI wrote these rows, so no step woke the node's linker: it finds them at its
    // next unwoken look (2 s). Linking here too; a chain whose head the node's linker
    // holds at that moment is skipped (SKIP LOCKED), so look until the rows are linked.
    let chain = wait_for(
        "the three dlq_replay audit rows linked",
        Duration::from_secs(20),
        || async {
            lockstep_persistence::audit::link_all(&store).await.ok()?;
            let chain = lockstep_persistence::Store::audit_chain(
                &store,
                lockstep_domain::TenantId::parse(TENANT).ok()?,
                &lockstep_domain::PropertyId::parse(PROPERTY).ok()?,
            )
            .await
            .ok()?;
            let replays = chain
                .iter()
                .filter(|r| r.row.action == "dlq_replay")
                .count();
            (replays >= 3).then_some(chain)
        },
    )
    .await?;
    let audits: Vec<_> = chain
        .iter()
        .filter(|r| r.row.action == "dlq_replay")
        .collect();
    assert_eq!(audits.len(), 3, "one before the fix, two after");
    for a in &audits {
        assert_eq!(a.row.actor_kind, "operator");
        assert_eq!(a.row.reason.as_deref(), Some("unauthorized_publisher"));
        assert_eq!(a.row.payload["replayedBy"], "it-operator");
        assert_eq!(a.row.payload["originalUserId"], me);
        assert_eq!(a.row.payload["messageId"], "evt-dlq-stay");
    }
    // a replayed id is gone
    let gone = lockstep_cli(&[
        "dlq",
        "replay",
        &id,
        "--config",
        &cfg,
        "--operator",
        "it-operator",
    ])
    .await?;
    assert!(
        !gone.ok && gone.stderr.contains("no dead letter"),
        "{gone:?}"
    );
    println!(
        "dlq: 4 dead letters listed with reasons {:?}; 1 replay refused again, 2 replayed and applied once (key {key})",
        reasons(&items)
    );
    Ok(())
}
