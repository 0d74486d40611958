//! What can go wrong at the desk, and what each adapter makes of it. For the generic
//! Wiegand adapter the desk *is* the vendor: no desktop connected is an outage the breaker
//! counts. For TTLock the desk only reads a card's number: a missing desktop is a passing
//! refusal of that card, not TTLock being unwell.

use crate::VendorError;

/// Why a card was not encoded (or looked up).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeskError {
    /// No desktop of the property could take the job (spec `003` §8
    /// `CardEncoderOfflineError`).
    #[error("card encoder offline")]
    EncoderOffline,
    /// The desktop that may already hold the job's card is away (it died mid-job or
    /// Lockstep restarted): the job waits for it rather than encoding a second card.
    #[error("waiting for the desktop that took the job")]
    HolderAway,
    /// The desktop encoded no card.
    #[error("desk refused the job: {code}")]
    Failed {
        /// `no_card`, `card_rejected`, `encoder_error`, `encoder_unsupported`.
        code: &'static str,
        /// Lowercase detail, never a card number.
        detail: String,
    },
    /// A desktop acknowledged the job and sent no result in time; the card may be on the
    /// encoder: the same key is sent to the same desktop again later.
    #[error("no encode result in time")]
    ResultTimeout,
    /// The job cannot be encoded (a door with no room, no room at all).
    #[error("invalid encode job: {0}")]
    Invalid(String),
    /// Lockstep's record of jobs could not be read or written: nothing was sent.
    #[error("the record of encode jobs is unavailable")]
    Ledger,
}

/// `Refused` codes of the desk that a later attempt may not meet (they are in
/// [`crate::TRANSIENT_REFUSALS`]).
pub const TRANSIENT_CODES: &[&str] = &[
    "card_encoder_offline",
    "encoder_busy",
    "no_card",
    "card_rejected",
    "encoder_error",
    "desk_ledger_unavailable",
];

fn refused(code: &str, detail: impl Into<String>) -> VendorError {
    VendorError::Refused {
        code: code.into(),
        detail: detail.into(),
    }
}

impl DeskError {
    /// The error of the generic Wiegand adapter, whose vendor is the desk itself.
    pub fn for_wiegand(self, op: &'static str) -> VendorError {
        let e = match self {
            Self::EncoderOffline => VendorError::Unavailable {
                detail: "card encoder offline: no desktop of the property is connected".into(),
            },
            other => other.common(),
        };
        tracing::debug!(vendor = "generic-wiegand", op, error = %e, "desk call failed");
        e
    }

    /// The error of TTLock's card issue: the desk only reads the card, so its absence is
    /// this card's passing refusal, not TTLock's outage.
    pub fn for_card_reader(self) -> VendorError {
        match self {
            Self::EncoderOffline => refused(
                "card_encoder_offline",
                "no desktop of the property can read the card",
            ),
            other => other.common(),
        }
    }

    fn common(self) -> VendorError {
        match self {
            Self::EncoderOffline => refused("card_encoder_offline", "no desktop connected"),
            Self::HolderAway => refused(
                "encoder_busy",
                "waiting for the desktop that took the job to come back",
            ),
            Self::ResultTimeout => refused(
                "encoder_busy",
                "the desktop acknowledged the job and sent no result in time",
            ),
            Self::Failed { code, detail } => refused(code, detail),
            Self::Invalid(reason) => refused("invalid_job", reason),
            Self::Ledger => refused(
                "desk_ledger_unavailable",
                "lockstep's record of encode jobs is unavailable",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_passing_desk_refusal_is_retried() {
        for c in TRANSIENT_CODES {
            assert!(crate::TRANSIENT_REFUSALS.contains(c), "{c}");
        }
    }

    #[test]
    fn only_a_missing_desk_is_the_wiegand_vendors_outage() {
        assert!(DeskError::EncoderOffline
            .for_wiegand("issue")
            .is_vendor_unwell());
        let at_ttlock = DeskError::EncoderOffline.for_card_reader();
        assert!(!at_ttlock.is_vendor_unwell());
        assert!(at_ttlock.is_retryable());
        for e in [
            DeskError::HolderAway,
            DeskError::ResultTimeout,
            DeskError::Ledger,
            DeskError::Failed {
                code: "no_card",
                detail: "x".into(),
            },
        ] {
            let v = e.clone().for_wiegand("issue");
            assert!(!v.is_vendor_unwell() && v.is_retryable(), "{e:?}: {v:?}");
        }
        let invalid = DeskError::Invalid("no room".into()).for_wiegand("issue");
        assert!(!invalid.is_retryable());
        let unsupported = DeskError::Failed {
            code: "encoder_unsupported",
            detail: "x".into(),
        }
        .for_card_reader();
        assert!(!unsupported.is_retryable());
    }
}
