//! The shift saga (`shift::decide_shift`): master keys follow the shift.

use chrono::Duration;
use lockstep_domain::master::{MasterScope, MasterScopeKind};
use lockstep_domain::saga::Ignored;
use lockstep_domain::shift::{
    decide_shift, subject_for_shift, ActiveMaster, ShiftCommand, ShiftContext, ShiftDecision,
    ShiftEvent, ShiftSaga,
};
use lockstep_domain::{
    KeyCredentialState, MasterKeyId, RevokeReason, ShiftId, UserId, ValidityWindow,
};
use proptest::prelude::*;

use crate::builders::*;

fn mky(n: u8) -> MasterKeyId {
    MasterKeyId::from_ulid(ulid::Ulid::from_parts(1_700_000_000_000, u128::from(n) + 1))
}

fn ctx(n: u8) -> ShiftContext {
    ShiftContext {
        new_credential_id: credential_id(n),
        new_master_key_id: mky(n),
        active_masters: vec![],
    }
}

fn shift_window() -> ValidityWindow {
    ValidityWindow::new(valid_from(), valid_from() + Duration::hours(8)).unwrap()
}

fn started() -> ShiftEvent {
    ShiftEvent::Started {
        shift_id: ShiftId::parse("shf_1").unwrap(),
        staff_user_id: UserId::parse("usr_01").unwrap(),
        scope: MasterScope::Floor { floor: "2".into() },
        validity: shift_window(),
    }
}

fn ended() -> ShiftEvent {
    ShiftEvent::Ended {
        shift_id: ShiftId::parse("shf_1").unwrap(),
    }
}

fn apply(d: ShiftDecision) -> (ShiftSaga, Vec<ShiftCommand>) {
    match d {
        ShiftDecision::Apply { next, commands } => (next, commands),
        ShiftDecision::Ignore(w) => panic!("expected Apply, got Ignore({w:?})"),
    }
}

fn active(s: &mut ShiftSaga) {
    s.master.as_mut().unwrap().state = KeyCredentialState::Active;
}

#[test]
fn subject_is_shift_and_id() {
    assert_eq!(
        subject_for_shift(&ShiftId::parse("shf_9").unwrap()),
        "shift:shf_9"
    );
}

#[test]
fn shift_start_issues_a_shift_bound_master_once() {
    let (next, commands) = apply(decide_shift(&ShiftSaga::default(), &started(), &ctx(1)));
    assert_eq!(
        commands,
        vec![ShiftCommand::IssueMaster {
            credential_id: credential_id(1),
            master_key_id: mky(1),
            shift_id: ShiftId::parse("shf_1").unwrap(),
            staff_user_id: UserId::parse("usr_01").unwrap(),
            scope: MasterScope::Floor { floor: "2".into() },
            validity: shift_window(),
            replaces: None,
        }]
    );
    assert_eq!(
        decide_shift(&next, &started(), &ctx(2)),
        ShiftDecision::Ignore(Ignored::Duplicate)
    );
}

#[test]
fn shift_end_revokes_the_master_as_expired_once() {
    let (mut s, _) = apply(decide_shift(&ShiftSaga::default(), &started(), &ctx(1)));
    active(&mut s);
    let (next, commands) = apply(decide_shift(&s, &ended(), &ctx(2)));
    assert_eq!(
        commands,
        vec![ShiftCommand::RevokeMaster {
            credential_id: credential_id(1),
            reason: RevokeReason::Expired
        }]
    );
    assert_eq!(
        decide_shift(&next, &ended(), &ctx(2)),
        ShiftDecision::Ignore(Ignored::AlreadyEnded)
    );
}

#[test]
fn shift_end_while_the_master_is_requested_fails_it_mid_flight() {
    let (s, _) = apply(decide_shift(&ShiftSaga::default(), &started(), &ctx(1)));
    let (_, commands) = apply(decide_shift(&s, &ended(), &ctx(2)));
    assert_eq!(
        commands,
        vec![ShiftCommand::FailMasterMidFlight {
            credential_id: credential_id(1)
        }]
    );
}

#[test]
fn shift_ended_before_started_issues_no_key() {
    let (s, commands) = apply(decide_shift(&ShiftSaga::default(), &ended(), &ctx(1)));
    assert!(commands.is_empty());
    let (s, commands) = apply(decide_shift(&s, &started(), &ctx(2)));
    assert!(commands.is_empty());
    assert!(s.master.is_none());
}

#[test]
fn user_deactivation_revokes_the_master_for_security_and_blocks_a_later_start() {
    let deact = ShiftEvent::UserDeactivated {
        staff_user_id: UserId::parse("usr_01").unwrap(),
    };
    let (mut s, _) = apply(decide_shift(&ShiftSaga::default(), &started(), &ctx(1)));
    active(&mut s);
    let (next, commands) = apply(decide_shift(&s, &deact, &ctx(2)));
    assert_eq!(
        commands,
        vec![ShiftCommand::RevokeMaster {
            credential_id: credential_id(1),
            reason: RevokeReason::Security
        }]
    );
    assert_eq!(
        decide_shift(&next, &deact, &ctx(2)),
        ShiftDecision::Ignore(Ignored::Duplicate)
    );
    // deactivated before the start: no key
    let (s, _) = apply(decide_shift(&ShiftSaga::default(), &deact, &ctx(1)));
    let (s, commands) = apply(decide_shift(&s, &started(), &ctx(2)));
    assert!(commands.is_empty() && s.master.is_none());
    // another user's deactivation is not ours
    let other = ShiftEvent::UserDeactivated {
        staff_user_id: UserId::parse("usr_99").unwrap(),
    };
    assert!(matches!(
        decide_shift(&next, &other, &ctx(3)),
        ShiftDecision::Ignore(_)
    ));
}

#[test]
fn m2_renewal_revokes_the_previous_shifts_master_of_the_same_scope_kind_first() {
    let mut c = ctx(5);
    c.active_masters = vec![
        ActiveMaster {
            master_key_id: mky(1),
            credential_id: credential_id(1),
            scope_kind: MasterScopeKind::Floor,
        },
        ActiveMaster {
            master_key_id: mky(2),
            credential_id: credential_id(2),
            scope_kind: MasterScopeKind::AreasAll,
        },
    ];
    let (_, commands) = apply(decide_shift(&ShiftSaga::default(), &started(), &c));
    assert_eq!(commands.len(), 2);
    assert_eq!(
        commands[0],
        ShiftCommand::RevokeMaster {
            credential_id: credential_id(1),
            reason: RevokeReason::Replaced
        }
    );
    assert!(
        matches!(&commands[1], ShiftCommand::IssueMaster { replaces: Some(r), .. } if *r == credential_id(1))
    );
}

#[derive(Clone, Debug)]
enum Ev {
    Start,
    End,
    Deactivate,
    Activate,
}

proptest! {
    #![proptest_config(crate::proptest_config("shift_saga_issues_at_most_one_master_and_none_after_the_end"))]

    #[test]
    fn shift_saga_issues_at_most_one_master_and_none_after_the_end(
        evs in proptest::collection::vec(prop_oneof![Just(Ev::Start), Just(Ev::End), Just(Ev::Deactivate), Just(Ev::Activate)], 1..20),
    ) {
        let mut s = ShiftSaga::default();
        let (mut issues, mut finished, mut live) = (0, false, false);
        for (i, e) in evs.iter().enumerate() {
            let ev = match e {
                Ev::Start => started(),
                Ev::End => ended(),
                Ev::Deactivate => ShiftEvent::UserDeactivated { staff_user_id: UserId::parse("usr_01").unwrap() },
                Ev::Activate => {
                    if let Some(m) = s.master.as_mut().filter(|m| m.state == KeyCredentialState::Requested) { m.state = KeyCredentialState::Active; }
                    continue;
                }
            };
            if matches!(e, Ev::End | Ev::Deactivate) { finished = true; }
            if let ShiftDecision::Apply { next, commands } = decide_shift(&s, &ev, &ctx(i as u8)) {
                for c in &commands {
                    match c {
                        ShiftCommand::IssueMaster { .. } => { issues += 1; prop_assert!(!finished, "master after the end"); live = true; }
                        ShiftCommand::RevokeMaster { .. } | ShiftCommand::FailMasterMidFlight { .. } => live = false,
                    }
                }
                prop_assert!(matches!(decide_shift(&next, &ev, &ctx(99)), ShiftDecision::Ignore(_)), "not idempotent");
                s = next;
            }
        }
        prop_assert!(issues <= 1);
        prop_assert!(!(finished && live), "a master outlived its shift");
    }
}
