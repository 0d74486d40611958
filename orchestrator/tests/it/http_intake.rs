//! Issue 14, "HTTP intake in production": a publisher without RabbitMQ posts events to
//! `POST /api/v1/intake` of a production node, and they take the broker's path: the same
//! validation, the same publisher rights (`[amqp.publishers]`, the caller in place of the
//! broker user), the property's partition and its inbox dedupe.

use std::time::Duration;

use lockstep_persistence::testing::fresh_pg_database;
use serde_json::Value;

use crate::harness::*;

const TENANT: &str = "6a1d8b5f-8b3c-4d2e-8f90-1b2c3d4e5f60";
const PROPERTY: &str = "ppt_http_intake";
const LOCKS: [i64; 2] = [7301, 7302];
const TOKEN: &str = "it-http-intake-token";

/// A production node on Postgres and RabbitMQ whose `[amqp.publishers]` give reservations
/// to the platform's service token but their cancellations to a PMS broker user: the HTTP
/// intake may confirm a stay and may not cancel it; a confirmation posted twice makes one
/// key; a stay that has already ended is refused with the broker intake's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_intake_in_production_takes_the_brokers_path() -> anyhow::Result<()> {
    let dir = scratch("http-intake");
    let db = fresh_pg_database().await?;
    let vhost = Vhost::fresh()?;
    let sim = simulator(&LOCKS)?;
    let config = write_production_config(
        &dir,
        &db,
        &vhost,
        &sim,
        &ProdConfig {
            node_id: "it-http-intake",
            token: TOKEN,
            tenant: TENANT,
            properties: vec![(PROPERTY, LOCKS.to_vec())],
            policy: None,
            adapter_base: 930,
            tick_ms: 500,
        },
    )?;
    let mut toml = std::fs::read_to_string(&config)?;
    toml.push_str(
        "\n[amqp.publishers]\n\"melmastoon.reservation.\" = \"service-token\"\n\"melmastoon.reservation.cancelled.\" = \"pms-broker-user\"\n",
    );
    std::fs::write(&config, toml)?;
    let node = Lockstep::spawn(&dir, &["--config", &config.to_string_lossy()], &[]).await?;
    wait_ready(&node).await?;
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        let url = format!("{}/api/v1/intake", node.http);
        let http = http.clone();
        async move {
            let r = http.post(url).bearer_auth(TOKEN).body(body).send().await?;
            let status = r.status().as_u16();
            let v: Value = r.json().await?;
            anyhow::Ok((status, v))
        }
    };
    let stay = confirmed(
        "evt-hi-1",
        TENANT,
        PROPERTY,
        "rsv_hi_1",
        1,
        &["rmu_7301"],
        "2027-08-01T14:00:00Z",
        "2027-08-03T11:00:00Z",
    );
    for _ in 0..2 {
        let (status, v) = post(stay.clone()).await?;
        assert_eq!(status, 202, "{v}");
        assert_eq!(v["outcome"], "queued", "{v}");
    }
    let credential = wait_for("rsv_hi_1 active", Duration::from_secs(60), || async {
        let url = format!(
            "{}/api/v1/key-credentials?reservationId=rsv_hi_1",
            node.http
        );
        let v = get_json(&http, &url, TOKEN, Some(TENANT)).await?;
        v["items"]
            .as_array()?
            .iter()
            .find(|c| c["state"] == "active")
            .cloned()
    })
    .await?;
    // the second copy reached the partition and was found in its inbox
    wait_for(
        "the second copy deduped",
        Duration::from_secs(30),
        || async {
            metric(
                &node.http,
                "lockstep_intake_messages_total{outcome=\"duplicate\"}",
            )
            .await
            .filter(|v| *v >= 1.0)
        },
    )
    .await?;
    let id = credential["id"].as_str().unwrap_or_default();
    let held: Vec<_> = sim
        .handle()
        .passcodes(7301)
        .into_iter()
        .filter(|p| p.keyboard_pwd_name == id)
        .collect();
    assert_eq!(held.len(), 1, "one key for a stay posted twice");

    // the cancellation is the PMS's to send, not the service token's
    let (status, v) = post(cancelled("evt-hi-2", TENANT, PROPERTY, "rsv_hi_1", 2)).await?;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["details"]["reason"], "unauthorized_publisher", "{v}");
    // a stay already over: the broker intake's reason
    let (status, v) = post(confirmed(
        "evt-hi-3",
        TENANT,
        PROPERTY,
        "rsv_hi_3",
        1,
        &["rmu_7302"],
        "2020-08-01T14:00:00Z",
        "2020-08-03T11:00:00Z",
    ))
    .await?;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["details"]["reason"], "window_ended", "{v}");
    // a later stay still goes through, so the refused ones were judged: the key is still
    // on the door and nothing was made for the refused stay
    let (status, _) = post(confirmed(
        "evt-hi-4",
        TENANT,
        PROPERTY,
        "rsv_hi_4",
        1,
        &["rmu_7302"],
        "2027-09-01T14:00:00Z",
        "2027-09-03T11:00:00Z",
    ))
    .await?;
    assert_eq!(status, 202);
    wait_for(
        "rsv_hi_4's key at the door",
        Duration::from_secs(60),
        || {
            let n = sim.handle().passcodes(7302).len();
            async move { (n == 1).then_some(()) }
        },
    )
    .await?;
    assert_eq!(sim.handle().passcodes(7301).len(), 1, "not cancelled");
    Ok(())
}
