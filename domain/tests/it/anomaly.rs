//! Door anomaly rules (US-MEL-0079): each rule fires on what it is about and on nothing
//! next to it; the windowed rules answer the same when an attempt is judged again, and
//! whatever order the vendor's records arrive in.

use chrono::Duration;
use lockstep_domain::master::CommonArea;
use lockstep_domain::{
    Anomaly, AnomalyDetail, AnomalyDetector, AnomalyRule, AnomalyRules, AnomalyRulesInput,
    AttemptContext, AttemptReport, CredentialStatus, DomainError, KeyCredential,
    KeyCredentialAttempt, KeyCredentialScope, KeyCredentialState, LockDeviceId, RevokeReason,
    RoomId, RuleInput, SuspendReason, Timestamp, VendorCode, WindowLimits,
};
use proptest::prelude::*;

use crate::builders::*;

fn device(n: u16) -> LockDeviceId {
    LockDeviceId::from_ulid(ulid::Ulid::from_parts(
        1_700_000_000_000,
        10_000 + u128::from(n),
    ))
}

/// An attempt at `dev`, reported by the vendor as event `event`, ingested a minute later.
fn attempt(
    cred: Option<&KeyCredential>,
    dev: &LockDeviceId,
    at: Timestamp,
    granted: bool,
    event: &str,
) -> KeyCredentialAttempt {
    KeyCredentialAttempt::record(
        tenant(),
        AttemptReport {
            vendor_event_id: event.into(),
            attempted_at: at,
            granted,
            device_id: dev.clone(),
            property_id: property(),
            vendor: VendorCode::Ttlock,
            method: "pin_code",
        },
        cred,
        at + Duration::minutes(1),
    )
    .expect("same tenant and property")
}

fn rules_of(rules: &[Anomaly]) -> Vec<AnomalyRule> {
    rules.iter().map(Anomaly::rule).collect()
}

/// Every rule on one attempt, with a fresh memory.
fn judge(
    rules: &AnomalyRules,
    cred: Option<&KeyCredential>,
    rooms: &[RoomId],
    a: &KeyCredentialAttempt,
) -> Vec<Anomaly> {
    AnomalyDetector::default().detect(
        rules,
        &AttemptContext {
            attempt: a,
            credential: cred,
            device_rooms: rooms,
            device_area: None,
        },
    )
}

fn own_room() -> Vec<RoomId> {
    vec![room_id("rmu_101")]
}

fn active_guest() -> KeyCredential {
    a_key_credential().in_state(KeyCredentialState::Active)
}

fn during() -> Timestamp {
    valid_from() + Duration::hours(5)
}

fn only(rule: AnomalyRule) -> AnomalyRules {
    let off = RuleInput {
        enabled: Some(false),
        ..RuleInput::default()
    };
    let on = RuleInput::default();
    let pick = |r: AnomalyRule| if r == rule { on.clone() } else { off.clone() };
    AnomalyRules::new(AnomalyRulesInput {
        invalid_credential_entry: pick(AnomalyRule::InvalidCredentialEntry),
        wrong_room: pick(AnomalyRule::WrongRoom),
        master_outside_shift: pick(AnomalyRule::MasterOutsideShift),
        denied_burst: pick(AnomalyRule::DeniedBurst),
        impossible_travel: pick(AnomalyRule::ImpossibleTravel),
    })
    .expect("valid rules")
}

#[test]
fn normal_use_of_an_active_key_in_its_room_and_window_is_no_anomaly() {
    let c = active_guest();
    let a = attempt(Some(&c), &device(1), during(), true, "e1");
    assert!(judge(&AnomalyRules::default(), Some(&c), &own_room(), &a).is_empty());
    let typo = attempt(None, &device(1), during(), false, "e2");
    assert!(judge(&AnomalyRules::default(), None, &own_room(), &typo).is_empty());
}

#[test]
fn entry_with_a_key_revoked_before_the_attempt_is_an_invalid_credential_entry() {
    let mut c = active_guest();
    let revoked_at = during();
    c.revoke(RevokeReason::Cancellation, revoked_at).unwrap();
    let rules = AnomalyRules::default();
    let after = attempt(
        Some(&c),
        &device(1),
        revoked_at + Duration::minutes(10),
        true,
        "e1",
    );
    let found = judge(&rules, Some(&c), &own_room(), &after);
    assert_eq!(
        found.iter().map(|a| a.detail.clone()).collect::<Vec<_>>(),
        vec![AnomalyDetail::InvalidCredentialEntry {
            status: CredentialStatus::Revoked,
            since: revoked_at
        }]
    );
    assert_eq!(found[0].attempt_id, after.id);
    // the entry happened before the revocation; only its record arrived after
    let before = attempt(
        Some(&c),
        &device(1),
        revoked_at - Duration::minutes(10),
        true,
        "e2",
    );
    assert!(judge(&rules, Some(&c), &own_room(), &before).is_empty());
    // inside the grace for the lock's clock
    let close = attempt(
        Some(&c),
        &device(1),
        revoked_at + Duration::seconds(30),
        true,
        "e3",
    );
    assert!(judge(&rules, Some(&c), &own_room(), &close).is_empty());
    // the door did its job
    let denied = attempt(
        Some(&c),
        &device(1),
        revoked_at + Duration::minutes(10),
        false,
        "e4",
    );
    assert!(judge(&rules, Some(&c), &own_room(), &denied).is_empty());
}

#[test]
fn entry_with_a_suspended_key_is_an_invalid_credential_entry() {
    let mut c = active_guest();
    c.suspend(SuspendReason::FraudReview, during()).unwrap();
    let a = attempt(
        Some(&c),
        &device(1),
        during() + Duration::hours(1),
        true,
        "e1",
    );
    let found = judge(&AnomalyRules::default(), Some(&c), &own_room(), &a);
    assert_eq!(
        found[0].detail,
        AnomalyDetail::InvalidCredentialEntry {
            status: CredentialStatus::Suspended,
            since: during()
        }
    );
}

#[test]
fn entry_outside_the_keys_window_is_expired_or_not_yet_valid() {
    let c = active_guest();
    let rules = AnomalyRules::default();
    let late = attempt(
        Some(&c),
        &device(1),
        valid_until() + Duration::hours(2),
        true,
        "e1",
    );
    assert_eq!(
        judge(&rules, Some(&c), &own_room(), &late)[0].detail,
        AnomalyDetail::InvalidCredentialEntry {
            status: CredentialStatus::Expired,
            since: valid_until()
        }
    );
    let early = attempt(
        Some(&c),
        &device(1),
        valid_from() - Duration::hours(3),
        true,
        "e2",
    );
    assert_eq!(
        judge(&rules, Some(&c), &own_room(), &early)[0].detail,
        AnomalyDetail::InvalidCredentialEntry {
            status: CredentialStatus::NotYetValid,
            since: valid_from()
        }
    );
    // a lock a little ahead or behind is not an anomaly
    let edge = attempt(
        Some(&c),
        &device(1),
        valid_until() + Duration::seconds(59),
        true,
        "e3",
    );
    assert!(judge(&rules, Some(&c), &own_room(), &edge).is_empty());
    // the validity timer's revocation reads as expired too
    let mut expired = active_guest();
    expired
        .revoke(RevokeReason::Expired, valid_until() - Duration::hours(1))
        .unwrap();
    let a = attempt(
        Some(&expired),
        &device(1),
        valid_until() - Duration::minutes(30),
        true,
        "e4",
    );
    assert_eq!(
        rules_of(&judge(&rules, Some(&expired), &own_room(), &a)),
        vec![AnomalyRule::InvalidCredentialEntry]
    );
}

#[test]
fn the_entry_grace_is_configurable() {
    let mut c = active_guest();
    c.revoke(RevokeReason::Lost, during()).unwrap();
    let a = attempt(
        Some(&c),
        &device(1),
        during() + Duration::seconds(10),
        true,
        "e1",
    );
    assert!(judge(&AnomalyRules::default(), Some(&c), &own_room(), &a).is_empty());
    let strict = AnomalyRules::new(AnomalyRulesInput {
        invalid_credential_entry: RuleInput {
            grace_secs: Some(0),
            ..RuleInput::default()
        },
        ..AnomalyRulesInput::default()
    })
    .unwrap();
    assert_eq!(
        rules_of(&judge(&strict, Some(&c), &own_room(), &a)),
        vec![AnomalyRule::InvalidCredentialEntry]
    );
}

#[test]
fn a_key_opening_a_door_that_serves_none_of_its_rooms_is_wrong_room() {
    let c = active_guest();
    let rules = AnomalyRules::default();
    let elsewhere = vec![room_id("rmu_205")];
    let a = attempt(Some(&c), &device(2), during(), true, "e1");
    let found = judge(&rules, Some(&c), &elsewhere, &a);
    assert_eq!(
        found[0].detail,
        AnomalyDetail::WrongRoom {
            credential_rooms: own_room(),
            device_rooms: elsewhere.clone()
        }
    );
    // a common-area door serves no room of a guest either
    assert_eq!(
        rules_of(&judge(&rules, Some(&c), &[], &a)),
        vec![AnomalyRule::WrongRoom]
    );
    // a device serving the room among others (a suite's door) is the key's own
    let suite = vec![room_id("rmu_100"), room_id("rmu_101")];
    assert!(judge(&rules, Some(&c), &suite, &a).is_empty());
    // a denied try at the wrong door counts only when asked for
    let denied = attempt(Some(&c), &device(2), during(), false, "e2");
    assert!(judge(&rules, Some(&c), &elsewhere, &denied).is_empty());
    let strict = AnomalyRules::new(AnomalyRulesInput {
        wrong_room: RuleInput {
            include_denied: Some(true),
            ..RuleInput::default()
        },
        ..AnomalyRulesInput::default()
    })
    .unwrap();
    assert_eq!(
        rules_of(&judge(&strict, Some(&c), &elsewhere, &denied)),
        vec![AnomalyRule::WrongRoom]
    );
}

#[test]
fn a_master_scoped_by_areas_is_judged_by_its_areas_doors() {
    let shift = valid_from();
    // lobby and gym (the builder's scope)
    let areas = a_master_key()
        .window(shift, shift + Duration::hours(8))
        .in_state(KeyCredentialState::Active);
    let at = |area: Option<CommonArea>, rooms: &[RoomId], id: &str| {
        let a = attempt(
            Some(&areas),
            &device(9),
            shift + Duration::hours(1),
            true,
            id,
        );
        rules_of(&AnomalyDetector::default().detect(
            &AnomalyRules::default(),
            &AttemptContext {
                attempt: &a,
                credential: Some(&areas),
                device_rooms: rooms,
                device_area: area,
            },
        ))
    };
    assert!(
        at(Some(CommonArea::Gym), &[], "e1").is_empty(),
        "its gym door"
    );
    assert_eq!(
        at(Some(CommonArea::Pool), &[], "e2"),
        vec![AnomalyRule::WrongRoom],
        "the pool is not its area"
    );
    assert_eq!(
        at(None, &[room_id("rmu_301")], "e3"),
        vec![AnomalyRule::WrongRoom],
        "a guest room it was not given"
    );
    let rooms = a_master_key()
        .scope(KeyCredentialScope::default())
        .rooms(vec![room("rmu_101"), room("rmu_102")])
        .window(shift, shift + Duration::hours(8))
        .in_state(KeyCredentialState::Active);
    let b = attempt(
        Some(&rooms),
        &device(3),
        shift + Duration::hours(1),
        true,
        "e4",
    );
    assert_eq!(
        rules_of(&judge(
            &AnomalyRules::default(),
            Some(&rooms),
            &[room_id("rmu_301")],
            &b
        )),
        vec![AnomalyRule::WrongRoom]
    );
}

#[test]
fn a_master_tried_outside_its_shift_is_master_outside_shift_and_nothing_else() {
    let shift = valid_from();
    let m = a_master_key()
        .scope(KeyCredentialScope::default())
        .rooms(vec![room("rmu_101")])
        .window(shift, shift + Duration::hours(8))
        .in_state(KeyCredentialState::Active);
    let rules = AnomalyRules::default();
    let night = attempt(
        Some(&m),
        &device(1),
        shift + Duration::hours(10),
        true,
        "e1",
    );
    let found = judge(&rules, Some(&m), &own_room(), &night);
    assert_eq!(
        found.iter().map(|a| a.detail.clone()).collect::<Vec<_>>(),
        vec![AnomalyDetail::MasterOutsideShift {
            shift: m.validity()
        }],
        "not also an expired entry"
    );
    // a denied try before the shift is reported too
    let early = attempt(
        Some(&m),
        &device(1),
        shift - Duration::hours(1),
        false,
        "e2",
    );
    assert_eq!(
        rules_of(&judge(&rules, Some(&m), &own_room(), &early)),
        vec![AnomalyRule::MasterOutsideShift]
    );
    // finishing a room just after the shift's end is within the grace
    let finishing = attempt(
        Some(&m),
        &device(1),
        shift + Duration::hours(8) + Duration::minutes(4),
        true,
        "e3",
    );
    assert!(judge(&rules, Some(&m), &own_room(), &finishing).is_empty());
    // with the rule off, the entry is still an expired key's
    let entry_only = only(AnomalyRule::InvalidCredentialEntry);
    assert_eq!(
        judge(&entry_only, Some(&m), &own_room(), &night)[0].detail,
        AnomalyDetail::InvalidCredentialEntry {
            status: CredentialStatus::Expired,
            since: m.validity().until()
        }
    );
    // the shift's end revokes the master (`expired`): finishing the room is still fine
    let mut ended = m.clone();
    ended
        .revoke(RevokeReason::Expired, shift + Duration::hours(8))
        .unwrap();
    assert!(judge(&rules, Some(&ended), &own_room(), &finishing).is_empty());
    // a master revoked for security mid-shift that still opens a door is an invalid entry
    let mut pulled = m.clone();
    pulled
        .revoke(RevokeReason::Security, shift + Duration::hours(2))
        .unwrap();
    let used = attempt(
        Some(&pulled),
        &device(1),
        shift + Duration::hours(3),
        true,
        "e5",
    );
    assert_eq!(
        judge(&rules, Some(&pulled), &own_room(), &used)[0].detail,
        AnomalyDetail::InvalidCredentialEntry {
            status: CredentialStatus::Revoked,
            since: shift + Duration::hours(2)
        }
    );
    // a guest's late entry is never a master's
    let g = active_guest();
    let late = attempt(
        Some(&g),
        &device(1),
        valid_until() + Duration::hours(2),
        true,
        "e4",
    );
    assert_eq!(
        rules_of(&judge(&rules, Some(&g), &own_room(), &late)),
        vec![AnomalyRule::InvalidCredentialEntry]
    );
}

fn observe(
    det: &mut AnomalyDetector,
    rules: &AnomalyRules,
    cred: Option<&KeyCredential>,
    rooms: &[RoomId],
    a: &KeyCredentialAttempt,
) -> Vec<AnomalyRule> {
    rules_of(&det.detect(
        rules,
        &AttemptContext {
            attempt: a,
            credential: cred,
            device_rooms: rooms,
            device_area: None,
        },
    ))
}

#[test]
fn the_fifth_denial_within_the_window_at_one_device_is_a_denied_burst_reported_once() {
    let rules = AnomalyRules::default();
    let mut det = AnomalyDetector::default();
    let t0 = during();
    let mut fired = vec![];
    for i in 0..9 {
        let a = attempt(
            None,
            &device(1),
            t0 + Duration::seconds(20 * i),
            false,
            &format!("d{i}"),
        );
        if !observe(&mut det, &rules, None, &own_room(), &a).is_empty() {
            fired.push(i);
        }
    }
    assert_eq!(fired, vec![4], "once, at the threshold");
    // another device's denials are its own
    let other = attempt(None, &device(2), t0, false, "x0");
    assert!(observe(&mut det, &rules, None, &own_room(), &other).is_empty());
    // after a quiet spell a new burst is reported again
    let later = t0 + Duration::hours(2);
    let mut again = 0;
    for i in 0..5 {
        let a = attempt(
            None,
            &device(1),
            later + Duration::seconds(i),
            false,
            &format!("n{i}"),
        );
        again += observe(&mut det, &rules, None, &own_room(), &a).len();
    }
    assert_eq!(again, 1);
}

#[test]
fn denials_spread_wider_than_the_window_or_granted_tries_are_no_burst() {
    let rules = AnomalyRules::default();
    let mut det = AnomalyDetector::default();
    let c = active_guest();
    for i in 0..20 {
        // one typo every two minutes, each followed by the right PIN
        let t = during() + Duration::minutes(2 * i);
        let typo = attempt(None, &device(1), t, false, &format!("t{i}"));
        let ok = attempt(
            Some(&c),
            &device(1),
            t + Duration::seconds(8),
            true,
            &format!("o{i}"),
        );
        assert!(observe(&mut det, &rules, None, &own_room(), &typo).is_empty());
        assert!(observe(&mut det, &rules, Some(&c), &own_room(), &ok).is_empty());
    }
}

#[test]
fn the_burst_threshold_and_window_are_configurable() {
    let rules = AnomalyRules::new(AnomalyRulesInput {
        denied_burst: RuleInput {
            threshold: Some(3),
            window_secs: Some(10),
            ..RuleInput::default()
        },
        ..AnomalyRulesInput::default()
    })
    .unwrap();
    let mut det = AnomalyDetector::default();
    let n: usize = (0..3)
        .map(|i| {
            let a = attempt(
                None,
                &device(1),
                during() + Duration::seconds(4 * i),
                false,
                &format!("d{i}"),
            );
            observe(&mut det, &rules, None, &own_room(), &a).len()
        })
        .sum();
    assert_eq!(n, 1);
}

#[test]
fn one_key_at_two_doors_apart_within_seconds_is_impossible_travel() {
    let rules = AnomalyRules::default();
    let c = a_key_credential()
        .rooms(vec![room("rmu_101"), room("rmu_305")])
        .in_state(KeyCredentialState::Active);
    let mut det = AnomalyDetector::default();
    let here = attempt(Some(&c), &device(1), during(), true, "a");
    let there = attempt(
        Some(&c),
        &device(5),
        during() + Duration::seconds(2),
        true,
        "b",
    );
    assert!(observe(&mut det, &rules, Some(&c), &own_room(), &here).is_empty());
    let found = det.detect(
        &rules,
        &AttemptContext {
            attempt: &there,
            credential: Some(&c),
            device_rooms: &[room_id("rmu_305")],
            device_area: None,
        },
    );
    assert_eq!(
        found.iter().map(|a| a.detail.clone()).collect::<Vec<_>>(),
        vec![AnomalyDetail::ImpossibleTravel {
            other_device: device(1),
            other_at: during(),
            apart: Duration::seconds(2)
        }]
    );
    // judged again (a retried commit), the answer is the same: no new pair, no lost one
    assert_eq!(
        observe(&mut det, &rules, Some(&c), &[room_id("rmu_305")], &there),
        vec![AnomalyRule::ImpossibleTravel]
    );
    assert!(observe(&mut det, &rules, Some(&c), &own_room(), &here).is_empty());
}

#[test]
fn doors_of_one_room_the_same_door_or_a_walk_apart_are_no_impossible_travel() {
    let rules = AnomalyRules::default();
    let c = a_key_credential()
        .rooms(vec![room("rmu_101"), room("rmu_102")])
        .in_state(KeyCredentialState::Active);
    let mut det = AnomalyDetector::default();
    let t = during();
    // a suite's two doors both serve rmu_101
    let a = attempt(Some(&c), &device(1), t, true, "a");
    let b = attempt(Some(&c), &device(7), t + Duration::seconds(1), true, "b");
    assert!(observe(&mut det, &rules, Some(&c), &own_room(), &a).is_empty());
    assert!(observe(
        &mut det,
        &rules,
        Some(&c),
        &[room_id("rmu_101"), room_id("rmu_100")],
        &b
    )
    .is_empty());
    // the same door twice
    let again = attempt(Some(&c), &device(1), t + Duration::seconds(2), true, "c");
    assert!(observe(&mut det, &rules, Some(&c), &own_room(), &again).is_empty());
    // the connecting room, half a minute later
    let walk = attempt(Some(&c), &device(2), t + Duration::seconds(30), true, "d");
    assert!(observe(&mut det, &rules, Some(&c), &[room_id("rmu_102")], &walk).is_empty());
}

#[test]
fn records_arriving_out_of_order_still_make_one_impossible_travel() {
    let rules = AnomalyRules::default();
    let c = a_key_credential()
        .rooms(vec![room("rmu_101"), room("rmu_305")])
        .in_state(KeyCredentialState::Active);
    let mut det = AnomalyDetector::default();
    // the second door's read-back arrives first
    let later = attempt(
        Some(&c),
        &device(5),
        during() + Duration::seconds(3),
        true,
        "b",
    );
    let earlier = attempt(Some(&c), &device(1), during(), true, "a");
    let first = observe(&mut det, &rules, Some(&c), &[room_id("rmu_305")], &later);
    let second = observe(&mut det, &rules, Some(&c), &own_room(), &earlier);
    assert!(first.is_empty());
    assert_eq!(second, vec![AnomalyRule::ImpossibleTravel]);
}

#[test]
fn a_clamped_attempt_is_judged_only_by_the_rule_that_needs_no_time() {
    // the lock's clock runs more than five minutes ahead; the record carries the
    // ingestion time instead of the lock's, so it proves nothing about when it happened
    let mut c = a_key_credential()
        .rooms(vec![room("rmu_101"), room("rmu_305")])
        .in_state(KeyCredentialState::Active);
    let ingested = during();
    c.revoke(RevokeReason::Checkout, ingested - Duration::minutes(30))
        .unwrap();
    let clamped = |dev: u16, event: &str| {
        KeyCredentialAttempt::record(
            tenant(),
            AttemptReport {
                vendor_event_id: event.into(),
                attempted_at: ingested + Duration::hours(2),
                granted: true,
                device_id: device(dev),
                property_id: property(),
                vendor: VendorCode::Ttlock,
                method: "pin_code",
            },
            Some(&c),
            ingested,
        )
        .unwrap()
    };
    let (a, b) = (clamped(1, "a"), clamped(5, "b"));
    assert!(a.clamped && b.clamped);
    let rules = AnomalyRules::default();
    let mut det = AnomalyDetector::default();
    assert!(observe(&mut det, &rules, Some(&c), &own_room(), &a).is_empty());
    assert!(observe(&mut det, &rules, Some(&c), &[room_id("rmu_305")], &b).is_empty());
    assert_eq!(
        observe(&mut det, &rules, Some(&c), &[room_id("rmu_999")], &b),
        vec![AnomalyRule::WrongRoom]
    );
}

#[test]
fn a_disabled_rule_reports_nothing() {
    let mut c = active_guest();
    c.revoke(RevokeReason::Checkout, during()).unwrap();
    let a = attempt(
        Some(&c),
        &device(2),
        during() + Duration::hours(1),
        true,
        "e1",
    );
    let wrong_only = only(AnomalyRule::WrongRoom);
    assert_eq!(
        rules_of(&judge(&wrong_only, Some(&c), &[room_id("rmu_999")], &a)),
        vec![AnomalyRule::WrongRoom]
    );
    let none = AnomalyRules::new(AnomalyRulesInput {
        invalid_credential_entry: RuleInput {
            enabled: Some(false),
            ..RuleInput::default()
        },
        wrong_room: RuleInput {
            enabled: Some(false),
            ..RuleInput::default()
        },
        ..AnomalyRulesInput::default()
    })
    .unwrap();
    assert!(judge(&none, Some(&c), &[room_id("rmu_999")], &a).is_empty());
    assert!(!none.enabled(AnomalyRule::WrongRoom));
    assert!(none.enabled(AnomalyRule::DeniedBurst));
}

#[test]
fn rule_settings_out_of_range_or_not_the_rules_are_refused_by_key() {
    let bad = |input: AnomalyRulesInput| match AnomalyRules::new(input) {
        Err(DomainError::Validation { field, .. }) => field,
        other => panic!("expected a validation error, got {other:?}"),
    };
    assert_eq!(
        bad(AnomalyRulesInput {
            denied_burst: RuleInput {
                threshold: Some(1),
                ..RuleInput::default()
            },
            ..AnomalyRulesInput::default()
        }),
        "denied_burst.threshold"
    );
    assert_eq!(
        bad(AnomalyRulesInput {
            impossible_travel: RuleInput {
                window_secs: Some(3600),
                ..RuleInput::default()
            },
            ..AnomalyRulesInput::default()
        }),
        "impossible_travel.window_secs"
    );
    assert_eq!(
        bad(AnomalyRulesInput {
            invalid_credential_entry: RuleInput {
                grace_secs: Some(-1),
                ..RuleInput::default()
            },
            ..AnomalyRulesInput::default()
        }),
        "invalid_credential_entry.grace_secs"
    );
    assert_eq!(
        bad(AnomalyRulesInput {
            wrong_room: RuleInput {
                threshold: Some(5),
                ..RuleInput::default()
            },
            ..AnomalyRulesInput::default()
        }),
        "wrong_room.threshold"
    );
    assert_eq!(
        AnomalyRules::new(AnomalyRulesInput::default()).unwrap(),
        AnomalyRules::default(),
        "nothing configured is the defaults"
    );
    for r in AnomalyRule::ALL {
        assert!(
            AnomalyRules::default().enabled(r),
            "{} on by default",
            r.as_str()
        );
        assert_eq!(AnomalyRule::parse(r.as_str()).unwrap(), r);
    }
}

#[test]
fn the_detectors_memory_stays_within_its_bounds() {
    let rules = AnomalyRules::default();
    let mut det = AnomalyDetector::new(WindowLimits {
        max_devices: 50,
        max_credentials: 40,
        ..WindowLimits::default()
    });
    for i in 0..500u16 {
        let c = a_key_credential()
            .with_id(credential_id((i % 250) as u8))
            .in_state(KeyCredentialState::Active);
        let at = during() + Duration::seconds(i64::from(i));
        let d = attempt(None, &device(i), at, false, &format!("d{i}"));
        observe(&mut det, &rules, None, &own_room(), &d);
        let s = attempt(Some(&c), &device(i), at, true, &format!("s{i}"));
        observe(&mut det, &rules, Some(&c), &own_room(), &s);
        let (devices, credentials) = det.remembered();
        assert!(
            devices <= 50 && credentials <= 40,
            "{devices} {credentials}"
        );
    }
}

proptest! {
    #![proptest_config(crate::proptest_config("denied_burst_order_independent"))]

    /// Denials all within one window make exactly one burst when there are at least
    /// `threshold` of them, and none otherwise, whatever order their records arrive in;
    /// judging each one twice changes nothing.
    #[test]
    fn denials_within_one_window_make_one_burst_in_any_arrival_order(
        offsets in proptest::collection::vec(0i64..=300, 1..12),
        seed in any::<u64>(),
    ) {
        let rules = AnomalyRules::default();
        let mut det = AnomalyDetector::default();
        let mut order: Vec<usize> = (0..offsets.len()).collect();
        // a deterministic shuffle from the case's seed
        let mut s = seed | 1;
        for i in (1..order.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            order.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let mut fired = 0;
        for i in order {
            let a = attempt(None, &device(1), during() + Duration::seconds(offsets[i]), false, &format!("d{i}"));
            let once = observe(&mut det, &rules, None, &own_room(), &a);
            let twice = observe(&mut det, &rules, None, &own_room(), &a);
            prop_assert_eq!(&once, &twice);
            fired += once.len();
        }
        prop_assert_eq!(fired, usize::from(offsets.len() >= 5));
    }
}

proptest! {
    #![proptest_config(crate::proptest_config("impossible_travel_order_independent"))]

    /// A credential seen at two devices apart within the window is reported at least once
    /// and at most once per sighting, whatever the arrival order; never when all its
    /// sightings are at one device.
    #[test]
    fn sightings_at_two_doors_within_the_window_are_reported_in_any_arrival_order(
        sightings in proptest::collection::vec((0u16..3, 0i64..20), 2..8),
    ) {
        let rules = AnomalyRules::default();
        let c = a_key_credential()
            .rooms(vec![room("rmu_101"), room("rmu_102"), room("rmu_103")])
            .in_state(KeyCredentialState::Active);
        let mut det = AnomalyDetector::default();
        let mut reports = 0;
        for (i, (dev, secs)) in sightings.iter().enumerate() {
            let a = attempt(Some(&c), &device(*dev), during() + Duration::seconds(*secs), true, &format!("s{i}"));
            let rooms = [room_id(&format!("rmu_10{}", dev + 1))];
            reports += observe(&mut det, &rules, Some(&c), &rooms, &a).len();
        }
        let close_pair = sightings.iter().enumerate().any(|(i, (d1, t1))| {
            sightings.iter().skip(i + 1).any(|(d2, t2)| d1 != d2 && (t1 - t2).abs() <= 5)
        });
        prop_assert_eq!(reports > 0, close_pair);
        prop_assert!(reports < sightings.len());
    }
}
