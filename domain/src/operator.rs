//! Operator commands on a credential (spec `003` §1.3, spec `002` Key APIs): update,
//! revoke, suspend, unsuspend and the lost-key replace. Which states take which command,
//! when a credential's window has ended for them, how far an update may extend a key
//! (K-2), and what a replace creates.
//!
//! The rules are asked twice, on purpose, and both ask here:
//!
//! - **at the edge** ([`check_request`]): the HTTP layer refuses at once a key whose stay
//!   is over (410), what the state machine never allows from the key's state (422
//!   `invalid_state_transition`) and a replace of a master key (422), before it sends
//!   the command;
//! - **in the step** ([`decide`], [`check_extension`]): the subject's step carries the
//!   command out later, when the credential may have moved on, and records an outcome
//!   ([`Rejection::as_str`] for a refusal) that the waiting request turns into its answer.

use crate::clock::Timestamp;
use crate::credential::{
    HolderKind, KeyCredential, KeyCredentialKind, KeyCredentialScope, KeyCredentialState,
    RevokeReason,
};
use crate::errors::DomainError;
use crate::ids::{GuestId, KeyCredentialId, ReservationId, RoomId};
use crate::policy::KeyKindPolicy;
use crate::saga::TrackedCredential;
use crate::validity::ValidityWindow;

use KeyCredentialState as S;

/// An operator's command on one credential. The revoke is also what property- and
/// user-wide events and the expiry timer ask of a credential's step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorCommand {
    /// Move an active or suspended key's end and/or rooms.
    Update,
    /// Take the key off every door for good.
    Revoke,
    /// Take an active key off the doors until it is unsuspended.
    Suspend,
    /// Put a suspended key back on its doors.
    Unsuspend,
    /// A guest lost the key: revoke it (`lost`) and issue a new one like it.
    Replace,
}

impl OperatorCommand {
    /// The action's name in an [`DomainError::InvalidStateTransition`].
    pub fn action(self) -> &'static str {
        match self {
            Self::Update => "update",
            Self::Revoke => "revoke",
            Self::Suspend => "suspend",
            Self::Unsuspend => "unsuspend",
            Self::Replace => "replace",
        }
    }

    /// Whether a credential in `state` takes the command (spec `003` §1.3): update,
    /// suspend and replace an active or suspended key (suspending a suspended one is a
    /// no-op), unsuspend only a suspended one, revoke anything but a failed one (revoking
    /// a revoked one is a no-op, a requested one fails mid-flight).
    pub fn accepts(self, state: KeyCredentialState) -> bool {
        match self {
            Self::Update | Self::Suspend | Self::Replace => {
                matches!(state, S::Active | S::Suspended)
            }
            Self::Unsuspend => state == S::Suspended,
            Self::Revoke => state != S::Failed,
        }
    }
}

/// What the rules read of a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredentialFacts {
    /// Its state.
    pub state: KeyCredentialState,
    /// Who holds it.
    pub holder: HolderKind,
    /// Why it was revoked, once revoked.
    pub revoke_reason: Option<RevokeReason>,
    /// The end of its window.
    pub valid_until: Timestamp,
}

impl CredentialFacts {
    /// The facts of `c`.
    pub fn of(c: &KeyCredential) -> Self {
        Self {
            state: c.state(),
            holder: c.holder_kind(),
            revoke_reason: c.revoke_reason(),
            valid_until: c.validity().until(),
        }
    }

    /// Spec `003` §8 `CredentialExpiredError`: the credential's window has ended — it was
    /// revoked `expired`, or `now` is past its `validUntil` before its expiry timer ran.
    pub fn window_ended(&self, now: Timestamp) -> bool {
        self.revoke_reason == Some(RevokeReason::Expired) || self.valid_until <= now
    }
}

/// Why the edge refuses a command before sending it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The credential's window has ended (410 `CREDENTIAL_EXPIRED`).
    Expired,
    /// The state machine never allows the command from this state (422,
    /// `invalid_state_transition`).
    InvalidState {
        /// The credential's state.
        from: KeyCredentialState,
        /// The command.
        command: OperatorCommand,
    },
    /// Only a guest's key is replaced; a master key is renewed by its shift (422).
    NotAGuestKey,
}

impl From<Refusal> for DomainError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Expired => DomainError::CredentialExpired,
            Refusal::InvalidState { from, command } => DomainError::InvalidStateTransition {
                from: from.as_str(),
                action: command.action(),
            },
            Refusal::NotAGuestKey => DomainError::validation(
                "id",
                "only a guest credential is replaced; a master key is renewed by its shift",
            ),
        }
    }
}

/// Whether the edge sends `command` for a credential with `facts` at `now`, checked in
/// this order: a key whose window ended takes no change (revoking it still answers it),
/// then the state machine, then (replace) the holder.
pub fn check_request(
    command: OperatorCommand,
    facts: &CredentialFacts,
    now: Timestamp,
) -> Result<(), Refusal> {
    if command != OperatorCommand::Revoke && facts.window_ended(now) {
        return Err(Refusal::Expired);
    }
    if !command.accepts(facts.state) {
        return Err(Refusal::InvalidState {
            from: facts.state,
            command,
        });
    }
    // I-2/I-3: a guest's key has a reservation, a master's has none
    if command == OperatorCommand::Replace && facts.holder != HolderKind::Guest {
        return Err(Refusal::NotAGuestKey);
    }
    Ok(())
}

/// Why the step did not carry a command out; stored as the command's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No such credential in the tenant.
    UnknownCredential,
    /// The credential moved to a state that does not take the command.
    InvalidState,
    /// K-2: the update extends the key too far.
    K2,
    /// Unsuspend of a credential that is not suspended.
    NotSuspended,
    /// Replace of a key that is not a live guest key.
    NotReplaceable,
}

impl Rejection {
    /// The outcome as stored in the mailbox and read back by the waiting request.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownCredential => "rejected:unknown_credential",
            Self::InvalidState => "rejected:invalid_state",
            Self::K2 => "rejected:k2",
            Self::NotSuspended => "rejected:not_suspended",
            Self::NotReplaceable => "rejected:not_replaceable",
        }
    }

    /// The rejection a stored outcome names, if it names one of these.
    pub fn parse(outcome: &str) -> Option<Self> {
        [
            Self::UnknownCredential,
            Self::InvalidState,
            Self::K2,
            Self::NotSuspended,
            Self::NotReplaceable,
        ]
        .into_iter()
        .find(|r| r.as_str() == outcome)
    }
}

/// What the step does with a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepDecision {
    /// Carry it out (an update then still answers to [`check_extension`]).
    Apply,
    /// A revoke of a credential no vendor call was made for yet: it fails mid-flight.
    FailMidFlight,
    /// Nothing to do (it is already where the command would put it, or gone); the outcome
    /// is `applied`.
    Nothing,
    /// Refuse it.
    Reject(Rejection),
}

/// What the step does with `command` for a credential with `facts` (`None`: no such
/// credential). The credential may have moved since the edge checked it; the answers
/// follow [`OperatorCommand::accepts`], with the outcome each command has always recorded.
pub fn decide(command: OperatorCommand, facts: Option<&CredentialFacts>) -> StepDecision {
    use StepDecision::{Apply, FailMidFlight, Nothing, Reject};
    let Some(facts) = facts else {
        return match command {
            // nothing left to take off a door, nothing to put back
            OperatorCommand::Revoke | OperatorCommand::Unsuspend => Nothing,
            _ => Reject(Rejection::UnknownCredential),
        };
    };
    match command {
        OperatorCommand::Update if command.accepts(facts.state) => Apply,
        OperatorCommand::Update => Reject(Rejection::InvalidState),
        OperatorCommand::Suspend => match facts.state {
            S::Active => Apply,
            S::Suspended => Nothing,
            _ => Reject(Rejection::InvalidState),
        },
        OperatorCommand::Unsuspend if command.accepts(facts.state) => Apply,
        OperatorCommand::Unsuspend => Reject(Rejection::NotSuspended),
        // masters are renewed by their shift; terminal credentials have nothing to replace
        OperatorCommand::Replace
            if command.accepts(facts.state) && facts.holder == HolderKind::Guest =>
        {
            Apply
        }
        OperatorCommand::Replace => Reject(Rejection::NotReplaceable),
        OperatorCommand::Revoke => match facts.state {
            // I-5: no vendor call was made; the request fails rather than being revoked
            S::Requested => FailMidFlight,
            S::Pending | S::Active | S::Suspended => Apply,
            // I-4, I-5: terminal
            S::Revoked | S::Failed => Nothing,
        },
    }
}

/// K-2 for an operator's update to `new_until`: the key may end at most the policy's
/// `maxValidUntilExtensionHours` past the end it was first issued with (`issued_until`,
/// as the stay's saga tracks it), else past its current end. Shortening is always allowed.
pub fn check_extension(
    policy: &KeyKindPolicy,
    issued_until: Option<Timestamp>,
    current_until: Timestamp,
    new_until: Timestamp,
) -> Result<(), Rejection> {
    policy
        .check_extension(issued_until.unwrap_or(current_until), new_until)
        .map_err(|_| Rejection::K2)
}

/// What a lost-key replace creates (spec `003` §1.3 `linkReplacement`): the old key is
/// revoked as [`RevokeReason::Lost`] and a new one of the same kind, rooms, scope and
/// window is issued for the same stay, naming the old one as what it replaces (I-4: the
/// lineage goes both ways).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    /// Why the old key is revoked: a reason `linkReplacement` accepts.
    pub revoke_reason: RevokeReason,
    /// The new key's id (chosen by the caller).
    pub id: KeyCredentialId,
    /// The key it replaces.
    pub replaces: KeyCredentialId,
    /// The stay.
    pub reservation_id: ReservationId,
    /// The guest.
    pub guest_id: GuestId,
    /// Kind, as the old key's.
    pub kind: KeyCredentialKind,
    /// Rooms, as the old key's.
    pub rooms: Vec<RoomId>,
    /// Scope, as the old key's.
    pub scope: KeyCredentialScope,
    /// Window, as the old key's now.
    pub validity: ValidityWindow,
    /// The new request's idempotency key: the same for a redelivered command, so it
    /// requests one key, not two.
    pub idempotency_key: String,
}

impl Replacement {
    /// The new key as the stay's saga tracks it: requested, its K-2 base the window it is
    /// issued with.
    pub fn tracked(&self) -> TrackedCredential {
        TrackedCredential {
            id: self.id.clone(),
            kind: self.kind,
            state: S::Requested,
            failure_reason: None,
            validity: self.validity,
            rooms: self.rooms.clone(),
            issued_until: self.validity.until(),
        }
    }
}

/// The replacement of `old` (which [`decide`] let through), as `new_id`, in the step of
/// the subject stored as `subject_key`. A guest key without its stay is refused (I-2).
pub fn replacement(
    old: &KeyCredential,
    new_id: KeyCredentialId,
    subject_key: &str,
) -> Result<Replacement, DomainError> {
    let (Some(reservation_id), Some(guest_id)) =
        (old.reservation_id().cloned(), old.guest_id().cloned())
    else {
        return Err(DomainError::validation(
            "reservationId",
            "guest credential without reservation (I-2)",
        ));
    };
    Ok(Replacement {
        revoke_reason: RevokeReason::Lost,
        id: new_id,
        replaces: old.id().clone(),
        reservation_id,
        guest_id,
        kind: old.kind(),
        rooms: old.rooms().to_vec(),
        scope: old.scope().clone(),
        validity: old.validity(),
        idempotency_key: format!("{subject_key}:replace:{}", old.id()),
    })
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::*;
    use crate::credential::{IssueIntent, ScopedRoom, VendorCode};
    use crate::ids::{KeyKindPolicyId, PropertyId, TenantId, VendorAdapterId};

    const ALL: [KeyCredentialState; 6] = [
        S::Requested,
        S::Pending,
        S::Active,
        S::Suspended,
        S::Revoked,
        S::Failed,
    ];
    const COMMANDS: [OperatorCommand; 5] = [
        OperatorCommand::Update,
        OperatorCommand::Revoke,
        OperatorCommand::Suspend,
        OperatorCommand::Unsuspend,
        OperatorCommand::Replace,
    ];

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 5, 2, 9, 0, 0).unwrap()
    }

    fn facts(state: KeyCredentialState) -> CredentialFacts {
        CredentialFacts {
            state,
            holder: HolderKind::Guest,
            revoke_reason: None,
            valid_until: now() + Duration::hours(26),
        }
    }

    fn master(state: KeyCredentialState) -> CredentialFacts {
        CredentialFacts {
            holder: HolderKind::StaffMaster,
            ..facts(state)
        }
    }

    /// The states each command is accepted from, in [`ALL`]'s order.
    fn accepted(command: OperatorCommand) -> Vec<KeyCredentialState> {
        ALL.into_iter().filter(|s| command.accepts(*s)).collect()
    }

    #[test]
    fn each_command_is_accepted_only_from_the_states_spec_003_allows() {
        // spec 003 §1.3: update active|suspended; suspend active (suspended: no-op);
        // unsuspend suspended; revoke active|suspended|pending (revoked: no-op, requested:
        // fails mid-flight; I-5: failed is terminal)
        assert_eq!(accepted(OperatorCommand::Update), [S::Active, S::Suspended]);
        assert_eq!(
            accepted(OperatorCommand::Suspend),
            [S::Active, S::Suspended]
        );
        assert_eq!(accepted(OperatorCommand::Unsuspend), [S::Suspended]);
        assert_eq!(
            accepted(OperatorCommand::Replace),
            [S::Active, S::Suspended]
        );
        assert_eq!(
            accepted(OperatorCommand::Revoke),
            [
                S::Requested,
                S::Pending,
                S::Active,
                S::Suspended,
                S::Revoked
            ]
        );
    }

    #[test]
    fn the_edge_refuses_a_command_the_state_machine_never_allows_from_the_state() {
        let refusal = check_request(OperatorCommand::Unsuspend, &facts(S::Active), now());
        assert_eq!(
            refusal,
            Err(Refusal::InvalidState {
                from: S::Active,
                command: OperatorCommand::Unsuspend
            })
        );
        let err = DomainError::from(refusal.unwrap_err());
        assert_eq!(err.http_status(), 422);
        assert_eq!(err.sub_code(), Some("invalid_state_transition"));
        assert_eq!(
            err,
            DomainError::InvalidStateTransition {
                from: "active",
                action: "unsuspend"
            }
        );
        for c in COMMANDS {
            for s in ALL {
                assert_eq!(
                    check_request(c, &facts(s), now()).is_ok(),
                    c.accepts(s),
                    "{c:?} from {s:?}"
                );
            }
        }
    }

    #[test]
    fn a_key_whose_window_ended_takes_no_change_but_a_revoke_still_answers() {
        // spec 003 §8 CredentialExpiredError: past its end, or revoked as expired
        let past = CredentialFacts {
            valid_until: now(),
            ..facts(S::Active)
        };
        let expired = CredentialFacts {
            revoke_reason: Some(RevokeReason::Expired),
            ..facts(S::Revoked)
        };
        for c in [
            OperatorCommand::Update,
            OperatorCommand::Suspend,
            OperatorCommand::Unsuspend,
            OperatorCommand::Replace,
        ] {
            assert_eq!(
                check_request(c, &past, now()),
                Err(Refusal::Expired),
                "{c:?}"
            );
            // 410 before the state's 422
            assert_eq!(
                check_request(c, &expired, now()),
                Err(Refusal::Expired),
                "{c:?}"
            );
        }
        assert_eq!(check_request(OperatorCommand::Revoke, &past, now()), Ok(()));
        assert_eq!(
            check_request(OperatorCommand::Revoke, &expired, now()),
            Ok(())
        );
        assert_eq!(
            DomainError::from(Refusal::Expired).http_status(),
            410,
            "CREDENTIAL_EXPIRED"
        );
        // one instant before its end the key still takes a change
        let ends_soon = CredentialFacts {
            valid_until: now() + Duration::seconds(1),
            ..facts(S::Active)
        };
        assert_eq!(
            check_request(OperatorCommand::Suspend, &ends_soon, now()),
            Ok(())
        );
    }

    #[test]
    fn only_a_guest_key_is_replaced_a_master_is_renewed_by_its_shift() {
        // I-3: a master key has no reservation to issue a replacement for
        assert_eq!(
            check_request(OperatorCommand::Replace, &master(S::Active), now()),
            Err(Refusal::NotAGuestKey)
        );
        assert_eq!(DomainError::from(Refusal::NotAGuestKey).http_status(), 422);
        // the state is refused first
        assert!(matches!(
            check_request(OperatorCommand::Replace, &master(S::Revoked), now()),
            Err(Refusal::InvalidState { .. })
        ));
        // the other commands take a master
        assert_eq!(
            check_request(OperatorCommand::Suspend, &master(S::Active), now()),
            Ok(())
        );
        assert_eq!(
            decide(OperatorCommand::Replace, Some(&master(S::Active))),
            StepDecision::Reject(Rejection::NotReplaceable)
        );
    }

    #[test]
    fn the_step_refuses_a_credential_that_moved_on_with_the_commands_outcome() {
        use StepDecision::{Apply, Nothing, Reject};
        let step = |c, s| decide(c, Some(&facts(s)));
        for s in ALL {
            let ok = matches!(s, S::Active | S::Suspended);
            assert_eq!(
                step(OperatorCommand::Update, s),
                if ok {
                    Apply
                } else {
                    Reject(Rejection::InvalidState)
                },
                "update from {s:?}"
            );
            assert_eq!(
                step(OperatorCommand::Replace, s),
                if ok {
                    Apply
                } else {
                    Reject(Rejection::NotReplaceable)
                },
                "replace from {s:?}"
            );
            assert_eq!(
                step(OperatorCommand::Unsuspend, s),
                if s == S::Suspended {
                    Apply
                } else {
                    Reject(Rejection::NotSuspended)
                },
                "unsuspend from {s:?}"
            );
        }
        // suspending a suspended key is a no-op, not a refusal
        assert_eq!(step(OperatorCommand::Suspend, S::Active), Apply);
        assert_eq!(step(OperatorCommand::Suspend, S::Suspended), Nothing);
        for s in [S::Requested, S::Pending, S::Revoked, S::Failed] {
            assert_eq!(
                step(OperatorCommand::Suspend, s),
                Reject(Rejection::InvalidState),
                "suspend from {s:?}"
            );
        }
    }

    #[test]
    fn a_revoke_fails_a_requested_key_and_leaves_a_terminal_one_alone() {
        use StepDecision::{Apply, FailMidFlight, Nothing};
        let step = |s| decide(OperatorCommand::Revoke, Some(&facts(s)));
        // I-5: requested → failed, never revoked (spec 003 §1.3 revoke: active|suspended|pending)
        assert_eq!(step(S::Requested), FailMidFlight);
        for s in [S::Pending, S::Active, S::Suspended] {
            assert_eq!(step(s), Apply, "{s:?}");
        }
        // I-4, I-5: terminal states have no way out
        assert_eq!(step(S::Revoked), Nothing);
        assert_eq!(step(S::Failed), Nothing);
    }

    #[test]
    fn a_command_for_an_unknown_credential_is_refused_unless_nothing_was_to_be_done() {
        use StepDecision::{Nothing, Reject};
        for c in [
            OperatorCommand::Update,
            OperatorCommand::Suspend,
            OperatorCommand::Replace,
        ] {
            assert_eq!(
                decide(c, None),
                Reject(Rejection::UnknownCredential),
                "{c:?}"
            );
        }
        assert_eq!(decide(OperatorCommand::Revoke, None), Nothing);
        assert_eq!(decide(OperatorCommand::Unsuspend, None), Nothing);
    }

    #[test]
    fn rejections_keep_the_outcome_strings_stored_today() {
        let all = [
            (Rejection::UnknownCredential, "rejected:unknown_credential"),
            (Rejection::InvalidState, "rejected:invalid_state"),
            (Rejection::K2, "rejected:k2"),
            (Rejection::NotSuspended, "rejected:not_suspended"),
            (Rejection::NotReplaceable, "rejected:not_replaceable"),
        ];
        for (r, s) in all {
            assert_eq!(r.as_str(), s);
            assert_eq!(Rejection::parse(s), Some(r));
        }
        assert_eq!(Rejection::parse("applied"), None);
        assert_eq!(Rejection::parse("rejected:malformed_subject"), None);
    }

    fn policy(max_hours: i64) -> KeyKindPolicy {
        KeyKindPolicy::new(crate::policy::KeyKindPolicyInput {
            id: KeyKindPolicyId::from_ulid(ulid::Ulid::nil()),
            tenant_id: tenant(),
            property_id: property(),
            preferred_order: vec![KeyCredentialKind::PinCode],
            fallback_chain: vec![KeyCredentialKind::MobileApp],
            max_valid_until_extension_hours: Some(max_hours),
            id_verify_required_for: vec![],
            no_show_suspend_after_hours: None,
            allow_offline_issuance_kinds: vec![],
            updated_at: now(),
        })
        .expect("a valid policy")
    }

    #[test]
    fn k2_caps_an_extension_from_the_end_the_key_was_first_issued_with() {
        // K-2: maxValidUntilExtensionHours past the validUntil it was issued with
        let p = policy(168);
        let first = now();
        let extended = first + Duration::hours(100);
        // from the current (already extended) end another 100 h would be within 168 h,
        // but not from the first end
        assert_eq!(
            check_extension(&p, Some(first), extended, extended + Duration::hours(100)),
            Err(Rejection::K2)
        );
        assert_eq!(
            check_extension(&p, Some(first), extended, first + Duration::hours(168)),
            Ok(())
        );
        // no saga tracks the first end: the current end is the base
        assert_eq!(
            check_extension(&p, None, extended, extended + Duration::hours(100)),
            Ok(())
        );
        assert_eq!(
            check_extension(&p, None, first, first + Duration::hours(169)),
            Err(Rejection::K2)
        );
        // shortening is always allowed, even past a cap of zero
        assert_eq!(
            check_extension(&policy(0), Some(first), first, first - Duration::hours(5)),
            Ok(())
        );
        assert_eq!(
            check_extension(&policy(0), Some(first), first, first + Duration::seconds(1)),
            Err(Rejection::K2)
        );
    }

    fn tenant() -> TenantId {
        TenantId::parse("5f0c7a4e-7a2b-4c1d-9e8f-0a1b2c3d4e5f").expect("fixed tenant is a uuid")
    }

    fn property() -> PropertyId {
        PropertyId::parse("ppt_01").expect("fixed property id is valid")
    }

    fn guest_key(holder: HolderKind) -> KeyCredential {
        let guest = holder == HolderKind::Guest;
        let rooms = ["rmu_101", "rmu_102"].map(|r| ScopedRoom {
            tenant_id: tenant(),
            property_id: property(),
            room_id: RoomId::parse(r).expect("valid room"),
        });
        KeyCredential::request(
            IssueIntent {
                id: KeyCredentialId::from_ulid(ulid::Ulid::from_parts(1, 1)),
                tenant_id: tenant(),
                property_id: property(),
                holder_kind: holder,
                reservation_id: guest.then(|| ReservationId::parse("rsv_01").unwrap()),
                guest_id: guest.then(|| GuestId::parse("gst_01").unwrap()),
                staff_user_id: (!guest).then(|| crate::ids::UserId::parse("usr_01").unwrap()),
                kind: KeyCredentialKind::PinCode,
                rooms: rooms.to_vec(),
                scope: KeyCredentialScope {
                    floors: vec!["2".into()],
                    areas: vec![],
                },
                validity: ValidityWindow::new(
                    now() - Duration::hours(20),
                    now() + Duration::hours(26),
                )
                .expect("a valid window"),
                vendor: VendorCode::Ttlock,
                vendor_adapter_id: VendorAdapterId::from_ulid(ulid::Ulid::from_parts(1, 2)),
                provisional: false,
                idempotency_key: "reservation:rsv_01:first".into(),
                replaces_id: None,
                trace_id: None,
            },
            now() - Duration::hours(21),
        )
        .expect("a valid credential")
    }

    #[test]
    fn a_replacement_is_the_same_key_for_the_same_stay_naming_the_lost_one() {
        let old = guest_key(HolderKind::Guest);
        let new_id = KeyCredentialId::from_ulid(ulid::Ulid::from_parts(1, 3));
        let r = replacement(&old, new_id.clone(), "reservation:rsv_01").expect("a guest key");
        assert_eq!(r.id, new_id);
        assert_eq!(r.replaces, *old.id(), "I-4: lineage");
        assert_eq!(r.reservation_id.as_str(), "rsv_01");
        assert_eq!(r.guest_id.as_str(), "gst_01");
        assert_eq!(r.kind, old.kind());
        assert_eq!(r.rooms, old.rooms());
        assert_eq!(r.scope, *old.scope());
        assert_eq!(r.validity, old.validity());
        // the saga follows the new key from `requested`; its K-2 base is its own window
        let t = r.tracked();
        assert_eq!(
            (t.id, t.state, t.issued_until),
            (new_id, S::Requested, old.validity().until())
        );
        assert_eq!(t.rooms, old.rooms());
    }

    #[test]
    fn the_lost_key_is_revoked_for_a_reason_that_takes_the_lineage_link() {
        // spec 003 §1.3: linkReplacement only when revoked as lost or replaced (I-4)
        let mut old = guest_key(HolderKind::Guest);
        old.mark_pending(now()).unwrap();
        old.mark_active(now()).unwrap();
        let new_id = KeyCredentialId::from_ulid(ulid::Ulid::from_parts(1, 3));
        let r = replacement(&old, new_id.clone(), "reservation:rsv_01").unwrap();
        assert_eq!(r.revoke_reason, RevokeReason::Lost);
        old.revoke(r.revoke_reason, now()).unwrap();
        assert!(old.link_replacement(new_id, now()).is_ok());
    }

    #[test]
    fn a_redelivered_replace_requests_the_same_key() {
        let old = guest_key(HolderKind::Guest);
        let id = |n| KeyCredentialId::from_ulid(ulid::Ulid::from_parts(1, n));
        let a = replacement(&old, id(3), "reservation:rsv_01").unwrap();
        let b = replacement(&old, id(4), "reservation:rsv_01").unwrap();
        assert_eq!(a.idempotency_key, b.idempotency_key);
        assert_eq!(
            a.idempotency_key,
            format!("reservation:rsv_01:replace:{}", old.id())
        );
    }

    #[test]
    fn a_key_without_a_stay_gets_no_replacement() {
        // I-2: a replacement is a guest key and needs the stay's reservation and guest
        let old = guest_key(HolderKind::StaffMaster);
        let new_id = KeyCredentialId::from_ulid(ulid::Ulid::from_parts(1, 3));
        assert!(replacement(&old, new_id, "shift:shf_01").is_err());
    }
}
