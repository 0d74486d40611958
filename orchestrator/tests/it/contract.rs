//! The event contract: checked-in schemas compile, produced envelopes conform, consumed
//! envelopes are refused for the right reasons.

use chrono::{TimeZone, Utc};
use lockstep_actors::events_in::Rejection;
use lockstep_actors::events_out;
use lockstep_domain::{
    FailureReason, HolderKind, IssueIntent, KeyCredential, KeyCredentialId, KeyCredentialKind,
    PropertyId, ReservationId, RevokeReason, RoomId, ScopedRoom, TenantId, ValidityWindow,
    VendorAdapterId, VendorCode,
};
use lockstep_orchestrator::schema::EventSchemas;

use crate::harness::confirmed;

fn credential() -> KeyCredential {
    let tenant = TenantId::generate();
    let property = PropertyId::parse("ppt_1").unwrap();
    KeyCredential::request(
        IssueIntent {
            id: KeyCredentialId::generate(),
            tenant_id: tenant,
            property_id: property.clone(),
            holder_kind: HolderKind::Guest,
            reservation_id: Some(ReservationId::parse("rsv_1").unwrap()),
            guest_id: Some(lockstep_domain::GuestId::parse("gst_1").unwrap()),
            staff_user_id: None,
            kind: KeyCredentialKind::PinCode,
            rooms: vec![ScopedRoom {
                tenant_id: tenant,
                property_id: property,
                room_id: RoomId::parse("rmu_1").unwrap(),
            }],
            scope: Default::default(),
            validity: ValidityWindow::new(
                Utc.with_ymd_and_hms(2027, 1, 1, 14, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2027, 1, 2, 11, 0, 0).unwrap(),
            )
            .unwrap(),
            vendor: VendorCode::Ttlock,
            vendor_adapter_id: VendorAdapterId::generate(),
            provisional: false,
            idempotency_key: "evt-1".into(),
            replaces_id: None,
            trace_id: Some("trace-1".into()),
        },
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
    )
    .unwrap()
}

fn master() -> KeyCredential {
    let tenant = TenantId::generate();
    let property = PropertyId::parse("ppt_1").unwrap();
    KeyCredential::request(
        IssueIntent {
            id: KeyCredentialId::generate(),
            tenant_id: tenant,
            property_id: property.clone(),
            holder_kind: HolderKind::StaffMaster,
            reservation_id: None,
            guest_id: None,
            staff_user_id: Some(lockstep_domain::UserId::parse("usr_1").unwrap()),
            kind: KeyCredentialKind::PinCode,
            rooms: vec![ScopedRoom {
                tenant_id: tenant,
                property_id: property,
                room_id: RoomId::parse("rmu_1").unwrap(),
            }],
            scope: Default::default(),
            validity: ValidityWindow::new(
                Utc.with_ymd_and_hms(2027, 1, 1, 6, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2027, 1, 1, 14, 0, 0).unwrap(),
            )
            .unwrap(),
            vendor: VendorCode::Ttlock,
            vendor_adapter_id: VendorAdapterId::generate(),
            provisional: false,
            idempotency_key: "shift-1".into(),
            replaces_id: None,
            trace_id: None,
        },
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
    )
    .unwrap()
}

#[test]
fn every_produced_event_conforms_to_its_schema() {
    let schemas = EventSchemas::new();
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let mut events = Vec::new();
    let mut a = credential();
    a.mark_pending(now).unwrap();
    a.mark_active(now).unwrap();
    a.revoke(RevokeReason::Cancellation, now).unwrap();
    events.extend(a.take_pending_events());
    let mut b = credential();
    b.mark_failed(FailureReason::CancelledMidFlight, now)
        .unwrap();
    events.extend(b.take_pending_events());
    let mut c = credential();
    c.mark_pending(now).unwrap();
    c.mark_active(now).unwrap();
    c.suspend(lockstep_domain::SuspendReason::FraudReview, now)
        .unwrap();
    c.unsuspend(now).unwrap();
    c.update(
        lockstep_domain::UpdateInput {
            valid_until: Some(Utc.with_ymd_and_hms(2027, 1, 3, 11, 0, 0).unwrap()),
            ..Default::default()
        },
        now,
    )
    .unwrap();
    events.extend(c.take_pending_events());
    let mut m = master();
    m.mark_pending(now).unwrap();
    m.mark_active(now).unwrap();
    m.revoke(RevokeReason::Expired, now).unwrap();
    let master_events = m.take_pending_events();
    let master_rows: Vec<_> = master_events
        .iter()
        .filter_map(|e| events_out::master_row(e, now))
        .collect();
    assert_eq!(
        master_rows.len(),
        2,
        "master_key.issued and master_key.expired"
    );
    events.extend(master_events);
    assert_eq!(events.len(), 13);
    for row in master_rows {
        schemas
            .check_produced(&row.envelope)
            .unwrap_or_else(|err| panic!("{}: {err}", row.topic));
    }
    // a door attempt (A-3 clamps a future vendor time; the schema takes either)
    let attempt = lockstep_domain::KeyCredentialAttempt::record(
        a.tenant_id(),
        lockstep_domain::AttemptReport {
            vendor_event_id: "1001:1635556821".into(),
            attempted_at: now,
            granted: false,
            device_id: lockstep_domain::LockDeviceId::generate(),
            property_id: a.property_id().clone(),
            vendor: lockstep_domain::VendorCode::Ttlock,
            method: "pin_code",
        },
        Some(&a),
        now,
    )
    .expect("same tenant and property");
    let row = events_out::attempt_row(&attempt);
    schemas
        .check_produced(&row.envelope)
        .unwrap_or_else(|err| panic!("{}: {err}", row.topic));
    assert_eq!(row.envelope["data"]["denyReason"], "revoked");
    for e in &events {
        let row = events_out::outbox_row(e, now);
        schemas
            .check_produced(&row.envelope)
            .unwrap_or_else(|err| panic!("{}: {err}", e.kind.subject()));
        assert_eq!(row.envelope["subject"], e.kind.subject());
    }
}

/// Every failure reason, guest or master, is one `credential.failed.v1`'s schema takes
/// (issue 14 added `scope_unresolvable`, a master whose scope names no door).
#[test]
fn a_failed_event_conforms_to_its_schema_for_every_failure_reason() {
    let schemas = EventSchemas::new();
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    for reason in FailureReason::ALL {
        for mut c in [credential(), master()] {
            c.mark_failed(*reason, now).unwrap();
            for e in c.take_pending_events() {
                let row = events_out::outbox_row(&e, now);
                schemas
                    .check_produced(&row.envelope)
                    .unwrap_or_else(|err| panic!("{}: {err}", reason.as_str()));
                if e.kind.subject().ends_with("failed.v1") {
                    assert_eq!(row.envelope["data"]["reason"], reason.as_str());
                }
            }
        }
    }
}

#[test]
fn consumed_envelopes_are_refused_for_the_right_reason() {
    let s = EventSchemas::new();
    let tenant = "5f0c7a4e-7a2b-4c1d-9e8f-0a1b2c3d4e5f";
    let good = confirmed(
        "e1",
        tenant,
        "ppt_1",
        "rsv_1",
        1,
        &["rmu_1"],
        "2027-01-01T14:00:00Z",
        "2027-01-02T11:00:00Z",
    );
    assert!(s.check_consumed(&good).is_ok());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{".to_vec(), "malformed"),
        (b"[]".to_vec(), "malformed"),
        (vec![b' '; 70_000], "malformed"),
        (
            confirmed(
                "e1",
                "tnt_not_a_uuid",
                "ppt_1",
                "rsv_1",
                1,
                &["rmu_1"],
                "2027-01-01T14:00:00Z",
                "2027-01-02T11:00:00Z",
            ),
            "malformed",
        ),
        (
            confirmed(
                "e1",
                tenant,
                "ppt_1",
                "rsv_1",
                0,
                &["rmu_1"],
                "2027-01-01T14:00:00Z",
                "2027-01-02T11:00:00Z",
            ),
            "invalid_payload",
        ),
        (
            confirmed(
                "e1",
                tenant,
                "ppt_1",
                "rsv_1",
                1,
                &[],
                "2027-01-01T14:00:00Z",
                "2027-01-02T11:00:00Z",
            ),
            "invalid_payload",
        ),
        (
            confirmed(
                "e1",
                tenant,
                "ppt_1",
                "rsv_1",
                1,
                &["rmu_1"],
                "2027-01-03T14:00:00Z",
                "2027-01-02T11:00:00Z",
            ),
            "invalid_payload",
        ),
        (
            confirmed(
                "e1",
                tenant,
                "ppt_1",
                "rsv 1; drop",
                1,
                &["rmu_1"],
                "2027-01-01T14:00:00Z",
                "2027-01-02T11:00:00Z",
            ),
            "invalid_payload",
        ),
    ];
    for (body, want) in cases {
        let got = s.check_consumed(&body).expect_err("must be refused");
        assert_eq!(got.label(), want, "{got}");
    }
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["subject"] = "melmastoon.reservation.confirmed.v9".into();
    assert_eq!(
        s.check_consumed(&serde_json::to_vec(&v).unwrap())
            .unwrap_err(),
        Rejection::UnknownSubject
    );
    v["subject"] = "melmastoon.reservation.confirmed.v1".into();
    v["data"]["pii"] = "guest@example.com".into();
    assert_eq!(
        s.check_consumed(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .label(),
        "invalid_payload",
        "unknown fields (PII) are refused"
    );
}

/// Spec 002's device events: every row the registry and the health probe produce validates
/// against its checked-in schema, and none carries the vendor's device reference.
#[test]
fn device_events_match_their_schemas_and_carry_no_vendor_device_ref() {
    use lockstep_domain::{
        assess, BatteryThreshold, DeviceHealth, DeviceSignal, LockDeviceId, PropertyId, SkewLevel,
        TenantId, VendorCode,
    };
    let schemas = EventSchemas::new();
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let (tenant, property, device) = (
        TenantId::generate(),
        PropertyId::parse("ppt_events").unwrap(),
        LockDeviceId::generate(),
    );
    let subject = events_out::DeviceSubject {
        tenant_id: tenant,
        property_id: &property,
        device_id: &device,
        vendor: VendorCode::Ttlock,
    };
    let mut rows = vec![events_out::device_row(
        events_out::device::REGISTERED,
        subject,
        serde_json::json!({ "label": "Room 204 door", "roomIds": ["rmu_204"] }),
        now,
    )];
    // a door of an area (issue 14): its area is one of the spec's six
    let gym = events_out::device_row(
        events_out::device::REGISTERED,
        subject,
        serde_json::json!({ "label": "Gym", "roomIds": [], "area": "gym" }),
        now,
    );
    schemas
        .check_produced(&gym.envelope)
        .unwrap_or_else(|err| panic!("an area door's registration: {err}"));
    let roof = events_out::device_row(
        events_out::device::REGISTERED,
        subject,
        serde_json::json!({ "label": "Roof", "roomIds": [], "area": "roof" }),
        now,
    );
    assert!(schemas.check_produced(&roof.envelope).is_err());
    let healthy = DeviceHealth::new(true, Some(80), None, Some(0)).unwrap();
    let sick = DeviceHealth::new(false, Some(9), None, Some(11 * 60_000)).unwrap();
    let signals = assess(Some(&healthy), &sick, BatteryThreshold::DEFAULT);
    assert_eq!(
        signals,
        vec![
            DeviceSignal::Offline,
            DeviceSignal::BatteryLow {
                percent: 9,
                threshold: 25
            },
            DeviceSignal::ClockSkew {
                level: SkewLevel::Alert,
                skew_ms: 11 * 60_000
            }
        ]
    );
    rows.extend(events_out::device_signal_rows(
        subject, &signals, &sick, now,
    ));
    let back = assess(Some(&sick), &healthy, BatteryThreshold::DEFAULT);
    rows.extend(events_out::device_signal_rows(
        subject, &back, &healthy, now,
    ));
    // issue 14: repeated probe refusals are a health alert; a retired device its own event
    let refused = lockstep_domain::assess_probe_failure(lockstep_domain::PROBE_FAILURES_ALERT)
        .expect("the limit raises the alert");
    rows.extend(events_out::device_signal_rows(
        subject,
        &[refused],
        &healthy,
        now,
    ));
    rows.push(events_out::decommissioned_row(subject, now));
    let subjects: Vec<_> = rows.iter().map(|r| r.topic.clone()).collect();
    assert_eq!(
        subjects,
        vec![
            events_out::device::REGISTERED,
            events_out::device::OFFLINE,
            events_out::device::BATTERY_LOW,
            events_out::device::HEALTH_ALERT,
            events_out::device::ONLINE,
            events_out::device::HEALTH_ALERT,
            events_out::device::DECOMMISSIONED,
        ]
    );
    assert_eq!(rows[5].envelope["data"]["check"], "probe_failures");
    assert_eq!(rows[5].envelope["data"]["consecutiveFailures"], 3);
    // a clock_skew alert without its reading does not conform
    let mut bare = rows[3].envelope.clone();
    bare["data"]
        .as_object_mut()
        .expect("data")
        .remove("clockSkewMs");
    assert!(schemas.check_produced(&bare).is_err());
    // a warning-level skew (over 5 minutes) is a log line and a metric, not an event
    let warn = assess(
        Some(&healthy),
        &DeviceHealth::new(true, Some(80), None, Some(6 * 60_000)).unwrap(),
        BatteryThreshold::DEFAULT,
    );
    assert_eq!(warn.len(), 1);
    assert!(events_out::device_signal_rows(subject, &warn, &healthy, now).is_empty());
    for row in &rows {
        schemas
            .check_produced(&row.envelope)
            .unwrap_or_else(|err| panic!("{}: {err}", row.topic));
        let text = row.envelope.to_string();
        assert!(!text.contains("vendorDeviceRef") && !text.contains("deviceRef"));
    }
}
