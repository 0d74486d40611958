//! Issue 12 must-show 3 end to end: a front desk cut off from Lockstep keeps handing out
//! keys, and they reconcile when it is back (spec `003` §5, I-7, O-2, O-3). The real
//! binary in production mode serves the relay; the desk is the real `lockstep agent run`
//! process with its SQLite mirror, and its keys are minted by `lockstep agent mint`
//! while the node is stopped. On reconnect the agent syncs them by itself: 50
//! materialize, one whose signature was altered in the mirror and one over 48 hours are
//! revoked, and revoking the desk's certificate revokes the 50 (O-2).
//!
//! Deadlines here are wall-clock on purpose: they bound how long a test waits for real
//! processes, not any business time.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use lockstep_domain::{Clock as _, SystemClock};
use lockstep_orchestrator::agent::mirrored;
use lockstep_persistence::mirror::{DeskMirror, LocalVerdict};
use lockstep_persistence::testing::fresh_pg_database;
use lockstep_relay::agent::AgentKey;
use lockstep_relay::protocol::{ProvisionalCredential, ProvisionalId, SignatureB64};
use serde_json::{json, Value};

use crate::desk::{free_port, relay_url, room, write_config, ISSUED, PROPERTY, TENANT, TOKEN};
use crate::harness::*;

const REVOKED: &str = "melmastoon.lock.credential.revoked.v1";
const DESK: &str = "desk-offline";
/// Stays the desk minted for while cut off and that reconcile.
const VALID: usize = 50;
/// Their stays, the forged one's (`VALID`) and the one over 48 hours (`VALID + 1`).
const STAYS: usize = VALID + 2;

/// A running `lockstep agent run`, killed on drop.
struct AgentProcess {
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    fn spawn(dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let log = dir.join(format!("agent-{}.log", ulid::Ulid::new()));
        let out = File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args(args)
            .env("LOCKSTEP_LOG", "info")
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .context("spawning lockstep agent run")?;
        Ok(Self { child, log })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every maximal run of digits in `text`: a card number shows as a run of its own.
fn digit_runs(text: &str) -> BTreeSet<&str> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|r| !r.is_empty())
        .collect()
}

fn api(node: &Lockstep, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .get(format!("{}{path}", node.http))
        .bearer_auth(TOKEN)
        .header("x-tenant-id", TENANT)
}

async fn credential(node: &Lockstep, id: &str) -> anyhow::Result<Value> {
    let resp = api(node, &format!("/api/v1/key-credentials/{id}"))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "credential {id}: {}", resp.status());
    Ok(resp.json().await?)
}

async fn credentials_of_stay(node: &Lockstep, reservation: &str) -> anyhow::Result<Vec<Value>> {
    let resp = api(
        node,
        &format!("/api/v1/key-credentials?propertyId={PROPERTY}&reservationId={reservation}"),
    )
    .send()
    .await?;
    anyhow::ensure!(resp.status() == 200, "credentials of {reservation}");
    let body: Value = resp.json().await?;
    Ok(body["items"].as_array().cloned().unwrap_or_default())
}

/// `revoked.v1` events marked `wasProvisional`, by key id.
fn provisional_revocations(produced: &Collected) -> BTreeSet<String> {
    produced
        .all()
        .iter()
        .filter(|m| m["body"]["subject"] == REVOKED)
        .filter(|m| m["body"]["data"]["metadata"]["wasProvisional"] == json!(true))
        .filter_map(|m| m["body"]["data"]["keyId"].as_str().map(str::to_owned))
        .collect()
}

fn stay(i: usize) -> String {
    format!("rsv_off_{i:03}")
}

/// Issue 12 must-show 3: an agent cut off mints 50 provisional keys, reconnects, and all
/// 50 reconcile; a forged one and one over 48 h are revoked; revoking the certificate
/// cascades to the 50 (O-2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_cut_off_mints_fifty_keys_that_reconcile_when_it_reconnects() -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = scratch("reconcile-desk");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let port = free_port()?;
    let config = write_config(&dir, &db, &vhost, STAYS, port)?;
    let config_arg = config.to_string_lossy().into_owned();
    let broker = Broker::connect(&vhost.url).await?;
    let produced = broker
        .collect(
            "it.reconcile-desk-events",
            "melmastoon.events",
            "melmastoon.lock.#",
        )
        .await?;
    let mut node = Lockstep::spawn(&dir, &["--config", &config_arg], &[]).await?;
    wait_ready(&node).await?;
    node.wait_log("lockstep relay listening on ", Duration::from_secs(10))
        .await?;

    // Installing the desk, as the README says: a key, a certificate, the agent.
    let key_file = dir.join("desk.key");
    let key_arg = key_file.to_string_lossy().into_owned();
    let mirror_path = dir.join("desk.sqlite");
    let mirror_arg = mirror_path.to_string_lossy().into_owned();
    let keygen = lockstep_cli(&["agent", "keygen", "--key-file", &key_arg]).await?;
    anyhow::ensure!(keygen.ok, "keygen: {}", keygen.stderr);
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/offline-issuance/certificates",
            node.http
        ))
        .bearer_auth(TOKEN)
        .header("x-tenant-id", TENANT)
        .json(&json!({
            "propertyId": PROPERTY,
            "desktopDeviceId": DESK,
            "publicKeyEd25519": keygen.stdout.trim(),
        }))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 201, "certificate: {}", resp.text().await?);
    let cert: Value = resp.json().await?;
    let cert_id = cert["id"].as_str().unwrap_or_default().to_owned();
    let url = relay_url(port);
    let agent = AgentProcess::spawn(
        &dir,
        &[
            "agent",
            "run",
            "--url",
            &url,
            "--key-file",
            &key_arg,
            "--certificate-id",
            &cert_id,
            "--tenant",
            TENANT,
            "--property",
            PROPERTY,
            "--desktop-id",
            DESK,
            "--mirror",
            &mirror_arg,
            "--encode-ms",
            "20",
            "--backoff-max-ms",
            "300",
        ],
    )?;
    wait_for("the agent connected", Duration::from_secs(30), || {
        let connected = agent.log_text().contains("agent connected: session");
        async move { connected.then_some(()) }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; agent log:\n{}", tail(&agent.log_text())))?;

    // The stays, checking in now; their own cards are encoded at the desk while online.
    let now = SystemClock.now();
    for i in 0..STAYS {
        let body = confirmed(
            &format!("evt-off-{i}"),
            TENANT,
            PROPERTY,
            &stay(i),
            1,
            &[&room(i)],
            &(now - chrono::Duration::hours(1)).to_rfc3339(),
            &(now + chrono::Duration::days(2)).to_rfc3339(),
        );
        broker
            .publish("melmastoon.reservation.confirmed.v1", &body)
            .await?;
    }
    wait_for(
        "every stay's own card issued",
        Duration::from_secs(120),
        || {
            let n = produced.key_ids(ISSUED).len();
            async move { (n >= STAYS).then_some(()) }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", tail(&node.log_text())))?;
    let saga_keys = produced.key_ids(ISSUED);

    // Cut off: the node goes away; the agent keeps running and retrying.
    node.terminate(Duration::from_secs(30)).await?;
    let mirror = DeskMirror::open(&mirror_arg).await?;
    wait_for(
        "the agent's session closed in its mirror",
        Duration::from_secs(30),
        || {
            let mirror = mirror.clone();
            async move {
                matches!(mirror.session_counts().await, Ok((0, closed)) if closed > 0).then_some(())
            }
        },
    )
    .await?;
    let cut_off = Instant::now();

    // The desk mints, offline, through the CLI the front desk uses.
    let mint = |i: usize, valid_until: Option<String>| {
        let (mirror_arg, key_arg, cert_id) = (mirror_arg.clone(), key_arg.clone(), cert_id.clone());
        async move {
            let (reservation, room_id) = (stay(i), room(i));
            let mut args = vec![
                "agent",
                "mint",
                "--mirror",
                &mirror_arg,
                "--key-file",
                &key_arg,
                "--certificate-id",
                &cert_id,
                "--tenant",
                TENANT,
                "--property",
                PROPERTY,
                "--reservation",
                &reservation,
                "--room",
                &room_id,
                "--kind",
                "rfid_card",
                "--encode-ms",
                "0",
            ];
            if let Some(until) = &valid_until {
                args.extend(["--valid-until", until.as_str()]);
            }
            lockstep_cli(&args).await
        }
    };
    let mut minted = Vec::new();
    let mut printed = String::new();
    for i in 0..=VALID {
        let run = mint(i, None).await?;
        anyhow::ensure!(run.ok, "mint {i}: {}", run.stderr);
        let id = run.stdout.trim().to_owned();
        anyhow::ensure!(
            ProvisionalId::parse(&id).is_ok() && run.stdout.lines().count() == 1,
            "mint {i} printed {:?}, not one provisional id",
            run.stdout
        );
        printed.push_str(&run.stdout);
        printed.push_str(&run.stderr);
        minted.push(id);
    }
    let mint_time = cut_off.elapsed();
    // I-7 at minting: over 48 hours is refused with a reason, and nothing is stored.
    let too_long = (now + chrono::Duration::hours(49)).to_rfc3339();
    let refused = mint(VALID + 1, Some(too_long)).await?;
    assert!(!refused.ok, "a 49 h key was minted: {}", refused.stdout);
    assert!(
        refused.stderr.contains("at most 48 hours (I-7)"),
        "{}",
        refused.stderr
    );
    assert_eq!(mirror.unsynced_provisionals().await?.len(), VALID + 1);

    // The mirror is tampered with: one signature altered (a forged key).
    let forged = minted[VALID].clone();
    {
        let raw = sqlx::SqlitePool::connect(&format!("sqlite:{mirror_arg}")).await?;
        let sig: String =
            sqlx::query_scalar("SELECT signature FROM provisional_credentials_local WHERE id = ?1")
                .bind(&forged)
                .fetch_one(&raw)
                .await?;
        let mut bytes = base64::engine::general_purpose::STANDARD.decode(sig)?;
        bytes[0] ^= 0x01;
        sqlx::query("UPDATE provisional_credentials_local SET signature = ?2 WHERE id = ?1")
            .bind(&forged)
            .bind(base64::engine::general_purpose::STANDARD.encode(bytes))
            .execute(&raw)
            .await?;
        raw.close().await;
    }
    // And a desk that did not hold to I-7 (an older or modified agent) left a 49 h card,
    // properly signed with the desk's key.
    let seed = lockstep_persistence::audit::key_bytes(&std::fs::read_to_string(&key_file)?)
        .context("the key file holds 64 hex digits")?;
    let key = AgentKey::from_seed(seed);
    let minted_at =
        chrono::DurationRound::duration_trunc(SystemClock.now(), chrono::Duration::seconds(1))?;
    let mut long = ProvisionalCredential {
        provisional_id: ProvisionalId::parse("prov_over_48h")?,
        certificate_id: cert_id.clone(),
        kind: "rfid_card".into(),
        reservation_id: Some(stay(VALID + 1)),
        room_ids: vec![room(VALID + 1)],
        valid_from: minted_at,
        valid_until: minted_at + chrono::Duration::hours(49),
        minted_at,
        card_number: None,
        signature: SignatureB64::from_signature(&key.sign(b"placeholder")),
    };
    long.signature = SignatureB64::from_signature(&key.sign(long.signed_payload().as_bytes()));
    let tenant = lockstep_domain::TenantId::parse(TENANT)?;
    let property = lockstep_domain::PropertyId::parse(PROPERTY)?;
    assert!(
        mirror
            .record_provisional(&mirrored(&long, tenant, &property))
            .await?
    );
    let long_id = long.provisional_id.as_str().to_owned();
    let card_numbers: BTreeSet<String> = mirror
        .unsynced_provisionals()
        .await?
        .into_iter()
        .filter_map(|p| p.card_number)
        .collect();
    assert_eq!(card_numbers.len(), VALID + 1, "one card per minted key");
    assert_eq!(mirror.unsynced_provisionals().await?.len(), STAYS);

    // Back online: the node restarts; the agent reconnects by itself and syncs.
    let mut node = Lockstep::spawn(&dir, &["--config", &config_arg], &[]).await?;
    wait_ready(&node).await?;
    let back = Instant::now();
    let verdicts = wait_for(
        "a verdict on every provisional key in the mirror",
        Duration::from_secs(120),
        || {
            let mirror = mirror.clone();
            async move {
                let all = mirror.provisionals().await.ok()?;
                (all.len() == STAYS && all.iter().all(|(_, v)| v.is_some())).then_some(all)
            }
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}; agent log:\n{}\nnode log:\n{}",
            tail(&agent.log_text()),
            tail(&node.log_text())
        )
    })?;
    let sync_time = back.elapsed();

    // I-7: each materialized or revoked. The 50 are the server's credentials now.
    let mut server_ids = Vec::new();
    for (p, v) in &verdicts {
        let v = v.as_ref().expect("waited for every verdict");
        if p.id == forged {
            assert_eq!(v.outcome, LocalVerdict::Revoked);
            assert_eq!(v.reason.as_deref(), Some("bad_signature"));
        } else if p.id == long_id {
            assert_eq!(v.outcome, LocalVerdict::Revoked);
            assert_eq!(v.reason.as_deref(), Some("window_exceeded"));
        } else {
            assert_eq!(v.outcome, LocalVerdict::Accepted, "{}: {v:?}", p.id);
            let id = v.server_credential_id.clone().unwrap_or_default();
            server_ids.push((p.clone(), id));
        }
    }
    assert_eq!(server_ids.len(), VALID);
    for refused in [&forged, &long_id] {
        assert_eq!(
            mirror.local_credential_state(refused).await?.as_deref(),
            Some("revoked"),
            "the desk's own record of {refused}"
        );
    }
    for (p, id) in &server_ids {
        let c = credential(&node, id).await?;
        assert_eq!(c["state"], "active", "{id}: {c}");
        assert_eq!(c["provisional"], true, "{id}");
        assert_eq!(c["kind"], "rfid_card");
        assert_eq!(c["reservationId"].as_str(), p.reservation_id.as_deref());
        assert_eq!(c["rooms"], json!(p.rooms));
        assert_eq!(c["holderKind"], "guest");
    }
    // The refused ones are no credential: their stays hold only the saga's own card.
    for i in [VALID, VALID + 1] {
        let of_stay = credentials_of_stay(&node, &stay(i)).await?;
        assert_eq!(of_stay.len(), 1, "{}: {of_stay:?}", stay(i));
        assert_eq!(of_stay[0]["provisional"], false);
    }
    let accepted: BTreeSet<String> = server_ids.iter().map(|(_, id)| id.clone()).collect();
    wait_for(
        "issued.v1 of the 50 and revoked.v1 of the 2 refused",
        Duration::from_secs(60),
        || {
            let issued = produced.key_ids(ISSUED);
            let done = accepted.is_subset(&issued) && provisional_revocations(&produced).len() == 2;
            async move { done.then_some(()) }
        },
    )
    .await?;
    let refused_events = provisional_revocations(&produced);
    assert!(
        refused_events.is_disjoint(&accepted),
        "a revoked.v1 names a materialized key"
    );
    assert!(
        agent.log_text().contains(&format!(
            "provisional {forged} revoked by lockstep (bad_signature)"
        )),
        "the desk is told a card it handed over opens nothing"
    );

    // O-2: revoking the desk's certificate revokes every key it minted, and only those.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/offline-issuance/certificates/{cert_id}/revoke",
            node.http
        ))
        .bearer_auth(TOKEN)
        .header("x-tenant-id", TENANT)
        .json(&json!({ "reason": "compromise" }))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "revoke: {}", resp.text().await?);
    for (_, id) in &server_ids {
        let c = credential(&node, id).await?;
        assert_eq!(c["state"], "revoked", "{id}: {c}");
        assert_eq!(c["revokeReason"], "security", "{id}");
    }
    wait_for(
        "revoked.v1 (wasProvisional) of the 50",
        Duration::from_secs(60),
        || {
            let revoked = provisional_revocations(&produced);
            let done = accepted.is_subset(&revoked);
            async move { done.then_some(()) }
        },
    )
    .await?;
    assert_eq!(provisional_revocations(&produced).len(), VALID + 2);
    // O-2's forced re-issue: each stay's saga made its online check, and a stay holding its
    // own live card needed nothing more (`covered`)
    wait_for(
        "the 50 stays' sagas checked for re-issue",
        Duration::from_secs(30),
        || {
            let http = node.http.clone();
            async move {
                metric(
                    &http,
                    "lockstep_saga_steps_total{outcome=\"covered\",step=\"reissue_provisional\"}",
                )
                .await
                .filter(|n| *n >= VALID as f64)
            }
        },
    )
    .await?;
    // the stays' own cards, issued online and not under the certificate, stand
    for i in [0, VALID - 1] {
        let own: Vec<Value> = credentials_of_stay(&node, &stay(i))
            .await?
            .into_iter()
            .filter(|c| c["provisional"] == false)
            .collect();
        assert_eq!(own.len(), 1, "{}", stay(i));
        assert_eq!(own[0]["state"], "active");
        assert!(saga_keys.contains(own[0]["id"].as_str().unwrap_or_default()));
    }

    // Revoked, the desk is cut for good: the agent stops and says why.
    let mut agent = agent;
    let status = wait_for("the agent to exit", Duration::from_secs(30), || {
        let status = agent.child.try_wait().ok().flatten();
        async move { status }
    })
    .await?;
    assert!(!status.success());
    let agent_log = agent.log_text();
    assert!(
        agent_log.contains("certificate_revoked"),
        "{}",
        tail(&agent_log)
    );

    // No card number reached any output: the CLI's, the agent's or the node's.
    for (what, text) in [
        ("mint output", printed.as_str()),
        ("agent log", agent_log.as_str()),
        ("node log", &node.log_text()),
    ] {
        let runs = digit_runs(text);
        let leaked: Vec<&String> = card_numbers
            .iter()
            .filter(|n| runs.contains(n.as_str()))
            .collect();
        assert!(leaked.is_empty(), "{what} shows card numbers {leaked:?}");
    }
    mirror.close().await;
    let (_, took) = node.terminate(Duration::from_secs(30)).await?;
    println!(
        "offline desk: {} keys minted through the CLI in {:.1}s while cut off; on reconnect {VALID} materialized and 2 revoked (bad_signature, window_exceeded) in {:.1}s; the certificate's revoke revoked {VALID} (O-2); node drained in {:.1}s; {:.1}s in all",
        VALID + 1,
        mint_time.as_secs_f64(),
        sync_time.as_secs_f64(),
        took.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}

/// Issue 12, certificate rotation end to end: a desk whose certificate is in its last week
/// (written as the node would have issued it 85 days ago) runs `lockstep agent run`; the
/// agent renews it over the relay, records the successor in its mirror, replaces its key
/// file (mode 0600) and reconnects with them; the node revokes the old certificate for
/// `rotation` once the new one authenticates. Killed and started again with the same
/// arguments (the old certificate's id), the agent runs on with the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_in_its_certificates_last_week_rotates_it_and_runs_on_after_a_restart(
) -> anyhow::Result<()> {
    use lockstep_domain::{
        KeyCredentialKind, OfflineIssuance, OfflineIssuanceId, OfflineRevokeReason, PropertyId,
        TenantId,
    };
    use lockstep_orchestrator::admin::OfflineSigner;
    use lockstep_persistence::{
        OfflineCertSignatureTable as _, OfflineCertTable as _, ReadOnlyOfflineCertTable as _,
        Storage as _,
    };
    const ROTATING: &str = "desk-rotating";
    let started = Instant::now();
    let dir = scratch("rotate-desk");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let port = free_port()?;
    let config = write_config(&dir, &db, &vhost, 1, port)?;
    let config_arg = config.to_string_lossy().into_owned();
    let mut node = Lockstep::spawn(&dir, &["--config", &config_arg], &[]).await?;
    wait_ready(&node).await?;
    node.wait_log("lockstep relay listening on ", Duration::from_secs(10))
        .await?;

    let key_file = dir.join("desk.key");
    let key_arg = key_file.to_string_lossy().into_owned();
    let mirror_arg = dir.join("desk.sqlite").to_string_lossy().into_owned();
    let keygen = lockstep_cli(&["agent", "keygen", "--key-file", &key_arg]).await?;
    anyhow::ensure!(keygen.ok, "keygen: {}", keygen.stderr);
    let first_key = std::fs::read_to_string(&key_file)?;
    // The pairing endpoint issues at the node's now; this certificate is the one it would
    // have issued 85 days ago, signed with the node's offline key (the test config's).
    let tenant = TenantId::parse(TENANT)?;
    let issued_at = chrono::DurationRound::duration_trunc(
        SystemClock.now() - chrono::Duration::days(85),
        chrono::Duration::milliseconds(1),
    )?;
    let old = OfflineIssuance::issue(
        tenant,
        PropertyId::parse(PROPERTY)?,
        ROTATING,
        keygen.stdout.trim(),
        vec![KeyCredentialKind::RfidCard],
        &[KeyCredentialKind::RfidCard],
        48,
        issued_at,
    )?;
    let signer = OfflineSigner::new([0x22; 32], "it-rotation".into());
    let store = db
        .connect_store(lockstep_persistence::testing::test_cipher(), 2)
        .await?;
    {
        let mut tx = store.begin(tenant, None).await?;
        tx.save_offline_cert(&old).await?;
        tx.set_offline_cert_signature(
            old.id.as_str(),
            &base64::engine::general_purpose::STANDARD.encode(signer.sign(&old).to_bytes()),
            "it-rotation",
        )
        .await?;
        tx.commit().await?;
    }
    let read_cert = |id: OfflineIssuanceId| {
        let store = store.clone();
        async move {
            let mut tx = store.read(tenant).await?;
            let c = tx.offline_cert(id.as_str()).await?;
            tx.commit().await?;
            anyhow::Ok(c)
        }
    };

    let url = relay_url(port);
    let args = [
        "agent",
        "run",
        "--url",
        &url,
        "--key-file",
        &key_arg,
        "--certificate-id",
        old.id.as_str(),
        "--tenant",
        TENANT,
        "--property",
        PROPERTY,
        "--desktop-id",
        ROTATING,
        "--mirror",
        &mirror_arg,
        "--encode-ms",
        "20",
        "--backoff-max-ms",
        "300",
    ];
    let agent = AgentProcess::spawn(&dir, &args)?;
    wait_for(
        "the agent to rotate and reconnect",
        Duration::from_secs(30),
        || {
            let log = agent.log_text();
            let done = log
                .find("certificate renewed: ")
                .is_some_and(|at| log[at..].contains("agent connected: session"));
            async move { done.then_some(()) }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; agent log:\n{}", tail(&agent.log_text())))?;

    // the mirror holds the successor, the key file its key (0600)
    let mirror = DeskMirror::open(&mirror_arg).await?;
    let successor = mirror
        .successor(old.id.as_str())
        .await?
        .context("the successor in the mirror")?;
    let new_id = OfflineIssuanceId::parse(&successor.id)?;
    let second_key = std::fs::read_to_string(&key_file)?;
    assert_ne!(
        second_key.trim(),
        first_key.trim(),
        "the key file was not replaced"
    );
    let new_key = AgentKey::from_seed(
        lockstep_persistence::audit::key_bytes(&second_key).context("64 hex digits")?,
    );
    assert_eq!(successor.public_key_ed25519, new_key.public_key_base64());
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // the node: the successor stored and signed, the old certificate revoked for rotation
    let stored = read_cert(new_id.clone())
        .await?
        .context("the successor stored")?;
    assert_eq!(stored.replaces.as_ref(), Some(&old.id));
    assert_eq!(stored.public_key_ed25519, new_key.public_key_base64());
    assert_eq!(Some(stored.expires_at), successor.expires_at);
    let rotated = wait_for(
        "the old certificate revoked",
        Duration::from_secs(10),
        || {
            let read = read_cert(old.id.clone());
            async move { read.await.ok().flatten().filter(|c| c.revoked_at.is_some()) }
        },
    )
    .await?;
    assert_eq!(rotated.revoke_reason, Some(OfflineRevokeReason::Rotation));

    // killed and started again with the same arguments: it runs on the new certificate
    drop(agent);
    let agent = AgentProcess::spawn(&dir, &args)?;
    wait_for(
        "the restarted agent connected",
        Duration::from_secs(30),
        || {
            let log = agent.log_text();
            let done = log.contains(&format!("running with {new_id}"))
                && log.contains("agent connected: session");
            async move { done.then_some(()) }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; agent log:\n{}", tail(&agent.log_text())))?;
    assert!(
        !agent.log_text().contains("certificate renewed: "),
        "a fresh certificate is not renewed again"
    );
    assert!(read_cert(new_id.clone())
        .await?
        .context("successor")?
        .revoked_at
        .is_none());
    drop(agent);
    mirror.close().await;
    store.close().await;
    let _ = node.terminate(Duration::from_secs(30)).await?;
    println!(
        "rotation: {} renewed as {new_id}, key file replaced, old one revoked for rotation, restart ran on the new one; {:.1}s in all",
        old.id,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
