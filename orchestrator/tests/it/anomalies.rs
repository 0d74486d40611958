//! Issue 13, door anomalies (US-MEL-0079): every rule's `anomaly.detected.v1` conforms to
//! its checked-in schema and carries no secret; and end to end on the embedded node, door
//! records read back through the TTLock webhook become anomalies (one key at two doors
//! within seconds, a keypad brute force) with their event, audit row, metric and log line.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use lockstep_domain::{
    AnomalyDetector, AnomalyRules, AttemptContext, AttemptReport, HolderKind, IssueIntent,
    KeyCredential, KeyCredentialAttempt, KeyCredentialId, KeyCredentialKind, KeyCredentialScope,
    LockDeviceId, PropertyId, ReservationId, RevokeReason, RoomId, ScopedRoom, TenantId,
    ValidityWindow, VendorAdapterId, VendorCode,
};
use lockstep_orchestrator::anomalies::Detected;
use lockstep_orchestrator::auth::Role;
use lockstep_orchestrator::schema::EventSchemas;
use lockstep_orchestrator::seed::{DEMO_LOCKS, DEMO_TENANT};
use serde_json::{json, Value};

use crate::harness::*;

fn key(holder: HolderKind, rooms: &[&str], from_h: u32, until_h: u32) -> KeyCredential {
    let tenant = TenantId::parse(DEMO_TENANT).unwrap();
    let property = PropertyId::parse("ppt_anomaly").unwrap();
    let guest = holder == HolderKind::Guest;
    let mut c = KeyCredential::request(
        IssueIntent {
            id: KeyCredentialId::generate(),
            tenant_id: tenant,
            property_id: property.clone(),
            holder_kind: holder,
            reservation_id: guest.then(|| ReservationId::parse("rsv_anomaly").unwrap()),
            guest_id: guest.then(|| lockstep_domain::GuestId::parse("gst_anomaly").unwrap()),
            staff_user_id: (!guest).then(|| lockstep_domain::UserId::parse("usr_hk").unwrap()),
            kind: KeyCredentialKind::PinCode,
            rooms: rooms
                .iter()
                .map(|r| ScopedRoom {
                    tenant_id: tenant,
                    property_id: property.clone(),
                    room_id: RoomId::parse(r).unwrap(),
                })
                .collect(),
            scope: KeyCredentialScope::default(),
            validity: ValidityWindow::new(
                Utc.with_ymd_and_hms(2027, 3, 1, from_h, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2027, 3, 1, until_h, 0, 0).unwrap(),
            )
            .unwrap(),
            vendor: VendorCode::Ttlock,
            vendor_adapter_id: VendorAdapterId::generate(),
            provisional: false,
            idempotency_key: "anomaly-contract".into(),
            replaces_id: None,
            trace_id: None,
        },
        Utc.with_ymd_and_hms(2027, 2, 1, 0, 0, 0).unwrap(),
    )
    .unwrap();
    let t = Utc.with_ymd_and_hms(2027, 2, 1, 0, 1, 0).unwrap();
    c.mark_pending(t).unwrap();
    c.mark_active(t).unwrap();
    c
}

#[test]
fn every_rules_anomaly_event_conforms_to_its_schema_and_carries_no_secret() {
    let schemas = EventSchemas::new();
    let rules = AnomalyRules::default();
    let mut det = AnomalyDetector::default();
    let at = |h: u32, m: u32, s: u32| Utc.with_ymd_and_hms(2027, 3, 1, h, m, s).unwrap();
    let (d1, d2) = (LockDeviceId::generate(), LockDeviceId::generate());
    let mut revoked = key(HolderKind::Guest, &["rmu_1"], 10, 20);
    revoked
        .revoke(RevokeReason::Cancellation, at(12, 0, 0))
        .unwrap();
    let pair = key(HolderKind::Guest, &["rmu_1", "rmu_2"], 10, 20);
    let master = key(HolderKind::StaffMaster, &["rmu_1", "rmu_2"], 8, 16);
    let mut n = 0;
    let mut attempt = |c: Option<&KeyCredential>, dev: &LockDeviceId, t, granted| {
        n += 1;
        KeyCredentialAttempt::record(
            c.map_or(TenantId::parse(DEMO_TENANT).unwrap(), |c| c.tenant_id()),
            AttemptReport {
                vendor_event_id: format!("{}:{n}", dev.as_str()),
                attempted_at: t,
                granted,
                device_id: dev.clone(),
                property_id: PropertyId::parse("ppt_anomaly").unwrap(),
                vendor: VendorCode::Ttlock,
                method: "pin_code",
            },
            c,
            at(23, 0, 0),
        )
        .unwrap()
    };
    let mut cases: Vec<(KeyCredentialAttempt, Option<&KeyCredential>, Vec<RoomId>)> = vec![
        (
            attempt(Some(&revoked), &d1, at(13, 0, 0), true),
            Some(&revoked),
            vec![RoomId::parse("rmu_1").unwrap()],
        ),
        (
            attempt(Some(&pair), &d1, at(14, 0, 0), true),
            Some(&pair),
            vec![RoomId::parse("rmu_9").unwrap()],
        ),
        (
            attempt(Some(&master), &d1, at(21, 0, 0), true),
            Some(&master),
            vec![RoomId::parse("rmu_1").unwrap()],
        ),
        (
            attempt(Some(&pair), &d1, at(15, 0, 0), true),
            Some(&pair),
            vec![RoomId::parse("rmu_1").unwrap()],
        ),
        (
            attempt(Some(&pair), &d2, at(15, 0, 2), true),
            Some(&pair),
            vec![RoomId::parse("rmu_2").unwrap()],
        ),
    ];
    for i in 0..5 {
        cases.push((attempt(None, &d2, at(3, 0, i), false), None, vec![]));
    }
    let mut rules_seen = std::collections::BTreeSet::new();
    for (a, c, rooms) in &cases {
        for found in det.detect(
            &rules,
            &AttemptContext {
                attempt: a,
                credential: *c,
                device_rooms: rooms,
                device_area: None,
            },
        ) {
            let x = Detected::new(found, a, *c, at(23, 0, 0));
            let row = x.event_row();
            schemas
                .check_produced(&row.envelope)
                .unwrap_or_else(|err| panic!("{}: {err}", row.envelope));
            let text = row.envelope.to_string();
            assert!(
                !text.contains(&a.vendor_event_id) && !text.contains("vendorEventId"),
                "no vendor event id: {text}"
            );
            let audit = x.audit_row();
            assert_eq!(audit.action, "anomaly");
            assert_eq!(
                audit.reason.as_deref(),
                row.envelope["data"]["rule"].as_str()
            );
            rules_seen.insert(row.envelope["data"]["rule"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        rules_seen,
        [
            "denied_burst",
            "impossible_travel",
            "invalid_credential_entry",
            "master_outside_shift",
            "wrong_room"
        ]
        .map(String::from)
        .into(),
    );
}

/// A key at two doors within a second, and five wrong PINs at a third door, reported by
/// the simulator's callbacks and read back from it: one `impossible_travel` and one
/// `denied_burst`, each an event, an audit row, a count and a WARN line; no digits anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn door_records_read_back_by_webhook_raise_impossible_travel_and_denied_burst(
) -> anyhow::Result<()> {
    let key = ed25519_dalek::SigningKey::from_bytes(&[77u8; 32]);
    let dir = scratch("anomalies");
    let config = jwt_config(&dir, &key)?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
    let http = reqwest::Client::new();
    let sim = demo_sim_url(&node);
    let admin = jwt(&key, DEMO_TENANT, &[Role::Admin]);
    let operator = jwt(&key, DEMO_TENANT, &[Role::Operator]);

    #[allow(clippy::disallowed_methods)] // the simulator's locks judge by their own clock
    let now = Utc::now();
    let r = http
        .post(format!("{}/api/v1/intake", node.http))
        .bearer_auth("svc-token")
        .header("content-type", "application/json")
        .body(confirmed(
            "evt-anomaly-1",
            DEMO_TENANT,
            "ppt_demo",
            "rsv_anomaly_1",
            1,
            &["rmu_101", "rmu_102"],
            &(now - chrono::Duration::hours(1)).to_rfc3339(),
            &(now + chrono::Duration::days(1)).to_rfc3339(),
        ))
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let list = format!(
        "{}/api/v1/key-credentials?reservationId=rsv_anomaly_1",
        node.http
    );
    let cred = wait_for(
        "the two-room key active",
        Duration::from_secs(30),
        || async {
            let v = get_json(&http, &list, &operator, None).await?;
            v["items"]
                .get(0)
                .cloned()
                .filter(|c| c["state"] == "active")
        },
    )
    .await?;
    let id = cred["id"].as_str().unwrap_or_default().to_owned();
    let revealed: Value = http
        .post(format!("{}/api/v1/key-credentials/{id}/pin", node.http))
        .bearer_auth(&operator)
        .send()
        .await?
        .json()
        .await?;
    let lock_of = |device: &str| {
        DEMO_LOCKS
            .iter()
            .find(|(d, _, _)| *d == device)
            .map(|(_, lock, _)| *lock)
    };
    let pins: Vec<(i64, String)> = revealed["pins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                lock_of(p["deviceId"].as_str()?)?,
                p["pin"].as_str()?.to_owned(),
            ))
        })
        .collect();
    assert_eq!(pins.len(), 2, "{revealed}");

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
    let path = adapters["items"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["vendor"] == "ttlock"))
        .and_then(|i| i["webhookPath"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(path.starts_with("/webhooks/v1/ttlock/"));
    http.post(format!("{sim}/_sim/callback"))
        .json(&json!({ "url": format!("{}{path}", node.http) }))
        .send()
        .await?
        .error_for_status()?;
    let attempt = |lock: i64, pin: String| {
        http.post(format!("{sim}/_sim/locks/{lock}/attempts"))
            .json(&json!({ "method": "pin", "credential": pin }))
            .send()
    };
    // one key at rooms 101 and 102 within a second: two doors that share no room
    for (lock, pin) in &pins {
        let opened: Value = attempt(*lock, pin.clone()).await?.json().await?;
        assert_eq!(opened["opened"], true);
    }
    // five wrong PINs at room 103's keypad
    let mut wrong = Vec::new();
    for i in 0..5 {
        let guess = format!("90000{i}");
        assert!(pins.iter().all(|(_, p)| *p != guess));
        let refused: Value = attempt(1003, guess.clone()).await?.json().await?;
        assert_eq!(refused["opened"], false);
        wrong.push(guess);
    }

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
    // the anomalies commit with their attempts: once all seven are recorded, so are they
    let all = wait_for("seven door attempts", Duration::from_secs(60), || async {
        let all = events().await.ok()?;
        let n = all
            .iter()
            .filter(|e| e["subject"] == "melmastoon.lock.audit.attempt.v1")
            .count();
        (n >= 7).then_some(all)
    })
    .await?;
    let anomalies: Vec<&Value> = all
        .iter()
        .filter(|e| e["subject"] == "melmastoon.lock.anomaly.detected.v1")
        .map(|e| &e["data"])
        .collect();
    let mut rules: Vec<&str> = anomalies
        .iter()
        .filter_map(|a| a["rule"].as_str())
        .collect();
    rules.sort_unstable();
    assert_eq!(
        rules,
        vec!["denied_burst", "impossible_travel"],
        "{anomalies:?}"
    );
    let travel = anomalies
        .iter()
        .find(|a| a["rule"] == "impossible_travel")
        .expect("found above");
    assert_eq!(travel["keyCredentialId"], id.as_str());
    assert_eq!(travel["holderKind"], "guest");
    assert!(travel["details"]["secondsApart"].as_f64().unwrap_or(99.0) <= 5.0);
    let burst = anomalies
        .iter()
        .find(|a| a["rule"] == "denied_burst")
        .expect("found above");
    assert_eq!(burst["details"]["denials"], 5);
    assert_eq!(burst["keyCredentialId"], Value::Null);
    let schemas = EventSchemas::new();
    for e in &all {
        schemas
            .check_produced(e)
            .unwrap_or_else(|err| panic!("{}: {err}", e["subject"]));
    }
    // a leaked PIN shows as a run of digits of its own (a value, or in a text); digits
    // inside ids and timestamps are runs of other lengths or values, not matches by chance
    let text = serde_json::to_string(&all)?;
    let runs: std::collections::HashSet<&str> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|r| !r.is_empty())
        .collect();
    for secret in pins.iter().map(|(_, p)| p).chain(&wrong) {
        assert!(!runs.contains(secret.as_str()), "no digits in events");
    }

    // the audit trail of the key has the anomaly
    let audit: Value = http
        .get(format!("{}/api/v1/key-credentials/{id}/audit", node.http))
        .bearer_auth(&operator)
        .send()
        .await?
        .json()
        .await?;
    let rows: Vec<&Value> = audit["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["action"] == "anomaly")
        .collect();
    assert_eq!(rows.len(), 1, "{audit}");
    assert_eq!(rows[0]["reason"], "impossible_travel");
    assert_eq!(rows[0]["payload"]["anomalyId"], travel["anomalyId"]);

    for (rule, want) in [
        ("impossible_travel", 1.0),
        ("denied_burst", 1.0),
        ("wrong_room", 0.0),
        ("invalid_credential_entry", 0.0),
        ("master_outside_shift", 0.0),
    ] {
        let got = metric(
            &node.http,
            &format!("lockstep_door_anomalies_total{{rule=\"{rule}\"}}"),
        )
        .await;
        assert_eq!(got, Some(want), "{rule}");
    }
    let log = node.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("door anomaly detected"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l.contains("WARN")));
    for secret in pins.iter().map(|(_, p)| p).chain(&wrong) {
        assert!(
            !log.contains(secret.as_str()),
            "no PIN in the log: {secret}"
        );
    }
    println!(
        "anomalies: {} attempts read back, anomalies {rules:?}",
        all.iter()
            .filter(|e| e["subject"] == "melmastoon.lock.audit.attempt.v1")
            .count()
    );
    Ok(())
}

#[test]
fn a_propertys_anomaly_rules_are_read_from_its_config_and_a_bad_one_is_named() {
    use lockstep_config::{RawAnomalies, RawAnomalyRule, RawProperty};
    use lockstep_domain::AnomalyRule;
    use lockstep_orchestrator::anomalies::Anomalies;
    let property = |id: &str, anomalies: Option<RawAnomalies>| RawProperty {
        tenant_id: DEMO_TENANT.into(),
        property_id: id.into(),
        adapters: vec![],
        devices: vec![],
        policy: None,
        anomalies,
    };
    let quiet_travel = RawAnomalies {
        impossible_travel: RawAnomalyRule {
            enabled: Some(false),
            ..RawAnomalyRule::default()
        },
        ..RawAnomalies::default()
    };
    let a = Anomalies::new(&[
        property("ppt_tuned", Some(quiet_travel)),
        property("ppt_plain", None),
    ])
    .expect("valid rules");
    let tenant = TenantId::parse(DEMO_TENANT).unwrap();
    let tuned = a.rules(tenant, &PropertyId::parse("ppt_tuned").unwrap());
    assert!(!tuned.enabled(AnomalyRule::ImpossibleTravel));
    assert!(tuned.enabled(AnomalyRule::DeniedBurst));
    assert_eq!(
        a.rules(tenant, &PropertyId::parse("ppt_plain").unwrap()),
        &AnomalyRules::default()
    );
    let bad = RawAnomalies {
        denied_burst: RawAnomalyRule {
            threshold: Some(1),
            ..RawAnomalyRule::default()
        },
        ..RawAnomalies::default()
    };
    let err = Anomalies::new(&[property("ppt_bad", Some(bad))])
        .expect_err("a threshold of 1 is refused")
        .to_string();
    assert!(
        err.contains("properties.anomalies.denied_burst.threshold") && err.contains("ppt_bad"),
        "{err}"
    );
}
