//! Device lifecycle through the binary (issue 14): `GET /api/v1/lock-devices` pages, a
//! device's own battery threshold (D-4) from the configuration and from
//! `PATCH /api/v1/lock-devices/{id}` decides its `battery_low`, a lock its vendor does not
//! know raises one `health_alert.v1` (`probe_failures`), and
//! `POST /api/v1/lock-devices/{id}/decommission` retires a device once (D-2): one
//! `lock.device.decommissioned.v1`, not listed, offline without a vendor call, not probed
//! by drift, no new key.

use std::time::Duration;

use lockstep_vendors::ttlock::TtlockSimulator;
use serde_json::Value;

use crate::embedded::post_event;
use crate::harness::*;

const TENANT: &str = "00000000-0000-4000-8000-00000000de71";
const PROPERTY: &str = "ppt_devices";
const ADAPTER: &str = "vad_01J0000000000000000000D001";
const TOKEN: &str = "devices-token";
/// Locks at the simulator; 899 is configured but unknown to the vendor.
const KNOWN: &[i64] = &[801, 802, 803];
const UNKNOWN: i64 = 899;
const WAIT: Duration = Duration::from_secs(60);

fn device(lock: i64) -> String {
    format!("lck_01J{lock:0>23}")
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("x-tenant-id", TENANT);
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let r = rb.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// The published events of `subject` about `lock`'s device.
    async fn events(&self, subject: &str, lock: i64) -> anyhow::Result<Vec<Value>> {
        let (s, v) = self.get("/api/v1/events?limit=1000").await?;
        anyhow::ensure!(s == 200, "events: {s} {v}");
        Ok(v["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["subject"] == subject && e["data"]["deviceId"] == device(lock).as_str())
            .collect())
    }

    /// Waits for `n` more completed drift passes than now.
    async fn passes(&self, n: f64) -> anyhow::Result<()> {
        let name = "lockstep_drift_runs_total{outcome=\"completed\"}";
        let start = metric(&self.base, name).await.unwrap_or(0.0);
        wait_for(&format!("{n} drift passes"), WAIT, || async {
            (metric(&self.base, name).await.unwrap_or(0.0) >= start + n).then_some(())
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_page_keep_their_own_threshold_alert_on_refused_probes_and_retire_once(
) -> anyhow::Result<()> {
    let sim = TtlockSimulator::start("127.0.0.1:0".parse()?)?;
    for lock in KNOWN {
        sim.handle().add_lock(*lock);
    }
    let cfg = sim.default_adapter_config();
    let mut toml = format!(
        r#"
[demo]
enabled = false

[http]
bind = "127.0.0.1:0"
service_token = {{ value = "{TOKEN}" }}

[drift]
interval_ms = 300

[[properties]]
tenant_id = "{TENANT}"
property_id = "{PROPERTY}"

[[properties.adapters]]
id = "{ADAPTER}"
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
    );
    for lock in KNOWN.iter().chain([&UNKNOWN]) {
        // D-4: lock 801 carries its own threshold in the configuration
        let threshold = if *lock == 801 {
            "battery_low_threshold_percent = 10"
        } else {
            ""
        };
        toml.push_str(&format!(
            "\n[[properties.devices]]\nid = \"{}\"\nadapter = \"{ADAPTER}\"\nvendor_device_ref = \"{lock}\"\nlabel = \"Door {lock}\"\nrooms = [\"rmu_{lock}\"]\n{threshold}\n",
            device(*lock)
        ));
    }
    let dir = scratch("devices");
    let config = dir.join("lockstep.toml");
    std::fs::write(&config, toml)?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
    wait_ready(&node).await?;
    let api = Api {
        http: reqwest::Client::new(),
        base: node.http.clone(),
    };
    let list = format!("/api/v1/lock-devices?propertyId={PROPERTY}");

    // a stay in room 803 holds a key at lock 803 (and puts the property on drift's rounds,
    // which cover the properties that have seen events)
    post_event(
        &node,
        TOKEN,
        confirmed(
            "evt-dev-1",
            TENANT,
            PROPERTY,
            "rsv_dev_1",
            1,
            &["rmu_803"],
            "2027-11-01T14:00:00Z",
            "2027-11-03T11:00:00Z",
        ),
    )
    .await?;
    wait_for("the key at lock 803", WAIT, || async {
        (sim.handle().passcodes(803).len() == 1).then_some(())
    })
    .await?;
    // (4) pages of 3 by id, then the last one; a bad limit or cursor is 422
    let (s, first) = api.get(&format!("{list}&limit=3")).await?;
    assert_eq!(s, 200, "{first}");
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(ids(&first), vec![device(801), device(802), device(803)]);
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (s, rest) = api.get(&format!("{list}&limit=3&cursor={cursor}")).await?;
    assert_eq!(s, 200, "{rest}");
    assert_eq!(ids(&rest), vec![device(UNKNOWN)]);
    assert_eq!(rest["nextCursor"], Value::Null, "the last page");
    for bad in ["&limit=0", "&limit=201", "&cursor=rsv_1"] {
        let (s, v) = api.get(&format!("{list}{bad}")).await?;
        assert_eq!(s, 422, "{bad}: {v}");
        assert_eq!(v["code"], "MELMASTOON.GENERAL.VALIDATION_FAILED");
    }
    assert!(
        !first.to_string().contains("\"801\""),
        "no vendor lock id: {first}"
    );

    // (2) D-4 through the API: 5 to 50, else 422 naming the field
    let patch = |lock: i64, body: &'static str| {
        let api = &api;
        async move {
            api.send(
                reqwest::Method::PATCH,
                &format!("/api/v1/lock-devices/{}", device(lock)),
                Some(body),
            )
            .await
        }
    };
    for (body, want) in [
        (r#"{"battery":{"lowThresholdPercent":4}}"#, 422),
        (r#"{"battery":{"lowThresholdPercent":51}}"#, 422),
        (r#"{"battery":{"lowThresholdPercent":"x"}}"#, 400),
        (
            r#"{"battery":{"lowThresholdPercent":30,"lowThresholdPercent":30}}"#,
            400,
        ),
        (r#"{"label":"x"}"#, 400),
        ("{}", 422),
    ] {
        let (s, v) = patch(802, body).await?;
        assert_eq!(s, want, "{body}: {v}");
        if want == 422 && body.contains("battery") {
            assert_eq!(v["details"]["field"], "battery.lowThresholdPercent", "{v}");
        }
    }
    let (s, v) = patch(802, r#"{"battery":{"lowThresholdPercent":40}}"#).await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["battery"]["lowThresholdPercent"], 40, "{v}");
    assert_eq!(v["id"], device(802).as_str());
    let (s, _) = api
        .send(
            reqwest::Method::PATCH,
            "/api/v1/lock-devices/lck_01J0000000000000000000ZZZZ",
            Some(r#"{"battery":{"lowThresholdPercent":40}}"#),
        )
        .await?;
    assert_eq!(s, 404, "an unknown device");

    // each device's own threshold decides: 20 % is low by the default 25 % but not for 801
    // (10 %, configured); 35 % is not low by the default but is for 802 (40 %, PATCHed)
    sim.handle()
        .update_lock_health(801, |l| l.battery_percent = 20);
    sim.handle()
        .update_lock_health(802, |l| l.battery_percent = 35);
    let low = wait_for("802's battery_low", WAIT, || async {
        let e = api
            .events("melmastoon.lock.device.battery_low.v1", 802)
            .await
            .ok()?;
        e.first().cloned()
    })
    .await?;
    assert_eq!(low["data"]["lowThresholdPercent"], 40, "{low}");
    assert_eq!(low["data"]["batteryPercent"], 35, "{low}");
    api.passes(2.0).await?;
    assert!(
        api.events("melmastoon.lock.device.battery_low.v1", 801)
            .await?
            .is_empty(),
        "801 is above its own 10 %"
    );
    let (_, listed) = api.get(&list).await?;
    let item = |lock: i64| {
        listed["items"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["id"] == device(lock).as_str()))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(item(801)["battery"]["lowThresholdPercent"], 10, "{listed}");
    assert_eq!(item(802)["battery"]["lowThresholdPercent"], 40, "{listed}");
    assert_eq!(
        item(803)["battery"]["lowThresholdPercent"],
        25,
        "the default"
    );

    // (3) the vendor does not know 899: one health_alert when its probe was refused 3
    // times in a row, not again at later passes
    let alert = wait_for("899's health_alert", WAIT, || async {
        let e = api
            .events("melmastoon.lock.device.health_alert.v1", UNKNOWN)
            .await
            .ok()?;
        e.first().cloned()
    })
    .await?;
    assert_eq!(alert["data"]["check"], "probe_failures", "{alert}");
    assert_eq!(alert["data"]["consecutiveFailures"], 3, "{alert}");
    api.passes(3.0).await?;
    assert_eq!(
        api.events("melmastoon.lock.device.health_alert.v1", UNKNOWN)
            .await?
            .len(),
        1,
        "said once"
    );

    // (1) D-2: retired, its event once; a second call answers the same and publishes nothing
    let retire = |lock: i64| {
        let api = &api;
        async move {
            api.send(
                reqwest::Method::POST,
                &format!("/api/v1/lock-devices/{}/decommission", device(lock)),
                None,
            )
            .await
        }
    };
    let (s, done) = retire(803).await?;
    assert_eq!(s, 200, "{done}");
    let at = done["decommissionedAt"].as_str().expect("when").to_owned();
    let (s, again) = retire(803).await?;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["decommissionedAt"], at.as_str(), "idempotent");
    let (s, _) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/lock-devices/lck_01J0000000000000000000ZZZZ/decommission",
            None,
        )
        .await?;
    assert_eq!(s, 404, "an unknown device");
    let retired = wait_for("803's decommissioned event", WAIT, || async {
        let e = api
            .events("melmastoon.lock.device.decommissioned.v1", 803)
            .await
            .ok()?;
        e.first().cloned()
    })
    .await?;
    assert_eq!(
        retired["data"]["decommissionedAt"],
        at.as_str(),
        "{retired}"
    );
    assert!(
        !retired.to_string().contains("\"803\""),
        "no vendor lock id: {retired}"
    );
    // not listed
    let (_, listed) = api.get(&list).await?;
    assert_eq!(
        ids(&listed),
        vec![device(801), device(802), device(UNKNOWN)]
    );
    // drift neither probes nor repairs it: 803 goes offline at the vendor, 801 too; after
    // two passes 801's offline is published and 803's is not
    sim.handle().update_lock_health(803, |l| l.offline = true);
    sim.handle().update_lock_health(801, |l| l.offline = true);
    wait_for("801's offline", WAIT, || async {
        let e = api
            .events("melmastoon.lock.device.offline.v1", 801)
            .await
            .ok()?;
        (!e.is_empty()).then_some(())
    })
    .await?;
    api.passes(2.0).await?;
    assert!(api
        .events("melmastoon.lock.device.offline.v1", 803)
        .await?
        .is_empty());
    assert_eq!(
        api.events("melmastoon.lock.device.decommissioned.v1", 803)
            .await?
            .len(),
        1,
        "one decommissioned event"
    );
    // the key already at the lock is left to its saga; no new key: a stay in room 803 is
    // refused where it enters, and the retired device takes no threshold
    assert_eq!(sim.handle().passcodes(803).len(), 1);
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/intake", node.http))
        .bearer_auth(TOKEN)
        .body(confirmed(
            "evt-dev-2",
            TENANT,
            PROPERTY,
            "rsv_dev_2",
            1,
            &["rmu_803"],
            "2027-11-05T14:00:00Z",
            "2027-11-06T11:00:00Z",
        ))
        .send()
        .await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("unserved_room"), "{text}");
    let (s, v) = patch(803, r#"{"battery":{"lowThresholdPercent":30}}"#).await?;
    assert_eq!(s, 404, "{v}");
    // last, as it may trip the breaker: with the vendor down a live device's probe is 502,
    // the retired one still answers 200 offline, so no vendor was asked
    let faults = |outage: bool| {
        let url = format!("{}/_sim/faults", cfg.api_base_url);
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&serde_json::json!({ "outage": outage }))
                .send()
                .await?
                .error_for_status()
        }
    };
    faults(true).await?;
    let (live_status, _) = api
        .get(&format!("/api/v1/lock-devices/{}/health", device(802)))
        .await?;
    let (s, health) = api
        .get(&format!("/api/v1/lock-devices/{}/health", device(803)))
        .await?;
    faults(false).await?;
    assert_eq!(
        live_status, 502,
        "a live device is asked and the vendor is down"
    );
    assert_eq!(
        (s, &health["online"]),
        (200, &Value::Bool(false)),
        "{health}"
    );
    Ok(())
}
