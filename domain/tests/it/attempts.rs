//! Spec `003` §1.5: A-2 is the store's (unique per tenant, vendor and event id), A-1 the
//! schema's (a trigger); are enforced when an attempt is recorded.

use chrono::Duration;
use lockstep_domain::{
    AttemptDenyReason, AttemptOutcome, AttemptReport, DomainError, KeyCredentialAttempt,
    KeyCredentialState, LockDeviceId, PropertyId, VendorCode,
};

use crate::builders::*;

fn report(granted: bool, at: lockstep_domain::Timestamp, property: PropertyId) -> AttemptReport {
    AttemptReport {
        vendor_event_id: "163377:1635556821".into(),
        attempted_at: at,
        granted,
        device_id: LockDeviceId::generate(),
        property_id: property,
        vendor: VendorCode::Ttlock,
        method: "pin_code",
    }
}

#[test]
fn a4_a_credential_of_another_tenant_or_property_is_refused() {
    let cred = a_key_credential().in_state(KeyCredentialState::Active);
    let during = valid_from() + Duration::hours(2);
    let mine = KeyCredentialAttempt::record(
        tenant(),
        report(true, during, property()),
        Some(&cred),
        during,
    );
    assert!(mine.is_ok());
    assert_eq!(
        KeyCredentialAttempt::record(
            other_tenant(),
            report(true, during, property()),
            Some(&cred),
            during
        ),
        Err(DomainError::CrossTenantReference {
            field: "keyCredentialId"
        })
    );
    assert_eq!(
        KeyCredentialAttempt::record(
            tenant(),
            report(true, during, other_property()),
            Some(&cred),
            during
        ),
        Err(DomainError::CrossTenantReference {
            field: "keyCredentialId"
        })
    );
}

#[test]
fn a3_a_vendor_time_beyond_the_tolerance_is_clamped() {
    let now = valid_from() + Duration::hours(2);
    let within = KeyCredentialAttempt::record(
        tenant(),
        report(true, now + Duration::minutes(4), property()),
        None,
        now,
    )
    .expect("recorded");
    assert!(!within.clamped);
    assert_eq!(within.attempted_at, now + Duration::minutes(4));
    let ahead = KeyCredentialAttempt::record(
        tenant(),
        report(true, now + Duration::minutes(6), property()),
        None,
        now,
    )
    .expect("recorded");
    assert!(ahead.clamped);
    assert_eq!(ahead.attempted_at, now);
    assert_eq!(ahead.ingested_at, now);
}

#[test]
fn a_denied_attempt_says_why_from_the_credential() {
    let at = |c: &lockstep_domain::KeyCredential, when| {
        KeyCredentialAttempt::record(tenant(), report(false, when, property()), Some(c), when)
            .expect("recorded")
    };
    let during = valid_from() + Duration::hours(2);
    let revoked = a_key_credential().in_state(KeyCredentialState::Revoked);
    assert_eq!(
        at(&revoked, during).deny_reason,
        Some(AttemptDenyReason::Revoked)
    );
    let suspended = a_key_credential().in_state(KeyCredentialState::Suspended);
    assert_eq!(
        at(&suspended, during).deny_reason,
        Some(AttemptDenyReason::Suspended)
    );
    let active = a_key_credential().in_state(KeyCredentialState::Active);
    assert_eq!(
        at(&active, valid_until() + Duration::hours(1)).deny_reason,
        Some(AttemptDenyReason::Expired)
    );
    assert_eq!(
        at(&active, valid_from() - Duration::hours(1)).deny_reason,
        Some(AttemptDenyReason::OutsideWindow)
    );
    let unknown =
        KeyCredentialAttempt::record(tenant(), report(false, during, property()), None, during)
            .expect("recorded");
    assert_eq!(
        unknown.deny_reason,
        Some(AttemptDenyReason::UnknownCredential)
    );
    assert_eq!(unknown.key_credential_id, None);
    // a denied attempt on a live key in its window: nothing in the record explains it
    assert_eq!(
        at(&active, during).deny_reason,
        Some(AttemptDenyReason::Other)
    );
    // a granted attempt keeps its outcome whatever the record says
    let g = KeyCredentialAttempt::record(
        tenant(),
        report(true, during, property()),
        Some(&revoked),
        during,
    )
    .expect("recorded");
    assert_eq!((g.outcome, g.deny_reason), (AttemptOutcome::Granted, None));
    assert_eq!(AttemptOutcome::Denied.as_str(), "denied");
}
