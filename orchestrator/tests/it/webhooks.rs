//! Issue 6: vendor webhooks end to end on the embedded node. The built-in TTLock simulator
//! pushes its lock-records callback to the adapter's webhook URL; Lockstep reads the
//! records back from the vendor, appends door attempts, audits them and publishes
//! `audit.attempt.v1`. Forged, replayed and misaddressed callbacks change nothing.

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
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        attempts_of(&events().await?).len(),
        2,
        "nothing new was recorded"
    );
    let processed = metric(
        &node.http,
        "lockstep_webhooks_total{outcome=\"processed\",vendor=\"ttlock\"}",
    )
    .await;
    assert_eq!(
        processed,
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
    tokio::time::sleep(Duration::from_millis(300)).await;
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
