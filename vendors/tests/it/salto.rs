//! The Salto KS adapter against its simulator over loopback HTTP (what only Salto does:
//! several writes per credential, keypadless locks, paging by link, its probe reading),
//! documented (or recorded) Salto bodies through the wire types and the simulator, and
//! Salto's fixture of the `LockPort` contract (`crate::contract`), which runs the rest.

use std::sync::Arc;

use lockstep_domain::{DeviceRef, KeyCredentialKind, SystemClock, VendorRef};
use lockstep_vendors::salto::simulator::{
    SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_PASSWORD, SIM_SITE_ID, SIM_USERNAME,
};
use lockstep_vendors::salto::{
    wire, RunningSimulator, SaltoAdapter, SaltoConfig, SaltoSimulator, Secret, SimConfig, SimHandle,
};
use lockstep_vendors::{IssueRequest, LockPort, VendorError};

use crate::support::{loopback, patch_faults, request_on, sim_get};

/// A lock with a keypad (`escutcheon_pin`).
const LOCK: &str = "4d77312f-4a87-41db-a97b-000000000204";
/// A lock without keypad (`cylinder`).
const CYLINDER: &str = "4d77312f-4a87-41db-a97b-000000000205";

type Env = crate::contract::Env<SaltoFixture>;

fn spawn() -> Env {
    spawn_with(SimConfig::default(), |_| {})
}

fn spawn_with(sim_config: SimConfig, tweak: impl FnOnce(&mut SaltoConfig)) -> Env {
    let sim = SaltoSimulator::start_with(loopback(), sim_config).expect("simulator binds");
    let handle = sim.handle();
    handle.add_lock(LOCK);
    handle.add_lock_of_type(CYLINDER, "cylinder");
    crate::contract::env_on(sim, tweak, Arc::new(SystemClock))
}

fn device() -> DeviceRef {
    DeviceRef::new(LOCK)
}

fn pin_request(label: &str, pin: &str) -> IssueRequest {
    request_on(device(), KeyCredentialKind::PinCode, label, Some(pin))
}

fn kind_request(label: &str, kind: KeyCredentialKind) -> IssueRequest {
    request_on(device(), kind, label, None)
}

/// Nothing secret in any rendering of `err` (`crate::contract::assert_redacted`).
fn assert_redacted(err: &VendorError, pin: Option<&str>, vendor_ref: Option<&VendorRef>) {
    crate::contract::assert_redacted::<SaltoFixture>(err, pin, vendor_ref, &[]);
}

#[tokio::test]
async fn salto_mobile_key_and_tag_are_users_without_pin() -> anyhow::Result<()> {
    let env = spawn();
    let mobile = kind_request("key_01HSALTOMOBILE:204", KeyCredentialKind::MobileApp);
    let card = kind_request("key_01HSALTOCARD:204", KeyCredentialKind::RfidCard);
    let m = env.adapter.issue(&mobile).await?;
    let c = env.adapter.issue(&card).await?;
    assert_ne!(m, c);
    let users = env.handle.site_users();
    assert_eq!(users.len(), 2);
    assert!(users.iter().all(|u| !u.use_pin && u.pin.is_none()));
    assert_eq!(env.adapter.list(&device()).await?.len(), 2);
    Ok(())
}

/// A PIN on a lock without keypad (a `cylinder`) is refused as an unsupported kind, and
/// nothing is created (the kinds Salto never issues are the contract's).
#[tokio::test]
async fn salto_pins_on_a_lock_without_keypad_are_refused() -> anyhow::Result<()> {
    let env = spawn();
    let mut on_cylinder = pin_request("key_01HSALTOCYL:205", "736251");
    on_cylinder.device = DeviceRef::new(CYLINDER);
    let err = env
        .adapter
        .issue(&on_cylinder)
        .await
        .expect_err("no keypad");
    assert!(
        matches!(&err, VendorError::Refused { code, .. } if code == "unsupported_kind"),
        "{err:?}"
    );
    assert!(!err.is_vendor_unwell());
    assert_redacted(&err, Some("736251"), None);
    assert!(env.handle.site_users().is_empty());
    assert!(env.handle.access_groups().is_empty());
    Ok(())
}

#[tokio::test]
async fn salto_lost_response_on_issue_then_find_yields_exactly_one() -> anyhow::Result<()> {
    let env = spawn();
    let req = pin_request("key_01HSALTOLOST:204", "463728");
    // The last write (the lock joins the group) is applied, its response lost.
    env.handle
        .update_faults(|f| f.lose_response_on = Some("add_group_lock".into()));
    let err = env.adapter.issue(&req).await.expect_err("response lost");
    assert!(err.is_vendor_unwell() && err.is_retryable(), "{err:?}");
    assert_redacted(&err, Some("463728"), None);
    assert_eq!(env.handle.counters().lost_responses, 1);

    // Reconcile before retry: the credential is there, once.
    let found = env
        .adapter
        .find(&req)
        .await?
        .expect("found after a lost response");
    assert_eq!(env.handle.access_groups().len(), 1);
    assert_eq!(env.handle.access_groups()[0].id, found.expose());
    assert_eq!(env.handle.site_users().len(), 1);
    // And a retried issue would not duplicate it either.
    assert_eq!(env.adapter.issue(&req).await?, found);
    assert_eq!(env.handle.access_groups().len(), 1);
    assert_eq!(env.handle.site_users().len(), 1);
    Ok(())
}

#[tokio::test]
async fn salto_lost_response_on_the_first_write_is_completed_by_the_retry() -> anyhow::Result<()> {
    let env = spawn();
    let req = pin_request("key_01HSALTOLOSTFIRST:204", "640213");
    env.handle
        .update_faults(|f| f.lose_response_on = Some("create_site_user".into()));
    let err = env.adapter.issue(&req).await.expect_err("response lost");
    assert!(err.is_vendor_unwell(), "{err:?}");
    // The user exists but no access yet: find says absent, the retry reuses the user.
    assert!(env.adapter.find(&req).await?.is_none());
    let vref = env.adapter.issue(&req).await?;
    assert_eq!(env.adapter.find(&req).await?, Some(vref));
    assert_eq!(env.handle.site_users().len(), 1);
    assert_eq!(env.handle.access_groups().len(), 1);
    assert_eq!(env.handle.counters().users_created, 1);
    Ok(())
}

#[tokio::test]
async fn salto_every_lost_write_still_converges_to_one_credential() -> anyhow::Result<()> {
    let env = spawn();
    let req = pin_request("key_01HSALTOCONVERGE:204", "275194");
    env.handle.update_faults(|f| f.lose_response_rate = 1.0);
    for _ in 0..8 {
        let err = env.adapter.issue(&req).await.expect_err("every write lost");
        assert!(err.is_vendor_unwell(), "{err:?}");
    }
    env.handle.update_faults(|f| f.lose_response_rate = 0.0);
    let vref = match env.adapter.find(&req).await? {
        Some(v) => v,
        None => env.adapter.issue(&req).await?,
    };
    assert_eq!(env.handle.site_users().len(), 1);
    assert_eq!(env.handle.access_groups().len(), 1);
    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].vendor_ref, vref);
    assert_eq!(entries[0].valid_until, req.validity.until());
    Ok(())
}

#[tokio::test]
async fn salto_list_follows_next_page_links() -> anyhow::Result<()> {
    let env = spawn_with(
        SimConfig {
            max_page_size: 2,
            ..SimConfig::default()
        },
        |_| {},
    );
    let mut refs = Vec::new();
    for i in 0..5 {
        let req = kind_request(
            &format!("key_01HSALTOPAGE{i}:204"),
            KeyCredentialKind::MobileApp,
        );
        refs.push(env.adapter.issue(&req).await?);
    }
    // The fifth group is on the third page; find and list see it.
    let last = kind_request("key_01HSALTOPAGE4:204", KeyCredentialKind::MobileApp);
    assert_eq!(env.adapter.find(&last).await?, Some(refs[4].clone()));
    let listed = env.adapter.list(&device()).await?;
    assert_eq!(listed.len(), 5);
    for r in &refs {
        assert!(listed.iter().any(|e| &e.vendor_ref == r));
    }
    Ok(())
}

#[tokio::test]
async fn salto_faults_can_be_set_over_http() -> anyhow::Result<()> {
    let env = spawn();
    let base = env.sim.base_url();
    let r = patch_faults(&base, serde_json::json!({"outage": true})).await;
    assert!(r.status().is_success());
    assert!(env.handle.faults().outage);
    assert!(matches!(
        env.adapter.health().await,
        Err(VendorError::Unavailable { .. })
    ));
    patch_faults(&base, serde_json::json!({"outage": false})).await;
    env.adapter.health().await?;
    let groups = sim_get(&base, "/_sim/access_groups").await;
    assert_eq!(groups, serde_json::json!([]));
    Ok(())
}

/// A recorded `GET /v1.2/sites/{site_id}/locks/{lock_id}` reply of a Salto KS acceptance
/// site (published by an integrator; abridged, ids as published).
const RECORDED_LOCK: &str = r#"{
  "offline_access_keys_limit": 360,
  "offline_access_keys_count": 1,
  "mac": "0163813000002C",
  "floor": null,
  "locked_state": "locked",
  "lock_type": "escutcheon_pin",
  "online": true,
  "iq_link_state": "attached",
  "battery_level": "fresh",
  "privacy_mode": false,
  "communication_type": "blue_net",
  "id": "4d77312f-4a87-41db-a97b-f9d948dcc908",
  "customer_reference": "Tür 01"
}"#;

/// A recorded `GET /v1.2/sites/{site_id}/users?$top=100` reply (abridged to one user,
/// names masked as published).
const RECORDED_USERS: &str = r#"{
  "items": [
    {
      "id": "04f6d454-f7a0-4c45-84e3-00d36622b267",
      "user": {
        "email": null, "image_url": null, "tag_number": null,
        "is_managed_by_current_site": true, "has_profile": false,
        "id": "cdaaf4aa-beae-483f-baa9-6a5f0fc9dc1f",
        "first_name": "B***", "last_name": "0***"
      },
      "roles": [{"id": "8f6081a3-80fb-11e8-a892-000d3a221c5b", "customer_reference": "Site User",
                 "code": "site_user", "parent_id": "76f7e578-80fb-11e8-a892-000d3a221c5b",
                 "is_hierarchical": true}],
      "alias": "",
      "remote_access": false,
      "blocked": false,
      "subscription_state": "subscribed",
      "use_pin": true,
      "expires_at": null
    }
  ],
  "next_page_link": null,
  "count": null
}"#;

/// A check-in/check-out time schedule as integrators send it to
/// `POST /v1.1/sites/{site_id}/access_groups/{id}/time_schedules` (the KS web app's
/// shape; reconstructed from integrator code, not from Salto's reference).
const SCHEDULE_REQUEST: &str = r#"{
  "start_date": "2026-08-19T15:00:00",
  "end_date": "2026-08-22T11:00:00",
  "start_time": "00:00:00",
  "end_time": "23:59:59",
  "monday": true, "tuesday": true, "wednesday": true, "thursday": true,
  "friday": true, "saturday": true, "sunday": true
}"#;

/// The Connect API's error body (recorded shape; `ErrorCode` seen as a string too).
const RECORDED_ERROR: &str = r#"{"ErrorCode": 3102, "Message": "Otp is invalid"}"#;

#[tokio::test]
async fn salto_recorded_examples_parse_and_the_simulator_accepts_them() -> anyhow::Result<()> {
    let lock: wire::Lock = serde_json::from_str(RECORDED_LOCK)?;
    assert!(lock.has_keypad());
    assert_eq!(lock.online, Some(true));
    assert_eq!(lock.battery_percent(), Some(100), "a fresh battery");
    let users: wire::Page<wire::SiteUser> = serde_json::from_str(RECORDED_USERS)?;
    assert_eq!(users.items.len(), 1);
    assert_eq!(
        users.items[0].user.id,
        "cdaaf4aa-beae-483f-baa9-6a5f0fc9dc1f"
    );
    assert!(users.next_page_link.is_none());
    let err: wire::ApiError = serde_json::from_str(RECORDED_ERROR)?;
    assert_eq!(
        err.error_code,
        lockstep_vendors::salto::errors::OTP_REJECTED
    );
    let schedule: wire::TimeSchedule = serde_json::from_str(SCHEDULE_REQUEST)?;
    let utc = chrono::FixedOffset::east_opt(0).expect("utc");
    let (from, until) = schedule.utc_window(utc)?;
    assert_eq!(from.to_rfc3339(), "2026-08-19T15:00:00+00:00");
    assert_eq!(until.to_rfc3339(), "2026-08-22T11:00:00+00:00");
    // What the adapter writes for that window is the same body.
    assert_eq!(wire::TimeSchedule::window(from, until, utc), schedule);

    // The simulator takes the documented token request and the schedule body as sent.
    let env = spawn();
    let base = env.sim.base_url();
    let http = reqwest::Client::new();
    let token: wire::TokenResponse = http
        .post(format!("{base}/connect/token"))
        .basic_auth(SIM_CLIENT_ID, Some(SIM_CLIENT_SECRET))
        .form(&[
            ("grant_type", "password"),
            ("username", SIM_USERNAME),
            ("password", SIM_PASSWORD),
            ("scope", "user_api.full_access"),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(token.expires_in, 3600);
    assert_eq!(token.token_type.as_deref(), Some("Bearer"));
    let group: wire::AccessGroup = http
        .post(format!("{base}/v1.2/sites/{SIM_SITE_ID}/access_groups"))
        .bearer_auth(&token.access_token)
        .header("content-type", "application/json")
        .body(r#"{"customer_reference": "Room 204 guest"}"#)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let created: wire::TimeSchedule = http
        .post(format!(
            "{base}/v1.1/sites/{SIM_SITE_ID}/access_groups/{}/time_schedules",
            group.id
        ))
        .bearer_auth(&token.access_token)
        .header("content-type", "application/json")
        .body(SCHEDULE_REQUEST)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert!(created.id.is_some());
    assert_eq!(created.start_date, schedule.start_date);
    assert_eq!(created.end_date, schedule.end_date);
    // Its error body is the recorded shape.
    let missing = http
        .get(format!("{base}/v1.2/sites/{SIM_SITE_ID}/locks/nope"))
        .bearer_auth(&token.access_token)
        .send()
        .await?;
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    let body: wire::ApiError = missing.json().await?;
    assert_eq!(body.error_code, lockstep_vendors::salto::errors::NOT_FOUND);
    // Without a token: 401.
    let anon = http
        .get(format!("{base}/v1.2/sites/{SIM_SITE_ID}"))
        .send()
        .await?;
    assert_eq!(anon.status(), reqwest::StatusCode::UNAUTHORIZED);
    Ok(())
}

/// Spec 003 §2 health probe, Salto's reading (the rest is the contract's): the lock
/// object's `battery_level` is a state, mapped to a percent band.
#[tokio::test]
async fn salto_probe_maps_a_low_battery_to_15_percent() -> anyhow::Result<()> {
    let env = spawn();
    env.handle
        .update_lock_health(LOCK, |h| h.battery_level = "low".into());
    let p = env.adapter.probe(&device()).await?;
    assert_eq!(p.battery_percent, Some(15), "low trips the 20 % threshold");
    Ok(())
}

/// Salto KS in the `LockPort` contract (`crate::contract`): PINs of site users given
/// access to keypad locks `…204`, `…206`, ... through one access group each.
pub struct SaltoFixture;

impl crate::contract::Fixture for SaltoFixture {
    type Handle = SimHandle;
    type Config = SaltoConfig;
    type Adapter = SaltoAdapter;

    const VENDOR: lockstep_domain::VendorCode = lockstep_domain::VendorCode::Salto;
    const KIND: KeyCredentialKind = KeyCredentialKind::PinCode;
    const CAPABILITIES: &'static [&'static str] = &[
        "mobile_key",
        "card_encoding",
        "pin",
        "remote_revoke",
        "remote_issue",
        "offline_issuance",
        "scope_floors",
        "scope_areas",
    ];
    const REFUSED_KINDS: &'static [KeyCredentialKind] =
        &[KeyCredentialKind::QrCode, KeyCredentialKind::NfcTag];
    const SECRETS: &'static [&'static str] = &[SIM_CLIENT_SECRET, SIM_PASSWORD];
    const SINGLE_WRITE_ISSUE: bool = false;
    const FIND_IS_PER_DEVICE: bool = true;
    const UPDATE_CHECKS_KIND: bool = false;
    const UNKNOWN_DEVICE: &'static str = "4d77312f-4a87-41db-a97b-000000000999";
    const MALFORMED_REF: &'static str = "../../sites/other";
    const UNKNOWN_DEVICE_CODE: &'static str = "lock_not_found";
    const TOKEN_LIFETIME_SECS: Option<i64> = Some(3600);
    const HEALTHY_PROBE: crate::contract::ProbeReading = crate::contract::ProbeReading {
        battery_percent: Some(100),
        firmware: Some("0.2.14"),
        reads_clock: false,
    };

    crate::contract::simulator_fixture_fns!(SaltoAdapter, tokens);

    fn start() -> RunningSimulator {
        let sim = SaltoSimulator::start(loopback()).expect("simulator binds");
        for i in 0..crate::contract::DEVICES {
            sim.handle().add_lock(Self::device(i).expose());
        }
        sim
    }

    fn bad_credentials() -> crate::contract::BadCredentials<SaltoConfig> {
        vec![
            ("wrong-client-secret", |c| {
                c.client_secret = Secret::new("wrong-client-secret")
            }),
            ("wrong-password", |c| {
                c.password = Secret::new("wrong-password")
            }),
        ]
    }

    fn device(i: usize) -> DeviceRef {
        // …204 is `LOCK`; …205 is the cylinder of the Salto-only tests.
        DeviceRef::new(format!("4d77312f-4a87-41db-a97b-{:012}", 204 + 2 * i))
    }

    fn tally(handle: &SimHandle) -> crate::contract::Tally {
        let c = handle.counters();
        crate::contract::Tally::from([
            c.groups_created,
            c.schedules_updated,
            c.groups_deleted,
            c.lost_responses,
            c.rejected_by_faults,
        ])
    }

    fn set_online(handle: &SimHandle, device: usize, online: bool) {
        handle.update_lock_health(Self::device(device).expose(), |h| h.online = online);
    }

    /// One access group (named by the label, one lock, one time schedule) holding one
    /// site user (aliased by the label) with the PIN.
    fn check_stored(handle: &SimHandle, req: &IssueRequest, vref: &VendorRef) {
        let groups = handle.access_groups();
        let group = groups
            .iter()
            .find(|g| g.id == vref.expose())
            .expect("the access group");
        assert_eq!(group.customer_reference, req.label);
        assert_eq!(group.lock_ids, vec![req.device.expose().to_owned()]);
        assert_eq!(group.time_schedules.len(), 1);
        let users: Vec<_> = handle
            .site_users()
            .into_iter()
            .filter(|u| u.alias == req.label)
            .collect();
        assert_eq!(users.len(), 1);
        assert_eq!(
            users[0].pin.as_deref(),
            req.pin.as_ref().map(|p| p.expose()),
            "the pin is not touched"
        );
        assert!(users[0].use_pin);
        assert_eq!(group.user_ids, vec![users[0].user_id.clone()]);
    }

    /// Its group and its user are both deleted.
    fn check_gone(handle: &SimHandle, req: &IssueRequest) {
        assert!(!handle
            .access_groups()
            .iter()
            .any(|g| g.customer_reference == req.label));
        assert!(!handle.site_users().iter().any(|u| u.alias == req.label));
    }
}

impl crate::contract::PinFixture for SaltoFixture {
    fn force_pin_collision_next(handle: &SimHandle) {
        handle.update_faults(|f| f.force_pin_collision_next = 1);
    }
}
