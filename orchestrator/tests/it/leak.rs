//! Issue 6, "what it must show" 3: a full scenario on the embedded node (debug logging),
//! every response body, every produced event and every log line captured, and none of them
//! holds a vendorRef, a vendor device reference, a secret or a token; a PIN appears only in
//! the one audited reveal response.

use std::time::Duration;

use lockstep_orchestrator::auth::Role;
use lockstep_orchestrator::seed::DEMO_TENANT;
use serde_json::{json, Value};

use crate::harness::*;

/// Where `needle` occurs as a whole token: not inside a longer run of digits or letters,
/// and (for numbers) not as the fraction of a timestamp.
fn occurs(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        let glued = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        !glued(before) && !glued(after) && before != Some('.')
    })
}

struct Capture {
    http: reqwest::Client,
    base: String,
    bodies: Vec<(String, String)>,
}

impl Capture {
    async fn send(&mut self, what: &str, rb: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let r = rb.send().await?;
        let text = r.text().await?;
        self.bodies.push((what.to_owned(), text.clone()));
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&mut self, bearer: &str, path: &str) -> anyhow::Result<Value> {
        let rb = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(bearer);
        self.send(path, rb).await
    }

    async fn post(&mut self, bearer: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let rb = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .json(&body);
        self.send(path, rb).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_vendor_ref_secret_or_token_reaches_a_response_an_event_or_a_log_line(
) -> anyhow::Result<()> {
    // the matcher finds a value wherever it stands alone
    assert!(occurs(r#"{"ref":"3234293"}"#, "3234293") && occurs("lockId=1001&", "1001"));
    assert!(!occurs("2026-12-01T11:01:35.1001+00:00", "1001") && !occurs("k10015", "1001"));
    let key = ed25519_dalek::SigningKey::from_bytes(&[44u8; 32]);
    let dir = scratch("leak");
    let config = jwt_config(&dir, &key)?;
    let node = Lockstep::spawn(
        &dir,
        &["--config", &config.to_string_lossy()],
        &[(
            "LOCKSTEP_LOG",
            "debug,lapin=warn,sqlx=warn,actix_server=warn,h2=warn,hyper=warn,hyper_util=warn,reqwest=warn,rustls=warn,mio=warn".into(),
        )],
    )
    .await?;
    let sim = demo_sim_url(&node);
    let admin = jwt(&key, DEMO_TENANT, &[Role::Admin]);
    let operator = jwt(&key, DEMO_TENANT, &[Role::Operator]);
    let mut c = Capture {
        http: reqwest::Client::new(),
        base: node.http.clone(),
        bodies: Vec::new(),
    };
    let mut vendor_refs = std::collections::BTreeSet::new();
    let mut collect_refs = |v: &Value| {
        for p in v.as_array().into_iter().flatten() {
            if let Some(id) = p["keyboardPwdId"].as_i64() {
                vendor_refs.insert(id.to_string());
            }
        }
    };

    // two stays that hold now
    #[allow(clippy::disallowed_methods)] // the simulated lock judges against its own clock
    let now = chrono::Utc::now();
    for (n, room) in [(1, "rmu_101"), (2, "rmu_102")] {
        let body = confirmed(
            &format!("evt-l-{n}"),
            DEMO_TENANT,
            "ppt_demo",
            &format!("rsv_l_{n}"),
            1,
            &[room],
            &(now - chrono::Duration::hours(1)).to_rfc3339(),
            &(now + chrono::Duration::days(1)).to_rfc3339(),
        );
        let rb = c
            .http
            .post(format!("{}/api/v1/intake", node.http))
            .bearer_auth("svc-token")
            .header("content-type", "application/json")
            .body(body);
        c.send("intake", rb).await?;
    }
    let mut ids = Vec::new();
    for n in [1, 2] {
        let path = format!("/api/v1/key-credentials?reservationId=rsv_l_{n}");
        let cred = wait_for("active", Duration::from_secs(30), || {
            let (http, url, bearer) = (
                c.http.clone(),
                format!("{}{path}", node.http),
                operator.clone(),
            );
            async move {
                let v: Value = http
                    .get(url)
                    .bearer_auth(bearer)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                v["items"]
                    .get(0)
                    .cloned()
                    .filter(|x| x["state"] == "active")
            }
        })
        .await?;
        ids.push(cred["id"].as_str().unwrap_or_default().to_owned());
        c.get(&operator, &path).await?;
    }
    for lock in [1001, 1002] {
        collect_refs(
            &reqwest::get(format!("{sim}/_sim/locks/{lock}/passcodes"))
                .await?
                .json()
                .await?,
        );
    }
    let (one, two) = (ids[0].clone(), ids[1].clone());

    // every read
    for path in [
        format!("/api/v1/key-credentials/{one}"),
        format!("/api/v1/key-credentials/{one}/audit"),
        "/api/v1/key-credentials?propertyId=ppt_demo&roomId=rmu_101&opensAt=now".into(),
        "/api/v1/lock-devices?propertyId=ppt_demo".into(),
        "/api/v1/lock-devices/lck_01J00000000000000000000101/health".into(),
        "/api/v1/vendor-adapters?propertyId=ppt_demo".into(),
    ] {
        c.get(&admin, &path).await?;
    }
    let adapters = c
        .get(&admin, "/api/v1/vendor-adapters?propertyId=ppt_demo")
        .await?;
    let ttlock = adapters["items"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["vendor"] == "ttlock"))
        .cloned()
        .unwrap_or_default();
    let adapter_id = ttlock["id"].as_str().unwrap_or_default().to_owned();
    c.post(
        &operator,
        &format!("/api/v1/vendor-adapters/{adapter_id}/health-check"),
        json!({}),
    )
    .await?;

    // the PIN, revealed once, used at the door, reported back by webhook
    let revealed = c
        .post(
            &operator,
            &format!("/api/v1/key-credentials/{one}/pin"),
            json!({}),
        )
        .await?;
    let pin = revealed["pins"][0]["pin"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(pin.len(), 6);
    let path = ttlock["webhookPath"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    reqwest::Client::new()
        .post(format!("{sim}/_sim/callback"))
        .json(&json!({ "url": format!("{}{path}", node.http) }))
        .send()
        .await?;
    reqwest::Client::new()
        .post(format!("{sim}/_sim/locks/1001/attempts"))
        .json(&json!({ "method": "pin", "credential": pin }))
        .send()
        .await?;

    // every write
    c.post(
        &operator,
        &format!("/api/v1/key-credentials/{one}/suspend"),
        json!({ "reason": "manual" }),
    )
    .await?;
    c.post(
        &operator,
        &format!("/api/v1/key-credentials/{one}/unsuspend"),
        json!({}),
    )
    .await?;
    let replaced = c
        .post(
            &operator,
            &format!("/api/v1/key-credentials/{one}/replace"),
            json!({}),
        )
        .await?;
    let new_id = replaced["replacedById"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    wait_for("replacement active", Duration::from_secs(30), || {
        let (http, url, bearer) = (
            c.http.clone(),
            format!("{}/api/v1/key-credentials/{new_id}", node.http),
            operator.clone(),
        );
        async move {
            let v: Value = http
                .get(url)
                .bearer_auth(bearer)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["state"] == "active").then_some(())
        }
    })
    .await?;
    collect_refs(
        &reqwest::get(format!("{sim}/_sim/locks/1001/passcodes"))
            .await?
            .json()
            .await?,
    );
    c.post(
        &operator,
        &format!("/api/v1/key-credentials/{new_id}/revoke"),
        json!({ "reason": "security" }),
    )
    .await?;
    let rb = c
        .http
        .post(format!("{}/api/v1/intake", node.http))
        .bearer_auth("svc-token")
        .header("content-type", "application/json")
        .body(cancelled(
            "evt-l-cancel",
            DEMO_TENANT,
            "ppt_demo",
            "rsv_l_2",
            2,
        ));
    c.send("cancel", rb).await?;
    wait_for(
        "rsv_l_2 revoked at the door",
        Duration::from_secs(30),
        || {
            let url = format!("{sim}/_sim/locks/1002/passcodes");
            async move {
                let v: Value = reqwest::get(url).await.ok()?.json().await.ok()?;
                v.as_array()?.is_empty().then_some(())
            }
        },
    )
    .await?;
    c.get(&operator, &format!("/api/v1/key-credentials/{two}"))
        .await?;
    // failures carry no secrets either
    c.get("not-a-token", &format!("/api/v1/key-credentials/{one}"))
        .await?;
    c.post(
        &operator,
        &format!("/api/v1/key-credentials/{one}/revoke"),
        json!({ "reason": "nope" }),
    )
    .await?;
    let rb = c.http.get(format!("{}/metrics", node.http));
    c.send("metrics", rb).await?;

    // the events
    let events = wait_for("the attempt event", Duration::from_secs(30), || {
        let http = c.http.clone();
        let url = format!("{}/api/v1/events?limit=1000", node.http);
        async move {
            let v = get_json(&http, &url, "svc-token", Some(DEMO_TENANT)).await?;
            let all = v["items"].as_array()?.clone();
            all.iter()
                .any(|e| e["subject"] == "melmastoon.lock.audit.attempt.v1")
                .then_some(all)
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = node.log_text();

    // what must not show
    let encryption_key = std::fs::read_to_string(dir.join(".lockstep").join("encryption.key"))?
        .trim()
        .to_owned();
    let mut secrets: Vec<(String, String)> = vec![
        ("client secret".into(), "sim-client-secret".into()),
        ("account password".into(), "sim-password".into()),
        (
            "password md5".into(),
            lockstep_vendors::ttlock::md5_hex("sim-password"),
        ),
        ("service token".into(), "svc-token".into()),
        ("encryption key".into(), encryption_key),
        ("admin token".into(), admin.clone()),
        ("operator token".into(), operator.clone()),
    ];
    for r in &vendor_refs {
        secrets.push(("vendorRef".into(), r.clone()));
    }
    for lock in ["1001", "1002"] {
        secrets.push(("vendor device ref".into(), lock.into()));
    }
    assert!(
        vendor_refs.len() >= 3,
        "refs of both stays and the replacement: {vendor_refs:?}"
    );
    let events_text: Vec<String> = events.iter().map(Value::to_string).collect();
    let mut checked = 0;
    let mut places: Vec<(&str, &str)> = Vec::new();
    for (what, body) in &c.bodies {
        places.push((what.as_str(), body.as_str()));
    }
    for e in &events_text {
        places.push(("event", e.as_str()));
    }
    for line in logs.lines() {
        places.push(("log line", line));
    }
    for (where_, text) in &places {
        for (name, secret) in &secrets {
            assert!(
                !occurs(text, secret),
                "a {name} leaked into {where_}: {text}"
            );
        }
        // the PIN only in its reveal
        if !(where_.ends_with("/pin")) {
            assert!(!occurs(text, &pin), "the PIN leaked into {where_}: {text}");
        }
        checked += 1;
    }
    // the scenario really happened
    let subjects: std::collections::BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .collect();
    for s in [
        "melmastoon.lock.credential.issued.v1",
        "melmastoon.lock.credential.suspended.v1",
        "melmastoon.lock.credential.revoked.v1",
        "melmastoon.lock.audit.attempt.v1",
        "melmastoon.lock.vendor_webhook.processed.v1",
    ] {
        assert!(subjects.contains(s), "{s} in {subjects:?}");
    }
    println!(
        "leak: {} responses, {} events, {} log lines checked ({checked} texts) against {} secrets and vendor refs",
        c.bodies.len(),
        events_text.len(),
        logs.lines().count(),
        secrets.len()
    );
    Ok(())
}
