//! The reservation saga's decisions, as pure functions (DESIGN §1): from the saga's stored
//! state and one incoming event to the commands the actors must carry out. No actor, broker
//! or database is needed to test them.
//!
//! Ordering rules (DESIGN §3.1): every reservation event carries a per-reservation
//! `revision`; an event whose revision is not newer than the newest applied one is stale and
//! recorded as ignored. A cancellation is final for the saga: a confirm that arrives after
//! it (redelivered, or reordered ahead of it by the publisher) never issues a key.

use crate::credential::{KeyCredentialKind, KeyCredentialState, RevokeReason};
use crate::ids::{GuestId, KeyCredentialId, RoomId};
use crate::validity::ValidityWindow;

/// Where the saga of one reservation stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReservationSaga {
    /// Newest revision applied.
    pub revision: Option<i64>,
    /// Whether a cancellation has been seen.
    pub cancelled: bool,
    /// The credential the saga issued, with its state as last known.
    pub credential: Option<(KeyCredentialId, KeyCredentialState)>,
}

/// An event of the reservation system, parsed and validated at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReservationEvent {
    /// `reservation.confirmed.v1`.
    Confirmed {
        /// Per-reservation revision.
        revision: i64,
        /// Guest.
        guest_id: GuestId,
        /// Rooms.
        rooms: Vec<RoomId>,
        /// Stay window.
        validity: ValidityWindow,
    },
    /// `reservation.cancelled.v1`.
    Cancelled {
        /// Per-reservation revision.
        revision: i64,
    },
}

impl ReservationEvent {
    fn revision(&self) -> i64 {
        match self {
            Self::Confirmed { revision, .. } | Self::Cancelled { revision } => *revision,
        }
    }
}

/// What the saga wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SagaCommand {
    /// Request a credential and issue it at the vendor.
    Issue {
        /// Kind to issue.
        kind: KeyCredentialKind,
        /// Guest.
        guest_id: GuestId,
        /// Rooms.
        rooms: Vec<RoomId>,
        /// Window.
        validity: ValidityWindow,
    },
    /// Revoke a credential (and delete it at the vendor).
    Revoke {
        /// Which.
        credential_id: KeyCredentialId,
        /// Why.
        reason: RevokeReason,
    },
    /// A credential never reached the vendor: fail it as `cancelled_mid_flight`.
    FailCancelledMidFlight {
        /// Which.
        credential_id: KeyCredentialId,
    },
}

/// Why an event changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Its revision is not newer than the newest applied.
    Stale,
    /// The reservation was cancelled before.
    AlreadyCancelled,
    /// A credential already exists for this reservation.
    AlreadyIssued,
}

/// The decision for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Carry out these commands and store the new state.
    Apply {
        /// New saga state.
        next: ReservationSaga,
        /// Commands, in order.
        commands: Vec<SagaCommand>,
    },
    /// Record the event as ignored.
    Ignore(Ignored),
}

/// The kind a reservation gets until KeyKindPolicy lands (issue 4): a PIN, which every
/// guest can use without a smartphone.
pub const DEFAULT_GUEST_KIND: KeyCredentialKind = KeyCredentialKind::PinCode;

/// Decides what one reservation event does.
pub fn decide(state: &ReservationSaga, event: &ReservationEvent) -> Decision {
    if state.revision.is_some_and(|r| event.revision() <= r) {
        return Decision::Ignore(Ignored::Stale);
    }
    let mut next = state.clone();
    next.revision = Some(event.revision());
    match event {
        ReservationEvent::Confirmed {
            guest_id,
            rooms,
            validity,
            ..
        } => {
            if state.cancelled {
                return Decision::Ignore(Ignored::AlreadyCancelled);
            }
            if state.credential.is_some() {
                return Decision::Ignore(Ignored::AlreadyIssued);
            }
            Decision::Apply {
                next,
                commands: vec![SagaCommand::Issue {
                    kind: DEFAULT_GUEST_KIND,
                    guest_id: guest_id.clone(),
                    rooms: rooms.clone(),
                    validity: *validity,
                }],
            }
        }
        ReservationEvent::Cancelled { .. } => {
            if state.cancelled {
                return Decision::Ignore(Ignored::AlreadyCancelled);
            }
            next.cancelled = true;
            let commands = match &state.credential {
                None => vec![],
                Some((id, KeyCredentialState::Requested)) => {
                    vec![SagaCommand::FailCancelledMidFlight {
                        credential_id: id.clone(),
                    }]
                }
                Some((id, KeyCredentialState::Pending))
                | Some((id, KeyCredentialState::Active))
                | Some((id, KeyCredentialState::Suspended)) => vec![SagaCommand::Revoke {
                    credential_id: id.clone(),
                    reason: RevokeReason::Cancellation,
                }],
                Some((_, KeyCredentialState::Revoked)) | Some((_, KeyCredentialState::Failed)) => {
                    vec![]
                }
            };
            Decision::Apply { next, commands }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn confirmed(revision: i64) -> ReservationEvent {
        ReservationEvent::Confirmed {
            revision,
            guest_id: GuestId::parse("gst_1").unwrap(),
            rooms: vec![RoomId::parse("rmu_101").unwrap()],
            validity: ValidityWindow::new(
                Utc.with_ymd_and_hms(2026, 5, 1, 14, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2026, 5, 3, 11, 0, 0).unwrap(),
            )
            .unwrap(),
        }
    }

    #[test]
    fn confirm_issues_once_and_a_duplicate_is_stale() {
        let s = ReservationSaga::default();
        let Decision::Apply { next, commands } = decide(&s, &confirmed(1)) else {
            panic!("confirm must apply")
        };
        assert!(matches!(commands.as_slice(), [SagaCommand::Issue { .. }]));
        assert_eq!(
            decide(&next, &confirmed(1)),
            Decision::Ignore(Ignored::Stale)
        );
    }

    #[test]
    fn cancel_before_confirm_issues_no_key() {
        let s = ReservationSaga::default();
        let Decision::Apply { next, commands } =
            decide(&s, &ReservationEvent::Cancelled { revision: 2 })
        else {
            panic!("cancel must apply")
        };
        assert!(commands.is_empty());
        // the earlier confirm, delivered late, is stale
        assert_eq!(
            decide(&next, &confirmed(1)),
            Decision::Ignore(Ignored::Stale)
        );
        // even a confirm with a higher revision never issues after a cancel
        assert_eq!(
            decide(&next, &confirmed(3)),
            Decision::Ignore(Ignored::AlreadyCancelled)
        );
    }

    #[test]
    fn cancel_revokes_what_reached_the_vendor_and_fails_what_did_not() {
        let id = KeyCredentialId::generate();
        for (state, expect_revoke) in [
            (KeyCredentialState::Requested, false),
            (KeyCredentialState::Pending, true),
            (KeyCredentialState::Active, true),
            (KeyCredentialState::Suspended, true),
        ] {
            let s = ReservationSaga {
                revision: Some(1),
                cancelled: false,
                credential: Some((id.clone(), state)),
            };
            let Decision::Apply { commands, .. } =
                decide(&s, &ReservationEvent::Cancelled { revision: 2 })
            else {
                panic!("cancel must apply")
            };
            if expect_revoke {
                assert_eq!(
                    commands,
                    vec![SagaCommand::Revoke {
                        credential_id: id.clone(),
                        reason: RevokeReason::Cancellation
                    }]
                );
            } else {
                assert_eq!(
                    commands,
                    vec![SagaCommand::FailCancelledMidFlight {
                        credential_id: id.clone()
                    }]
                );
            }
        }
    }
}
