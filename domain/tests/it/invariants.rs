//! The invariants of spec `003` §1.2 that the aggregate enforces, one behaviour per test.
//! Each test fails if the check it names is removed from `credential.rs` / `validity.rs`.

use chrono::Duration;
use lockstep_domain::{
    DomainError, FailureReason, HolderKind, KeyCredential, KeyCredentialState, Pin, RevokeReason,
    ScopedRoom, SuspendReason, Transition, UpdateInput, ValidityWindow, VendorRef,
};

use crate::builders::*;

fn later() -> lockstep_domain::Timestamp {
    created_at() + Duration::hours(1)
}

/// Asserts a validation refusal whose reason cites `invariant` (e.g. `"I-2"`), so the test
/// cannot pass on some other check failing first.
fn assert_refused<T: std::fmt::Debug>(r: Result<T, DomainError>, invariant: &str) {
    match r {
        Err(e @ DomainError::Validation { .. }) => {
            let DomainError::Validation { reason, .. } = &e else {
                unreachable!()
            };
            assert!(
                reason.contains(&format!("({invariant})")),
                "{e:?} does not cite {invariant}"
            );
            assert_eq!(e.code(), "MELMASTOON.GENERAL.VALIDATION_FAILED");
            assert_eq!(e.http_status(), 422);
        }
        other => panic!("expected a {invariant} refusal, got {other:?}"),
    }
}

/// Asserts the call changed nothing: no event, same version, same snapshot.
fn assert_untouched(c: &KeyCredential, before: &KeyCredential) {
    assert!(c.pending_events().is_empty(), "{:?}", c.pending_events());
    assert_eq!(c.version(), before.version());
    assert_eq!(
        format!("{:?}", c.snapshot()),
        format!("{:?}", before.snapshot())
    );
}

fn assert_invalid_transition(r: Result<Transition, DomainError>, from: &str, action: &str) {
    let e = r.expect_err("transition must be refused");
    match &e {
        DomainError::InvalidStateTransition { from: f, action: a } => {
            assert_eq!((*f, *a), (from, action));
        }
        other => panic!("expected an invalid state transition, got {other:?}"),
    }
    assert_eq!(e.code(), "MELMASTOON.GENERAL.VALIDATION_FAILED");
    assert_eq!(e.sub_code(), Some("invalid_state_transition"));
    assert_eq!(e.http_status(), 422);
}

// ---- I-1 ----------------------------------------------------------------------------

#[test]
fn validity_window_refuses_a_start_not_before_its_end() {
    // I-1: validFrom < validUntil
    let t = valid_from();
    assert_refused(ValidityWindow::new(t, t), "I-1");
    assert_refused(ValidityWindow::new(t, t - Duration::seconds(1)), "I-1");
    let w = ValidityWindow::new(t, t + Duration::seconds(1)).expect("one second is a window");
    assert_eq!(w.duration(), Duration::seconds(1));
}

#[test]
fn update_refuses_a_valid_until_at_or_before_valid_from() {
    // I-1, through update()
    for until in [valid_from(), valid_from() - Duration::hours(3)] {
        let mut c = a_key_credential().in_state(KeyCredentialState::Active);
        let before = c.clone();
        let r = c.update(
            UpdateInput {
                valid_until: Some(until),
                ..Default::default()
            },
            later(),
        );
        assert_refused(r, "I-1");
        assert_untouched(&c, &before);
    }
}

// ---- I-2 / I-3 ----------------------------------------------------------------------

#[test]
fn guest_and_master_credentials_with_their_holder_fields_are_requested() {
    // I-2 / I-3 positive controls: the builders' defaults are valid.
    let g = a_key_credential()
        .try_request()
        .expect("valid guest credential");
    assert_eq!(g.holder_kind(), HolderKind::Guest);
    let m = a_master_key()
        .try_request()
        .expect("valid master credential");
    assert_eq!(m.holder_kind(), HolderKind::StaffMaster);
}

#[test]
fn guest_credential_without_reservation_is_refused() {
    // I-2: guest ⇒ reservationId present
    assert_refused(a_key_credential().reservation(None).try_request(), "I-2");
}

#[test]
fn guest_credential_without_guest_id_is_refused() {
    // I-2: guest ⇒ guestId present
    assert_refused(a_key_credential().guest(None).try_request(), "I-2");
}

#[test]
fn guest_credential_with_a_staff_user_is_refused() {
    // I-2: guest ⇒ staffUserId absent
    assert_refused(
        a_key_credential().staff(Some("usr_01")).try_request(),
        "I-2",
    );
}

#[test]
fn master_credential_without_staff_user_is_refused() {
    // I-3: staff_master ⇒ staffUserId present
    assert_refused(a_master_key().staff(None).try_request(), "I-3");
}

#[test]
fn master_credential_with_a_reservation_is_refused() {
    // I-3: staff_master ⇒ reservationId absent
    assert_refused(
        a_master_key().reservation(Some("rsv_01")).try_request(),
        "I-3",
    );
}

// ---- I-4 / I-5 ----------------------------------------------------------------------

/// Every transition call, by name, applied to `c`.
fn every_call(c: &mut KeyCredential, action: &str) -> Result<Transition, DomainError> {
    let t = later();
    match action {
        "mark_pending" => c.mark_pending(t),
        "mark_active" => c.mark_active(t),
        "mark_failed" => c.mark_failed(FailureReason::VendorUnreachable, t),
        "suspend" => c.suspend(SuspendReason::FraudReview, t),
        "unsuspend" => c.unsuspend(t),
        "revoke" => c.revoke(RevokeReason::Security, t),
        "update" => c.update(
            UpdateInput {
                valid_until: Some(valid_until() + Duration::hours(2)),
                rooms: Some(vec![room("rmu_101"), room("rmu_102")]),
                scope: None,
            },
            t,
        ),
        "link_replacement" => c.link_replacement(credential_id(9), t),
        other => unreachable!("unknown action {other}"),
    }
}

#[test]
fn revoked_credential_refuses_every_other_transition() {
    // I-4: revoked is terminal, whichever state it was revoked from.
    for from in [
        KeyCredentialState::Pending,
        KeyCredentialState::Active,
        KeyCredentialState::Suspended,
    ] {
        for action in [
            "mark_pending",
            "mark_active",
            "mark_failed",
            "suspend",
            "unsuspend",
            "update",
        ] {
            let mut c = a_key_credential().in_state(from);
            c.revoke(RevokeReason::Checkout, later()).unwrap();
            c.take_pending_events();
            let before = c.clone();
            assert_invalid_transition(every_call(&mut c, action), "revoked", action);
            assert_eq!(
                c.state(),
                KeyCredentialState::Revoked,
                "{action} from revoked"
            );
            assert_untouched(&c, &before);
        }
    }
}

#[test]
fn repeat_revoke_is_already_applied_with_no_event_and_no_version_bump() {
    // I-4: a redelivered revoke is idempotent.
    let mut c = a_key_credential().in_state(KeyCredentialState::Revoked);
    let before = c.clone();
    for reason in RevokeReason::ALL {
        assert_eq!(c.revoke(*reason, later()), Ok(Transition::AlreadyApplied));
        assert_untouched(&c, &before);
    }
    assert_eq!(
        c.revoke_reason(),
        Some(RevokeReason::Checkout),
        "first reason kept"
    );
}

#[test]
fn failed_credential_refuses_every_other_transition() {
    // I-5: failed is terminal, whether it failed from requested or from pending.
    for from in [KeyCredentialState::Requested, KeyCredentialState::Pending] {
        for action in [
            "mark_pending",
            "mark_active",
            "suspend",
            "unsuspend",
            "revoke",
            "update",
            "link_replacement",
        ] {
            let mut c = a_key_credential().in_state(from);
            c.mark_failed(FailureReason::VendorRefused, later())
                .unwrap();
            c.take_pending_events();
            let before = c.clone();
            assert_invalid_transition(every_call(&mut c, action), "failed", action);
            assert_eq!(
                c.state(),
                KeyCredentialState::Failed,
                "{action} from failed"
            );
            assert_untouched(&c, &before);
        }
    }
}

#[test]
fn repeat_mark_failed_is_already_applied_and_another_reason_is_refused() {
    // I-5: the same failure redelivered is idempotent; a different one cannot rewrite it.
    let mut c = a_key_credential().in_state(KeyCredentialState::Failed);
    let before = c.clone();
    assert_eq!(
        c.mark_failed(FailureReason::VendorRefused, later()),
        Ok(Transition::AlreadyApplied)
    );
    assert_untouched(&c, &before);
    assert_invalid_transition(
        c.mark_failed(FailureReason::VendorUnreachable, later()),
        "failed",
        "mark_failed",
    );
    assert_untouched(&c, &before);
    assert_eq!(c.failure_reason(), Some(FailureReason::VendorRefused));
}

// ---- I-7 ----------------------------------------------------------------------------

#[test]
fn provisional_credential_over_48_hours_is_refused_at_request() {
    // I-7: provisional ⇒ validUntil <= validFrom + 48h
    let over = a_key_credential()
        .provisional(true)
        .valid_for(Duration::hours(48) + Duration::seconds(1))
        .try_request();
    assert_refused(over, "I-7");
    a_key_credential()
        .provisional(true)
        .valid_for(Duration::hours(48))
        .try_request()
        .expect("exactly 48 hours is allowed");
    a_key_credential()
        .provisional(false)
        .valid_for(Duration::hours(200))
        .try_request()
        .expect("the 48-hour cap is for provisional credentials only");
}

#[test]
fn provisional_credential_cannot_be_extended_past_48_hours_by_update() {
    // I-7, through update()
    let mut c = a_key_credential()
        .provisional(true)
        .valid_for(Duration::hours(24))
        .in_state(KeyCredentialState::Active);
    let before = c.clone();
    let r = c.update(
        UpdateInput {
            valid_until: Some(valid_from() + Duration::hours(49)),
            ..Default::default()
        },
        later(),
    );
    assert_refused(r, "I-7");
    assert_untouched(&c, &before);
    let ok = c.update(
        UpdateInput {
            valid_until: Some(valid_from() + Duration::hours(48)),
            ..Default::default()
        },
        later(),
    );
    assert_eq!(ok, Ok(Transition::Applied));
}

// ---- I-8 ----------------------------------------------------------------------------

const RAW_REF: &str = "kbpwd-9137311";
const RAW_PIN: &str = "482913";

#[test]
fn debug_of_vendor_ref_and_pin_never_shows_the_raw_value() {
    // I-8: also when nested in a struct with a derived Debug, the way a unit of work holds them.
    #[derive(Debug)]
    #[allow(dead_code)] // read only through Debug
    struct DeviceWrite {
        vendor_ref: Option<VendorRef>,
        pin: Option<Pin>,
    }
    let r = VendorRef::new(RAW_REF);
    let p = Pin::parse(RAW_PIN).unwrap();
    let w = DeviceWrite {
        vendor_ref: Some(r.clone()),
        pin: Some(p.clone()),
    };
    for text in [
        format!("{r:?}"),
        format!("{p:?}"),
        format!("{w:?}"),
        format!("{w:#?}"),
    ] {
        assert!(
            !text.contains(RAW_REF) && !text.contains("9137311"),
            "{text}"
        );
        assert!(!text.contains(RAW_PIN), "{text}");
    }
    assert_eq!(r.expose(), RAW_REF);
    assert_eq!(p.expose(), RAW_PIN);
}

#[test]
fn debug_of_a_credential_its_events_and_snapshot_never_show_a_vendor_ref_or_pin() {
    // I-8: vendorRef is never in an event, snapshot or log line. The aggregate never holds
    // it, so formatting anything it hands out must not reveal one.
    let mut c = a_key_credential().requested();
    c.mark_pending(later()).unwrap();
    c.mark_active(later()).unwrap();
    c.suspend(SuspendReason::NoShow, later()).unwrap();
    c.unsuspend(later()).unwrap();
    c.revoke(RevokeReason::Lost, later()).unwrap();
    c.link_replacement(credential_id(3), later()).unwrap();
    let texts = [
        format!("{c:?}"),
        format!("{:?}", c.snapshot()),
        format!("{:?}", c.pending_events()),
        format!("{:#?}", c.take_pending_events()),
    ];
    for text in texts {
        assert!(!text.contains(RAW_REF) && !text.contains(RAW_PIN), "{text}");
        assert!(!text.to_lowercase().contains("vendor_ref"), "{text}");
    }
}

// ---- I-11 ---------------------------------------------------------------------------

fn assert_cross_tenant<T: std::fmt::Debug>(r: Result<T, DomainError>) {
    let e = r.expect_err("cross-tenant reference must be refused");
    assert_eq!(e, DomainError::CrossTenantReference { field: "rooms" });
    assert_eq!(e.code(), "MELMASTOON.GENERAL.CROSS_TENANT_REFERENCE");
    assert_eq!(e.http_status(), 422);
}

fn foreign_rooms() -> [ScopedRoom; 2] {
    [
        ScopedRoom {
            tenant_id: other_tenant(),
            ..room("rmu_101")
        },
        ScopedRoom {
            property_id: other_property(),
            ..room("rmu_101")
        },
    ]
}

#[test]
fn room_of_another_tenant_or_property_is_a_cross_tenant_reference_at_request() {
    // I-11: every RoomId is checked against the credential's tenant (and property).
    for foreign in foreign_rooms() {
        assert_cross_tenant(
            a_key_credential()
                .rooms(vec![room("rmu_102"), foreign.clone()])
                .try_request(),
        );
        assert_cross_tenant(a_master_key().rooms(vec![foreign]).try_request());
    }
}

#[test]
fn room_of_another_tenant_or_property_is_a_cross_tenant_reference_at_update() {
    // I-11, through update()
    for foreign in foreign_rooms() {
        let mut c = a_key_credential().in_state(KeyCredentialState::Suspended);
        let before = c.clone();
        assert_cross_tenant(c.update(
            UpdateInput {
                rooms: Some(vec![room("rmu_101"), foreign]),
                ..Default::default()
            },
            later(),
        ));
        assert_untouched(&c, &before);
    }
}

// ---- I-12 ---------------------------------------------------------------------------

#[test]
fn guest_credential_with_no_room_is_refused() {
    // I-12: rooms.length > 0 for guest credentials, at request and at update.
    assert_refused(a_key_credential().rooms(vec![]).try_request(), "I-12");
    let mut c = a_key_credential().in_state(KeyCredentialState::Active);
    let before = c.clone();
    assert_refused(
        c.update(
            UpdateInput {
                rooms: Some(vec![]),
                ..Default::default()
            },
            later(),
        ),
        "I-12",
    );
    assert_untouched(&c, &before);
}

#[test]
fn master_credential_with_no_room_is_allowed() {
    // I-12: a master with areas-only scope may have empty rooms.
    let m = a_master_key().try_request().expect("areas-only master");
    assert!(m.rooms().is_empty());
    let mut c = a_master_key()
        .rooms(vec![room("rmu_101")])
        .in_state(KeyCredentialState::Active);
    assert_eq!(
        c.update(
            UpdateInput {
                rooms: Some(vec![]),
                ..Default::default()
            },
            later()
        ),
        Ok(Transition::Applied)
    );
    assert!(c.rooms().is_empty());
}

// ---- link_replacement (spec 003 §1.3) -------------------------------------------------

#[test]
fn link_replacement_is_allowed_only_on_credentials_revoked_as_lost_or_replaced() {
    for reason in RevokeReason::ALL {
        let mut c = a_key_credential().in_state_revoked_as(KeyCredentialState::Revoked, *reason);
        let before = c.clone();
        let r = c.link_replacement(credential_id(7), later());
        if matches!(reason, RevokeReason::Lost | RevokeReason::Replaced) {
            assert_eq!(r, Ok(Transition::Applied), "{reason:?}");
            assert_eq!(c.replaced_by_id(), Some(&credential_id(7)));
            assert_eq!(c.version(), before.version() + 1);
            assert!(
                c.pending_events().is_empty(),
                "the revoke already emitted its event"
            );
            assert_eq!(c.state(), KeyCredentialState::Revoked);
        } else {
            assert_invalid_transition(r, "revoked", "link_replacement");
            assert_untouched(&c, &before);
        }
    }
    for state in [
        KeyCredentialState::Requested,
        KeyCredentialState::Pending,
        KeyCredentialState::Active,
        KeyCredentialState::Suspended,
        KeyCredentialState::Failed,
    ] {
        let mut c = a_key_credential().in_state(state);
        let before = c.clone();
        assert_invalid_transition(
            c.link_replacement(credential_id(7), later()),
            state.as_str(),
            "link_replacement",
        );
        assert_untouched(&c, &before);
    }
}

#[test]
fn link_replacement_repeated_with_the_same_id_is_already_applied_and_another_id_is_refused() {
    let mut c =
        a_key_credential().in_state_revoked_as(KeyCredentialState::Revoked, RevokeReason::Lost);
    assert_eq!(
        c.link_replacement(credential_id(7), later()),
        Ok(Transition::Applied)
    );
    let before = c.clone();
    assert_eq!(
        c.link_replacement(credential_id(7), later()),
        Ok(Transition::AlreadyApplied)
    );
    assert_untouched(&c, &before);
    assert_invalid_transition(
        c.link_replacement(credential_id(8), later()),
        "revoked",
        "link_replacement",
    );
    assert_untouched(&c, &before);
    assert_eq!(c.replaced_by_id(), Some(&credential_id(7)));
}
