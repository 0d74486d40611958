//! Master keys with area scopes through the binary (issue 14): doors of areas configured
//! by TOML alone (`[[properties.devices]] area`) hold the key of an `areas_all` shift at the
//! TTLock simulator, the room's door does not, and a shift naming an area with no door is
//! refused at its start as `scope_unresolvable`.

use std::time::Duration;

use lockstep_vendors::ttlock::TtlockSimulator;
use serde_json::{json, Value};

use crate::embedded::post_event;
use crate::harness::*;

const TENANT: &str = "00000000-0000-4000-8000-0000000a4ea5";
const PROPERTY: &str = "ppt_areas";
const ADAPTER: &str = "vad_01J0000000000000000000A001";
const TOKEN: &str = "areas-token";

/// (lock, rooms, area) of the property.
const DOORS: &[(i64, &str, &str)] = &[
    (701, "rooms = [\"rmu_701\"]", ""),
    (702, "", "area = \"gym\""),
    (703, "", "area = \"back_of_house\""),
];

fn shift(id: &str, user: &str, scope: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": format!("evt-{id}"),
        "subject": "melmastoon.staff.shift.started.v1",
        "time": "2027-06-01T05:00:00Z",
        "tenantId": TENANT,
        "propertyId": PROPERTY,
        "data": { "shiftId": id, "staffUserId": user, "scope": scope,
                  "validFrom": "2027-06-01T06:00:00Z", "validUntil": "2027-06-01T18:00:00Z" },
    }))
    .expect("json")
}

/// The staff member's master credentials as (state, failureReason).
async fn masters(node: &Lockstep, user: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/key-credentials?propertyId={PROPERTY}&staffUserId={user}",
            node.http
        ))
        .bearer_auth(TOKEN)
        .header("x-tenant-id", TENANT)
        .send()
        .await?;
    anyhow::ensure!(
        resp.status() == 200,
        "credentials of {user}: {}",
        resp.status()
    );
    let body: Value = resp.json().await?;
    Ok(body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["state"].as_str().unwrap_or_default().to_owned(),
                c["failureReason"].clone(),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_area_doors_hold_an_areas_all_master_and_a_missing_area_is_refused(
) -> anyhow::Result<()> {
    let sim = TtlockSimulator::start("127.0.0.1:0".parse()?)?;
    for (lock, _, _) in DOORS {
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
    for (lock, rooms, area) in DOORS {
        toml.push_str(&format!(
            "\n[[properties.devices]]\nid = \"lck_01J{lock:0>23}\"\nadapter = \"{ADAPTER}\"\nvendor_device_ref = \"{lock}\"\nlabel = \"Door {lock}\"\n{rooms}\n{area}\n"
        ));
    }
    let dir = scratch("master-areas");
    let config = dir.join("lockstep.toml");
    std::fs::write(&config, toml)?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;

    post_event(
        &node,
        TOKEN,
        shift("shf_sec", "usr_sec", json!({ "kind": "areas_all" })),
    )
    .await?;
    let held = |lock: i64| sim.handle().passcodes(lock).len();
    wait_for(
        "the areas_all master at the gym and back-of-house doors",
        Duration::from_secs(30),
        || async { (held(702) == 1 && held(703) == 1).then_some(()) },
    )
    .await?;
    wait_for("the master active", Duration::from_secs(30), || async {
        let m = masters(&node, "usr_sec").await.ok()?;
        (m.len() == 1 && m[0].0 == "active").then_some(())
    })
    .await?;
    assert_eq!(held(701), 0, "a room's door is no area's");

    post_event(
        &node,
        TOKEN,
        shift(
            "shf_spa",
            "usr_spa",
            json!({ "kind": "areas", "areas": ["spa"] }),
        ),
    )
    .await?;
    let refused = wait_for("the spa master failed", Duration::from_secs(30), || async {
        let m = masters(&node, "usr_spa").await.ok()?;
        (m.len() == 1 && m[0].0 == "failed").then(|| m[0].1.clone())
    })
    .await?;
    assert_eq!(refused, "scope_unresolvable");
    assert_eq!(
        (held(701), held(702), held(703)),
        (0, 1, 1),
        "the refusal reached no door"
    );
    Ok(())
}
