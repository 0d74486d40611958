//! The simulator on its own: parameter validation, HTTP admin routes, runtimes.

use lockstep_vendors::ttlock::wire::{self, ErrorResponse, Reply};
use lockstep_vendors::ttlock::{SimFaults, SimPasscode, TtlockSimulator};
use lockstep_vendors::LockPort;

use crate::support::{loopback, pin_request, spawn, LOCK};

#[tokio::test]
async fn missing_parameters_and_unknown_tokens_get_ttlock_errcodes() {
    let env = spawn();
    let base = env.sim.base_url();
    let http = reqwest::Client::new();
    let errcode = |body: &[u8]| match wire::parse_reply::<ErrorResponse>(body) {
        Ok(Reply::Err { errcode }) => errcode,
        _ => 0,
    };
    let body = http
        .post(format!("{base}/oauth2/token"))
        .form(&[("clientId", "x")])
        .send()
        .await
        .expect("call")
        .bytes()
        .await
        .expect("body");
    assert_eq!(errcode(&body), -3);
    let body = http
        .post(format!("{base}/v3/keyboardPwd/add"))
        .form(&[
            ("clientId", "sim-client-id"),
            ("accessToken", "not-issued"),
            ("date", "1"),
        ])
        .send()
        .await
        .expect("call")
        .bytes()
        .await
        .expect("body");
    assert_eq!(errcode(&body), 10003);
}

#[tokio::test]
async fn faults_and_passcodes_are_reachable_over_http() -> anyhow::Result<()> {
    let env = spawn();
    let base = env.sim.base_url();
    let http = reqwest::Client::new();
    let faults: SimFaults = http
        .post(format!("{base}/_sim/faults"))
        .json(&serde_json::json!({"outage": true, "latency_ms": 5}))
        .send()
        .await?
        .json()
        .await?;
    assert!(faults.outage);
    assert_eq!(faults.latency_ms, 5);
    assert_eq!(env.handle.faults(), faults);
    assert!(env.adapter.health().await.is_err());
    http.post(format!("{base}/_sim/faults"))
        .json(&serde_json::json!({"outage": false}))
        .send()
        .await?
        .error_for_status()?;
    assert_eq!(
        env.handle.faults().latency_ms,
        5,
        "a patch keeps other keys"
    );

    env.adapter
        .issue(&pin_request("key_01HHTTP:24451", "445566"))
        .await?;
    let listed: serde_json::Value = http
        .get(format!("{base}/_sim/locks/{LOCK}/passcodes"))
        .send()
        .await?
        .json()
        .await?;
    let expected: Vec<SimPasscode> = env.handle.passcodes(LOCK);
    assert_eq!(listed, serde_json::to_value(&expected)?);
    assert_eq!(listed[0]["keyboardPwdName"], "key_01HHTTP:24451");

    http.post(format!("{base}/_sim/locks/777"))
        .send()
        .await?
        .error_for_status()?;
    let mut req = pin_request("key_01HNEW:777", "778899");
    req.device = lockstep_domain::DeviceRef::new("777");
    env.adapter.issue(&req).await?;
    assert_eq!(env.handle.all_passcodes().len(), 2);
    Ok(())
}

#[actix_web::test]
async fn starts_inside_an_actix_system() -> anyhow::Result<()> {
    let env = spawn();
    env.adapter.health().await?;
    let sim = TtlockSimulator::start(loopback())?;
    assert_ne!(sim.addr().port(), 0);
    sim.stop().await?;
    Ok(())
}
