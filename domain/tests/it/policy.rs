//! `KeyKindPolicy` (spec `003` §4): K-1, K-2, kind selection and fallback.

use chrono::Duration;
use lockstep_domain::{
    DomainError, FailureReason, KeyCredentialKind as K, KeyKindPolicy, KeyKindPolicyId,
    KeyKindPolicyInput, LockCapabilities,
};

use crate::builders::*;

fn input(preferred: Vec<K>, fallback: Vec<K>) -> KeyKindPolicyInput {
    KeyKindPolicyInput {
        id: KeyKindPolicyId::from_ulid(ulid::Ulid::from_parts(1_700_000_000_000, 3)),
        tenant_id: tenant(),
        property_id: property(),
        preferred_order: preferred,
        fallback_chain: fallback,
        max_valid_until_extension_hours: None,
        id_verify_required_for: vec![],
        no_show_suspend_after_hours: None,
        allow_offline_issuance_kinds: vec![],
        updated_at: created_at(),
    }
}

fn field(e: DomainError) -> &'static str {
    match e {
        DomainError::Validation { field, .. } => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn all_caps() -> LockCapabilities {
    LockCapabilities {
        mobile_key: true,
        card_encoding: true,
        pin: true,
        qr: true,
        nfc: true,
        ..LockCapabilities::default()
    }
}

#[test]
fn k1_refuses_empty_lists() {
    assert_eq!(
        field(KeyKindPolicy::new(input(vec![], vec![K::PinCode])).unwrap_err()),
        "preferredOrder"
    );
    assert_eq!(
        field(KeyKindPolicy::new(input(vec![K::PinCode], vec![])).unwrap_err()),
        "fallbackChain"
    );
}

#[test]
fn k1_refuses_a_kind_in_both_lists_or_twice() {
    assert!(KeyKindPolicy::new(input(vec![K::MobileApp, K::PinCode], vec![K::PinCode])).is_err());
    assert!(KeyKindPolicy::new(input(vec![K::MobileApp, K::MobileApp], vec![K::PinCode])).is_err());
    assert!(KeyKindPolicy::new(input(vec![K::MobileApp], vec![K::PinCode])).is_ok());
}

#[test]
fn k2_defaults_to_168_hours_and_caps_at_720() {
    let p = KeyKindPolicy::new(input(vec![K::MobileApp], vec![K::PinCode])).unwrap();
    assert_eq!(p.max_valid_until_extension_hours(), 168);
    assert_eq!(p.no_show_suspend_after_hours(), 2);
    for (h, ok) in [(720, true), (0, true), (721, false), (-1, false)] {
        let mut i = input(vec![K::MobileApp], vec![K::PinCode]);
        i.max_valid_until_extension_hours = Some(h);
        assert_eq!(KeyKindPolicy::new(i).is_ok(), ok, "{h} hours");
    }
    let mut i = input(vec![K::MobileApp], vec![K::PinCode]);
    i.no_show_suspend_after_hours = Some(-1);
    assert_eq!(
        field(KeyKindPolicy::new(i).unwrap_err()),
        "noShowSuspendAfterHours"
    );
}

#[test]
fn default_policy_is_pin_first_and_valid() {
    let d = KeyKindPolicy::default_for(
        KeyKindPolicyId::from_ulid(ulid::Ulid::from_parts(1, 1)),
        tenant(),
        property(),
        created_at(),
    );
    assert_eq!(d.preferred_order(), &[K::PinCode]);
    assert_eq!(d.fallback_chain(), &[K::MobileApp, K::RfidCard]);
    assert_eq!(lockstep_domain::saga::DEFAULT_GUEST_KIND, K::PinCode);
    // K-1/K-2 hold for the default too
    let mut i = input(d.preferred_order().to_vec(), d.fallback_chain().to_vec());
    i.max_valid_until_extension_hours = Some(d.max_valid_until_extension_hours());
    assert!(KeyKindPolicy::new(i).is_ok());
}

#[test]
fn choose_kind_walks_preferred_then_fallback_and_drops_what_the_adapter_cannot_do() {
    let p = KeyKindPolicy::new(input(vec![K::MobileApp, K::RfidCard], vec![K::PinCode])).unwrap();
    assert_eq!(p.choose_kind(&all_caps(), false), Ok(K::MobileApp));
    let no_mobile = LockCapabilities {
        mobile_key: false,
        ..all_caps()
    };
    assert_eq!(p.choose_kind(&no_mobile, false), Ok(K::RfidCard));
    // I-6: rfid_card needs cardEncoding
    let pin_only = LockCapabilities {
        pin: true,
        ..LockCapabilities::default()
    };
    assert_eq!(p.choose_kind(&pin_only, false), Ok(K::PinCode));
    assert_eq!(
        p.choose_kind(
            &LockCapabilities {
                qr: true,
                ..LockCapabilities::default()
            },
            false
        ),
        Err(FailureReason::KindUnsupported)
    );
}

#[test]
fn every_kind_needs_its_capability_flag() {
    let caps = |f: fn(&mut LockCapabilities)| {
        let mut c = LockCapabilities::default();
        f(&mut c);
        c
    };
    assert!(caps(|c| c.pin = true).supports(K::PinCode));
    assert!(caps(|c| c.mobile_key = true).supports(K::MobileApp));
    assert!(caps(|c| c.card_encoding = true).supports(K::RfidCard));
    assert!(caps(|c| c.qr = true).supports(K::QrCode));
    assert!(caps(|c| c.nfc = true).supports(K::NfcTag));
    for k in K::ALL {
        assert!(!LockCapabilities::default().supports(*k), "{k:?}");
    }
}

#[test]
fn id_verification_gates_the_kinds_that_require_it() {
    let mut i = input(vec![K::MobileApp], vec![K::PinCode]);
    i.id_verify_required_for = vec![K::MobileApp];
    let p = KeyKindPolicy::new(i).unwrap();
    assert_eq!(p.choose_kind(&all_caps(), false), Ok(K::PinCode));
    assert_eq!(p.choose_kind(&all_caps(), true), Ok(K::MobileApp));
}

#[test]
fn fallback_after_failure_is_mobile_then_pin_then_manual_escort() {
    let p = KeyKindPolicy::new(input(vec![K::MobileApp], vec![K::PinCode])).unwrap();
    assert_eq!(
        p.next_after(K::MobileApp, &all_caps(), false),
        Some(K::PinCode)
    );
    assert_eq!(
        p.next_after(K::PinCode, &all_caps(), false),
        None,
        "manual escort"
    );
    // a kind the adapter cannot do is skipped
    let p = KeyKindPolicy::new(input(vec![K::MobileApp], vec![K::RfidCard, K::PinCode])).unwrap();
    let no_cards = LockCapabilities {
        card_encoding: false,
        ..all_caps()
    };
    assert_eq!(
        p.next_after(K::MobileApp, &no_cards, false),
        Some(K::PinCode)
    );
}

#[test]
fn k2_extension_check_measures_from_the_original_end() {
    let p = KeyKindPolicy::new(input(vec![K::MobileApp], vec![K::PinCode])).unwrap();
    let orig = valid_until();
    assert!(p.check_extension(orig, orig + Duration::hours(168)).is_ok());
    assert!(
        p.check_extension(orig, orig - Duration::hours(5)).is_ok(),
        "shortening"
    );
    assert_eq!(
        field(
            p.check_extension(orig, orig + Duration::hours(169))
                .unwrap_err()
        ),
        "validUntil"
    );
}
