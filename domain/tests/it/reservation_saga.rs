//! The reservation saga as a reconciler (`saga::decide`): one test per rule.

use chrono::Duration;
use lockstep_domain::saga::{
    decide, revoke_all_at_property, subject_for_reservation, Decision, Ignored, ReservationEvent,
    ReservationSaga, SagaCommand, SagaContext,
};
use lockstep_domain::{
    FailureReason, GuestId, KeyCredentialId, KeyCredentialKind, KeyCredentialState, KeyKindPolicy,
    KeyKindPolicyId, LockCapabilities, ReservationId, RevokeReason, RoomId, SuspendReason,
    ValidityWindow,
};

use crate::builders::*;

pub fn default_policy() -> KeyKindPolicy {
    KeyKindPolicy::default_for(
        KeyKindPolicyId::from_ulid(ulid::Ulid::from_parts(1_700_000_000_000, 7)),
        tenant(),
        property(),
        created_at(),
    )
}

/// A TTLock-like adapter: PIN and mobile key, no card encoder.
pub fn pin_and_mobile() -> LockCapabilities {
    LockCapabilities {
        pin: true,
        mobile_key: true,
        remote_issue: true,
        remote_revoke: true,
        ..LockCapabilities::default()
    }
}

pub fn ctx(policy: &KeyKindPolicy, n: u8) -> SagaContext<'_> {
    SagaContext {
        policy,
        caps: pin_and_mobile(),
        id_verified: false,
        new_credential_id: credential_id(n),
    }
}

pub fn window(from_h: i64, until_h: i64) -> ValidityWindow {
    ValidityWindow::new(
        valid_from() + Duration::hours(from_h),
        valid_from() + Duration::hours(until_h),
    )
    .unwrap()
}

pub fn confirmed(revision: i64) -> ReservationEvent {
    ReservationEvent::Confirmed {
        revision,
        guest_id: GuestId::parse("gst_01").unwrap(),
        rooms: vec![room_id("rmu_101")],
        validity: window(0, 45),
    }
}

fn apply(d: Decision) -> (ReservationSaga, Vec<SagaCommand>) {
    match d {
        Decision::Apply { next, commands } => (next, commands),
        Decision::Ignore(why) => panic!("expected Apply, got Ignore({why:?})"),
    }
}

/// The saga after a confirm, with its credential observed in `state`.
fn issued_in(policy: &KeyKindPolicy, state: KeyCredentialState) -> ReservationSaga {
    let (s, _) = apply(decide(
        &ReservationSaga::default(),
        &confirmed(1),
        &ctx(policy, 1),
    ));
    if state == KeyCredentialState::Requested {
        return s;
    }
    let (s, _) = apply(decide(
        &s,
        &observed(1, KeyCredentialState::Active, None),
        &ctx(policy, 2),
    ));
    if state == KeyCredentialState::Active {
        return s;
    }
    let mut s = s;
    s.credential.as_mut().unwrap().state = state;
    s
}

fn observed(n: u8, state: KeyCredentialState, failure: Option<FailureReason>) -> ReservationEvent {
    ReservationEvent::CredentialObserved {
        credential_id: credential_id(n),
        state,
        failure_reason: failure,
    }
}

#[test]
fn subject_is_reservation_and_id() {
    assert_eq!(
        subject_for_reservation(&ReservationId::parse("rsv_42").unwrap()),
        "reservation:rsv_42"
    );
}

#[test]
fn confirm_issues_the_policy_kind_with_the_confirmed_window() {
    let p = default_policy();
    let (next, commands) = apply(decide(
        &ReservationSaga::default(),
        &confirmed(1),
        &ctx(&p, 1),
    ));
    assert_eq!(
        commands,
        vec![SagaCommand::Issue {
            credential_id: credential_id(1),
            kind: KeyCredentialKind::PinCode,
            guest_id: GuestId::parse("gst_01").unwrap(),
            rooms: vec![room_id("rmu_101")],
            validity: window(0, 45),
            replaces: None,
        }]
    );
    // The domain records the Issue with its id: decide alone never issues twice.
    let c = next.credential.as_ref().unwrap();
    assert_eq!(
        (c.id.clone(), c.state),
        (credential_id(1), KeyCredentialState::Requested)
    );
    assert_eq!(next.revision, Some(1));
}

#[test]
fn duplicate_delivery_yields_one_credential() {
    let p = default_policy();
    let (next, _) = apply(decide(
        &ReservationSaga::default(),
        &confirmed(1),
        &ctx(&p, 1),
    ));
    assert_eq!(
        decide(&next, &confirmed(1), &ctx(&p, 2)),
        Decision::Ignore(Ignored::Duplicate)
    );
    // even once the credential is active
    let active = issued_in(&p, KeyCredentialState::Active);
    assert_eq!(
        decide(&active, &confirmed(1), &ctx(&p, 3)),
        Decision::Ignore(Ignored::Duplicate)
    );
}

#[test]
fn cancel_before_confirm_issues_no_key() {
    let p = default_policy();
    let (next, commands) = apply(decide(
        &ReservationSaga::default(),
        &ReservationEvent::Cancelled { revision: 2 },
        &ctx(&p, 1),
    ));
    assert!(commands.is_empty());
    assert!(next.cancelled());
    // the earlier confirm delivered late, and even a newer one, never issue
    assert_eq!(
        decide(&next, &confirmed(1), &ctx(&p, 2)),
        Decision::Ignore(Ignored::AlreadyEnded)
    );
    assert_eq!(
        decide(&next, &confirmed(3), &ctx(&p, 2)),
        Decision::Ignore(Ignored::AlreadyEnded)
    );
}

#[test]
fn checkout_before_confirm_issues_no_key() {
    let p = default_policy();
    let (next, commands) = apply(decide(
        &ReservationSaga::default(),
        &ReservationEvent::CheckedOut { revision: 5 },
        &ctx(&p, 1),
    ));
    assert!(commands.is_empty());
    assert_eq!(
        decide(&next, &confirmed(1), &ctx(&p, 2)),
        Decision::Ignore(Ignored::AlreadyEnded)
    );
}

#[test]
fn late_confirm_after_newer_dates_change_issues_with_the_newer_window() {
    let p = default_policy();
    let dates = ReservationEvent::DatesChanged {
        revision: 3,
        validity: window(0, 69),
        rooms: Some(vec![room_id("rmu_202")]),
    };
    let (s, commands) = apply(decide(&ReservationSaga::default(), &dates, &ctx(&p, 1)));
    assert!(commands.is_empty(), "no key before a confirm");
    let (_, commands) = apply(decide(&s, &confirmed(1), &ctx(&p, 1)));
    let [SagaCommand::Issue {
        validity, rooms, ..
    }] = commands.as_slice()
    else {
        panic!("one Issue expected, got {commands:?}")
    };
    assert_eq!(*validity, window(0, 69));
    assert_eq!(rooms, &vec![room_id("rmu_202")]);
}

#[test]
fn stale_dates_change_is_ignored() {
    let p = default_policy();
    let (s, _) = apply(decide(
        &ReservationSaga::default(),
        &confirmed(4),
        &ctx(&p, 1),
    ));
    let stale = ReservationEvent::DatesChanged {
        revision: 2,
        validity: window(0, 90),
        rooms: None,
    };
    assert_eq!(
        decide(&s, &stale, &ctx(&p, 2)),
        Decision::Ignore(Ignored::Stale)
    );
}

#[test]
fn dates_change_on_active_credential_updates_end_and_rooms() {
    let p = default_policy();
    for state in [KeyCredentialState::Active, KeyCredentialState::Suspended] {
        let s = issued_in(&p, state);
        let ev = ReservationEvent::DatesChanged {
            revision: 2,
            validity: window(0, 69),
            rooms: Some(vec![room_id("rmu_202"), room_id("rmu_101")]),
        };
        let (next, commands) = apply(decide(&s, &ev, &ctx(&p, 9)));
        assert_eq!(
            commands,
            vec![SagaCommand::Update {
                credential_id: credential_id(1),
                valid_until: window(0, 69).until(),
                rooms: vec![room_id("rmu_101"), room_id("rmu_202")],
            }]
        );
        assert_eq!(
            decide(&next, &ev, &ctx(&p, 9)),
            Decision::Ignore(Ignored::Duplicate)
        );
    }
}

#[test]
fn dates_change_moving_the_start_of_an_active_key_revokes_and_reissues() {
    let p = default_policy();
    let s = issued_in(&p, KeyCredentialState::Active);
    let ev = ReservationEvent::DatesChanged {
        revision: 2,
        validity: window(24, 69),
        rooms: None,
    };
    let (next, commands) = apply(decide(&s, &ev, &ctx(&p, 9)));
    assert_eq!(
        commands,
        vec![
            SagaCommand::Revoke {
                credential_id: credential_id(1),
                reason: RevokeReason::Replaced
            },
            SagaCommand::Issue {
                credential_id: credential_id(9),
                kind: KeyCredentialKind::PinCode,
                guest_id: GuestId::parse("gst_01").unwrap(),
                rooms: vec![room_id("rmu_101")],
                validity: window(24, 69),
                replaces: Some(credential_id(1)),
            }
        ]
    );
    assert_eq!(next.credential.as_ref().unwrap().id, credential_id(9));
}

#[test]
fn dates_change_before_activation_is_applied_once_the_key_is_active() {
    let p = default_policy();
    let s = issued_in(&p, KeyCredentialState::Requested);
    let ev = ReservationEvent::DatesChanged {
        revision: 2,
        validity: window(0, 69),
        rooms: None,
    };
    let (s, commands) = apply(decide(&s, &ev, &ctx(&p, 9)));
    assert!(
        commands.is_empty(),
        "update waits for an active key: {commands:?}"
    );
    let (_, commands) = apply(decide(
        &s,
        &observed(1, KeyCredentialState::Active, None),
        &ctx(&p, 9),
    ));
    assert!(
        matches!(commands.as_slice(), [SagaCommand::Update { valid_until, .. }] if *valid_until == window(0, 69).until())
    );
}

#[test]
fn extension_beyond_k2_cap_is_clamped() {
    let p = default_policy(); // 168 h
    let s = issued_in(&p, KeyCredentialState::Active);
    let ev = ReservationEvent::DatesChanged {
        revision: 2,
        validity: window(0, 45 + 500),
        rooms: None,
    };
    let (_, commands) = apply(decide(&s, &ev, &ctx(&p, 9)));
    let [SagaCommand::Update { valid_until, .. }] = commands.as_slice() else {
        panic!("{commands:?}")
    };
    assert_eq!(*valid_until, window(0, 45 + 168).until(), "K-2");
}

#[test]
fn checkout_revokes_with_reason_checkout_once() {
    let p = default_policy();
    let s = issued_in(&p, KeyCredentialState::Active);
    let ev = ReservationEvent::CheckedOut { revision: 2 };
    let (next, commands) = apply(decide(&s, &ev, &ctx(&p, 9)));
    assert_eq!(
        commands,
        vec![SagaCommand::Revoke {
            credential_id: credential_id(1),
            reason: RevokeReason::Checkout
        }]
    );
    assert_eq!(
        decide(&next, &ev, &ctx(&p, 9)),
        Decision::Ignore(Ignored::AlreadyEnded)
    );
    let cancel = ReservationEvent::Cancelled { revision: 3 };
    assert_eq!(
        decide(&next, &cancel, &ctx(&p, 9)),
        Decision::Ignore(Ignored::AlreadyEnded)
    );
}

#[test]
fn cancel_fails_what_the_vendor_has_not_confirmed_and_revokes_the_rest() {
    let p = default_policy();
    for (state, expected) in [
        (
            KeyCredentialState::Requested,
            SagaCommand::FailCancelledMidFlight {
                credential_id: credential_id(1),
            },
        ),
        (
            // issue in flight: cancelled mid-flight (the door rows remove what it created)
            KeyCredentialState::Pending,
            SagaCommand::FailCancelledMidFlight {
                credential_id: credential_id(1),
            },
        ),
        (
            KeyCredentialState::Active,
            SagaCommand::Revoke {
                credential_id: credential_id(1),
                reason: RevokeReason::Cancellation,
            },
        ),
        (
            KeyCredentialState::Suspended,
            SagaCommand::Revoke {
                credential_id: credential_id(1),
                reason: RevokeReason::Cancellation,
            },
        ),
    ] {
        let s = issued_in(&p, state);
        let (_, commands) = apply(decide(
            &s,
            &ReservationEvent::Cancelled { revision: 2 },
            &ctx(&p, 9),
        ));
        assert_eq!(commands, vec![expected], "from {state:?}");
    }
}

#[test]
fn no_show_schedules_the_suspension_after_the_policy_hours_once() {
    let p = default_policy();
    let s = issued_in(&p, KeyCredentialState::Active);
    let ev = ReservationEvent::NoShow { revision: 2 };
    let (next, commands) = apply(decide(&s, &ev, &ctx(&p, 9)));
    assert_eq!(
        commands,
        vec![SagaCommand::ScheduleNoShowSuspend {
            credential_id: Some(credential_id(1)),
            after_hours: 2,
        }]
    );
    assert_eq!(
        decide(&next, &ev, &ctx(&p, 9)),
        Decision::Ignore(Ignored::Duplicate)
    );
}

#[test]
fn no_show_suspend_due_suspends_an_active_key_unless_the_stay_ended() {
    let p = default_policy();
    let s = issued_in(&p, KeyCredentialState::Active);
    let (s, _) = apply(decide(
        &s,
        &ReservationEvent::NoShow { revision: 2 },
        &ctx(&p, 9),
    ));
    let (next, commands) = apply(decide(&s, &ReservationEvent::NoShowSuspendDue, &ctx(&p, 9)));
    assert_eq!(
        commands,
        vec![SagaCommand::Suspend {
            credential_id: credential_id(1),
            reason: SuspendReason::NoShow
        }]
    );
    assert_eq!(
        decide(&next, &ReservationEvent::NoShowSuspendDue, &ctx(&p, 9)),
        Decision::Ignore(Ignored::Duplicate)
    );
    // cancelled in between: the timer does nothing
    let (cancelled, _) = apply(decide(
        &s,
        &ReservationEvent::Cancelled { revision: 3 },
        &ctx(&p, 9),
    ));
    assert_eq!(
        decide(&cancelled, &ReservationEvent::NoShowSuspendDue, &ctx(&p, 9)),
        Decision::Ignore(Ignored::AlreadyEnded)
    );
}

#[test]
fn fraud_flag_suspends_an_active_key_for_fraud_review() {
    let p = default_policy();
    let s = issued_in(&p, KeyCredentialState::Active);
    let ev = ReservationEvent::FraudFlagged { revision: 2 };
    let (next, commands) = apply(decide(&s, &ev, &ctx(&p, 9)));
    assert_eq!(
        commands,
        vec![SagaCommand::Suspend {
            credential_id: credential_id(1),
            reason: SuspendReason::FraudReview
        }]
    );
    assert_eq!(
        decide(&next, &ev, &ctx(&p, 9)),
        Decision::Ignore(Ignored::Duplicate)
    );
}

#[test]
fn fraud_flag_on_a_key_in_flight_suspends_it_once_active() {
    let p = default_policy();
    let s = issued_in(&p, KeyCredentialState::Pending);
    let (s, commands) = apply(decide(
        &s,
        &ReservationEvent::FraudFlagged { revision: 2 },
        &ctx(&p, 9),
    ));
    assert!(commands.is_empty());
    let (_, commands) = apply(decide(
        &s,
        &observed(1, KeyCredentialState::Active, None),
        &ctx(&p, 9),
    ));
    assert!(matches!(
        commands.as_slice(),
        [SagaCommand::Suspend {
            reason: SuspendReason::FraudReview,
            ..
        }]
    ));
}

#[test]
fn fraud_flag_before_confirm_withholds_the_key() {
    let p = default_policy();
    let (s, _) = apply(decide(
        &ReservationSaga::default(),
        &ReservationEvent::FraudFlagged { revision: 2 },
        &ctx(&p, 1),
    ));
    let (next, commands) = apply(decide(&s, &confirmed(1), &ctx(&p, 1)));
    assert!(commands.is_empty());
    assert!(next.credential.is_none());
}

#[test]
fn failed_key_falls_back_along_the_policy_chain_then_requires_escort() {
    let p = default_policy(); // pin_code, then mobile_app, then rfid_card
    let s = issued_in(&p, KeyCredentialState::Requested);
    let (s, commands) = apply(decide(
        &s,
        &observed(
            1,
            KeyCredentialState::Failed,
            Some(FailureReason::PinCollisionExhausted),
        ),
        &ctx(&p, 2),
    ));
    assert!(
        matches!(commands.as_slice(), [SagaCommand::Issue { kind: KeyCredentialKind::MobileApp, credential_id, .. }] if *credential_id == credential_id_2()),
        "{commands:?}"
    );
    // mobile key fails too; no card encoder: manual escort
    let (s, commands) = apply(decide(
        &s,
        &observed(
            2,
            KeyCredentialState::Failed,
            Some(FailureReason::VendorRefused),
        ),
        &ctx(&p, 3),
    ));
    assert_eq!(
        commands,
        vec![SagaCommand::EscortRequired {
            reason: FailureReason::VendorRefused
        }]
    );
    assert_eq!(s.gave_up, Some(FailureReason::VendorRefused));
    // it stops: a redelivered confirm does nothing
    assert_eq!(
        decide(&s, &confirmed(1), &ctx(&p, 4)),
        Decision::Ignore(Ignored::Duplicate)
    );
}

fn credential_id_2() -> KeyCredentialId {
    credential_id(2)
}

#[test]
fn no_kind_the_adapter_can_do_requires_escort_at_confirm() {
    let p = default_policy();
    let mut c = ctx(&p, 1);
    c.caps = LockCapabilities {
        qr: true,
        ..LockCapabilities::default()
    };
    let (_, commands) = apply(decide(&ReservationSaga::default(), &confirmed(1), &c));
    assert_eq!(
        commands,
        vec![SagaCommand::EscortRequired {
            reason: FailureReason::KindUnsupported
        }]
    );
}

#[test]
fn observation_of_another_credential_is_ignored() {
    let p = default_policy();
    let s = issued_in(&p, KeyCredentialState::Requested);
    assert_eq!(
        decide(
            &s,
            &observed(7, KeyCredentialState::Active, None),
            &ctx(&p, 9)
        ),
        Decision::Ignore(Ignored::UnknownCredential)
    );
}

#[test]
fn confirm_without_rooms_is_invalid() {
    let p = default_policy();
    let ev = ReservationEvent::Confirmed {
        revision: 1,
        guest_id: GuestId::parse("gst_01").unwrap(),
        rooms: Vec::<RoomId>::new(),
        validity: window(0, 45),
    };
    assert_eq!(
        decide(&ReservationSaga::default(), &ev, &ctx(&p, 1)),
        Decision::Ignore(Ignored::Invalid)
    );
}

#[test]
fn property_deactivation_revokes_every_live_credential_for_security() {
    let creds = [
        (credential_id(1), KeyCredentialState::Requested),
        (credential_id(2), KeyCredentialState::Pending),
        (credential_id(3), KeyCredentialState::Active),
        (credential_id(4), KeyCredentialState::Suspended),
        (credential_id(5), KeyCredentialState::Revoked),
        (credential_id(6), KeyCredentialState::Failed),
    ];
    let revoke = |n| SagaCommand::Revoke {
        credential_id: credential_id(n),
        reason: RevokeReason::Security,
    };
    assert_eq!(
        revoke_all_at_property(&creds),
        vec![
            SagaCommand::FailCancelledMidFlight {
                credential_id: credential_id(1)
            },
            revoke(2),
            revoke(3),
            revoke(4),
        ]
    );
}

#[test]
fn an_operator_unsuspend_clears_the_facts_that_held_the_key_back() {
    let p = default_policy();
    let mut s = issued_in(&p, KeyCredentialState::Active);
    let (next, _) = apply(decide(
        &s,
        &ReservationEvent::FraudFlagged { revision: 2 },
        &ctx(&p, 9),
    ));
    s = next;
    let id = s.credential.as_ref().unwrap().id.clone();
    s.observe(&id, KeyCredentialState::Suspended, None);
    s.operator_unsuspended(&id);
    assert!(!s.fraud_flagged);
    assert_eq!(
        s.credential.as_ref().unwrap().state,
        KeyCredentialState::Active
    );
    // the next input (a late fact) does not re-suspend it
    let stale_flag = ReservationEvent::FraudFlagged { revision: 2 };
    let commands = match decide(&s, &stale_flag, &ctx(&p, 9)) {
        Decision::Apply { commands, .. } => commands,
        Decision::Ignore(_) => vec![],
    };
    assert!(
        !commands
            .iter()
            .any(|c| matches!(c, SagaCommand::Suspend { .. })),
        "{commands:?}"
    );
}

#[test]
fn a_replacement_is_followed_so_a_cancel_revokes_the_new_key() {
    let p = default_policy();
    let mut s = issued_in(&p, KeyCredentialState::Active);
    let old = s.credential.as_ref().unwrap().clone();
    let new = lockstep_domain::saga::TrackedCredential {
        id: credential_id(7),
        state: KeyCredentialState::Active,
        ..old.clone()
    };
    s.adopt_replacement(&old.id, new);
    let (_, commands) = apply(decide(
        &s,
        &ReservationEvent::Cancelled { revision: 5 },
        &ctx(&p, 9),
    ));
    assert_eq!(
        commands,
        vec![SagaCommand::Revoke {
            credential_id: credential_id(7),
            reason: RevokeReason::Cancellation
        }]
    );
}
