//! Domain errors and their canonical codes (spec `003` §8). The HTTP layer maps them in one
//! place using [`DomainError::code`] and [`DomainError::http_status`].

use thiserror::Error;

/// Every error the domain can report, with the spec's code and HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// The vendor could not be reached, or its breaker is open (V-3).
    #[error("vendor unreachable")]
    VendorUnreachable,
    /// The vendor refused to issue.
    #[error("key issue failed")]
    KeyIssueFailed {
        /// Why, in the vendor-neutral words of the adapter (never a vendorRef or secret).
        detail: String,
    },
    /// The vendor refused to revoke.
    #[error("key revoke failed")]
    KeyRevokeFailed {
        /// Why.
        detail: String,
    },
    /// The device is not paired with the property.
    #[error("device not paired")]
    DeviceNotPaired,
    /// The credential is past its validity.
    #[error("credential expired")]
    CredentialExpired,
    /// The card encoder is offline.
    #[error("card encoder offline")]
    CardEncoderOffline,
    /// I-11: a reference belongs to another tenant.
    #[error("cross-tenant reference")]
    CrossTenantReference {
        /// Which reference.
        field: &'static str,
    },
    /// A transition the state machine does not allow.
    #[error("invalid state transition")]
    InvalidStateTransition {
        /// Current state.
        from: &'static str,
        /// Attempted transition.
        action: &'static str,
    },
    /// An input that breaks a rule of the spec.
    #[error("validation failed")]
    Validation {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The webhook's signature does not verify.
    #[error("webhook signature invalid")]
    WebhookSignatureInvalid,
    /// An offline issuance certificate has expired.
    #[error("offline certificate expired")]
    OfflineCertExpired,
    /// The thing asked for does not exist (for this tenant).
    #[error("not found")]
    NotFound {
        /// What kind of thing.
        entity: &'static str,
    },
}

impl DomainError {
    /// A validation failure of `field`.
    pub fn validation(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Validation {
            field,
            reason: reason.into(),
        }
    }

    /// The canonical error code of spec `003` §8.
    pub fn code(&self) -> &'static str {
        match self {
            Self::VendorUnreachable => "MELMASTOON.LOCK.VENDOR_UNREACHABLE",
            Self::KeyIssueFailed { .. } => "MELMASTOON.LOCK.KEY_ISSUE_FAILED",
            Self::KeyRevokeFailed { .. } => "MELMASTOON.LOCK.KEY_REVOKE_FAILED",
            Self::DeviceNotPaired => "MELMASTOON.LOCK.DEVICE_NOT_PAIRED",
            Self::CredentialExpired | Self::OfflineCertExpired => {
                "MELMASTOON.LOCK.CREDENTIAL_EXPIRED"
            }
            Self::CardEncoderOffline => "MELMASTOON.LOCK.CARD_ENCODER_OFFLINE",
            Self::CrossTenantReference { .. } => "MELMASTOON.GENERAL.CROSS_TENANT_REFERENCE",
            Self::InvalidStateTransition { .. } | Self::Validation { .. } => {
                "MELMASTOON.GENERAL.VALIDATION_FAILED"
            }
            Self::WebhookSignatureInvalid => "MELMASTOON.LOCK.WEBHOOK_SIGNATURE_INVALID",
            Self::NotFound { .. } => "MELMASTOON.GENERAL.NOT_FOUND",
        }
    }

    /// The sub-code where the spec names one.
    pub fn sub_code(&self) -> Option<&'static str> {
        match self {
            Self::InvalidStateTransition { .. } => Some("invalid_state_transition"),
            Self::OfflineCertExpired => Some("offline_cert_expired"),
            _ => None,
        }
    }

    /// The HTTP status of spec `003` §8.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::VendorUnreachable
            | Self::KeyIssueFailed { .. }
            | Self::KeyRevokeFailed { .. } => 502,
            Self::DeviceNotPaired => 409,
            Self::CredentialExpired | Self::OfflineCertExpired => 410,
            Self::CardEncoderOffline => 503,
            Self::CrossTenantReference { .. }
            | Self::InvalidStateTransition { .. }
            | Self::Validation { .. } => 422,
            Self::WebhookSignatureInvalid => 401,
            Self::NotFound { .. } => 404,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_follow_spec_003_section_8() {
        let cases: Vec<(DomainError, &str, u16)> = vec![
            (
                DomainError::VendorUnreachable,
                "MELMASTOON.LOCK.VENDOR_UNREACHABLE",
                502,
            ),
            (
                DomainError::KeyIssueFailed {
                    detail: String::new(),
                },
                "MELMASTOON.LOCK.KEY_ISSUE_FAILED",
                502,
            ),
            (
                DomainError::KeyRevokeFailed {
                    detail: String::new(),
                },
                "MELMASTOON.LOCK.KEY_REVOKE_FAILED",
                502,
            ),
            (
                DomainError::DeviceNotPaired,
                "MELMASTOON.LOCK.DEVICE_NOT_PAIRED",
                409,
            ),
            (
                DomainError::CredentialExpired,
                "MELMASTOON.LOCK.CREDENTIAL_EXPIRED",
                410,
            ),
            (
                DomainError::CardEncoderOffline,
                "MELMASTOON.LOCK.CARD_ENCODER_OFFLINE",
                503,
            ),
            (
                DomainError::CrossTenantReference { field: "rooms" },
                "MELMASTOON.GENERAL.CROSS_TENANT_REFERENCE",
                422,
            ),
            (
                DomainError::InvalidStateTransition {
                    from: "revoked",
                    action: "suspend",
                },
                "MELMASTOON.GENERAL.VALIDATION_FAILED",
                422,
            ),
            (
                DomainError::WebhookSignatureInvalid,
                "MELMASTOON.LOCK.WEBHOOK_SIGNATURE_INVALID",
                401,
            ),
            (
                DomainError::OfflineCertExpired,
                "MELMASTOON.LOCK.CREDENTIAL_EXPIRED",
                410,
            ),
        ];
        for (e, code, status) in cases {
            assert_eq!(e.code(), code, "{e:?}");
            assert_eq!(e.http_status(), status, "{e:?}");
        }
        assert_eq!(
            DomainError::InvalidStateTransition {
                from: "revoked",
                action: "suspend"
            }
            .sub_code(),
            Some("invalid_state_transition")
        );
        assert_eq!(
            DomainError::OfflineCertExpired.sub_code(),
            Some("offline_cert_expired")
        );
    }
}
