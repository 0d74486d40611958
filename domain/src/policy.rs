//! `KeyKindPolicy` (spec `003` §4): per (tenant, property) rules for which credential kind a
//! guest gets, what to fall back to when a kind fails (spec `002`: `mobile_app → pin_code →
//! manual escort`), how far a stay's key may be extended (K-2), and when a no-show is
//! suspended.

use chrono::Duration;

use crate::capabilities::LockCapabilities;
use crate::clock::Timestamp;
use crate::credential::{FailureReason, KeyCredentialKind};
use crate::errors::DomainError;
use crate::ids::{KeyKindPolicyId, PropertyId, TenantId};

/// K-2: the default cap on extending a key's `validUntil` (one week).
pub const DEFAULT_MAX_EXTENSION_HOURS: i64 = 168;
/// K-2: the cap may not exceed 30 days.
pub const MAX_EXTENSION_HOURS_LIMIT: i64 = 720;
/// Default delay between `reservation.no_show` and the suspension of the key.
pub const DEFAULT_NO_SHOW_SUSPEND_AFTER_HOURS: i64 = 2;

/// The policy's fields as they come from storage or the API, before validation.
#[derive(Clone, Debug)]
pub struct KeyKindPolicyInput {
    /// Id (`kkp_`).
    pub id: KeyKindPolicyId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Kinds to try first, in order.
    pub preferred_order: Vec<KeyCredentialKind>,
    /// Kinds tried, in order, once every preferred kind failed.
    pub fallback_chain: Vec<KeyCredentialKind>,
    /// K-2 cap; `None` means the default (168).
    pub max_valid_until_extension_hours: Option<i64>,
    /// Kinds that need an ID-document snapshot before issue.
    pub id_verify_required_for: Vec<KeyCredentialKind>,
    /// Hours between `reservation.no_show` and the suspension; `None` means 2.
    pub no_show_suspend_after_hours: Option<i64>,
    /// Kinds a desktop may mint offline.
    pub allow_offline_issuance_kinds: Vec<KeyCredentialKind>,
    /// Last change.
    pub updated_at: Timestamp,
}

/// A validated `KeyKindPolicy`: K-1 and K-2 hold for every value of this type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyKindPolicy {
    id: KeyKindPolicyId,
    tenant_id: TenantId,
    property_id: PropertyId,
    preferred_order: Vec<KeyCredentialKind>,
    fallback_chain: Vec<KeyCredentialKind>,
    max_valid_until_extension_hours: i64,
    id_verify_required_for: Vec<KeyCredentialKind>,
    no_show_suspend_after_hours: i64,
    allow_offline_issuance_kinds: Vec<KeyCredentialKind>,
    updated_at: Timestamp,
}

impl KeyKindPolicy {
    /// Validates K-1 (both lists non-empty; a kind appears at most once across them) and
    /// K-2 (extension cap in `0..=720`, default 168); the no-show delay must be `>= 0`.
    pub fn new(input: KeyKindPolicyInput) -> Result<Self, DomainError> {
        // K-1
        if input.preferred_order.is_empty() {
            return Err(DomainError::validation(
                "preferredOrder",
                "must not be empty (K-1)",
            ));
        }
        if input.fallback_chain.is_empty() {
            return Err(DomainError::validation(
                "fallbackChain",
                "must not be empty (K-1)",
            ));
        }
        let mut seen: Vec<KeyCredentialKind> = Vec::new();
        for k in input.preferred_order.iter().chain(&input.fallback_chain) {
            if seen.contains(k) {
                return Err(DomainError::validation(
                    "fallbackChain",
                    format!(
                        "kind '{}' appears more than once across preferredOrder and fallbackChain (K-1)",
                        k.as_str()
                    ),
                ));
            }
            seen.push(*k);
        }
        // K-2
        let max_ext = input
            .max_valid_until_extension_hours
            .unwrap_or(DEFAULT_MAX_EXTENSION_HOURS);
        if !(0..=MAX_EXTENSION_HOURS_LIMIT).contains(&max_ext) {
            return Err(DomainError::validation(
                "maxValidUntilExtensionHours",
                "must be between 0 and 720 hours (K-2)",
            ));
        }
        let no_show = input
            .no_show_suspend_after_hours
            .unwrap_or(DEFAULT_NO_SHOW_SUSPEND_AFTER_HOURS);
        if no_show < 0 {
            return Err(DomainError::validation(
                "noShowSuspendAfterHours",
                "must not be negative",
            ));
        }
        Ok(Self {
            id: input.id,
            tenant_id: input.tenant_id,
            property_id: input.property_id,
            preferred_order: input.preferred_order,
            fallback_chain: input.fallback_chain,
            max_valid_until_extension_hours: max_ext,
            id_verify_required_for: input.id_verify_required_for,
            no_show_suspend_after_hours: no_show,
            allow_offline_issuance_kinds: input.allow_offline_issuance_kinds,
            updated_at: input.updated_at,
        })
    }

    /// The policy of a property that has none stored: PIN first (spec `002`: PIN delivery
    /// is first-class and the default for guests with feature phones, and TTLock keypads
    /// dominate guesthouses in the target markets), then a mobile key, then an RFID card
    /// from the desk encoder where the property has one; defaults for K-2 (168 h) and the
    /// no-show delay (2 h); no ID-verify requirement; offline minting of PINs and cards
    /// (what the desktop encoder and BLE-direct TTLock can mint).
    pub fn default_for(
        id: KeyKindPolicyId,
        tenant_id: TenantId,
        property_id: PropertyId,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            tenant_id,
            property_id,
            preferred_order: vec![KeyCredentialKind::PinCode],
            fallback_chain: vec![KeyCredentialKind::MobileApp, KeyCredentialKind::RfidCard],
            max_valid_until_extension_hours: DEFAULT_MAX_EXTENSION_HOURS,
            id_verify_required_for: vec![],
            no_show_suspend_after_hours: DEFAULT_NO_SHOW_SUSPEND_AFTER_HOURS,
            allow_offline_issuance_kinds: vec![
                KeyCredentialKind::PinCode,
                KeyCredentialKind::RfidCard,
            ],
            updated_at: now,
        }
    }

    /// Every kind of the policy, preferred first, then the fallback chain.
    fn order(&self) -> impl Iterator<Item = KeyCredentialKind> + '_ {
        self.preferred_order
            .iter()
            .chain(&self.fallback_chain)
            .copied()
    }

    /// Whether `kind` may be issued here: the adapter can do it (I-6, spec `003` §6.1) and,
    /// if the policy wants an ID-document snapshot for it, the guest has one.
    pub fn allows(
        &self,
        kind: KeyCredentialKind,
        caps: &LockCapabilities,
        id_verified: bool,
    ) -> bool {
        caps.supports(kind) && (id_verified || !self.id_verify_required_for.contains(&kind))
    }

    /// The kind to issue: the first of `preferredOrder` then `fallbackChain` that
    /// [`Self::allows`]; `KindUnsupported` when none is left.
    pub fn choose_kind(
        &self,
        caps: &LockCapabilities,
        id_verified: bool,
    ) -> Result<KeyCredentialKind, FailureReason> {
        self.order()
            .find(|k| self.allows(*k, caps, id_verified))
            .ok_or(FailureReason::KindUnsupported)
    }

    /// The kind to try after `failed` failed: the next allowed kind after it in
    /// preferred-then-fallback order. `None` means "manual escort" (spec `002`): no kind is
    /// left and the saga stops. A kind the policy does not list (the policy changed since)
    /// falls back to [`Self::choose_kind`], skipping `failed`.
    pub fn next_after(
        &self,
        failed: KeyCredentialKind,
        caps: &LockCapabilities,
        id_verified: bool,
    ) -> Option<KeyCredentialKind> {
        match self.order().position(|k| k == failed) {
            Some(pos) => self
                .order()
                .skip(pos + 1)
                .find(|k| self.allows(*k, caps, id_verified)),
            None => self
                .order()
                .find(|k| *k != failed && self.allows(*k, caps, id_verified)),
        }
    }

    /// K-2: a date change may move a key's `validUntil` at most
    /// `maxValidUntilExtensionHours` past the `validUntil` it was issued with. Shortening
    /// is always allowed.
    pub fn check_extension(
        &self,
        original_until: Timestamp,
        new_until: Timestamp,
    ) -> Result<(), DomainError> {
        if new_until > self.extension_limit(original_until) {
            return Err(DomainError::validation(
                "validUntil",
                format!(
                    "extends the key more than {} hours past its original end (K-2)",
                    self.max_valid_until_extension_hours
                ),
            ));
        }
        Ok(())
    }

    /// The latest `validUntil` K-2 allows for a key issued until `original_until`.
    pub fn extension_limit(&self, original_until: Timestamp) -> Timestamp {
        original_until + Duration::hours(self.max_valid_until_extension_hours)
    }

    /// Id.
    pub fn id(&self) -> &KeyKindPolicyId {
        &self.id
    }
    /// Tenant.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }
    /// Property.
    pub fn property_id(&self) -> &PropertyId {
        &self.property_id
    }
    /// Preferred kinds, in order.
    pub fn preferred_order(&self) -> &[KeyCredentialKind] {
        &self.preferred_order
    }
    /// Fallback kinds, in order.
    pub fn fallback_chain(&self) -> &[KeyCredentialKind] {
        &self.fallback_chain
    }
    /// K-2 cap in hours.
    pub fn max_valid_until_extension_hours(&self) -> i64 {
        self.max_valid_until_extension_hours
    }
    /// Kinds that need an ID-document snapshot.
    pub fn id_verify_required_for(&self) -> &[KeyCredentialKind] {
        &self.id_verify_required_for
    }
    /// Hours between `reservation.no_show` and the suspension.
    pub fn no_show_suspend_after_hours(&self) -> i64 {
        self.no_show_suspend_after_hours
    }
    /// Kinds a desktop may mint offline.
    pub fn allow_offline_issuance_kinds(&self) -> &[KeyCredentialKind] {
        &self.allow_offline_issuance_kinds
    }
    /// Last change.
    pub fn updated_at(&self) -> Timestamp {
        self.updated_at
    }
}
