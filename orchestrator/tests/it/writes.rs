//! Issue 6, "what it must show" 1 for the operator writes: `POST /api/v1/key-credentials/
//! {id}/{suspend,unsuspend,revoke,replace}`, each for success and for each documented
//! failure, through the real binary (embedded mode, JWTs), each failure checked to change
//! nothing.

use std::time::Duration;

use lockstep_orchestrator::auth::Role;
use lockstep_orchestrator::seed::DEMO_TENANT;
use serde_json::Value;

use crate::harness::*;

const OTHER_TENANT: &str = "7a1e0b52-3c4d-4e5f-8a9b-0c1d2e3f4a5b";

struct Api {
    http: reqwest::Client,
    base: String,
    bearer: String,
}

impl Api {
    async fn patch(&self, path: &str, body: &str) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .patch(format!("{}{path}", self.base))
            .bearer_auth(&self.bearer)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn post(
        &self,
        path: &str,
        body: &str,
        key: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        self.post_as(&self.bearer, path, body, key).await
    }

    async fn post_as(
        &self,
        bearer: &str,
        path: &str,
        body: &str,
        key: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(k) = key {
            rb = rb.header("idempotency-key", k);
        }
        let r = rb.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.bearer)
            .send()
            .await?
            .json()
            .await?)
    }

    async fn active(&self, reservation: &str) -> anyhow::Result<Value> {
        let list = format!("/api/v1/key-credentials?reservationId={reservation}");
        wait_for(
            &format!("{reservation} active"),
            Duration::from_secs(30),
            || async {
                let v = self.get(&list).await.ok()?;
                v["items"]
                    .as_array()?
                    .iter()
                    .find(|c| c["state"] == "active")
                    .cloned()
            },
        )
        .await
    }
}

/// An embedded node with the demo and JWTs signed by a key from `seed`, and an API client
/// with a token of the demo tenant and `role`.
async fn jwt_node(
    name: &str,
    seed: u8,
    role: Role,
) -> anyhow::Result<(ed25519_dalek::SigningKey, Lockstep, Api)> {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let dir = scratch(name);
    let config = jwt_config(&dir, &key)?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
    let api = Api {
        http: reqwest::Client::new(),
        base: node.http.clone(),
        bearer: jwt(&key, DEMO_TENANT, &[role]),
    };
    Ok((key, node, api))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_writes_answer_their_outcome_and_refuse_what_the_state_machine_forbids(
) -> anyhow::Result<()> {
    let (key, node, api) = jwt_node("writes", 21, Role::Operator).await?;
    let http = api.http.clone();
    let intake = |body: Vec<u8>| {
        http.post(format!("{}/api/v1/intake", node.http))
            .bearer_auth("svc-token")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let confirm = confirmed(
        "evt-w-1",
        DEMO_TENANT,
        "ppt_demo",
        "rsv_w_1",
        1,
        &["rmu_103"],
        "2027-11-01T14:00:00Z",
        "2027-11-03T11:00:00Z",
    );
    assert_eq!(intake(confirm).await?.status(), 202);
    let cred = api.active("rsv_w_1").await?;
    let id = cred["id"].as_str().expect("an id").to_owned();
    let one = format!("/api/v1/key-credentials/{id}");
    let state = |v: &Value| v["state"].as_str().unwrap_or_default().to_owned();
    let mut cases = 0;
    let mut check = |what: &str, got: u16, want: u16, body: &Value| {
        cases += 1;
        assert_eq!(got, want, "{what}: {body}");
    };

    // suspend: success, idempotent repeat, bad reason, wrong role, other tenant
    let (s, v) = api
        .post(
            &format!("{one}/suspend"),
            r#"{"reason":"manual"}"#,
            Some("w-s-1"),
        )
        .await?;
    check("suspend an active key", s, 200, &v);
    assert_eq!(state(&v), "suspended");
    assert!(v["doorSync"]
        .as_array()
        .is_some_and(|d| d.iter().all(|d| d["desired"] == "absent")));
    let version = v["version"].clone();
    let (s, v) = api
        .post(
            &format!("{one}/suspend"),
            r#"{"reason":"manual"}"#,
            Some("w-s-1"),
        )
        .await?;
    check("the same request again (Idempotency-Key)", s, 200, &v);
    assert_eq!(v["version"], version, "applied once");
    let (s, v) = api.post(&format!("{one}/suspend"), "", None).await?;
    check("suspend a suspended key (no body: manual)", s, 200, &v);
    assert_eq!(v["version"], version, "nothing changed");
    let (s, v) = api
        .post(&format!("{one}/suspend"), r#"{"reason":"whim"}"#, None)
        .await?;
    check("unknown suspend reason", s, 422, &v);
    assert_eq!(v["code"], "MELMASTOON.GENERAL.VALIDATION_FAILED");
    let nobody = jwt(&key, DEMO_TENANT, &[]);
    let (s, v) = api
        .post_as(&nobody, &format!("{one}/unsuspend"), "", None)
        .await?;
    check("a token without roles is no valid token", s, 401, &v);
    let stranger = jwt(&key, OTHER_TENANT, &[Role::Admin]);
    let (s, v) = api
        .post_as(&stranger, &format!("{one}/unsuspend"), "", None)
        .await?;
    check("another tenant's admin", s, 404, &v);
    assert_eq!(state(&api.get(&one).await?), "suspended", "still suspended");

    // unsuspend: success, then refused from active
    let (s, v) = api.post(&format!("{one}/unsuspend"), "", None).await?;
    check("unsuspend a suspended key", s, 200, &v);
    assert_eq!(state(&v), "active");
    let (s, v) = api.post(&format!("{one}/unsuspend"), "{}", None).await?;
    check("unsuspend an active key", s, 422, &v);
    assert_eq!(v["details"]["subCode"], "invalid_state_transition");
    let (s, v) = api
        .post(&format!("{one}/unsuspend"), r#"{"reason":"x"}"#, None)
        .await?;
    check("unsuspend takes no fields", s, 400, &v);

    // revoke: body checks first
    let (s, v) = api.post(&format!("{one}/revoke"), "{}", None).await?;
    check("revoke without a reason", s, 422, &v);
    assert_eq!(v["details"]["field"], "reason");
    let (s, v) = api
        .post(&format!("{one}/revoke"), r#"{"reason":"expired"}"#, None)
        .await?;
    check("a reason only Lockstep gives", s, 422, &v);
    let (s, v) = api
        .post(&format!("{one}/revoke"), r#"{"reason":"lost""#, None)
        .await?;
    check("malformed JSON", s, 400, &v);
    assert_eq!(v["code"], "MELMASTOON.GENERAL.VALIDATION_FAILED");
    let big = format!(
        r#"{{"reason":"lost","pad":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let (s, v) = api.post(&format!("{one}/revoke"), &big, None).await?;
    check("an oversized body", s, 413, &v);
    assert_eq!(v["code"], "MELMASTOON.GENERAL.PAYLOAD_TOO_LARGE");
    assert_eq!(
        state(&api.get(&one).await?),
        "active",
        "none of these changed it"
    );

    // replace (lost key): the old one is revoked, a new one issued in the same step
    let (s, v) = api.post(&format!("{one}/replace"), "", None).await?;
    check("replace an active key", s, 200, &v);
    assert_eq!(state(&v), "revoked");
    assert_eq!(v["revokeReason"], "lost");
    let new_id = v["replacedById"]
        .as_str()
        .expect("the replacement")
        .to_owned();
    let (s, v) = api.post(&format!("{one}/replace"), "", None).await?;
    check("replace a revoked key", s, 422, &v);
    let newer = format!("/api/v1/key-credentials/{new_id}");
    let replacement = wait_for("replacement active", Duration::from_secs(30), || async {
        let v = api.get(&newer).await.ok()?;
        (v["state"] == "active").then_some(v)
    })
    .await?;
    assert_eq!(replacement["replacesId"].as_str(), Some(id.as_str()));

    // revoke the replacement, then again
    let (s, v) = api
        .post(&format!("{newer}/revoke"), r#"{"reason":"security"}"#, None)
        .await?;
    check("revoke an active key", s, 200, &v);
    assert_eq!(state(&v), "revoked");
    assert_eq!(v["revokeReason"], "security");
    let (s, v) = api
        .post(&format!("{newer}/revoke"), r#"{"reason":"security"}"#, None)
        .await?;
    check("revoke a revoked key", s, 200, &v);
    let (s, v) = api.post(&format!("{newer}/suspend"), "", None).await?;
    check("suspend a revoked key", s, 422, &v);

    // ids
    let (s, v) = api
        .post(
            "/api/v1/key-credentials/key_01HZZZZZZZZZZZZZZZZZZZZZZZ/revoke",
            r#"{"reason":"lost"}"#,
            None,
        )
        .await?;
    check("an unknown id", s, 404, &v);
    let (s, v) = api
        .post("/api/v1/key-credentials/not-an-id/suspend", "", None)
        .await?;
    check("a malformed id", s, 422, &v);
    let (s, v) = api.post(&format!("{newer}/explode"), "", None).await?;
    check("no such route", s, 404, &v);
    assert_eq!(v["code"], "MELMASTOON.GENERAL.NOT_FOUND");

    // the audit names who did what, never the digits
    let audit = api.get(&format!("{one}/audit")).await?;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["action"].as_str()).collect())
        .unwrap_or_default();
    for a in ["suspended", "unsuspended", "revoked"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }

    // lists: filters, "who can open room X then", cursor pages
    for (n, room) in [(2, "rmu_104"), (3, "rmu_101"), (4, "rmu_102")] {
        let body = confirmed(
            &format!("evt-w-{n}"),
            DEMO_TENANT,
            "ppt_demo",
            &format!("rsv_w_{n}"),
            1,
            &[room],
            "2027-11-01T14:00:00Z",
            "2027-11-03T11:00:00Z",
        );
        assert_eq!(intake(body).await?.status(), 202);
        api.active(&format!("rsv_w_{n}")).await?;
    }
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let who = api
        .get("/api/v1/key-credentials?roomId=rmu_104&opensAt=2027-11-02T00:00:00Z")
        .await?;
    assert_eq!(ids(&who).len(), 1, "one key opens rmu_104 then: {who}");
    assert_eq!(who["items"][0]["rooms"][0], "rmu_104");
    let nobody_then = api
        .get("/api/v1/key-credentials?roomId=rmu_104&opensAt=2027-12-01T00:00:00Z")
        .await?;
    assert!(ids(&nobody_then).is_empty(), "nobody after the stay");
    let revoked_room = api
        .get("/api/v1/key-credentials?roomId=rmu_103&opensAt=2027-11-02T00:00:00Z")
        .await?;
    assert!(
        ids(&revoked_room).is_empty(),
        "revoked keys open nothing: {revoked_room}"
    );
    let revoked = api
        .get("/api/v1/key-credentials?state=revoked&propertyId=ppt_demo")
        .await?;
    assert!(ids(&revoked).contains(&id) && ids(&revoked).contains(&new_id));
    // pages of two over the property's keys: no key twice, none missing
    let all = api
        .get("/api/v1/key-credentials?propertyId=ppt_demo&limit=200")
        .await?;
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/v1/key-credentials?propertyId=ppt_demo&limit=2".to_owned(),
            Some(c) => format!("/api/v1/key-credentials?propertyId=ppt_demo&limit=2&cursor={c}"),
        };
        let page = api.get(&path).await?;
        assert!(ids(&page).len() <= 2);
        paged.extend(ids(&page));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, ids(&all));
    assert!(paged.len() >= 5, "{paged:?}");
    for (what, path, want) in [
        ("limit 0", "/api/v1/key-credentials?limit=0", 422),
        ("limit too large", "/api/v1/key-credentials?limit=201", 422),
        (
            "a foreign cursor",
            "/api/v1/key-credentials?cursor=abc",
            422,
        ),
        (
            "an unknown state",
            "/api/v1/key-credentials?state=open",
            422,
        ),
        (
            "opensAt not a time",
            "/api/v1/key-credentials?opensAt=tomorrow",
            422,
        ),
        (
            "an unknown filter",
            "/api/v1/key-credentials?colour=red",
            400,
        ),
    ] {
        let r = http
            .get(format!("{}{path}", node.http))
            .bearer_auth(&api.bearer)
            .send()
            .await?;
        let status = r.status().as_u16();
        let body: Value = r.json().await?;
        check(what, status, want, &body);
        assert!(body["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("MELMASTOON.")));
    }
    let theirs = api
        .http
        .get(format!(
            "{}/api/v1/key-credentials?propertyId=ppt_demo",
            node.http
        ))
        .bearer_auth(jwt(&key, OTHER_TENANT, &[Role::Operator]))
        .send()
        .await?
        .json::<Value>()
        .await?;
    assert!(
        ids(&theirs).is_empty(),
        "another tenant lists nothing of ours"
    );
    println!("writes: {cases} cases");
    Ok(())
}

/// `POST /api/v1/lock-devices`: success and each documented failure, the vendor's device
/// reference in no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_the_vendor_knows_registers_once_and_nothing_else_does() -> anyhow::Result<()> {
    let (key, node, api) = jwt_node("devices", 22, Role::Admin).await?;
    let sim = demo_sim_url(&node);
    let adapters = api
        .get("/api/v1/vendor-adapters?propertyId=ppt_demo")
        .await?;
    let adapter = adapters["items"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["vendor"] == "ttlock"))
        .and_then(|i| i["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    // the vendor gets a new lock, 2001
    reqwest::Client::new()
        .post(format!("{sim}/_sim/locks/2001"))
        .send()
        .await?;
    let body = |lock: &str, rooms: &str| {
        format!(
            r#"{{"propertyId":"ppt_demo","vendorAdapterId":"{adapter}","vendorDeviceRef":"{lock}","label":"Room 201 door","roomIds":{rooms}}}"#
        )
    };
    let mut cases = 0;
    let mut check = |what: &str, got: u16, want: u16, v: &Value| {
        cases += 1;
        assert_eq!(got, want, "{what}: {v}");
        assert!(
            !v.to_string().contains("2001"),
            "{what}: the vendor's lock id is never answered"
        );
    };
    let path = "/api/v1/lock-devices";
    let (s, v) = api
        .post(path, &body("2001", r#"["rmu_201"]"#), None)
        .await?;
    check("a lock the vendor knows", s, 201, &v);
    assert_eq!(v["rooms"][0], "rmu_201");
    let id = v["id"].as_str().unwrap_or_default().to_owned();
    let listed = api.get("/api/v1/lock-devices?propertyId=ppt_demo").await?;
    assert!(listed["items"]
        .as_array()
        .is_some_and(|a| a.iter().any(|d| d["id"] == id.as_str())));
    let (s, v) = api
        .post(path, &body("2001", r#"["rmu_202"]"#), None)
        .await?;
    check("the same lock again (D-1)", s, 422, &v);
    let (s, v) = api
        .post(path, &body("9999", r#"["rmu_299"]"#), None)
        .await?;
    check("a lock the vendor does not know", s, 409, &v);
    assert_eq!(v["code"], "MELMASTOON.LOCK.DEVICE_NOT_PAIRED");
    let (s, v) = api.post(path, &body("2001", "[]"), None).await?;
    check("no rooms", s, 422, &v);
    // a door of an area: no rooms, its area (issue 14, master-key area scopes)
    reqwest::Client::new()
        .post(format!("{sim}/_sim/locks/2002"))
        .send()
        .await?;
    let gym = |area: &str| {
        body("2002", "[]").replace(
            r#""roomIds":[]"#,
            &format!(r#""roomIds":[],"area":"{area}""#),
        )
    };
    let (s, v) = api.post(path, &gym("roof"), None).await?;
    check("an area that is not one of the spec's", s, 422, &v);
    assert_eq!(v["details"]["field"], "area", "{v}");
    let (s, v) = api.post(path, &gym("gym"), None).await?;
    check("a gym door", s, 201, &v);
    assert_eq!(
        (v["area"].as_str(), v["rooms"].as_array().map(Vec::len)),
        (Some("gym"), Some(0))
    );
    let (s, v) = api.post(path, r#"{"propertyId":"ppt_demo""#, None).await?;
    check("malformed JSON", s, 400, &v);
    let (s, v) = api.post(path, r#"{"propertyId":"ppt_demo"}"#, None).await?;
    check("missing fields", s, 400, &v);
    let other = body("2001", r#"["rmu_201"]"#).replace(&adapter, "vad_01HZZZZZZZZZZZZZZZZZZZZZZZ");
    let (s, v) = api.post(path, &other, None).await?;
    check("an unknown adapter", s, 404, &v);
    let operator = jwt(&key, DEMO_TENANT, &[Role::Operator]);
    let (s, v) = api
        .post_as(&operator, path, &body("2001", r#"["rmu_201"]"#), None)
        .await?;
    check("an operator", s, 403, &v);
    let stranger = jwt(&key, OTHER_TENANT, &[Role::Admin]);
    let (s, v) = api
        .post_as(&stranger, path, &body("2001", r#"["rmu_201"]"#), None)
        .await?;
    check("another tenant's admin", s, 404, &v);
    println!("devices: {cases} cases");
    Ok(())
}

/// `POST /api/v1/master-keys` and `POST /api/v1/master-keys/{id}/revoke`: success and each
/// documented failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_keys_are_issued_for_a_shift_and_revoked_by_id() -> anyhow::Result<()> {
    let (key, _node, api) = jwt_node("masters", 23, Role::Admin).await?;
    let shift = |shift: &str, scope: &str| {
        format!(
            r#"{{"propertyId":"ppt_demo","shiftId":"{shift}","staffUserId":"usr_hk_1","scope":{scope},"validFrom":"2027-05-01T08:00:00Z","validUntil":"2027-05-01T16:00:00Z"}}"#
        )
    };
    let mut cases = 0;
    let mut check = |what: &str, got: u16, want: u16, v: &Value| {
        cases += 1;
        assert_eq!(got, want, "{what}: {v}");
    };
    let path = "/api/v1/master-keys";
    let (s, v) = api
        .post(
            path,
            &shift("shf_api_1", r#"{"kind":"room","roomIds":["rmu_103"]}"#),
            Some("m-1"),
        )
        .await?;
    check("a room master key", s, 200, &v);
    let id = v["id"].as_str().unwrap_or_default().to_owned();
    assert!(id.starts_with("mky_"), "{v}");
    assert_eq!(v["scopeKind"], "room");
    assert_eq!(v["shiftId"], "shf_api_1");
    let (s, v) = api
        .post(
            path,
            &shift("shf_api_1", r#"{"kind":"room","roomIds":["rmu_103"]}"#),
            Some("m-1"),
        )
        .await?;
    check("the same request again", s, 200, &v);
    assert_eq!(v["id"], id.as_str(), "one master key");
    let (s, v) = api
        .post(path, &shift("shf_api_2", r#"{"kind":"penthouse"}"#), None)
        .await?;
    check("a scope the spec does not know", s, 422, &v);
    let (s, v) = api.post(path, r#"{"propertyId":"ppt_demo"}"#, None).await?;
    check("missing fields", s, 400, &v);
    let operator = jwt(&key, DEMO_TENANT, &[Role::Operator]);
    let (s, v) = api
        .post_as(
            &operator,
            path,
            &shift("shf_api_3", r#"{"kind":"room","roomIds":["rmu_104"]}"#),
            None,
        )
        .await?;
    check("an operator", s, 403, &v);

    let revoke = format!("{path}/{id}/revoke");
    let stranger = jwt(&key, OTHER_TENANT, &[Role::Admin]);
    let (s, v) = api.post_as(&stranger, &revoke, "", None).await?;
    check("another tenant's admin", s, 404, &v);
    let (s, v) = api.post(&revoke, r#"{"reason":"lost"}"#, None).await?;
    check("a reason masters do not take", s, 422, &v);
    let (s, v) = api.post(&revoke, "", None).await?;
    check("revoke at shift end", s, 200, &v);
    assert!(v["revokedAt"].is_string(), "{v}");
    assert_eq!(v["state"], "revoked");
    let (s, v) = api.post(&revoke, "", None).await?;
    check("revoke again", s, 200, &v);
    let (s, v) = api
        .post(
            "/api/v1/master-keys/mky_01HZZZZZZZZZZZZZZZZZZZZZZZ/revoke",
            "",
            None,
        )
        .await?;
    check("an unknown master key", s, 404, &v);
    let (s, v) = api
        .post("/api/v1/master-keys/key_nope/revoke", "", None)
        .await?;
    check("a malformed id", s, 422, &v);
    println!("master keys: {cases} cases");
    Ok(())
}

/// `POST /api/v1/key-credentials`: the manual issue path, success and each documented
/// failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_issue_is_the_stays_confirmation_through_the_partitions() -> anyhow::Result<()> {
    let (_key, _node, api) = jwt_node("manual", 24, Role::Operator).await?;
    let stay = |revision: i64, from: &str, until: &str| {
        format!(
            r#"{{"propertyId":"ppt_demo","reservationId":"rsv_m_1","revision":{revision},"guestId":"gst_m_1","roomIds":["rmu_104"],"validFrom":"{from}","validUntil":"{until}"}}"#
        )
    };
    let path = "/api/v1/key-credentials";
    let mut cases = 0;
    let mut check = |what: &str, got: u16, want: u16, v: &Value| {
        cases += 1;
        assert_eq!(got, want, "{what}: {v}");
    };
    let (s, v) = api
        .post(
            path,
            &stay(1, "2027-06-01T14:00:00Z", "2027-06-03T11:00:00Z"),
            Some("desk-1"),
        )
        .await?;
    check("a stay's first key", s, 200, &v);
    assert_eq!(v["outcome"], "applied");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["items"][0]["rooms"][0], "rmu_104");
    let first = v["items"][0]["id"].clone();
    let (s, v) = api
        .post(
            path,
            &stay(1, "2027-06-01T14:00:00Z", "2027-06-03T11:00:00Z"),
            Some("desk-1"),
        )
        .await?;
    check("the same request again", s, 200, &v);
    assert_eq!(
        v["items"].as_array().map(Vec::len),
        Some(1),
        "still one key"
    );
    let (s, v) = api
        .post(
            path,
            &stay(1, "2027-06-01T14:00:00Z", "2027-06-04T11:00:00Z"),
            None,
        )
        .await?;
    check("an old revision", s, 200, &v);
    assert_eq!(v["items"][0]["id"], first);
    assert_eq!(
        v["items"][0]["validUntil"], "2027-06-03T11:00:00+00:00",
        "unchanged"
    );
    let (s, v) = api
        .post(
            path,
            &stay(2, "2027-06-03T14:00:00Z", "2027-06-02T11:00:00Z"),
            None,
        )
        .await?;
    check("a window that ends before it starts (I-1)", s, 422, &v);
    let (s, v) = api.post(path, r#"{"propertyId":"ppt_demo"}"#, None).await?;
    check("missing fields", s, 400, &v);
    let (s, v) = api
        .post(
            path,
            &stay(2, "2027-06-01T14:00:00Z", "2027-06-03T11:00:00Z"),
            Some("bad key!"),
        )
        .await?;
    check("an Idempotency-Key outside its alphabet", s, 422, &v);
    let (s, v) = api
        .post_as(
            "garbage",
            path,
            &stay(2, "2027-06-01T14:00:00Z", "2027-06-03T11:00:00Z"),
            None,
        )
        .await?;
    check("no valid token", s, 401, &v);
    println!("manual issue: {cases} cases");
    Ok(())
}

/// `PATCH /api/v1/key-credentials/{id}`: success and each documented failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_moves_the_end_and_rooms_within_k2() -> anyhow::Result<()> {
    let (_key, _node, api) = jwt_node("patch", 25, Role::Operator).await?;
    let issued = api
        .post(
            "/api/v1/key-credentials",
            r#"{"propertyId":"ppt_demo","reservationId":"rsv_p_1","revision":1,"guestId":"gst_p_1","roomIds":["rmu_103"],"validFrom":"2027-07-01T14:00:00Z","validUntil":"2027-07-03T11:00:00Z"}"#,
            None,
        )
        .await?;
    assert_eq!(issued.0, 200, "{}", issued.1);
    let cred = api.active("rsv_p_1").await?;
    let one = format!(
        "/api/v1/key-credentials/{}",
        cred["id"].as_str().unwrap_or_default()
    );
    let mut cases = 0;
    let mut check = |what: &str, got: u16, want: u16, v: &Value| {
        cases += 1;
        assert_eq!(got, want, "{what}: {v}");
    };
    let (s, v) = api
        .patch(&one, r#"{"validUntil":"2027-07-04T11:00:00Z"}"#)
        .await?;
    check("one more night", s, 200, &v);
    assert_eq!(v["validUntil"], "2027-07-04T11:00:00+00:00");
    let (s, v) = api
        .patch(&one, r#"{"roomIds":["rmu_103","rmu_104"]}"#)
        .await?;
    check("a second room", s, 200, &v);
    assert_eq!(v["rooms"].as_array().map(Vec::len), Some(2));
    let (s, v) = api
        .patch(&one, r#"{"validUntil":"2027-09-01T11:00:00Z"}"#)
        .await?;
    check("beyond K-2 (168 h past the first end)", s, 422, &v);
    assert_eq!(v["details"]["field"], "validUntil");
    let (s, v) = api
        .patch(&one, r#"{"validUntil":"2027-06-01T11:00:00Z"}"#)
        .await?;
    check("an end before the start (I-1)", s, 422, &v);
    let (s, v) = api.patch(&one, r#"{"roomIds":[]}"#).await?;
    check("no rooms", s, 422, &v);
    let (s, v) = api.patch(&one, "{}").await?;
    check("nothing to change", s, 422, &v);
    let (s, v) = api.patch(&one, r#"{"scope":{"floors":["3"]}}"#).await?;
    check("a scope (not changed here)", s, 400, &v);
    let (s, v) = api.patch(&one, r#"{"validUntil":"tomorrow"}"#).await?;
    check("not a time", s, 422, &v);
    let now = api.get(&one).await?;
    assert_eq!(
        now["validUntil"], "2027-07-04T11:00:00+00:00",
        "the refusals changed nothing"
    );
    let (s, v) = api
        .post(&format!("{one}/revoke"), r#"{"reason":"checkout"}"#, None)
        .await?;
    check("checkout", s, 200, &v);
    let (s, v) = api
        .patch(&one, r#"{"validUntil":"2027-07-05T11:00:00Z"}"#)
        .await?;
    check("a revoked key", s, 422, &v);
    println!("update: {cases} cases");
    Ok(())
}

/// `POST /api/v1/offline-issuance/certificates` and its revoke: a signed certificate for a
/// desktop's key (O-1, O-3, the policy's offline kinds), success and each documented
/// failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_certificates_are_signed_bounded_and_revoked() -> anyhow::Result<()> {
    use base64::Engine as _;
    use ed25519_dalek::Verifier as _;
    let (key, _node, api) = jwt_node("offline-certs", 26, Role::Admin).await?;
    let desktop = ed25519_dalek::SigningKey::from_bytes(&[77u8; 32]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let pubkey = b64.encode(desktop.verifying_key().as_bytes());
    let body = |extra: &str| {
        format!(
            r#"{{"propertyId":"ppt_demo","desktopDeviceId":"desk-frontdesk-1","publicKeyEd25519":"{pubkey}"{extra}}}"#
        )
    };
    let path = "/api/v1/offline-issuance/certificates";
    let mut cases = 0;
    let mut check = |what: &str, got: u16, want: u16, v: &Value| {
        cases += 1;
        assert_eq!(got, want, "{what}: {v}");
    };
    let (s, v) = api.post(path, &body(""), None).await?;
    check("a desktop's certificate", s, 201, &v);
    let issued = chrono::DateTime::parse_from_rfc3339(v["issuedAt"].as_str().unwrap_or_default())?;
    let expires =
        chrono::DateTime::parse_from_rfc3339(v["expiresAt"].as_str().unwrap_or_default())?;
    assert_eq!(expires - issued, chrono::Duration::days(90), "O-1");
    assert_eq!(v["maxValidWindowHours"], 48);
    assert_eq!(
        v["allowedKinds"],
        serde_json::json!(["pin_code", "rfid_card"])
    );
    // the signature verifies under Lockstep's published key, over the certificate
    let signer_hex = v["signingPublicKey"].as_str().unwrap_or_default();
    let signer_bytes: Vec<u8> = (0..signer_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&signer_hex[i..i + 2], 16).unwrap_or(0))
        .collect();
    let signer = ed25519_dalek::VerifyingKey::from_bytes(&signer_bytes.as_slice().try_into()?)?;
    let payload = b64.decode(v["certificate"].as_str().unwrap_or_default())?;
    let sig = ed25519_dalek::Signature::from_slice(
        &b64.decode(v["signature"].as_str().unwrap_or_default())?,
    )?;
    signer.verify(&payload, &sig)?;
    let text = String::from_utf8(payload)?;
    assert!(text.contains(&format!("publicKey={pubkey}")) && text.contains("maxWindowHours=48"));
    let id = v["id"].as_str().unwrap_or_default().to_owned();

    let (s, v) = api
        .post(path, &body(r#","maxValidWindowHours":49"#), None)
        .await?;
    check("a 49-hour window (O-3)", s, 422, &v);
    let (s, v) = api
        .post(path, &body(r#","allowedKinds":["mobile_app"]"#), None)
        .await?;
    check("a kind the policy keeps online", s, 422, &v);
    let (s, v) = api
        .post(path, &body("").replace(&pubkey, "bm90LWEta2V5"), None)
        .await?;
    check("not an Ed25519 key", s, 422, &v);
    let (s, v) = api
        .post(path, &body("").replace("ppt_demo", "ppt_elsewhere"), None)
        .await?;
    check("a property of no adapter here", s, 404, &v);
    let operator = jwt(&key, DEMO_TENANT, &[Role::Operator]);
    let (s, v) = api.post_as(&operator, path, &body(""), None).await?;
    check("an operator", s, 403, &v);

    let revoke = format!("{path}/{id}/revoke");
    let stranger = jwt(&key, OTHER_TENANT, &[Role::Admin]);
    let (s, v) = api.post_as(&stranger, &revoke, "", None).await?;
    check("another tenant's admin", s, 404, &v);
    let (s, v) = api.post(&revoke, r#"{"reason":"bored"}"#, None).await?;
    check("an unknown reason", s, 422, &v);
    let (s, v) = api
        .post(&revoke, r#"{"reason":"compromise"}"#, None)
        .await?;
    check("revoke a compromised desktop", s, 200, &v);
    assert_eq!(v["revokeReason"], "compromise");
    let at = v["revokedAt"].clone();
    let (s, v) = api.post(&revoke, r#"{"reason":"rotation"}"#, None).await?;
    check("revoke again", s, 200, &v);
    assert_eq!(v["revokedAt"], at, "the first revocation stands");
    let (s, v) = api
        .post(
            "/api/v1/offline-issuance/certificates/oki_01HZZZZZZZZZZZZZZZZZZZZZZZ/revoke",
            "",
            None,
        )
        .await?;
    check("an unknown certificate", s, 404, &v);
    println!("offline certificates: {cases} cases");
    Ok(())
}
