//! Issue 6, "what it must show" 2 (first part): every request is authenticated and
//! confined to its token's tenant and roles. Each case asserts the status and that nothing
//! changed; the test prints how many cases ran.

use std::time::Duration;

use lockstep_orchestrator::auth::{mint, Claims, Role};
use serde_json::Value;

use crate::harness::*;
use lockstep_orchestrator::seed::DEMO_TENANT;

const OTHER_TENANT: &str = "7a1e0b52-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
const ISSUER: &str = "https://id.melmastoon.test";
const AUDIENCE: &str = "lockstep";

fn token(key: &ed25519_dalek::SigningKey, tenant: &str, roles: &[Role], exp_in: i64) -> String {
    #[allow(clippy::disallowed_methods)] // a token is minted against the wall clock
    let now = chrono::Utc::now().timestamp();
    mint(
        key,
        "k1",
        &Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "usr_test".into(),
            exp: now + exp_in,
            nbf: None,
            iat: now,
            tenant_id: tenant.into(),
            roles: roles.to_vec(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_and_confine_every_request_to_their_tenant_and_roles(
) -> anyhow::Result<()> {
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[10u8; 32]);
    let public: String = key
        .verifying_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = scratch("security");
    let config = dir.join("lockstep.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[demo]
enabled = true
simulator_bind = "127.0.0.1:0"

[http]
bind = "127.0.0.1:0"
service_token = {{ value = "svc-token" }}

[auth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
keys = [{{ kid = "k1", alg = "EdDSA", public_key = "{public}" }}]
"#
        ),
    )?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
    let http = reqwest::Client::new();
    let intake = |bearer: String, body: Vec<u8>| {
        http.post(format!("{}/api/v1/intake", node.http))
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let get = |path: &str, bearer: Option<String>, tenant_header: Option<&str>| {
        let mut rb = http.get(format!("{}{path}", node.http));
        if let Some(b) = bearer {
            rb = rb.bearer_auth(b);
        }
        if let Some(t) = tenant_header {
            rb = rb.header("x-tenant-id", t);
        }
        rb.send()
    };
    let confirm = confirmed(
        "evt-sec-1",
        DEMO_TENANT,
        "ppt_demo",
        "rsv_sec_1",
        1,
        &["rmu_102"],
        "2027-12-01T14:00:00Z",
        "2027-12-02T11:00:00Z",
    );
    assert_eq!(intake("svc-token".into(), confirm).await?.status(), 202);
    let operator = token(&key, DEMO_TENANT, &[Role::Operator], 600);
    let list = "/api/v1/key-credentials?reservationId=rsv_sec_1";
    let cred: Value = wait_for("rsv_sec_1 active", Duration::from_secs(30), || async {
        let v: Value = get(list, Some(operator.clone()), None)
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
    let id = cred["id"].as_str().expect("an id").to_owned();
    let one = format!("/api/v1/key-credentials/{id}");
    // "Nothing changed" is read after a barrier: a later copy of the confirmation (a new
    // id, the same revision: ignored as a duplicate) through the accepted path, waited for
    // until its step has run. The stay's mailbox is stepped in order, so whatever a refused
    // request might have queued for it was stepped before.
    let barriers = std::cell::Cell::new(0);
    let still_active = || async {
        barriers.set(barriers.get() + 1);
        let n = barriers.get();
        let again = confirmed(
            &format!("evt-sec-barrier-{n}"),
            DEMO_TENANT,
            "ppt_demo",
            "rsv_sec_1",
            1,
            &["rmu_102"],
            "2027-12-01T14:00:00Z",
            "2027-12-02T11:00:00Z",
        );
        anyhow::ensure!(intake("svc-token".into(), again).await?.status() == 202);
        wait_for("the barrier stepped", Duration::from_secs(30), || async {
            metric(
                &node.http,
                "lockstep_saga_steps_total{outcome=\"ignored\",step=\"reservation_confirmed\"}",
            )
            .await
            .filter(|v| *v >= n as f64)
        })
        .await?;
        let v: Value = get(&one, Some(operator.clone()), None)
            .await?
            .json()
            .await?;
        anyhow::Ok(v["state"] == "active" && v["version"] == cred["version"])
    };

    let cases = std::cell::Cell::new(0);
    let expect = |what: &str, got: u16, want: u16| {
        cases.set(cases.get() + 1);
        assert_eq!(got, want, "{what}");
    };
    // the happy paths of each role
    expect(
        "operator reads its tenant's credential",
        get(&one, Some(operator.clone()), None)
            .await?
            .status()
            .as_u16(),
        200,
    );
    let admin = token(&key, DEMO_TENANT, &[Role::Admin], 600);
    expect(
        "admin reads it too",
        get(&one, Some(admin.clone()), None)
            .await?
            .status()
            .as_u16(),
        200,
    );
    expect(
        "operator reads the devices",
        get(
            "/api/v1/lock-devices?propertyId=ppt_demo",
            Some(operator.clone()),
            None,
        )
        .await?
        .status()
        .as_u16(),
        200,
    );
    expect(
        "operator reads the audit",
        get(&format!("{one}/audit"), Some(operator.clone()), None)
            .await?
            .status()
            .as_u16(),
        200,
    );
    // no token, bad signature, expired, not a JWT
    expect(
        "no token",
        get(&one, None, Some(DEMO_TENANT)).await?.status().as_u16(),
        401,
    );
    expect(
        "a stranger's signature",
        get(
            &one,
            Some(token(&stranger, DEMO_TENANT, &[Role::Admin], 600)),
            None,
        )
        .await?
        .status()
        .as_u16(),
        401,
    );
    expect(
        "expired",
        get(
            &one,
            Some(token(&key, DEMO_TENANT, &[Role::Operator], -3600)),
            None,
        )
        .await?
        .status()
        .as_u16(),
        401,
    );
    expect(
        "garbage",
        get(&one, Some("not-a-token".into()), Some(DEMO_TENANT))
            .await?
            .status()
            .as_u16(),
        401,
    );
    let refused = get(
        &one,
        Some(token(&key, DEMO_TENANT, &[Role::Operator], -3600)),
        None,
    )
    .await?;
    let body: Value = refused.json().await?;
    assert_eq!(body["code"], "MELMASTOON.GENERAL.UNAUTHENTICATED");
    assert_eq!(body["details"]["reason"], "the token has expired");
    // wrong role: an operator cannot post events (a cancellation here)
    let cancel = cancelled("evt-sec-2", DEMO_TENANT, "ppt_demo", "rsv_sec_1", 2);
    expect(
        "operator posting an event",
        intake(operator.clone(), cancel.clone())
            .await?
            .status()
            .as_u16(),
        403,
    );
    // cross-tenant: another tenant's tokens see nothing and change nothing
    let theirs = token(&key, OTHER_TENANT, &[Role::Operator, Role::Admin], 600);
    expect(
        "another tenant reads the credential by id",
        get(&one, Some(theirs.clone()), None)
            .await?
            .status()
            .as_u16(),
        404,
    );
    let v: Value = get(list, Some(theirs.clone()), None).await?.json().await?;
    cases.set(cases.get() + 1);
    assert_eq!(
        v["items"],
        serde_json::json!([]),
        "another tenant lists nothing"
    );
    expect(
        "another tenant's token naming this tenant",
        get(&one, Some(theirs.clone()), Some(DEMO_TENANT))
            .await?
            .status()
            .as_u16(),
        403,
    );
    let their_service = token(&key, OTHER_TENANT, &[Role::Service], 600);
    expect(
        "another tenant's service posting this tenant's cancellation",
        intake(their_service, cancel.clone())
            .await?
            .status()
            .as_u16(),
        403,
    );
    expect(
        "another tenant reads the audit",
        get(&format!("{one}/audit"), Some(theirs), None)
            .await?
            .status()
            .as_u16(),
        404,
    );
    // the PIN: the front desk may see it, an admin may not, another tenant not at all
    let reveal = |bearer: String| {
        http.post(format!("{}{one}/pin", node.http))
            .bearer_auth(bearer)
            .send()
    };
    expect(
        "operator reveals the PIN",
        reveal(operator.clone()).await?.status().as_u16(),
        200,
    );
    expect(
        "admin may not reveal the PIN",
        reveal(admin.clone()).await?.status().as_u16(),
        403,
    );
    expect(
        "another tenant may not reveal the PIN",
        reveal(token(&key, OTHER_TENANT, &[Role::Operator], 600))
            .await?
            .status()
            .as_u16(),
        404,
    );
    assert!(still_active().await?, "nothing changed");
    // writes: another tenant's admin guessing our id, hostile bodies, hostile strings
    let post = |path: String, bearer: String, content_type: &'static str, body: Vec<u8>| {
        http.post(format!("{}{path}", node.http))
            .bearer_auth(bearer)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let json_ct = "application/json";
    let admin_here = token(&key, DEMO_TENANT, &[Role::Admin], 600);
    for action in ["revoke", "suspend", "unsuspend", "replace"] {
        expect(
            &format!("another tenant's admin: {action}"),
            post(
                format!("{one}/{action}"),
                token(&key, OTHER_TENANT, &[Role::Admin], 600),
                json_ct,
                br#"{"reason":"security"}"#.to_vec(),
            )
            .await?
            .status()
            .as_u16(),
            404,
        );
    }
    let big = format!(
        r#"{{"reason":"lost","x":"{}"}}"#,
        "A".repeat(3 * 1024 * 1024)
    )
    .into_bytes();
    let cases_bodies: Vec<(&str, String, Vec<u8>, u16)> = vec![
        (
            "an oversized write",
            format!("{one}/revoke"),
            big.clone(),
            413,
        ),
        ("an oversized event", "/api/v1/intake".into(), big, 413),
        (
            "malformed JSON",
            format!("{one}/revoke"),
            br#"{"reason": "lost""#.to_vec(),
            400,
        ),
        (
            "JSON of another shape",
            format!("{one}/revoke"),
            br#"["lost"]"#.to_vec(),
            400,
        ),
        (
            "a NUL in the reason",
            format!("{one}/revoke"),
            b"{\"reason\":\"lost\\u0000\"}".to_vec(),
            422,
        ),
        (
            "an injection in the reason",
            format!("{one}/suspend"),
            br#"{"reason":"manual'; DROP TABLE key_credentials; --"}"#.to_vec(),
            422,
        ),
        (
            "deep nesting",
            format!("{one}/revoke"),
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            400,
        ),
        (
            "not UTF-8",
            format!("{one}/revoke"),
            vec![0xff, 0xfe, 0x00, 0x7b],
            400,
        ),
    ];
    for (what, path, body, want) in cases_bodies {
        let bearer = if path == "/api/v1/intake" {
            "svc-token".to_owned()
        } else {
            admin_here.clone()
        };
        let r = post(path, bearer, json_ct, body).await?;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        expect(what, status, want);
        assert!(
            v["code"]
                .as_str()
                .is_some_and(|c| c.starts_with("MELMASTOON.")),
            "{what}: the error body has the API's shape: {v}"
        );
    }
    let hostile_queries = [
        (
            "an injection in a filter",
            "/api/v1/key-credentials?reservationId=rsv%27%20OR%201%3D1%20--".to_owned(),
            422,
        ),
        (
            "a script in a filter",
            "/api/v1/key-credentials?propertyId=%3Cscript%3Ealert(1)%3C%2Fscript%3E".into(),
            422,
        ),
        (
            "a right-to-left override",
            "/api/v1/key-credentials?roomId=rmu_%E2%80%AE101".into(),
            422,
        ),
        (
            "a 10 000-character filter",
            format!("/api/v1/key-credentials?guestId={}", "g".repeat(10_000)),
            422,
        ),
        (
            "path traversal as an id",
            "/api/v1/key-credentials/..%2F..%2Fetc%2Fpasswd".into(),
            422,
        ),
        (
            "a NUL in an id",
            "/api/v1/key-credentials/key_%00".into(),
            422,
        ),
        (
            "an unknown filter",
            "/api/v1/key-credentials?state=active&__proto__=x".into(),
            400,
        ),
    ];
    for (what, path, want) in hostile_queries {
        expect(
            what,
            get(&path, Some(admin_here.clone()), None)
                .await?
                .status()
                .as_u16(),
            want,
        );
    }
    // a hostile event: every id is checked before anything is stored
    let mut evil: Value = serde_json::from_slice(&confirmed(
        "evt-sec-evil",
        DEMO_TENANT,
        "ppt_demo",
        "rsv_sec_1",
        3,
        &["rmu_102"],
        "2027-12-01T14:00:00Z",
        "2027-12-02T11:00:00Z",
    ))?;
    evil["data"]["guestId"] = Value::String("gst_<img src=x onerror=alert(1)>".into());
    expect(
        "a script in an event's guest id",
        intake("svc-token".into(), serde_json::to_vec(&evil)?)
            .await?
            .status()
            .as_u16(),
        422,
    );
    // forged and replayed webhooks
    let adapters: Value = get(
        "/api/v1/vendor-adapters?propertyId=ppt_demo",
        Some(admin_here.clone()),
        None,
    )
    .await?
    .json()
    .await?;
    let hook = adapters["items"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["vendor"] == "ttlock"))
        .and_then(|i| i["webhookPath"].as_str())
        .unwrap_or_default()
        .to_owned();
    let forged = format!(
        "notifyType=1&lockId=1002&records=%5B%7B%22recordType%22%3A4%2C%22success%22%3A1%2C%22username%22%3A%22{id}%22%7D%5D"
    )
    .into_bytes();
    let form = "application/x-www-form-urlencoded";
    for (what, path, want) in [
        (
            "a forged webhook (records the vendor never had)",
            hook.clone(),
            200,
        ),
        ("the same webhook replayed", hook.clone(), 200),
        (
            "a webhook with a guessed token",
            format!("/webhooks/v1/ttlock/{}", "f".repeat(32)),
            404,
        ),
        (
            "a webhook without a token",
            "/webhooks/v1/ttlock/".to_owned(),
            404,
        ),
    ] {
        expect(
            what,
            post(path, String::new(), form, forged.clone())
                .await?
                .status()
                .as_u16(),
            want,
        );
    }
    let attempts: Value = http
        .get(format!("{}/api/v1/events?limit=1000", node.http))
        .bearer_auth("svc-token")
        .header("x-tenant-id", DEMO_TENANT)
        .send()
        .await?
        .json()
        .await?;
    assert!(
        !attempts
            .to_string()
            .contains("melmastoon.lock.audit.attempt.v1"),
        "no door attempt was recorded from a forged webhook"
    );
    assert!(still_active().await?, "nothing changed");
    // this tenant's service may cancel
    let own_service = token(&key, DEMO_TENANT, &[Role::Service], 600);
    expect(
        "own service posting the cancellation",
        intake(own_service, cancel).await?.status().as_u16(),
        202,
    );
    wait_for("revoked", Duration::from_secs(30), || async {
        let v: Value = get(&one, Some(operator.clone()), None)
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["state"] == "revoked").then_some(())
    })
    .await?;
    expect(
        "no PIN once revoked",
        reveal(operator.clone()).await?.status().as_u16(),
        422,
    );
    println!("security: {} cases", cases.get());
    Ok(())
}
