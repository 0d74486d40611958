//! Issue 6: the OpenAPI document is generated from the route table the router is built
//! from, served at `/api/v1/openapi.json`, committed as `docs/openapi.json`, and checked
//! here against the running routes: every documented operation is routed (not the
//! fallback 404), and every documented query parameter is accepted.
//!
//! After changing a route: `LOCKSTEP_UPDATE_OPENAPI=1 cargo nextest run -E
//! 'test(/openapi/)'` rewrites `docs/openapi.json`.

use lockstep_orchestrator::auth::Role;
use lockstep_orchestrator::seed::DEMO_TENANT;
use serde_json::Value;

use crate::harness::*;

fn sample(param: &str) -> &'static str {
    match param {
        "id" => "key_01HZZZZZZZZZZZZZZZZZZZZZZZ",
        "vendor" => "ttlock",
        "token" => "00000000000000000000000000000000",
        _ => "x",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_committed_one_and_matches_the_routes() -> anyhow::Result<()> {
    let generated = lockstep_orchestrator::openapi::document();
    let committed_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let pretty = serde_json::to_string_pretty(&generated)? + "\n";
    if std::env::var_os("LOCKSTEP_UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed_path, &pretty)?;
    }
    let committed = std::fs::read_to_string(&committed_path)?;
    assert!(
        committed == pretty,
        "docs/openapi.json is stale: run LOCKSTEP_UPDATE_OPENAPI=1 cargo nextest run -E 'test(/openapi/)'"
    );

    let key = ed25519_dalek::SigningKey::from_bytes(&[55u8; 32]);
    let dir = scratch("openapi");
    let config = jwt_config(&dir, &key)?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
    let http = reqwest::Client::new();
    let served: Value = http
        .get(format!("{}/api/v1/openapi.json", node.http))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        served, generated,
        "the served document is the generated one"
    );

    let admin = jwt(
        &key,
        DEMO_TENANT,
        &[Role::Admin, Role::Operator, Role::Service],
    );
    // a wrong webhook token looks like no route at all (on purpose): use a real one
    let adapters: Value = http
        .get(format!("{}/api/v1/vendor-adapters", node.http))
        .bearer_auth(&admin)
        .send()
        .await?
        .json()
        .await?;
    let hook = adapters["items"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["vendor"] == "ttlock"))
        .and_then(|i| i["webhookPath"].as_str())
        .unwrap_or_default()
        .to_owned();
    let mut operations = 0;
    for (path, item) in served["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let concrete: String = path
                .split('/')
                .map(
                    |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(p) => sample(p).to_owned(),
                        None => seg.to_owned(),
                    },
                )
                .collect::<Vec<_>>()
                .join("/");
            let concrete = if path.starts_with("/webhooks/") {
                hook.clone()
            } else {
                concrete
            };
            let url = format!("{}{concrete}", node.http);
            let rb = match method.as_str() {
                "get" => http.get(&url),
                "patch" => http
                    .patch(&url)
                    .header("content-type", "application/json")
                    .body("{}"),
                "post" => http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body("{}"),
                other => panic!("{other}"),
            };
            let r = rb.bearer_auth(&admin).send().await?;
            let status = r.status().as_u16();
            let body = r.text().await?;
            assert_ne!(status, 405, "{method} {path}: method not routed");
            assert!(
                !body.contains("no such route"),
                "{method} {path} is documented but not routed: {status} {body}"
            );
            // every documented query parameter is one the handler knows
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] != "query" {
                    continue;
                }
                let name = p["name"].as_str().unwrap_or_default();
                let r = http
                    .get(format!("{url}?{name}=1"))
                    .bearer_auth(&admin)
                    .send()
                    .await?;
                let text = r.text().await?;
                assert!(
                    !text.contains("unknown field"),
                    "{path}: documented query parameter {name} is refused: {text}"
                );
            }
            operations += 1;
        }
    }
    // and an undocumented route is the fallback
    let r = http
        .get(format!("{}/api/v1/key-credentials/x/explode", node.http))
        .bearer_auth(&admin)
        .send()
        .await?;
    assert!(r.text().await?.contains("no such route"));
    println!("openapi: {operations} operations routed as documented");
    Ok(())
}

/// Issue 14: the document promises what the service does. The intake's body is the event
/// envelope (its schema, the one intake checks), it answers 400 for a body that is not
/// JSON, and its 202 promises no `Location` (it sends none); every other 202 declares the
/// `Location` it sends. `publicKeyEd25519` says its encoding.
#[test]
fn the_document_describes_the_intake_body_locations_and_key_encoding() {
    let doc = lockstep_orchestrator::openapi::document();
    let intake = &doc["paths"]["/api/v1/intake"]["post"];
    assert_eq!(
        intake["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Envelope"
    );
    assert_eq!(intake["requestBody"]["required"], true);
    let envelope = &doc["components"]["schemas"]["Envelope"];
    let required: Vec<&str> = envelope["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(required, ["id", "subject", "time", "tenantId", "data"]);
    assert_eq!(
        envelope["properties"]["traceId"]["pattern"],
        "^[A-Za-z0-9._:-]+$"
    );
    assert!(intake["responses"]["400"].is_object(), "{intake}");
    let accepted = &intake["responses"]["202"];
    assert!(accepted["headers"].is_null(), "{accepted}");
    assert!(
        !accepted.to_string().contains("Location"),
        "no promise of a Location the intake does not send: {accepted}"
    );

    let mut with_location = 0;
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let r = &op["responses"]["202"];
            if r.is_null() || path == "/api/v1/intake" {
                continue;
            }
            assert!(
                r["headers"]["Location"].is_object(),
                "{method} {path}: its 202 carries a Location"
            );
            with_location += 1;
        }
    }
    assert!(with_location >= 8, "{with_location} writes answer 202");

    let key = &doc["paths"]["/api/v1/offline-issuance/certificates"]["post"]["requestBody"]
        ["content"]["application/json"]["schema"]["properties"]["publicKeyEd25519"];
    assert_eq!(key["contentEncoding"], "base64", "{key}");
    assert!(
        key["description"]
            .as_str()
            .is_some_and(|d| d.contains("32-byte Ed25519") && d.contains("padding")),
        "{key}"
    );
}
