//! Property test of the reservation saga's decisions (`saga::decide`, DESIGN §3.1): under any
//! order, duplication and revision numbering of confirms and cancels, a reservation gets at
//! most one key, and never one after its cancellation was applied.

use chrono::Duration;
use lockstep_domain::saga::{decide, Decision, ReservationEvent, ReservationSaga, SagaCommand};
use lockstep_domain::{KeyCredentialState, ValidityWindow};
use proptest::prelude::*;

use crate::builders::*;

#[derive(Clone, Debug)]
enum Ev {
    Confirmed(i64),
    Cancelled(i64),
}

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        (0i64..12).prop_map(Ev::Confirmed),
        (0i64..12).prop_map(Ev::Cancelled),
    ]
}

/// Where the credential the saga issued has got to by the time the next event arrives.
fn progressed(step: u8) -> KeyCredentialState {
    [
        KeyCredentialState::Requested,
        KeyCredentialState::Pending,
        KeyCredentialState::Active,
        KeyCredentialState::Suspended,
    ][usize::from(step % 4)]
}

fn to_event(e: &Ev) -> ReservationEvent {
    match e {
        Ev::Confirmed(revision) => ReservationEvent::Confirmed {
            revision: *revision,
            guest_id: lockstep_domain::GuestId::parse("gst_01").unwrap(),
            rooms: vec![room_id("rmu_101")],
            validity: ValidityWindow::new(valid_from(), valid_from() + Duration::hours(45))
                .unwrap(),
        },
        Ev::Cancelled(revision) => ReservationEvent::Cancelled {
            revision: *revision,
        },
    }
}

proptest! {
    #![proptest_config(crate::proptest_config("reservation_gets_at_most_one_key_and_none_after_cancellation"))]

    #[test]
    fn reservation_gets_at_most_one_key_and_none_after_cancellation(
        events in proptest::collection::vec((event(), any::<u8>()), 1..40),
    ) {
        let mut state = ReservationSaga::default();
        let mut issues = 0;
        let mut cancel_applied = false;
        let mut newest: Option<i64> = None;

        for (i, (ev, progress)) in events.iter().enumerate() {
            // The credential moves on between events, as the drive actor would move it.
            if let Some((_, s)) = &mut state.credential {
                if *s == KeyCredentialState::Requested {
                    *s = progressed(*progress);
                }
            }
            match decide(&state, &to_event(ev)) {
                Decision::Ignore(_) => {}
                Decision::Apply { mut next, commands } => {
                    let revision = match ev { Ev::Confirmed(r) | Ev::Cancelled(r) => *r };
                    prop_assert!(newest.is_none_or(|n| revision > n), "stale event applied at step {}", i);
                    newest = Some(revision);
                    prop_assert_eq!(next.revision, Some(revision));
                    for cmd in &commands {
                        match cmd {
                            SagaCommand::Issue { .. } => {
                                issues += 1;
                                prop_assert!(issues <= 1, "second Issue at step {}", i);
                                prop_assert!(!cancel_applied, "Issue after a cancellation at step {}", i);
                                // The actor records the credential it requested in the same
                                // unit of work (actors/src/step.rs); the saga relies on it.
                                next.credential = Some((credential_id(1), KeyCredentialState::Requested));
                            }
                            SagaCommand::Revoke { credential_id: id, .. } => {
                                prop_assert!(matches!(ev, Ev::Cancelled(_)));
                                let (known, s) = next.credential.as_mut().expect("revoke of a known credential");
                                prop_assert_eq!(id, &*known);
                                prop_assert!(matches!(s, KeyCredentialState::Pending | KeyCredentialState::Active | KeyCredentialState::Suspended));
                                *s = KeyCredentialState::Revoked;
                            }
                            SagaCommand::FailCancelledMidFlight { credential_id: id } => {
                                prop_assert!(matches!(ev, Ev::Cancelled(_)));
                                let (known, s) = next.credential.as_mut().expect("fail of a known credential");
                                prop_assert_eq!(id, &*known);
                                prop_assert_eq!(*s, KeyCredentialState::Requested);
                                *s = KeyCredentialState::Failed;
                            }
                        }
                    }
                    if matches!(ev, Ev::Cancelled(_)) {
                        prop_assert!(!cancel_applied, "a second cancellation applied at step {}", i);
                        prop_assert!(next.cancelled);
                        cancel_applied = true;
                    }
                    state = next;
                }
            }
        }
        prop_assert!(issues <= 1);
    }
}
