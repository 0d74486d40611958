//! Spec `003` §7: each legal transition appends exactly its event, with the topic subject
//! of the table; `mark_pending` and `link_replacement` append none.

use chrono::Duration;
use lockstep_domain::{
    DomainEventKind, FailureReason, KeyCredential, KeyCredentialState, RevokeReason, SuspendReason,
    Transition, UpdateInput,
};

use crate::builders::*;

fn at(min: i64) -> lockstep_domain::Timestamp {
    created_at() + Duration::minutes(min)
}

/// Runs `call`, asserts it applied, bumped the version by one and appended exactly one event
/// of `kind` with `subject`, stamped with the new version and `now`.
fn assert_one_event(
    c: &mut KeyCredential,
    now: lockstep_domain::Timestamp,
    kind: DomainEventKind,
    subject: &str,
    call: impl FnOnce(&mut KeyCredential) -> Result<Transition, lockstep_domain::DomainError>,
) {
    let v = c.version();
    assert_eq!(call(c), Ok(Transition::Applied), "{kind:?}");
    assert_eq!(c.version(), v + 1);
    let events = c.take_pending_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.kind, kind);
    assert_eq!(e.kind.subject(), subject);
    assert_eq!(e.version, c.version());
    assert_eq!(e.occurred_at, now);
    assert_eq!(&e.credential_id, c.id());
    assert_eq!(e.tenant_id, c.tenant_id());
    assert_eq!(e.rooms, c.rooms());
    assert_eq!(e.validity, c.validity());
}

#[test]
fn request_appends_key_credential_requested_at_version_one() {
    let mut c = a_key_credential().try_request().unwrap();
    assert_eq!(c.state(), KeyCredentialState::Requested);
    assert_eq!(c.version(), 1);
    let events = c.take_pending_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, DomainEventKind::Requested);
    assert_eq!(
        events[0].kind.subject(),
        "melmastoon.lock.credential.requested.v1"
    );
    assert_eq!(events[0].version, 1);
    assert_eq!(events[0].occurred_at, created_at());
    assert!(c.take_pending_events().is_empty(), "take drains");
}

#[test]
fn mark_pending_appends_no_event_but_bumps_the_version() {
    let mut c = a_key_credential().requested();
    assert_eq!(c.mark_pending(at(1)), Ok(Transition::Applied));
    assert_eq!(c.state(), KeyCredentialState::Pending);
    assert_eq!(c.version(), 2);
    assert!(c.pending_events().is_empty());
    assert_eq!(c.mark_pending(at(2)), Ok(Transition::AlreadyApplied));
    assert_eq!(c.version(), 2);
}

#[test]
fn the_happy_lifecycle_appends_the_spec_events_in_order() {
    let mut c = a_key_credential().requested();
    c.mark_pending(at(1)).unwrap();
    assert_one_event(
        &mut c,
        at(2),
        DomainEventKind::Issued,
        "melmastoon.lock.credential.issued.v1",
        |c| c.mark_active(at(2)),
    );
    assert_eq!(c.issued_at(), Some(at(2)));
    assert_one_event(
        &mut c,
        at(3),
        DomainEventKind::Suspended {
            reason: SuspendReason::OverduePayment,
        },
        "melmastoon.lock.credential.suspended.v1",
        |c| c.suspend(SuspendReason::OverduePayment, at(3)),
    );
    assert_eq!(c.state(), KeyCredentialState::Suspended);
    assert_one_event(
        &mut c,
        at(4),
        DomainEventKind::Updated,
        "melmastoon.lock.credential.updated.v1",
        |c| {
            c.update(
                UpdateInput {
                    valid_until: Some(valid_until() + Duration::hours(24)),
                    rooms: Some(vec![room("rmu_102"), room("rmu_101"), room("rmu_102")]),
                    scope: None,
                },
                at(4),
            )
        },
    );
    assert_eq!(
        c.rooms(),
        [room_id("rmu_101"), room_id("rmu_102")],
        "sorted and distinct"
    );
    assert_eq!(c.validity().until(), valid_until() + Duration::hours(24));
    assert_one_event(
        &mut c,
        at(5),
        DomainEventKind::Unsuspended,
        "melmastoon.lock.credential.unsuspended.v1",
        |c| c.unsuspend(at(5)),
    );
    assert_eq!(c.state(), KeyCredentialState::Active);
    assert_one_event(
        &mut c,
        at(6),
        DomainEventKind::Updated,
        "melmastoon.lock.credential.updated.v1",
        |c| {
            c.update(
                UpdateInput {
                    rooms: Some(vec![room("rmu_103")]),
                    ..Default::default()
                },
                at(6),
            )
        },
    );
    assert_one_event(
        &mut c,
        at(7),
        DomainEventKind::Revoked {
            reason: RevokeReason::Checkout,
        },
        "melmastoon.lock.credential.revoked.v1",
        |c| c.revoke(RevokeReason::Checkout, at(7)),
    );
    assert_eq!(c.revoked_at(), Some(at(7)));
}

#[test]
fn revoke_from_pending_active_or_suspended_appends_key_credential_revoked() {
    for from in [
        KeyCredentialState::Pending,
        KeyCredentialState::Active,
        KeyCredentialState::Suspended,
    ] {
        for reason in RevokeReason::ALL {
            let mut c = a_key_credential().in_state(from);
            assert_one_event(
                &mut c,
                at(9),
                DomainEventKind::Revoked { reason: *reason },
                "melmastoon.lock.credential.revoked.v1",
                |c| c.revoke(*reason, at(9)),
            );
            assert_eq!(c.state(), KeyCredentialState::Revoked);
            assert_eq!(c.revoke_reason(), Some(*reason));
        }
    }
}

#[test]
fn mark_failed_from_requested_or_pending_appends_key_credential_failed() {
    for from in [KeyCredentialState::Requested, KeyCredentialState::Pending] {
        for reason in FailureReason::ALL {
            let mut c = a_key_credential().in_state(from);
            assert_one_event(
                &mut c,
                at(9),
                DomainEventKind::Failed { reason: *reason },
                "melmastoon.lock.credential.failed.v1",
                |c| c.mark_failed(*reason, at(9)),
            );
            assert_eq!(c.state(), KeyCredentialState::Failed);
            assert_eq!(c.failure_reason(), Some(*reason));
        }
    }
}

#[test]
fn update_that_changes_nothing_is_already_applied_with_no_event() {
    let mut c = a_key_credential().in_state(KeyCredentialState::Active);
    let v = c.version();
    let same = UpdateInput {
        valid_until: Some(valid_until()),
        rooms: Some(vec![room("rmu_101")]),
        scope: Some(Default::default()),
    };
    assert_eq!(c.update(same, at(9)), Ok(Transition::AlreadyApplied));
    assert_eq!(
        c.update(UpdateInput::default(), at(9)),
        Ok(Transition::AlreadyApplied)
    );
    assert_eq!(c.version(), v);
    assert!(c.pending_events().is_empty());
}

#[test]
fn illegal_transitions_out_of_live_states_are_refused() {
    // The spec's state machine allows nothing else: e.g. no activation without a vendor call,
    // no suspension before activation, no revoke of a credential never sent to the vendor.
    let cases: [(KeyCredentialState, &str); 8] = [
        (KeyCredentialState::Requested, "mark_active"),
        (KeyCredentialState::Requested, "suspend"),
        (KeyCredentialState::Requested, "revoke"),
        (KeyCredentialState::Requested, "update"),
        (KeyCredentialState::Pending, "suspend"),
        (KeyCredentialState::Active, "mark_pending"),
        (KeyCredentialState::Active, "mark_failed"),
        (KeyCredentialState::Suspended, "mark_active"),
    ];
    for (from, action) in cases {
        let mut c = a_key_credential().in_state(from);
        let v = c.version();
        let t = at(9);
        let r = match action {
            "mark_pending" => c.mark_pending(t),
            "mark_active" => c.mark_active(t),
            "mark_failed" => c.mark_failed(FailureReason::VendorRefused, t),
            "suspend" => c.suspend(SuspendReason::Manual, t),
            "revoke" => c.revoke(RevokeReason::Security, t),
            "update" => c.update(
                UpdateInput {
                    valid_until: Some(valid_until() + Duration::hours(1)),
                    ..Default::default()
                },
                t,
            ),
            _ => unreachable!(),
        };
        let e = r.expect_err(action);
        assert_eq!(
            e.sub_code(),
            Some("invalid_state_transition"),
            "{from:?} {action}"
        );
        assert_eq!(c.state(), from);
        assert_eq!(c.version(), v);
        assert!(c.pending_events().is_empty());
    }
}
