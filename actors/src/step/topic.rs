//! A saga's internal events as a type: its timers, its feedback, operator commands and the
//! re-issues asked for by drift and the offline reconciler. The text each travels and is
//! stored under is [`crate::events_in`]'s `INTERNAL_*` constant (stored in the mailbox and
//! the timers: never change one); steps produce and dispatch on [`InternalTopic`].

use lockstep_domain::OperatorCommand;

use crate::events_in;

/// An internal event's topic (`lockstep.internal.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InternalTopic {
    /// A reservation saga's no-show suspension timer fired.
    NoShowDue,
    /// A saga's credential changed state in a step.
    CredentialObserved,
    /// A credential reached its `validUntil` (DESIGN §12).
    Expire,
    /// Drift found a credential missing at a device.
    Reissue,
    /// O-2: a provisional credential was revoked with its certificate.
    ReissueProvisional,
    /// An operator's command (or, for a revoke, a property- or user-wide event's).
    Command(OperatorCommand),
}

impl InternalTopic {
    /// What every internal topic's text starts with.
    pub const PREFIX: &'static str = "lockstep.internal.";

    /// Every internal topic.
    pub const ALL: [Self; 10] = [
        Self::NoShowDue,
        Self::CredentialObserved,
        Self::Expire,
        Self::Reissue,
        Self::ReissueProvisional,
        Self::Command(OperatorCommand::Update),
        Self::Command(OperatorCommand::Revoke),
        Self::Command(OperatorCommand::Suspend),
        Self::Command(OperatorCommand::Unsuspend),
        Self::Command(OperatorCommand::Replace),
    ];

    /// The topic as it travels and is stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoShowDue => events_in::INTERNAL_NO_SHOW_DUE,
            Self::CredentialObserved => events_in::INTERNAL_CREDENTIAL_OBSERVED,
            Self::Expire => events_in::INTERNAL_EXPIRE,
            Self::Reissue => events_in::INTERNAL_REISSUE,
            Self::ReissueProvisional => events_in::INTERNAL_REISSUE_PROVISIONAL,
            Self::Command(OperatorCommand::Update) => events_in::INTERNAL_UPDATE,
            Self::Command(OperatorCommand::Revoke) => events_in::INTERNAL_REVOKE,
            Self::Command(OperatorCommand::Suspend) => events_in::INTERNAL_SUSPEND,
            Self::Command(OperatorCommand::Unsuspend) => events_in::INTERNAL_UNSUSPEND,
            Self::Command(OperatorCommand::Replace) => events_in::INTERNAL_REPLACE,
        }
    }

    /// The internal topic `topic` names, if it names one.
    pub fn parse(topic: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == topic)
    }
}

impl From<OperatorCommand> for InternalTopic {
    fn from(c: OperatorCommand) -> Self {
        Self::Command(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_topics_keep_their_stored_text_and_parse_back() {
        let texts: Vec<&str> = InternalTopic::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            texts,
            [
                "lockstep.internal.no_show_suspend_due",
                "lockstep.internal.credential_observed",
                "lockstep.internal.expire",
                "lockstep.internal.reissue",
                "lockstep.internal.reissue_provisional",
                "lockstep.internal.update",
                "lockstep.internal.revoke",
                "lockstep.internal.suspend",
                "lockstep.internal.unsuspend",
                "lockstep.internal.replace",
            ]
        );
        for t in InternalTopic::ALL {
            assert!(t.as_str().starts_with(InternalTopic::PREFIX), "{t:?}");
            assert_eq!(InternalTopic::parse(t.as_str()), Some(t));
        }
        assert_eq!(InternalTopic::parse("lockstep.internal.no_show"), None);
        assert_eq!(InternalTopic::parse("pms.reservation.confirmed.v1"), None);
    }
}
