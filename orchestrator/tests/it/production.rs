//! Production mode: RabbitMQ in, Postgres under RLS, the TTLock simulator at the edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use lockstep_persistence::testing::{fresh_pg_database, PgTestDb};
use lockstep_vendors::ttlock::RunningSimulator;

use crate::harness::*;

const TENANT: &str = "5f0c7a4e-7a2b-4c1d-9e8f-0a1b2c3d4e5f";

/// (property, lock ids): two properties, eight locks, one room per lock.
const PROPERTIES: &[(&str, &[i64])] = &[
    ("ppt_e2e_a", &[5001, 5002, 5003, 5004]),
    ("ppt_e2e_b", &[6001, 6002, 6003, 6004]),
];

fn room(lock: i64) -> String {
    format!("rmu_{lock}")
}

fn write_config(
    dir: &Path,
    db: &PgTestDb,
    vhost: &Vhost,
    sim: &RunningSimulator,
) -> anyhow::Result<std::path::PathBuf> {
    write_production_config(
        dir,
        db,
        vhost,
        sim,
        &ProdConfig {
            node_id: "it-node",
            token: "it-service-token",
            tenant: TENANT,
            properties: PROPERTIES.iter().map(|(p, l)| (*p, l.to_vec())).collect(),
            policy: None,
            adapter_base: 900,
            tick_ms: 500,
        },
    )
}

fn all_locks() -> Vec<i64> {
    PROPERTIES
        .iter()
        .flat_map(|(_, l)| l.iter().copied())
        .collect()
}

struct Stay {
    property: &'static str,
    reservation: String,
    room: String,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
}

/// `n` stays spread round-robin over every room; a room's stays follow each other by day
/// and never overlap.
fn stays(n: usize) -> Vec<Stay> {
    let rooms: Vec<(&'static str, i64)> = PROPERTIES
        .iter()
        .flat_map(|(p, l)| l.iter().map(move |l| (*p, *l)))
        .collect();
    let base = Utc.with_ymd_and_hms(2027, 1, 1, 14, 0, 0).unwrap();
    (0..n)
        .map(|i| {
            let (property, lock) = rooms[i % rooms.len()];
            let day = (i / rooms.len()) as i64;
            let from = base + chrono::Duration::days(day);
            Stay {
                property,
                reservation: format!("rsv_{i:05}"),
                room: room(lock),
                from,
                until: from + chrono::Duration::hours(20),
            }
        })
        .collect()
}

fn publish_confirmed<'a>(
    broker: &'a Broker,
    s: &'a Stay,
) -> impl std::future::Future<Output = anyhow::Result<()>> + 'a {
    let body = confirmed(
        &format!("evt-c-{}", s.reservation),
        TENANT,
        s.property,
        &s.reservation,
        1,
        &[&s.room],
        &s.from.to_rfc3339(),
        &s.until.to_rfc3339(),
    );
    async move {
        broker
            .publish("melmastoon.reservation.confirmed.v1", &body)
            .await
    }
}

/// Issue 3, point 3: 1,000 reservations through RabbitMQ, SIGKILLed twice (each time
/// exactly between a vendor call and its commit), then 100 cancellations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_reservations_survive_sigkill_between_vendor_call_and_commit() -> anyhow::Result<()>
{
    const N: usize = 1000;
    const CANCEL: usize = 100;
    let dir = scratch("e2e");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let sim = simulator(&all_locks())?;
    let config = write_config(&dir, &db, &vhost, &sim)?;
    let config_arg = config.to_string_lossy().into_owned();
    let broker = Broker::connect(&vhost.url).await?;
    let produced = broker
        .collect("it.lock-events", "melmastoon.events", "melmastoon.lock.#")
        .await?;
    let stays = stays(N);

    // Run 1: hangs right after its 150th successful vendor issue, before the commit.
    let mut node = Lockstep::spawn(
        &dir,
        &["--config", &config_arg],
        &[("LOCKSTEP_FAILPOINT_HANG_AFTER_VENDOR_ISSUE", "150".into())],
    )
    .await?;
    wait_ready(&node).await?;
    for s in &stays {
        publish_confirmed(&broker, s).await?;
    }
    // The reservation system redelivers some: the same ids must not make a second key.
    for s in stays.iter().take(50) {
        publish_confirmed(&broker, s).await?;
    }
    node.wait_log(
        "failpoint hit: hang_after_vendor_issue",
        Duration::from_secs(180),
    )
    .await?;
    node.kill();
    let after_first_kill = sim.handle().all_passcodes().len();

    // Run 2: killed the same way after 300 more issues.
    let mut node = Lockstep::spawn(
        &dir,
        &["--config", &config_arg],
        &[("LOCKSTEP_FAILPOINT_HANG_AFTER_VENDOR_ISSUE", "300".into())],
    )
    .await?;
    node.wait_log(
        "failpoint hit: hang_after_vendor_issue",
        Duration::from_secs(180),
    )
    .await?;
    node.kill();
    let after_second_kill = sim.handle().all_passcodes().len();

    // Run 3: to the end.
    let node = Lockstep::spawn(&dir, &["--config", &config_arg], &[]).await?;
    let issued = wait_for("1,000 distinct issued.v1", Duration::from_secs(300), || {
        let ids = produced.key_ids("melmastoon.lock.credential.issued.v1");
        async move { (ids.len() >= N).then_some(ids) }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", tail(&node.log_text())))?;
    // Let stragglers (a redelivered duplicate, a second publish of the same row) arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let issued_events: Vec<_> = produced
        .all()
        .into_iter()
        .filter(|m| m["body"]["subject"] == "melmastoon.lock.credential.issued.v1")
        .collect();
    let issued_ids: BTreeSet<String> = issued_events
        .iter()
        .filter_map(|m| m["body"]["data"]["keyId"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(issued_ids, issued, "issued set is stable");
    assert_eq!(
        issued_ids.len(),
        N,
        "exactly 1,000 distinct credentials issued"
    );
    let key_to_reservation: BTreeMap<String, String> = issued_events
        .iter()
        .map(|m| {
            (
                m["body"]["data"]["keyId"].as_str().unwrap().to_owned(),
                m["body"]["data"]["reservationId"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    let reservations: BTreeSet<&String> = key_to_reservation.values().collect();
    assert_eq!(
        reservations.len(),
        N,
        "one credential per reservation, none duplicated"
    );

    // The door: exactly 1,000 passcodes, one per credential, with the reservation's window.
    let passcodes = sim.handle().all_passcodes();
    let by_stay: BTreeMap<&str, &Stay> =
        stays.iter().map(|s| (s.reservation.as_str(), s)).collect();
    assert_eq!(passcodes.len(), N, "exactly 1,000 passcodes at the vendor");
    let names: BTreeSet<&str> = passcodes
        .iter()
        .map(|p| p.keyboard_pwd_name.as_str())
        .collect();
    assert_eq!(names.len(), N, "no credential has two passcodes");
    for p in &passcodes {
        let reservation = key_to_reservation
            .get(&p.keyboard_pwd_name)
            .expect("every passcode belongs to an issued credential");
        let stay = by_stay[reservation.as_str()];
        assert_eq!(
            p.start_date,
            stay.from.timestamp_millis(),
            "window start of {reservation}"
        );
        assert_eq!(
            p.end_date,
            stay.until.timestamp_millis(),
            "window end of {reservation}"
        );
        assert_eq!(
            p.lock_id.to_string(),
            stay.room.trim_start_matches("rmu_"),
            "room of {reservation}"
        );
    }

    // Cancel 100: 100 revoked.v1, 900 passcodes left, none of the cancelled ones.
    for (i, s) in stays.iter().take(CANCEL).enumerate() {
        let body = cancelled(&format!("evt-x-{i}"), TENANT, s.property, &s.reservation, 2);
        broker
            .publish("melmastoon.reservation.cancelled.v1", &body)
            .await?;
    }
    let revoked = wait_for("100 distinct revoked.v1", Duration::from_secs(120), || {
        let ids = produced.key_ids("melmastoon.lock.credential.revoked.v1");
        async move { (ids.len() >= CANCEL).then_some(ids) }
    })
    .await?;
    assert_eq!(revoked.len(), CANCEL);
    let cancelled_reservations: BTreeSet<&str> = stays
        .iter()
        .take(CANCEL)
        .map(|s| s.reservation.as_str())
        .collect();
    for k in &revoked {
        assert!(
            cancelled_reservations.contains(key_to_reservation[k].as_str()),
            "only cancelled reservations are revoked"
        );
    }
    let left = wait_for("900 passcodes left", Duration::from_secs(60), || {
        let n = sim.handle().all_passcodes();
        async move { (n.len() == N - CANCEL).then_some(n) }
    })
    .await?;
    assert!(
        left.iter().all(|p| !revoked.contains(&p.keyboard_pwd_name)),
        "no revoked credential is left at the door"
    );

    // And the API agrees: a cancelled reservation's credential is revoked, confirmed absent.
    let client = reqwest::Client::new();
    let body: serde_json::Value = client
        .get(format!(
            "{}/api/v1/key-credentials?reservationId={}",
            node.http, stays[0].reservation
        ))
        .bearer_auth("it-service-token")
        .header("x-tenant-id", TENANT)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(body["items"][0]["state"], "revoked");
    assert!(body["items"][0]["doorSync"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["desired"] == "absent" && d["sync"] == "confirmed"));
    assert!(
        !body.to_string().contains("keyboardPwdId"),
        "no vendor ref in the API"
    );

    // Never leaks (issue 6), on the production bus: no PIN, vendor ref or lock id of the
    // 900 passcodes left is in any event published to RabbitMQ
    let published: Vec<String> = produced.all().iter().map(|e| e.to_string()).collect();
    let quoted = |v: &str| format!("\"{v}\"");
    for p in &left {
        let (pin, vref) = (quoted(&p.keyboard_pwd), p.keyboard_pwd_id.to_string());
        for e in &published {
            assert!(!e.contains(&pin), "a PIN is in a published event");
            assert!(
                !e.contains(&format!(":{vref},"))
                    && !e.contains(&format!(":{vref}}}"))
                    && !e.contains(&quoted(&vref)),
                "a vendor ref is in a published event"
            );
        }
    }
    println!(
        "leak (production bus): {} events checked against {} PINs and vendor refs",
        published.len(),
        left.len()
    );

    let counters = sim.handle().counters();
    println!(
        "e2e: {N} issued, {CANCEL} revoked; passcodes after kill 1: {after_first_kill}, after kill 2: {after_second_kill}; vendor adds: {}, deletes: {}",
        counters.adds, counters.deletes
    );
    Ok(())
}

/// Bad input is dead-lettered with a reason, counted, and never blocks good input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_messages_go_to_the_dead_letter_queue_with_a_reason(
) -> anyhow::Result<()> {
    let dir = scratch("dlq");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let sim = simulator(&all_locks())?;
    let config = write_config(&dir, &db, &vhost, &sim)?;
    let broker = Broker::connect(&vhost.url).await?;
    let produced = broker
        .collect("it.lock-events", "melmastoon.events", "melmastoon.lock.#")
        .await?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
    wait_ready(&node).await?;
    let dlq = broker.consume("lockstep.dlq").await?;

    broker
        .publish("melmastoon.reservation.confirmed.v1", b"this is not json")
        .await?;
    // a version Lockstep does not consume, published on a bound routing key
    let mut v2: serde_json::Value = serde_json::from_slice(&confirmed(
        "evt-v2",
        TENANT,
        "ppt_e2e_a",
        "rsv_v2",
        1,
        &["rmu_5001"],
        "2027-01-01T14:00:00Z",
        "2027-01-02T10:00:00Z",
    ))?;
    v2["subject"] = "melmastoon.reservation.confirmed.v2".into();
    broker
        .publish(
            "melmastoon.reservation.confirmed.v1",
            &serde_json::to_vec(&v2)?,
        )
        .await?;
    // I-1 broken: the stay ends before it starts
    broker
        .publish(
            "melmastoon.reservation.confirmed.v1",
            &confirmed(
                "evt-bad",
                TENANT,
                "ppt_e2e_a",
                "rsv_bad",
                1,
                &["rmu_5001"],
                "2027-01-03T14:00:00Z",
                "2027-01-02T10:00:00Z",
            ),
        )
        .await?;
    // and a good one after them
    broker
        .publish(
            "melmastoon.reservation.confirmed.v1",
            &confirmed(
                "evt-good",
                TENANT,
                "ppt_e2e_a",
                "rsv_good",
                1,
                &["rmu_5002"],
                "2027-01-01T14:00:00Z",
                "2027-01-02T10:00:00Z",
            ),
        )
        .await?;

    let dead = wait_for("3 dead letters", Duration::from_secs(60), || {
        let all = dlq.all();
        async move { (all.len() >= 3).then_some(all) }
    })
    .await?;
    let reasons: BTreeSet<String> = dead
        .iter()
        .filter_map(|m| m["reason"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        reasons,
        ["invalid_payload", "malformed", "unknown_subject"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    wait_for("the good event issued", Duration::from_secs(60), || {
        let n = produced
            .key_ids("melmastoon.lock.credential.issued.v1")
            .len();
        async move { (n == 1).then_some(()) }
    })
    .await?;
    for reason in ["malformed", "unknown_subject", "invalid_payload"] {
        let v = metric(
            &node.http,
            &format!("lockstep_intake_dead_letters_total{{reason=\"{reason}\"}}"),
        )
        .await;
        assert_eq!(v, Some(1.0), "dead letters counted for {reason}");
    }
    Ok(())
}

/// An event nobody is bound to receive comes back (`mandatory`): it is a failure, counted,
/// and the row is kept unpublished; the periodic probe (`unroutable_probe_ms`) finds the
/// consumer that binds later, and the kept events are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_publish_is_kept_and_delivered_once_a_consumer_binds() -> anyhow::Result<()> {
    let dir = scratch("returned");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let sim = simulator(&all_locks())?;
    let config = write_config(&dir, &db, &vhost, &sim)?;
    let toml = std::fs::read_to_string(&config)?.replace(
        "delivery_limit = 5",
        "delivery_limit = 5\nunroutable_probe_ms = 1000",
    );
    std::fs::write(&config, toml)?;
    let broker = Broker::connect(&vhost.url).await?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
    wait_ready(&node).await?;
    broker
        .publish(
            "melmastoon.reservation.confirmed.v1",
            &confirmed(
                "evt-r1",
                TENANT,
                "ppt_e2e_b",
                "rsv_r1",
                1,
                &["rmu_6001"],
                "2027-01-01T14:00:00Z",
                "2027-01-02T10:00:00Z",
            ),
        )
        .await?;
    wait_for(
        "a returned publish counted",
        Duration::from_secs(60),
        || {
            let http = node.http.clone();
            async move {
                metric(
                    &http,
                    "lockstep_outbox_publish_failures_total{reason=\"returned\"}",
                )
                .await
                .filter(|v| *v >= 1.0)
            }
        },
    )
    .await?;
    // Now a consumer binds: the same events arrive.
    let produced = broker
        .collect("it.late-events", "melmastoon.events", "melmastoon.lock.#")
        .await?;
    wait_for(
        "requested and issued delivered after the probe",
        Duration::from_secs(60),
        || {
            let ok = !produced
                .key_ids("melmastoon.lock.credential.requested.v1")
                .is_empty()
                && !produced
                    .key_ids("melmastoon.lock.credential.issued.v1")
                    .is_empty();
            async move { ok.then_some(()) }
        },
    )
    .await?;
    Ok(())
}

/// DESIGN §4, issue 6: an operator's write travels the partitioned path in production. The
/// API publishes a command to the partition exchange as Lockstep's broker user; the
/// partition owner runs it and the request answers with the outcome. A command published
/// without that `user_id` is dead-lettered and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_travel_the_partitions_and_forged_ones_are_refused() -> anyhow::Result<()>
{
    use lapin::options::BasicPublishOptions;
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::BasicProperties;

    let dir = scratch("commands");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let sim = simulator(&all_locks())?;
    let config = write_config(&dir, &db, &vhost, &sim)?;
    let broker = Broker::connect(&vhost.url).await?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
    wait_ready(&node).await?;
    let dlq = broker.consume("lockstep.dlq").await?;
    let http = reqwest::Client::new();
    for (n, lock) in [(1, 5003), (2, 5004)] {
        broker
            .publish(
                "melmastoon.reservation.confirmed.v1",
                &confirmed(
                    &format!("evt-cmd-{n}"),
                    TENANT,
                    "ppt_e2e_a",
                    &format!("rsv_cmd_{n}"),
                    1,
                    &[&room(lock)],
                    "2027-03-01T14:00:00Z",
                    "2027-03-02T10:00:00Z",
                ),
            )
            .await?;
    }
    let active = |reservation: &'static str| {
        let http = http.clone();
        let base = node.http.clone();
        async move {
            wait_for(reservation, Duration::from_secs(60), || async {
                let v: serde_json::Value = http
                    .get(format!(
                        "{base}/api/v1/key-credentials?reservationId={reservation}"
                    ))
                    .bearer_auth("it-service-token")
                    .header("x-tenant-id", TENANT)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                v["items"]
                    .as_array()?
                    .iter()
                    .find(|c| c["state"] == "active")
                    .cloned()
            })
            .await
        }
    };
    let first = active("rsv_cmd_1").await?;
    let second = active("rsv_cmd_2").await?;

    // the API's revoke: answered with its outcome, the passcode leaves the lock
    let id = first["id"].as_str().unwrap_or_default();
    let r = http
        .post(format!("{}/api/v1/key-credentials/{id}/revoke", node.http))
        .bearer_auth("it-service-token")
        .header("x-tenant-id", TENANT)
        .json(&serde_json::json!({ "reason": "security" }))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await?;
    assert_eq!(v["state"], "revoked");
    wait_for("passcode removed", Duration::from_secs(60), || {
        let n = sim.handle().passcodes(5003).len();
        async move { (n == 0).then_some(()) }
    })
    .await?;

    // a forged command: the right header, no user_id
    let second_id = second["id"].as_str().unwrap_or_default();
    let forged = serde_json::json!({
        "messageId": "forged-1",
        "tenantId": TENANT,
        "propertyId": "ppt_e2e_a",
        "subject": "reservation:rsv_cmd_2",
        "topic": "lockstep.internal.revoke",
        "payload": { "credentialId": second_id, "reason": "security" },
    });
    let mut headers = FieldTable::default();
    headers.insert("x-lockstep-command".into(), AMQPValue::Boolean(true));
    broker
        .ch
        .basic_publish(
            "lockstep.partitions".into(),
            format!("{TENANT}/ppt_e2e_a").as_str().into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&forged)?,
            BasicProperties::default().with_headers(headers),
        )
        .await?
        .await?;
    wait_for(
        "the forged command dead-lettered",
        Duration::from_secs(60),
        || {
            let n = dlq.all().len();
            async move { (n >= 1).then_some(()) }
        },
    )
    .await?;
    let v = metric(
        &node.http,
        "lockstep_intake_dead_letters_total{reason=\"unauthorized_publisher\"}",
    )
    .await;
    assert_eq!(v, Some(1.0));
    // Intake refuses before it stores: a dead-lettered message never reached a mailbox,
    // so nothing of it can still be on its way when the credential is read.
    let v: serde_json::Value = http
        .get(format!("{}/api/v1/key-credentials/{second_id}", node.http))
        .bearer_auth("it-service-token")
        .header("x-tenant-id", TENANT)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(v["state"], "active", "the forged command changed nothing");
    assert_eq!(sim.handle().passcodes(5004).len(), 1);
    Ok(())
}

/// DESIGN §4, issue 6: with `[amqp.publishers]` configured, a subject is accepted only from
/// its owner's broker user (AMQP `user_id`, validated by RabbitMQ); anything else is
/// dead-lettered as `unauthorized_publisher`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_are_accepted_only_from_their_owners_broker_user() -> anyhow::Result<()> {
    let dir = scratch("publishers");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let sim = simulator(&all_locks())?;
    let config = write_config(&dir, &db, &vhost, &sim)?;
    let mut toml = std::fs::read_to_string(&config)?;
    toml.push_str("\n[amqp.publishers]\n\"melmastoon.reservation.\" = \"lockstep\"\n");
    std::fs::write(&config, toml)?;
    let broker = Broker::connect(&vhost.url).await?;
    let produced = broker
        .collect("it.lock-events", "melmastoon.events", "melmastoon.lock.#")
        .await?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
    wait_ready(&node).await?;
    let dlq = broker.consume("lockstep.dlq").await?;
    let stay = |n: u32, lock: i64| {
        confirmed(
            &format!("evt-pub-{n}"),
            TENANT,
            "ppt_e2e_a",
            &format!("rsv_pub_{n}"),
            1,
            &[&room(lock)],
            "2027-04-01T14:00:00Z",
            "2027-04-02T10:00:00Z",
        )
    };
    // the owner
    broker
        .publish_as(
            "melmastoon.reservation.confirmed.v1",
            &stay(1, 5001),
            "lockstep",
        )
        .await?;
    // no user_id
    broker
        .publish("melmastoon.reservation.confirmed.v1", &stay(2, 5002))
        .await?;
    // a subject nobody owns here, even from a known user
    let mut other: serde_json::Value = serde_json::from_slice(&stay(3, 5003))?;
    other["subject"] = "melmastoon.tenant.property.deactivated.v1".into();
    other["data"] = serde_json::json!({ "reason": "closed" });
    broker
        .publish_as(
            "melmastoon.tenant.property.deactivated.v1",
            &serde_json::to_vec(&other)?,
            "lockstep",
        )
        .await?;
    let dead = wait_for("two dead letters", Duration::from_secs(60), || {
        let all = dlq.all();
        async move { (all.len() >= 2).then_some(all) }
    })
    .await?;
    for m in &dead {
        assert_eq!(m["reason"], "unauthorized_publisher", "{m}");
    }
    wait_for("the owner's stay issued", Duration::from_secs(60), || {
        let n = produced
            .key_ids("melmastoon.lock.credential.issued.v1")
            .len();
        async move { (n == 1).then_some(()) }
    })
    .await?;
    // Both refused messages were dead-lettered at intake, before anything of them was
    // stored: no step of theirs can still be on its way once both dead letters are seen.
    assert_eq!(
        produced
            .key_ids("melmastoon.lock.credential.requested.v1")
            .len(),
        1,
        "nothing of the refused two"
    );
    Ok(())
}
