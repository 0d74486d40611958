//! What a new user meets first (issue 14, "New-user experience"): the start-up banner, the
//! demo's files kept private, the demo's doors put back after a restart, and `lockstep
//! token` run without a config file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::embedded::{credential_of, passcodes, post_event};
use crate::harness::*;

const DEMO_TENANT: &str = "00000000-0000-4000-8000-00000000d3e0";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The PINs of credential `id` at lock `lock` of the simulator at `sim`.
async fn pins_of(sim: &str, lock: i64, id: &str) -> anyhow::Result<Vec<String>> {
    Ok(passcodes(sim, lock)
        .await?
        .iter()
        .filter(|p| p["keyboardPwdName"] == id)
        .filter_map(|p| p["keyboardPwd"].as_str().map(str::to_owned))
        .collect())
}

/// The demo keeps its data private (database, its WAL and shared memory, keys, token:
/// 0600, in a 0700 directory), prints a banner naming every address it serves, and after a
/// restart its fresh simulators hold again what the store says is at the doors: the first
/// drift pass runs at start-up, so the API's door truth is true. Without that pass the new
/// simulator stays empty until the first interval (15 minutes) and the wait below fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_keeps_its_files_private_and_its_doors_true_across_a_restart() -> anyhow::Result<()>
{
    let dir = scratch("newuser-restart");
    let env = [
        ("LOCKSTEP__HTTP__BIND", "127.0.0.1:0".to_string()),
        ("LOCKSTEP__DEMO__SIMULATOR_BIND", "127.0.0.1:0".to_string()),
    ];
    let mut node = Lockstep::spawn(&dir, &[], &env).await?;
    let data = dir.join(".lockstep");
    let token = std::fs::read_to_string(data.join("service-token"))?;

    // the banner: framed, after the listening lines, naming the API, the token file, the
    // relay and all five simulators
    let banner = node
        .wait_log("demo tenant", Duration::from_secs(10))
        .await?;
    assert!(banner.contains(DEMO_TENANT), "{banner}");
    let log = node.log_text();
    let start = log.find("is ready").expect("the banner's title");
    let block: Vec<&str> = log[start..].lines().take(14).collect();
    for row in [
        "API",
        "OpenAPI",
        "service token",
        "desk relay",
        "ttlock simulator",
        "salto simulator",
        "vostio simulator",
        "kisi simulator",
        "brivo simulator",
    ] {
        assert!(
            block.iter().any(|l| l.trim_start().starts_with(row)),
            "the banner names {row}: {block:#?}"
        );
    }
    assert!(block.iter().any(|l| l.contains(&node.http)), "{block:#?}");

    post_event(
        &node,
        &token,
        confirmed(
            "evt-nu1",
            DEMO_TENANT,
            "ppt_demo",
            "rsv_nu1",
            1,
            &["rmu_101"],
            "2027-07-01T14:00:00Z",
            "2027-07-03T11:00:00Z",
        ),
    )
    .await?;
    let cred = wait_for("rsv_nu1 active", Duration::from_secs(30), || async {
        credential_of(&node, &token, "rsv_nu1")
            .await
            .filter(|c| c["state"] == "active")
    })
    .await?;
    let id = cred["id"].as_str().expect("id").to_owned();
    let sim = demo_sim_url(&node);
    let before = pins_of(&sim, 1001, &id).await?;
    assert_eq!(before.len(), 1, "one PIN at lock 1001");

    assert_eq!(mode(&data), 0o700, "the data directory");
    for f in [
        "lockstep.sqlite",
        "lockstep.sqlite-wal",
        "lockstep.sqlite-shm",
        "service-token",
        "encryption.key",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }

    // kill -9: the simulators die with the node. An older version left the database
    // world-readable: the restart narrows it.
    node.kill();
    std::fs::set_permissions(
        data.join("lockstep.sqlite"),
        std::fs::Permissions::from_mode(0o644),
    )?;
    let node = Lockstep::spawn(&dir, &[], &env).await?;
    assert_eq!(mode(&data.join("lockstep.sqlite")), 0o600, "narrowed");
    let sim = demo_sim_url(&node);
    let after = wait_for(
        "the restarted simulator holds the PIN again",
        Duration::from_secs(30),
        || {
            let (sim, id) = (sim.clone(), id.clone());
            async move { pins_of(&sim, 1001, &id).await.ok().filter(|p| p.len() == 1) }
        },
    )
    .await?;
    assert_eq!(after, before, "the same PIN as the store's");
    let again = credential_of(&node, &token, "rsv_nu1")
        .await
        .expect("credential");
    assert_eq!(again["state"], "active");
    Ok(())
}

/// `lockstep token` without a config file: writes a fresh key (0600) when the file is
/// missing, prints the token alone on stdout and, on stderr, the `[auth]` section that
/// verifies it. A node configured with exactly that section accepts the token; a token
/// minted with a negative TTL (documented for testing) is refused as expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockstep_token_works_without_a_config_and_prints_what_verifies_it() -> anyhow::Result<()> {
    let dir = scratch("newuser-token");
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("dev.key");
    let key_arg = key.to_string_lossy().into_owned();
    let args = [
        "token",
        "--key-file",
        &key_arg,
        "--tenant",
        DEMO_TENANT,
        "--role",
        "admin",
    ];
    let run = lockstep_cli(&args).await?;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(mode(&key), 0o600, "the written key");
    assert!(
        run.stderr.contains("wrote a new signing key"),
        "{}",
        run.stderr
    );
    let token = run.stdout.trim().to_owned();
    assert_eq!(
        token.split('.').count(),
        3,
        "a JWT alone on stdout: {token}"
    );
    let section = &run.stderr[run.stderr.find("[auth]").expect("the [auth] section")..];

    // the same key file again: no new key, the same section
    let second = lockstep_cli(&args).await?;
    assert!(second.ok && !second.stderr.contains("wrote a new"));
    assert!(second.stderr.contains(section.trim()), "{}", second.stderr);
    let mut expired_args = args.to_vec();
    expired_args.extend(["--ttl-secs", "-3600"]);
    let expired = lockstep_cli(&expired_args).await?;
    assert!(expired.ok, "a negative TTL is accepted: {}", expired.stderr);
    let expired = expired.stdout.trim().to_owned();

    let config = dir.join("lockstep.toml");
    std::fs::write(
        &config,
        format!(
            "[demo]\nsimulator_bind = \"127.0.0.1:0\"\n\n[http]\nbind = \"127.0.0.1:0\"\n\n{section}\n"
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    let node = Lockstep::spawn(&dir, &["--config", &config], &[]).await?;
    let get = |t: String| {
        let url = format!("{}/api/v1/lock-devices?propertyId=ppt_demo", node.http);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(t)
                .header("x-tenant-id", DEMO_TENANT)
                .send()
                .await
        }
    };
    let ok = get(token).await?;
    assert_eq!(ok.status(), 200, "{:?}", ok.text().await);
    let refused = get(expired).await?;
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await?;
    assert_eq!(body["code"], "MELMASTOON.GENERAL.UNAUTHENTICATED", "{body}");
    assert_eq!(body["details"]["reason"], "the token has expired");
    Ok(())
}

/// The simulator of `vendor` the demo node printed.
fn sim_of(node: &Lockstep, vendor: &str) -> String {
    let prefix = format!("{vendor} simulator listening on ");
    node.log_text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|u| u.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {vendor} simulator line"))
}

/// The demo's simulators report their doors' attempts to the node as the vendors would:
/// TTLock's records callback, and the signed webhooks of Salto, Vostio and Brivo under a
/// secret the demo makes at start-up. A key no credential holds, tried at one door of each,
/// becomes a denied attempt of that vendor. Without the demo's wiring the simulators post
/// nowhere (and the node would refuse them unsigned): no attempt is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_simulators_report_door_attempts_to_the_node() -> anyhow::Result<()> {
    let dir = scratch("newuser-demo-webhooks");
    let env = [
        ("LOCKSTEP__HTTP__BIND", "127.0.0.1:0".to_string()),
        ("LOCKSTEP__DEMO__SIMULATOR_BIND", "127.0.0.1:0".to_string()),
    ];
    let mut node = Lockstep::spawn(&dir, &[], &env).await?;
    node.wait_log("demo tenant", Duration::from_secs(10))
        .await?;
    let token = std::fs::read_to_string(dir.join(".lockstep/service-token"))?;
    let env_ref = lockstep_vendors::vostio::simulator::SIM_ENVIRONMENT;
    let tries = [
        (
            "ttlock",
            "/_sim/locks/1001/attempts".to_owned(),
            serde_json::json!({ "method": "pin", "credential": "000999" }),
        ),
        (
            "salto",
            "/_sim/locks/salto-lock-101/attempts".to_owned(),
            serde_json::json!({ "method": "pin", "credential": "000999" }),
        ),
        (
            "vostio",
            format!("/_sim/environments/{env_ref}/doors/door-201/attempts"),
            serde_json::json!({ "keyId": "key-nobody-holds" }),
        ),
        (
            "brivo",
            "/_sim/access-points/401/attempts".to_owned(),
            serde_json::json!({ "credential": "000999" }),
        ),
    ];
    let http = reqwest::Client::new();
    for (vendor, route, body) in &tries {
        let r: Value = http
            .post(format!("{}{route}", sim_of(&node, vendor)))
            .json(body)
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(r["opened"], false, "{vendor}: {r}");
    }
    let denied = wait_for(
        "a denied attempt from each of the four vendors",
        Duration::from_secs(30),
        || async {
            let url = format!("{}/api/v1/events?limit=1000", node.http);
            let v = get_json(&http, &url, &token, Some(DEMO_TENANT)).await?;
            let mut vendors: Vec<String> = v["items"]
                .as_array()?
                .iter()
                .filter(|e| e["subject"] == "melmastoon.lock.audit.attempt.v1")
                .filter(|e| e["data"]["outcome"] == "denied")
                .filter_map(|e| e["data"]["vendor"].as_str().map(str::to_owned))
                .collect();
            vendors.sort();
            (vendors.len() >= 4).then_some(vendors)
        },
    )
    .await?;
    assert_eq!(denied, ["assa-abloy", "brivo", "salto", "ttlock"]);
    assert!(
        !node.log_text().contains("webhook refused"),
        "every delivery verified"
    );
    Ok(())
}
