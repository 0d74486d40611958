//! The simulator on its own: parameter validation, HTTP admin routes, runtimes.

use lockstep_vendors::ttlock::wire::{self, ErrorResponse, Reply};
use lockstep_vendors::ttlock::{SimFaults, SimPasscode, TtlockSimulator};
use lockstep_vendors::LockPort;

use crate::support::{loopback, patch_faults, pin_request, sim_get, spawn, LOCK};

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
    let faults: SimFaults =
        patch_faults(&base, serde_json::json!({"outage": true, "latency_ms": 5}))
            .await
            .json()
            .await?;
    assert!(faults.outage);
    assert_eq!(faults.latency_ms, 5);
    assert_eq!(env.handle.faults(), faults);
    assert!(env.adapter.health().await.is_err());
    patch_faults(&base, serde_json::json!({"outage": false}))
        .await
        .error_for_status()?;
    assert_eq!(
        env.handle.faults().latency_ms,
        5,
        "a patch keeps other keys"
    );

    env.adapter
        .issue(&pin_request("key_01HHTTP:24451", "445566"))
        .await?;
    let listed = sim_get(&base, &format!("/_sim/locks/{LOCK}/passcodes")).await;
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

#[tokio::test]
async fn change_validates_like_add_and_delete() -> anyhow::Result<()> {
    let env = spawn();
    let base = env.sim.base_url();
    let http = reqwest::Client::new();
    let id = env
        .handle
        .seed_passcode(LOCK, "246813", "seeded", 1_000_000, 2_000_000)
        .expect("lock exists");
    let other = env
        .handle
        .seed_passcode(LOCK, "135792", "other", 1_000_000, 2_000_000)
        .expect("lock exists");
    let token = crate::support::token_for(&base).await;
    // The errcode of a change whose form carries `extra` besides the account's fields.
    type Form<'a> = &'a [(&'a str, &'a str)];
    let change = |extra: &[(&str, &str)]| {
        let form: Vec<(String, String)> = [
            (
                "clientId",
                lockstep_vendors::ttlock::simulator::SIM_CLIENT_ID,
            ),
            ("accessToken", token.as_str()),
            ("date", "1"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let http = http.clone();
        let url = format!("{base}/v3/keyboardPwd/change");
        async move {
            let body = crate::support::answer_bytes(http.post(url).form(&form)).await;
            match wire::parse_reply::<ErrorResponse>(&body) {
                Ok(Reply::Err { errcode }) => errcode,
                Ok(Reply::Ok(r)) => r.errcode,
                Err(e) => panic!("{e}"),
            }
        }
    };
    let (lock_id, id) = (LOCK.to_string(), id.to_string());
    let lock = ("lockId", lock_id.as_str());
    let pwd_id = ("keyboardPwdId", id.as_str());
    // (what the form gets wrong or asks, its extra fields, the errcode)
    let cases: [(&str, Form, i64); 7] = [
        ("missing keyboardPwdId", &[lock], -3),
        ("bad changeType", &[lock, pwd_id, ("changeType", "x")], -3),
        ("unknown lock", &[("lockId", "99"), pwd_id], -1003),
        ("unknown passcode", &[lock, ("keyboardPwdId", "1")], -2009),
        (
            "a new pin that another passcode holds",
            &[lock, pwd_id, ("newKeyboardPwd", "135792")],
            -3007,
        ),
        (
            "a new pin too short",
            &[lock, pwd_id, ("newKeyboardPwd", "12")],
            -3006,
        ),
        // accepted, but the period does not move (documented for startDate)
        (
            "only endDate",
            &[lock, pwd_id, ("endDate", "9000000"), ("changeType", "2")],
            0,
        ),
    ];
    for (case, extra, errcode) in cases {
        assert_eq!(change(extra).await, errcode, "{case}");
    }
    let p = env.handle.passcodes(LOCK)[0].clone();
    assert_eq!((p.start_date, p.end_date), (1_000_000, 2_000_000));
    // Name only, without changeType (documented).
    assert_eq!(
        change(&[lock, pwd_id, ("keyboardPwdName", "renamed")]).await,
        0
    );
    let all = env.handle.passcodes(LOCK);
    assert_eq!(all[0].keyboard_pwd_name, "renamed");
    assert_eq!(all[0].keyboard_pwd, "246813");
    assert_eq!(all[1].keyboard_pwd_id, other);
    assert_eq!(
        all[1].keyboard_pwd_name, "other",
        "the other passcode is untouched"
    );
    assert_eq!(env.handle.counters().changes, 2);
    // Unknown token.
    let body = http
        .post(format!("{base}/v3/keyboardPwd/change"))
        .form(&[
            ("clientId", "sim-client-id"),
            ("accessToken", "not-issued"),
            ("date", "1"),
            ("lockId", "24451"),
            ("keyboardPwdId", "1"),
        ])
        .send()
        .await?
        .bytes()
        .await?;
    assert!(matches!(
        wire::parse_reply::<ErrorResponse>(&body),
        Ok(Reply::Err { errcode: 10003 })
    ));
    // Faults apply: outage and 429 before anything is changed.
    env.handle.update_faults(|f| f.outage = true);
    let status = http
        .post(format!("{base}/v3/keyboardPwd/change"))
        .form(&[("lockId", "24451")])
        .send()
        .await?
        .status();
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    env.handle.set_faults(SimFaults {
        rate_limit_per_sec: Some(0),
        ..SimFaults::default()
    });
    let status = http
        .post(format!("{base}/v3/keyboardPwd/change"))
        .form(&[("lockId", "24451")])
        .send()
        .await?
        .status();
    assert_eq!(status, reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(env.handle.counters().changes, 2);
    let counters = sim_get(&base, "/_sim/counters").await;
    assert_eq!(counters["changes"], 2);
    Ok(())
}
