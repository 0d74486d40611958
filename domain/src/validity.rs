//! The validity window of a credential.

use chrono::Duration;

use crate::clock::Timestamp;
use crate::errors::DomainError;

/// `[valid_from, valid_until)`; I-1 holds by construction: `valid_from < valid_until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidityWindow {
    from: Timestamp,
    until: Timestamp,
}

impl ValidityWindow {
    /// I-1: refuses a window whose start is not strictly before its end.
    pub fn new(from: Timestamp, until: Timestamp) -> Result<Self, DomainError> {
        if from >= until {
            return Err(DomainError::validation(
                "validUntil",
                "must be after validFrom (I-1)",
            ));
        }
        Ok(Self { from, until })
    }

    /// Start of validity.
    pub fn from(&self) -> Timestamp {
        self.from
    }

    /// End of validity.
    pub fn until(&self) -> Timestamp {
        self.until
    }

    /// Length of the window.
    pub fn duration(&self) -> Duration {
        self.until - self.from
    }

    /// Whether two windows share any instant (half-open ranges: adjacent stays do not).
    pub fn overlaps(&self, other: &ValidityWindow) -> bool {
        self.from < other.until && other.from < self.until
    }

    /// Whether `t` falls inside the window.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.from <= t && t < self.until
    }
}
