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
        })
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

    /// Revokes it; revoking a revoked certificate changes nothing.
    pub fn revoke(&mut self, reason: OfflineRevokeReason, now: Timestamp) {
        if self.revoked_at.is_none() {
            self.revoked_at = Some(now);
            self.revoke_reason = Some(reason);
        }
    }
}
