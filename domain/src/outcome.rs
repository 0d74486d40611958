//! What a step records as the outcome of its mailbox entry. The text is stored (the
//! mailbox's `outcome`), read back by the API request that waits for an operator command,
//! and read by operators, so [`StepOutcome::as_str`] gives exactly the strings stored
//! before it existed: never change one.

use std::borrow::Cow;
use std::fmt;

use crate::operator::Rejection;
use crate::saga::Ignored;

/// The outcome of one mailbox entry's step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step did what the entry asked (or found it already done).
    Applied,
    /// The saga's decision changed nothing (`ignored:<why>`).
    Ignored(Ignored),
    /// An event that would put a key on the doors of a deactivated property (issue 14).
    RefusedPropertyDeactivated,
    /// An operator command the step did not carry out (`rejected:<why>`).
    Rejected(Rejection),
    /// The entry's subject does not parse.
    MalformedSubject,
    /// An internal topic no step knows.
    UnknownInternal,
    /// A stored event that no longer parses, with its intake rejection's label
    /// (`rejected:<label>`).
    InvalidEvent(&'static str),
    /// O-2 re-issue of a key that is not a stay's.
    NotAStay,
    /// O-2 re-issue of a key not revoked as a flagged provisional one (or replaced since).
    NotFlagged,
    /// O-2 re-issue after the stay ended or its saga gave up.
    StayEnded,
    /// O-2 re-issue for a stay that holds a live key of its saga's own.
    Covered,
    /// O-2: the stay got a new key.
    Reissued,
    /// Drift found a key missing that should not be on the door anyway.
    NotNeeded,
    /// The expiry timer of an end that moved later (or of a credential that is gone).
    NotDue,
    /// A drive of a credential that no longer exists.
    Missing,
    /// A property- or user-wide event sent this many internal revokes.
    FannedOut(usize),
}

impl StepOutcome {
    /// The outcome as stored.
    pub fn as_str(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Self::Applied => "applied",
            Self::Ignored(why) => match why {
                // the Debug names lowercased, as first stored
                Ignored::Stale => "ignored:stale",
                Ignored::Duplicate => "ignored:duplicate",
                Ignored::AlreadyEnded => "ignored:alreadyended",
                Ignored::UnknownCredential => "ignored:unknowncredential",
                Ignored::Invalid => "ignored:invalid",
            },
            Self::RefusedPropertyDeactivated => "refused:property_deactivated",
            Self::Rejected(r) => r.as_str(),
            Self::MalformedSubject => "rejected:malformed_subject",
            Self::UnknownInternal => "rejected:unknown_internal",
            Self::InvalidEvent(label) => return Cow::Owned(format!("rejected:{label}")),
            Self::NotAStay => "rejected:not_a_stay",
            Self::NotFlagged => "rejected:not_flagged",
            Self::StayEnded => "stay_ended",
            Self::Covered => "covered",
            Self::Reissued => "reissued",
            Self::NotNeeded => "not_needed",
            Self::NotDue => "not_due",
            Self::Missing => "missing",
            Self::FannedOut(n) => return Cow::Owned(format!("fanned_out:{n}")),
        })
    }
}

impl From<Rejection> for StepOutcome {
    fn from(r: Rejection) -> Self {
        Self::Rejected(r)
    }
}

impl fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_outcomes_keep_the_lowercased_debug_names_first_stored() {
        for why in [
            Ignored::Stale,
            Ignored::Duplicate,
            Ignored::AlreadyEnded,
            Ignored::UnknownCredential,
            Ignored::Invalid,
        ] {
            assert_eq!(
                StepOutcome::Ignored(why).as_str(),
                format!("ignored:{why:?}").to_lowercase()
            );
        }
        assert_eq!(
            StepOutcome::Ignored(Ignored::AlreadyEnded).to_string(),
            "ignored:alreadyended"
        );
    }

    #[test]
    fn every_outcome_keeps_the_string_stored_today() {
        let all = [
            (StepOutcome::Applied, "applied"),
            (
                StepOutcome::RefusedPropertyDeactivated,
                "refused:property_deactivated",
            ),
            (StepOutcome::Rejected(Rejection::K2), "rejected:k2"),
            (StepOutcome::MalformedSubject, "rejected:malformed_subject"),
            (StepOutcome::UnknownInternal, "rejected:unknown_internal"),
            (
                StepOutcome::InvalidEvent("invalid_payload"),
                "rejected:invalid_payload",
            ),
            (StepOutcome::NotAStay, "rejected:not_a_stay"),
            (StepOutcome::NotFlagged, "rejected:not_flagged"),
            (StepOutcome::StayEnded, "stay_ended"),
            (StepOutcome::Covered, "covered"),
            (StepOutcome::Reissued, "reissued"),
            (StepOutcome::NotNeeded, "not_needed"),
            (StepOutcome::NotDue, "not_due"),
            (StepOutcome::Missing, "missing"),
            (StepOutcome::FannedOut(3), "fanned_out:3"),
        ];
        for (outcome, stored) in all {
            assert_eq!(outcome.as_str(), stored);
            assert_eq!(outcome.to_string(), stored);
        }
        // the API reads an operator's rejection back from the stored text
        let stored = StepOutcome::from(Rejection::UnknownCredential).to_string();
        assert_eq!(
            Rejection::parse(&stored),
            Some(Rejection::UnknownCredential)
        );
    }
}
