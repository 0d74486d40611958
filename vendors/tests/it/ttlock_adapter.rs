//! The TTLock adapter against the simulator over loopback HTTP.

use std::sync::Arc;
use std::time::Duration;

use lockstep_domain::{DeviceRef, KeyCredentialKind, ManualClock, SystemClock, VendorRef};
use lockstep_vendors::ttlock::{Secret, SimFaults};
use lockstep_vendors::{LockPort, TtlockAdapter, VendorError};

use crate::support::{assert_redacted, device, pin_request, shifted, spawn, spawn_with, LOCK};

#[tokio::test]
async fn issued_pin_is_listed_with_its_window() -> anyhow::Result<()> {
    let env = spawn();
    let req = pin_request("key_01HISSUE:24451", "482913");
    let vref = env.adapter.issue(&req).await?;

    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.vendor_ref, vref);
    assert_eq!(e.label, req.label);
    assert_eq!(e.valid_from, req.validity.from());
    assert_eq!(e.valid_until, req.validity.until());

    let at_sim = env.handle.passcodes(LOCK);
    assert_eq!(at_sim.len(), 1);
    assert_eq!(at_sim[0].keyboard_pwd, "482913");
    assert_eq!(at_sim[0].keyboard_pwd_type, 3);
    assert_eq!(at_sim[0].keyboard_pwd_id.to_string(), vref.expose());
    assert_eq!(env.handle.add_call_count(), 1);
    Ok(())
}

#[tokio::test]
async fn find_by_label_returns_the_issued_ref_and_none_when_absent() -> anyhow::Result<()> {
    let env = spawn();
    let req = pin_request("key_01HFIND:24451", "551203");
    assert!(env.adapter.find(&req).await?.is_none());
    let vref = env.adapter.issue(&req).await?;
    assert_eq!(env.adapter.find(&req).await?, Some(vref));
    let other = pin_request("key_01HOTHER:24451", "771234");
    assert!(env.adapter.find(&other).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn find_by_digits_needs_the_same_window() -> anyhow::Result<()> {
    let env = spawn();
    let req = pin_request("key_01HDIGITS:24451", "650913");
    let vref = env.adapter.issue(&req).await?;
    // Same digits and window under another name (renamed at the vendor): ours.
    let renamed = pin_request("key_01HRENAMED:24451", "650913");
    assert_eq!(env.adapter.find(&renamed).await?, Some(vref));
    // Same digits, different window: another guest's PIN, not ours.
    let mut other = pin_request("key_01HGUEST:24451", "650913");
    other.validity = lockstep_domain::ValidityWindow::new(
        req.validity.from() + chrono::Duration::days(10),
        req.validity.until() + chrono::Duration::days(10),
    )?;
    assert!(env.adapter.find(&other).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn revoke_removes_the_pin_and_a_second_revoke_is_ok() -> anyhow::Result<()> {
    let env = spawn();
    let req = pin_request("key_01HREVOKE:24451", "902177");
    let vref = env.adapter.issue(&req).await?;
    env.adapter.revoke(&device(), &vref).await?;
    assert!(env.adapter.list(&device()).await?.is_empty());
    assert!(env.handle.passcodes(LOCK).is_empty());
    env.adapter.revoke(&device(), &vref).await?;
    assert_eq!(env.handle.delete_call_count(), 1);
    Ok(())
}

#[tokio::test]
async fn update_moves_the_window_and_keeps_pin_and_label() -> anyhow::Result<()> {
    let env = spawn();
    let mut req = pin_request("key_01HUPDATE:24451", "584736");
    let vref = env.adapter.issue(&req).await?;
    // Check-out moved two days later, check-in one day earlier.
    let longer = lockstep_domain::ValidityWindow::new(
        req.validity.from() - chrono::Duration::days(1),
        req.validity.until() + chrono::Duration::days(2),
    )?;
    req.validity = longer;
    env.adapter.update(&req, &vref).await?;

    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.vendor_ref, vref, "same object at the vendor");
    assert_eq!(e.label, req.label, "the name is not touched");
    assert_eq!(e.valid_from, longer.from());
    assert_eq!(e.valid_until, longer.until());
    let at_sim = env.handle.passcodes(LOCK);
    assert_eq!(at_sim.len(), 1);
    assert_eq!(at_sim[0].keyboard_pwd, "584736", "the pin is not touched");
    assert_eq!(env.handle.change_call_count(), 1);
    assert_eq!(env.handle.add_call_count(), 1);
    // find still recognises it with the new window (by label, and by digits + window).
    assert_eq!(env.adapter.find(&req).await?, Some(vref.clone()));
    let mut renamed = req.clone();
    renamed.label = "key_01HRENAMEDUPD:24451".to_owned();
    assert_eq!(env.adapter.find(&renamed).await?, Some(vref));
    Ok(())
}

#[tokio::test]
async fn update_of_a_deleted_passcode_is_not_found() -> anyhow::Result<()> {
    let env = spawn();
    let mut req = pin_request("key_01HUPDGONE:24451", "917364");
    let vref = env.adapter.issue(&req).await?;
    env.adapter.revoke(&device(), &vref).await?;
    req.validity = shifted(&req.validity, 1);
    let err = env
        .adapter
        .update(&req, &vref)
        .await
        .expect_err("nothing to change");
    assert_eq!(err, VendorError::NotFound);
    assert!(!err.is_vendor_unwell());
    assert!(!err.is_retryable());
    assert_redacted(&err, Some("917364"), Some(&vref));
    assert_eq!(env.handle.change_call_count(), 0);
    Ok(())
}

#[tokio::test]
async fn lost_update_response_then_retry_leaves_one_passcode_with_the_new_window(
) -> anyhow::Result<()> {
    let env = spawn();
    let mut req = pin_request("key_01HUPDLOST:24451", "463728");
    let vref = env.adapter.issue(&req).await?;
    req.validity = shifted(&req.validity, 2);
    env.handle.update_faults(|f| f.lose_response_rate = 1.0);
    let err = env
        .adapter
        .update(&req, &vref)
        .await
        .expect_err("response lost");
    assert!(err.is_vendor_unwell() && err.is_retryable(), "{err:?}");
    assert_redacted(&err, Some("463728"), Some(&vref));
    assert_eq!(env.handle.counters().lost_responses, 1);
    env.handle.update_faults(|f| f.lose_response_rate = 0.0);

    // Setting a window is idempotent: the retry just sets it again.
    env.adapter.update(&req, &vref).await?;
    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].vendor_ref, vref);
    assert_eq!(entries[0].valid_from, req.validity.from());
    assert_eq!(entries[0].valid_until, req.validity.until());
    assert_eq!(env.handle.passcodes(LOCK).len(), 1);
    assert_eq!(env.handle.change_call_count(), 2);
    assert_eq!(env.handle.add_call_count(), 1);
    Ok(())
}

#[tokio::test]
async fn update_during_outage_is_unavailable_and_changes_nothing() -> anyhow::Result<()> {
    let env = spawn();
    let mut req = pin_request("key_01HUPDOUT:24451", "372819");
    let original = req.validity;
    let vref = env.adapter.issue(&req).await?;
    env.handle.update_faults(|f| f.outage = true);
    req.validity = shifted(&req.validity, 1);
    let err = env.adapter.update(&req, &vref).await.expect_err("outage");
    assert!(matches!(err, VendorError::Unavailable { .. }), "{err:?}");
    assert!(err.is_vendor_unwell());
    assert_eq!(
        err.to_domain_issue(),
        lockstep_domain::DomainError::VendorUnreachable
    );
    assert_redacted(&err, Some("372819"), Some(&vref));
    env.handle.update_faults(|f| f.outage = false);
    let at_sim = env.handle.passcodes(LOCK);
    assert_eq!(at_sim[0].start_date, original.from().timestamp_millis());
    assert_eq!(at_sim[0].end_date, original.until().timestamp_millis());
    assert_eq!(env.handle.change_call_count(), 0);
    Ok(())
}

#[tokio::test]
async fn update_refreshes_an_expired_token() -> anyhow::Result<()> {
    let env = spawn();
    let mut req = pin_request("key_01HUPDTOK:24451", "283746");
    let vref = env.adapter.issue(&req).await?;
    env.handle.expire_all_tokens();
    req.validity = shifted(&req.validity, 1);
    env.adapter.update(&req, &vref).await?;
    assert_eq!(env.handle.token_call_count(), 2);
    assert_eq!(
        env.handle.passcodes(LOCK)[0].start_date,
        req.validity.from().timestamp_millis()
    );
    Ok(())
}

#[tokio::test]
async fn update_refuses_bad_refs_without_calling() {
    let env = spawn();
    let req = pin_request("key_01HUPDBAD:24451", "192038");
    let bad_ref = VendorRef::new("not-a-number-kbpwd");
    let err = env
        .adapter
        .update(&req, &bad_ref)
        .await
        .expect_err("bad ref");
    assert!(
        matches!(&err, VendorError::Refused { code, .. } if code == "invalid_vendor_ref"),
        "{err:?}"
    );
    assert_redacted(&err, Some("192038"), Some(&bad_ref));
    // the ref names the kind: a malformed eKey or card ref is refused the same way
    for bad in ["ekey:", "card:12x", "ekey:-"] {
        let err = env
            .adapter
            .update(&req, &VendorRef::new(bad))
            .await
            .expect_err("bad ref");
        assert!(
            matches!(&err, VendorError::Refused { code, .. } if code == "invalid_vendor_ref"),
            "{bad}: {err:?}"
        );
    }
    assert_eq!(env.handle.change_call_count(), 0);
    assert_eq!(env.handle.token_call_count(), 0);
}

/// TTLock refuses a passcode of consecutive or repeated digits with -2032; the simulator
/// does too (so a generated PIN that is too simple would be seen end to end), and the
/// adapter reports it as a refused PIN, nothing stored.
#[tokio::test]
async fn too_simple_pin_is_refused_as_ttlock_does() -> anyhow::Result<()> {
    let env = spawn();
    for (n, simple) in ["123456", "987654", "777777", "1212", "828282"]
        .into_iter()
        .enumerate()
    {
        let err = env
            .adapter
            .issue(&pin_request(&format!("key_01HS{n}:24451"), simple))
            .await
            .expect_err("too simple");
        assert!(
            matches!(&err, VendorError::Refused { code, .. } if code == "invalid_pin"),
            "{simple}: {err:?}"
        );
        assert_redacted(&err, Some(simple), None);
    }
    assert!(env.handle.passcodes(LOCK).is_empty());
    env.adapter
        .issue(&pin_request("key_01HS9:24451", "828292"))
        .await?;
    assert_eq!(env.handle.passcodes(LOCK).len(), 1);
    Ok(())
}

#[tokio::test]
async fn duplicate_pin_is_a_pin_collision() -> anyhow::Result<()> {
    let env = spawn();
    let first = env
        .adapter
        .issue(&pin_request("key_01HA:24451", "313171"))
        .await?;
    let err = env
        .adapter
        .issue(&pin_request("key_01HB:24451", "313171"))
        .await
        .expect_err("second identical pin is refused");
    assert_eq!(err, VendorError::PinCollision);
    assert!(!err.is_vendor_unwell());
    assert!(!err.is_retryable());
    assert_redacted(&err, Some("313171"), Some(&first));

    env.handle.update_faults(|f| f.force_pin_collision_next = 1);
    let err = env
        .adapter
        .issue(&pin_request("key_01HC:24451", "424252"))
        .await
        .expect_err("forced collision");
    assert_eq!(err, VendorError::PinCollision);
    env.adapter
        .issue(&pin_request("key_01HC:24451", "424252"))
        .await?;
    assert_eq!(env.handle.passcodes(LOCK).len(), 2);
    Ok(())
}

#[tokio::test]
async fn outage_is_unavailable_and_counts_against_the_vendor() {
    let env = spawn();
    env.handle.update_faults(|f| f.outage = true);
    let err = env
        .adapter
        .issue(&pin_request("key_01HOUT:24451", "123987"))
        .await
        .expect_err("outage");
    assert!(matches!(err, VendorError::Unavailable { .. }), "{err:?}");
    assert!(err.is_vendor_unwell());
    assert!(err.is_retryable());
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
    for (i, pin) in ["610001", "610002", "610003"].iter().enumerate() {
        let req = pin_request(&format!("key_01HRL{i}:24451"), pin);
        results.push(env.adapter.issue(&req).await);
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
async fn lost_add_response_is_found_afterwards_exactly_once() -> anyhow::Result<()> {
    let env = spawn();
    env.adapter.health().await?;
    env.handle.update_faults(|f| f.lose_response_rate = 1.0);
    let req = pin_request("key_01HLOST:24451", "738291");
    let err = env.adapter.issue(&req).await.expect_err("response lost");
    assert!(err.is_vendor_unwell(), "{err:?}");
    assert_redacted(&err, Some("738291"), None);
    env.handle.update_faults(|f| f.lose_response_rate = 0.0);

    // Reconcile before retry: the vendor did act.
    let found = env.adapter.find(&req).await?.expect("the add was applied");
    let at_sim = env.handle.passcodes(LOCK);
    assert_eq!(at_sim.len(), 1);
    assert_eq!(at_sim[0].keyboard_pwd_id.to_string(), found.expose());
    assert_eq!(env.handle.add_call_count(), 1);
    Ok(())
}

#[tokio::test]
async fn lost_delete_response_then_retry_is_ok() -> anyhow::Result<()> {
    let env = spawn();
    let vref = env
        .adapter
        .issue(&pin_request("key_01HLD:24451", "828292"))
        .await?;
    env.handle.update_faults(|f| f.lose_response_rate = 1.0);
    let err = env
        .adapter
        .revoke(&device(), &vref)
        .await
        .expect_err("response lost");
    assert_redacted(&err, Some("828292"), Some(&vref));
    env.handle.update_faults(|f| f.lose_response_rate = 0.0);
    env.adapter.revoke(&device(), &vref).await?;
    assert!(env.handle.passcodes(LOCK).is_empty());
    Ok(())
}

#[tokio::test]
async fn expired_token_is_refreshed_transparently() -> anyhow::Result<()> {
    let env = spawn();
    env.adapter
        .issue(&pin_request("key_01HT1:24451", "111222"))
        .await?;
    assert_eq!(env.handle.token_call_count(), 1);
    env.handle.expire_all_tokens();
    env.adapter
        .issue(&pin_request("key_01HT2:24451", "333444"))
        .await?;
    assert_eq!(env.handle.token_call_count(), 2);
    assert_eq!(env.handle.add_call_count(), 2);
    Ok(())
}

#[tokio::test]
async fn token_is_fetched_again_before_it_expires_on_our_clock() -> anyhow::Result<()> {
    let clock = ManualClock::new(lockstep_domain::Clock::now(&lockstep_domain::SystemClock));
    let env = spawn_with(|_| {}, Arc::new(clock.clone()));
    env.adapter.health().await?;
    env.adapter.health().await?;
    assert_eq!(env.handle.token_call_count(), 1, "the token is cached");
    clock.advance(chrono::Duration::days(90));
    env.adapter.health().await?;
    assert_eq!(env.handle.token_call_count(), 2);
    Ok(())
}

#[tokio::test]
async fn slow_vendor_times_out_as_unavailable() {
    let env = spawn_with(
        |c| c.call_timeout = Duration::from_millis(300),
        Arc::new(SystemClock),
    );
    env.handle.update_faults(|f| {
        f.latency_ms = 2_000;
        f.latency_jitter_ms = 10;
    });
    let err = env.adapter.health().await.expect_err("timeout");
    assert_eq!(
        err,
        VendorError::Unavailable {
            detail: "timeout".into()
        }
    );
}

#[tokio::test]
async fn full_lock_is_refused_not_unwell() {
    let env = spawn();
    let w = crate::support::window();
    for i in 0..250 {
        env.handle.seed_passcode(
            LOCK,
            &format!("{}", 500_000 + i),
            &format!("seed{i}"),
            w.from().timestamp_millis(),
            w.until().timestamp_millis(),
        );
    }
    let err = env
        .adapter
        .issue(&pin_request("key_01HFULL:24451", "987650"))
        .await
        .expect_err("full");
    match &err {
        VendorError::Refused { code, .. } => assert_eq!(code, "storage_full"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.is_vendor_unwell());
    assert!(matches!(
        err.to_domain_issue(),
        lockstep_domain::DomainError::KeyIssueFailed { .. }
    ));
    assert_redacted(&err, Some("987650"), None);
}

#[tokio::test]
async fn list_pages_through_every_page() -> anyhow::Result<()> {
    let env = spawn();
    let w = crate::support::window();
    for i in 0..230 {
        env.handle.seed_passcode(
            LOCK,
            &format!("{}", 700_000 + i),
            &format!("seed{i}"),
            w.from().timestamp_millis(),
            w.until().timestamp_millis(),
        );
    }
    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 230);
    assert_eq!(env.handle.list_call_count(), 2);
    Ok(())
}

#[tokio::test]
async fn unknown_lock_and_bad_refs_are_refused() {
    let env = spawn();
    let mut req = pin_request("key_01HNOLOCK:99", "246810");
    req.device = DeviceRef::new("99");
    let err = env.adapter.issue(&req).await.expect_err("unknown lock");
    assert!(
        matches!(&err, VendorError::Refused { code, .. } if code == "lock_not_found"),
        "{err:?}"
    );
    assert_redacted(&err, Some("246810"), None);

    let bad_ref = VendorRef::new("not-a-number-kbpwd");
    let err = env
        .adapter
        .revoke(&device(), &bad_ref)
        .await
        .expect_err("bad ref");
    assert_redacted(&err, None, Some(&bad_ref));

    let mut qr = pin_request("key_01HQR:24451", "135790");
    qr.kind = KeyCredentialKind::QrCode;
    let err = env.adapter.issue(&qr).await.expect_err("unsupported");
    assert!(matches!(&err, VendorError::Refused { code, .. } if code == "unsupported_kind"));
}

#[tokio::test]
async fn wrong_client_secret_is_an_auth_error() {
    let env = spawn_with(
        |c| c.client_secret = Secret::new("wrong-secret-value"),
        Arc::new(SystemClock),
    );
    let err = env
        .adapter
        .issue(&pin_request("key_01HAUTH:24451", "192837"))
        .await
        .expect_err("auth");
    assert!(matches!(err, VendorError::Auth { .. }), "{err:?}");
    assert!(!err.is_vendor_unwell());
    assert_redacted(&err, Some("192837"), None);
    assert!(!format!("{err:?}").contains("wrong-secret-value"));

    let env = spawn_with(
        |c| c.password = Secret::new("wrong-password"),
        Arc::new(SystemClock),
    );
    let err = env.adapter.health().await.expect_err("auth");
    assert!(matches!(err, VendorError::Auth { .. }), "{err:?}");
    assert!(!format!("{err:?}").contains("wrong-password"));
}

#[tokio::test]
async fn unreachable_vendor_is_unavailable() {
    // Bind then drop a simulator: its port refuses connections.
    let base = {
        let env = spawn();
        let base = env.sim.base_url();
        env.sim.stop().await.expect("stops");
        base
    };
    let mut cfg = lockstep_vendors::ttlock::TtlockConfig::new(
        base,
        "c",
        Secret::new("s"),
        "u",
        Secret::new("p"),
    );
    cfg.call_timeout = Duration::from_secs(2);
    let adapter = TtlockAdapter::new(cfg, Arc::new(SystemClock)).expect("builds");
    let err = adapter.health().await.expect_err("nothing listens");
    assert!(err.is_vendor_unwell(), "{err:?}");
}

#[tokio::test]
async fn every_error_kind_renders_without_secrets() -> anyhow::Result<()> {
    let env = spawn();
    let req = pin_request("key_01HRED:24451", "564738");
    let vref = env.adapter.issue(&req).await?;
    let mut errors = Vec::new();
    errors.push(env.adapter.issue(&req).await.expect_err("collision"));
    env.handle.set_faults(SimFaults {
        outage: true,
        ..SimFaults::default()
    });
    errors.push(env.adapter.issue(&req).await.expect_err("outage"));
    errors.push(
        env.adapter
            .update(&req, &vref)
            .await
            .expect_err("update outage"),
    );
    env.handle.set_faults(SimFaults {
        rate_limit_per_sec: Some(0),
        ..SimFaults::default()
    });
    errors.push(env.adapter.revoke(&device(), &vref).await.expect_err("429"));
    errors.push(
        env.adapter
            .update(&req, &vref)
            .await
            .expect_err("update 429"),
    );
    env.handle.set_faults(SimFaults {
        lose_response_rate: 1.0,
        ..SimFaults::default()
    });
    errors.push(
        env.adapter
            .update(&req, &vref)
            .await
            .expect_err("update lost"),
    );
    env.handle.set_faults(SimFaults::default());
    let mut other = req.clone();
    other.device = DeviceRef::new("404");
    errors.push(env.adapter.issue(&other).await.expect_err("refused"));
    errors.push(
        env.adapter
            .update(&other, &vref)
            .await
            .expect_err("update on an unknown lock"),
    );
    env.adapter.revoke(&device(), &vref).await?;
    errors.push(
        env.adapter
            .update(&req, &vref)
            .await
            .expect_err("update of a deleted passcode"),
    );
    let bad = spawn_with(
        |c| c.client_secret = Secret::new("nope"),
        Arc::new(SystemClock),
    );
    errors.push(bad.adapter.issue(&req).await.expect_err("auth"));
    errors.push(
        bad.adapter
            .update(&req, &vref)
            .await
            .expect_err("update auth"),
    );

    let kinds: std::collections::BTreeSet<&str> = errors
        .iter()
        .map(|e| match e {
            VendorError::Unavailable { .. } => "unavailable",
            VendorError::RateLimited { .. } => "rate_limited",
            VendorError::PinCollision => "pin_collision",
            VendorError::Refused { .. } => "refused",
            VendorError::Auth { .. } => "auth",
            VendorError::NotFound => "not_found",
            VendorError::NotSent { .. } => unreachable!("adapters never answer not_sent"),
        })
        .collect();
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    for e in &errors {
        assert_redacted(e, Some("564738"), Some(&vref));
    }
    Ok(())
}

#[test]
fn adapter_debug_shows_no_secret() {
    let env = spawn();
    let s = format!("{:?}", env.adapter);
    assert!(!s.contains(lockstep_vendors::ttlock::simulator::SIM_CLIENT_SECRET));
    assert!(!s.contains(lockstep_vendors::ttlock::simulator::SIM_PASSWORD));
    assert_eq!(env.adapter.vendor(), lockstep_domain::VendorCode::Ttlock);
    assert!(env.adapter.capabilities().pin);
}

/// Spec 003 §2 health probe: battery and firmware from `/v3/lock/detail`, the lock's
/// clock from `/v3/lock/queryDate`; a gateway that is offline makes the lock unreachable
/// (`online: false`), not an error; an unknown lock is `NotFound`; an outage is the vendor
/// being unwell.
#[tokio::test]
async fn probe_reads_battery_firmware_clock_and_reachability() -> anyhow::Result<()> {
    use lockstep_domain::Clock as _;
    let env = spawn();
    let healthy = env.adapter.probe(&device()).await?;
    assert!(healthy.online);
    assert_eq!(healthy.battery_percent, Some(87));
    assert_eq!(healthy.firmware.as_deref(), Some("6.1.21.0424"));
    let skew = healthy.device_time.expect("the lock's clock") - SystemClock.now();
    assert!(skew.num_seconds().abs() <= 2, "{skew}");

    env.handle.update_lock_health(LOCK, |h| {
        h.battery_percent = 12;
        h.clock_skew = chrono::Duration::minutes(7);
    });
    let drifting = env.adapter.probe(&device()).await?;
    assert_eq!(drifting.battery_percent, Some(12));
    let skew = drifting.device_time.expect("the lock's clock") - SystemClock.now();
    assert!((skew.num_seconds() - 420).abs() <= 2, "{skew}");

    env.handle.update_lock_health(LOCK, |h| h.offline = true);
    let away = env.adapter.probe(&device()).await?;
    assert!(!away.online);
    assert_eq!(away.device_time, None);
    assert_eq!(
        away.battery_percent,
        Some(12),
        "the cloud's last reading stays"
    );

    assert_eq!(
        env.adapter.probe(&DeviceRef::new("999999")).await,
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

/// TTLock in the `LockPort` contract (`crate::contract`): PIN passcodes on locks
/// `24451`, `24452`, ...
pub struct TtlockFixture;

impl crate::contract::Fixture for TtlockFixture {
    type Handle = lockstep_vendors::ttlock::SimHandle;
    type Config = lockstep_vendors::TtlockConfig;
    type Adapter = TtlockAdapter;

    const VENDOR: lockstep_domain::VendorCode = lockstep_domain::VendorCode::Ttlock;
    const KIND: KeyCredentialKind = KeyCredentialKind::PinCode;
    const CAPABILITIES: lockstep_vendors::LockCapabilities = lockstep_vendors::LockCapabilities {
        mobile_key: true,
        card_encoding: true,
        pin: true,
        qr: false,
        nfc: false,
        remote_revoke: true,
        remote_issue: true,
        offline_issuance: true,
        scope_floors: false,
        scope_areas: false,
    };
    const REFUSED_KINDS: &'static [KeyCredentialKind] =
        &[KeyCredentialKind::QrCode, KeyCredentialKind::NfcTag];
    const SECRETS: &'static [&'static str] = &[
        lockstep_vendors::ttlock::simulator::SIM_CLIENT_SECRET,
        lockstep_vendors::ttlock::simulator::SIM_PASSWORD,
    ];
    const SINGLE_WRITE_ISSUE: bool = true;
    const FIND_IS_PER_DEVICE: bool = true;
    const UNKNOWN_DEVICE_CODE: &'static str = "lock_not_found";
    const TOKEN_LIFETIME_SECS: Option<i64> = Some(90 * 86_400);
    const HEALTHY_PROBE: crate::contract::ProbeReading = crate::contract::ProbeReading {
        battery_percent: Some(87),
        firmware: Some("6.1.21.0424"),
        reads_clock: true,
    };

    fn start() -> lockstep_vendors::ttlock::RunningSimulator {
        let sim = lockstep_vendors::ttlock::TtlockSimulator::start(crate::support::loopback())
            .expect("simulator binds on loopback");
        for i in 0..crate::contract::DEVICES {
            sim.handle().add_lock(LOCK + i as i64);
        }
        sim
    }

    fn config(sim: &lockstep_vendors::ttlock::RunningSimulator) -> Self::Config {
        sim.default_adapter_config()
    }

    fn set_call_timeout(config: &mut Self::Config, timeout: Duration) {
        config.call_timeout = timeout;
    }

    fn bad_credentials() -> crate::contract::BadCredentials<Self::Config> {
        vec![
            ("wrong-secret-value", |c| {
                c.client_secret = Secret::new("wrong-secret-value")
            }),
            ("wrong-password", |c| {
                c.password = Secret::new("wrong-password")
            }),
        ]
    }

    fn build(config: Self::Config, clock: Arc<dyn lockstep_domain::Clock>) -> TtlockAdapter {
        TtlockAdapter::new(config, clock).expect("adapter builds")
    }

    fn device(i: usize) -> DeviceRef {
        DeviceRef::new((LOCK + i as i64).to_string())
    }

    fn unknown_device() -> DeviceRef {
        DeviceRef::new("999999")
    }

    fn malformed_ref() -> VendorRef {
        VendorRef::new("not-a-number-kbpwd")
    }

    fn inject(handle: &Self::Handle, fault: crate::contract::Fault) {
        crate::contract::inject_fault!(handle, fault);
    }

    fn held(handle: &Self::Handle, device: &DeviceRef) -> Vec<crate::contract::Held> {
        crate::contract::held_on!(handle, device)
    }

    fn tally(handle: &Self::Handle) -> crate::contract::Tally {
        let c = handle.counters();
        crate::contract::Tally {
            created: c.adds,
            updated: c.changes,
            deleted: c.deletes,
            lost_responses: c.lost_responses,
            rejected_by_faults: c.rejected_by_faults,
        }
    }

    fn tokens_issued(handle: &Self::Handle) -> Option<u64> {
        Some(handle.token_call_count())
    }

    fn expire_tokens(handle: &Self::Handle) {
        handle.expire_all_tokens();
    }

    fn set_online(handle: &Self::Handle, device: usize, online: bool) {
        handle.update_lock_health(LOCK + device as i64, |h| h.offline = !online);
    }

    /// A custom passcode (`keyboardPwdType` 3) with the PIN and the label as its name.
    fn check_stored(handle: &Self::Handle, req: &lockstep_vendors::IssueRequest, vref: &VendorRef) {
        let lock: i64 = req.device.expose().parse().expect("a lockId");
        let at_sim = handle.passcodes(lock);
        let p = at_sim
            .iter()
            .find(|p| p.keyboard_pwd_id.to_string() == vref.expose())
            .expect("the passcode");
        assert_eq!(
            Some(p.keyboard_pwd.as_str()),
            req.pin.as_ref().map(|p| p.expose()),
            "the pin is not touched"
        );
        assert_eq!(p.keyboard_pwd_type, 3);
        assert_eq!(p.keyboard_pwd_name, req.label);
    }
}

impl crate::contract::PinFixture for TtlockFixture {
    fn force_pin_collision_next(handle: &Self::Handle) {
        handle.update_faults(|f| f.force_pin_collision_next = 1);
    }
}
