//! Issue 14, spec `003` §8 `CredentialExpiredError`: a credential whose window has ended
//! answers an operator's change or a PIN reveal with 410 `MELMASTOON.LOCK.CREDENTIAL_EXPIRED`,
//! not a validation error.

use std::time::Duration;

use serde_json::{json, Value};

use crate::embedded::credential_of;
use crate::harness::*;

const DEMO_TENANT: &str = "00000000-0000-4000-8000-00000000d3e0";

/// A PIN whose stay ends four seconds after it is confirmed: while it runs the PIN is
/// revealed; once its `validUntil` has passed, suspending it, moving its end and revealing
/// its PIN are each 410 `CREDENTIAL_EXPIRED` (before this, 422 `VALIDATION_FAILED`, or 200
/// for a reveal before the expiry timer ran), and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_whose_window_ended_answers_changes_with_410() -> anyhow::Result<()> {
    let dir = scratch("expired");
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
    let now = lockstep_domain::Clock::now(&lockstep_domain::SystemClock);
    let until = now + chrono::Duration::seconds(4);
    let from = (now - chrono::Duration::hours(1)).to_rfc3339();
    let body = confirmed(
        "evt-x1",
        DEMO_TENANT,
        "ppt_demo",
        "rsv_x1",
        1,
        &["rmu_104"],
        &from,
        &until.to_rfc3339(),
    );
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/intake", node.http))
        .bearer_auth(&token)
        .body(body)
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let cred = wait_for("rsv_x1 active", Duration::from_secs(10), || async {
        credential_of(&node, &token, "rsv_x1")
            .await
            .filter(|c| c["state"] == "active")
    })
    .await?;
    let id = cred["id"].as_str().unwrap_or_default().to_owned();
    let call = |method: reqwest::Method, path: &str, body: Value| {
        http.request(
            method,
            format!("{}/api/v1/key-credentials/{id}{path}", node.http),
        )
        .bearer_auth(&token)
        .header("x-tenant-id", DEMO_TENANT)
        .json(&body)
        .send()
    };
    let pin = call(reqwest::Method::POST, "/pin", json!({})).await?;
    assert_eq!(pin.status(), 200, "revealed while the stay runs");
    wait_for("the stay's end", Duration::from_secs(10), || async {
        (lockstep_domain::Clock::now(&lockstep_domain::SystemClock) > until).then_some(())
    })
    .await?;
    let tries = [
        (
            reqwest::Method::POST,
            "/suspend",
            json!({ "reason": "manual" }),
        ),
        (
            reqwest::Method::PATCH,
            "",
            json!({ "validUntil": (until + chrono::Duration::hours(2)).to_rfc3339() }),
        ),
        (reqwest::Method::POST, "/pin", json!({})),
    ];
    for (method, path, body) in tries {
        let r = call(method.clone(), path, body).await?;
        assert_eq!(r.status(), 410, "{method} {path}");
        let v: Value = r.json().await?;
        assert_eq!(v["code"], "MELMASTOON.LOCK.CREDENTIAL_EXPIRED", "{v}");
    }
    let after = credential_of(&node, &token, "rsv_x1")
        .await
        .expect("credential");
    assert_ne!(after["state"], "suspended");
    assert_eq!(
        after["validUntil"], cred["validUntil"],
        "its end did not move"
    );
    Ok(())
}
