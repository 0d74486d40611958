//! Spec `003` §5.1: O-1 (90 days), O-3 (at most 48 hours), and the kinds a certificate
//! allows are the property's `allowOfflineIssuanceKinds` at most.

use chrono::Duration;
use lockstep_domain::{KeyCredentialKind, OfflineIssuance, OfflineRevokeReason};

use crate::builders::*;

fn cert(
    kinds: Vec<KeyCredentialKind>,
    hours: i64,
) -> Result<OfflineIssuance, lockstep_domain::DomainError> {
    OfflineIssuance::issue(
        tenant(),
        property(),
        "desk-01",
        "MCowBQYDK2VwAyEA",
        kinds,
        &[KeyCredentialKind::PinCode, KeyCredentialKind::RfidCard],
        hours,
        created_at(),
    )
}

#[test]
fn o1_a_certificate_lives_ninety_days() {
    let c = cert(vec![KeyCredentialKind::PinCode], 48).expect("valid");
    assert_eq!(c.expires_at - c.issued_at, Duration::days(90));
    assert!(c.signed_payload().contains(&format!("serial={}", c.serial)));
}

#[test]
fn o3_the_window_is_at_most_48_hours_and_kinds_follow_the_policy() {
    assert!(cert(vec![KeyCredentialKind::PinCode], 49).is_err());
    assert!(cert(vec![KeyCredentialKind::PinCode], 0).is_err());
    assert!(
        cert(vec![KeyCredentialKind::MobileApp], 24).is_err(),
        "not allowed offline"
    );
    assert!(cert(vec![], 24).is_err());
    let mut c = cert(vec![KeyCredentialKind::RfidCard], 1).expect("valid");
    c.revoke(OfflineRevokeReason::Compromise, created_at());
    c.revoke(
        OfflineRevokeReason::Rotation,
        created_at() + Duration::hours(1),
    );
    assert_eq!(
        c.revoke_reason,
        Some(OfflineRevokeReason::Compromise),
        "first revocation kept"
    );
    assert!(OfflineIssuance::issue(
        tenant(),
        property(),
        "desk 01; DROP",
        "k",
        vec![KeyCredentialKind::PinCode],
        &[KeyCredentialKind::PinCode],
        24,
        created_at()
    )
    .is_err());
}
