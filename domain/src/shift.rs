//! The shift saga (spec `002`: `staff.shift.started` → issue a master key, shift-bound and
//! scope-bounded; `staff.shift.ended` → revoke it; `iam.user.deactivated` → revoke any
//! active master of the user). Keyed by subject `shift:<shift id>` (DESIGN §12). Like the
//! reservation saga it records facts and what it commanded, so every input is idempotent
//! and order does not matter: an end (or a deactivation) before the start means no key.
//!
//! The actor refreshes [`TrackedMaster::state`] from the credential row before deciding
//! (the saga only knows what it commanded), and resolves the scope into rooms with
//! [`crate::master::resolve_scope`] when it carries out [`ShiftCommand::IssueMaster`].

use crate::credential::{KeyCredentialState, RevokeReason};
use crate::ids::{KeyCredentialId, MasterKeyId, ShiftId, UserId};
use crate::master::{MasterScope, MasterScopeKind};
use crate::saga::Ignored;
use crate::validity::ValidityWindow;

/// The saga subject of a shift (tenant-less: the tenant is beside it in storage).
pub fn subject_for_shift(id: &ShiftId) -> String {
    crate::subject::SagaSubject::Shift(id.clone()).to_string()
}

/// The facts of `staff.shift.started`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShiftStart {
    /// Shift.
    pub shift_id: ShiftId,
    /// Staff member.
    pub staff_user_id: UserId,
    /// Scope of the master key.
    pub scope: MasterScope,
    /// The shift's window: the master's validity (shift-bound).
    pub validity: ValidityWindow,
}

/// The master key the saga commanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedMaster {
    /// Master key record.
    pub master_key_id: MasterKeyId,
    /// Its credential (M-1: `staff_master`).
    pub credential_id: KeyCredentialId,
    /// The credential's state, as commanded or refreshed from its row.
    pub state: KeyCredentialState,
}

/// Where the saga of one shift stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShiftSaga {
    /// The start, once seen.
    pub started: Option<ShiftStart>,
    /// `staff.shift.ended` seen: final.
    pub ended: bool,
    /// A deactivation of this staff member seen (final for this shift).
    pub deactivated_user: Option<UserId>,
    /// The master key commanded.
    pub master: Option<TrackedMaster>,
}

/// One input of the shift saga.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShiftEvent {
    /// `staff.shift.started.v1`.
    Started {
        /// Shift.
        shift_id: ShiftId,
        /// Staff member.
        staff_user_id: UserId,
        /// Scope.
        scope: MasterScope,
        /// Shift window.
        validity: ValidityWindow,
    },
    /// `staff.shift.ended.v1`.
    Ended {
        /// Shift.
        shift_id: ShiftId,
    },
    /// `iam.user.deactivated.v1`, fanned out to the user's shifts (DESIGN §4).
    UserDeactivated {
        /// The user.
        staff_user_id: UserId,
    },
}

/// Another active master of the same staff member at the same property (for M-2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveMaster {
    /// Record.
    pub master_key_id: MasterKeyId,
    /// Credential.
    pub credential_id: KeyCredentialId,
    /// Scope kind.
    pub scope_kind: MasterScopeKind,
}

/// What `decide_shift` needs besides state and input.
#[derive(Clone, Debug)]
pub struct ShiftContext {
    /// The credential id to use if this decision issues.
    pub new_credential_id: KeyCredentialId,
    /// The master key id to use if this decision issues.
    pub new_master_key_id: MasterKeyId,
    /// The staff member's active masters at this property, from other shifts (M-2).
    pub active_masters: Vec<ActiveMaster>,
}

/// What the shift saga wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShiftCommand {
    /// Request a `staff_master` credential and its `MasterKey` record, valid for the shift.
    IssueMaster {
        /// Credential id.
        credential_id: KeyCredentialId,
        /// Master key id.
        master_key_id: MasterKeyId,
        /// Shift.
        shift_id: ShiftId,
        /// Staff member.
        staff_user_id: UserId,
        /// Scope (the actor resolves it into rooms/floors/areas).
        scope: MasterScope,
        /// The shift's window.
        validity: ValidityWindow,
        /// The master of an earlier shift this one replaces (M-2 revoke + re-issue chain).
        replaces: Option<KeyCredentialId>,
    },
    /// Revoke a master's credential (and delete it at the vendor).
    RevokeMaster {
        /// Which.
        credential_id: KeyCredentialId,
        /// Why: `expired` at shift end (`master_key.expired.v1`), `security` on user
        /// deactivation, `replaced` for the M-2 renewal chain.
        reason: RevokeReason,
    },
    /// The master never reached the vendor: fail it as `cancelled_mid_flight`.
    FailMasterMidFlight {
        /// Which.
        credential_id: KeyCredentialId,
    },
}

/// The decision for one input.
// A decision lives for one step and is matched at once; boxing the state buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShiftDecision {
    /// Carry out these commands and store the new state.
    Apply {
        /// New state.
        next: ShiftSaga,
        /// Commands, in order.
        commands: Vec<ShiftCommand>,
    },
    /// Record the input as ignored.
    Ignore(Ignored),
}

/// Ends the tracked master, if live.
fn end_master(s: &mut ShiftSaga, reason: RevokeReason) -> Vec<ShiftCommand> {
    let Some(m) = &mut s.master else {
        return vec![];
    };
    match m.state {
        KeyCredentialState::Requested => {
            m.state = KeyCredentialState::Failed;
            vec![ShiftCommand::FailMasterMidFlight {
                credential_id: m.credential_id.clone(),
            }]
        }
        KeyCredentialState::Pending
        | KeyCredentialState::Active
        | KeyCredentialState::Suspended => {
            m.state = KeyCredentialState::Revoked;
            vec![ShiftCommand::RevokeMaster {
                credential_id: m.credential_id.clone(),
                reason,
            }]
        }
        KeyCredentialState::Revoked | KeyCredentialState::Failed => vec![],
    }
}

/// Decides what one input does to a shift's master key.
pub fn decide_shift(state: &ShiftSaga, event: &ShiftEvent, ctx: &ShiftContext) -> ShiftDecision {
    let mut next = state.clone();
    let mut commands = vec![];
    match event {
        ShiftEvent::Started {
            shift_id,
            staff_user_id,
            scope,
            validity,
        } => {
            if state.started.is_some() {
                return ShiftDecision::Ignore(Ignored::Duplicate);
            }
            next.started = Some(ShiftStart {
                shift_id: shift_id.clone(),
                staff_user_id: staff_user_id.clone(),
                scope: scope.clone(),
                validity: *validity,
            });
            let deactivated = state.deactivated_user.as_ref() == Some(staff_user_id);
            // An end or a deactivation seen before the start: no key, ever.
            if !state.ended && !deactivated {
                // M-2: a master of the same scope kind from another shift is revoked
                // (replaced) before this one is issued: the explicit renewal chain.
                let mut replaces = None;
                for old in ctx
                    .active_masters
                    .iter()
                    .filter(|m| m.scope_kind == scope.kind())
                {
                    commands.push(ShiftCommand::RevokeMaster {
                        credential_id: old.credential_id.clone(),
                        reason: RevokeReason::Replaced,
                    });
                    replaces = Some(old.credential_id.clone());
                }
                next.master = Some(TrackedMaster {
                    master_key_id: ctx.new_master_key_id.clone(),
                    credential_id: ctx.new_credential_id.clone(),
                    state: KeyCredentialState::Requested,
                });
                commands.push(ShiftCommand::IssueMaster {
                    credential_id: ctx.new_credential_id.clone(),
                    master_key_id: ctx.new_master_key_id.clone(),
                    shift_id: shift_id.clone(),
                    staff_user_id: staff_user_id.clone(),
                    scope: scope.clone(),
                    validity: *validity,
                    replaces,
                });
            }
        }
        ShiftEvent::Ended { .. } => {
            if state.ended {
                return ShiftDecision::Ignore(Ignored::AlreadyEnded);
            }
            next.ended = true;
            commands = end_master(&mut next, RevokeReason::Expired);
        }
        ShiftEvent::UserDeactivated { staff_user_id } => {
            if let Some(start) = &state.started {
                if &start.staff_user_id != staff_user_id {
                    return ShiftDecision::Ignore(Ignored::UnknownCredential);
                }
            }
            if state.deactivated_user.as_ref() == Some(staff_user_id) {
                return ShiftDecision::Ignore(Ignored::Duplicate);
            }
            next.deactivated_user = Some(staff_user_id.clone());
            commands = end_master(&mut next, RevokeReason::Security);
        }
    }
    if commands.is_empty() && next == *state {
        return ShiftDecision::Ignore(Ignored::Duplicate);
    }
    ShiftDecision::Apply { next, commands }
}
