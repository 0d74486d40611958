//! Issue 12, outage fallback (DESIGN §7): when the preferred kind's vendor is down (breaker
//! open, or the issue waited past `outage_fallback_after`), the saga walks the KeyKindPolicy
//! fallback chain to a kind another adapter at the property can issue, and on recovery the
//! stay holds one live key.
#![allow(clippy::disallowed_methods)] // test deadlines are wall-clock

use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep_actors::{SagaSettings, WorkerSettings};
use lockstep_domain::breaker::BreakerPolicy;
use lockstep_domain::{DeviceRef, KeyCredentialKind, LockDeviceId, SystemClock, VendorCode};
use lockstep_persistence::{Desired, SyncState};
use lockstep_vendors::{kisi, LockPort};

use crate::rig::Rig;

/// Kisi's door for room `rmu_3` beside TTLock's lock 3.
const KISI_DOOR: &str = "1:30";

/// A Kisi adapter at the rig's property serving room `rmu_3`, and a policy that prefers a
/// PIN (TTLock only) and falls back to a mobile key (Kisi, or TTLock).
async fn with_kisi(rig: &Rig) -> anyhow::Result<(kisi::RunningSimulator, Arc<kisi::KisiAdapter>)> {
    let sim = kisi::KisiSimulator::start("127.0.0.1:0".parse()?)?;
    sim.handle().add_group_lock(1, 30);
    let port = Arc::new(kisi::KisiAdapter::new(
        sim.default_adapter_config(),
        rig.rt.clock.clone(),
    )?);
    let id = rig
        .add_adapter(port.clone(), VendorCode::Kisi, "sandbox", 100)
        .await?;
    rig.add_device(
        LockDeviceId::from_ulid(ulid::Ulid::from_parts(30, 1)),
        &id,
        VendorCode::Kisi,
        KISI_DOOR,
        &["rmu_3"],
    )
    .await?;
    let now = rig.rt.clock.now();
    rig.rt
        .store
        .upsert_policy(&lockstep_persistence::PolicyRecord {
            id: lockstep_domain::KeyKindPolicyId::generate()
                .as_str()
                .to_owned(),
            tenant_id: rig.tenant,
            property_id: rig.property.clone(),
            preferred_order: vec!["pin_code".into()],
            fallback_chain: vec!["mobile_app".into()],
            max_valid_until_extension_hours: 168,
            id_verify_required_for: vec![],
            no_show_suspend_after_hours: 2,
            allow_offline_issuance_kinds: vec![],
            updated_at: now,
        })
        .await?;
    Ok((sim, port))
}

/// Every credential of a reservation, as (kind, state).
async fn kinds(rig: &Rig, reservation: &str) -> anyhow::Result<Vec<(KeyCredentialKind, String)>> {
    let mut v: Vec<_> = rig
        .credentials(reservation)
        .await?
        .iter()
        .map(|c| (c.kind(), c.state().as_str().to_owned()))
        .collect();
    v.sort_by_key(|(k, s)| (k.as_str(), s.clone()));
    Ok(v)
}

/// Waits until the reservation holds an active credential; returns how long it took.
async fn until_active(rig: &Rig, reservation: &str, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if kinds(rig, reservation)
            .await?
            .iter()
            .any(|(_, s)| s == "active")
        {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < within,
            "no active key within {within:?}: {:?}",
            kinds(rig, reservation).await?
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// TTLock is down; Kisi serves the same room. A new stay that prefers a PIN leaves with a
/// Kisi mobile key once TTLock's breaker opens (well within the 120 s bound); the PIN fails
/// as `vendor_unreachable` by the refusal's own mechanics. After TTLock recovers, the stay
/// holds exactly one live key, the PIN's door truth says it is off the lock, and TTLock
/// received no add.
#[actix_rt::test]
async fn a_down_vendor_falls_back_to_the_next_kind_on_another_adapter() -> anyhow::Result<()> {
    let rig = Rig::start_with(
        WorkerSettings::simulator(),
        Arc::new(SystemClock),
        BreakerPolicy {
            min_calls: 4,
            open_for: chrono::Duration::seconds(1),
            ..BreakerPolicy::default()
        },
        SagaSettings {
            retry_base: Duration::from_millis(20),
            retry_cap: Duration::from_millis(100),
            outage_fallback_after: Duration::from_secs(120),
            ..SagaSettings::default()
        },
    )
    .await?;
    let (_kisi_sim, kisi_port) = with_kisi(&rig).await?;
    rig.sim.handle().update_faults(|f| f.outage = true);
    rig.confirm("rsv_fb1", 3).await?;
    let took = until_active(&rig, "rsv_fb1", Duration::from_secs(30)).await?;
    assert!(took < Duration::from_secs(120), "fell back after {took:?}");
    assert_eq!(
        kinds(&rig, "rsv_fb1").await?,
        vec![
            (KeyCredentialKind::MobileApp, "active".to_owned()),
            (KeyCredentialKind::PinCode, "failed".to_owned()),
        ]
    );
    let creds = rig.credentials("rsv_fb1").await?;
    let pin = creds
        .iter()
        .find(|c| c.kind() == KeyCredentialKind::PinCode)
        .expect("the PIN");
    assert_eq!(
        pin.failure_reason().map(|r| r.as_str()),
        Some("vendor_unreachable")
    );
    let key = creds
        .iter()
        .find(|c| c.kind() == KeyCredentialKind::MobileApp)
        .expect("the mobile key");
    assert_eq!(key.vendor(), VendorCode::Kisi);
    assert_eq!(kisi_port.list(&DeviceRef::new(KISI_DOOR)).await?.len(), 1);

    // TTLock comes back: whatever the PIN's drive left to look for is settled, nothing added.
    // (The calls that met the outage before the breaker opened are in the log: they reached
    // TTLock's edge and created nothing.)
    let recovered_at = rig.port.log.lock().unwrap().len();
    rig.sim.handle().update_faults(|f| f.outage = false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let devices = rig
            .rt
            .store
            .credential_devices(rig.tenant, pin.id())
            .await?;
        if devices
            .iter()
            .all(|d| d.desired == Desired::Absent && d.sync == SyncState::Confirmed)
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the PIN's door truth never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rig.wait_quiet().await?;
    // a new stay on another room gets TTLock's PIN again: the vendor is back
    rig.confirm("rsv_fb2", 4).await?;
    rig.wait_settled("rsv_fb2", "active").await?;
    assert_eq!(
        kinds(&rig, "rsv_fb2").await?,
        vec![(KeyCredentialKind::PinCode, "active".to_owned())]
    );

    let live: Vec<_> = rig
        .credentials("rsv_fb1")
        .await?
        .into_iter()
        .filter(|c| {
            matches!(
                c.state().as_str(),
                "requested" | "pending" | "active" | "suspended"
            )
        })
        .map(|c| c.kind())
        .collect();
    assert_eq!(live, vec![KeyCredentialKind::MobileApp], "one live key");
    assert_eq!(rig.passcodes(3), 0, "TTLock holds no PIN for the stay");
    assert_eq!(
        rig.port
            .log
            .lock()
            .unwrap()
            .iter()
            .skip(recovered_at)
            .filter(|c| **c == "issue")
            .count(),
        1,
        "after recovery TTLock received one add: rsv_fb2's, none for rsv_fb1"
    );
    assert_eq!(rig.passcodes(4), 1);
    assert_eq!(kisi_port.list(&DeviceRef::new(KISI_DOOR)).await?.len(), 1);
    rig.finish().await;
    Ok(())
}

/// The vendor fails but its breaker stays closed: before the bound nothing falls back (the
/// PIN waits, Kisi receives nothing); once the issue has waited past the bound, it does.
#[actix_rt::test]
async fn before_the_bound_with_the_breaker_closed_nothing_falls_back() -> anyhow::Result<()> {
    let bound = Duration::from_secs(4);
    let rig = Rig::start_with(
        WorkerSettings::simulator(),
        Arc::new(SystemClock),
        BreakerPolicy {
            min_calls: 1_000_000,
            ..BreakerPolicy::default()
        },
        SagaSettings {
            retry_base: Duration::from_millis(20),
            retry_cap: Duration::from_millis(100),
            max_issue_attempts: 1_000_000,
            outage_fallback_after: bound,
            ..SagaSettings::default()
        },
    )
    .await?;
    let (_kisi_sim, kisi_port) = with_kisi(&rig).await?;
    rig.sim.handle().update_faults(|f| f.outage = true);
    let started = Instant::now();
    rig.confirm("rsv_fb3", 3).await?;
    // TTLock (down; Kisi is up) has failed three calls for the PIN. Every failed call is
    // followed, in the same step, by the fallback's decision; the next call is made by a
    // later step, so at least two decisions "keep waiting" were taken before the check.
    let calls = || rig.metric_sum("lockstep_vendor_calls_total{", "outcome=\"unavailable\"");
    while calls() < 3.0 {
        anyhow::ensure!(
            started.elapsed() < bound,
            "TTLock saw {} calls before the bound: inconclusive",
            calls()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = kinds(&rig, "rsv_fb3").await?;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0].0, KeyCredentialKind::PinCode);
    assert!(
        matches!(now[0].1.as_str(), "requested" | "pending"),
        "{now:?}"
    );
    assert!(kisi_port.list(&DeviceRef::new(KISI_DOOR)).await?.is_empty());
    assert!(
        started.elapsed() < bound,
        "the check ran after the bound: inconclusive"
    );

    until_active(&rig, "rsv_fb3", Duration::from_secs(30)).await?;
    assert!(started.elapsed() >= bound, "fell back before the bound");
    assert_eq!(
        kinds(&rig, "rsv_fb3").await?,
        vec![
            (KeyCredentialKind::MobileApp, "active".to_owned()),
            (KeyCredentialKind::PinCode, "failed".to_owned()),
        ]
    );
    assert_eq!(kisi_port.list(&DeviceRef::new(KISI_DOOR)).await?.len(), 1);
    rig.sim.handle().update_faults(|f| f.outage = false);
    rig.finish().await;
    Ok(())
}
