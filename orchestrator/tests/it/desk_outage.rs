//! Issue 12, must-show 4: a 12-hour TTLock outage on the scaled clock while 200 guests
//! check in at a front desk with an encoder connected (DESIGN §7, outage fallback). The
//! real binary in production mode; each room has a TTLock lock (PINs preferred) and a
//! desk-encoded Wiegand card lock (the policy's fallback). Prints the share of guests who
//! left with a working key during the outage (goal ≥ 99 %); after recovery, no stay holds
//! two live credentials, TTLock received no key for a stay that left with a card, and each
//! card was encoded once.
//!
//! Deadlines here are wall-clock on purpose: they bound how long a test waits for real
//! processes; the outage itself is measured on the node's business clock (1,440×).
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use lockstep_domain::{ScaledClock, SystemClock};
use lockstep_persistence::testing::fresh_pg_database;
use lockstep_relay::agent::AgentStatus;
use serde_json::Value;

use super::desk::{
    encodes, free_port, pair, relay_url, room, start_agent_on, write_config, ISSUED, PROPERTY,
    TENANT, TOKEN,
};
use crate::harness::*;

/// Rooms, each with a TTLock lock and a Wiegand card lock.
const ROOMS: usize = 20;
/// Guests checking in during the outage (10 nights per room).
const GUESTS: usize = 200;
/// Business time runs this much faster: 12 hours are 30 s of wall time.
const SCALE: f64 = 1_440.0;
const TTLOCK_ADAPTER: &str = "vad_01J000000000000000000TTK01";

fn ttlock_lock(i: usize) -> i64 {
    8_000 + i as i64
}

fn stay(i: usize) -> String {
    format!("rsv_out_{i:04}")
}

/// The desk's production config, turned into a two-adapter property: PINs at TTLock
/// preferred, desk cards the fallback, on the scaled clock with production backoff.
fn config(
    dir: &std::path::Path,
    db: &lockstep_persistence::testing::PgTestDb,
    vhost: &Vhost,
    relay_port: u16,
    sim: &lockstep_vendors::ttlock::RunningSimulator,
) -> anyhow::Result<String> {
    let path = write_config(dir, db, vhost, ROOMS, relay_port)?;
    let mut toml = std::fs::read_to_string(&path)?;
    for (from, to) in [
        (
            "preferred_order = [\"rfid_card\"]\nfallback_chain = [\"pin_code\"]",
            "preferred_order = [\"pin_code\"]\nfallback_chain = [\"rfid_card\"]",
        ),
        // production backoff, in business time
        (
            "retry_base_ms = 100\nretry_cap_ms = 1000",
            "retry_base_ms = 500\nretry_cap_ms = 300000",
        ),
        (
            "open_ms = 500\nopen_max_ms = 1000",
            "open_ms = 30000\nopen_max_ms = 300000",
        ),
    ] {
        anyhow::ensure!(toml.contains(from), "the desk config has no {from:?}");
        toml = toml.replace(from, to);
    }
    let cfg = sim.default_adapter_config();
    toml.push_str(&format!(
        r#"
[[properties.adapters]]
id = "{TTLOCK_ADAPTER}"
vendor = "ttlock"
api_base_url = "{url}"
client_id = "{client_id}"
client_secret = {{ value = "{secret}" }}
username = "{username}"
password = {{ value = "{password}" }}
rate_limit_per_min = 0
"#,
        url = cfg.api_base_url,
        client_id = cfg.client_id,
        secret = cfg.client_secret.expose(),
        username = cfg.username,
        password = cfg.password.expose(),
    ));
    for i in 0..ROOMS {
        let lock = ttlock_lock(i);
        toml.push_str(&format!(
            "\n[[properties.devices]]\nid = \"lck_01J{lock:0>23}\"\nadapter = \"{TTLOCK_ADAPTER}\"\nvendor_device_ref = \"{lock}\"\nlabel = \"Room {i} keypad\"\nrooms = [\"{}\"]\n",
            room(i)
        ));
    }
    toml.push_str(&format!("\n[clock]\nscale = {SCALE:.1}\n"));
    std::fs::write(&path, &toml)?;
    Ok(path.to_string_lossy().into_owned())
}

/// The stay's credentials as (kind, state).
async fn credentials(node: &Lockstep, reservation: &str) -> anyhow::Result<Vec<(String, String)>> {
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/key-credentials?propertyId={PROPERTY}&reservationId={reservation}",
            node.http
        ))
        .bearer_auth(TOKEN)
        .header("x-tenant-id", TENANT)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "credentials of {reservation}");
    let body: Value = resp.json().await?;
    Ok(body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap_or_default().to_owned(),
                c["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

fn live(state: &str) -> bool {
    !matches!(state, "revoked" | "failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twelve_hour_ttlock_outage_keys_guests_at_the_desk_and_recovery_adds_nothing(
) -> anyhow::Result<()> {
    let dir = scratch("desk-outage");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let port = free_port()?;
    let sim = simulator(&(0..ROOMS).map(ttlock_lock).collect::<Vec<_>>())?;
    let config = config(&dir, &db, &vhost, port, &sim)?;
    let broker = Broker::connect(&vhost.url).await?;
    let produced = broker
        .collect("it.desk-outage", "melmastoon.events", "melmastoon.lock.#")
        .await?;
    let mut node = Lockstep::spawn(&dir, &["--config", &config], &[]).await?;
    wait_ready(&node).await?;
    node.wait_log("lockstep relay listening on ", Duration::from_secs(10))
        .await?;
    let mut desk = pair(&node, "desk-outage").await?;
    // The desk's clock runs at the node's pace from the certificate's issue time (a
    // desk's signature time is checked against the node's business clock).
    let desk_clock = Arc::new(
        ScaledClock::new(Arc::new(SystemClock), desk.issued_at, SCALE)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
    );
    let agent = start_agent_on(
        &mut desk,
        &relay_url(port),
        Duration::from_millis(10),
        desk_clock,
    );
    agent
        .wait_for(
            |s| matches!(s, AgentStatus::Connected { .. }),
            Duration::from_secs(10),
        )
        .await
        .ok_or_else(|| anyhow::anyhow!("the desk did not connect: {:?}", agent.status()))?;

    // TTLock goes down; guests arrive over the next 8 business hours, 20 at a time.
    sim.handle().update_faults(|f| f.outage = true);
    let outage_started = Instant::now();
    let outage = Duration::from_secs_f64(12.0 * 3600.0 / SCALE);
    let base = Utc.with_ymd_and_hms(2027, 4, 1, 14, 0, 0).unwrap();
    for wave in 0..10 {
        for i in wave * (GUESTS / 10)..(wave + 1) * (GUESTS / 10) {
            let from = base + chrono::Duration::days((i / ROOMS) as i64);
            let until = from + chrono::Duration::hours(20);
            let body = confirmed(
                &format!("evt-out-{i}"),
                TENANT,
                PROPERTY,
                &stay(i),
                1,
                &[&room(i % ROOMS)],
                &from.to_rfc3339(),
                &until.to_rfc3339(),
            );
            broker
                .publish("melmastoon.reservation.confirmed.v1", &body)
                .await?;
        }
        tokio::time::sleep(outage / 15).await;
    }
    // The outage lasts its 12 business hours whatever happens meanwhile; the guests keyed
    // by its end are those who left the desk with a working key.
    tokio::time::sleep(outage.saturating_sub(outage_started.elapsed())).await;
    let keyed_during: BTreeMap<String, String> = produced
        .all()
        .iter()
        .filter(|m| m["body"]["subject"] == ISSUED)
        .filter_map(|m| {
            Some((
                m["body"]["data"]["keyId"].as_str()?.to_owned(),
                m["body"]["data"]["kind"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let cards = keyed_during.values().filter(|k| *k == "rfid_card").count();
    let share = cards as f64 / GUESTS as f64;
    println!(
        "outage: 12 business hours ({:.0} s wall), {GUESTS} guests, {cards} left with a desk card ({:.1} %), {} PINs at TTLock",
        outage.as_secs_f64(),
        share * 100.0,
        keyed_during.values().filter(|k| *k == "pin_code").count()
    );
    assert_eq!(
        (0..ROOMS)
            .map(|i| sim.handle().passcodes(ttlock_lock(i)).len())
            .sum::<usize>(),
        0,
        "TTLock was down: no PIN reached it"
    );
    assert!(
        share >= 0.99,
        "{:.1} % of guests left with a working key (goal ≥ 99 %); log:\n{}",
        share * 100.0,
        tail(&node.log_text())
    );

    // TTLock is back: the stays keep the one key they have, and nothing new reaches it.
    sim.handle().update_faults(|f| f.outage = false);
    let healed = Instant::now();
    wait_for(
        "every stay settled on one live credential",
        Duration::from_secs(120),
        || {
            let node = &node;
            async move {
                for i in 0..GUESTS {
                    let creds = credentials(node, &stay(i)).await.ok()?;
                    let live: Vec<_> = creds.iter().filter(|(_, s)| live(s)).collect();
                    if live.len() != 1 || live[0].1 != "active" {
                        return None;
                    }
                    // the failed PIN attempt is failed, not waiting to be retried
                    if creds
                        .iter()
                        .any(|(_, s)| s == "requested" || s == "pending")
                    {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", tail(&node.log_text())))?;
    // Give recovery its chance to do wrong: the removals of the failed PINs' door truth
    // (a find, then nothing to delete) have landed once no removal is pending.
    wait_for(
        "no removal pending at TTLock",
        Duration::from_secs(60),
        || {
            let http = node.http.clone();
            async move {
                metric(&http, "lockstep_door_pending_removals")
                    .await
                    .filter(|n| *n == 0.0)
            }
        },
    )
    .await?;
    let mut two_live = Vec::new();
    let mut pins = 0;
    for i in 0..GUESTS {
        let creds = credentials(&node, &stay(i)).await?;
        let live: Vec<_> = creds.iter().filter(|(_, s)| live(s)).collect();
        if live.len() > 1 {
            two_live.push(stay(i));
        }
        pins += live.iter().filter(|(k, _)| k == "pin_code").count();
    }
    let at_ttlock: usize = (0..ROOMS)
        .map(|i| sim.handle().passcodes(ttlock_lock(i)).len())
        .sum();
    let encoded = encodes(std::slice::from_ref(&desk));
    let twice = encoded.values().filter(|n| **n > 1).count();
    println!(
        "after recovery ({:.1} s): {} stays with two live credentials, {pins} live PINs, {at_ttlock} passcodes at TTLock, {} cards encoded, {twice} twice",
        healed.elapsed().as_secs_f64(),
        two_live.len(),
        encoded.len()
    );
    assert!(two_live.is_empty(), "two live credentials: {two_live:?}");
    assert_eq!(at_ttlock, 0, "TTLock's recovery added no key");
    assert_eq!(twice, 0, "each card encoded once");
    assert!(encoded.len() >= cards, "every issued card was encoded");
    agent.stop().await;
    Ok(())
}
