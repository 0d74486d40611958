//! The Kisi adapter against its simulator over loopback HTTP, and the simulator against
//! the examples of Kisi's public docs.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use lockstep_domain::{
    DeviceRef, DomainError, KeyCredentialKind, SystemClock, ValidityWindow, VendorRef,
};
use lockstep_vendors::kisi::simulator::SIM_API_KEY;
use lockstep_vendors::kisi::wire::{self, CreateRoleAssignmentRequest, RoleAssignment};
use lockstep_vendors::kisi::{
    KisiAdapter, KisiConfig, KisiSimulator, RunningSimulator, Secret, SimFaults, SimHandle,
};
use lockstep_vendors::{IssueRequest, LockPort, VendorEntry, VendorError};

/// The group of the docs' example (`web.kisi.io/organization/3289/groups/45274`).
const GROUP: i64 = 45274;
const LOCK: i64 = 9021;

struct KisiEnv {
    sim: RunningSimulator,
    handle: SimHandle,
    adapter: KisiAdapter,
}

fn kisi_spawn() -> KisiEnv {
    kisi_spawn_with(|_| {})
}

fn kisi_spawn_with(tweak: impl FnOnce(&mut KisiConfig)) -> KisiEnv {
    let sim = KisiSimulator::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("simulator binds on loopback");
    let handle = sim.handle();
    handle.add_group_lock(GROUP, LOCK);
    let mut config = sim.default_adapter_config();
    tweak(&mut config);
    let adapter = KisiAdapter::new(config, Arc::new(SystemClock)).expect("adapter builds");
    KisiEnv {
        sim,
        handle,
        adapter,
    }
}

fn kisi_device() -> DeviceRef {
    DeviceRef::new(format!("{GROUP}:{LOCK}"))
}

/// A stay from tomorrow, whole seconds.
fn kisi_window() -> ValidityWindow {
    let from: DateTime<Utc> = (lockstep_domain::Clock::now(&SystemClock)
        + chrono::Duration::days(1))
    .duration_trunc(chrono::Duration::seconds(1))
    .expect("truncation to seconds is in range");
    ValidityWindow::new(from, from + chrono::Duration::days(3)).expect("from < until")
}

fn kisi_request(label: &str) -> IssueRequest {
    IssueRequest {
        device: kisi_device(),
        kind: KeyCredentialKind::MobileApp,
        label: label.to_owned(),
        pin: None,
        card_number: None,
        validity: kisi_window(),
    }
}

/// Asserts that nothing secret shows in any rendering of `err`.
fn kisi_assert_redacted(err: &VendorError, vendor_ref: Option<&VendorRef>, extra: &[&str]) {
    let mut forbidden: Vec<String> = vec![SIM_API_KEY.to_owned()];
    forbidden.extend(vendor_ref.map(|r| r.expose().to_owned()));
    forbidden.extend(extra.iter().map(|s| (*s).to_owned()));
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
async fn kisi_issued_key_is_listed_with_its_window() -> anyhow::Result<()> {
    let env = kisi_spawn();
    let req = kisi_request("key_01HKISSUE");
    let vref = env.adapter.issue(&req).await?;

    let entries = env.adapter.list(&kisi_device()).await?;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.vendor_ref, vref);
    assert_eq!(e.label, req.label);
    assert_eq!(e.valid_from, req.validity.from());
    assert_eq!(e.valid_until, req.validity.until());

    let at_sim = env.handle.role_assignments(GROUP);
    assert_eq!(at_sim.len(), 1);
    assert_eq!(at_sim[0].id.to_string(), vref.expose());
    assert_eq!(at_sim[0].role_id, "group_basic");
    assert!(!at_sim[0].notify);
    assert_eq!(at_sim[0].valid_from, Some(req.validity.from()));
    let users = env.handle.users();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].name, req.label);
    assert_eq!(
        users[0].email, "key_01hkissue@kisi-guests.lockstep.invalid",
        "derived from the label, no guest data"
    );
    assert_eq!(env.handle.create_call_count(), 1);
    Ok(())
}

#[tokio::test]
async fn kisi_find_by_label_returns_the_issued_ref_and_none_when_absent() -> anyhow::Result<()> {
    let env = kisi_spawn();
    let req = kisi_request("key_01HKFIND");
    assert!(env.adapter.find(&req).await?.is_none());
    let vref = env.adapter.issue(&req).await?;
    assert_eq!(env.adapter.find(&req).await?, Some(vref.clone()));
    assert!(env
        .adapter
        .find(&kisi_request("key_01HKOTHER"))
        .await?
        .is_none());
    // Same label on another group: not found there.
    env.handle.add_group_lock(777, 778);
    let mut elsewhere = req.clone();
    elsewhere.device = DeviceRef::new("777:778");
    assert!(env.adapter.find(&elsewhere).await?.is_none());
    // A second issue for another device reuses the label's user.
    let vref2 = env.adapter.issue(&elsewhere).await?;
    assert_ne!(vref2, vref);
    assert_eq!(env.handle.users().len(), 1);
    Ok(())
}

#[tokio::test]
async fn kisi_update_moves_the_window_and_keeps_the_assignment() -> anyhow::Result<()> {
    let env = kisi_spawn();
    let mut req = kisi_request("key_01HKUPDATE");
    let vref = env.adapter.issue(&req).await?;
    let longer = ValidityWindow::new(
        req.validity.from() - chrono::Duration::days(1),
        req.validity.until() + chrono::Duration::days(2),
    )?;
    req.validity = longer;
    env.adapter.update(&req, &vref).await?;

    let entries = env.adapter.list(&kisi_device()).await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].vendor_ref, vref, "same object at the vendor");
    assert_eq!(entries[0].label, req.label);
    assert_eq!(entries[0].valid_from, longer.from());
    assert_eq!(entries[0].valid_until, longer.until());
    assert_eq!(env.handle.update_call_count(), 1);
    assert_eq!(env.handle.create_call_count(), 1);
    assert_eq!(env.adapter.find(&req).await?, Some(vref));
    Ok(())
}

#[tokio::test]
async fn kisi_update_of_a_deleted_assignment_is_not_found() -> anyhow::Result<()> {
    let env = kisi_spawn();
    let req = kisi_request("key_01HKUPDGONE");
    let vref = env.adapter.issue(&req).await?;
    env.adapter.revoke(&kisi_device(), &vref).await?;
    let err = env
        .adapter
        .update(&req, &vref)
        .await
        .expect_err("nothing to change");
    assert_eq!(err, VendorError::NotFound);
    assert!(!err.is_vendor_unwell() && !err.is_retryable());
    kisi_assert_redacted(&err, Some(&vref), &[]);
    Ok(())
}

#[tokio::test]
async fn kisi_revoke_removes_the_assignment_and_a_second_revoke_is_ok() -> anyhow::Result<()> {
    let env = kisi_spawn();
    let req = kisi_request("key_01HKREVOKE");
    let vref = env.adapter.issue(&req).await?;
    env.adapter.revoke(&kisi_device(), &vref).await?;
    assert!(env.adapter.list(&kisi_device()).await?.is_empty());
    assert!(env.handle.role_assignments(GROUP).is_empty());
    assert!(env.adapter.find(&req).await?.is_none());
    env.adapter.revoke(&kisi_device(), &vref).await?;
    assert_eq!(env.handle.delete_call_count(), 1);
    Ok(())
}

#[tokio::test]
async fn kisi_lost_create_response_is_found_afterwards_exactly_once() -> anyhow::Result<()> {
    let env = kisi_spawn();
    env.handle.update_faults(|f| f.lose_response_rate = 1.0);
    let req = kisi_request("key_01HKLOST");
    let err = env.adapter.issue(&req).await.expect_err("response lost");
    assert!(err.is_vendor_unwell() && err.is_retryable(), "{err:?}");
    kisi_assert_redacted(&err, None, &[]);
    assert_eq!(env.handle.counters().lost_responses, 1);
    env.handle.update_faults(|f| f.lose_response_rate = 0.0);

    // Reconcile before retry: the vendor did act.
    let found = env
        .adapter
        .find(&req)
        .await?
        .expect("the create was applied");
    let at_sim = env.handle.role_assignments(GROUP);
    assert_eq!(at_sim.len(), 1);
    assert_eq!(at_sim[0].id.to_string(), found.expose());
    assert_eq!(env.handle.create_call_count(), 1);
    Ok(())
}

#[tokio::test]
async fn kisi_outage_is_unavailable_and_counts_against_the_vendor() {
    let env = kisi_spawn();
    env.handle.update_faults(|f| f.outage = true);
    let err = env
        .adapter
        .issue(&kisi_request("key_01HKOUT"))
        .await
        .expect_err("outage");
    assert!(matches!(err, VendorError::Unavailable { .. }), "{err:?}");
    assert!(err.is_vendor_unwell() && err.is_retryable());
    assert_eq!(err.to_domain_issue(), DomainError::VendorUnreachable);
    kisi_assert_redacted(&err, None, &[]);
    assert!(env.adapter.health().await.is_err());
    env.handle.update_faults(|f| f.outage = false);
    assert!(env.adapter.health().await.is_ok());
    assert!(env.handle.role_assignments(GROUP).is_empty());
}

#[tokio::test]
async fn kisi_error_rate_one_answers_500_as_unavailable() {
    let env = kisi_spawn();
    env.handle.update_faults(|f| f.error_rate = 1.0);
    let err = env.adapter.health().await.expect_err("500");
    assert_eq!(
        err,
        VendorError::Unavailable {
            detail: "http status 500".into()
        }
    );
    assert!(env.handle.counters().rejected_by_faults >= 1);
}

#[tokio::test]
async fn kisi_rate_limit_is_rate_limited_with_retry_after() {
    let env = kisi_spawn();
    env.handle.update_faults(|f| f.rate_limit_per_sec = Some(0));
    let err = env
        .adapter
        .issue(&kisi_request("key_01HKRL"))
        .await
        .expect_err("429");
    assert_eq!(
        err,
        VendorError::RateLimited {
            retry_after: Some(Duration::from_secs(1))
        }
    );
    assert!(err.is_vendor_unwell());
    kisi_assert_redacted(&err, None, &[]);
}

#[tokio::test]
async fn kisi_wrong_api_key_is_an_auth_error() {
    let env = kisi_spawn_with(|c| c.api_key = Secret::new("wrong-kisi-key-value"));
    let err = env
        .adapter
        .issue(&kisi_request("key_01HKAUTH"))
        .await
        .expect_err("auth");
    assert!(matches!(err, VendorError::Auth { .. }), "{err:?}");
    assert!(!err.is_vendor_unwell() && !err.is_retryable());
    kisi_assert_redacted(&err, None, &["wrong-kisi-key-value"]);
    let err = env.adapter.health().await.expect_err("auth");
    assert!(matches!(err, VendorError::Auth { .. }), "{err:?}");
    assert!(env.handle.counters().unauthorized >= 2);
    assert!(!format!("{:?}", env.adapter).contains("wrong-kisi-key-value"));
}

#[tokio::test]
async fn kisi_slow_vendor_times_out_as_unavailable() {
    let env = kisi_spawn_with(|c| c.call_timeout = Duration::from_millis(300));
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
async fn kisi_refuses_other_kinds_bad_devices_and_foreign_locks() {
    let env = kisi_spawn();
    for kind in [
        KeyCredentialKind::PinCode,
        KeyCredentialKind::RfidCard,
        KeyCredentialKind::QrCode,
        KeyCredentialKind::NfcTag,
    ] {
        let mut req = kisi_request("key_01HKKIND");
        req.kind = kind;
        let err = env.adapter.issue(&req).await.expect_err("unsupported");
        assert!(
            matches!(&err, VendorError::Refused { code, .. } if code == "unsupported_kind"),
            "{err:?}"
        );
        let err = env
            .adapter
            .update(&req, &VendorRef::new("910001"))
            .await
            .expect_err("unsupported");
        assert!(matches!(&err, VendorError::Refused { code, .. } if code == "unsupported_kind"));
    }
    let mut req = kisi_request("key_01HKBADDEV");
    req.device = DeviceRef::new("9021");
    let err = env.adapter.issue(&req).await.expect_err("bad device");
    assert!(matches!(&err, VendorError::Refused { code, .. } if code == "invalid_device"));
    // The group exists but does not grant that lock.
    req.device = DeviceRef::new(format!("{GROUP}:1234"));
    let err = env.adapter.issue(&req).await.expect_err("foreign lock");
    assert!(
        matches!(&err, VendorError::Refused { code, .. } if code == "lock_not_in_group"),
        "{err:?}"
    );
    assert!(!err.is_vendor_unwell());
    let bad_ref = VendorRef::new("not-a-number-ra");
    let err = env
        .adapter
        .revoke(&kisi_device(), &bad_ref)
        .await
        .expect_err("bad ref");
    kisi_assert_redacted(&err, Some(&bad_ref), &[]);
    assert_eq!(env.handle.create_call_count(), 0);
    assert!(env.handle.users().is_empty());
}

#[tokio::test]
async fn kisi_list_shows_only_what_lockstep_created() -> anyhow::Result<()> {
    let env = kisi_spawn();
    // A member of the coworking space, added by its staff.
    env.handle
        .seed_member(GROUP, "ada@space.example", "Ada", None, None)
        .expect("group exists");
    let vref = env.adapter.issue(&kisi_request("key_01HKMINE")).await?;
    let entries = env.adapter.list(&kisi_device()).await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].vendor_ref, vref);
    assert_eq!(env.handle.role_assignments(GROUP).len(), 2);
    Ok(())
}

#[tokio::test]
async fn kisi_list_pages_through_every_page() -> anyhow::Result<()> {
    let env = kisi_spawn();
    let w = kisi_window();
    for i in 0..260 {
        env.handle.seed_member(
            GROUP,
            &format!("seed{i}@kisi-guests.lockstep.invalid"),
            &format!("seed{i}"),
            Some(w.from()),
            Some(w.until()),
        );
    }
    let entries = env.adapter.list(&kisi_device()).await?;
    assert_eq!(entries.len(), 260);
    assert_eq!(env.handle.counters().lists, 2);
    Ok(())
}

#[tokio::test]
async fn kisi_every_error_kind_renders_without_secrets() -> anyhow::Result<()> {
    let env = kisi_spawn();
    let req = kisi_request("key_01HKRED");
    let vref = env.adapter.issue(&req).await?;
    let mut errors = Vec::new();
    env.handle.set_faults(SimFaults {
        outage: true,
        ..SimFaults::default()
    });
    errors.push(env.adapter.issue(&req).await.expect_err("outage"));
    errors.push(env.adapter.update(&req, &vref).await.expect_err("outage"));
    env.handle.set_faults(SimFaults {
        rate_limit_per_sec: Some(0),
        ..SimFaults::default()
    });
    errors.push(
        env.adapter
            .revoke(&kisi_device(), &vref)
            .await
            .expect_err("429"),
    );
    env.handle.set_faults(SimFaults {
        lose_response_rate: 1.0,
        ..SimFaults::default()
    });
    errors.push(env.adapter.update(&req, &vref).await.expect_err("lost"));
    env.handle.set_faults(SimFaults::default());
    let mut other = req.clone();
    other.device = DeviceRef::new("404:404");
    errors.push(env.adapter.issue(&other).await.expect_err("refused"));
    env.adapter.revoke(&kisi_device(), &vref).await?;
    errors.push(env.adapter.update(&req, &vref).await.expect_err("gone"));
    let bad = kisi_spawn_with(|c| c.api_key = Secret::new("nope-key"));
    errors.push(bad.adapter.issue(&req).await.expect_err("auth"));

    let kinds: std::collections::BTreeSet<&str> =
        errors.iter().map(VendorError::metric_label).collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    for e in &errors {
        kisi_assert_redacted(e, Some(&vref), &["nope-key"]);
    }
    Ok(())
}

#[tokio::test]
async fn kisi_unreachable_vendor_is_unavailable() {
    let base = {
        let env = kisi_spawn();
        let base = env.sim.base_url();
        env.sim.stop().await.expect("stops");
        base
    };
    let mut cfg = KisiConfig::new(base, Secret::new("k"));
    cfg.call_timeout = Duration::from_secs(2);
    let adapter = KisiAdapter::new(cfg, Arc::new(SystemClock)).expect("builds");
    let err = adapter.health().await.expect_err("nothing listens");
    assert!(err.is_vendor_unwell(), "{err:?}");
}

/// The request of docs.kisi.io "Assign access rights" (group level), verbatim except for
/// the ids and `role_id`, which the docs leave as placeholders (`0`, `"string"`).
const DOCS_CREATE_REQUEST: &str = r#"{
  "role_assignment": {
    "user_id": 0,
    "role_id": "string",
    "group_id": 0,
    "valid_from": "2023-05-24T14:15:22Z",
    "valid_until": "2023-05-25T14:15:22Z"
  }
}"#;

/// The response excerpt of the same guide.
const DOCS_CREATE_RESPONSE: &str = r#"{
  "id": 0,
  "role_id": "string",
  "type": "group",
  "group_id": 0
}"#;

/// The list of docs.kisi.io "Remove access rights".
const DOCS_LIST_RESPONSE: &str = r#"[
  { "id": 0, "user_id": 0, "role_id": "string" },
  { "id": 0, "user_id": 0, "role_id": "string" }
]"#;

/// The error example of Kisi's API description.
const DOCS_ERROR: &str = r#"{"code": "afc516", "error": "Wrong email address or password."}"#;

#[test]
fn kisi_documented_bodies_parse_through_the_wire_types() -> anyhow::Result<()> {
    let req: CreateRoleAssignmentRequest = serde_json::from_str(DOCS_CREATE_REQUEST)?;
    assert_eq!(req.role_assignment.user_id, Some(0));
    assert_eq!(req.role_assignment.group_id, Some(0));
    assert_eq!(
        req.role_assignment.valid_from.as_deref(),
        Some("2023-05-24T14:15:22Z")
    );
    let resp: RoleAssignment = serde_json::from_str(DOCS_CREATE_RESPONSE)?;
    assert_eq!(resp.id, 0);
    assert_eq!(resp.group(), Some(0));
    assert_eq!(resp.kind.as_deref(), Some("group"));
    let list: Vec<RoleAssignment> = serde_json::from_str(DOCS_LIST_RESPONSE)?;
    assert_eq!(list.len(), 2);
    let entry = VendorEntry::try_from(list[0].clone())?;
    assert_eq!(
        entry.valid_until,
        DateTime::<Utc>::MAX_UTC,
        "no end: open window"
    );
    let err: wire::ErrorBody = serde_json::from_str(DOCS_ERROR)?;
    assert_eq!(err.code.as_deref(), Some("afc516"));
    Ok(())
}

#[tokio::test]
async fn kisi_simulator_accepts_the_documented_create_request() -> anyhow::Result<()> {
    let env = kisi_spawn();
    // The docs' placeholders filled with a real user, group and role.
    env.handle
        .seed_member(GROUP, "doc@space.example", "Doc", None, None)
        .expect("group exists");
    let user_id = env.handle.users()[0].id;
    let mut body: serde_json::Value = serde_json::from_str(DOCS_CREATE_REQUEST)?;
    body["role_assignment"]["user_id"] = user_id.into();
    body["role_assignment"]["group_id"] = GROUP.into();
    body["role_assignment"]["role_id"] = "group_basic".into();

    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/role_assignments", env.sim.base_url()))
        .header("Authorization", format!("KISI-LOGIN {SIM_API_KEY}"))
        .json(&body)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let created: RoleAssignment = resp.json().await?;
    assert_eq!(created.group(), Some(GROUP));
    assert_eq!(created.kind.as_deref(), Some("group"));
    assert_eq!(created.role_id.as_deref(), Some("group_basic"));
    let at_sim = env
        .handle
        .role_assignments(GROUP)
        .into_iter()
        .find(|a| a.id == created.id)
        .expect("stored");
    let from = wire::from_kisi_time("2023-05-24T14:15:22Z", "valid_from")?;
    assert_eq!(at_sim.valid_from, Some(from));

    // The placeholder role of the docs is refused as Kisi would (422), without a key: 401.
    body["role_assignment"]["role_id"] = "string".into();
    let resp = http
        .post(format!("{}/role_assignments", env.sim.base_url()))
        .header("Authorization", format!("KISI-LOGIN {SIM_API_KEY}"))
        .json(&body)
        .send()
        .await?;
    assert_eq!(resp.status(), 422);
    let errors: wire::ValidationErrors = resp.json().await?;
    assert!(errors.errors.contains_key("role_id"));
    let resp = http
        .get(format!("{}/role_assignments", env.sim.base_url()))
        .send()
        .await?;
    assert_eq!(resp.status(), 401);
    let err: wire::ErrorBody = resp.json().await?;
    assert_eq!(err.code.as_deref(), Some("000401"));
    Ok(())
}

#[tokio::test]
async fn kisi_simulator_faults_are_settable_over_http() -> anyhow::Result<()> {
    let env = kisi_spawn();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/_sim/faults", env.sim.base_url()))
        .json(&serde_json::json!({"outage": true}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert!(env.handle.faults().outage);
    assert!(env.adapter.health().await.is_err());
    Ok(())
}

#[test]
fn kisi_adapter_says_what_it_can_do_and_shows_no_secret() {
    let env = kisi_spawn();
    assert!(!format!("{:?}", env.adapter).contains(SIM_API_KEY));
    assert_eq!(env.adapter.vendor(), lockstep_domain::VendorCode::Kisi);
    let caps = env.adapter.capabilities();
    assert!(caps.mobile_key && caps.remote_issue && caps.remote_revoke);
    assert!(!caps.pin && !caps.card_encoding && !caps.qr && !caps.nfc);
    assert!(!caps.offline_issuance && !caps.scope_floors && !caps.scope_areas);
}

/// Spec 003 §2 health probe: `GET /locks/{id}`'s `online`; Kisi reports no battery,
/// firmware or clock; an unknown lock is `NotFound`; an outage is the vendor unwell.
#[tokio::test]
async fn kisi_probe_reads_the_lock_controllers_connection() -> anyhow::Result<()> {
    let env = kisi_spawn();
    let p = env.adapter.probe(&kisi_device()).await?;
    assert!(p.online);
    assert_eq!(
        (p.battery_percent, p.firmware, p.device_time),
        (None, None, None)
    );
    env.handle.set_lock_online(LOCK, false);
    assert!(!env.adapter.probe(&kisi_device()).await?.online);
    env.handle.set_lock_online(LOCK, true);
    assert!(env.adapter.probe(&kisi_device()).await?.online);
    assert_eq!(
        env.adapter
            .probe(&DeviceRef::new(format!("{GROUP}:777")))
            .await,
        Err(VendorError::NotFound)
    );
    env.handle.update_faults(|f| f.outage = true);
    let down = env.adapter.probe(&kisi_device()).await;
    assert!(
        matches!(down, Err(ref e) if e.is_vendor_unwell()),
        "{down:?}"
    );
    Ok(())
}

/// Kisi in the `LockPort` contract (`crate::contract`): mobile keys (group role
/// assignments) on devices `45274:9021`, `45275:9022`, ... (one group per lock, since an
/// assignment opens every lock of its group). Kisi calls with an API key: it has no token
/// to expire or refresh.
pub struct KisiFixture;

impl crate::contract::Fixture for KisiFixture {
    type Handle = SimHandle;
    type Config = KisiConfig;
    type Adapter = KisiAdapter;

    const VENDOR: lockstep_domain::VendorCode = lockstep_domain::VendorCode::Kisi;
    const KIND: KeyCredentialKind = KeyCredentialKind::MobileApp;
    const CAPABILITIES: lockstep_vendors::LockCapabilities = lockstep_vendors::LockCapabilities {
        mobile_key: true,
        card_encoding: false,
        pin: false,
        qr: false,
        nfc: false,
        remote_revoke: true,
        remote_issue: true,
        offline_issuance: false,
        scope_floors: false,
        scope_areas: false,
    };
    const REFUSED_KINDS: &'static [KeyCredentialKind] = &[
        KeyCredentialKind::PinCode,
        KeyCredentialKind::RfidCard,
        KeyCredentialKind::QrCode,
        KeyCredentialKind::NfcTag,
    ];
    const SECRETS: &'static [&'static str] = &[SIM_API_KEY];
    const SINGLE_WRITE_ISSUE: bool = true;
    // The group exists but does not grant that lock.
    const FIND_IS_PER_DEVICE: bool = true;
    const UNKNOWN_DEVICE_CODE: &'static str = "lock_not_in_group";
    const TOKEN_LIFETIME_SECS: Option<i64> = None;
    // Kisi reports no battery, firmware or clock.
    const HEALTHY_PROBE: crate::contract::ProbeReading = crate::contract::ProbeReading {
        battery_percent: None,
        firmware: None,
        reads_clock: false,
    };

    fn start() -> RunningSimulator {
        let sim = KisiSimulator::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("simulator binds on loopback");
        for i in 0..crate::contract::DEVICES {
            sim.handle()
                .add_group_lock(GROUP + i as i64, LOCK + i as i64);
        }
        sim
    }

    fn config(sim: &RunningSimulator) -> KisiConfig {
        sim.default_adapter_config()
    }

    fn set_call_timeout(config: &mut KisiConfig, timeout: Duration) {
        config.call_timeout = timeout;
    }

    fn bad_credentials() -> crate::contract::BadCredentials<KisiConfig> {
        vec![("wrong-kisi-key-value", |c| {
            c.api_key = Secret::new("wrong-kisi-key-value")
        })]
    }

    fn build(config: KisiConfig, clock: Arc<dyn lockstep_domain::Clock>) -> KisiAdapter {
        KisiAdapter::new(config, clock).expect("adapter builds")
    }

    fn device(i: usize) -> DeviceRef {
        DeviceRef::new(format!("{}:{}", GROUP + i as i64, LOCK + i as i64))
    }

    fn unknown_device() -> DeviceRef {
        DeviceRef::new(format!("{GROUP}:777"))
    }

    fn malformed_ref() -> VendorRef {
        VendorRef::new("not-a-number-ra")
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
            created: c.creates,
            updated: c.updates,
            deleted: c.deletes,
            lost_responses: c.lost_responses,
            rejected_by_faults: c.rejected_by_faults,
        }
    }

    fn tokens_issued(_handle: &SimHandle) -> Option<u64> {
        None
    }

    fn expire_tokens(_handle: &SimHandle) {}

    fn set_online(handle: &SimHandle, device: usize, online: bool) {
        handle.set_lock_online(LOCK + device as i64, online);
    }

    /// A `group_basic` assignment that sends no invitation, for a user named by the label
    /// whose e-mail is derived from it (no guest data).
    fn check_stored(handle: &SimHandle, req: &IssueRequest, vref: &VendorRef) {
        let group: i64 = req
            .device
            .expose()
            .split(':')
            .next()
            .and_then(|g| g.parse().ok())
            .expect("a group id");
        let assignment = handle
            .role_assignments(group)
            .into_iter()
            .find(|a| a.id.to_string() == vref.expose())
            .expect("the assignment");
        assert_eq!(assignment.role_id, "group_basic");
        assert!(!assignment.notify);
        let user = handle
            .users()
            .into_iter()
            .find(|u| u.id == assignment.user_id)
            .expect("its user");
        assert_eq!(user.name, req.label);
        assert_eq!(
            user.email,
            format!(
                "{}@kisi-guests.lockstep.invalid",
                req.label.to_ascii_lowercase()
            )
        );
    }
}
