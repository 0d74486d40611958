//! The front desk end to end (issue 12): the real binary in production mode serves the
//! desktop relay; a property's rooms are `generic-wiegand` card locks; three desktop
//! agents connect over real WebSockets and authenticate with certificates the node
//! issued; every stay's card is encoded exactly once, through an agent killed mid-job and
//! the node SIGKILLed once; every encoder session is opened and closed with its events.
//!
//! Deadlines here are wall-clock on purpose: they bound how long a test waits for real
//! processes, not any business time.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use lockstep_domain::{OfflineIssuanceId, PropertyId, SystemClock, TenantId};
use lockstep_persistence::testing::{fresh_pg_database, PgTestDb};
use lockstep_relay::agent::{
    Agent, AgentConfig, AgentHandle, AgentKey, AgentStatus, AttachedEncoder, MemoryEncodedJobs,
    SimulatedEncoder,
};
use lockstep_relay::protocol::{EncoderId, EncoderInfo, Transport};
use serde_json::{json, Value};

use crate::harness::*;

pub(super) const TENANT: &str = "6a1d2c3b-4e5f-4a7b-8c9d-0e1f2a3b4c5d";
pub(super) const PROPERTY: &str = "ppt_desk";
const ADAPTER: &str = "vad_01J0000000000000000000DESK";
pub(super) const TOKEN: &str = "it-desk-token";
const OPENED: &str = "melmastoon.lock.encoder_session.opened.v1";
const CLOSED: &str = "melmastoon.lock.encoder_session.closed.v1";
pub(super) const ISSUED: &str = "melmastoon.lock.credential.issued.v1";

pub(super) fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub(super) fn room(i: usize) -> String {
    format!("rmu_d{i:03}")
}

/// Production config: one property, `rooms` Wiegand card locks, rfid cards preferred, the
/// relay on `relay_port` with test-short timeouts.
pub(super) fn write_config(
    dir: &Path,
    db: &PgTestDb,
    vhost: &Vhost,
    rooms: usize,
    relay_port: u16,
) -> anyhow::Result<PathBuf> {
    let mut toml = format!(
        r#"mode = "production"
node_id = "it-desk-node"

[http]
bind = "127.0.0.1:0"
service_token = {{ value = "{TOKEN}" }}

[database]
url = {{ value = "{app}" }}
worker_url = {{ value = "{worker}" }}
max_connections = 8

[encryption]
key = {{ value = "{key}" }}

[offline]
signing_key = {{ value = "{signing}" }}

[amqp]
url = {{ value = "{amqp}" }}
partitions = 4
tick_interval_ms = 500
standby_delay_ms = 0
delivery_limit = 5

[saga]
retry_base_ms = 100
retry_cap_ms = 1000
vendor_call_timeout_ms = 10000

[breaker]
open_ms = 500
open_max_ms = 1000

[drift]
interval_ms = 0

[demo]
enabled = false

[relay]
bind = "127.0.0.1:{relay_port}"
heartbeat_interval_ms = 300
idle_timeout_ms = 2000
ack_timeout_ms = 2000
reconnect_grace_ms = 500
holder_grace_ms = 4000
shutdown_grace_ms = 1000

[[properties]]
tenant_id = "{TENANT}"
property_id = "{PROPERTY}"

[properties.policy]
preferred_order = ["rfid_card"]
fallback_chain = ["pin_code"]
allow_offline_issuance_kinds = ["rfid_card"]

[[properties.adapters]]
id = "{ADAPTER}"
vendor = "generic-wiegand"
desktop_ack_timeout_ms = 2000
"#,
        app = db.app_url,
        worker = db.worker_url,
        key = "11".repeat(32),
        signing = "22".repeat(32),
        amqp = vhost.url,
    );
    for i in 0..rooms {
        toml.push_str(&format!(
            "\n[[properties.devices]]\nid = \"lck_01J{i:0>23}\"\nadapter = \"{ADAPTER}\"\nvendor_device_ref = \"wg-door-{i}\"\nlabel = \"Room {i}\"\nrooms = [\"{}\"]\n",
            room(i)
        ));
    }
    let path = dir.join("lockstep.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// A desktop: its key seed, its certificate, its record of encoded cards (kept across a
/// restart of the agent, as the SQLite mirror is) and every simulated encoder it ran.
pub(super) struct Desk {
    name: String,
    seed: [u8; 32],
    certificate: String,
    record: Arc<MemoryEncodedJobs>,
    encoders: Vec<Arc<SimulatedEncoder>>,
    /// When the node issued the certificate, on the node's clock.
    pub(super) issued_at: lockstep_domain::Timestamp,
}

pub(super) async fn pair(node: &Lockstep, name: &str) -> anyhow::Result<Desk> {
    let seed: [u8; 32] = rand_seed();
    let key = AgentKey::from_seed(seed);
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/offline-issuance/certificates",
            node.http
        ))
        .bearer_auth(TOKEN)
        .header("x-tenant-id", TENANT)
        .json(&json!({
            "propertyId": PROPERTY,
            "desktopDeviceId": name,
            "publicKeyEd25519": key.public_key_base64(),
        }))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 201, "certificate: {}", resp.text().await?);
    let body: Value = resp.json().await?;
    Ok(Desk {
        name: name.to_owned(),
        seed,
        certificate: body["id"].as_str().unwrap_or_default().to_owned(),
        record: Arc::new(MemoryEncodedJobs::default()),
        encoders: Vec::new(),
        issued_at: body["issuedAt"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| anyhow::anyhow!("certificate without issuedAt: {body}"))?,
    })
}

fn rand_seed() -> [u8; 32] {
    let hex = lockstep_persistence::Cipher::generate_hex();
    lockstep_persistence::audit::key_bytes(&hex).expect("64 hex digits")
}

/// Starts (or restarts) the agent of `desk` with one fresh simulated encoder.
pub(super) fn start_agent(desk: &mut Desk, url: &str, encode: Duration) -> AgentHandle {
    start_agent_on(desk, url, encode, Arc::new(SystemClock))
}

/// [`start_agent`] with the desk's clock (a node on a scaled clock checks a desk's
/// signature time against its own).
pub(super) fn start_agent_on(
    desk: &mut Desk,
    url: &str,
    encode: Duration,
    clock: Arc<dyn lockstep_domain::Clock>,
) -> AgentHandle {
    let mut config = AgentConfig::new(
        url.to_owned(),
        OfflineIssuanceId::parse(&desk.certificate).expect("an oki_ id"),
        TenantId::parse(TENANT).expect("a uuid"),
        PropertyId::parse(PROPERTY).expect("a property id"),
        desk.name.clone(),
    );
    config.backoff_min = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(500);
    let encoder = Arc::new(SimulatedEncoder::new(encode));
    desk.encoders.push(encoder.clone());
    Agent::spawn(
        config,
        AgentKey::from_seed(desk.seed),
        vec![AttachedEncoder {
            info: EncoderInfo {
                encoder_id: EncoderId::parse(&format!("sim-{}", desk.encoders.len()))
                    .expect("an encoder id"),
                model: "simulated".into(),
                transport: Transport::UsbHid,
            },
            encoder,
        }],
        desk.record.clone(),
        clock,
    )
}

pub(super) fn relay_url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}/relay/v1")
}

async fn publish_stays(broker: &Broker, n: usize, rooms: usize) -> anyhow::Result<()> {
    let base = Utc.with_ymd_and_hms(2027, 3, 1, 14, 0, 0).unwrap();
    for i in 0..n {
        let from = base + chrono::Duration::days((i / rooms) as i64);
        let until = from + chrono::Duration::hours(20);
        let reservation = format!("rsv_desk_{i:05}");
        let body = confirmed(
            &format!("evt-desk-{i}"),
            TENANT,
            PROPERTY,
            &reservation,
            1,
            &[&room(i % rooms)],
            &from.to_rfc3339(),
            &until.to_rfc3339(),
        );
        broker
            .publish("melmastoon.reservation.confirmed.v1", &body)
            .await?;
    }
    Ok(())
}

fn session_ids(produced: &Collected, subject: &str) -> BTreeSet<String> {
    produced
        .all()
        .iter()
        .filter(|m| m["body"]["subject"] == subject)
        .filter_map(|m| m["body"]["data"]["sessionId"].as_str().map(str::to_owned))
        .collect()
}

/// Every card key any encoder of any desk encoded, with how many times.
pub(super) fn encodes(desks: &[Desk]) -> BTreeMap<String, usize> {
    let mut all = BTreeMap::new();
    for d in desks {
        for e in &d.encoders {
            for k in e.encoded() {
                *all.entry(k.as_str().to_owned()).or_insert(0) += 1;
            }
        }
    }
    all
}

/// `n` stays over `rooms` Wiegand rooms, three desks; with `chaos`, one agent is killed
/// mid-job (and comes back with its record, as a restarted desktop does) and the node is
/// SIGKILLed once and restarted.
async fn desk_run(n: usize, rooms: usize, chaos: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = scratch("desk");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let port = free_port()?;
    let config = write_config(&dir, &db, &vhost, rooms, port)?;
    let config_arg = config.to_string_lossy().into_owned();
    let broker = Broker::connect(&vhost.url).await?;
    let produced = broker
        .collect("it.desk-events", "melmastoon.events", "melmastoon.lock.#")
        .await?;
    let mut node = Lockstep::spawn(&dir, &["--config", &config_arg], &[]).await?;
    wait_ready(&node).await?;
    node.wait_log("lockstep relay listening on ", Duration::from_secs(10))
        .await?;
    let url = relay_url(port);
    let encode = Duration::from_millis(60);
    let mut desks = Vec::new();
    for name in ["desk-a", "desk-b", "desk-c"] {
        desks.push(pair(&node, name).await?);
    }
    let mut agents: Vec<AgentHandle> = desks
        .iter_mut()
        .map(|d| start_agent(d, &url, encode))
        .collect();
    for a in &agents {
        a.wait_for(
            |s| matches!(s, AgentStatus::Connected { .. }),
            Duration::from_secs(10),
        )
        .await
        .ok_or_else(|| anyhow::anyhow!("an agent did not connect: {:?}", a.status()))?;
    }
    publish_stays(&broker, n, rooms).await?;

    let issued_at_least = |k: usize| {
        let produced = produced.clone();
        move || {
            let ids = produced.key_ids(ISSUED);
            async move { (ids.len() >= k).then_some(()) }
        }
    };
    if chaos {
        // An agent dies mid-job: its encoder is busy with a card when it is killed.
        wait_for(
            "a third of the cards",
            Duration::from_secs(120),
            issued_at_least(n / 3),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", tail(&node.log_text())))?;
        wait_for("desk-a mid-job", Duration::from_secs(30), || {
            let busy = desks[0]
                .encoders
                .last()
                .map(|e| e.started() > e.encoded().len());
            async move { (busy == Some(true)).then_some(()) }
        })
        .await?;
        let closed_before = session_ids(&produced, CLOSED).len();
        agents.remove(0).kill();
        println!("desk-a killed mid-job");
        // back only once the node has seen it go (its session closed)
        wait_for("desk-a's session closed", Duration::from_secs(30), || {
            let closed = session_ids(&produced, CLOSED).len();
            async move { (closed > closed_before).then_some(()) }
        })
        .await?;
        agents.insert(0, start_agent(&mut desks[0], &url, encode));
        // The node dies too, once.
        wait_for(
            "two thirds of the cards",
            Duration::from_secs(180),
            issued_at_least(2 * n / 3),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", tail(&node.log_text())))?;
        node.kill();
        println!("node SIGKILLed");
        node = Lockstep::spawn(&dir, &["--config", &config_arg], &[]).await?;
        wait_ready(&node).await?;
    }
    wait_for(
        "every stay's card issued",
        Duration::from_secs(300),
        issued_at_least(n),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", tail(&node.log_text())))?;
    let issue_time = started.elapsed();

    // Exactly once: one card per stay, none encoded twice, across every agent and every
    // incarnation of it.
    let issued = produced.key_ids(ISSUED);
    assert_eq!(issued.len(), n, "one credential per stay");
    let cards = encodes(&desks);
    let twice: Vec<_> = cards.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "cards encoded more than once: {twice:?}");
    let carded: BTreeSet<String> = cards
        .keys()
        .filter_map(|k| k.strip_prefix("wg-"))
        .filter_map(|k| k.split('-').next().map(str::to_owned))
        .collect();
    assert_eq!(
        cards.len(),
        n,
        "one card per stay (a killed encode made no card)"
    );
    assert_eq!(
        carded, issued,
        "each issued credential's card, and no other"
    );
    let per_desk: Vec<usize> = desks
        .iter()
        .map(|d| d.encoders.iter().map(|e| e.encoded().len()).sum())
        .collect();

    // E-1: the desks leave; every session is closed, with its event, within 5 s.
    let opened = session_ids(&produced, OPENED);
    anyhow::ensure!(!opened.is_empty(), "no encoder_session.opened.v1");
    let left = Instant::now();
    for a in agents {
        a.stop().await;
    }
    wait_for(
        "every opened session closed",
        Duration::from_secs(5),
        || {
            let closed = session_ids(&produced, CLOSED);
            let done = opened.is_subset(&closed);
            async move { done.then_some(()) }
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}: opened {opened:?}, closed {:?}",
            session_ids(&produced, CLOSED)
        )
    })?;
    let close_time = left.elapsed();
    let closed_events: Vec<Value> = produced
        .all()
        .into_iter()
        .filter(|m| m["body"]["subject"] == CLOSED)
        .collect();
    let reasons: BTreeMap<String, usize> =
        closed_events.iter().fold(BTreeMap::new(), |mut m, e| {
            let r = e["body"]["data"]["closeDetail"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            *m.entry(r).or_insert(0) += 1;
            m
        });
    if chaos {
        assert!(
            reasons.contains_key("server_restart"),
            "the killed node's sessions are closed by its restart: {reasons:?}"
        );
    }
    let (_, took) = node.terminate(Duration::from_secs(30)).await?;
    println!(
        "desk e2e: {n} stays, {} cards encoded once each (per desk {per_desk:?}), all issued in {:.1}s; {} sessions opened and closed ({reasons:?}), the last closed {:.2}s after the desks left; node drained in {:.1}s",
        cards.len(),
        issue_time.as_secs_f64(),
        opened.len(),
        close_time.as_secs_f64(),
        took.as_secs_f64(),
    );
    Ok(())
}

/// Issue 12: three desks encode 30 stays' cards, each once; sessions open and close with
/// their events (E-1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_desks_encode_each_stays_card_once() -> anyhow::Result<()> {
    desk_run(30, 30, false).await
}

/// Issue 12, must-show 1: 300 encode jobs, one agent killed mid-job, the node SIGKILLed
/// once: every card encoded exactly once, none lost, sessions opened and closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_cards_survive_a_killed_desk_and_a_killed_node() -> anyhow::Result<()> {
    desk_run(300, 60, true).await
}
