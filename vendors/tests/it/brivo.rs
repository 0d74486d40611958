//! The Brivo adapter against its simulator over loopback HTTP, and replays of the examples
//! in Brivo's public API docs (apidocs.brivo.com).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use lockstep_domain::{
    Clock, DeviceRef, KeyCredentialKind, ManualClock, Pin, SystemClock, ValidityWindow, VendorRef,
};
use lockstep_vendors::brivo::simulator::{
    SIM_API_KEY, SIM_CLIENT_SECRET, SIM_PASSWORD, SIM_SCHEDULE_ID,
};
use lockstep_vendors::brivo::wire::{self, ApiError, CreateUserRequest, Page, TokenResponse, User};
use lockstep_vendors::brivo::{
    BrivoAdapter, BrivoConfig, BrivoSimulator, RunningSimulator, Secret, SimFaults, SimHandle,
};
use lockstep_vendors::{IssueRequest, LockPort, VendorEntry, VendorError};

/// The access point of the documented examples ("Front door").
const AP: i64 = 111_111;

struct Env {
    sim: RunningSimulator,
    handle: SimHandle,
    adapter: BrivoAdapter,
}

fn spawn() -> Env {
    spawn_with(|_| {}, Arc::new(SystemClock))
}

fn spawn_with(tweak: impl FnOnce(&mut BrivoConfig), clock: Arc<dyn Clock>) -> Env {
    let sim = BrivoSimulator::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("simulator binds on loopback");
    let handle = sim.handle();
    handle.add_access_point(AP);
    let mut config = sim.default_adapter_config();
    tweak(&mut config);
    let adapter = BrivoAdapter::new(config, clock).expect("adapter builds");
    Env {
        sim,
        handle,
        adapter,
    }
}

fn device() -> DeviceRef {
    DeviceRef::new(AP.to_string())
}

/// A stay from tomorrow, whole seconds (Brivo date-times are to the second).
fn window() -> ValidityWindow {
    let from: DateTime<Utc> = (Clock::now(&SystemClock) + chrono::Duration::days(1))
        .duration_trunc(chrono::Duration::seconds(1))
        .expect("truncation to seconds is in range");
    ValidityWindow::new(from, from + chrono::Duration::days(3)).expect("from < until")
}

fn shifted(w: &ValidityWindow, days: i64) -> ValidityWindow {
    ValidityWindow::new(
        w.from() + chrono::Duration::days(days),
        w.until() + chrono::Duration::days(days),
    )
    .expect("from < until")
}

fn pin_request(label: &str, pin: &str) -> IssueRequest {
    IssueRequest {
        device: device(),
        kind: KeyCredentialKind::PinCode,
        label: label.to_owned(),
        pin: Some(Pin::parse(pin).expect("valid pin")),
        card_number: None,
        validity: window(),
    }
}

/// Asserts that nothing secret shows in any rendering of `err`.
fn assert_redacted(err: &VendorError, pin: Option<&str>, vendor_ref: Option<&VendorRef>) {
    let mut forbidden: Vec<String> = vec![
        SIM_CLIENT_SECRET.to_owned(),
        SIM_PASSWORD.to_owned(),
        SIM_API_KEY.to_owned(),
    ];
    forbidden.extend(pin.map(str::to_owned));
    forbidden.extend(vendor_ref.map(|r| r.expose().to_owned()));
    let renderings = [
        format!("{err:?}"),
        format!("{err}"),
        format!("{:?}", err.to_domain_issue()),
        format!("{:?}", err.to_domain_revoke()),
    ];
    for r in &renderings {
        for f in &forbidden {
            assert!(!r.contains(f.as_str()), "{r:?} leaks a secret value");
        }
    }
}

#[tokio::test]
async fn brivo_issued_pin_is_listed_with_its_window() -> anyhow::Result<()> {
    let env = spawn();
    let req = pin_request("key_01HISSUE:111111", "482913");
    let vref = env.adapter.issue(&req).await?;

    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.vendor_ref, vref);
    assert_eq!(e.label, req.label);
    assert_eq!(e.valid_from, req.validity.from());
    assert_eq!(e.valid_until, req.validity.until());

    let on_door = env.handle.users_on(AP);
    assert_eq!(on_door.len(), 1, "the user opens the access point");
    assert_eq!(on_door[0].pin.as_deref(), Some("482913"));
    assert_eq!(on_door[0].external_id.as_deref(), Some(req.label.as_str()));
    assert_eq!(on_door[0].id.to_string(), vref.expose());
    assert_eq!(
        env.handle.group_names().values().collect::<Vec<_>>(),
        vec!["lockstep-ap-111111"]
    );
    assert_eq!(env.handle.counters().users_created, 1);
    Ok(())
}

#[tokio::test]
async fn brivo_find_by_label_returns_the_issued_ref_and_none_when_absent() -> anyhow::Result<()> {
    let env = spawn();
    let req = pin_request("key_01HFIND:111111", "551203");
    assert!(env.adapter.find(&req).await?.is_none());
    let vref = env.adapter.issue(&req).await?;
    assert_eq!(env.adapter.find(&req).await?, Some(vref));
    let other = pin_request("key_01HOTHER:111111", "771234");
    assert!(env.adapter.find(&other).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn brivo_update_moves_the_window_and_keeps_pin_and_label() -> anyhow::Result<()> {
    let env = spawn();
    let mut req = pin_request("key_01HUPDATE:111111", "584736");
    let vref = env.adapter.issue(&req).await?;
    let longer = ValidityWindow::new(
        req.validity.from() - chrono::Duration::days(1),
        req.validity.until() + chrono::Duration::days(2),
    )?;
    req.validity = longer;
    env.adapter.update(&req, &vref).await?;

    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].vendor_ref, vref, "same user at the vendor");
    assert_eq!(entries[0].label, req.label);
    assert_eq!(entries[0].valid_from, longer.from());
    assert_eq!(entries[0].valid_until, longer.until());
    let users = env.handle.users();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].pin.as_deref(), Some("584736"), "the pin is kept");
    assert_eq!(env.handle.counters().users_patched, 1);
    Ok(())
}

#[tokio::test]
async fn brivo_update_of_a_deleted_user_is_not_found() -> anyhow::Result<()> {
    let env = spawn();
    let mut req = pin_request("key_01HUPDGONE:111111", "917364");
    let vref = env.adapter.issue(&req).await?;
    env.adapter.revoke(&device(), &vref).await?;
    req.validity = shifted(&req.validity, 1);
    let err = env.adapter.update(&req, &vref).await.expect_err("gone");
    assert_eq!(err, VendorError::NotFound);
    assert!(!err.is_vendor_unwell() && !err.is_retryable());
    assert_redacted(&err, Some("917364"), Some(&vref));
    Ok(())
}

#[tokio::test]
async fn brivo_revoke_removes_the_user_and_a_second_revoke_is_ok() -> anyhow::Result<()> {
    let env = spawn();
    let vref = env
        .adapter
        .issue(&pin_request("key_01HREVOKE:111111", "902177"))
        .await?;
    env.adapter.revoke(&device(), &vref).await?;
    assert!(env.adapter.list(&device()).await?.is_empty());
    assert!(env.handle.users().is_empty());
    env.adapter.revoke(&device(), &vref).await?;
    assert_eq!(env.handle.counters().users_deleted, 1);
    Ok(())
}

#[tokio::test]
async fn brivo_lost_issue_response_is_found_afterwards_exactly_once() -> anyhow::Result<()> {
    let env = spawn();
    env.adapter.health().await?;
    // The group is created on the first issue; make it exist so only the user is lost.
    let warmup = env
        .adapter
        .issue(&pin_request("key_01HWARM:111111", "100200"))
        .await?;
    env.adapter.revoke(&device(), &warmup).await?;

    env.handle.update_faults(|f| f.lose_response_rate = 1.0);
    let req = pin_request("key_01HLOST:111111", "738291");
    let err = env.adapter.issue(&req).await.expect_err("response lost");
    assert!(err.is_vendor_unwell(), "{err:?}");
    assert_redacted(&err, Some("738291"), None);
    env.handle.update_faults(|f| f.lose_response_rate = 0.0);

    // Reconcile before retry: the vendor did create the user, but never put it in the
    // group; find completes it.
    let found = env
        .adapter
        .find(&req)
        .await?
        .expect("the create was applied");
    let users = env.handle.users();
    assert_eq!(users.len(), 1, "exactly one user at the vendor");
    assert_eq!(users[0].id.to_string(), found.expose());
    assert_eq!(env.handle.users_on(AP).len(), 1, "and it opens the door");
    assert_eq!(env.handle.counters().users_created, 2);
    Ok(())
}

#[tokio::test]
async fn brivo_lost_delete_response_then_retry_is_ok() -> anyhow::Result<()> {
    let env = spawn();
    let vref = env
        .adapter
        .issue(&pin_request("key_01HLD:111111", "828282"))
        .await?;
    env.handle.update_faults(|f| f.lose_response_rate = 1.0);
    let err = env
        .adapter
        .revoke(&device(), &vref)
        .await
        .expect_err("lost");
    assert_redacted(&err, Some("828282"), Some(&vref));
    env.handle.update_faults(|f| f.lose_response_rate = 0.0);
    env.adapter.revoke(&device(), &vref).await?;
    assert!(env.handle.users().is_empty());
    Ok(())
}

#[tokio::test]
async fn brivo_outage_is_unavailable_and_counts_against_the_vendor() {
    let env = spawn();
    env.handle.update_faults(|f| f.outage = true);
    let err = env
        .adapter
        .issue(&pin_request("key_01HOUT:111111", "123987"))
        .await
        .expect_err("outage");
    assert!(matches!(err, VendorError::Unavailable { .. }), "{err:?}");
    assert!(err.is_vendor_unwell() && err.is_retryable());
    assert_eq!(
        err.to_domain_issue(),
        lockstep_domain::DomainError::VendorUnreachable
    );
    assert_redacted(&err, Some("123987"), None);
    assert!(env.adapter.health().await.is_err());
    env.handle.update_faults(|f| f.outage = false);
    assert!(env.adapter.health().await.is_ok());
}

#[tokio::test]
async fn brivo_error_rate_one_answers_500_as_unavailable() -> anyhow::Result<()> {
    let env = spawn();
    env.adapter.health().await?;
    env.handle.update_faults(|f| f.error_rate = 1.0);
    let err = env.adapter.health().await.expect_err("500");
    assert_eq!(
        err,
        VendorError::Unavailable {
            detail: "http status 500".into()
        }
    );
    assert!(env.handle.counters().rejected_by_faults >= 1);
    Ok(())
}

#[tokio::test]
async fn brivo_rate_limit_is_rate_limited_with_retry_after() -> anyhow::Result<()> {
    let env = spawn();
    env.adapter.health().await?;
    env.handle.update_faults(|f| f.rate_limit_per_sec = Some(0));
    let err = env
        .adapter
        .issue(&pin_request("key_01HRL:111111", "610001"))
        .await
        .expect_err("429");
    assert_eq!(
        err,
        VendorError::RateLimited {
            retry_after: Some(Duration::from_secs(1))
        }
    );
    assert!(err.is_vendor_unwell());
    assert_redacted(&err, Some("610001"), None);
    Ok(())
}

#[tokio::test]
async fn brivo_bad_client_secret_password_or_api_key_is_an_auth_error() {
    for tweak in [
        (|c: &mut BrivoConfig| c.credentials.client_secret = Secret::new("wrong-secret"))
            as fn(&mut BrivoConfig),
        |c| c.credentials.password = Secret::new("wrong-password"),
        |c| c.credentials.api_key = Secret::new("wrong-api-key"),
    ] {
        let env = spawn_with(tweak, Arc::new(SystemClock));
        let err = env
            .adapter
            .issue(&pin_request("key_01HAUTH:111111", "192837"))
            .await
            .expect_err("auth");
        assert!(matches!(err, VendorError::Auth { .. }), "{err:?}");
        assert!(!err.is_vendor_unwell() && !err.is_retryable());
        assert_redacted(&err, Some("192837"), None);
        let shown = format!("{err:?}");
        for s in ["wrong-secret", "wrong-password", "wrong-api-key"] {
            assert!(!shown.contains(s), "{shown}");
        }
        assert!(env.handle.users().is_empty());
    }
}

#[tokio::test]
async fn brivo_expired_token_is_refreshed_transparently() -> anyhow::Result<()> {
    let env = spawn();
    env.adapter
        .issue(&pin_request("key_01HT1:111111", "111222"))
        .await?;
    assert_eq!(env.handle.counters().tokens_issued, 1);
    env.handle.expire_all_tokens();
    env.adapter
        .issue(&pin_request("key_01HT2:111111", "333444"))
        .await?;
    assert_eq!(env.handle.counters().tokens_issued, 2);
    assert_eq!(env.handle.users().len(), 2);
    Ok(())
}

#[tokio::test]
async fn brivo_token_is_fetched_again_before_it_expires_on_our_clock() -> anyhow::Result<()> {
    let clock = ManualClock::new(Clock::now(&SystemClock));
    let env = spawn_with(|_| {}, Arc::new(clock.clone()));
    env.adapter.health().await?;
    env.adapter.health().await?;
    assert_eq!(
        env.handle.counters().tokens_issued,
        1,
        "the token is cached"
    );
    clock.advance(chrono::Duration::hours(1));
    env.adapter.health().await?;
    assert_eq!(env.handle.counters().tokens_issued, 2);
    Ok(())
}

#[tokio::test]
async fn brivo_duplicate_pin_is_a_pin_collision() -> anyhow::Result<()> {
    let env = spawn();
    let first = env
        .adapter
        .issue(&pin_request("key_01HA:111111", "313131"))
        .await?;
    let err = env
        .adapter
        .issue(&pin_request("key_01HB:111111", "313131"))
        .await
        .expect_err("same pin twice");
    assert_eq!(err, VendorError::PinCollision);
    assert!(!err.is_vendor_unwell() && !err.is_retryable());
    assert_redacted(&err, Some("313131"), Some(&first));

    env.handle.update_faults(|f| f.force_pin_collision_next = 1);
    let err = env
        .adapter
        .issue(&pin_request("key_01HC:111111", "424242"))
        .await
        .expect_err("forced collision");
    assert_eq!(err, VendorError::PinCollision);
    env.adapter
        .issue(&pin_request("key_01HC:111111", "424242"))
        .await?;
    assert_eq!(env.handle.users().len(), 2);
    Ok(())
}

#[tokio::test]
async fn brivo_slow_vendor_times_out_as_unavailable() {
    let env = spawn_with(
        |c| c.call_timeout = Duration::from_millis(300),
        Arc::new(SystemClock),
    );
    env.handle.update_faults(|f| f.latency_ms = 2_000);
    let err = env.adapter.health().await.expect_err("timeout");
    assert_eq!(
        err,
        VendorError::Unavailable {
            detail: "timeout".into()
        }
    );
}

#[tokio::test]
async fn brivo_unknown_access_point_bad_refs_and_other_kinds_are_refused() {
    let env = spawn();
    let mut req = pin_request("key_01HNOAP:99", "246810");
    req.device = DeviceRef::new("99");
    let err = env.adapter.issue(&req).await.expect_err("unknown door");
    assert!(
        matches!(&err, VendorError::Refused { code, .. } if code == "lock_not_found"),
        "{err:?}"
    );
    assert_redacted(&err, Some("246810"), None);

    let bad_ref = VendorRef::new("not-a-user-id");
    let err = env
        .adapter
        .revoke(&device(), &bad_ref)
        .await
        .expect_err("bad ref");
    assert!(matches!(&err, VendorError::Refused { code, .. } if code == "invalid_vendor_ref"));
    assert_redacted(&err, None, Some(&bad_ref));

    for kind in [
        KeyCredentialKind::RfidCard,
        KeyCredentialKind::MobileApp,
        KeyCredentialKind::QrCode,
    ] {
        let mut other = pin_request("key_01HKIND:111111", "135790");
        other.kind = kind;
        let err = env.adapter.issue(&other).await.expect_err("unsupported");
        assert!(
            matches!(&err, VendorError::Refused { code, .. } if code == "unsupported_kind"),
            "{err:?}"
        );
    }
    assert!(env.handle.users().is_empty());
}

#[tokio::test]
async fn brivo_every_error_kind_renders_without_secrets() -> anyhow::Result<()> {
    let env = spawn();
    let req = pin_request("key_01HRED:111111", "564738");
    let vref = env.adapter.issue(&req).await?;
    let mut errors = Vec::new();
    let mut twin = req.clone();
    twin.label = "key_01HRED2:111111".into();
    errors.push(env.adapter.issue(&twin).await.expect_err("collision"));
    errors.push(env.adapter.issue(&req).await.expect_err("duplicate label"));
    env.handle.set_faults(SimFaults {
        outage: true,
        ..SimFaults::default()
    });
    errors.push(env.adapter.update(&req, &vref).await.expect_err("outage"));
    env.handle.set_faults(SimFaults {
        rate_limit_per_sec: Some(0),
        ..SimFaults::default()
    });
    errors.push(env.adapter.revoke(&device(), &vref).await.expect_err("429"));
    env.handle.set_faults(SimFaults::default());
    env.adapter.revoke(&device(), &vref).await?;
    errors.push(env.adapter.update(&req, &vref).await.expect_err("gone"));
    let bad = spawn_with(
        |c| c.credentials.client_secret = Secret::new("nope"),
        Arc::new(SystemClock),
    );
    errors.push(bad.adapter.issue(&req).await.expect_err("auth"));

    let kinds: std::collections::BTreeSet<&str> =
        errors.iter().map(VendorError::metric_label).collect();
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    for e in &errors {
        assert_redacted(e, Some("564738"), Some(&vref));
    }
    Ok(())
}

#[test]
fn brivo_adapter_debug_shows_no_secret_and_capabilities_follow_the_vendor() {
    let env = spawn();
    let s = format!("{:?}", env.adapter);
    for secret in [SIM_CLIENT_SECRET, SIM_PASSWORD, SIM_API_KEY] {
        assert!(!s.contains(secret), "{s}");
    }
    let cfg = format!("{:?}", env.sim.default_adapter_config());
    for secret in [SIM_CLIENT_SECRET, SIM_PASSWORD, SIM_API_KEY] {
        assert!(!cfg.contains(secret), "{cfg}");
    }
    assert_eq!(env.adapter.vendor(), lockstep_domain::VendorCode::Brivo);
    let caps = env.adapter.capabilities();
    assert!(caps.pin && caps.mobile_key && caps.remote_issue && caps.remote_revoke);
    assert!(!caps.card_encoding && !caps.offline_issuance);
    assert!(!caps.supports(KeyCredentialKind::RfidCard), "I-6");
}

// ---- documented examples (apidocs.brivo.com) ----

/// "User - Create new user", Request-Body-Example, verbatim.
const DOC_CREATE_USER_REQUEST: &str = r#"{
  "firstName"    : "Peter",
  "middleName"   : "Jason",
  "lastName"     : "Quill",
  "externalId"   : "Star Lord",
  "pin"          : "5678",
  "effectiveFrom": "2015-04-14T18:17:49Z",
  "effectiveTo"  : "2020-12-31T23:59:59Z",
  "bleTwoFactorExempt"     : true,
  "emails"    : [{
                    "address": "peter.quill@brivo.com",
                    "type": "home"
                    },
                    {
                    "address": "pquill7777@gmail.com",
                    "type": "work"
                    }],
  "phoneNumbers"    : [{
                    "number": "(541) 754-3010",
                    "type": "home"
                    },
                    {
                    "number": "+1-541-754-3010",
                    "type": "work"
                    },
                    {
                    "number": "+49-89-636-48018",
                    "type": "other"
                    }]
}"#;

/// "User - Retrieve by id", Success-Response, with one fix: the documented example has
/// `"created":     : "..."` and `"updated":     : "..."` (a doubled colon, not JSON); the
/// second colon is removed. `userImage`, `emails` and `phoneNumbers` are left out.
const DOC_USER_REPLY: &str = r#"{
 "id"           : 442211,
 "externalId"   : "Star Lord",
 "firstName"    : "Peter",
 "middleName"   : "Jason",
 "lastName"     : "Quill",
 "pin"          : "5678",
 "effectiveFrom": "2015-04-14T18:17:49Z",
 "effectiveTo"  : "2020-12-31T23:59:59Z",
 "suspended"    : false,
 "created"      : "2010-06-15T04:00:00Z",
 "updated"      : "2018-03-14T04:00:00Z",
 "bleTwoFactorExempt"    :true,
 "customFields" : [{
                    "id"        : 222,
                    "fieldType" : "TEXT",
                    "fieldName" : "species",
                    "value"     : "human"
                   }]
 }"#;

/// "Group - Group Listing", Success-Response (the docs' markdown escapes removed).
const DOC_GROUP_LISTING: &str = r#"{
"data"    : [{
"id"     : 442211,
"name"   : "Staff"
}],
"offset"  : 0,
"pageSize": 20,
"count"   : 1
}"#;

/// "Group - Assign Permission to Group", Request-Body-Example (without its leading
/// `AccessPermission` type name, which is not JSON).
const DOC_ACCESS_PERMISSION: &str = r#"{
    "schedule": {
        "id": 439955
    },
    "privacyModeOverride": true
}"#;

/// "Overview - OAuth2 Tokens", example token response. The documented example has unquoted
/// keys (not JSON); this is it with the keys quoted and the placeholders as strings.
const DOC_TOKEN_REPLY: &str = r#"{
"access_token": "[ACCESS_TOKEN_VALUE]",
"token_type": "bearer",
"refresh_token": "[REFRESH_TOKEN_VALUE]",
"expires_in": 60
}"#;

#[test]
fn brivo_documented_bodies_parse_through_the_wire_types() {
    let req: CreateUserRequest =
        serde_json::from_str(DOC_CREATE_USER_REQUEST).expect("documented create body");
    assert_eq!(req.external_id.as_deref(), Some("Star Lord"));
    assert_eq!(req.pin.as_deref(), Some("5678"));
    assert_eq!(req.emails.len(), 2);

    let user: User = serde_json::from_str(DOC_USER_REPLY).expect("documented user");
    let entry = VendorEntry::try_from(user).expect("dates parse");
    assert_eq!(entry.vendor_ref.expose(), "442211");
    assert_eq!(entry.label, "Star Lord");
    assert_eq!(
        entry.valid_from,
        wire::parse_time("2015-04-14T18:17:49Z", "t").expect("time")
    );
    assert_eq!(wire::format_time(entry.valid_until), "2020-12-31T23:59:59Z");

    let groups: Page<wire::Group> = serde_json::from_str(DOC_GROUP_LISTING).expect("listing");
    assert_eq!((groups.count, groups.data[0].id), (1, 442211));
    let perm: wire::AccessPermissionRequest =
        serde_json::from_str(DOC_ACCESS_PERMISSION).expect("permission");
    assert_eq!(perm.schedule.id, SIM_SCHEDULE_ID);
    let token: TokenResponse = serde_json::from_str(DOC_TOKEN_REPLY).expect("token");
    assert_eq!(
        (token.expires_in, token.token_type.as_deref()),
        (60, Some("bearer"))
    );
    let err: ApiError =
        serde_json::from_str(r#"{ "code" : 404, "message" : "User not found" }"#).expect("error");
    assert_eq!(err.code, 404);
}

#[test]
fn brivo_our_create_body_uses_the_documented_field_names() {
    let ours = CreateUserRequest {
        first_name: wire::USER_FIRST_NAME.into(),
        last_name: wire::USER_LAST_NAME.into(),
        external_id: Some("key_01HX:111111".into()),
        pin: Some("5678".into()),
        effective_from: Some("2015-04-14T18:17:49Z".into()),
        effective_to: Some("2020-12-31T23:59:59Z".into()),
        ..CreateUserRequest::default()
    };
    let ours = serde_json::to_value(&ours).expect("serializes");
    let documented: serde_json::Value =
        serde_json::from_str(DOC_CREATE_USER_REQUEST).expect("json");
    let ours = ours.as_object().expect("object");
    for key in ours.keys() {
        assert!(
            documented.get(key).is_some(),
            "{key} is not a documented field"
        );
    }
}

#[tokio::test]
async fn brivo_simulator_accepts_the_documented_requests_and_the_adapter_finds_the_user(
) -> anyhow::Result<()> {
    let env = spawn();
    let token = env.handle.issue_token();
    let http = reqwest::Client::new();
    let base = env.sim.base_url();
    let resp = http
        .post(format!("{base}/v1/api/users"))
        .header("api-key", SIM_API_KEY)
        .header("Authorization", format!("bearer {token}"))
        .header("Content-Type", "application/json")
        .body(DOC_CREATE_USER_REQUEST)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let created: User = serde_json::from_slice(&resp.bytes().await?)?;
    assert_eq!(created.external_id.as_deref(), Some("Star Lord"));
    assert_eq!(
        created.effective_to.as_deref(),
        Some("2020-12-31T23:59:59Z")
    );

    let resp = http
        .get(format!("{base}/v1/api/users/Star%20Lord/external"))
        .header("api-key", SIM_API_KEY)
        .header("Authorization", format!("bearer {token}"))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);

    // Without the api key the gateway's documented 403 comes back.
    let resp = http
        .get(format!("{base}/v1/api/users/{}", created.id))
        .header("Authorization", format!("bearer {token}"))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 403);
    assert!(resp.text().await?.contains("Developer Inactive"));

    // The adapter finds the documented user by its external id and gives it the door.
    let mut req = pin_request("Star Lord", "5678");
    req.validity = ValidityWindow::new(
        wire::parse_time("2015-04-14T18:17:49Z", "t")?,
        wire::parse_time("2020-12-31T23:59:59Z", "t")?,
    )?;
    let found = env.adapter.find(&req).await?.expect("documented user");
    assert_eq!(found.expose(), created.id.to_string());
    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].label, "Star Lord");
    assert_eq!(entries[0].valid_from, req.validity.from());
    Ok(())
}

#[tokio::test]
async fn brivo_simulator_fault_switches_are_reachable_over_http() -> anyhow::Result<()> {
    let env = spawn();
    let http = reqwest::Client::new();
    let base = env.sim.base_url();
    let resp = http
        .post(format!("{base}/_sim/faults"))
        .json(&serde_json::json!({"outage": true}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(env.handle.faults().outage);
    assert!(env.adapter.health().await.is_err());
    http.post(format!("{base}/_sim/faults"))
        .json(&serde_json::json!({"outage": false}))
        .send()
        .await?;
    env.adapter.health().await?;
    let counters: serde_json::Value = http
        .get(format!("{base}/_sim/counters"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(counters["tokens_issued"], 1);
    Ok(())
}

/// Spec 003 §2 health probe: the access point's control panel (firmware, online); wired
/// readers report no battery or clock; an unknown access point is `NotFound`; an outage
/// is the vendor unwell.
#[tokio::test]
async fn brivo_probe_reads_the_access_points_control_panel() -> anyhow::Result<()> {
    let env = spawn();
    let p = env.adapter.probe(&device()).await?;
    assert!(p.online);
    assert_eq!(p.firmware.as_deref(), Some("6.2.4.1"));
    assert_eq!((p.battery_percent, p.device_time), (None, None));
    env.handle.set_access_point_online(AP, false);
    assert!(!env.adapter.probe(&device()).await?.online);
    assert_eq!(
        env.adapter.probe(&DeviceRef::new("424242")).await,
        Err(VendorError::NotFound)
    );
    env.handle.update_faults(|f| f.outage = true);
    let down = env.adapter.probe(&device()).await;
    assert!(
        matches!(down, Err(ref e) if e.is_vendor_unwell()),
        "{down:?}"
    );
    Ok(())
}

/// Brivo in the `LockPort` contract (`crate::contract`): PINs of users in the group of
/// access points `111111`, `111112`, ...
pub struct BrivoFixture;

impl crate::contract::Fixture for BrivoFixture {
    type Handle = SimHandle;
    type Config = BrivoConfig;
    type Adapter = BrivoAdapter;

    const VENDOR: lockstep_domain::VendorCode = lockstep_domain::VendorCode::Brivo;
    const KIND: KeyCredentialKind = KeyCredentialKind::PinCode;
    const CAPABILITIES: lockstep_vendors::LockCapabilities = lockstep_vendors::LockCapabilities {
        mobile_key: true,
        card_encoding: false,
        pin: true,
        qr: false,
        nfc: false,
        remote_revoke: true,
        remote_issue: true,
        offline_issuance: false,
        scope_floors: false,
        scope_areas: false,
    };
    // Brivo's mobile passes are not issued through this adapter.
    const REFUSED_KINDS: &'static [KeyCredentialKind] = &[
        KeyCredentialKind::RfidCard,
        KeyCredentialKind::MobileApp,
        KeyCredentialKind::QrCode,
        KeyCredentialKind::NfcTag,
    ];
    const SECRETS: &'static [&'static str] = &[SIM_CLIENT_SECRET, SIM_PASSWORD, SIM_API_KEY];
    const SINGLE_WRITE_ISSUE: bool = false;
    // Users are account-wide: `find` finds one by its external id (the label) whatever
    // the access point.
    const FIND_IS_PER_DEVICE: bool = false;
    const UNKNOWN_DEVICE_CODE: &'static str = "lock_not_found";
    const TOKEN_LIFETIME_SECS: Option<i64> = Some(3600);
    // Wired readers report no battery or clock.
    const HEALTHY_PROBE: crate::contract::ProbeReading = crate::contract::ProbeReading {
        battery_percent: None,
        firmware: Some("6.2.4.1"),
        reads_clock: false,
    };

    fn start() -> RunningSimulator {
        let sim = BrivoSimulator::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("simulator binds on loopback");
        for i in 0..crate::contract::DEVICES {
            sim.handle().add_access_point(AP + i as i64);
        }
        sim
    }

    fn config(sim: &RunningSimulator) -> BrivoConfig {
        sim.default_adapter_config()
    }

    fn set_call_timeout(config: &mut BrivoConfig, timeout: Duration) {
        config.call_timeout = timeout;
    }

    fn bad_credentials() -> crate::contract::BadCredentials<BrivoConfig> {
        vec![
            ("wrong-secret", |c| {
                c.credentials.client_secret = Secret::new("wrong-secret")
            }),
            ("wrong-password", |c| {
                c.credentials.password = Secret::new("wrong-password")
            }),
            ("wrong-api-key", |c| {
                c.credentials.api_key = Secret::new("wrong-api-key")
            }),
        ]
    }

    fn build(config: BrivoConfig, clock: Arc<dyn Clock>) -> BrivoAdapter {
        BrivoAdapter::new(config, clock).expect("adapter builds")
    }

    fn device(i: usize) -> DeviceRef {
        DeviceRef::new((AP + i as i64).to_string())
    }

    fn unknown_device() -> DeviceRef {
        DeviceRef::new("424242")
    }

    fn malformed_ref() -> VendorRef {
        VendorRef::new("not-a-user-id")
    }

    fn inject(handle: &SimHandle, fault: crate::contract::Fault) {
        crate::contract::inject_fault!(handle, fault);
    }

    fn held(handle: &SimHandle, device: &DeviceRef) -> Vec<crate::contract::Held> {
        crate::contract::held_on!(handle, device)
    }

    fn tally(handle: &SimHandle) -> crate::contract::Tally {
        let c = handle.counters();
        crate::contract::Tally {
            created: c.users_created,
            updated: c.users_patched,
            deleted: c.users_deleted,
            lost_responses: c.lost_responses,
            rejected_by_faults: c.rejected_by_faults,
        }
    }

    fn tokens_issued(handle: &SimHandle) -> Option<u64> {
        Some(handle.counters().tokens_issued)
    }

    fn expire_tokens(handle: &SimHandle) {
        handle.expire_all_tokens();
    }

    fn set_online(handle: &SimHandle, device: usize, online: bool) {
        handle.set_access_point_online(AP + device as i64, online);
    }

    /// A user with the PIN and the label as its external id, in the access point's group.
    fn check_stored(handle: &SimHandle, req: &IssueRequest, vref: &VendorRef) {
        let ap: i64 = req.device.expose().parse().expect("an access point id");
        let on_door = handle.users_on(ap);
        let user = on_door
            .iter()
            .find(|u| u.id.to_string() == vref.expose())
            .expect("the user opens the access point");
        assert_eq!(
            user.pin.as_deref(),
            req.pin.as_ref().map(|p| p.expose()),
            "the pin is not touched"
        );
        assert_eq!(user.external_id.as_deref(), Some(req.label.as_str()));
        assert!(handle
            .group_names()
            .values()
            .any(|n| *n == format!("lockstep-ap-{ap}")));
    }

    fn check_gone(handle: &SimHandle, req: &IssueRequest) {
        assert!(!handle
            .users()
            .iter()
            .any(|u| u.external_id.as_deref() == Some(req.label.as_str())));
    }
}

impl crate::contract::PinFixture for BrivoFixture {
    fn force_pin_collision_next(handle: &SimHandle) {
        handle.update_faults(|f| f.force_pin_collision_next = 1);
    }
}
