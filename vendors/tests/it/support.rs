//! Starts a simulator on loopback port 0 and an adapter pointed at it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use lockstep_domain::{
    Clock, DeviceRef, KeyCredentialKind, Pin, SystemClock, ValidityWindow, VendorRef,
};
use lockstep_vendors::ttlock::md5_hex;
use lockstep_vendors::ttlock::simulator::{
    SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_PASSWORD, SIM_USERNAME,
};
use lockstep_vendors::ttlock::wire::{self, Reply, TokenResponse};
use lockstep_vendors::ttlock::{TtlockConfig, TtlockSimulator};
use lockstep_vendors::{IssueRequest, VendorError};

/// The lock of the documented examples.
pub const LOCK: i64 = 24451;

pub type Env = crate::contract::Env<crate::ttlock_adapter::TtlockFixture>;

pub fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

pub fn spawn() -> Env {
    spawn_with(|_| {}, Arc::new(SystemClock))
}

pub fn spawn_with(tweak: impl FnOnce(&mut TtlockConfig), clock: Arc<dyn Clock>) -> Env {
    let sim = TtlockSimulator::start(loopback()).expect("simulator binds on loopback");
    sim.handle().add_lock(LOCK);
    crate::contract::env_on(sim, tweak, clock)
}

pub fn device() -> DeviceRef {
    DeviceRef::new(LOCK.to_string())
}

/// A stay from tomorrow, whole seconds (TTLock dates are ms; keep them exact).
pub fn window() -> ValidityWindow {
    let from: DateTime<Utc> = (lockstep_domain::Clock::now(&lockstep_domain::SystemClock)
        + Duration::days(1))
    .duration_trunc(Duration::seconds(1))
    .expect("truncation to seconds is in range");
    ValidityWindow::new(from, from + Duration::days(3)).expect("from < until")
}

/// `w` moved later by `days` (a changed stay).
pub fn shifted(w: &ValidityWindow, days: i64) -> ValidityWindow {
    ValidityWindow::new(
        w.from() + Duration::days(days),
        w.until() + Duration::days(days),
    )
    .expect("from < until")
}

pub fn pin_request(label: &str, pin: &str) -> IssueRequest {
    request_on(device(), KeyCredentialKind::PinCode, label, Some(pin))
}

/// A request for `label` of `kind` on `device` for a stay from tomorrow ([`window`]), with
/// `pin`'s digits if given.
pub fn request_on(
    device: DeviceRef,
    kind: KeyCredentialKind,
    label: &str,
    pin: Option<&str>,
) -> IssueRequest {
    IssueRequest {
        device,
        kind,
        label: label.to_owned(),
        pin: pin.map(|p| Pin::parse(p).expect("valid pin")),
        card_number: None,
        validity: window(),
    }
}

/// Asserts that nothing secret shows in any rendering of `err`: the PIN, the vendorRef,
/// the client secret, the account password (`crate::contract::assert_redacted`).
pub fn assert_redacted(err: &VendorError, pin: Option<&str>, vendor_ref: Option<&VendorRef>) {
    crate::contract::assert_redacted::<crate::ttlock_adapter::TtlockFixture>(
        err,
        pin,
        vendor_ref,
        &[],
    );
}

/// A token of the default account, asked for over HTTP.
pub async fn token_for(base: &str) -> String {
    let body = answer_bytes(
        reqwest::Client::new()
            .post(format!("{base}/oauth2/token"))
            .form(&[
                ("clientId", SIM_CLIENT_ID),
                ("clientSecret", SIM_CLIENT_SECRET),
                ("username", SIM_USERNAME),
                ("password", &md5_hex(SIM_PASSWORD)),
            ]),
    )
    .await;
    match wire::parse_reply::<TokenResponse>(&body) {
        Ok(Reply::Ok(t)) => t.access_token,
        _ => panic!("simulator refused the default account"),
    }
}

/// A simulator's answer to `request`: its body.
pub async fn answer_bytes(request: reqwest::RequestBuilder) -> Vec<u8> {
    let answer = request.send().await.expect("the simulator answers");
    answer.bytes().await.expect("a body").to_vec()
}

/// A simulator's answer to `request`, read as JSON.
pub async fn answer_json(request: reqwest::RequestBuilder) -> serde_json::Value {
    serde_json::from_slice(&answer_bytes(request).await).expect("a JSON body")
}

/// Posts `patch` to a simulator's fault switches (`/_sim/faults`, which every simulator
/// serves through `sim_kit`): the keys it names change, the others stay.
pub async fn patch_faults(base: &str, patch: serde_json::Value) -> reqwest::Response {
    let request = reqwest::Client::new().post(format!("{base}/_sim/faults"));
    request
        .json(&patch)
        .send()
        .await
        .expect("the simulator answers")
}

/// What a simulator's own JSON route (`/_sim/...`) answers.
pub async fn sim_get(base: &str, path: &str) -> serde_json::Value {
    answer_json(reqwest::Client::new().get(format!("{base}{path}"))).await
}

/// The TTLock simulator's JSON answer to a form posted to `path` as the default account's
/// client (`clientId` first, then `fields`).
pub async fn post_as_client(base: &str, path: &str, fields: &[(&str, &str)]) -> serde_json::Value {
    let form: Vec<(&str, &str)> = [("clientId", SIM_CLIENT_ID)]
        .into_iter()
        .chain(fields.iter().copied())
        .collect();
    answer_json(
        reqwest::Client::new()
            .post(format!("{base}{path}"))
            .form(&form),
    )
    .await
}
