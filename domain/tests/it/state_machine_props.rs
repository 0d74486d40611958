//! Model-based property test of the `KeyCredential` state machine (spec `003` §1.3):
//! random sequences of transition calls against a tiny reference table written here.

use std::collections::BTreeSet;

use chrono::Duration;
use lockstep_domain::{
    DomainError, DomainEventKind, FailureReason, HolderKind, KeyCredential, KeyCredentialState,
    RevokeReason, ScopedRoom, SuspendReason, Timestamp, Transition, UpdateInput,
};
use proptest::prelude::*;
use proptest::sample::select;

use crate::builders::*;

const ROOMS: [&str; 4] = ["rmu_101", "rmu_102", "rmu_103", "rmu_104"];

/// New end of validity in an `update`.
#[derive(Clone, Debug)]
enum Until {
    /// Leave it (`None`).
    Keep,
    /// The current value again.
    Same,
    /// `validFrom + hours` (may be <= 0: I-1, or > 48 for a provisional one: I-7).
    Hours(i64),
}

/// New rooms in an `update`.
#[derive(Clone, Debug)]
enum Rooms {
    /// Leave them (`None`).
    Keep,
    /// The current ones again.
    Same,
    /// Rooms of the credential's tenant and property (possibly none: I-12).
    Own(Vec<usize>),
    /// One room of another tenant (I-11).
    OtherTenant,
    /// One room of another property (I-11).
    OtherProperty,
}

#[derive(Clone, Debug)]
enum Call {
    MarkPending,
    MarkActive,
    MarkFailed(FailureReason),
    Suspend(SuspendReason),
    Unsuspend,
    Revoke(RevokeReason),
    Update(Until, Rooms),
    LinkReplacement(u8),
}

fn call() -> impl Strategy<Value = Call> {
    let until = prop_oneof![
        Just(Until::Keep),
        Just(Until::Same),
        (-3i64..80).prop_map(Until::Hours),
    ];
    let rooms = prop_oneof![
        2 => Just(Rooms::Keep),
        1 => Just(Rooms::Same),
        4 => proptest::collection::vec(0..ROOMS.len(), 0..4).prop_map(Rooms::Own),
        1 => Just(Rooms::OtherTenant),
        1 => Just(Rooms::OtherProperty),
    ];
    prop_oneof![
        Just(Call::MarkPending),
        Just(Call::MarkActive),
        select(FailureReason::ALL).prop_map(Call::MarkFailed),
        select(SuspendReason::ALL).prop_map(Call::Suspend),
        Just(Call::Unsuspend),
        select(RevokeReason::ALL).prop_map(Call::Revoke),
        (until, rooms).prop_map(|(u, r)| Call::Update(u, r)),
        (0u8..2).prop_map(Call::LinkReplacement),
    ]
}

/// How the fresh credential is requested.
#[derive(Clone, Debug)]
struct Start {
    master: bool,
    provisional: bool,
    hours: i64,
    rooms: Vec<usize>,
}

fn start() -> impl Strategy<Value = Start> {
    (
        any::<bool>(),
        any::<bool>(),
        1i64..=72,
        proptest::collection::vec(0..ROOMS.len(), 1..3),
    )
        .prop_map(|(master, provisional, hours, rooms)| Start {
            master,
            provisional,
            // I-7 would refuse the request itself; that is tested elsewhere.
            hours: if provisional { hours.min(48) } else { hours },
            rooms,
        })
}

/// What the reference table says a call does.
#[derive(Clone, Debug, PartialEq)]
enum Expected {
    /// Applied, appending this event (`None` for mark_pending and link_replacement).
    Applied(Option<DomainEventKind>),
    AlreadyApplied,
    /// Refused by the state machine.
    IllegalTransition,
    /// Refused by an invariant of the input.
    Invalid,
    /// Refused by I-11.
    CrossTenant,
}

/// The reference model: the few facts the state machine depends on.
#[derive(Clone, Debug)]
struct Model {
    state: KeyCredentialState,
    holder: HolderKind,
    provisional: bool,
    until_hours: i64,
    rooms: BTreeSet<&'static str>,
    failure: Option<FailureReason>,
    revoke: Option<RevokeReason>,
    replaced_by: Option<u8>,
}

fn own_rooms(idx: &[usize]) -> BTreeSet<&'static str> {
    idx.iter().map(|i| ROOMS[*i]).collect()
}

impl Model {
    /// Spec `003` §1.3, plus the idempotency rule of `credential.rs`: repeating the call
    /// that put the credential where it is changes nothing.
    fn step(&mut self, call: &Call) -> Expected {
        use Expected::*;
        use KeyCredentialState::*;
        match (call, self.state) {
            (Call::MarkPending, Requested) => {
                self.state = Pending;
                Applied(None)
            }
            (Call::MarkPending, Pending) => AlreadyApplied,
            (Call::MarkActive, Pending) => {
                self.state = Active;
                Applied(Some(DomainEventKind::Issued))
            }
            (Call::MarkActive, Active) => AlreadyApplied,
            (Call::MarkFailed(r), Requested | Pending) => {
                self.state = Failed;
                self.failure = Some(*r);
                Applied(Some(DomainEventKind::Failed { reason: *r }))
            }
            (Call::MarkFailed(r), Failed) if self.failure == Some(*r) => AlreadyApplied,
            (Call::Suspend(r), Active) => {
                self.state = Suspended;
                Applied(Some(DomainEventKind::Suspended { reason: *r }))
            }
            (Call::Suspend(_), Suspended) => AlreadyApplied,
            (Call::Unsuspend, Suspended) => {
                self.state = Active;
                Applied(Some(DomainEventKind::Unsuspended))
            }
            (Call::Revoke(r), Pending | Active | Suspended) => {
                self.state = Revoked;
                self.revoke = Some(*r);
                Applied(Some(DomainEventKind::Revoked { reason: *r }))
            }
            (Call::Revoke(_), Revoked) => AlreadyApplied,
            (Call::Update(until, rooms), Active | Suspended) => {
                let new_until = match until {
                    Until::Keep | Until::Same => self.until_hours,
                    Until::Hours(h) => *h,
                };
                if new_until <= 0 {
                    return Invalid; // I-1
                }
                if self.provisional && new_until > 48 {
                    return Invalid; // I-7
                }
                let new_rooms = match rooms {
                    Rooms::Keep | Rooms::Same => self.rooms.clone(),
                    Rooms::Own(idx) => {
                        let r = own_rooms(idx);
                        if r.is_empty() && self.holder == HolderKind::Guest {
                            return Invalid; // I-12
                        }
                        r
                    }
                    Rooms::OtherTenant | Rooms::OtherProperty => return CrossTenant, // I-11
                };
                if new_until == self.until_hours && new_rooms == self.rooms {
                    return AlreadyApplied;
                }
                self.until_hours = new_until;
                self.rooms = new_rooms;
                Applied(Some(DomainEventKind::Updated))
            }
            (Call::LinkReplacement(n), Revoked)
                if matches!(
                    self.revoke,
                    Some(RevokeReason::Lost | RevokeReason::Replaced)
                ) =>
            {
                match self.replaced_by {
                    None => {
                        self.replaced_by = Some(*n);
                        Applied(None)
                    }
                    Some(m) if m == *n => AlreadyApplied,
                    Some(_) => IllegalTransition,
                }
            }
            _ => IllegalTransition,
        }
    }
}

fn apply(c: &mut KeyCredential, call: &Call, now: Timestamp) -> Result<Transition, DomainError> {
    match call {
        Call::MarkPending => c.mark_pending(now),
        Call::MarkActive => c.mark_active(now),
        Call::MarkFailed(r) => c.mark_failed(*r, now),
        Call::Suspend(r) => c.suspend(*r, now),
        Call::Unsuspend => c.unsuspend(now),
        Call::Revoke(r) => c.revoke(*r, now),
        Call::Update(until, rooms) => {
            let valid_until = match until {
                Until::Keep => None,
                Until::Same => Some(c.validity().until()),
                Until::Hours(h) => Some(valid_from() + Duration::hours(*h)),
            };
            let rooms = match rooms {
                Rooms::Keep => None,
                Rooms::Same => Some(
                    c.rooms()
                        .iter()
                        .map(|r| room(r.as_str()))
                        .collect::<Vec<ScopedRoom>>(),
                ),
                Rooms::Own(idx) => Some(idx.iter().map(|i| room(ROOMS[*i])).collect()),
                Rooms::OtherTenant => Some(vec![ScopedRoom {
                    tenant_id: other_tenant(),
                    ..room(ROOMS[0])
                }]),
                Rooms::OtherProperty => Some(vec![ScopedRoom {
                    property_id: other_property(),
                    ..room(ROOMS[0])
                }]),
            };
            c.update(
                UpdateInput {
                    valid_until,
                    rooms,
                    scope: None,
                },
                now,
            )
        }
        Call::LinkReplacement(n) => c.link_replacement(credential_id(10 + n), now),
    }
}

fn classify(r: &Result<Transition, DomainError>, events: &[DomainEventKind]) -> Expected {
    match r {
        Ok(Transition::Applied) => Expected::Applied(events.first().cloned()),
        Ok(Transition::AlreadyApplied) => Expected::AlreadyApplied,
        Err(DomainError::InvalidStateTransition { .. }) => Expected::IllegalTransition,
        Err(DomainError::Validation { .. }) => Expected::Invalid,
        Err(DomainError::CrossTenantReference { .. }) => Expected::CrossTenant,
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

proptest! {
    #![proptest_config(crate::proptest_config("credential_state_machine_follows_the_reference_table"))]

    #[test]
    fn credential_state_machine_follows_the_reference_table(
        start in start(),
        calls in proptest::collection::vec(call(), 1..40),
    ) {
        let builder = if start.master { a_master_key() } else { a_key_credential() };
        let mut c = builder
            .provisional(start.provisional)
            .valid_for(Duration::hours(start.hours))
            .rooms(start.rooms.iter().map(|i| room(ROOMS[*i])).collect())
            .requested();
        let mut model = Model {
            state: KeyCredentialState::Requested,
            holder: c.holder_kind(),
            provisional: start.provisional,
            until_hours: start.hours,
            rooms: own_rooms(&start.rooms),
            failure: None,
            revoke: None,
            replaced_by: None,
        };

        let mut applied = 0;
        for (i, call) in calls.iter().enumerate() {
            let now = created_at() + Duration::minutes(i as i64 + 1);
            let before = c.clone();
            let expected = model.step(call);
            let r = apply(&mut c, call, now);
            let drained = c.take_pending_events();
            for e in &drained {
                prop_assert_eq!(e.version, c.version(), "an event carries the new version");
                prop_assert_eq!(e.occurred_at, now);
            }
            let events: Vec<DomainEventKind> = drained.into_iter().map(|e| e.kind).collect();

            // (d) the outcome and the resulting state are the reference table's
            prop_assert_eq!(classify(&r, &events), expected.clone(), "step {} {:?}", i, call);
            prop_assert_eq!(c.state(), model.state, "step {} {:?}", i, call);

            // (a) I-4 / I-5: terminal states stay terminal
            if before.is_terminal() {
                prop_assert_eq!(c.state(), before.state());
            }

            match &r {
                Ok(Transition::Applied) => {
                    // (b) exactly the call's event (none for mark_pending / link_replacement)
                    let want: Vec<DomainEventKind> = match &expected {
                        Expected::Applied(Some(k)) => vec![k.clone()],
                        _ => vec![],
                    };
                    prop_assert_eq!(&events, &want);
                    if matches!(call, Call::MarkPending | Call::LinkReplacement(_)) {
                        prop_assert!(events.is_empty());
                    } else {
                        prop_assert_eq!(events.len(), 1);
                    }
                    // (c) one version per applied call
                    prop_assert_eq!(c.version(), before.version() + 1);
                    applied += 1;
                }
                Ok(Transition::AlreadyApplied) | Err(_) => {
                    // (b) nothing appended, nothing changed; (c) no version bump
                    prop_assert!(events.is_empty(), "{:?}", events);
                    prop_assert_eq!(c.version(), before.version());
                    prop_assert_eq!(c.state(), before.state());
                    prop_assert_eq!(format!("{:?}", c.snapshot()), format!("{:?}", before.snapshot()));
                }
            }

            // the aggregate's facts agree with the model's
            prop_assert_eq!(c.validity().until(), valid_from() + Duration::hours(model.until_hours));
            let rooms: Vec<&str> = c.rooms().iter().map(|r| r.as_str()).collect();
            prop_assert_eq!(rooms, model.rooms.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(c.failure_reason(), model.failure);
            prop_assert_eq!(c.revoke_reason(), model.revoke);
            prop_assert_eq!(c.replaced_by_id().cloned(), model.replaced_by.map(|n| credential_id(10 + n)));
        }
        // (c) over the whole run: version = 1 (request) + number of applied calls
        prop_assert_eq!(c.version(), 1 + applied);
    }
}
