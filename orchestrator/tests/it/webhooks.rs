//! Issue 6: vendor webhooks end to end on the embedded node. The built-in TTLock simulator
//! pushes its lock-records callback to the adapter's webhook URL; Lockstep reads the
//! records back from the vendor, appends door attempts, audits them and publishes
//! `audit.attempt.v1`. Forged, replayed and misaddressed callbacks change nothing.
//!
//! Issue 14: the signed webhooks of Salto KS, Vostio and Brivo, each end to end from its
//! vendor's simulator through the running node (`signed_vendor_webhook_end_to_end`).

use std::time::Duration;

use lockstep_orchestrator::auth::Role;
use lockstep_orchestrator::seed::DEMO_TENANT;
use serde_json::{json, Value};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn door_records_arrive_by_webhook_read_back_and_forgeries_change_nothing(
) -> anyhow::Result<()> {
    let key = ed25519_dalek::SigningKey::from_bytes(&[33u8; 32]);
    let dir = scratch("webhooks");
    let config = jwt_config(&dir, &key)?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
    let http = reqwest::Client::new();
    let sim = demo_sim_url(&node);
    let admin = jwt(&key, DEMO_TENANT, &[Role::Admin]);
    let operator = jwt(&key, DEMO_TENANT, &[Role::Operator]);

    // a stay that holds now, so the simulated lock opens for its PIN
    #[allow(clippy::disallowed_methods)] // the simulator's lock judges against its own clock
    let now = chrono::Utc::now();
    let body = confirmed(
        "evt-h-1",
        DEMO_TENANT,
        "ppt_demo",
        "rsv_h_1",
        1,
        &["rmu_101"],
        &(now - chrono::Duration::hours(1)).to_rfc3339(),
        &(now + chrono::Duration::days(1)).to_rfc3339(),
    );
    let r = http
        .post(format!("{}/api/v1/intake", node.http))
        .bearer_auth("svc-token")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let list = format!("{}/api/v1/key-credentials?reservationId=rsv_h_1", node.http);
    let cred = wait_for("rsv_h_1 active", Duration::from_secs(30), || async {
        let v: Value = http
            .get(&list)
            .bearer_auth(&operator)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["items"]
            .get(0)
            .cloned()
            .filter(|c| c["state"] == "active")
    })
    .await?;
    let id = cred["id"].as_str().unwrap_or_default().to_owned();
    let pin: Value = http
        .post(format!("{}/api/v1/key-credentials/{id}/pin", node.http))
        .bearer_auth(&operator)
        .send()
        .await?
        .json()
        .await?;
    let digits = pin["pins"][0]["pin"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(digits.len(), 6);

    // the admin learns the webhook URL; operators do not see it
    let adapters: Value = http
        .get(format!(
            "{}/api/v1/vendor-adapters?propertyId=ppt_demo",
            node.http
        ))
        .bearer_auth(&admin)
        .send()
        .await?
        .json()
        .await?;
    let ttlock = adapters["items"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["vendor"] == "ttlock"))
        .cloned()
        .expect("the demo property's ttlock adapter");
    let path = ttlock["webhookPath"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(path.starts_with("/webhooks/v1/ttlock/"), "{ttlock}");
    let seen_by_operator: Value = http
        .get(format!("{}/api/v1/vendor-adapters", node.http))
        .bearer_auth(&operator)
        .send()
        .await?
        .json()
        .await?;
    assert!(!seen_by_operator.to_string().contains(&path));
    let hc: Value = http
        .post(format!(
            "{}/api/v1/vendor-adapters/{}/health-check",
            node.http,
            ttlock["id"].as_str().unwrap_or_default()
        ))
        .bearer_auth(&operator)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(hc["healthy"], true, "{hc}");

    // the simulator calls back like TTLock's cloud
    let r = http
        .post(format!("{sim}/_sim/callback"))
        .json(&json!({ "url": format!("{}{path}", node.http) }))
        .send()
        .await?;
    assert!(r.status().is_success());
    let attempt = |credential: &str| {
        http.post(format!("{sim}/_sim/locks/1001/attempts"))
            .json(&json!({ "method": "pin", "credential": credential }))
            .send()
    };
    let opened: Value = attempt(&digits).await?.json().await?;
    assert_eq!(opened["opened"], true);
    let refused: Value = attempt("000999").await?.json().await?;
    assert_eq!(refused["opened"], false);

    let events = || async {
        let v: Value = http
            .get(format!("{}/api/v1/events?limit=1000", node.http))
            .bearer_auth("svc-token")
            .header("x-tenant-id", DEMO_TENANT)
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(v["items"].as_array().cloned().unwrap_or_default())
    };
    let attempts_of = |all: &[Value]| -> Vec<Value> {
        all.iter()
            .filter(|e| e["subject"] == "melmastoon.lock.audit.attempt.v1")
            .map(|e| e["data"].clone())
            .collect()
    };
    let recorded = wait_for("two door attempts", Duration::from_secs(30), || async {
        let a = attempts_of(&events().await.ok()?);
        (a.len() >= 2).then_some(a)
    })
    .await?;
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    let granted: Vec<&Value> = recorded
        .iter()
        .filter(|a| a["outcome"] == "granted")
        .collect();
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0]["keyCredentialId"], id.as_str());
    assert_eq!(granted[0]["method"], "pin_code");
    let denied: Vec<&Value> = recorded
        .iter()
        .filter(|a| a["outcome"] == "denied")
        .collect();
    assert_eq!(denied[0]["denyReason"], "unknown_credential");
    let all = events().await?;
    let schemas = lockstep_orchestrator::schema::EventSchemas::new();
    for e in &all {
        schemas
            .check_produced(e)
            .unwrap_or_else(|err| panic!("{}: {err}", e["subject"]));
    }
    let text = serde_json::to_string(&all)?;
    assert!(
        !text.contains(&digits) && !text.contains("000999"),
        "no digits in events"
    );
    assert!(all.iter().any(
        |e| e["subject"] == "melmastoon.lock.vendor_webhook.processed.v1"
            && e["data"]["attempts"] == 1
    ));
    let audit: Value = http
        .get(format!("{}/api/v1/key-credentials/{id}/audit", node.http))
        .bearer_auth(&operator)
        .send()
        .await?
        .json()
        .await?;
    assert!(audit["items"].as_array().is_some_and(|a| a
        .iter()
        .any(|r| r["action"] == "attempt" && r["payload"]["outcome"] == "granted")));

    // forged: a made-up record claiming the door opened; replayed: the same again;
    // misaddressed: a wrong token or vendor
    let forged = format!(
        "notifyType=1&lockId=1001&lockMac=AA%3ABB&records=%5B%7B%22recordType%22%3A4%2C%22success%22%3A1%2C%22username%22%3A%22{id}%22%2C%22lockDate%22%3A1%7D%5D"
    );
    let mut cases = 0;
    for (what, url, status) in [
        ("forged records", format!("{}{path}", node.http), 200),
        ("the same again", format!("{}{path}", node.http), 200),
        (
            "a wrong token",
            format!("{}/webhooks/v1/ttlock/{}", node.http, "0".repeat(32)),
            404,
        ),
        (
            "another vendor's path",
            format!("{}{}", node.http, path.replace("/ttlock/", "/kisi/")),
            404,
        ),
    ] {
        let r = http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(forged.clone())
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), status, "{what}");
        cases += 1;
    }
    let r = http
        .post(format!("{}{path}", node.http))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("lockId=not-a-lock")
        .send()
        .await?;
    assert_eq!(r.status(), 422, "a callback without a lock id");
    // Every delivery that was processed committed its door attempts with (or before) its
    // `vendor_webhook.processed.v1`, and the outbox publishes in commit order: once each
    // one counted is among the events, whatever they recorded is too.
    let processed = "lockstep_webhooks_total{outcome=\"processed\",vendor=\"ttlock\"}";
    wait_for(
        "every processed delivery's event",
        Duration::from_secs(30),
        || async {
            let counted = metric(&node.http, processed).await?;
            let published = processed_events(&events().await.ok()?);
            (published as f64 == counted).then_some(())
        },
    )
    .await?;
    assert_eq!(
        attempts_of(&events().await?).len(),
        2,
        "nothing new was recorded"
    );
    assert_eq!(
        metric(&node.http, processed).await,
        Some(3.0),
        "two real callbacks and the forged one, read back"
    );

    // a status callback is only a hint: the lock's health is probed at TTLock
    let status = |online: u8| {
        http.post(format!("{}{path}", node.http))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("notifyType=3&lockId=1001&isOnline={online}"))
            .send()
    };
    let offline_events = || async {
        let all = events().await?;
        anyhow::Ok(
            all.iter()
                .filter(|e| e["subject"] == "melmastoon.lock.device.offline.v1")
                .count(),
        )
    };
    assert_eq!(status(0).await?.status(), 200, "a forged 'offline'");
    // The hint's probe commits what it finds before the hint's own processed event is
    // committed: once that one is published, an offline event would be too.
    wait_for(
        "the hint's processed event",
        Duration::from_secs(30),
        || async { (processed_events(&events().await.ok()?) == 4).then_some(()) },
    )
    .await?;
    assert_eq!(metric(&node.http, processed).await, Some(4.0));
    assert_eq!(
        offline_events().await?,
        0,
        "the lock answered: still online"
    );
    http.post(format!("{sim}/_sim/locks/1001/health"))
        .json(&json!({ "offline": true }))
        .send()
        .await?;
    assert_eq!(status(0).await?.status(), 200);
    wait_for("device.offline.v1", Duration::from_secs(30), || async {
        (offline_events().await.ok()? == 1).then_some(())
    })
    .await?;
    println!("webhooks: {cases} hostile deliveries refused or ignored");
    Ok(())
}

/// One signed vendor's webhook, end to end (issue 14): the vendor's simulator, an adapter
/// configured with a `webhook_secret`, a stay's credential at the vendor.
struct SignedCase<'a> {
    /// The vendor code (also the webhook path's segment).
    vendor: &'static str,
    /// The attempt method the door event becomes.
    method: &'static str,
    /// The adapter's TOML lines after `vendor = ...` (account and `webhook_secret`).
    adapter: String,
    /// The lock's vendor device ref.
    device_ref: String,
    /// The simulator's base URL.
    sim: String,
    /// For the active credential `id`: the simulator's attempt route and body for the
    /// credential's own key, and for a key it does not know.
    attempts: &'a dyn Fn(&str) -> [(String, Value); 2],
    /// A well-formed event claiming credential `id` opened the door, with a fresh event id.
    event: &'a dyn Fn(&str) -> String,
    /// The headers signing `body` at Unix time `ts` with `secret`, as the vendor does.
    sign: &'a dyn Fn(&str, i64, &[u8]) -> Headers,
}

const SIGNED_SECRET: &str = "whsec-e2e-7d41c9";

/// Headers a delivery is sent with.
type Headers = Vec<(&'static str, String)>;

fn signed_config(
    dir: &std::path::Path,
    key: &ed25519_dalek::SigningKey,
    case: &SignedCase<'_>,
) -> anyhow::Result<std::path::PathBuf> {
    let public: String = key
        .verifying_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let config = dir.join("lockstep.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[demo]
enabled = false

[http]
bind = "127.0.0.1:0"
service_token = {{ value = "svc-token" }}

[auth]
issuer = "{JWT_ISSUER}"
audience = "{JWT_AUDIENCE}"
keys = [{{ kid = "k1", alg = "EdDSA", public_key = "{public}" }}]

[[properties]]
tenant_id = "{DEMO_TENANT}"
property_id = "ppt_whk"

[[properties.adapters]]
id = "vad_01J0000000000000000000W001"
vendor = "{vendor}"
{adapter}
rate_limit_per_min = 0

[[properties.devices]]
id = "lck_01J0000000000000000000W001"
adapter = "vad_01J0000000000000000000W001"
vendor_device_ref = "{device}"
label = "Room W1"
rooms = ["rmu_w1"]
"#,
            vendor = case.vendor,
            adapter = case.adapter,
            device = case.device_ref,
        ),
    )?;
    Ok(config)
}

/// The simulator posts a door attempt through the running node: recorded once as an
/// attempt on the credential (granted, by its method) and a key the door does not know as
/// denied; the vendor's retry of the same delivery records nothing more; forged, altered
/// and unsigned deliveries are 401 `WEBHOOK_SIGNATURE_INVALID`, record nothing, and count in
/// `lockstep_webhooks_total{outcome="signature_invalid"}`.
async fn signed_vendor_webhook_end_to_end(case: SignedCase<'_>, seed: u8) -> anyhow::Result<()> {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let dir = scratch(&format!("webhooks-{}", case.vendor));
    let config = signed_config(&dir, &key, &case)?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
    let http = reqwest::Client::new();
    let admin = jwt(&key, DEMO_TENANT, &[Role::Admin]);

    #[allow(clippy::disallowed_methods)] // the simulator's door judges against its own clock
    let now = chrono::Utc::now();
    let r = http
        .post(format!("{}/api/v1/intake", node.http))
        .bearer_auth("svc-token")
        .header("content-type", "application/json")
        .body(confirmed(
            "evt-whk-1",
            DEMO_TENANT,
            "ppt_whk",
            "rsv_whk_1",
            1,
            &["rmu_w1"],
            &(now - chrono::Duration::hours(1)).to_rfc3339(),
            &(now + chrono::Duration::days(1)).to_rfc3339(),
        ))
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let list = format!(
        "{}/api/v1/key-credentials?reservationId=rsv_whk_1",
        node.http
    );
    let cred = wait_for(
        &format!("{}: active", case.vendor),
        Duration::from_secs(30),
        || async {
            let v = get_json(&http, &list, "svc-token", Some(DEMO_TENANT)).await?;
            v["items"]
                .get(0)
                .cloned()
                .filter(|c| c["state"] == "active")
        },
    )
    .await?;
    let id = cred["id"].as_str().unwrap_or_default().to_owned();

    let adapters: Value = http
        .get(format!("{}/api/v1/vendor-adapters", node.http))
        .bearer_auth(&admin)
        .send()
        .await?
        .json()
        .await?;
    let path = adapters["items"][0]["webhookPath"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        path.starts_with(&format!("/webhooks/v1/{}/", case.vendor)),
        "{adapters}"
    );
    let url = format!("{}{path}", node.http);
    let r = http
        .post(format!("{}/_sim/webhook", case.sim))
        .json(&json!({ "url": url, "secret": SIGNED_SECRET }))
        .send()
        .await?;
    assert!(r.status().is_success());

    // the simulator's door, tried with the credential's key and with a key it does not know
    let [granted, denied] = (case.attempts)(&id);
    for ((route, body), opens) in [(granted, true), (denied, false)] {
        let r: Value = http
            .post(format!("{}{route}", case.sim))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(r["opened"], opens, "{}: {route}", case.vendor);
    }
    let attempts = || async {
        let v: Value = http
            .get(format!("{}/api/v1/events?limit=1000", node.http))
            .bearer_auth("svc-token")
            .header("x-tenant-id", DEMO_TENANT)
            .send()
            .await?
            .json()
            .await?;
        let all = v["items"].as_array().cloned().unwrap_or_default();
        anyhow::Ok((
            all.iter()
                .filter(|e| e["subject"] == "melmastoon.lock.audit.attempt.v1")
                .map(|e| e["data"].clone())
                .collect::<Vec<_>>(),
            all,
        ))
    };
    let recorded = wait_for(
        &format!("{}: two door attempts", case.vendor),
        Duration::from_secs(30),
        || async {
            let (a, _) = attempts().await.ok()?;
            (a.len() >= 2).then_some(a)
        },
    )
    .await?;
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    let granted: Vec<&Value> = recorded
        .iter()
        .filter(|a| a["outcome"] == "granted")
        .collect();
    assert_eq!(granted.len(), 1, "{recorded:?}");
    assert_eq!(granted[0]["keyCredentialId"], id.as_str());
    assert_eq!(granted[0]["method"], case.method);
    assert_eq!(granted[0]["vendor"], case.vendor);
    let refused: Vec<&Value> = recorded
        .iter()
        .filter(|a| a["outcome"] == "denied")
        .collect();
    assert_eq!(refused[0]["denyReason"], "unknown_credential");

    // what the node counted as handled: the metric moves after a delivery's commit and
    // before its answer, so it is final once a delivery is answered (the events above are
    // published after the commit)
    let counted = |outcome: &'static str| {
        let name = format!(
            "lockstep_webhooks_total{{outcome=\"{outcome}\",vendor=\"{}\"}}",
            case.vendor
        );
        let http = node.http.clone();
        async move { metric(&http, &name).await }
    };
    assert_eq!(counted("processed").await, Some(2.0), "{}", case.vendor);

    // the vendor retries its last delivery: answered 200, handled no second time
    let retry: Value = http
        .post(format!("{}/_sim/webhook/redeliver", case.sim))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        retry["status"], 200,
        "{}: the retry is answered",
        case.vendor
    );
    assert_eq!(
        counted("processed").await,
        Some(2.0),
        "{}: a duplicate is not recorded twice",
        case.vendor
    );

    // forged (another secret), altered after signing, unsigned, stale
    #[allow(clippy::disallowed_methods)] // a signature's time is the sender's wall clock
    let ts = chrono::Utc::now().timestamp();
    let body = (case.event)(&id);
    let altered = (case.event)(&id);
    let cases: Vec<(&str, String, Headers)> = vec![
        (
            "signed with another secret",
            body.clone(),
            (case.sign)("guess", ts, body.as_bytes()),
        ),
        (
            "altered after signing",
            altered.replacen("forged-", "forged-x", 1),
            (case.sign)(SIGNED_SECRET, ts, altered.as_bytes()),
        ),
        ("unsigned", body.clone(), Vec::new()),
        (
            "signed ten minutes ago",
            body.clone(),
            (case.sign)(SIGNED_SECRET, ts - 600, body.as_bytes()),
        ),
    ];
    let n = cases.len();
    for (what, body, headers) in cases {
        let mut rb = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        let r = rb.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        assert_eq!(status, 401, "{}: {what}: {text}", case.vendor);
        assert!(
            text.contains("MELMASTOON.LOCK.WEBHOOK_SIGNATURE_INVALID"),
            "{}: {what}: {text}",
            case.vendor
        );
        assert!(!text.contains(SIGNED_SECRET));
    }
    assert_eq!(
        counted("signature_invalid").await,
        Some(n as f64),
        "{}: every refusal is counted",
        case.vendor
    );
    assert_eq!(
        counted("processed").await,
        Some(2.0),
        "{}: the refused deliveries recorded nothing",
        case.vendor
    );

    // the same forged event, signed with the adapter's secret, is taken: the refusals were
    // the signatures' (and it is the last delivery: once its attempt is published, any
    // duplicate or refused one committed before it would have been too)
    let mut rb = http
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone());
    for (k, v) in (case.sign)(SIGNED_SECRET, ts, body.as_bytes()) {
        rb = rb.header(k, v);
    }
    assert_eq!(
        rb.send().await?.status(),
        200,
        "{}: signed right",
        case.vendor
    );
    assert_eq!(counted("processed").await, Some(3.0), "{}", case.vendor);
    let (after, all) = wait_for(
        &format!("{}: the third attempt", case.vendor),
        Duration::from_secs(30),
        || async {
            let (a, all) = attempts().await.ok()?;
            (a.len() >= 3).then_some((a, all))
        },
    )
    .await?;
    assert_eq!(after.len(), 3, "{}: {after:?}", case.vendor);
    let mut ids: Vec<&str> = after
        .iter()
        .filter_map(|a| a["vendorEventId"].as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one attempt per vendor event");
    let audit: Value = http
        .get(format!("{}/api/v1/key-credentials/{id}/audit", node.http))
        .bearer_auth(&admin)
        .send()
        .await?
        .json()
        .await?;
    let on_credential = audit["items"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|r| r["action"] == "attempt").count());
    assert_eq!(on_credential, 2, "{}: {audit}", case.vendor);

    let schemas = lockstep_orchestrator::schema::EventSchemas::new();
    for e in &all {
        schemas
            .check_produced(e)
            .unwrap_or_else(|err| panic!("{}: {err}", e["subject"]));
    }
    assert!(
        !node.log_text().contains(SIGNED_SECRET),
        "the secret is in no log line"
    );
    println!("{} webhooks: {n} forged deliveries refused", case.vendor);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salto_webhooks_are_verified_deduped_and_recorded() -> anyhow::Result<()> {
    use lockstep_vendors::salto::{self, webhook};
    let sim = salto::SaltoSimulator::start("127.0.0.1:0".parse()?)?;
    sim.handle().add_lock("lock-w1");
    let handle = sim.handle();
    let pin_of = move |label: &str| {
        handle
            .site_users()
            .into_iter()
            .find(|u| u.alias == label)
            .and_then(|u| u.pin)
            .unwrap_or_default()
    };
    let attempts = |id: &str| {
        [
            (
                "/_sim/locks/lock-w1/attempts".to_owned(),
                json!({ "method": "pin", "credential": pin_of(id) }),
            ),
            (
                "/_sim/locks/lock-w1/attempts".to_owned(),
                json!({ "method": "pin", "credential": "000999" }),
            ),
        ]
    };
    let counter = std::sync::atomic::AtomicU32::new(100);
    let event = |id: &str| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            r#"{{"id":"forged-{n}","type":"entry","site_id":"s","occurred_at":"2026-12-01T10:00:00Z","lock":{{"id":"lock-w1"}},"opening_method":"pin","user":{{"id":"u1","alias":"{id}"}}}}"#
        )
    };
    let sign = |secret: &str, ts: i64, body: &[u8]| {
        vec![
            (webhook::TIMESTAMP_HEADER, ts.to_string()),
            (webhook::SIGNATURE_HEADER, webhook::sign(secret, ts, body)),
        ]
    };
    let case = SignedCase {
        vendor: "salto",
        method: "pin_code",
        adapter: format!(
            "api_base_url = \"{b}\"\nauth_base_url = \"{b}\"\nsite_id = \"{}\"\nclient_id = \"{}\"\nclient_secret = {{ value = \"{}\" }}\nusername = \"{}\"\npassword = {{ value = \"{}\" }}\nwebhook_secret = {{ value = \"{SIGNED_SECRET}\" }}",
            salto::simulator::SIM_SITE_ID,
            salto::simulator::SIM_CLIENT_ID,
            salto::simulator::SIM_CLIENT_SECRET,
            salto::simulator::SIM_USERNAME,
            salto::simulator::SIM_PASSWORD,
            b = sim.base_url(),
        ),
        device_ref: "lock-w1".into(),
        sim: sim.base_url(),
        attempts: &attempts,
        event: &event,
        sign: &sign,
    };
    signed_vendor_webhook_end_to_end(case, 71).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vostio_webhooks_are_verified_deduped_and_recorded() -> anyhow::Result<()> {
    use lockstep_vendors::vostio::{self, simulator::SIM_ENVIRONMENT, webhook};
    let sim = vostio::VostioSimulator::start("127.0.0.1:0".parse()?)?;
    sim.handle().add_door(SIM_ENVIRONMENT, "door-w1");
    let handle = sim.handle();
    let key_of = move |label: &str| {
        handle
            .keys(SIM_ENVIRONMENT)
            .into_iter()
            .find(|k| k.external_id.as_deref() == Some(label))
            .map(|k| k.id)
            .unwrap_or_default()
    };
    let route = format!("/_sim/environments/{SIM_ENVIRONMENT}/doors/door-w1/attempts");
    let attempts = |id: &str| {
        [
            (route.clone(), json!({ "keyId": key_of(id) })),
            (route.clone(), json!({ "keyId": "key-nobody-holds" })),
        ]
    };
    let counter = std::sync::atomic::AtomicU32::new(100);
    let event = |id: &str| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            r#"{{"notificationId":"forged-{n}","environmentId":"{SIM_ENVIRONMENT}","eventType":"access.granted","occurredAt":"2026-12-01T10:00:00Z","doorId":"door-w1","key":{{"id":"k1","keyType":"mobileKey","externalId":"{id}"}}}}"#
        )
    };
    let sign = |secret: &str, ts: i64, body: &[u8]| {
        vec![(webhook::SIGNATURE_HEADER, webhook::sign(secret, ts, body))]
    };
    let case = SignedCase {
        vendor: "assa-abloy",
        method: "mobile_app",
        adapter: format!(
            "api_base_url = \"{b}/api\"\nauth_base_url = \"{b}/oauth2/token\"\nsite_id = \"{SIM_ENVIRONMENT}\"\nclient_id = \"{}\"\nclient_secret = {{ value = \"{}\" }}\nwebhook_secret = {{ value = \"{SIGNED_SECRET}\" }}",
            vostio::simulator::SIM_CLIENT_ID,
            vostio::simulator::SIM_CLIENT_SECRET,
            b = sim.base_url(),
        ),
        device_ref: "door-w1".into(),
        sim: sim.base_url(),
        attempts: &attempts,
        event: &event,
        sign: &sign,
    };
    signed_vendor_webhook_end_to_end(case, 72).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brivo_webhooks_are_verified_deduped_and_recorded() -> anyhow::Result<()> {
    use lockstep_vendors::brivo::{self, webhook};
    let sim = brivo::BrivoSimulator::start("127.0.0.1:0".parse()?)?;
    sim.handle().add_access_point(4101);
    let handle = sim.handle();
    let pin_of = move |label: &str| {
        handle
            .users()
            .into_iter()
            .find(|u| u.external_id.as_deref() == Some(label))
            .and_then(|u| u.pin)
            .unwrap_or_default()
    };
    let attempts = |id: &str| {
        [
            (
                "/_sim/access-points/4101/attempts".to_owned(),
                json!({ "credential": pin_of(id) }),
            ),
            (
                "/_sim/access-points/4101/attempts".to_owned(),
                json!({ "credential": "000999" }),
            ),
        ]
    };
    let counter = std::sync::atomic::AtomicU32::new(100);
    let event = |id: &str| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            r#"{{"uuid":"forged-{n}","securityAction":{{"securityActionId":2004,"action":"Valid Credential","exception":false}},"actor":{{"id":1,"name":"x","externalId":"{id}"}},"eventObject":{{"id":4101,"name":"Door","deviceType":{{"id":1,"name":"Door"}}}},"occurred":"2026-12-01T10:00:00Z","eventData":{{"actionAllowed":true,"credentialType":"PIN"}}}}"#
        )
    };
    let sign = |secret: &str, ts: i64, body: &[u8]| {
        vec![
            (webhook::TIMESTAMP_HEADER, ts.to_string()),
            (webhook::SIGNATURE_HEADER, webhook::sign(secret, ts, body)),
        ]
    };
    let case = SignedCase {
        vendor: "brivo",
        method: "pin_code",
        adapter: format!(
            "api_base_url = \"{b}\"\nauth_base_url = \"{b}\"\napi_key = {{ value = \"{}\" }}\nclient_id = \"{}\"\nclient_secret = {{ value = \"{}\" }}\nusername = \"{}\"\npassword = {{ value = \"{}\" }}\naccess_schedule_id = {}\nwebhook_secret = {{ value = \"{SIGNED_SECRET}\" }}",
            brivo::simulator::SIM_API_KEY,
            brivo::simulator::SIM_CLIENT_ID,
            brivo::simulator::SIM_CLIENT_SECRET,
            brivo::simulator::SIM_USERNAME,
            brivo::simulator::SIM_PASSWORD,
            brivo::simulator::SIM_SCHEDULE_ID,
            b = sim.base_url(),
        ),
        device_ref: "4101".into(),
        sim: sim.base_url(),
        attempts: &attempts,
        event: &event,
        sign: &sign,
    };
    signed_vendor_webhook_end_to_end(case, 73).await
}

/// How many `vendor_webhook.processed.v1` among `events` say the delivery was processed.
fn processed_events(events: &[Value]) -> usize {
    events
        .iter()
        .filter(|e| {
            e["subject"] == "melmastoon.lock.vendor_webhook.processed.v1"
                && e["data"]["outcome"] == "processed"
        })
        .count()
}
