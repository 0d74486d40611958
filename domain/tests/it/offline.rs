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

#[test]
fn a_certificate_is_renewed_only_in_its_last_seven_days_and_only_while_in_force() {
    use lockstep_domain::RenewalRefusal;
    let c = cert(vec![KeyCredentialKind::RfidCard], 24).expect("valid");
    let due = c.expires_at - Duration::days(7);
    assert_eq!(c.rotation_due_at(), due);
    assert_eq!(
        c.renew("bmV3LWtleQ==", due - Duration::seconds(1)),
        Err(RenewalRefusal::NotDue { due_at: due })
    );
    assert_eq!(
        c.renew("MCowBQYDK2VwAyEA", due),
        Err(RenewalRefusal::SameKey)
    );
    assert_eq!(
        c.renew("bmV3LWtleQ==", c.expires_at),
        Err(RenewalRefusal::Expired)
    );
    let next = c.renew("bmV3LWtleQ==", due).expect("due");
    assert_eq!(next.replaces.as_ref(), Some(&c.id));
    assert_ne!(next.id, c.id);
    assert_ne!(next.serial, c.serial);
    assert_eq!(
        (
            next.tenant_id,
            &next.property_id,
            next.desktop_device_id.as_str(),
            &next.allowed_kinds,
            next.max_valid_window_hours
        ),
        (
            c.tenant_id,
            &c.property_id,
            c.desktop_device_id.as_str(),
            &c.allowed_kinds,
            c.max_valid_window_hours
        )
    );
    assert_eq!(next.public_key_ed25519, "bmV3LWtleQ==");
    assert_eq!(
        (next.issued_at, next.expires_at),
        (due, due + Duration::days(90))
    );
    let mut revoked = c.clone();
    revoked.revoke(OfflineRevokeReason::TenantRequest, due);
    assert_eq!(
        revoked.renew("bmV3LWtleQ==", due),
        Err(RenewalRefusal::Revoked)
    );
}

#[test]
fn a_rotation_ends_the_term_but_keeps_what_was_minted_before_it() {
    use lockstep_domain::Unvouched;
    let t0 = created_at();
    let mut c = cert(vec![KeyCredentialKind::RfidCard], 24).expect("valid");
    let rotated = t0 + Duration::days(85);
    assert_eq!(
        c.vouches_for(t0 - Duration::seconds(1)),
        Err(Unvouched::OutsideTerm)
    );
    assert!(c.revoke(OfflineRevokeReason::Rotation, rotated));
    assert!(!OfflineRevokeReason::Rotation.cascades());
    assert_eq!(c.vouches_for(rotated - Duration::seconds(1)), Ok(()));
    assert_eq!(c.vouches_for(rotated), Err(Unvouched::Revoked));
    // a rotated desktop found compromised: O-2 after all, the time of the revocation kept
    assert!(!c.revoke(OfflineRevokeReason::Rotation, rotated + Duration::days(1)));
    assert!(c.revoke(OfflineRevokeReason::Compromise, rotated + Duration::days(1)));
    assert_eq!(c.revoke_reason, Some(OfflineRevokeReason::Compromise));
    assert_eq!(c.revoked_at, Some(rotated));
    assert!(OfflineRevokeReason::Compromise.cascades());
    assert_eq!(
        c.vouches_for(t0 + Duration::days(1)),
        Err(Unvouched::Revoked)
    );
}
