//! Saga behaviour on the real actor tree: compensation (issue 4, point 5).
#![allow(clippy::disallowed_methods)] // test deadlines are wall-clock

use std::time::Duration;

use lockstep_actors::WorkerSettings;

use crate::rig::Rig;

/// DESIGN §3.5: a cancel that arrives while an issue is in flight is recorded; when the
/// vendor then creates the passcode, a compensating delete follows at once and the
/// credential never becomes active.
#[actix_rt::test]
async fn cancel_while_the_vendor_is_slow_to_issue_leaves_no_passcode_at_the_door(
) -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    rig.sim.handle().update_faults(|f| f.latency_ms = 700);
    rig.confirm("rsv_k1", 1).await?;
    // The issue is in flight once the intent (requested → pending) is committed.
    rig.wait_state("rsv_k1", "pending").await?;
    rig.cancel("rsv_k1").await?;
    rig.wait_settled("rsv_k1", "failed").await?;

    let creds = rig.credentials("rsv_k1").await?;
    assert_eq!(creds.len(), 1, "no second credential");
    let c = &creds[0];
    assert_eq!(
        c.failure_reason().map(|f| f.as_str()),
        Some("cancelled_mid_flight")
    );
    assert_eq!(rig.passcodes(1), 0, "the door holds nothing");
    let devices = rig.rt.store.credential_devices(rig.tenant, c.id()).await?;
    assert!(
        devices
            .iter()
            .all(|d| d.desired.as_str() == "absent" && d.sync.as_str() == "confirmed"),
        "vendor sync says so"
    );
    // It reached the vendor, and was deleted there: one add, one delete.
    let counters = rig.sim.handle().counters();
    assert_eq!((counters.adds, counters.deletes), (1, 1));
    // No issued.v1 was ever produced for it; failed.v1 was.
    let subjects = rig.outbox_subjects(c.id().as_str()).await?;
    assert!(
        !subjects.iter().any(|s| s.ends_with("issued.v1")),
        "{subjects:?}"
    );
    assert!(
        subjects.iter().any(|s| s.ends_with("failed.v1")),
        "{subjects:?}"
    );
    rig.finish().await;
    Ok(())
}

/// A cancel before the vendor was ever called issues nothing at all.
#[actix_rt::test]
async fn cancel_before_the_first_vendor_call_issues_nothing() -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    rig.cancel("rsv_k2").await?;
    rig.confirm("rsv_k2", 2).await?;
    // The confirm is stepped after the cancel (one subject, one mailbox in order); once it
    // is handled, whatever it decided is committed.
    let outcome = rig.wait_outcome("c-rsv_k2").await?;
    println!("the confirm after the cancel: {outcome}");
    assert!(
        rig.credentials("rsv_k2").await?.is_empty(),
        "no credential for a cancelled stay"
    );
    assert_eq!(rig.sim.handle().counters().adds, 0);
    rig.finish().await;
    Ok(())
}

/// Unsuspend (an operator's, through the subject's actor): the key returns to the door with
/// its PIN, and a stale fraud flag does not suspend it again.
#[actix_rt::test]
async fn an_operator_unsuspend_returns_the_key_to_the_door() -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    rig.confirm("rsv_u1", 1).await?;
    rig.wait_settled("rsv_u1", "active").await?;
    let pin_before = rig.sim.handle().passcodes(1)[0].keyboard_pwd.clone();
    rig.deliver(
        "f-u1",
        "melmastoon.reservation.fraud_flagged.v1",
        serde_json::json!({ "reservationId": "rsv_u1", "revision": 2 }),
    )
    .await?;
    rig.wait_settled("rsv_u1", "suspended").await?;
    assert_eq!(rig.passcodes(1), 0, "suspended: nothing at the door");
    let id = rig.credentials("rsv_u1").await?[0].id().as_str().to_owned();
    rig.command(
        "reservation:rsv_u1",
        "lockstep.internal.unsuspend",
        serde_json::json!({ "credentialId": id }),
    )
    .await?;
    rig.wait_settled("rsv_u1", "active").await?;
    let back = rig.sim.handle().passcodes(1);
    assert_eq!(back.len(), 1);
    assert_eq!(
        back[0].keyboard_pwd, pin_before,
        "the guest's PIN is unchanged"
    );
    // the same flag delivered again (another message id) is stale now
    rig.deliver(
        "f-u1-again",
        "melmastoon.reservation.fraud_flagged.v1",
        serde_json::json!({ "reservationId": "rsv_u1", "revision": 2 }),
    )
    .await?;
    // Handled (its outcome committed) before the state is read: a flag that suspended the
    // key again would have done so in that step.
    let outcome = rig.wait_outcome("f-u1-again").await?;
    println!("the stale flag: {outcome}");
    rig.wait_settled("rsv_u1", "active").await?;
    assert_eq!(rig.passcodes(1), 1, "the key is still at the door");
    rig.finish().await;
    Ok(())
}

/// Lost-key replace: revoke + re-issue as one unit with lineage both ways (I-4,
/// linkReplacement); the saga follows the new key, so a cancel revokes it.
#[actix_rt::test]
async fn a_lost_key_is_replaced_with_lineage_and_the_saga_follows_the_new_key() -> anyhow::Result<()>
{
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    rig.confirm("rsv_l1", 2).await?;
    rig.wait_settled("rsv_l1", "active").await?;
    let old = rig.credentials("rsv_l1").await?[0].id().clone();
    rig.command(
        "reservation:rsv_l1",
        "lockstep.internal.replace",
        serde_json::json!({ "credentialId": old.as_str() }),
    )
    .await?;
    // settled: two credentials, the old revoked (lost), the new active
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (old_c, new_c) = loop {
        let creds = rig.credentials("rsv_l1").await?;
        if creds.len() == 2 && creds.iter().any(|c| c.state().as_str() == "active") {
            let o = creds.iter().find(|c| c.id() == &old).cloned().unwrap();
            let n = creds.iter().find(|c| c.id() != &old).cloned().unwrap();
            break (o, n);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "never replaced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(old_c.state().as_str(), "revoked");
    assert_eq!(old_c.revoke_reason().map(|r| r.as_str()), Some("lost"));
    assert_eq!(old_c.replaced_by_id(), Some(new_c.id()));
    assert_eq!(new_c.replaces_id(), Some(&old));
    let at_door = rig.sim.handle().passcodes(2);
    assert_eq!(at_door.len(), 1, "only the new key opens the door");
    assert_eq!(at_door[0].keyboard_pwd_name, new_c.id().as_str());
    rig.cancel("rsv_l1").await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while rig.passcodes(2) != 0
        || rig
            .credentials("rsv_l1")
            .await?
            .iter()
            .any(|c| c.state().as_str() == "active")
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the new key was not revoked by the cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.finish().await;
    Ok(())
}

/// KeyKindPolicy (spec `002` "mobile_app → pin_code → manual escort"): the preferred kind
/// is refused by the vendor (TTLock cannot add a card without its number), so the saga falls back
/// to the next kind; the guest ends with an active PIN and the first credential failed.
#[actix_rt::test]
async fn a_refused_kind_falls_back_along_the_policy_chain() -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    rig.rt
        .store
        .upsert_policy(&lockstep_persistence::PolicyRecord {
            id: lockstep_domain::KeyKindPolicyId::generate()
                .as_str()
                .to_owned(),
            tenant_id: rig.tenant,
            property_id: rig.property.clone(),
            // TTLock adds a card only by the number a desk reader read; the saga has none
            // yet (the encoder relay brings it), so the vendor refuses `rfid_card`
            preferred_order: vec!["rfid_card".into()],
            fallback_chain: vec!["pin_code".into()],
            max_valid_until_extension_hours: 168,
            id_verify_required_for: vec![],
            no_show_suspend_after_hours: 2,
            allow_offline_issuance_kinds: vec!["pin_code".into()],
            updated_at: lockstep_domain::Clock::now(rig.rt.clock.as_ref()),
        })
        .await?;
    rig.confirm("rsv_f1", 3).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let creds = loop {
        let creds = rig.credentials("rsv_f1").await?;
        if creds.iter().any(|c| c.state().as_str() == "active") {
            break creds;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no fallback: {:?}",
            creds
                .iter()
                .map(|c| (c.kind(), c.state()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let kinds: Vec<(&str, &str)> = creds
        .iter()
        .map(|c| (c.kind().as_str(), c.state().as_str()))
        .collect();
    assert_eq!(kinds, vec![("rfid_card", "failed"), ("pin_code", "active")]);
    assert_eq!(rig.passcodes(3), 1);
    rig.finish().await;
    Ok(())
}

/// Passivation: idle credential actors stop (the gauge says how many live) and the next
/// event rehydrates the subject from storage.
#[actix_rt::test]
async fn idle_actors_passivate_and_rehydrate_on_the_next_event() -> anyhow::Result<()> {
    let rig = Rig::start_with(
        WorkerSettings::simulator(),
        std::sync::Arc::new(lockstep_domain::SystemClock),
        lockstep_domain::breaker::BreakerPolicy::default(),
        lockstep_actors::SagaSettings {
            passivate_after: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await?;
    rig.confirm("rsv_z1", 4).await?;
    rig.wait_settled("rsv_z1", "active").await?;
    let live = || {
        rig.rt
            .metrics
            .live_actors
            .with_label_values(&["credential"])
            .get()
    };
    assert!(live() >= 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while live() != 0 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "actors never passivated: {}",
            live()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.cancel("rsv_z1").await?;
    rig.wait_settled("rsv_z1", "revoked").await?;
    assert_eq!(rig.passcodes(4), 0);
    rig.finish().await;
    Ok(())
}

/// DESIGN §12: at `validUntil` a durable timer revokes the credential as `expired`, so the
/// record and the door agree.
#[actix_rt::test]
async fn a_credential_is_revoked_as_expired_at_its_end() -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    let now = lockstep_domain::Clock::now(rig.rt.clock.as_ref());
    let (from, until) = (
        now - chrono::Duration::hours(1),
        now + chrono::Duration::milliseconds(1500),
    );
    rig.deliver(
        "c-e1",
        "melmastoon.reservation.confirmed.v1",
        serde_json::json!({ "reservationId": "rsv_e1", "revision": 1, "guestId": "gst_1", "roomIds": ["rmu_1"],
                            "validFrom": from.to_rfc3339(), "validUntil": until.to_rfc3339() }),
    )
    .await?;
    rig.wait_settled("rsv_e1", "active").await?;
    assert_eq!(rig.passcodes(1), 1);
    rig.wait_settled("rsv_e1", "revoked").await?;
    let c = &rig.credentials("rsv_e1").await?[0];
    assert_eq!(c.revoke_reason().map(|r| r.as_str()), Some("expired"));
    assert!(
        lockstep_domain::Clock::now(rig.rt.clock.as_ref()) >= until,
        "not before its end"
    );
    assert_eq!(rig.passcodes(1), 0, "gone from the door");
    rig.finish().await;
    Ok(())
}

/// Issue 5, point 5 (DESIGN §6): passcodes added and removed behind Lockstep's back are
/// found and repaired by the next reconciliation; a passcode someone else made is left.
#[actix_rt::test]
async fn drift_reconciliation_deletes_orphans_and_reissues_what_went_missing() -> anyhow::Result<()>
{
    use lockstep_vendors::LockPort as _;
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    rig.confirm_on("rsv_d1", 1, 20).await?;
    rig.confirm_on("rsv_d2", 2, 20).await?;
    rig.wait_settled("rsv_d1", "active").await?;
    rig.wait_settled("rsv_d2", "active").await?;
    let d1 = rig.credentials("rsv_d1").await?[0].id().as_str().to_owned();
    let pin_d1 = rig.sim.handle().passcodes(1)[0].keyboard_pwd.clone();

    // Behind Lockstep's back: rsv_d1's passcode is deleted at the lock, a stale Lockstep
    // passcode appears on lock 2, and the front desk adds one of its own on lock 3.
    let lock1 = lockstep_domain::DeviceRef::new("1");
    let held = rig.port.list(&lock1).await?;
    rig.port.revoke(&lock1, &held[0].vendor_ref).await?;
    let (start, end) = (1_800_000_000_000i64, 1_800_086_400_000i64);
    let stale = lockstep_domain::KeyCredentialId::generate();
    rig.sim
        .handle()
        .seed_passcode(2, "734519", stale.as_str(), start, end);
    rig.sim
        .handle()
        .seed_passcode(3, "246810", "Front desk", start, end);
    assert_eq!(
        (rig.passcodes(1), rig.passcodes(2), rig.passcodes(3)),
        (0, 2, 1)
    );

    let report = lockstep_actors::drift::reconcile_property(&rig.rt, rig.tenant, &rig.property, 0)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(
        (
            report.devices,
            report.orphans_deleted,
            report.missing_reissued
        ),
        (4, 1, 1),
        "{report:?}"
    );
    // the missing passcode is re-issued
    rig.wait_passcodes(1, 1).await?;
    let back = &rig.sim.handle().passcodes(1)[0];
    assert_eq!(back.keyboard_pwd_name, d1);
    assert_eq!(back.keyboard_pwd, pin_d1, "the guest's PIN is the same");
    assert_eq!(
        rig.passcodes(2),
        1,
        "only rsv_d2's passcode is left on lock 2"
    );
    assert_eq!(
        rig.passcodes(3),
        1,
        "the front desk's own passcode is left alone"
    );
    assert_eq!(
        rig.metric_sum("lockstep_drift_orphans_deleted_total{", "ttlock"),
        1.0
    );
    assert_eq!(
        rig.metric_sum("lockstep_drift_missing_reissued_total{", "ttlock"),
        1.0
    );
    // a second run finds nothing to do
    let again = lockstep_actors::drift::reconcile_property(&rig.rt, rig.tenant, &rig.property, 0)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!((again.orphans_deleted, again.missing_reissued), (0, 0));
    rig.finish().await;
    Ok(())
}

/// Issue 14: drift judges each of a lock's lists on its own. With TTLock's eKey list
/// failing, the passcode list is still reconciled (the missing PIN re-issued, the orphan
/// deleted); with the passcode list failing, no PIN is taken for missing (nothing is
/// re-issued twice) while the device's other lists are read. Before, one failing list
/// skipped the whole device.
#[actix_rt::test]
async fn drift_judges_each_list_of_a_lock_on_its_own() -> anyhow::Result<()> {
    use lockstep_vendors::LockPort as _;
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    rig.confirm_on("rsv_l1", 1, 20).await?;
    rig.wait_settled("rsv_l1", "active").await?;
    let lock1 = lockstep_domain::DeviceRef::new("1");
    let held = rig.port.list(&lock1).await?;
    rig.port.revoke(&lock1, &held[0].vendor_ref).await?;
    let stale = lockstep_domain::KeyCredentialId::generate();
    rig.sim.handle().seed_passcode(
        2,
        "734519",
        stale.as_str(),
        1_800_000_000_000,
        1_800_086_400_000,
    );

    rig.sim
        .handle()
        .update_faults(|f| f.fail_list = Some("passcodes".into()));
    let blind = lockstep_actors::drift::reconcile_property(&rig.rt, rig.tenant, &rig.property, 0)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(
        (blind.devices, blind.orphans_deleted, blind.missing_reissued),
        (4, 0, 0),
        "the passcode list unread: no PIN is judged missing or orphaned: {blind:?}"
    );

    rig.sim
        .handle()
        .update_faults(|f| f.fail_list = Some("ekeys".into()));
    let report = lockstep_actors::drift::reconcile_property(&rig.rt, rig.tenant, &rig.property, 0)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(
        (
            report.devices,
            report.orphans_deleted,
            report.missing_reissued
        ),
        (4, 1, 1),
        "the eKey list failing leaves the passcodes judged: {report:?}"
    );
    // the missing passcode is re-issued
    rig.wait_passcodes(1, 1).await?;
    assert_eq!(rig.passcodes(2), 0, "the orphan is gone");
    rig.finish().await;
    Ok(())
}

/// Issue 14, property deactivation: a confirmation accepted before its property's
/// deactivation entered, but stepped after it, issues nothing (its entry ends
/// `refused:property_deactivated`), while a key issued before stays the deactivation
/// step's to revoke. Intake refuses the later ones; this is the step's own guard, for
/// what was already queued. Fails without it: rsv_late's PIN reaches lock 2.
#[actix_rt::test]
async fn a_confirmation_stepped_after_its_propertys_deactivation_issues_nothing(
) -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    rig.confirm("rsv_before", 1).await?;
    rig.wait_settled("rsv_before", "active").await?;
    let now = lockstep_domain::Clock::now(rig.rt.clock.as_ref());
    rig.rt
        .store
        .record_property_deactivated(rig.tenant, &rig.property, now)
        .await?;
    rig.confirm("rsv_late", 2).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let outcome = rig
            .rt
            .store
            .message_outcome(rig.tenant, "c-rsv_late")
            .await?;
        if outcome == Some(Some("refused:property_deactivated".into())) {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "rsv_late's step never refused: {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rig.credentials("rsv_late").await?.is_empty());
    assert_eq!(rig.passcodes(2), 0, "nothing at the door");
    rig.finish().await;
    Ok(())
}

/// Issue 14: a property's devices are reconciled several at a time (through the adapter's
/// worker and its rate limit), not one after the other: with every vendor call taking
/// 150 ms at the simulator, the simulator sees more than one request in flight during a
/// pass over the rig's four locks, and the pass still judges every device (4 listed, 4
/// probed). One device at a time, `max_in_flight` stays 1.
#[actix_rt::test]
async fn a_drift_pass_reconciles_a_propertys_devices_concurrently() -> anyhow::Result<()> {
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    rig.sim
        .handle()
        .set_faults(lockstep_vendors::ttlock::simulator::SimFaults {
            latency_ms: 150,
            ..Default::default()
        });
    let report = lockstep_actors::drift::reconcile_property(&rig.rt, rig.tenant, &rig.property, 0)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!((report.devices, report.probed), (4, 4), "{report:?}");
    let most = rig.sim.handle().counters().max_in_flight;
    assert!(
        most > 1,
        "the four devices' calls never overlapped: {most} at most in flight"
    );
    rig.finish().await;
    Ok(())
}

/// Spec 003 §2 / spec 002 device events: the drift loop reads each device's health through
/// its worker and raises edge-triggered signals, stored with their events in one commit:
/// a lock going offline (once, however long it stays away), coming back, a battery
/// crossing its threshold (D-4) and a clock more than 10 minutes off (health_alert); a
/// clock 5–10 minutes off is a warning, counted but not published.
#[actix_rt::test]
async fn device_probes_raise_offline_online_battery_and_clock_signals_once() -> anyhow::Result<()> {
    use lockstep_domain::{DeviceSignal, LockDeviceId, SkewLevel};
    let rig = Rig::start(WorkerSettings::simulator()).await?;
    let lock2 = LockDeviceId::from_ulid(ulid::Ulid::from_parts(2, 1));
    let probe_all = || async {
        lockstep_actors::drift::reconcile_property(&rig.rt, rig.tenant, &rig.property, 0)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let first = probe_all().await?;
    assert_eq!(
        (first.probed, first.signals),
        (4, 0),
        "healthy locks: {first:?}"
    );
    let health = rig
        .rt
        .store
        .device_health(rig.tenant, &lock2)
        .await?
        .expect("known");
    let reading = health.last.expect("probed");
    assert!(reading.online);
    assert_eq!(reading.battery_percent, Some(87));
    assert!(health.last_seen_at.is_some());

    let h = rig.sim.handle();
    let device = rig
        .rt
        .store
        .devices_for_rooms(
            rig.tenant,
            &rig.property,
            &[lockstep_domain::RoomId::parse("rmu_2")?],
        )
        .await?
        .remove(0);
    let probe2 = || async {
        lockstep_actors::drift::probe_device(&rig.rt, rig.tenant, &rig.property, &device)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    h.update_lock_health(2, |l| l.offline = true);
    assert_eq!(probe2().await?, vec![DeviceSignal::Offline]);
    assert_eq!(probe2().await?, vec![], "still offline: said once");
    h.update_lock_health(2, |l| l.offline = false);
    assert_eq!(probe2().await?, vec![DeviceSignal::Online]);
    h.update_lock_health(2, |l| l.battery_percent = 15);
    assert_eq!(
        probe2().await?,
        vec![DeviceSignal::BatteryLow {
            percent: 15,
            threshold: 25
        }]
    );
    assert_eq!(probe2().await?, vec![], "still low: said once");
    h.update_lock_health(2, |l| l.clock_skew = chrono::Duration::minutes(7));
    assert!(matches!(
        probe2().await?.as_slice(),
        [DeviceSignal::ClockSkew {
            level: SkewLevel::Warn,
            ..
        }]
    ));
    h.update_lock_health(2, |l| l.clock_skew = chrono::Duration::minutes(-12));
    assert!(matches!(
        probe2().await?.as_slice(),
        [DeviceSignal::ClockSkew {
            level: SkewLevel::Alert,
            ..
        }]
    ));
    // a vendor outage is not a lock going offline
    h.update_faults(|f| f.outage = true);
    assert!(probe2().await.is_err());
    h.update_faults(|f| f.outage = false);
    let stored = rig
        .rt
        .store
        .device_health(rig.tenant, &lock2)
        .await?
        .expect("known");
    assert!(
        stored.last.expect("probed").online,
        "the outage left the reading alone"
    );

    assert_eq!(
        rig.outbox_subjects(lock2.as_str()).await?,
        vec![
            "melmastoon.lock.device.offline.v1",
            "melmastoon.lock.device.online.v1",
            "melmastoon.lock.device.battery_low.v1",
            "melmastoon.lock.device.health_alert.v1",
        ]
    );
    assert_eq!(
        rig.metric("lockstep_device_signals_total{signal=\"clock_skew_warn\",vendor=\"ttlock\"}"),
        1.0
    );
    rig.finish().await;
    Ok(())
}

/// Issue 12 with I-7: a key a desk minted offline for a stay (materialized by the
/// reconciler, beside the saga's own) leaves with the stay: a cancellation revokes the
/// saga's key and the desk's, each with its `revoked.v1`. Without the saga looking for
/// them, the desk's key stayed `active` after the guest was gone.
#[actix_rt::test]
async fn a_cancellation_revokes_the_desks_provisional_key_of_the_stay_too() -> anyhow::Result<()> {
    use lockstep_domain::{
        HolderKind, IssueIntent, KeyCredential, KeyCredentialId, KeyCredentialScope,
        KeyCredentialState, RevokeReason, RoomId, ScopedRoom,
    };
    use lockstep_persistence::{CredentialWrite, UnitOfWork};

    let rig = Rig::start(WorkerSettings::simulator()).await?;
    rig.confirm("rsv_p1", 1).await?;
    rig.wait_settled("rsv_p1", "active").await?;
    let own = rig.credentials("rsv_p1").await?[0].clone();

    // the desk's card for the stay's second room, stored as the reconciler stores it
    let now = rig.rt.clock.now();
    let mut desk = KeyCredential::request(
        IssueIntent {
            id: KeyCredentialId::generate(),
            tenant_id: rig.tenant,
            property_id: rig.property.clone(),
            holder_kind: HolderKind::Guest,
            reservation_id: own.reservation_id().cloned(),
            guest_id: own.guest_id().cloned(),
            staff_user_id: None,
            kind: own.kind(),
            rooms: vec![ScopedRoom {
                tenant_id: rig.tenant,
                property_id: rig.property.clone(),
                room_id: RoomId::parse("rmu_2")?,
            }],
            scope: KeyCredentialScope::default(),
            validity: own.validity(),
            vendor: own.vendor(),
            vendor_adapter_id: own.vendor_adapter_id().clone(),
            provisional: true,
            idempotency_key: "provisional:test:1".into(),
            replaces_id: None,
            trace_id: None,
        },
        now,
    )?;
    desk.mark_pending(now)?;
    desk.mark_active(now)?;
    let _ = desk.take_pending_events();
    let desk_id = desk.id().clone();
    let mut uow = UnitOfWork::new(rig.tenant, None, now);
    uow.credentials.push(CredentialWrite {
        snapshot: desk.snapshot(),
        expected_version: None,
    });
    rig.rt.store.commit(uow).await?;

    rig.cancel("rsv_p1").await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let creds = rig.credentials("rsv_p1").await?;
        let state_of = |id: &KeyCredentialId| {
            creds
                .iter()
                .find(|c| c.id() == id)
                .map(|c| (c.state(), c.revoke_reason()))
        };
        if state_of(&desk_id).map(|s| s.0) == Some(KeyCredentialState::Revoked)
            && state_of(own.id()).map(|s| s.0) == Some(KeyCredentialState::Revoked)
        {
            assert_eq!(
                state_of(&desk_id).and_then(|s| s.1),
                Some(RevokeReason::Cancellation)
            );
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "both keys revoked after the cancellation: {:?}",
            creds
                .iter()
                .map(|c| (c.id().as_str().to_owned(), c.state(), c.provisional()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let subjects = rig.outbox_subjects(desk_id.as_str()).await?;
    assert!(
        subjects
            .iter()
            .any(|s| s.ends_with("credential.revoked.v1")),
        "the desk's key has its revoked.v1: {subjects:?}"
    );
    rig.finish().await;
    Ok(())
}
