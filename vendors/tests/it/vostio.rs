//! The Vostio adapter against its simulator over loopback HTTP, and the reconstructed API
//! examples through the wire types and the simulator.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use lockstep_domain::{
    Clock, DeviceRef, DomainError, KeyCredentialKind, ManualClock, Pin, SystemClock,
    ValidityWindow, VendorCode, VendorRef,
};
use lockstep_vendors::vostio::simulator::{SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_ENVIRONMENT};
use lockstep_vendors::vostio::wire::{CreateKeyRequest, KeyRecord, ListKeysResponse};
use lockstep_vendors::vostio::{
    RunningSimulator, Secret, SimClient, SimFaults, SimHandle, VostioAdapter, VostioConfig,
    VostioSimulator,
};
use lockstep_vendors::{IssueRequest, LockPort, VendorEntry, VendorError};

/// The door of the examples (room 1204).
const DOOR: &str = "door-1204";

struct Env {
    sim: RunningSimulator,
    handle: SimHandle,
    adapter: VostioAdapter,
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn spawn() -> Env {
    spawn_with(|_| {}, Arc::new(SystemClock))
}

fn spawn_with(tweak: impl FnOnce(&mut VostioConfig), clock: Arc<dyn Clock>) -> Env {
    let sim = VostioSimulator::start(loopback()).expect("simulator binds on loopback");
    let handle = sim.handle();
    handle.add_door(SIM_ENVIRONMENT, DOOR);
    let mut config = sim.default_adapter_config();
    tweak(&mut config);
    let adapter = VostioAdapter::new(config, clock).expect("adapter builds");
    Env {
        sim,
        handle,
        adapter,
    }
}

fn device() -> DeviceRef {
    DeviceRef::new(DOOR)
}

/// A stay from tomorrow, whole seconds.
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

fn request(label: &str, kind: KeyCredentialKind) -> IssueRequest {
    IssueRequest {
        device: device(),
        kind,
        label: label.to_owned(),
        pin: None,
        card_number: None,
        validity: window(),
    }
}

fn mobile(label: &str) -> IssueRequest {
    request(label, KeyCredentialKind::MobileApp)
}

/// Asserts that nothing secret shows in any rendering of `err`: the client id and
/// secret, a PIN, a vendorRef.
fn assert_redacted(err: &VendorError, pin: Option<&str>, vendor_ref: Option<&VendorRef>) {
    let mut forbidden: Vec<String> = vec![SIM_CLIENT_SECRET.to_owned(), SIM_CLIENT_ID.to_owned()];
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
async fn issued_mobile_key_is_listed_with_its_window() -> anyhow::Result<()> {
    let env = spawn();
    let req = mobile("key_01HVISSUE:door-1204");
    let vref = env.adapter.issue(&req).await?;

    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.vendor_ref, vref);
    assert_eq!(e.label, req.label);
    assert_eq!(e.valid_from, req.validity.from());
    assert_eq!(e.valid_until, req.validity.until());

    let at_sim = env.handle.keys(SIM_ENVIRONMENT);
    assert_eq!(at_sim.len(), 1);
    assert_eq!(at_sim[0].id, vref.expose());
    assert_eq!(at_sim[0].key_type, "mobileKey");
    assert_eq!(at_sim[0].status, "active");
    assert_eq!(at_sim[0].door_ids, vec![DOOR.to_owned()]);
    assert_eq!(
        at_sim[0].key_holder_external_id.as_deref(),
        Some(req.label.as_str())
    );
    assert_eq!(env.handle.create_call_count(), 1);
    Ok(())
}

#[tokio::test]
async fn card_key_is_created_pending_encoding() -> anyhow::Result<()> {
    let env = spawn();
    let req = request("key_01HVCARD:door-1204", KeyCredentialKind::RfidCard);
    let vref = env.adapter.issue(&req).await?;
    let at_sim = env.handle.keys_on_door(SIM_ENVIRONMENT, DOOR);
    assert_eq!(at_sim.len(), 1);
    assert_eq!(at_sim[0].id, vref.expose());
    assert_eq!(at_sim[0].key_type, "card");
    assert_eq!(at_sim[0].status, "pendingEncoding");
    Ok(())
}

#[tokio::test]
async fn find_by_label_returns_the_issued_ref_and_none_when_absent() -> anyhow::Result<()> {
    let env = spawn();
    let req = mobile("key_01HVFIND:door-1204");
    assert!(env.adapter.find(&req).await?.is_none());
    let vref = env.adapter.issue(&req).await?;
    env.adapter
        .issue(&mobile("key_01HVOTHER:door-1204"))
        .await?;
    assert_eq!(env.adapter.find(&req).await?, Some(vref));
    assert!(env
        .adapter
        .find(&mobile("key_01HVABSENT:door-1204"))
        .await?
        .is_none());
    // Same label on another door is not ours to find.
    env.handle.add_door(SIM_ENVIRONMENT, "door-1205");
    let mut elsewhere = req.clone();
    elsewhere.device = DeviceRef::new("door-1205");
    assert!(env.adapter.find(&elsewhere).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn update_moves_the_window_and_keeps_the_key() -> anyhow::Result<()> {
    let env = spawn();
    let mut req = mobile("key_01HVUPDATE:door-1204");
    let vref = env.adapter.issue(&req).await?;
    let longer = ValidityWindow::new(
        req.validity.from() - chrono::Duration::days(1),
        req.validity.until() + chrono::Duration::days(2),
    )?;
    req.validity = longer;
    env.adapter.update(&req, &vref).await?;

    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].vendor_ref, vref, "same key at the vendor");
    assert_eq!(entries[0].label, req.label);
    assert_eq!(entries[0].valid_from, longer.from());
    assert_eq!(entries[0].valid_until, longer.until());
    let c = env.handle.counters();
    assert_eq!((c.creates, c.updates), (1, 1));
    assert_eq!(env.adapter.find(&req).await?, Some(vref));
    Ok(())
}

#[tokio::test]
async fn update_of_a_deleted_key_is_not_found() -> anyhow::Result<()> {
    let env = spawn();
    let mut req = mobile("key_01HVUPDGONE:door-1204");
    let vref = env.adapter.issue(&req).await?;
    env.adapter.revoke(&device(), &vref).await?;
    req.validity = shifted(&req.validity, 1);
    let err = env.adapter.update(&req, &vref).await.expect_err("gone");
    assert_eq!(err, VendorError::NotFound);
    assert!(!err.is_vendor_unwell() && !err.is_retryable());
    assert_redacted(&err, None, Some(&vref));
    assert_eq!(env.handle.counters().updates, 0);
    Ok(())
}

#[tokio::test]
async fn lost_update_response_then_retry_sets_the_window_once() -> anyhow::Result<()> {
    let env = spawn();
    let mut req = mobile("key_01HVUPDLOST:door-1204");
    let vref = env.adapter.issue(&req).await?;
    req.validity = shifted(&req.validity, 2);
    env.handle.update_faults(|f| f.lose_response_rate = 1.0);
    let err = env.adapter.update(&req, &vref).await.expect_err("lost");
    assert!(err.is_vendor_unwell() && err.is_retryable(), "{err:?}");
    assert_redacted(&err, None, Some(&vref));
    env.handle.update_faults(|f| f.lose_response_rate = 0.0);
    env.adapter.update(&req, &vref).await?;
    let keys = env.handle.keys(SIM_ENVIRONMENT);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].valid_from, req.validity.from());
    assert_eq!(keys[0].valid_to, Some(req.validity.until()));
    Ok(())
}

#[tokio::test]
async fn revoke_removes_the_key_and_a_second_revoke_is_ok() -> anyhow::Result<()> {
    let env = spawn();
    let vref = env
        .adapter
        .issue(&mobile("key_01HVREVOKE:door-1204"))
        .await?;
    env.adapter.revoke(&device(), &vref).await?;
    assert!(env.adapter.list(&device()).await?.is_empty());
    assert!(env.handle.keys(SIM_ENVIRONMENT).is_empty());
    env.adapter.revoke(&device(), &vref).await?;
    assert_eq!(env.handle.counters().deletes, 1);
    Ok(())
}

#[tokio::test]
async fn lost_delete_response_then_retry_is_ok() -> anyhow::Result<()> {
    let env = spawn();
    let vref = env.adapter.issue(&mobile("key_01HVLD:door-1204")).await?;
    env.handle.update_faults(|f| f.lose_response_rate = 1.0);
    let err = env
        .adapter
        .revoke(&device(), &vref)
        .await
        .expect_err("lost");
    assert!(err.is_vendor_unwell(), "{err:?}");
    assert_redacted(&err, None, Some(&vref));
    env.handle.update_faults(|f| f.lose_response_rate = 0.0);
    env.adapter.revoke(&device(), &vref).await?;
    assert!(env.handle.keys(SIM_ENVIRONMENT).is_empty());
    Ok(())
}

#[tokio::test]
async fn lost_create_response_is_found_afterwards_exactly_once() -> anyhow::Result<()> {
    let env = spawn();
    env.adapter.health().await?;
    env.handle.update_faults(|f| f.lose_response_rate = 1.0);
    let req = mobile("key_01HVLOST:door-1204");
    let err = env.adapter.issue(&req).await.expect_err("response lost");
    assert!(err.is_vendor_unwell() && err.is_retryable(), "{err:?}");
    assert_redacted(&err, None, None);
    env.handle.update_faults(|f| f.lose_response_rate = 0.0);

    // Reconcile before retry: the vendor did act.
    let found = env
        .adapter
        .find(&req)
        .await?
        .expect("the create was applied");
    let at_sim = env.handle.keys(SIM_ENVIRONMENT);
    assert_eq!(at_sim.len(), 1);
    assert_eq!(at_sim[0].id, found.expose());
    assert_eq!(env.handle.create_call_count(), 1);
    assert_eq!(env.handle.counters().lost_responses, 1);
    Ok(())
}

#[tokio::test]
async fn outage_is_unavailable_and_counts_against_the_vendor() -> anyhow::Result<()> {
    let env = spawn();
    let vref = env.adapter.issue(&mobile("key_01HVOUT0:door-1204")).await?;
    env.handle.update_faults(|f| f.outage = true);
    let err = env
        .adapter
        .issue(&mobile("key_01HVOUT:door-1204"))
        .await
        .expect_err("outage");
    assert!(matches!(err, VendorError::Unavailable { .. }), "{err:?}");
    assert!(err.is_vendor_unwell() && err.is_retryable());
    assert_eq!(err.to_domain_issue(), DomainError::VendorUnreachable);
    assert_redacted(&err, None, None);
    let err = env
        .adapter
        .revoke(&device(), &vref)
        .await
        .expect_err("outage");
    assert!(err.is_vendor_unwell());
    assert_eq!(err.to_domain_revoke(), DomainError::VendorUnreachable);
    assert!(env.adapter.health().await.is_err());
    env.handle.update_faults(|f| f.outage = false);
    env.adapter.health().await?;
    assert_eq!(env.handle.keys(SIM_ENVIRONMENT).len(), 1);
    Ok(())
}

#[tokio::test]
async fn error_rate_one_answers_500_as_unavailable() {
    let env = spawn();
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
async fn rate_limit_is_rate_limited_with_retry_after() -> anyhow::Result<()> {
    let env = spawn();
    env.adapter.health().await?; // token cached before the limit applies
    env.handle.update_faults(|f| f.rate_limit_per_sec = Some(1));
    let mut results = Vec::new();
    for i in 0..3 {
        results.push(
            env.adapter
                .issue(&mobile(&format!("key_01HVRL{i}:door-1204")))
                .await,
        );
    }
    let limited: Vec<&VendorError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!limited.is_empty(), "three calls in a second exceed 1/s");
    for err in limited {
        assert_eq!(
            *err,
            VendorError::RateLimited {
                retry_after: Some(Duration::from_secs(1))
            }
        );
        assert!(err.is_vendor_unwell());
        assert_redacted(err, None, None);
    }
    Ok(())
}

#[tokio::test]
async fn wrong_client_secret_is_an_auth_error() {
    let env = spawn_with(
        |c| c.client_secret = Secret::new("wrong-secret-value"),
        Arc::new(SystemClock),
    );
    let err = env
        .adapter
        .issue(&mobile("key_01HVAUTH:door-1204"))
        .await
        .expect_err("auth");
    assert!(matches!(err, VendorError::Auth { .. }), "{err:?}");
    assert!(!err.is_vendor_unwell() && !err.is_retryable());
    assert_redacted(&err, None, None);
    assert!(!format!("{err:?}").contains("wrong-secret-value"));
    assert_eq!(env.handle.token_call_count(), 0);
    assert_eq!(env.handle.create_call_count(), 0);
}

#[tokio::test]
async fn environment_not_granted_to_the_client_is_an_auth_error() {
    let env = spawn_with(
        |c| c.environment_ref = "env-of-another-hotel".into(),
        Arc::new(SystemClock),
    );
    let err = env.adapter.health().await.expect_err("forbidden");
    assert!(matches!(err, VendorError::Auth { .. }), "{err:?}");
    assert!(!err.is_vendor_unwell());

    // Granted but unknown: refused, not "gone".
    env.handle.add_client(SimClient::new(
        "other-client",
        "other-secret",
        vec!["env-missing".into()],
    ));
    let mut cfg = env.sim.default_adapter_config();
    cfg.client_id = Secret::new("other-client");
    cfg.client_secret = Secret::new("other-secret");
    cfg.environment_ref = "env-missing".into();
    let adapter = VostioAdapter::new(cfg, Arc::new(SystemClock)).expect("builds");
    let err = adapter
        .revoke(&device(), &VendorRef::new("k-0123"))
        .await
        .expect_err("unknown environment");
    assert!(
        matches!(&err, VendorError::Refused { code, .. } if code == "environment_not_found"),
        "{err:?}"
    );
}

#[tokio::test]
async fn expired_token_is_refreshed_transparently() -> anyhow::Result<()> {
    let env = spawn();
    env.adapter.issue(&mobile("key_01HVT1:door-1204")).await?;
    assert_eq!(env.handle.token_call_count(), 1);
    env.handle.expire_all_tokens();
    env.adapter.issue(&mobile("key_01HVT2:door-1204")).await?;
    assert_eq!(env.handle.token_call_count(), 2);
    assert_eq!(env.handle.create_call_count(), 2);
    Ok(())
}

#[tokio::test]
async fn token_is_fetched_again_before_it_expires_on_our_clock() -> anyhow::Result<()> {
    let clock = ManualClock::new(Clock::now(&SystemClock));
    let env = spawn_with(|_| {}, Arc::new(clock.clone()));
    env.adapter.health().await?;
    env.adapter.health().await?;
    assert_eq!(env.handle.token_call_count(), 1, "the token is cached");
    clock.advance(chrono::Duration::seconds(3400));
    env.adapter.health().await?;
    assert_eq!(env.handle.token_call_count(), 2);
    Ok(())
}

#[tokio::test]
async fn pins_and_other_kinds_are_refused_before_any_call() {
    let env = spawn();
    let mut pin = request("key_01HVPIN:door-1204", KeyCredentialKind::PinCode);
    pin.pin = Some(Pin::parse("482913").expect("valid pin"));
    for kind in [
        KeyCredentialKind::PinCode,
        KeyCredentialKind::QrCode,
        KeyCredentialKind::NfcTag,
    ] {
        let mut req = pin.clone();
        req.kind = kind;
        let err = env.adapter.issue(&req).await.expect_err("unsupported");
        assert!(
            matches!(&err, VendorError::Refused { code, .. } if code == "unsupported_kind"),
            "{err:?}"
        );
        assert!(!err.is_vendor_unwell() && !err.is_retryable());
        assert_redacted(&err, Some("482913"), None);
        let err = env
            .adapter
            .update(&req, &VendorRef::new("k-0123"))
            .await
            .expect_err("unsupported");
        assert!(matches!(&err, VendorError::Refused { code, .. } if code == "unsupported_kind"));
    }
    assert_eq!(env.handle.token_call_count(), 0);
    assert!(!env
        .adapter
        .capabilities()
        .supports(KeyCredentialKind::PinCode));
}

#[tokio::test]
async fn unknown_door_and_bad_refs_are_refused() {
    let env = spawn();
    let mut req = mobile("key_01HVNODOOR:door-9999");
    req.device = DeviceRef::new("door-9999");
    let err = env.adapter.issue(&req).await.expect_err("unknown door");
    assert!(
        matches!(&err, VendorError::Refused { code, .. } if code == "lock_not_found"),
        "{err:?}"
    );
    let bad_ref = VendorRef::new("../../environments/env-0001");
    let err = env
        .adapter
        .revoke(&device(), &bad_ref)
        .await
        .expect_err("bad ref");
    assert!(
        matches!(&err, VendorError::Refused { code, .. } if code == "invalid_vendor_ref"),
        "{err:?}"
    );
    assert_redacted(&err, None, Some(&bad_ref));
}

#[tokio::test]
async fn offline_door_is_a_transient_refusal_not_an_unwell_vendor() -> anyhow::Result<()> {
    let env = spawn();
    env.handle.update_faults(|f| f.door_offline = true);
    let err = env
        .adapter
        .issue(&mobile("key_01HVOFF:door-1204"))
        .await
        .expect_err("offline");
    assert!(
        matches!(&err, VendorError::Refused { code, .. } if code == "lock_offline"),
        "{err:?}"
    );
    assert!(err.is_retryable() && !err.is_vendor_unwell());
    env.handle.update_faults(|f| f.door_offline = false);
    env.adapter.issue(&mobile("key_01HVOFF:door-1204")).await?;
    Ok(())
}

#[tokio::test]
async fn list_pages_and_leaves_front_desk_keys_out() -> anyhow::Result<()> {
    let env = spawn();
    let w = window();
    for i in 0..150 {
        env.handle
            .seed_key(
                SIM_ENVIRONMENT,
                DOOR,
                Some(&format!("key_seed{i}:door-1204")),
                w.from(),
                Some(w.until()),
            )
            .expect("door exists");
    }
    // A key made at the front desk in the Vostio portal: no externalId, never ours.
    env.handle
        .seed_key(SIM_ENVIRONMENT, DOOR, None, w.from(), None)
        .expect("door exists");
    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 150);
    assert!(entries.iter().all(|e| e.label.starts_with("key_seed")));
    assert_eq!(env.handle.counters().lists, 2, "two pages of 100");
    Ok(())
}

#[tokio::test]
async fn slow_vendor_times_out_as_unavailable() {
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
async fn unreachable_vendor_is_unavailable() {
    let (api, token) = {
        let env = spawn();
        let urls = (env.sim.cloud_base_url(), env.sim.oauth_token_url());
        env.sim.stop().await.expect("stops");
        urls
    };
    let mut cfg = VostioConfig::new(api, token, Secret::new("c"), Secret::new("s"), "env");
    cfg.call_timeout = Duration::from_secs(2);
    let adapter = VostioAdapter::new(cfg, Arc::new(SystemClock)).expect("builds");
    let err = adapter.health().await.expect_err("nothing listens");
    assert!(err.is_vendor_unwell(), "{err:?}");
}

#[tokio::test]
async fn every_error_kind_renders_without_secrets() -> anyhow::Result<()> {
    let env = spawn();
    let req = mobile("key_01HVRED:door-1204");
    let vref = env.adapter.issue(&req).await?;
    let mut errors = Vec::new();
    env.handle.set_faults(SimFaults {
        outage: true,
        ..SimFaults::default()
    });
    errors.push(env.adapter.issue(&req).await.expect_err("outage"));
    env.handle.set_faults(SimFaults {
        rate_limit_per_sec: Some(0),
        ..SimFaults::default()
    });
    errors.push(env.adapter.revoke(&device(), &vref).await.expect_err("429"));
    env.handle.set_faults(SimFaults {
        lose_response_rate: 1.0,
        ..SimFaults::default()
    });
    errors.push(env.adapter.update(&req, &vref).await.expect_err("lost"));
    env.handle.set_faults(SimFaults::default());
    let mut other = req.clone();
    other.device = DeviceRef::new("door-404");
    errors.push(env.adapter.issue(&other).await.expect_err("refused"));
    env.adapter.revoke(&device(), &vref).await?;
    errors.push(env.adapter.update(&req, &vref).await.expect_err("gone"));
    let bad = spawn_with(
        |c| c.client_secret = Secret::new("nope"),
        Arc::new(SystemClock),
    );
    errors.push(bad.adapter.update(&req, &vref).await.expect_err("auth"));

    let kinds: std::collections::BTreeSet<&str> =
        errors.iter().map(VendorError::metric_label).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        vec![
            "auth",
            "not_found",
            "rate_limited",
            "refused",
            "unavailable"
        ]
    );
    for e in &errors {
        assert_redacted(e, None, Some(&vref));
    }
    Ok(())
}

#[test]
fn adapter_debug_shows_no_secret_and_capabilities_follow_the_spec() {
    let env = spawn();
    let s = format!("{:?}", env.adapter);
    assert!(!s.contains(SIM_CLIENT_SECRET), "{s}");
    assert!(!s.contains(SIM_CLIENT_ID), "{s}");
    assert_eq!(env.adapter.vendor(), VendorCode::AssaAbloy);
    let caps = env.adapter.capabilities();
    // Spec 003 §6.1.
    assert!(caps.mobile_key && caps.card_encoding);
    assert!(caps.remote_issue && caps.remote_revoke);
    assert!(caps.scope_floors && caps.scope_areas);
    assert!(!caps.pin && !caps.qr && !caps.nfc && !caps.offline_issuance);
}

// Reconstructed, not from public docs: Vostio's API reference is partner-only, so these
// are labelled reconstructions of a create-key exchange in the shape the adapter and the
// simulator speak (see `lockstep_vendors::vostio`).

/// `POST /api/v1/environments/env-0001/keys` body (reconstruction).
const CREATE_KEY_REQUEST_EXAMPLE: &str = r#"{
  "keyType": "mobileKey",
  "externalId": "key_01HXAMPLE0000000000000000:door-1204",
  "keyHolder": { "externalId": "key_01HXAMPLE0000000000000000:door-1204" },
  "accessRights": [ { "doorId": "door-1204" } ],
  "validFrom": "2024-05-01T14:00:00Z",
  "validTo": "2024-05-04T11:00:00Z"
}"#;

/// `201 Created` reply to it (reconstruction).
const CREATE_KEY_RESPONSE_EXAMPLE: &str = r#"{
  "id": "k-6f1c2b7e9a0d4c3b8e5f1a2b",
  "keyType": "mobileKey",
  "status": "active",
  "externalId": "key_01HXAMPLE0000000000000000:door-1204",
  "keyHolder": { "id": "kh-0c9d8e7f6a5b4c3d2e1f0a9b", "externalId": "key_01HXAMPLE0000000000000000:door-1204" },
  "accessRights": [ { "doorId": "door-1204" } ],
  "validFrom": "2024-05-01T14:00:00Z",
  "validTo": "2024-05-04T11:00:00Z",
  "createdAt": "2024-04-30T09:12:44Z"
}"#;

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("valid rfc3339")
        .with_timezone(&Utc)
}

#[test]
fn reconstructed_examples_parse_through_the_wire_types() {
    let req: CreateKeyRequest =
        serde_json::from_str(CREATE_KEY_REQUEST_EXAMPLE).expect("request example parses");
    assert_eq!(req.key_type, "mobileKey");
    assert_eq!(req.access_rights[0].door_id, "door-1204");
    assert_eq!(req.valid_to, ts("2024-05-04T11:00:00Z"));

    let rec: KeyRecord =
        serde_json::from_str(CREATE_KEY_RESPONSE_EXAMPLE).expect("response example parses");
    assert!(rec.opens("door-1204"));
    let entry = VendorEntry::try_from(rec).expect("converts");
    assert_eq!(entry.vendor_ref.expose(), "k-6f1c2b7e9a0d4c3b8e5f1a2b");
    assert_eq!(entry.label, "key_01HXAMPLE0000000000000000:door-1204");
    assert_eq!(entry.valid_from, ts("2024-05-01T14:00:00Z"));
    assert_eq!(entry.valid_until, ts("2024-05-04T11:00:00Z"));
}

#[tokio::test]
async fn simulator_accepts_the_reconstructed_example_as_sent() -> anyhow::Result<()> {
    let env = spawn();
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(env.sim.oauth_token_url())
        .basic_auth(SIM_CLIENT_ID, Some(SIM_CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(token["token_type"], "Bearer");
    let access = token["access_token"].as_str().expect("a token").to_owned();

    let keys_url = format!(
        "{}/v1/environments/{SIM_ENVIRONMENT}/keys",
        env.sim.cloud_base_url()
    );
    let resp = http
        .post(&keys_url)
        .bearer_auth(&access)
        .header("content-type", "application/json")
        .body(CREATE_KEY_REQUEST_EXAMPLE)
        .send()
        .await?;
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let rec: KeyRecord = serde_json::from_slice(&resp.bytes().await?)?;
    let expected: KeyRecord = serde_json::from_str(CREATE_KEY_RESPONSE_EXAMPLE)?;
    assert_eq!(rec.key_type, expected.key_type);
    assert_eq!(rec.status, expected.status);
    assert_eq!(rec.external_id, expected.external_id);
    assert_eq!(rec.key_holder.external_id, expected.key_holder.external_id);
    assert_eq!(rec.access_rights, expected.access_rights);
    assert_eq!(rec.valid_from, expected.valid_from);
    assert_eq!(rec.valid_to, expected.valid_to);
    assert!(rec.id.starts_with("k-") && rec.key_holder.id.is_some());

    // And the adapter finds what was created outside it, by label.
    let mut req = mobile("key_01HXAMPLE0000000000000000:door-1204");
    req.validity = ValidityWindow::new(ts("2024-05-01T14:00:00Z"), ts("2024-05-04T11:00:00Z"))?;
    assert_eq!(env.adapter.find(&req).await?, Some(VendorRef::new(rec.id)));

    // A documented-shape list page parses too.
    let page: ListKeysResponse = http
        .get(&keys_url)
        .bearer_auth(&access)
        .query(&[("doorId", DOOR)])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(page.items.len(), 1);
    assert!(page.next_page_token.is_none());

    // Without a token: 401 with the reconstructed error body.
    let resp = http.get(&keys_url).send().await?;
    assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["code"], "unauthorized");
    Ok(())
}

/// Spec 003 §2 health probe (reconstructed door resource): online, battery, firmware and
/// the lock's clock; an unreachable lock has no clock reading; an unknown door is
/// `NotFound`; an outage is the vendor unwell.
#[tokio::test]
async fn vostio_probe_reads_the_door() -> anyhow::Result<()> {
    use lockstep_domain::Clock as _;
    let env = spawn();
    let p = env.adapter.probe(&device()).await?;
    assert!(p.online);
    assert_eq!(p.battery_percent, Some(92));
    assert_eq!(p.firmware.as_deref(), Some("3.4.1"));
    let skew = p.device_time.expect("the lock's clock") - SystemClock.now();
    assert!(skew.num_seconds().abs() <= 2, "{skew}");
    env.handle.update_door_health(SIM_ENVIRONMENT, DOOR, |h| {
        h.battery_level = 4;
        h.clock_skew = chrono::Duration::minutes(-11);
    });
    let p = env.adapter.probe(&device()).await?;
    assert_eq!(p.battery_percent, Some(4));
    let skew = p.device_time.expect("the lock's clock") - SystemClock.now();
    assert!((skew.num_seconds() + 660).abs() <= 2, "{skew}");
    env.handle
        .update_door_health(SIM_ENVIRONMENT, DOOR, |h| h.online = false);
    let p = env.adapter.probe(&device()).await?;
    assert!(!p.online);
    assert_eq!(p.device_time, None);
    assert_eq!(
        env.adapter.probe(&DeviceRef::new("door-9999")).await,
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

/// Vostio (Assa Abloy) in the `LockPort` contract (`crate::contract`): mobile keys on
/// doors `door-1204`, `door-1205`, ... of one environment.
pub struct VostioFixture;

impl crate::contract::Fixture for VostioFixture {
    type Handle = SimHandle;
    type Config = VostioConfig;
    type Adapter = VostioAdapter;

    const VENDOR: VendorCode = VendorCode::AssaAbloy;
    const KIND: KeyCredentialKind = KeyCredentialKind::MobileApp;
    // Spec 003 §6.1.
    const CAPABILITIES: lockstep_vendors::LockCapabilities = lockstep_vendors::LockCapabilities {
        mobile_key: true,
        card_encoding: true,
        pin: false,
        qr: false,
        nfc: false,
        remote_revoke: true,
        remote_issue: true,
        offline_issuance: false,
        scope_floors: true,
        scope_areas: true,
    };
    const REFUSED_KINDS: &'static [KeyCredentialKind] = &[
        KeyCredentialKind::PinCode,
        KeyCredentialKind::QrCode,
        KeyCredentialKind::NfcTag,
    ];
    const SECRETS: &'static [&'static str] = &[SIM_CLIENT_SECRET, SIM_CLIENT_ID];
    const SINGLE_WRITE_ISSUE: bool = true;
    const FIND_IS_PER_DEVICE: bool = true;
    const UNKNOWN_DEVICE_CODE: &'static str = "lock_not_found";
    const TOKEN_LIFETIME_SECS: Option<i64> = Some(3400);
    const HEALTHY_PROBE: crate::contract::ProbeReading = crate::contract::ProbeReading {
        battery_percent: Some(92),
        firmware: Some("3.4.1"),
        reads_clock: true,
    };

    fn start() -> RunningSimulator {
        let sim = VostioSimulator::start(loopback()).expect("simulator binds on loopback");
        for i in 0..crate::contract::DEVICES {
            sim.handle()
                .add_door(SIM_ENVIRONMENT, Self::device(i).expose());
        }
        sim
    }

    fn config(sim: &RunningSimulator) -> VostioConfig {
        sim.default_adapter_config()
    }

    fn set_call_timeout(config: &mut VostioConfig, timeout: Duration) {
        config.call_timeout = timeout;
    }

    fn bad_credentials() -> crate::contract::BadCredentials<VostioConfig> {
        vec![("wrong-secret-value", |c| {
            c.client_secret = Secret::new("wrong-secret-value")
        })]
    }

    fn build(config: VostioConfig, clock: Arc<dyn Clock>) -> VostioAdapter {
        VostioAdapter::new(config, clock).expect("adapter builds")
    }

    fn device(i: usize) -> DeviceRef {
        DeviceRef::new(format!("door-{}", 1204 + i))
    }

    fn unknown_device() -> DeviceRef {
        DeviceRef::new("door-9999")
    }

    fn malformed_ref() -> VendorRef {
        VendorRef::new("../../environments/env-0001")
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

    fn tokens_issued(handle: &SimHandle) -> Option<u64> {
        Some(handle.token_call_count())
    }

    fn expire_tokens(handle: &SimHandle) {
        handle.expire_all_tokens();
    }

    fn set_online(handle: &SimHandle, device: usize, online: bool) {
        handle.update_door_health(SIM_ENVIRONMENT, Self::device(device).expose(), |h| {
            h.online = online
        });
    }

    /// An active `mobileKey` for that door, its key holder named by the label.
    fn check_stored(handle: &SimHandle, req: &IssueRequest, vref: &VendorRef) {
        let keys = handle.keys(SIM_ENVIRONMENT);
        let key = keys
            .iter()
            .find(|k| k.id == vref.expose())
            .expect("the key");
        assert_eq!(key.key_type, "mobileKey");
        assert_eq!(key.status, "active");
        assert_eq!(key.door_ids, vec![req.device.expose().to_owned()]);
        assert_eq!(
            key.key_holder_external_id.as_deref(),
            Some(req.label.as_str())
        );
    }
}
