//! Issue 14, "Refusals that must be clear": input that could never give a guest a working
//! key, or whose meaning is ambiguous, is refused where it enters with a reason of its
//! own, and changes nothing. Each test ends with a good event published after the refused
//! ones: intake judges one queue in order, so once the good event's key is issued the
//! refused ones were judged already (no "nothing happened after a sleep" check).

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use lockstep_persistence::testing::fresh_pg_database;
use lockstep_vendors::ttlock::RunningSimulator;
use serde_json::{json, Value};

use crate::harness::*;

const TENANT: &str = "5f0c7a4e-7a2b-4c1d-9e8f-0a1b2c3d4e5f";
const DEMO_TENANT: &str = "00000000-0000-4000-8000-00000000d3e0";
const PROPERTY: &str = "ppt_refusals";
const LOCKS: [i64; 2] = [7001, 7002];
const ISSUED: &str = "melmastoon.lock.credential.issued.v1";

/// A production node (Postgres, RabbitMQ) with one property of two locks, the test's
/// view of what it publishes and of its dead-letter queue.
struct Prod {
    node: Lockstep,
    broker: Broker,
    produced: Collected,
    dlq: Collected,
    sim: RunningSimulator,
    http: reqwest::Client,
    // dropped last: the node is gone before its database and vhost
    _db: lockstep_persistence::testing::PgTestDb,
    _vhost: Vhost,
}

impl Prod {
    async fn start(name: &str) -> anyhow::Result<Self> {
        let dir = scratch(name);
        let db = fresh_pg_database().await?;
        let vhost = Vhost::fresh()?;
        let sim = simulator(&LOCKS)?;
        let config = write_production_config(
            &dir,
            &db,
            &vhost,
            &sim,
            &ProdConfig {
                node_id: "it-node",
                token: "it-service-token",
                tenant: TENANT,
                properties: vec![(PROPERTY, LOCKS.to_vec())],
                policy: None,
                adapter_base: 910,
                tick_ms: 500,
            },
        )?;
        let broker = Broker::connect(&vhost.url).await?;
        let produced = broker
            .collect("it.lock-events", "melmastoon.events", "melmastoon.lock.#")
            .await?;
        let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
        wait_ready(&node).await?;
        let dlq = broker.consume("lockstep.dlq").await?;
        Ok(Self {
            node,
            broker,
            produced,
            dlq,
            sim,
            http: reqwest::Client::new(),
            _db: db,
            _vhost: vhost,
        })
    }

    /// Publishes `body` with `routing_key` as the broker user `lockstep` with a message
    /// id, `mandatory`; true when the broker routed it (not returned as unroutable).
    async fn publish(
        &self,
        routing_key: &str,
        body: &[u8],
        message_id: &str,
    ) -> anyhow::Result<bool> {
        let confirm = self
            .broker
            .ch
            .basic_publish(
                "melmastoon.events".into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_user_id("lockstep".into())
                    .with_message_id(message_id.into())
                    .with_headers(FieldTable::default()),
            )
            .await?
            .await?;
        Ok(matches!(confirm, Confirmation::Ack(None)))
    }

    async fn credentials(&self, reservation: &str) -> anyhow::Result<Vec<Value>> {
        let v: Value = self
            .http
            .get(format!(
                "{}/api/v1/key-credentials?reservationId={reservation}",
                self.node.http
            ))
            .bearer_auth("it-service-token")
            .header("x-tenant-id", TENANT)
            .send()
            .await?
            .json()
            .await?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until `reservation`'s key is active (and announced).
    async fn wait_active(&self, reservation: &str) -> anyhow::Result<Value> {
        wait_for(reservation, Duration::from_secs(90), || async {
            self.credentials(reservation)
                .await
                .ok()
                .and_then(|c| c.into_iter().find(|c| c["state"] == "active"))
                .filter(|c| {
                    c["id"]
                        .as_str()
                        .is_some_and(|id| self.produced.key_ids(ISSUED).contains(id))
                })
        })
        .await
    }

    /// Waits for `n` dead letters.
    async fn dead_letters(&self, n: usize) -> anyhow::Result<Vec<Value>> {
        wait_for("dead letters", Duration::from_secs(60), || {
            let all = self.dlq.all();
            async move { (all.len() >= n).then_some(all) }
        })
        .await
    }

    async fn dead_letter_count(&self, reason: &str) -> Option<f64> {
        metric(
            &self.node.http,
            &format!("lockstep_intake_dead_letters_total{{reason=\"{reason}\"}}"),
        )
        .await
    }

    /// The subjects of every credential event published so far, with the key each names
    /// (the devices' `registered` events at start-up are not the stays').
    fn lock_events(&self) -> BTreeSet<(String, String)> {
        self.produced
            .all()
            .iter()
            .filter(|e| {
                e["body"]["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("melmastoon.lock.credential."))
            })
            .map(|e| {
                (
                    e["body"]["subject"].as_str().unwrap_or_default().to_owned(),
                    e["body"]["data"]["keyId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }
}

fn stay(
    id: &str,
    property: &str,
    reservation: &str,
    room: &str,
    from: &str,
    until: &str,
) -> Vec<u8> {
    confirmed(id, TENANT, property, reservation, 1, &[room], from, until)
}

/// The events of one key that issued normally: requested, then issued.
fn issued_alone(key: &str) -> BTreeSet<(String, String)> {
    ["requested", "issued"]
        .into_iter()
        .map(|s| (format!("melmastoon.lock.credential.{s}.v1"), key.to_owned()))
        .collect()
}

/// A stay at a property where no lock is registered, or in a room no lock serves, was
/// accepted and did nothing but log a warning: it is dead-lettered as `unknown_property`
/// or `unserved_room`, counted, and creates no credential and no event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stay_at_an_unknown_property_or_in_an_unserved_room_is_dead_lettered_and_changes_nothing(
) -> anyhow::Result<()> {
    let p = Prod::start("refuse-unknown").await?;
    let (from, until) = ("2027-06-01T14:00:00Z", "2027-06-02T10:00:00Z");
    let key = "melmastoon.reservation.confirmed.v1";
    let nowhere = stay(
        "evt-nowhere",
        "ppt_nowhere",
        "rsv_nowhere",
        "rmu_7001",
        from,
        until,
    );
    assert!(p.publish(key, &nowhere, "msg-nowhere").await?);
    let unserved = stay(
        "evt-unserved",
        PROPERTY,
        "rsv_unserved",
        "rmu_9999",
        from,
        until,
    );
    assert!(p.publish(key, &unserved, "msg-unserved").await?);
    // a stay of two rooms, one of them without a lock: no partial key either
    let mut half = serde_json::from_slice::<Value>(&stay(
        "evt-half", PROPERTY, "rsv_half", "rmu_7002", from, until,
    ))?;
    half["data"]["roomIds"] = json!(["rmu_7002", "rmu_9998"]);
    assert!(
        p.publish(key, &serde_json::to_vec(&half)?, "msg-half")
            .await?
    );
    let good = stay("evt-good", PROPERTY, "rsv_good", "rmu_7001", from, until);
    assert!(p.publish(key, &good, "msg-good").await?);

    let dead = p.dead_letters(3).await?;
    let by_id = |id: &str| {
        dead.iter()
            .find(|m| m["messageId"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} dead-lettered: {dead:?}"))
    };
    assert_eq!(by_id("msg-nowhere")["reason"], "unknown_property");
    assert_eq!(by_id("msg-unserved")["reason"], "unserved_room");
    let half = by_id("msg-half");
    assert_eq!(half["reason"], "unserved_room");
    assert!(
        half["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("rmu_9998"),
        "{half}"
    );
    assert_eq!(by_id("msg-nowhere")["originalUser"], "lockstep");

    let good = p.wait_active("rsv_good").await?;
    // nothing changed: no credential for the refused stays, no event but the good key's,
    // nothing at the locks but its passcode
    for r in ["rsv_nowhere", "rsv_unserved", "rsv_half"] {
        assert_eq!(p.credentials(r).await?, Vec::<Value>::new(), "{r}");
    }
    assert_eq!(p.lock_events(), issued_alone(good["id"].as_str().unwrap()));
    assert_eq!(p.sim.handle().passcodes(7001).len(), 1);
    assert_eq!(p.sim.handle().passcodes(7002).len(), 0);
    assert_eq!(p.dead_letter_count("unknown_property").await, Some(1.0));
    assert_eq!(p.dead_letter_count("unserved_room").await, Some(2.0));
    Ok(())
}

/// A stay whose window has already ended made three credentials that all failed as
/// `cancelled_mid_flight`: it is dead-lettered as `window_ended`, counted, and changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stay_that_has_already_ended_is_dead_lettered_as_window_ended_and_changes_nothing(
) -> anyhow::Result<()> {
    let p = Prod::start("refuse-ended").await?;
    let key = "melmastoon.reservation.confirmed.v1";
    let ended = stay(
        "evt-ended",
        PROPERTY,
        "rsv_ended",
        "rmu_7001",
        "2020-06-01T14:00:00Z",
        "2020-06-02T10:00:00Z",
    );
    assert!(p.publish(key, &ended, "msg-ended").await?);
    let good = stay(
        "evt-good",
        PROPERTY,
        "rsv_good",
        "rmu_7002",
        "2027-06-01T14:00:00Z",
        "2027-06-02T10:00:00Z",
    );
    assert!(p.publish(key, &good, "msg-good").await?);

    let dead = p.dead_letters(1).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["reason"], "window_ended");
    assert_eq!(dead[0]["messageId"], "msg-ended");
    assert!(dead[0]["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("2020-06-02"));

    let good = p.wait_active("rsv_good").await?;
    assert_eq!(p.credentials("rsv_ended").await?, Vec::<Value>::new());
    assert_eq!(p.lock_events(), issued_alone(good["id"].as_str().unwrap()));
    assert_eq!(p.sim.handle().passcodes(7001).len(), 0);
    assert_eq!(p.dead_letter_count("window_ended").await, Some(1.0));
    Ok(())
}

/// A `confirmed.v1` routing key carrying a `cancelled.v1` body revoked a key: a routing
/// key and an envelope subject that disagree are dead-lettered as `subject_mismatch` and
/// revoke nothing. An unknown subject or version under a consumed prefix reaches the
/// dead-letter queue (`unknown_subject`) instead of coming back unroutable. Every dead
/// letter keeps the message id and the broker user that published it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_key_that_disagrees_with_its_envelope_is_dead_lettered_and_revokes_nothing(
) -> anyhow::Result<()> {
    let p = Prod::start("refuse-mismatch").await?;
    let (from, until) = ("2027-06-01T14:00:00Z", "2027-06-02T10:00:00Z");
    let confirmed_key = "melmastoon.reservation.confirmed.v1";
    let live = stay("evt-live", PROPERTY, "rsv_live", "rmu_7001", from, until);
    assert!(p.publish(confirmed_key, &live, "msg-live").await?);
    let live = p.wait_active("rsv_live").await?;
    let live_id = live["id"].as_str().unwrap().to_owned();

    // the cancellation of the live stay, on the confirmation's routing key
    let cancel = cancelled("evt-cancel", TENANT, PROPERTY, "rsv_live", 2);
    assert!(p.publish(confirmed_key, &cancel, "msg-mismatch").await?);
    // a version and a subject nobody consumes, under the reservation prefix: routed
    let mut v9 = serde_json::from_slice::<Value>(&cancel)?;
    v9["id"] = "evt-v9".into();
    v9["subject"] = "melmastoon.reservation.cancelled.v9".into();
    assert!(
        p.publish(
            "melmastoon.reservation.cancelled.v9",
            &serde_json::to_vec(&v9)?,
            "msg-v9"
        )
        .await?,
        "an unknown version under a consumed prefix is routed"
    );
    let mut odd = v9.clone();
    odd["id"] = "evt-odd".into();
    odd["subject"] = "melmastoon.reservation.teleported.v1".into();
    assert!(
        p.publish(
            "melmastoon.reservation.teleported.v1",
            &serde_json::to_vec(&odd)?,
            "msg-odd"
        )
        .await?,
        "an unknown subject under a consumed prefix is routed"
    );
    let good = stay("evt-good", PROPERTY, "rsv_good", "rmu_7002", from, until);
    assert!(p.publish(confirmed_key, &good, "msg-good").await?);

    let dead = p.dead_letters(3).await?;
    let reasons: BTreeSet<(String, String)> = dead
        .iter()
        .map(|m| {
            (
                m["messageId"].as_str().unwrap_or_default().to_owned(),
                m["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("msg-mismatch", "subject_mismatch"),
            ("msg-odd", "unknown_subject"),
            ("msg-v9", "unknown_subject"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
    );
    for m in &dead {
        assert_eq!(m["originalUser"], "lockstep", "the publisher is kept: {m}");
    }
    let mismatch = dead
        .iter()
        .find(|m| m["messageId"] == "msg-mismatch")
        .unwrap();
    assert_eq!(mismatch["routingKey"], confirmed_key);
    assert_eq!(
        mismatch["body"]["subject"],
        "melmastoon.reservation.cancelled.v1"
    );

    let good = p.wait_active("rsv_good").await?;
    // nothing changed: the live key is still active and at its lock, nothing was revoked
    let live_now = p.credentials("rsv_live").await?;
    assert_eq!(live_now.len(), 1);
    assert_eq!(live_now[0]["state"], "active");
    assert_eq!(p.sim.handle().passcodes(7001).len(), 1);
    let mut expected = issued_alone(&live_id);
    expected.extend(issued_alone(good["id"].as_str().unwrap()));
    assert_eq!(p.lock_events(), expected);
    assert_eq!(p.dead_letter_count("subject_mismatch").await, Some(1.0));
    assert_eq!(p.dead_letter_count("unknown_subject").await, Some(2.0));
    Ok(())
}

/// The embedded HTTP intake refuses the same stays with 422
/// `MELMASTOON.GENERAL.VALIDATION_FAILED` and the reason in `details.reason`; nothing is
/// stored or published for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_intake_refuses_stays_no_key_could_serve_with_422_and_changes_nothing(
) -> anyhow::Result<()> {
    let dir = scratch("refuse-http");
    let node = Lockstep::spawn(
        &dir,
        &[],
        &[
            ("LOCKSTEP__HTTP__BIND", "127.0.0.1:0".into()),
            ("LOCKSTEP__DEMO__SIMULATOR_BIND", "127.0.0.1:0".into()),
        ],
    )
    .await?;
    let token = std::fs::read_to_string(dir.join(".lockstep/service-token"))?;
    let client = reqwest::Client::new();
    let (from, until) = ("2027-06-01T14:00:00Z", "2027-06-02T10:00:00Z");
    let cases = [
        (
            "unknown_property",
            "ppt_nowhere",
            "rsv_h1",
            "rmu_101",
            from,
            until,
        ),
        (
            "unserved_room",
            "ppt_demo",
            "rsv_h2",
            "rmu_999",
            from,
            until,
        ),
        (
            "window_ended",
            "ppt_demo",
            "rsv_h3",
            "rmu_101",
            "2020-06-01T14:00:00Z",
            "2020-06-02T10:00:00Z",
        ),
    ];
    for (i, (reason, property, reservation, room, from, until)) in cases.iter().enumerate() {
        let body = confirmed(
            &format!("evt-h{i}"),
            DEMO_TENANT,
            property,
            reservation,
            1,
            &[room],
            from,
            until,
        );
        let r = client
            .post(format!("{}/api/v1/intake", node.http))
            .bearer_auth(&token)
            .body(body)
            .send()
            .await?;
        assert_eq!(r.status(), 422, "{reason}");
        let v: Value = r.json().await?;
        assert_eq!(v["code"], "MELMASTOON.GENERAL.VALIDATION_FAILED", "{v}");
        assert_eq!(v["details"]["reason"], *reason, "{v}");
    }
    // nothing changed: no credential, no event
    for (_, _, reservation, ..) in &cases {
        let v: Value = client
            .get(format!(
                "{}/api/v1/key-credentials?reservationId={reservation}",
                node.http
            ))
            .bearer_auth(&token)
            .header("x-tenant-id", DEMO_TENANT)
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(v["items"], json!([]), "{reservation}");
    }
    let events: Value = client
        .get(format!("{}/api/v1/events", node.http))
        .bearer_auth(&token)
        .header("x-tenant-id", DEMO_TENANT)
        .send()
        .await?
        .json()
        .await?;
    let credential_events: Vec<&Value> = events["items"]
        .as_array()
        .map(|a| a.iter().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("melmastoon.lock.credential."))
        })
        .collect();
    assert!(credential_events.is_empty(), "{credential_events:?}");
    for reason in ["unknown_property", "unserved_room", "window_ended"] {
        let v = metric(
            &node.http,
            &format!("lockstep_intake_dead_letters_total{{reason=\"{reason}\"}}"),
        )
        .await;
        assert_eq!(v, Some(1.0), "{reason} counted");
    }
    Ok(())
}

/// The demo tenant's properties, one per built-in simulator.
const DEMO_PROPERTIES: [&str; 5] = [
    "ppt_demo",
    "ppt_demo_salto",
    "ppt_demo_vostio",
    "ppt_demo_kisi",
    "ppt_demo_brivo",
];

/// An embedded node on free ports (the demo tenant, its five vendors' simulators), with
/// the service token and a client.
struct Embedded {
    node: Lockstep,
    token: String,
    http: reqwest::Client,
}

impl Embedded {
    async fn start(name: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let dir = scratch(name);
        let mut vars = vec![
            ("LOCKSTEP__HTTP__BIND", "127.0.0.1:0".to_owned()),
            ("LOCKSTEP__DEMO__SIMULATOR_BIND", "127.0.0.1:0".to_owned()),
        ];
        vars.extend(env.iter().map(|(k, v)| (*k, v.clone())));
        let node = Lockstep::spawn(&dir, &[], &vars).await?;
        let token = std::fs::read_to_string(dir.join(".lockstep/service-token"))?;
        let e = Self {
            node,
            token: token.trim().to_owned(),
            http: reqwest::Client::new(),
        };
        e.startup_events_published().await?;
        Ok(e)
    }

    /// Waits until the seed's `device.registered` events (one per demo device, written
    /// with the devices and published by the outbox after readiness) are all out, so a
    /// test's "events before" is not taken while they still trickle in.
    async fn startup_events_published(&self) -> anyhow::Result<()> {
        let mut devices = 0;
        for property in DEMO_PROPERTIES {
            devices += self.devices(property).await?.len();
        }
        anyhow::ensure!(devices > 0, "the demo seeds devices");
        wait_for(
            "the demo's device.registered events",
            Duration::from_secs(60),
            || async {
                let counts = self.event_counts().await.ok()?;
                (counts.get("melmastoon.lock.device.registered.v1") == Some(&devices)).then_some(())
            },
        )
        .await
    }

    /// POSTs `body` (as JSON) to `path`; the status and the JSON answer (`null` if none).
    async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}{path}", self.node.http))
            .bearer_auth(&self.token)
            .header("x-tenant-id", DEMO_TENANT)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}{path}", self.node.http))
            .bearer_auth(&self.token)
            .header("x-tenant-id", DEMO_TENANT)
            .send()
            .await?
            .json()
            .await?)
    }

    async fn credentials(&self, reservation: &str) -> anyhow::Result<Vec<Value>> {
        let v = self
            .get(&format!(
                "/api/v1/key-credentials?reservationId={reservation}"
            ))
            .await?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    async fn wait_active(&self, reservation: &str) -> anyhow::Result<Value> {
        self.wait_state(reservation, "active").await
    }

    async fn wait_state(&self, reservation: &str, state: &str) -> anyhow::Result<Value> {
        wait_for(reservation, Duration::from_secs(60), || async {
            self.credentials(reservation)
                .await
                .ok()
                .and_then(|c| c.into_iter().find(|c| c["state"] == state))
        })
        .await
    }

    /// How many credential and device-registration events the tenant's recent events
    /// hold, by subject (health readings come and go on their own).
    async fn event_counts(&self) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
        let v = self.get("/api/v1/events?limit=1000").await?;
        let mut counts = std::collections::BTreeMap::new();
        for e in v["items"].as_array().into_iter().flatten() {
            let subject = e["subject"].as_str().unwrap_or_default();
            if subject.starts_with("melmastoon.lock.credential.")
                || subject == "melmastoon.lock.device.registered.v1"
            {
                *counts.entry(subject.to_owned()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    async fn devices(&self, property: &str) -> anyhow::Result<Vec<Value>> {
        let v = self
            .get(&format!("/api/v1/lock-devices?propertyId={property}"))
            .await?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    async fn dead_letter_count(&self, reason: &str) -> Option<f64> {
        metric(
            &self.node.http,
            &format!("lockstep_intake_dead_letters_total{{reason=\"{reason}\"}}"),
        )
        .await
    }
}

/// A future stay at the demo property, as JSON text with `data`'s fields in this order.
fn demo_stay(id: &str, reservation: &str, room: &str) -> String {
    String::from_utf8(confirmed(
        id,
        DEMO_TENANT,
        "ppt_demo",
        reservation,
        1,
        &[room],
        "2027-06-01T14:00:00Z",
        "2027-06-02T10:00:00Z",
    ))
    .expect("JSON is UTF-8")
}

/// A key given twice meant the last one to serde and maybe the first to whatever read the
/// body before Lockstep: a body with a repeated key, at any depth, is refused with 400
/// `VALIDATION_FAILED` by the REST API and by the HTTP intake (`details.reason`
/// `duplicate_key`, counted), and changes nothing. Not JSON at all is 400 `malformed` at
/// the intake. Fails without the strict reader: serde keeps the last key and the bodies
/// are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_names_a_key_twice_is_refused_with_400_and_changes_nothing(
) -> anyhow::Result<()> {
    let e = Embedded::start("refuse-dupkey-http", &[]).await?;
    let before = e.event_counts().await?;

    // the HTTP intake: a room given twice, an envelope id given twice, not JSON
    let rooms_twice = demo_stay("evt-dup-1", "rsv_dup_1", "rmu_101").replace(
        r#""roomIds":["rmu_101"]"#,
        r#""roomIds":["rmu_101"],"roomIds":["rmu_102"]"#,
    );
    assert!(rooms_twice.contains("rmu_102"), "{rooms_twice}");
    let id_twice = demo_stay("evt-dup-2", "rsv_dup_2", "rmu_101").replacen(
        r#""id":"evt-dup-2","#,
        r#""id":"evt-dup-2","id":"evt-dup-3","#,
        1,
    );
    assert!(id_twice.contains("evt-dup-3"), "{id_twice}");
    for (what, body) in [("rooms twice", rooms_twice), ("id twice", id_twice)] {
        let (s, v) = e.post("/api/v1/intake", body).await?;
        assert_eq!(s, 400, "{what}: {v}");
        assert_eq!(v["code"], "MELMASTOON.GENERAL.VALIDATION_FAILED", "{what}");
        assert_eq!(v["details"]["reason"], "duplicate_key", "{what}: {v}");
        assert!(
            v["details"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("duplicate key")),
            "{what}: {v}"
        );
    }
    let (s, v) = e.post("/api/v1/intake", "a reservation, please").await?;
    assert_eq!(s, 400, "not JSON: {v}");
    assert_eq!(v["details"]["reason"], "malformed", "{v}");

    // the REST API: an issue by hand, a device registration, a revoke
    let (s, v) = e
        .post(
            "/api/v1/key-credentials",
            r#"{"propertyId":"ppt_demo","reservationId":"rsv_dup_4","revision":1,"guestId":"gst_4","roomIds":["rmu_103"],"validFrom":"2027-06-01T14:00:00Z","validUntil":"2027-06-02T10:00:00Z","validUntil":"2027-06-09T10:00:00Z"}"#,
        )
        .await?;
    assert_eq!(s, 400, "issue: {v}");
    assert!(
        v["details"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("duplicate key")),
        "{v}"
    );
    let adapters = e.get("/api/v1/vendor-adapters?propertyId=ppt_demo").await?;
    let ttlock = adapters["items"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["vendor"] == "ttlock"))
        .and_then(|i| i["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let (s, v) = e
        .post(
            "/api/v1/lock-devices",
            format!(
                r#"{{"propertyId":"ppt_demo","vendorAdapterId":"{ttlock}","vendorDeviceRef":"1001","label":"Dup label A","roomIds":["rmu_101"],"label":"Dup label B"}}"#
            ),
        )
        .await?;
    assert_eq!(s, 400, "register: {v}");

    // a live key, and a revoke whose reason is given twice
    let (s, v) = e
        .post(
            "/api/v1/intake",
            demo_stay("evt-live", "rsv_live", "rmu_104"),
        )
        .await?;
    assert_eq!(s, 202, "{v}");
    let live = e.wait_active("rsv_live").await?;
    let id = live["id"].as_str().unwrap_or_default().to_owned();
    let (s, v) = e
        .post(
            &format!("/api/v1/key-credentials/{id}/revoke"),
            r#"{"reason":"checkout","reason":"security"}"#,
        )
        .await?;
    assert_eq!(s, 400, "revoke: {v}");
    // a suspend after it: commands of one credential run in order, so had the revoke
    // been sent, the key would be revoked and the suspend refused
    let (s, v) = e
        .post(&format!("/api/v1/key-credentials/{id}/suspend"), "")
        .await?;
    assert!(s == 200 || s == 202, "suspend: {v}");
    e.wait_state("rsv_live", "suspended").await?;

    // nothing changed: no credential for the refused stays and issue, no device, no
    // event but the live key's requested, issued and suspended
    for r in ["rsv_dup_1", "rsv_dup_2", "rsv_dup_4"] {
        assert_eq!(e.credentials(r).await?, Vec::<Value>::new(), "{r}");
    }
    assert!(
        !e.devices("ppt_demo").await?.iter().any(|d| d["label"]
            .as_str()
            .is_some_and(|l| l.starts_with("Dup label"))),
        "no device registered"
    );
    let mut expected = before.clone();
    for s in ["requested", "issued", "suspended"] {
        *expected
            .entry(format!("melmastoon.lock.credential.{s}.v1"))
            .or_insert(0) += 1;
    }
    // the suspended event is committed with the state but published by the outbox after
    // it: wait for the counts to reach what is expected, then hold them to it exactly
    let _ = wait_for("the live key's events", Duration::from_secs(30), || async {
        (e.event_counts().await.ok()? == expected).then_some(())
    })
    .await;
    assert_eq!(e.event_counts().await?, expected);
    assert_eq!(e.dead_letter_count("duplicate_key").await, Some(2.0));
    assert_eq!(e.dead_letter_count("malformed").await, Some(1.0));
    Ok(())
}

/// `traceId` goes into logs, spans and produced events: only 1 to 128 of
/// `[A-Za-z0-9._:-]` is taken (W3C trace ids, ULIDs, UUIDs fit); anything else is refused
/// as `malformed` (422 at the HTTP intake, counted) and changes nothing. Fails without the
/// envelope schema's pattern: these envelopes are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_id_outside_the_safe_charset_is_refused_and_changes_nothing() -> anyhow::Result<()>
{
    let e = Embedded::start("refuse-trace", &[]).await?;
    let with_trace = |id: &str, reservation: &str, trace: &str| -> anyhow::Result<String> {
        let mut v: Value = serde_json::from_str(&demo_stay(id, reservation, "rmu_101"))?;
        v["traceId"] = trace.into();
        Ok(serde_json::to_string(&v)?)
    };
    let bad = [
        ("a space", "abc def"),
        ("a newline (log forging)", "abc\nlevel=error msg=forged"),
        ("a bidi override", "abc\u{202E}fed"),
        ("markup", "<script>alert(1)</script>"),
        ("empty", ""),
        ("129 characters", &"a".repeat(129)),
    ];
    for (i, (what, trace)) in bad.iter().enumerate() {
        let (s, v) = e
            .post(
                "/api/v1/intake",
                with_trace(&format!("evt-tr-{i}"), &format!("rsv_tr_{i}"), trace)?,
            )
            .await?;
        assert_eq!(s, 422, "{what}: {v}");
        assert_eq!(v["details"]["reason"], "malformed", "{what}: {v}");
        assert!(
            v["details"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("traceId")),
            "{what}: {v}"
        );
    }
    // a W3C traceparent is fine
    let good = with_trace(
        "evt-tr-good",
        "rsv_tr_good",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )?;
    let (s, v) = e.post("/api/v1/intake", good).await?;
    assert_eq!(s, 202, "{v}");
    e.wait_active("rsv_tr_good").await?;
    for i in 0..bad.len() {
        assert_eq!(
            e.credentials(&format!("rsv_tr_{i}")).await?,
            Vec::<Value>::new()
        );
    }
    assert_eq!(
        e.dead_letter_count("malformed").await,
        Some(bad.len() as f64)
    );
    Ok(())
}

/// A device's label is shown to staff in lists and events: control characters and the
/// Unicode bidi controls that make text display in another order than it is stored
/// (U+202A..U+202E, U+2066..U+2069, U+200E, U+200F, U+061C) are refused with 422
/// `VALIDATION_FAILED` naming `label`, and nothing is registered. Fails without the bidi
/// check (a control character alone was refused before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_with_control_or_bidi_characters_is_refused_and_registers_nothing(
) -> anyhow::Result<()> {
    let e = Embedded::start("refuse-label", &[]).await?;
    let sim = demo_sim_url(&e.node);
    e.http.post(format!("{sim}/_sim/locks/2002")).send().await?;
    let adapters = e.get("/api/v1/vendor-adapters?propertyId=ppt_demo").await?;
    let ttlock = adapters["items"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["vendor"] == "ttlock"))
        .and_then(|i| i["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let body = |label: &str| {
        json!({
            "propertyId": "ppt_demo",
            "vendorAdapterId": ttlock,
            "vendorDeviceRef": "2002",
            "label": label,
            "roomIds": ["rmu_202"],
        })
        .to_string()
    };
    let before = e.event_counts().await?;
    for c in [
        '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}', '\u{0007}', '\u{001B}',
        '\u{0085}',
    ] {
        let label = format!("Room 2{c}02 door");
        let (s, v) = e.post("/api/v1/lock-devices", body(&label)).await?;
        assert_eq!(s, 422, "U+{:04X}: {v}", u32::from(c));
        assert_eq!(v["code"], "MELMASTOON.GENERAL.VALIDATION_FAILED");
        assert_eq!(v["details"]["field"], "label", "{v}");
    }
    assert_eq!(
        e.event_counts().await?,
        before,
        "no device.registered event"
    );
    assert!(e
        .devices("ppt_demo")
        .await?
        .iter()
        .all(|d| d["rooms"] != json!(["rmu_202"])));
    // the same body with a plain label registers: only the label was wrong
    let (s, v) = e
        .post("/api/v1/lock-devices", body("Room 202 door · Zimmer 202"))
        .await?;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["label"], "Room 202 door · Zimmer 202");
    Ok(())
}

/// A device ref the adapter could never use (not a TTLock lockId, not a Kisi
/// `"<group>:<lock>"`, ...) was found only at the probe and answered 502
/// `VENDOR_UNREACHABLE`: each adapter now checks the form first, and it is 422
/// `VALIDATION_FAILED` naming `vendorDeviceRef`, without a vendor call, and nothing is
/// registered. Checked for every demo adapter of the five vendors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_device_ref_is_422_for_every_vendor_and_registers_nothing() -> anyhow::Result<()>
{
    let e = Embedded::start("refuse-device-ref", &[]).await?;
    let adapters = e.get("/api/v1/vendor-adapters").await?;
    let mut vendors = BTreeSet::new();
    let before = e.event_counts().await?;
    for a in adapters["items"].as_array().into_iter().flatten() {
        let vendor = a["vendor"].as_str().unwrap_or_default().to_owned();
        if !["ttlock", "salto", "assa-abloy", "kisi", "brivo"].contains(&vendor.as_str()) {
            continue;
        }
        let property = a["propertyId"].as_str().unwrap_or_default().to_owned();
        let devices_before = e.devices(&property).await?.len();
        let (s, v) = e
            .post(
                "/api/v1/lock-devices",
                json!({
                    "propertyId": property,
                    "vendorAdapterId": a["id"],
                    "vendorDeviceRef": "x/y",
                    "label": "A door",
                    "roomIds": ["rmu_901"],
                })
                .to_string(),
            )
            .await?;
        assert_eq!(s, 422, "{vendor}: {v}");
        assert_eq!(
            v["code"], "MELMASTOON.GENERAL.VALIDATION_FAILED",
            "{vendor}"
        );
        assert_eq!(v["details"]["field"], "vendorDeviceRef", "{vendor}: {v}");
        assert!(!v.to_string().contains("x/y"), "the ref is not echoed: {v}");
        assert_eq!(
            e.devices(&property).await?.len(),
            devices_before,
            "{vendor}"
        );
        vendors.insert(vendor);
    }
    assert_eq!(
        vendors,
        ["assa-abloy", "brivo", "kisi", "salto", "ttlock"]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        "every vendor's adapter was tried"
    );
    assert_eq!(
        e.event_counts().await?,
        before,
        "no device.registered event"
    );
    Ok(())
}

/// Sends `head` and then `body` (which may be short of its Content-Length) on a raw
/// connection, keeps it open, and reads until the server answers and closes it, for at
/// most `limit`. The answer, how long it took to start from the last byte sent, and how
/// long until the server closed the connection.
async fn stall(
    addr: &str,
    head: &str,
    body: &str,
    limit: Duration,
) -> anyhow::Result<(String, Duration, Duration)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body.as_bytes()).await?;
    socket.flush().await?;
    #[allow(clippy::disallowed_methods)] // measuring the cut-off, not business time
    let sent = std::time::Instant::now();
    let kept_open = || anyhow::anyhow!("the server kept a stalled request open for {limit:?}");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(limit, socket.read(&mut answer))
        .await
        .map_err(|_| kept_open())??;
    let answered = sent.elapsed();
    answer.truncate(n);
    tokio::time::timeout(limit, socket.read_to_end(&mut answer))
        .await
        .map_err(|_| kept_open())??;
    Ok((
        String::from_utf8_lossy(&answer).into_owned(),
        answered,
        sent.elapsed(),
    ))
}

/// A client that sends its headers and half a body and then stalls held its request open
/// for as long as it liked: the body must arrive within `[http] read_timeout_ms` (here
/// 500 ms), or the answer is 408 `REQUEST_TIMEOUT` and the connection is closed. A head
/// that stalls is cut off the same way. Nothing is stored, and the node keeps serving.
/// Fails without the body deadline: the server waits for the body until the test's 10 s
/// bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stalls_is_cut_off_with_408() -> anyhow::Result<()> {
    let e = Embedded::start(
        "refuse-stall",
        &[("LOCKSTEP__HTTP__READ_TIMEOUT_MS", "500".to_owned())],
    )
    .await?;
    let addr = e.node.http.trim_start_matches("http://").to_owned();
    let body = demo_stay("evt-stall", "rsv_stall", "rmu_101");
    let half = &body[..body.len() / 2];
    let head = format!(
        "POST /api/v1/intake HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        e.token,
        body.len()
    );
    let (answer, took, closed) = stall(&addr, &head, half, Duration::from_secs(10)).await?;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("MELMASTOON.GENERAL.REQUEST_TIMEOUT"),
        "{answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(5), "cut off after {took:?}");
    println!("a stalled body was answered 408 after {took:?}, closed after {closed:?}");

    // a head that stalls
    let (answer, took, closed) = stall(
        &addr,
        "POST /api/v1/intake HTTP/1.1\r\nHost: x\r\nContent-Le",
        "",
        Duration::from_secs(10),
    )
    .await?;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    println!("a stalled head was answered 408 after {took:?}, closed after {closed:?}");

    // the whole body in time is accepted on the same terms, and the stalled one left
    // nothing behind
    let (s, v) = e.post("/api/v1/intake", body).await?;
    assert_eq!(s, 202, "{v}");
    let key = e.wait_active("rsv_stall").await?;
    assert_eq!(e.credentials("rsv_stall").await?.len(), 1, "{key}");
    Ok(())
}

/// Through RabbitMQ: an envelope that names a key twice (at the top or inside `data`) is
/// dead-lettered as `duplicate_key`, one whose `traceId` leaves the safe charset as
/// `malformed`; each is counted and changes nothing. Fails without the strict reader
/// (serde keeps the last key and the stays are issued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_or_unsafe_envelope_is_dead_lettered_and_changes_nothing() -> anyhow::Result<()>
{
    let p = Prod::start("refuse-dupkey-amqp").await?;
    let (from, until) = ("2027-06-01T14:00:00Z", "2027-06-02T10:00:00Z");
    let key = "melmastoon.reservation.confirmed.v1";
    let text = |id: &str, reservation: &str, room: &str| {
        String::from_utf8(stay(id, PROPERTY, reservation, room, from, until))
            .expect("JSON is UTF-8")
    };
    // a second room nobody asked for, given as the same key again
    let rooms_twice = text("evt-dup-rooms", "rsv_dup_rooms", "rmu_7001").replace(
        r#""roomIds":["rmu_7001"]"#,
        r#""roomIds":["rmu_7001"],"roomIds":["rmu_7002"]"#,
    );
    assert!(rooms_twice.contains("rmu_7002"));
    // the tenant given twice: which tenant's stay is it?
    let tenant_twice = text("evt-dup-tenant", "rsv_dup_tenant", "rmu_7001").replacen(
        &format!(r#""tenantId":"{TENANT}""#),
        &format!(r#""tenantId":"{TENANT}","tenantId":"{DEMO_TENANT}""#),
        1,
    );
    assert!(tenant_twice.contains(DEMO_TENANT));
    let mut traced: Value = serde_json::from_str(&text("evt-trace", "rsv_trace", "rmu_7001"))?;
    traced["traceId"] = "abc\nlevel=error msg=forged".into();
    for (body, id) in [
        (rooms_twice.into_bytes(), "msg-dup-rooms"),
        (tenant_twice.into_bytes(), "msg-dup-tenant"),
        (serde_json::to_vec(&traced)?, "msg-trace"),
    ] {
        assert!(p.publish(key, &body, id).await?, "{id} routed");
    }
    let good = stay("evt-good", PROPERTY, "rsv_good", "rmu_7002", from, until);
    assert!(p.publish(key, &good, "msg-good").await?);

    let dead = p.dead_letters(3).await?;
    let reasons: BTreeSet<(String, String)> = dead
        .iter()
        .map(|m| {
            (
                m["messageId"].as_str().unwrap_or_default().to_owned(),
                m["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("msg-dup-rooms", "duplicate_key"),
            ("msg-dup-tenant", "duplicate_key"),
            ("msg-trace", "malformed"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect(),
        "{dead:?}"
    );
    let detail = |id: &str| {
        dead.iter()
            .find(|m| m["messageId"] == id)
            .and_then(|m| m["detail"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(detail("msg-dup-rooms").contains("roomIds"), "{dead:?}");
    assert!(detail("msg-trace").contains("traceId"), "{dead:?}");

    let good = p.wait_active("rsv_good").await?;
    for r in ["rsv_dup_rooms", "rsv_dup_tenant", "rsv_trace"] {
        assert_eq!(p.credentials(r).await?, Vec::<Value>::new(), "{r}");
    }
    assert_eq!(p.lock_events(), issued_alone(good["id"].as_str().unwrap()));
    assert_eq!(p.sim.handle().passcodes(7001).len(), 0);
    assert_eq!(p.dead_letter_count("duplicate_key").await, Some(2.0));
    assert_eq!(p.dead_letter_count("malformed").await, Some(1.0));
    Ok(())
}

/// Issue 14, property deactivation (the decision in ARCHITECTURE.md): once
/// `tenant.property.deactivated.v1` has entered, the property's live keys are revoked and
/// an event that would put a key on its doors — a confirmation, a shift start — is refused
/// with 422 `property_deactivated` (a dead letter on the broker) and issues nothing, while
/// a removal still goes through. Another property of the tenant is untouched. Fails without
/// the recorded deactivation: the later confirmation is accepted and its PIN reaches lock
/// 1002.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_property_refuses_new_keys_and_still_takes_removals() -> anyhow::Result<()> {
    let dir = scratch("refuse-deactivated");
    let node = Lockstep::spawn(
        &dir,
        &[],
        &[
            ("LOCKSTEP__HTTP__BIND", "127.0.0.1:0".into()),
            ("LOCKSTEP__DEMO__SIMULATOR_BIND", "127.0.0.1:0".into()),
        ],
    )
    .await?;
    let token = std::fs::read_to_string(dir.join(".lockstep/service-token"))?;
    let sim = demo_sim_url(&node);
    let client = reqwest::Client::new();
    let post = |body: String| {
        let req = client
            .post(format!("{}/api/v1/intake", node.http))
            .bearer_auth(&token)
            .body(body);
        async move {
            let r = req.send().await?;
            let status = r.status().as_u16();
            let v: Value = r.json().await?;
            anyhow::Ok((status, v))
        }
    };
    let state = |reservation: &'static str| {
        let req = client
            .get(format!(
                "{}/api/v1/key-credentials?reservationId={reservation}",
                node.http
            ))
            .bearer_auth(&token)
            .header("x-tenant-id", DEMO_TENANT);
        async move {
            let v: Value = req.send().await.ok()?.json().await.ok()?;
            v["items"][0]["state"].as_str().map(str::to_owned)
        }
    };
    let passcodes = |lock: i64| {
        let url = format!("{sim}/_sim/locks/{lock}/passcodes");
        async move {
            let v: Value = reqwest::get(url).await?.json().await?;
            anyhow::Ok(v.as_array().map_or(0, Vec::len))
        }
    };
    assert_eq!(post(demo_stay("evt-d1", "rsv_d1", "rmu_101")).await?.0, 202);
    wait_for("rsv_d1 active", Duration::from_secs(30), || async {
        state("rsv_d1").await.filter(|s| s == "active")
    })
    .await?;
    let deactivated = json!({
        "id": "evt-d2", "subject": "melmastoon.tenant.property.deactivated.v1",
        "time": "2026-11-24T10:00:00Z", "tenantId": DEMO_TENANT, "propertyId": "ppt_demo",
        "data": { "reason": "closed" }
    });
    assert_eq!(post(deactivated.to_string()).await?.0, 202);
    wait_for("rsv_d1 revoked", Duration::from_secs(30), || async {
        state("rsv_d1").await.filter(|s| s == "revoked")
    })
    .await?;
    // a new stay there: refused, nothing made
    let (status, v) = post(demo_stay("evt-d3", "rsv_d3", "rmu_102")).await?;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["details"]["reason"], "property_deactivated", "{v}");
    let shift = json!({
        "id": "evt-d4", "subject": "melmastoon.staff.shift.started.v1",
        "time": "2026-11-24T10:00:00Z", "tenantId": DEMO_TENANT, "propertyId": "ppt_demo",
        "data": {
            "shiftId": "shf_d4", "staffUserId": "usr_d4",
            "scope": { "kind": "room", "roomIds": ["rmu_103"] },
            "validFrom": "2027-06-01T08:00:00Z", "validUntil": "2027-06-01T16:00:00Z"
        }
    });
    let (status, v) = post(shift.to_string()).await?;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["details"]["reason"], "property_deactivated", "{v}");
    // a removal is still taken
    let (status, v) = post(String::from_utf8(cancelled(
        "evt-d5",
        DEMO_TENANT,
        "ppt_demo",
        "rsv_d1",
        2,
    ))?)
    .await?;
    assert_eq!(status, 202, "{v}");
    // another property of the tenant still issues: once its key is on its door, every
    // refusal above was judged
    let other = String::from_utf8(confirmed(
        "evt-d6",
        DEMO_TENANT,
        "ppt_demo_brivo",
        "rsv_d6",
        1,
        &["rmu_b401"],
        "2027-06-01T14:00:00Z",
        "2027-06-02T10:00:00Z",
    ))?;
    assert_eq!(post(other).await?.0, 202);
    wait_for("rsv_d6 active", Duration::from_secs(30), || async {
        state("rsv_d6").await.filter(|s| s == "active")
    })
    .await?;
    assert!(state("rsv_d3").await.is_none(), "no credential for rsv_d3");
    for lock in [1001, 1002, 1003] {
        assert_eq!(passcodes(lock).await?, 0, "lock {lock}");
    }
    assert_eq!(
        metric(
            &node.http,
            "lockstep_intake_dead_letters_total{reason=\"property_deactivated\"}"
        )
        .await,
        Some(2.0)
    );
    Ok(())
}

/// Issue 14, kinds: a property's policy that names `qr_code` or `nfc_tag` is refused when
/// it is configured, naming the property, the kind and the missing capability, since no
/// adapter of the property (none of the five vendors today) issues it: the node does not
/// start, instead of failing a guest's key at check-in. The same property with a policy of
/// kinds its TTLock lock issues starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_naming_a_kind_no_adapter_issues_is_refused_at_configuration() -> anyhow::Result<()>
{
    let sim = simulator(&[7401])?;
    let cfg = sim.default_adapter_config();
    let dir = scratch("refuse-policy-kind");
    let config = |preferred: &str| {
        format!(
            r#"
[demo]
enabled = false

[http]
bind = "127.0.0.1:0"
service_token = {{ value = "policy-token" }}

[[properties]]
tenant_id = "{TENANT}"
property_id = "ppt_policy"

[properties.policy]
preferred_order = [{preferred}]
fallback_chain = ["mobile_app"]

[[properties.adapters]]
id = "vad_01J0000000000000000000Q001"
vendor = "ttlock"
api_base_url = "{url}"
client_id = "{client_id}"
client_secret = {{ value = "{secret}" }}
username = "{username}"
password = {{ value = "{password}" }}
rate_limit_per_min = 0
precedence = 7
enabled = false

[[properties.devices]]
id = "lck_01J0000000000000000000Q001"
adapter = "vad_01J0000000000000000000Q001"
vendor_device_ref = "7401"
label = "Room 7401"
rooms = ["rmu_7401"]
"#,
            url = cfg.api_base_url,
            client_id = cfg.client_id,
            secret = cfg.client_secret.expose(),
            username = cfg.username,
            password = cfg.password.expose(),
        )
    };
    for (kind, capability) in [("qr_code", "qr"), ("nfc_tag", "nfc")] {
        let path = dir.join(format!("{kind}.toml"));
        std::fs::write(&path, config(&format!("\"{kind}\", \"pin_code\"")))?;
        let run = lockstep_cli_in(&dir, &["--config", &path.to_string_lossy()]).await?;
        assert!(!run.ok, "{kind}: the node started");
        for needle in ["ppt_policy", kind, &format!("the {capability} capability")] {
            assert!(run.stderr.contains(needle), "{kind}: {}", run.stderr);
        }
    }
    let path = dir.join("issuable.toml");
    std::fs::write(&path, config("\"pin_code\""))?;
    let node = Lockstep::spawn(&dir, &["--config", &path.to_string_lossy()], &[]).await?;
    wait_ready(&node).await?;
    // Spec 003 §3: the adapter's precedence and enabled are read and served.
    let adapters: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/vendor-adapters", node.http))
        .bearer_auth("policy-token")
        .header("x-tenant-id", TENANT)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(adapters["items"][0]["precedence"], 7, "{adapters}");
    assert_eq!(adapters["items"][0]["enabled"], false, "{adapters}");
    Ok(())
}
