//! Property test of the reservation saga as a reconciler (`saga::decide`, DESIGN §3.1),
//! against a reference model of the door. Under any order, duplication and revision
//! numbering of the six reservation events, the no-show timer, and any progress or failure
//! of the saga's credential:
//! - every input delivered twice in a row is ignored the second time (idempotence);
//! - at most one live (non-terminal) key exists at any time, none is issued after the stay
//!   ended, and every command is legal for the credential's state at the door;
//! - every Issue carries the newest window and rooms by revision;
//! - once the credential has settled: an ended stay has no live key; a confirmed, live,
//!   unflagged stay has exactly one active key with the newest window and rooms.

use std::collections::BTreeMap;

use chrono::Duration;
use lockstep_domain::saga::{decide, Decision, ReservationEvent, ReservationSaga, SagaCommand};
use lockstep_domain::{
    FailureReason, GuestId, KeyCredentialId, KeyCredentialState as St, RoomId, ValidityWindow,
};
use proptest::prelude::*;

use crate::builders::*;
use crate::reservation_saga::{ctx, default_policy};

const WINDOWS: [(i64, i64); 5] = [(0, 45), (0, 69), (24, 69), (24, 45), (48, 96)];
const ROOMS: [&[&str]; 3] = [&["rmu_101"], &["rmu_202"], &["rmu_101", "rmu_202"]];

#[derive(Clone, Debug)]
enum In {
    Confirmed(i64, usize, usize),
    Cancelled(i64),
    CheckedOut(i64),
    DatesChanged(i64, usize, Option<usize>),
    NoShow(i64),
    Fraud(i64),
    NoShowDue,
    /// The live credential moves on at the door: 0 → next state, 1 → fails.
    Progress(u8),
}

fn input() -> impl Strategy<Value = In> {
    let rev = 0i64..10;
    prop_oneof![
        3 => (rev.clone(), 0..WINDOWS.len(), 0..ROOMS.len()).prop_map(|(r, w, m)| In::Confirmed(r, w, m)),
        1 => rev.clone().prop_map(In::Cancelled),
        1 => rev.clone().prop_map(In::CheckedOut),
        2 => (rev.clone(), 0..WINDOWS.len(), proptest::option::of(0..ROOMS.len())).prop_map(|(r, w, m)| In::DatesChanged(r, w, m)),
        1 => rev.clone().prop_map(In::NoShow),
        1 => rev.prop_map(In::Fraud),
        1 => Just(In::NoShowDue),
        5 => (0u8..4).prop_map(|p| In::Progress(u8::from(p == 3))),
    ]
}

fn win(i: usize) -> ValidityWindow {
    let (f, u) = WINDOWS[i];
    ValidityWindow::new(
        valid_from() + Duration::hours(f),
        valid_from() + Duration::hours(u),
    )
    .unwrap()
}

fn rooms(i: usize) -> Vec<RoomId> {
    ROOMS[i].iter().map(|r| room_id(r)).collect()
}

/// The door: every credential the saga commanded, with what the vendor holds.
#[derive(Default, Debug)]
struct Door {
    creds: BTreeMap<KeyCredentialId, (St, ValidityWindow, Vec<RoomId>)>,
}

impl Door {
    fn live(&self) -> Vec<&KeyCredentialId> {
        self.creds
            .iter()
            .filter(|(_, (s, _, _))| !matches!(s, St::Revoked | St::Failed))
            .map(|(id, _)| id)
            .collect()
    }
}

/// Reference facts, computed independently of the saga.
#[derive(Default, Debug)]
struct Model {
    window: Option<(i64, ValidityWindow)>,
    rooms: Option<(i64, Vec<RoomId>)>,
    confirmed: bool,
    ended: bool,
    suspended_by_facts: bool,
    no_show_seen: bool,
}

impl Model {
    fn newer<T>(slot: &mut Option<(i64, T)>, rev: i64, v: T) {
        if slot.as_ref().is_none_or(|(r, _)| rev > *r) {
            *slot = Some((rev, v));
        }
    }
    fn absorb(&mut self, i: &In) {
        if self.ended {
            return;
        }
        match i {
            In::Confirmed(r, w, m) => {
                self.confirmed = true;
                Self::newer(&mut self.window, *r, win(*w));
                Self::newer(&mut self.rooms, *r, rooms(*m));
            }
            In::DatesChanged(r, w, m) => {
                Self::newer(&mut self.window, *r, win(*w));
                if let Some(m) = m {
                    Self::newer(&mut self.rooms, *r, rooms(*m));
                }
            }
            In::Cancelled(_) | In::CheckedOut(_) => self.ended = true,
            In::Fraud(_) => self.suspended_by_facts = true,
            In::NoShow(_) => self.no_show_seen = true,
            In::NoShowDue => self.suspended_by_facts = true,
            In::Progress(_) => {}
        }
    }
}

fn to_event(i: &In, saga: &ReservationSaga, door: &mut Door) -> Option<ReservationEvent> {
    Some(match i {
        In::Confirmed(r, w, m) => ReservationEvent::Confirmed {
            revision: *r,
            guest_id: GuestId::parse("gst_01").unwrap(),
            rooms: rooms(*m),
            validity: win(*w),
        },
        In::Cancelled(r) => ReservationEvent::Cancelled { revision: *r },
        In::CheckedOut(r) => ReservationEvent::CheckedOut { revision: *r },
        In::DatesChanged(r, w, m) => ReservationEvent::DatesChanged {
            revision: *r,
            validity: win(*w),
            rooms: m.map(rooms),
        },
        In::NoShow(r) => ReservationEvent::NoShow { revision: *r },
        In::Fraud(r) => ReservationEvent::FraudFlagged { revision: *r },
        In::NoShowDue => ReservationEvent::NoShowSuspendDue,
        In::Progress(fail) => {
            let id = saga.credential.as_ref()?.id.clone();
            let (s, _, _) = door.creds.get_mut(&id)?;
            let (new, reason) = match (*s, fail) {
                (St::Requested | St::Pending, 1) => {
                    (St::Failed, Some(FailureReason::VendorRefused))
                }
                (St::Requested, _) => (St::Pending, None),
                (St::Pending, _) => (St::Active, None),
                _ => return None,
            };
            *s = new;
            ReservationEvent::CredentialObserved {
                credential_id: id,
                state: new,
                failure_reason: reason,
            }
        }
    })
}

/// Carries out the commands at the door, checking each is legal there.
fn execute(
    commands: &[SagaCommand],
    door: &mut Door,
    model: &Model,
    next: &ReservationSaga,
) -> Result<(), TestCaseError> {
    for c in commands {
        match c {
            SagaCommand::Issue {
                credential_id,
                validity,
                rooms,
                ..
            } => {
                prop_assert!(!model.ended, "Issue after the stay ended");
                prop_assert!(
                    door.live().is_empty(),
                    "Issue while a key is live: {:?}",
                    door
                );
                prop_assert!(!door.creds.contains_key(credential_id), "id reused");
                prop_assert_eq!(
                    Some(validity),
                    model.window.as_ref().map(|(_, w)| w),
                    "Issue with a stale window"
                );
                prop_assert_eq!(
                    Some(rooms),
                    model.rooms.as_ref().map(|(_, r)| r),
                    "Issue with stale rooms"
                );
                door.creds.insert(
                    credential_id.clone(),
                    (St::Requested, *validity, rooms.clone()),
                );
            }
            SagaCommand::Revoke { credential_id, .. } => {
                let (s, _, _) = door
                    .creds
                    .get_mut(credential_id)
                    .expect("revoke of a known key");
                prop_assert!(
                    matches!(s, St::Pending | St::Active | St::Suspended),
                    "revoke from {:?}",
                    s
                );
                *s = St::Revoked;
            }
            SagaCommand::FailCancelledMidFlight { credential_id } => {
                let (s, _, _) = door
                    .creds
                    .get_mut(credential_id)
                    .expect("fail of a known key");
                // not yet confirmed by the vendor: never called, or the call in flight
                prop_assert!(
                    matches!(s, St::Requested | St::Pending),
                    "fail mid-flight from {:?}",
                    s
                );
                *s = St::Failed;
            }
            SagaCommand::Update {
                credential_id,
                valid_until,
                rooms,
            } => {
                let (s, w, r) = door
                    .creds
                    .get_mut(credential_id)
                    .expect("update of a known key");
                prop_assert!(
                    matches!(s, St::Active | St::Suspended),
                    "update from {:?}",
                    s
                );
                *w = ValidityWindow::new(w.from(), *valid_until).expect("I-1 holds for updates");
                *r = rooms.clone();
            }
            SagaCommand::Suspend { credential_id, .. } => {
                let (s, _, _) = door
                    .creds
                    .get_mut(credential_id)
                    .expect("suspend of a known key");
                prop_assert_eq!(*s, St::Active);
                *s = St::Suspended;
            }
            SagaCommand::ScheduleNoShowSuspend { .. } | SagaCommand::EscortRequired { .. } => {}
        }
    }
    // The saga's record of its credential agrees with the door.
    if let Some(t) = &next.credential {
        prop_assert_eq!(Some(t.state), door.creds.get(&t.id).map(|(s, _, _)| *s));
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::proptest_config("reservation_saga_reconciles_the_door_with_the_newest_facts"))]

    #[test]
    fn reservation_saga_reconciles_the_door_with_the_newest_facts(
        inputs in proptest::collection::vec(input(), 1..40),
    ) {
        let policy = default_policy();
        let mut saga = ReservationSaga::default();
        let mut door = Door::default();
        let mut model = Model::default();
        let mut ids = 1u8;
        for i in inputs.iter().chain(std::iter::repeat_n(&In::Progress(0), 8)) {
            let Some(ev) = to_event(i, &saga, &mut door) else { continue };
            model.absorb(i);
            ids += 1;
            match decide(&saga, &ev, &ctx(&policy, ids)) {
                Decision::Ignore(_) => {}
                Decision::Apply { next, commands } => {
                    execute(&commands, &mut door, &model, &next)?;
                    // Idempotence: the same input again changes nothing.
                    prop_assert!(
                        matches!(decide(&next, &ev, &ctx(&policy, ids + 100)), Decision::Ignore(_)),
                        "{:?} applied twice", ev
                    );
                    saga = next;
                }
            }
            prop_assert!(door.live().len() <= 1, "two live keys: {:?}", door);
        }
        // Settled (the trailing Progress inputs drove the live key to active).
        let live = door.live();
        if model.ended || !model.confirmed {
            prop_assert!(live.is_empty(), "live key for an ended or unconfirmed stay: {:?}", door);
        } else if !model.suspended_by_facts && saga.gave_up.is_none() {
            prop_assert_eq!(live.len(), 1, "no key for a live stay: {:?} {:?}", door, saga);
            let (s, w, r) = &door.creds[live[0]];
            prop_assert_eq!(*s, St::Active);
            prop_assert_eq!(Some(w), model.window.as_ref().map(|(_, w)| w));
            prop_assert_eq!(Some(r), model.rooms.as_ref().map(|(_, r)| r));
        }
    }
}
