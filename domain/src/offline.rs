//! `OfflineIssuance` (spec `003` §5): the certificate that lets a paired desktop mint
//! provisional credentials while the cloud is unreachable. The desktop holds the private
//! key; Lockstep signs the certificate binding its public key to a property, the kinds it
//! may mint and the longest window it may give.

use chrono::Duration;

use crate::{DomainError, KeyCredentialKind, OfflineIssuanceId, PropertyId, TenantId, Timestamp};

/// O-1: a certificate lives exactly this long.
pub const CERT_LIFETIME_DAYS: i64 = 90;
/// O-3: the longest window an offline credential may have.
pub const MAX_OFFLINE_WINDOW_HOURS: i64 = 48;
/// A certificate may be renewed (rotated) this many days before it expires, not earlier.
pub const ROTATION_DUE_DAYS: i64 = 7;

/// Why a certificate was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfflineRevokeReason {
    /// A new certificate replaces it.
    Rotation,
    /// The desktop was unpaired.
    DesktopUnbound,
    /// The tenant asked.
    TenantRequest,
    /// The desktop's key may be known to someone else.
    Compromise,
}

impl OfflineRevokeReason {
    /// The spec's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Rotation => "rotation",
            Self::DesktopUnbound => "desktop_unbound",
            Self::TenantRequest => "tenant_request",
            Self::Compromise => "compromise",
        }
    }

    /// Whether the revocation doubts what the certificate minted (O-2: its provisional
    /// credentials are revoked and re-issued). A rotation does not: the desktop moved to a
    /// new key, and what the old one minted while in force stays valid.
    pub fn cascades(&self) -> bool {
        !matches!(self, Self::Rotation)
    }

    /// Parses the spec's spelling.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Ok(match s {
            "rotation" => Self::Rotation,
            "desktop_unbound" => Self::DesktopUnbound,
            "tenant_request" => Self::TenantRequest,
            "compromise" => Self::Compromise,
            _ => {
                return Err(DomainError::validation(
                    "reason",
                    "rotation, desktop_unbound, tenant_request or compromise",
                ))
            }
        })
    }
}

/// One offline-issuance certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineIssuance {
    /// `oki_`.
    pub id: OfflineIssuanceId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// The desktop it is bound to.
    pub desktop_device_id: String,
    /// Serial, in the signed payload.
    pub serial: String,
    /// The desktop's Ed25519 public key, base64.
    pub public_key_ed25519: String,
    /// What the desktop may mint.
    pub allowed_kinds: Vec<KeyCredentialKind>,
    /// O-3.
    pub max_valid_window_hours: i64,
    /// When.
    pub issued_at: Timestamp,
    /// O-1: `issued_at` + 90 days.
    pub expires_at: Timestamp,
    /// When revoked.
    pub revoked_at: Option<Timestamp>,
    /// Why.
    pub revoke_reason: Option<OfflineRevokeReason>,
    /// The certificate this one renewed (rotation), when it did.
    pub replaces: Option<OfflineIssuanceId>,
}

/// Why a certificate is not renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewalRefusal {
    /// More than [`ROTATION_DUE_DAYS`] before its expiry.
    NotDue {
        /// From when it may be renewed.
        due_at: Timestamp,
    },
    /// It is revoked: a revoked certificate vouches for no new key.
    Revoked,
    /// It has expired.
    Expired,
    /// The new key is the certificate's own: that is no rotation.
    SameKey,
    /// The certificate breaks a rule a new one must keep (O-3, its kinds): it is not
    /// carried over; pair the desktop again.
    Invalid,
}

/// Why a certificate does not vouch for a credential minted under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unvouched {
    /// Revoked for a reason that doubts its key (O-2), or minted after a rotation ended it.
    Revoked,
    /// Minted outside `[issuedAt, expiresAt)`.
    OutsideTerm,
}

impl OfflineIssuance {
    /// A new certificate. `policy_kinds` are the property's `allowOfflineIssuanceKinds`:
    /// the certificate may allow no other kind; O-3 caps the window at 48 hours; O-1 sets
    /// the expiry.
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        tenant_id: TenantId,
        property_id: PropertyId,
        desktop_device_id: &str,
        public_key_ed25519: &str,
        allowed_kinds: Vec<KeyCredentialKind>,
        policy_kinds: &[KeyCredentialKind],
        max_valid_window_hours: i64,
        now: Timestamp,
    ) -> Result<Self, DomainError> {
        let desktop = desktop_device_id.trim();
        if desktop.is_empty()
            || desktop.len() > 64
            || !desktop
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(DomainError::validation(
                "desktopDeviceId",
                "1 to 64 letters, digits, '-' or '_'",
            ));
        }
        if !(1..=MAX_OFFLINE_WINDOW_HOURS).contains(&max_valid_window_hours) {
            return Err(DomainError::validation(
                "maxValidWindowHours",
                format!("1 to {MAX_OFFLINE_WINDOW_HOURS} (O-3)"),
            ));
        }
        if allowed_kinds.is_empty() {
            return Err(DomainError::validation("allowedKinds", "at least one kind"));
        }
        if let Some(k) = allowed_kinds.iter().find(|k| !policy_kinds.contains(k)) {
            return Err(DomainError::validation(
                "allowedKinds",
                format!(
                    "{} is not in the property's allowOfflineIssuanceKinds",
                    k.as_str()
                ),
            ));
        }
        let id = OfflineIssuanceId::generate();
        Ok(Self {
            serial: id.as_str().trim_start_matches("oki_").to_owned(),
            id,
            tenant_id,
            property_id,
            desktop_device_id: desktop.to_owned(),
            public_key_ed25519: public_key_ed25519.to_owned(),
            allowed_kinds,
            max_valid_window_hours,
            issued_at: now,
            expires_at: now + Duration::days(CERT_LIFETIME_DAYS),
            revoked_at: None,
            revoke_reason: None,
            replaces: None,
        })
    }

    /// When it becomes due for rotation: [`ROTATION_DUE_DAYS`] before it expires.
    pub fn rotation_due_at(&self) -> Timestamp {
        self.expires_at - Duration::days(ROTATION_DUE_DAYS)
    }

    /// Its successor for the desktop's new key (rotation): the same tenant, property,
    /// desktop, kinds and window cap, a fresh id and serial, 90 days from `now` (O-1).
    /// Only an unrevoked, unexpired certificate due for rotation is renewed.
    pub fn renew(&self, public_key_ed25519: &str, now: Timestamp) -> Result<Self, RenewalRefusal> {
        if self.revoked_at.is_some() {
            return Err(RenewalRefusal::Revoked);
        }
        if now >= self.expires_at {
            return Err(RenewalRefusal::Expired);
        }
        if now < self.rotation_due_at() {
            return Err(RenewalRefusal::NotDue {
                due_at: self.rotation_due_at(),
            });
        }
        if public_key_ed25519.trim() == self.public_key_ed25519.trim() {
            return Err(RenewalRefusal::SameKey);
        }
        let mut next = Self::issue(
            self.tenant_id,
            self.property_id.clone(),
            &self.desktop_device_id,
            public_key_ed25519,
            self.allowed_kinds.clone(),
            &self.allowed_kinds,
            self.max_valid_window_hours,
            now,
        )
        .map_err(|_| RenewalRefusal::Invalid)?;
        next.replaces = Some(self.id.clone());
        Ok(next)
    }

    /// Whether it vouches for a credential minted under it at `minted_at` (spec `003` §5):
    /// minted within its term, and not under a revocation. A revocation that doubts the key
    /// (O-2) vouches for nothing it minted; a rotation only ends the term, so what was
    /// minted before it stays vouched for.
    pub fn vouches_for(&self, minted_at: Timestamp) -> Result<(), Unvouched> {
        match (self.revoked_at, self.revoke_reason) {
            (Some(at), Some(OfflineRevokeReason::Rotation)) if minted_at < at => {}
            (Some(_), _) => return Err(Unvouched::Revoked),
            (None, _) => {}
        }
        if minted_at < self.issued_at || minted_at >= self.expires_at {
            return Err(Unvouched::OutsideTerm);
        }
        Ok(())
    }

    /// The canonical bytes Lockstep signs: one `key=value` line per field, in this order.
    pub fn signed_payload(&self) -> String {
        let kinds: Vec<&str> = self.allowed_kinds.iter().map(|k| k.as_str()).collect();
        format!(
            "lockstep-offline-issuance-v1\nid={}\ntenant={}\nproperty={}\ndesktop={}\nserial={}\npublicKey={}\nkinds={}\nmaxWindowHours={}\nissuedAt={}\nexpiresAt={}\n",
            self.id.as_str(),
            self.tenant_id,
            self.property_id.as_str(),
            self.desktop_device_id,
            self.serial,
            self.public_key_ed25519,
            kinds.join(","),
            self.max_valid_window_hours,
            self.issued_at.timestamp(),
            self.expires_at.timestamp(),
        )
    }

    /// Revokes it; answers whether anything changed. Revoking a revoked certificate
    /// changes nothing, except that a certificate revoked for rotation may be revoked again
    /// for a reason that doubts its key (a rotated desktop found compromised): the reason
    /// becomes that one and O-2 applies, the time stays.
    pub fn revoke(&mut self, reason: OfflineRevokeReason, now: Timestamp) -> bool {
        match (self.revoked_at, self.revoke_reason) {
            (None, _) => {
                self.revoked_at = Some(now);
                self.revoke_reason = Some(reason);
                true
            }
            (Some(_), Some(OfflineRevokeReason::Rotation)) if reason.cascades() => {
                self.revoke_reason = Some(reason);
                true
            }
            (Some(_), _) => false,
        }
    }
}
