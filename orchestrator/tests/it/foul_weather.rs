//! Issue 10: the production bus through the faults a hotel chain meets. Each test failed on
//! the main of 2026-12-01: expired partition ticks were dead-lettered, an unroutable event
//! was retried in a loop (with lapin dumping each return into the log), and SIGTERM dropped
//! the vendor call in flight and the broker connection.

use std::path::Path;
use std::time::Duration;

use lockstep_persistence::testing::{fresh_pg_database, PgTestDb};
use lockstep_vendors::ttlock::RunningSimulator;

use crate::harness::*;

const TENANT: &str = "0b6f3c2e-9d41-4e55-8a0c-7d2f61e0c9a1";
const PROPERTY: &str = "ppt_weather";
const LOCKS: &[i64] = &[7101, 7102, 7103, 7104];

/// A one-property production config; `edits` replace lines of the written TOML.
fn config(
    dir: &Path,
    db: &PgTestDb,
    vhost: &Vhost,
    sim: &RunningSimulator,
    edits: &[(&str, &str)],
) -> anyhow::Result<String> {
    let path = write_production_config(
        dir,
        db,
        vhost,
        sim,
        &ProdConfig {
            node_id: "weather-node",
            token: "weather-token",
            tenant: TENANT,
            properties: vec![(PROPERTY, LOCKS.to_vec())],
            policy: None,
            adapter_base: 700,
            tick_ms: 500,
        },
    )?;
    let mut toml = std::fs::read_to_string(&path)?;
    for (from, to) in edits {
        anyhow::ensure!(toml.contains(from), "the config has no {from:?}");
        toml = toml.replace(from, to);
    }
    std::fs::write(&path, toml)?;
    Ok(path.to_string_lossy().into_owned())
}

fn stay(n: u32, lock: i64) -> Vec<u8> {
    confirmed(
        &format!("evt-w-{n}"),
        TENANT,
        PROPERTY,
        &format!("rsv_w{n}"),
        1,
        &[&format!("rmu_{lock}")],
        &format!("2027-05-{:02}T14:00:00Z", n + 1),
        &format!("2027-05-{:02}T10:00:00Z", n + 2),
    )
}

/// Bug 3: ticks go to every partition, also to those no consumer takes yet (a standby
/// node subscribes late). They carry no expiry, so none is dead-lettered; a partition that
/// holds a tick gets no second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_never_reach_the_dead_letter_queue() -> anyhow::Result<()> {
    let dir = scratch("ticks");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let sim = simulator(LOCKS)?;
    // half the partitions are another node's home: this node takes them after 3 s, while
    // ticks arrive every 100 ms
    let config = config(
        &dir,
        &db,
        &vhost,
        &sim,
        &[
            (
                "tick_interval_ms = 500",
                "tick_interval_ms = 100\nnode_count = 2\nnode_index = 0",
            ),
            ("standby_delay_ms = 0", "standby_delay_ms = 3000"),
        ],
    )?;
    let broker = Broker::connect(&vhost.url).await?;
    let produced = broker
        .collect("it.weather", "melmastoon.events", "melmastoon.lock.#")
        .await?;
    let node = Lockstep::spawn(&dir, &["--config", &config], &[]).await?;
    wait_ready(&node).await?;
    let dlq = broker.consume("lockstep.dlq").await?;
    wait_for("all four partitions owned", Duration::from_secs(30), || {
        let http = node.http.clone();
        async move {
            metric(&http, "lockstep_partitions_owned")
                .await
                .filter(|n| *n >= 4.0)
        }
    })
    .await?;
    // a message through the broker after that: everything dead-lettered before it is in
    // the dead-letter queue by now
    broker
        .publish("melmastoon.reservation.confirmed.v1", &stay(1, 7101))
        .await?;
    wait_for("the stay issued", Duration::from_secs(30), || {
        let n = produced
            .key_ids("melmastoon.lock.credential.issued.v1")
            .len();
        async move { (n == 1).then_some(()) }
    })
    .await?;
    let dead = dlq.all();
    assert!(
        dead.is_empty(),
        "nothing dead-lettered: {} messages",
        dead.len()
    );
    let text = reqwest::get(format!("{}/metrics", node.http))
        .await?
        .text()
        .await?;
    let broker_dead: f64 = text
        .lines()
        .filter(|l| l.starts_with("lockstep_broker_dead_letters_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(broker_dead, 0.0, "the broker dead-lettered nothing");
    Ok(())
}

/// Bug 8: an event nothing is bound to is published once, kept (counted in a gauge), and
/// not retried in a loop; no log line dumps it. When a consumer binds, the next event of
/// its subject gets through and releases the kept ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_events_are_kept_not_retried_in_a_loop() -> anyhow::Result<()> {
    let dir = scratch("unroutable");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let sim = simulator(LOCKS)?;
    let config = config(
        &dir,
        &db,
        &vhost,
        &sim,
        &[(
            "delivery_limit = 5",
            "delivery_limit = 5\nunroutable_probe_ms = 3600000",
        )],
    )?;
    let broker = Broker::connect(&vhost.url).await?;
    let node = Lockstep::spawn(&dir, &["--config", &config], &[]).await?;
    wait_ready(&node).await?;
    broker
        .publish("melmastoon.reservation.confirmed.v1", &stay(1, 7101))
        .await?;
    // the devices' registered.v1, the stay's requested.v1 and issued.v1 came back and are
    // kept: nothing else waits to be published
    let kept = wait_for("every event kept", Duration::from_secs(60), || {
        let http = node.http.clone();
        async move {
            let kept = metric(&http, "lockstep_outbox_unroutable_rows").await?;
            let waiting = metric(&http, "lockstep_outbox_unpublished_rows").await?;
            (kept >= 6.0 && waiting == 0.0).then_some(kept)
        }
    })
    .await?;
    // A retry loop shows itself with time (1 s, 2 s, 4 s: each row three times more within
    // 8 s); this check is about time passing, so it waits for time.
    #[allow(clippy::disallowed_methods)] // wall time is what a retry loop shows itself in
    let kept_since = std::time::Instant::now();
    wait_for("8 s with the events kept", Duration::from_secs(20), || {
        let passed = kept_since.elapsed() >= Duration::from_secs(8);
        async move { passed.then_some(()) }
    })
    .await?;
    assert_eq!(
        metric(
            &node.http,
            "lockstep_outbox_publish_failures_total{reason=\"returned\"}"
        )
        .await,
        Some(kept),
        "each event was published once"
    );
    let log = node.log_text();
    assert!(
        !log.contains("returned us a message"),
        "no log line dumps a returned message"
    );
    assert_eq!(
        log.matches("events unroutable").count(),
        3,
        "one line per subject (registered, requested, issued)"
    );

    // a consumer binds; the next stay's events get through and release the kept ones
    let produced = broker
        .collect("it.late", "melmastoon.events", "melmastoon.lock.#")
        .await?;
    broker
        .publish("melmastoon.reservation.confirmed.v1", &stay(2, 7102))
        .await?;
    wait_for(
        "both stays' requested and issued",
        Duration::from_secs(60),
        || {
            let requested = produced
                .key_ids("melmastoon.lock.credential.requested.v1")
                .len();
            let issued = produced
                .key_ids("melmastoon.lock.credential.issued.v1")
                .len();
            async move { (requested == 2 && issued == 2).then_some(()) }
        },
    )
    .await?;
    Ok(())
}

/// Bug 5: SIGTERM drains. A vendor call in flight when the signal arrives finishes and is
/// committed before the process exits (exit 0, within the bound), the broker connection is
/// closed, and the shutdown logs no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_vendor_call_in_flight_and_closes_the_connection() -> anyhow::Result<()>
{
    let dir = scratch("sigterm");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let sim = simulator(LOCKS)?;
    let config = config(&dir, &db, &vhost, &sim, &[])?;
    let broker = Broker::connect(&vhost.url).await?;
    let produced = broker
        .collect("it.sigterm", "melmastoon.events", "melmastoon.lock.#")
        .await?;
    let mut node = Lockstep::spawn(&dir, &["--config", &config], &[]).await?;
    wait_ready(&node).await?;
    // a first stay fetches the vendor token; then every vendor call takes 2 s
    broker
        .publish("melmastoon.reservation.confirmed.v1", &stay(1, 7101))
        .await?;
    wait_for("the first stay issued", Duration::from_secs(30), || {
        let n = produced
            .key_ids("melmastoon.lock.credential.issued.v1")
            .len();
        async move { (n == 1).then_some(()) }
    })
    .await?;
    sim.handle().update_faults(|f| f.latency_ms = 2_000);
    broker
        .publish("melmastoon.reservation.confirmed.v1", &stay(2, 7102))
        .await?;
    // the intent is committed (pending) right before the call: the call is in flight now
    let http = reqwest::Client::new();
    wait_for("the second stay pending", Duration::from_secs(30), || {
        let req = http
            .get(format!(
                "{}/api/v1/key-credentials?reservationId=rsv_w2",
                node.http
            ))
            .bearer_auth("weather-token")
            .header("x-tenant-id", TENANT);
        async move {
            let v: serde_json::Value = req.send().await.ok()?.json().await.ok()?;
            (v["items"][0]["state"] == "pending").then_some(())
        }
    })
    .await?;
    let (status, took) = node.terminate(Duration::from_secs(30)).await?;
    let log = node.log_text();
    assert!(status.success(), "exit {status}; log:\n{}", tail(&log));
    assert!(
        took < Duration::from_secs(20),
        "stopped within the bound: {took:?}"
    );
    assert!(
        log.contains("draining: rabbitmq connection closed"),
        "the broker connection was closed; log:\n{}",
        tail(&log)
    );
    assert!(!log.contains("panicked"), "no panic on the way out");
    // the call that was in flight was committed: its door truth is confirmed with a ref
    let pool = sqlx::PgPool::connect(&db.worker_url).await?;
    let rows: Vec<(String, bool)> = sqlx::query_as(
        "SELECT sync, vendor_ref_ciphertext IS NOT NULL FROM key_credential_devices",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter()
            .all(|(sync, has_ref)| sync == "confirmed" && *has_ref),
        "the call in flight at SIGTERM was finished and committed: {rows:?}"
    );
    assert_eq!(sim.handle().all_passcodes().len(), 2);
    println!("sigterm: stopped in {took:?} with a vendor call in flight");
    Ok(())
}

/// Issue 11, two nodes share the partitions: node A comes up alone and takes all four
/// (two of them as standby for node B's home); when B comes up, A hands B's home
/// partitions back instead of keeping them for as long as it lives, and each node owns
/// two. Keys are issued once each across the move, and after B is SIGKILLed, A owns all
/// four again and issues the next stays. Without the hand-back, A keeps all four and B
/// owns none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_gets_its_home_partitions_back() -> anyhow::Result<()> {
    let dir_a = scratch("home-a");
    let dir_b = scratch("home-b");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    // eight properties of one lock each: their hash spreads them over the partitions
    let locks: Vec<i64> = (7201..7209).collect();
    let names: Vec<String> = locks.iter().map(|l| format!("ppt_home_{l}")).collect();
    let sim = simulator(&locks)?;
    let write = |dir: &Path, node: &str, index: u32| -> anyhow::Result<String> {
        let path = write_production_config(
            dir,
            &db,
            &vhost,
            &sim,
            &ProdConfig {
                node_id: node,
                token: "home-token",
                tenant: TENANT,
                properties: names
                    .iter()
                    .zip(&locks)
                    .map(|(p, l)| (p.as_str(), vec![*l]))
                    .collect(),
                policy: None,
                adapter_base: 720,
                tick_ms: 200,
            },
        )?;
        let toml = std::fs::read_to_string(&path)?.replace(
            "standby_delay_ms = 0",
            &format!("standby_delay_ms = 0\nnode_count = 2\nnode_index = {index}"),
        );
        std::fs::write(&path, toml)?;
        Ok(path.to_string_lossy().into_owned())
    };
    let config_a = write(&dir_a, "home-node-a", 0)?;
    let config_b = write(&dir_b, "home-node-b", 1)?;
    let broker = Broker::connect(&vhost.url).await?;
    let produced = broker
        .collect("it.home", "melmastoon.events", "melmastoon.lock.#")
        .await?;
    let owned = |node: &Lockstep| {
        let http = node.http.clone();
        async move { metric(&http, "lockstep_partitions_owned").await }
    };
    let stays = |round: u32| -> Vec<Vec<u8>> {
        locks
            .iter()
            .zip(&names)
            .map(|(l, p)| {
                confirmed(
                    &format!("evt-home-{round}-{l}"),
                    TENANT,
                    p,
                    &format!("rsv_home{round}_{l}"),
                    1,
                    &[&format!("rmu_{l}")],
                    &format!("2027-06-{:02}T14:00:00Z", round * 3 + 1),
                    &format!("2027-06-{:02}T10:00:00Z", round * 3 + 2),
                )
            })
            .collect()
    };

    let node_a = Lockstep::spawn(&dir_a, &["--config", &config_a], &[]).await?;
    wait_ready(&node_a).await?;
    wait_for(
        "node A owns all four partitions",
        Duration::from_secs(30),
        || {
            let o = owned(&node_a);
            async move { o.await.filter(|n| *n == 4.0) }
        },
    )
    .await?;

    let mut node_b = Lockstep::spawn(&dir_b, &["--config", &config_b], &[]).await?;
    wait_ready(&node_b).await?;
    wait_for("each node owns its two", Duration::from_secs(60), || {
        let (a, b) = (owned(&node_a), owned(&node_b));
        async move {
            let (a, b) = (a.await?, b.await?);
            (a == 2.0 && b == 2.0).then_some(())
        }
    })
    .await?;
    assert!(
        node_a
            .log_text()
            .contains("partition handed back to its home node"),
        "A handed B's partitions back"
    );
    // publishes a round of eight stays and waits until `issued` keys are out in all
    let round = |n: u32, issued: usize| {
        let (broker, produced, bodies) = (&broker, &produced, stays(n));
        async move {
            for body in bodies {
                broker
                    .publish("melmastoon.reservation.confirmed.v1", &body)
                    .await?;
            }
            wait_for("the round's stays issued", Duration::from_secs(60), || {
                let n = produced
                    .key_ids("melmastoon.lock.credential.issued.v1")
                    .len();
                async move { (n == issued).then_some(()) }
            })
            .await
        }
    };
    round(1, 8).await?;

    // B dies: A is still subscribed to B's home partitions as standby and takes them
    node_b.kill();
    wait_for(
        "node A owns all four again",
        Duration::from_secs(60),
        || {
            let o = owned(&node_a);
            async move { o.await.filter(|n| *n == 4.0) }
        },
    )
    .await?;
    round(2, 16).await?;
    // each key once at its door: two stays per lock, two passcodes
    let passcodes = sim.handle().all_passcodes();
    assert_eq!(passcodes.len(), 16, "one passcode per stay, none twice");
    Ok(())
}
