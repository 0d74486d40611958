//! The reservation saga's decisions, as pure functions (DESIGN §1): from the saga's stored
//! state and one input (a reservation event, a timer, or an observation of the saga's own
//! credential) to the commands the actors must carry out. No actor, broker or database is
//! needed to test them.
//!
//! The saga is a *reconciler*. Out-of-order and duplicate delivery are normal (DESIGN §3.1),
//! so the stored state is not "the step we are at" but the newest facts per kind — stay
//! window and rooms with the revision each came from, whether the reservation was
//! confirmed, whether it ended (cancelled or checked out: final, with its reason), the fraud
//! flag, the no-show and its due suspension — plus the saga's credential as last known.
//! [`decide`] folds the input into the facts, then derives the commands that move the
//! credential toward what the facts say, and records in the new state what it commanded
//! (an issued credential with its id, a revoke, an update, a suspension). So:
//!
//! - the same input twice changes nothing the second time ([`Decision::Ignore`]);
//! - a cancel or checkout that arrives before its confirm means no key is ever issued;
//! - a confirm that arrives after a newer `dates_changed` issues with the newer window;
//! - a key is issued at most once per kind attempt, because the state records the Issue
//!   (with the id the actor supplied in [`SagaContext::new_credential_id`]) before any
//!   vendor call.

use crate::capabilities::LockCapabilities;
use crate::clock::Timestamp;
use crate::credential::{
    FailureReason, KeyCredentialKind, KeyCredentialState, RevokeReason, SuspendReason,
};
use crate::ids::{GuestId, KeyCredentialId, ReservationId, RoomId};
use crate::policy::KeyKindPolicy;
use crate::validity::ValidityWindow;

/// The saga subject of a reservation (DESIGN §12: sagas are keyed by subject).
pub fn subject_for_reservation(id: &ReservationId) -> String {
    crate::subject::SagaSubject::Reservation(id.clone()).to_string()
}

/// A fact with the revision of the event it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// Revision of the event that set it.
    pub revision: i64,
    /// The fact.
    pub value: T,
}

/// How a stay ended. Final: nothing reopens it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StayEnd {
    /// `reservation.cancelled.v1`.
    Cancelled,
    /// `reservation.checked_out.v1`.
    CheckedOut,
}

impl StayEnd {
    /// The revoke reason of spec `002` ("Key events (consumed)").
    pub fn revoke_reason(self) -> RevokeReason {
        match self {
            Self::Cancelled => RevokeReason::Cancellation,
            Self::CheckedOut => RevokeReason::Checkout,
        }
    }
}

/// The end of a stay and the revision of the event that ended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    /// How.
    pub reason: StayEnd,
    /// Revision of that event.
    pub revision: i64,
}

/// The credential the saga commanded, as last known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedCredential {
    /// Its id (chosen by the actor before `decide`, see [`SagaContext`]).
    pub id: KeyCredentialId,
    /// Its kind.
    pub kind: KeyCredentialKind,
    /// Its state: the one the saga commanded, or a newer one observed.
    pub state: KeyCredentialState,
    /// Why it failed, once failed.
    pub failure_reason: Option<FailureReason>,
    /// The window it was issued or last updated with.
    pub validity: ValidityWindow,
    /// The rooms it was issued or last updated with (sorted, distinct).
    pub rooms: Vec<RoomId>,
    /// K-2: the `validUntil` it was issued with; extensions are measured from here.
    pub issued_until: Timestamp,
}

/// Where the saga of one reservation stands: the newest facts, and its credential.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReservationSaga {
    /// Newest revision of a reservation event that changed a fact.
    pub revision: Option<i64>,
    /// The guest, from the confirm.
    pub guest_id: Option<GuestId>,
    /// Whether a confirm has been seen.
    pub confirmed: bool,
    /// Newest stay window.
    pub window: Option<Versioned<ValidityWindow>>,
    /// Newest rooms (sorted, distinct, never empty: I-12).
    pub rooms: Option<Versioned<Vec<RoomId>>>,
    /// Cancelled or checked out: final.
    pub ended: Option<Ended>,
    /// `reservation.fraud_flagged.v1` seen.
    pub fraud_flagged: bool,
    /// `reservation.no_show.v1` seen.
    pub no_show: bool,
    /// The no-show suspension timer has fired.
    pub no_show_suspend_due: bool,
    /// The credential the saga commanded last (a fallback or reissue replaces it here).
    pub credential: Option<TrackedCredential>,
    /// Kinds already attempted for this stay (the fallback never tries one twice).
    pub tried_kinds: Vec<KeyCredentialKind>,
    /// Set when no kind is left ("manual escort", spec `002`): the saga stops issuing.
    pub gave_up: Option<FailureReason>,
    /// An operator unsuspended the key with the saga at this revision: flags up to it no
    /// longer suspend.
    pub suspension_cleared_through: Option<i64>,
}

impl ReservationSaga {
    /// An operator unsuspended the saga's credential: the review is over, so the facts that
    /// asked for the suspension (fraud flag, a no-show that fired) no longer hold it back.
    pub fn operator_unsuspended(&mut self, credential_id: &KeyCredentialId) {
        if let Some(c) = &mut self.credential {
            if &c.id == credential_id && c.state == KeyCredentialState::Suspended {
                c.state = KeyCredentialState::Active;
                self.fraud_flagged = false;
                self.no_show_suspend_due = false;
                self.suspension_cleared_through = Some(self.revision.unwrap_or(0));
            }
        }
    }

    /// An operator moved the saga's credential's end or rooms: the saga knows it holds them
    /// now, so it does not move them back at its next step.
    pub fn operator_updated(
        &mut self,
        credential_id: &KeyCredentialId,
        validity: ValidityWindow,
        rooms: Vec<RoomId>,
    ) {
        if let Some(c) = self.credential.as_mut().filter(|c| &c.id == credential_id) {
            c.validity = validity;
            c.rooms = rooms;
        }
    }

    /// The K-2 base of the saga's credential (`validUntil` as first issued), if it tracks it.
    pub fn issued_until_of(&self, credential_id: &KeyCredentialId) -> Option<Timestamp> {
        self.credential
            .as_ref()
            .filter(|c| &c.id == credential_id)
            .map(|c| c.issued_until)
    }

    /// An operator replaced the saga's credential (lost key): the saga follows the new one,
    /// so a later cancellation or checkout revokes it.
    ///
    /// The new credential inherits what the saga knew of the old one (the window and rooms
    /// it was issued for, the K-2 base): it is the same key for the same stay, so the
    /// saga must not see a change to act on. (A credential whose stay began in the past
    /// is stored with a later `validFrom` than the stay's; taking the new credential's
    /// stored window here made the saga replace it again as a date change.)
    pub fn adopt_replacement(&mut self, old: &KeyCredentialId, new: TrackedCredential) {
        if let Some(c) = self.credential.as_mut().filter(|c| &c.id == old) {
            *c = TrackedCredential {
                validity: c.validity,
                rooms: c.rooms.clone(),
                issued_until: c.issued_until,
                ..new
            };
        }
    }

    /// Absorbs where the saga's credential really is. Observations only move it forward (a
    /// redelivered "active" must not undo a suspension the saga commanded since); I-4/I-5:
    /// nothing leaves revoked or failed. The actor also calls this with the credential's
    /// stored state before every decision, so the saga never decides on a stale view (a
    /// checkout that meets a key activated since the saga last heard of it revokes it).
    pub fn observe(
        &mut self,
        credential_id: &KeyCredentialId,
        state: KeyCredentialState,
        failure_reason: Option<FailureReason>,
    ) {
        if let Some(c) = &mut self.credential {
            if &c.id == credential_id && progress_rank(state) > progress_rank(c.state) {
                c.state = state;
                if state == KeyCredentialState::Failed {
                    c.failure_reason = Some(failure_reason.unwrap_or(FailureReason::VendorRefused));
                }
            }
        }
    }

    /// Whether the reservation was cancelled.
    pub fn cancelled(&self) -> bool {
        self.ended.is_some_and(|e| e.reason == StayEnd::Cancelled)
    }
}

/// One input of the reservation saga. The first six are the consumed events of spec `002`,
/// parsed and validated at the edge; the last two are the saga's own timer and feedback.
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
    /// `reservation.checked_out.v1`.
    CheckedOut {
        /// Per-reservation revision.
        revision: i64,
    },
    /// `reservation.dates_changed.v1`.
    DatesChanged {
        /// Per-reservation revision.
        revision: i64,
        /// New stay window.
        validity: ValidityWindow,
        /// New rooms, when they changed too.
        rooms: Option<Vec<RoomId>>,
    },
    /// `reservation.no_show.v1`.
    NoShow {
        /// Per-reservation revision.
        revision: i64,
    },
    /// `reservation.fraud_flagged.v1`.
    FraudFlagged {
        /// Per-reservation revision.
        revision: i64,
    },
    /// The durable timer scheduled by [`SagaCommand::ScheduleNoShowSuspend`] fired. Not a
    /// wire event.
    NoShowSuspendDue,
    /// The actor observed the saga's credential in a new state (it became active, or
    /// failed after retries). Not a wire event: the drive step feeds it back so the saga
    /// can update, suspend, or fall back to the next kind.
    CredentialObserved {
        /// Which credential.
        credential_id: KeyCredentialId,
        /// Its state now.
        state: KeyCredentialState,
        /// Why it failed, when it did.
        failure_reason: Option<FailureReason>,
    },
}

impl ReservationEvent {
    /// The revision of a reservation event; `None` for the saga's own inputs.
    pub fn revision(&self) -> Option<i64> {
        match self {
            Self::Confirmed { revision, .. }
            | Self::Cancelled { revision }
            | Self::CheckedOut { revision }
            | Self::DatesChanged { revision, .. }
            | Self::NoShow { revision }
            | Self::FraudFlagged { revision } => Some(*revision),
            Self::NoShowSuspendDue | Self::CredentialObserved { .. } => None,
        }
    }
}

/// What the saga wants done. The actor carries these out in order, in one unit of work
/// with the new saga state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SagaCommand {
    /// Request a credential with this id and issue it at the vendor.
    Issue {
        /// The id to give it (the one in [`SagaContext::new_credential_id`]).
        credential_id: KeyCredentialId,
        /// Kind, chosen by the [`KeyKindPolicy`].
        kind: KeyCredentialKind,
        /// Guest.
        guest_id: GuestId,
        /// Rooms (newest).
        rooms: Vec<RoomId>,
        /// Window (newest).
        validity: ValidityWindow,
        /// The credential this one replaces (a revoke with reason `replaced` precedes it).
        replaces: Option<KeyCredentialId>,
    },
    /// Update an active or suspended credential: only `validUntil` and rooms move (spec
    /// `003` §1.3 `update`).
    Update {
        /// Which.
        credential_id: KeyCredentialId,
        /// New end of validity (K-2 capped).
        valid_until: Timestamp,
        /// Rooms (sorted, distinct).
        rooms: Vec<RoomId>,
    },
    /// Suspend an active credential.
    Suspend {
        /// Which.
        credential_id: KeyCredentialId,
        /// Why.
        reason: SuspendReason,
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
    /// Schedule a durable timer that feeds [`ReservationEvent::NoShowSuspendDue`] into this
    /// saga after `after_hours` (the policy's `noShowSuspendAfterHours`).
    ScheduleNoShowSuspend {
        /// The saga's credential when the no-show arrived, if any (informational: the
        /// saga decides again when the timer fires).
        credential_id: Option<KeyCredentialId>,
        /// Delay in hours.
        after_hours: i64,
    },
    /// No kind is left for this stay ("manual escort", spec `002`): raise it to the front
    /// desk. The saga has stopped issuing.
    EscortRequired {
        /// The failure that exhausted the chain (`kind_unsupported` when no kind was ever
        /// possible).
        reason: FailureReason,
    },
}

/// Why an input changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Its revision is older than the facts it would set.
    Stale,
    /// The facts already say what it says.
    Duplicate,
    /// The reservation was cancelled or checked out before.
    AlreadyEnded,
    /// An observation of a credential that is not (or no longer) the saga's live one.
    UnknownCredential,
    /// The event breaks a rule (a confirm without rooms: I-12).
    Invalid,
}

/// The decision for one input.
// A decision lives for one step and is matched at once; boxing the state buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Carry out these commands and store the new state.
    Apply {
        /// New saga state.
        next: ReservationSaga,
        /// Commands, in order.
        commands: Vec<SagaCommand>,
    },
    /// Record the input as ignored.
    Ignore(Ignored),
}

/// What `decide` needs besides the state and the input: the property's policy and adapter
/// capabilities, and a fresh id in case it issues (so the state records the Issue with
/// its id and `decide` alone never issues twice).
#[derive(Clone, Debug)]
pub struct SagaContext<'a> {
    /// The property's `KeyKindPolicy` (or [`KeyKindPolicy::default_for`]).
    pub policy: &'a KeyKindPolicy,
    /// Capabilities of the adapter that serves the property.
    pub caps: LockCapabilities,
    /// Whether the guest's ID document was verified (`idVerifyRequiredFor`).
    pub id_verified: bool,
    /// The id to use if this decision issues a credential. At most one Issue per decision.
    pub new_credential_id: KeyCredentialId,
}

/// The first kind of the default policy ([`KeyKindPolicy::default_for`]): a PIN, which
/// every guest can use without a smartphone.
pub const DEFAULT_GUEST_KIND: KeyCredentialKind = KeyCredentialKind::PinCode;

fn normalized(rooms: &[RoomId]) -> Vec<RoomId> {
    let mut r = rooms.to_vec();
    r.sort();
    r.dedup();
    r
}

/// Sets `slot` to `value` if `revision` is newer than what it holds.
fn newer<T>(slot: &mut Option<Versioned<T>>, revision: i64, value: T) {
    if slot.as_ref().is_none_or(|v| revision > v.revision) {
        *slot = Some(Versioned { revision, value });
    }
}

/// How far along its life a credential is: requested < pending < active or suspended <
/// revoked or failed.
fn progress_rank(state: KeyCredentialState) -> u8 {
    match state {
        KeyCredentialState::Requested => 0,
        KeyCredentialState::Pending => 1,
        KeyCredentialState::Active | KeyCredentialState::Suspended => 2,
        KeyCredentialState::Revoked | KeyCredentialState::Failed => 3,
    }
}

/// Folds the input into the facts. Returns commands that belong to the input itself rather
/// than to reconciliation (the no-show timer).
fn absorb(
    s: &mut ReservationSaga,
    event: &ReservationEvent,
    ctx: &SagaContext<'_>,
) -> Vec<SagaCommand> {
    if let ReservationEvent::CredentialObserved {
        credential_id,
        state,
        failure_reason,
    } = event
    {
        s.observe(credential_id, *state, *failure_reason);
        return vec![];
    }
    // Facts are frozen once the stay ended: only the credential's fate still matters.
    if s.ended.is_some() {
        return vec![];
    }
    let mut commands = vec![];
    match event {
        ReservationEvent::Confirmed {
            revision,
            guest_id,
            rooms,
            validity,
        } => {
            s.confirmed = true;
            s.guest_id = Some(guest_id.clone());
            newer(&mut s.window, *revision, *validity);
            newer(&mut s.rooms, *revision, normalized(rooms));
        }
        ReservationEvent::DatesChanged {
            revision,
            validity,
            rooms,
        } => {
            newer(&mut s.window, *revision, *validity);
            // I-12: an empty room list is no change of rooms.
            if let Some(rooms) = rooms.as_ref().filter(|r| !r.is_empty()) {
                newer(&mut s.rooms, *revision, normalized(rooms));
            }
        }
        ReservationEvent::Cancelled { revision } => {
            s.ended = Some(Ended {
                reason: StayEnd::Cancelled,
                revision: *revision,
            });
        }
        ReservationEvent::CheckedOut { revision } => {
            s.ended = Some(Ended {
                reason: StayEnd::CheckedOut,
                revision: *revision,
            });
        }
        ReservationEvent::NoShow { .. } => {
            if !s.no_show {
                s.no_show = true;
                commands.push(SagaCommand::ScheduleNoShowSuspend {
                    credential_id: s.credential.as_ref().map(|c| c.id.clone()),
                    after_hours: ctx.policy.no_show_suspend_after_hours(),
                });
            }
        }
        // An operator's unsuspend outranks the flags that came before it.
        ReservationEvent::FraudFlagged { revision } => {
            if s.suspension_cleared_through.is_none_or(|r| *revision > r) {
                s.fraud_flagged = true;
            }
        }
        ReservationEvent::NoShowSuspendDue => {
            if s.suspension_cleared_through.is_none() {
                s.no_show_suspend_due = true;
            }
        }
        ReservationEvent::CredentialObserved { .. } => {}
    }
    commands
}

/// The suspension the facts ask for: fraud review outranks a no-show.
fn wanted_suspension(s: &ReservationSaga) -> Option<SuspendReason> {
    if s.fraud_flagged {
        Some(SuspendReason::FraudReview)
    } else if s.no_show_suspend_due {
        Some(SuspendReason::NoShow)
    } else {
        None
    }
}

/// Records a new credential of `kind` for the newest facts and returns its Issue.
fn issue(
    s: &mut ReservationSaga,
    ctx: &SagaContext<'_>,
    kind: KeyCredentialKind,
    replaces: Option<KeyCredentialId>,
) -> Option<SagaCommand> {
    let window = s.window.as_ref()?.value;
    let rooms = s.rooms.as_ref()?.value.clone();
    let guest_id = s.guest_id.clone()?;
    let id = ctx.new_credential_id.clone();
    s.credential = Some(TrackedCredential {
        id: id.clone(),
        kind,
        state: KeyCredentialState::Requested,
        failure_reason: None,
        validity: window,
        rooms: rooms.clone(),
        issued_until: window.until(),
    });
    if !s.tried_kinds.contains(&kind) {
        s.tried_kinds.push(kind);
    }
    Some(SagaCommand::Issue {
        credential_id: id,
        kind,
        guest_id,
        rooms,
        validity: window,
        replaces,
    })
}

/// The next kind to try after `failed`, never one tried before for this stay.
fn fallback_kind(
    s: &ReservationSaga,
    ctx: &SagaContext<'_>,
    failed: KeyCredentialKind,
) -> Option<KeyCredentialKind> {
    let mut k = failed;
    loop {
        k = ctx.policy.next_after(k, &ctx.caps, ctx.id_verified)?;
        if !s.tried_kinds.contains(&k) {
            return Some(k);
        }
    }
}

/// Derives the commands that move the credential toward what the facts say, and records
/// them in `s`.
fn reconcile(s: &mut ReservationSaga, ctx: &SagaContext<'_>) -> Vec<SagaCommand> {
    let mut out = vec![];
    if let Some(end) = s.ended {
        if let Some(c) = &mut s.credential {
            match c.state {
                // Not confirmed by the vendor yet (never called, or the call in flight): it is
                // cancelled mid-flight (spec `003` FailureReason, issue 4); whatever the vendor
                // created meanwhile is removed by the door-truth rows.
                KeyCredentialState::Requested | KeyCredentialState::Pending => {
                    out.push(SagaCommand::FailCancelledMidFlight {
                        credential_id: c.id.clone(),
                    });
                    c.state = KeyCredentialState::Failed;
                    c.failure_reason = Some(FailureReason::CancelledMidFlight);
                }
                KeyCredentialState::Active | KeyCredentialState::Suspended => {
                    out.push(SagaCommand::Revoke {
                        credential_id: c.id.clone(),
                        reason: end.reason.revoke_reason(),
                    });
                    c.state = KeyCredentialState::Revoked;
                }
                KeyCredentialState::Revoked | KeyCredentialState::Failed => {}
            }
        }
        return out;
    }
    if !s.confirmed || s.gave_up.is_some() {
        return out;
    }
    let suspension = wanted_suspension(s);
    let Some(c) = s.credential.clone() else {
        // Fraud review or a due no-show suspension withholds the first key: issuing one only
        // to suspend it would open the door in between.
        if suspension.is_none() {
            match ctx.policy.choose_kind(&ctx.caps, ctx.id_verified) {
                Ok(kind) => out.extend(issue(s, ctx, kind, None)),
                Err(reason) => {
                    s.gave_up = Some(reason);
                    out.push(SagaCommand::EscortRequired { reason });
                }
            }
        }
        return out;
    };
    match c.state {
        // In flight: the next observation of the credential reconciles it.
        KeyCredentialState::Requested | KeyCredentialState::Pending => {}
        // Revoked outside the saga (an operator: lost, security): the saga does not undo it.
        KeyCredentialState::Revoked => {}
        KeyCredentialState::Failed => {
            if suspension.is_some() {
                return out;
            }
            let reason = c.failure_reason.unwrap_or(FailureReason::VendorRefused);
            // I-9: another reservation holds the room for these dates; no other kind of key
            // can change that, so the front desk is told instead.
            if reason == FailureReason::RoomConflict {
                s.gave_up = Some(reason);
                out.push(SagaCommand::EscortRequired { reason });
                return out;
            }
            match fallback_kind(s, ctx, c.kind) {
                Some(kind) => out.extend(issue(s, ctx, kind, None)),
                None => {
                    s.gave_up = Some(reason);
                    out.push(SagaCommand::EscortRequired { reason });
                }
            }
        }
        KeyCredentialState::Active | KeyCredentialState::Suspended => {
            let (Some(window), Some(rooms)) = (s.window.as_ref(), s.rooms.as_ref()) else {
                return out;
            };
            let (window, rooms) = (window.value, rooms.value.clone());
            // `update` moves only validUntil and rooms (spec `003` §1.3). A moved start on
            // an active key is a new stay window: revoke (replaced) and reissue, so the old
            // key never opens the door before the new stay (it could overlap the previous
            // guest's stay, I-9). A suspended key keeps its start and is only updated: it
            // opens nothing, and reissuing would bypass the suspension.
            let from_moved = window.from() != c.validity.from();
            if from_moved && c.state == KeyCredentialState::Active && suspension.is_none() {
                out.push(SagaCommand::Revoke {
                    credential_id: c.id.clone(),
                    reason: RevokeReason::Replaced,
                });
                out.extend(issue(s, ctx, c.kind, Some(c.id.clone())));
                return out;
            }
            // K-2: a date change extends the key at most maxValidUntilExtensionHours past
            // the end it was issued with; beyond that the key ends at the cap.
            let until = window
                .until()
                .min(ctx.policy.extension_limit(c.issued_until));
            let tracked = s
                .credential
                .as_mut()
                .expect("the credential was cloned from this slot above");
            match ValidityWindow::new(c.validity.from(), until) {
                Ok(v) => {
                    if v != c.validity || rooms != c.rooms {
                        out.push(SagaCommand::Update {
                            credential_id: c.id.clone(),
                            valid_until: v.until(),
                            rooms: rooms.clone(),
                        });
                        tracked.validity = v;
                        tracked.rooms = rooms;
                    }
                }
                // I-1: the new stay ends before this key starts; no update can fit it.
                Err(_) => {
                    out.push(SagaCommand::Revoke {
                        credential_id: c.id.clone(),
                        reason: RevokeReason::Replaced,
                    });
                    tracked.state = KeyCredentialState::Revoked;
                    return out;
                }
            }
            if let (KeyCredentialState::Active, Some(reason)) = (c.state, suspension) {
                out.push(SagaCommand::Suspend {
                    credential_id: c.id.clone(),
                    reason,
                });
                tracked.state = KeyCredentialState::Suspended;
            }
        }
    }
    out
}

fn why_ignored(state: &ReservationSaga, event: &ReservationEvent) -> Ignored {
    match event {
        ReservationEvent::CredentialObserved { credential_id, .. } => {
            if state
                .credential
                .as_ref()
                .is_some_and(|c| &c.id == credential_id)
            {
                Ignored::Duplicate
            } else {
                Ignored::UnknownCredential
            }
        }
        _ if state.ended.is_some() => Ignored::AlreadyEnded,
        ReservationEvent::Confirmed { revision, .. }
        | ReservationEvent::DatesChanged { revision, .. }
            if state
                .window
                .as_ref()
                .is_some_and(|w| *revision < w.revision) =>
        {
            Ignored::Stale
        }
        _ => Ignored::Duplicate,
    }
}

/// Decides what one input does: folds it into the facts, then reconciles the credential
/// with them. An input that changes no fact and needs no command is [`Decision::Ignore`].
pub fn decide(
    state: &ReservationSaga,
    event: &ReservationEvent,
    ctx: &SagaContext<'_>,
) -> Decision {
    if let ReservationEvent::Confirmed { rooms, .. } = event {
        // I-12: a guest credential opens at least one room.
        if rooms.is_empty() {
            return Decision::Ignore(Ignored::Invalid);
        }
    }
    let mut next = state.clone();
    let mut commands = absorb(&mut next, event, ctx);
    commands.extend(reconcile(&mut next, ctx));
    if commands.is_empty() && next == *state {
        return Decision::Ignore(why_ignored(state, event));
    }
    if let Some(r) = event.revision() {
        next.revision = Some(next.revision.map_or(r, |n| n.max(r)));
    }
    Decision::Apply { next, commands }
}

/// `tenant.property.deactivated.v1` (spec `002`): bulk revoke of every non-terminal
/// credential at the property, guest and master alike. Reason `security`: the property no
/// longer operates under Lockstep, so no holder keeps access; it is neither the guest's
/// checkout nor a cancellation, and `security` is the spec's reason for "access withdrawn
/// by the operator". Credentials still `requested` never reached the vendor and fail as
/// `cancelled_mid_flight`; revoked and failed ones are left alone (I-4, I-5).
pub fn revoke_all_at_property(
    credentials: &[(KeyCredentialId, KeyCredentialState)],
) -> Vec<SagaCommand> {
    credentials
        .iter()
        .filter_map(|(id, state)| match state {
            KeyCredentialState::Requested => Some(SagaCommand::FailCancelledMidFlight {
                credential_id: id.clone(),
            }),
            KeyCredentialState::Pending
            | KeyCredentialState::Active
            | KeyCredentialState::Suspended => Some(SagaCommand::Revoke {
                credential_id: id.clone(),
                reason: RevokeReason::Security,
            }),
            KeyCredentialState::Revoked | KeyCredentialState::Failed => None,
        })
        .collect()
}
