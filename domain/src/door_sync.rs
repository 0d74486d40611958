//! The door-sync plan: given what Lockstep knows of each door for one credential (its
//! door-truth rows), which door the drive works next and what it does there. The rules:
//!
//! - **Removals first** (issue 11): of the doors still pending, a key that must leave a
//!   door goes before one that must reach a door.
//! - **Find before retry** (DESIGN §3.4): an issue that may have reached the vendor (an
//!   attempt was committed before it) is looked up before it is sent again or, for a
//!   removal, before the door is taken to hold nothing; one never sent is not looked for.
//! - **Attempt cap**: an issue whose attempts are spent fails (`vendor_unreachable`; a
//!   failed credential is terminal, I-5, and the saga falls back to another kind), unless
//!   the vendor's account holds new keys (a wait costs no attempt) or the credential is
//!   active (a door added to an active key, or one it is put back on after drift, keeps
//!   trying: the key is not taken off the doors that hold it).
//! - **PIN collision** (spec `002`): a refused PIN is regenerated, up to
//!   [`MAX_PIN_COLLISIONS`]; then the credential fails and the saga switches kind.
//! - **Activation**: a pending credential becomes active when every one of its doors holds
//!   it.
//!
//! The actors' drive carries the plan out (vendor calls, commits); what it does with a
//! vendor's answer stays there.

use crate::credential::KeyCredentialState;
use crate::ids::LockDeviceId;

/// PIN collisions tolerated before the credential fails (spec `002`, "PIN collision": max
/// 3 attempts, then switch kind).
pub const MAX_PIN_COLLISIONS: i32 = 3;

/// Where a door stands with the vendor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoorSync {
    /// Not yet confirmed by the vendor.
    Pending,
    /// Confirmed.
    Confirmed,
    /// Given up.
    Failed,
}

/// One door-truth row, as far as the plan depends on it.
#[derive(Clone, Copy, Debug)]
pub struct DoorRow<'a> {
    /// The door.
    pub device: &'a LockDeviceId,
    /// The door should hold the key (`false`: it should not).
    pub present: bool,
    /// Where the door stands with the vendor.
    pub sync: DoorSync,
    /// Issue attempts committed before a vendor call: each may have reached the vendor.
    pub attempts: i32,
    /// The vendor's object for the key at this door is known.
    pub has_vendor_ref: bool,
}

impl DoorRow<'_> {
    fn holds(&self) -> bool {
        self.present && self.sync == DoorSync::Confirmed
    }
}

/// Which door the drive works next (an index into `rows`): of the doors still pending, a
/// removal before any addition, then in device order. `None` when every door agrees.
pub fn next_door(rows: &[DoorRow<'_>]) -> Option<usize> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| r.sync == DoorSync::Pending)
        .min_by_key(|(_, r)| (r.present, r.device))
        .map(|(i, _)| i)
}

/// How a key leaves a door.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Delete the vendor's object.
    Delete,
    /// An issue may have reached the vendor and its answer was lost: look it up, and
    /// delete what is found.
    FindThenDelete,
    /// Nothing was ever sent to this door: it holds nothing.
    NothingThere,
}

/// What the drive does at the door it works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoorPlan {
    /// The key must leave the door: because the row says so, or because the credential
    /// no longer holds it anywhere (suspended, revoked, failed).
    Remove(Removal),
    /// The vendor holds the key's object: move its window. If the vendor no longer has it
    /// (removed while suspended), issue it.
    Update,
    /// Put the key on the door ([`issue_lookup`]: look for an earlier attempt first?).
    Issue,
}

/// The plan for `row` of a credential in `state`.
pub fn plan_door(row: &DoorRow<'_>, state: KeyCredentialState) -> DoorPlan {
    let holds = matches!(
        state,
        KeyCredentialState::Requested | KeyCredentialState::Pending | KeyCredentialState::Active
    );
    if !row.present || !holds {
        return DoorPlan::Remove(if row.has_vendor_ref {
            Removal::Delete
        } else if row.attempts > 0 {
            Removal::FindThenDelete
        } else {
            Removal::NothingThere
        });
    }
    if row.has_vendor_ref {
        DoorPlan::Update
    } else {
        DoorPlan::Issue
    }
}

/// Whether an issue at `row` is looked up at the vendor before it is sent: when an attempt
/// was committed before, unless it is `fresh` (the decision's intent, committed in this
/// drain and never sent: there is nothing to look for).
pub fn issue_lookup(row: &DoorRow<'_>, fresh: bool) -> bool {
    row.attempts > 0 && !fresh
}

/// What happens just before an issue call (after any lookup found nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeforeIssue<W> {
    /// The vendor's account takes no new keys now (it drains its removals, or it is held,
    /// for the gate's reason `W`): wait, spending no attempt.
    Park(W),
    /// The attempts are spent: the credential fails as `vendor_unreachable`.
    BudgetSpent,
    /// Call the vendor; commit the intent (and an attempt) first unless the decision
    /// committed it already (`fresh`).
    Call {
        /// Commit the intent and the attempt before the call.
        commit_intent: bool,
    },
}

/// Decides [`BeforeIssue`] for a row with `attempts` of `max_attempts`, a credential in
/// `state`, and the account's gate (`held`: why it takes no new keys now, if it does not).
/// Attempts count calls that reached the vendor, never waits, so a long outage costs no
/// budget.
pub fn before_issue<W>(
    held: Option<W>,
    attempts: i32,
    max_attempts: i32,
    state: KeyCredentialState,
    fresh: bool,
) -> BeforeIssue<W> {
    if let Some(why) = held {
        BeforeIssue::Park(why)
    } else if attempts >= max_attempts && state != KeyCredentialState::Active {
        BeforeIssue::BudgetSpent
    } else {
        BeforeIssue::Call {
            commit_intent: !fresh,
        }
    }
}

/// After the vendor refused a PIN as taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinCollision {
    /// The refused call created nothing: a fresh PIN, attempts reset.
    Regenerate,
    /// Too many collisions: the credential fails (`pin_collision_exhausted`).
    Exhausted,
}

/// What follows the `collisions`-th collision (counting this one).
pub fn after_pin_collision(collisions: i32) -> PinCollision {
    if collisions >= MAX_PIN_COLLISIONS {
        PinCollision::Exhausted
    } else {
        PinCollision::Regenerate
    }
}

/// Whether a credential in `state` becomes active: it is pending and every door holds it,
/// `just_confirmed` (the door whose issue the vendor just confirmed) counting as holding.
pub fn activates(
    state: KeyCredentialState,
    rows: &[DoorRow<'_>],
    just_confirmed: Option<&LockDeviceId>,
) -> bool {
    state == KeyCredentialState::Pending
        && rows
            .iter()
            .all(|r| Some(r.device) == just_confirmed || r.holds())
}

/// Whether a door that must lose the key can be taken to hold nothing without a vendor
/// call: no object is known there, and nothing was sent (no attempt, or the decision's
/// fresh intent was taken back before it was sent).
pub fn holds_nothing(attempts: i32, has_vendor_ref: bool, never_sent: bool) -> bool {
    (attempts == 0 || never_sent) && !has_vendor_ref
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeyCredentialState as S;

    fn device(n: u8) -> LockDeviceId {
        LockDeviceId::from_ulid(ulid::Ulid::from_parts(0, u128::from(n)))
    }

    fn row(device: &LockDeviceId) -> DoorRow<'_> {
        DoorRow {
            device,
            present: true,
            sync: DoorSync::Pending,
            attempts: 0,
            has_vendor_ref: false,
        }
    }

    #[test]
    fn a_removal_goes_before_any_addition_then_device_order() {
        let (a, b, c) = (device(1), device(2), device(3));
        let rows = [
            row(&a),
            DoorRow {
                present: false,
                ..row(&c)
            },
            row(&b),
        ];
        // the removal at the last door goes before the additions at earlier ones
        assert_eq!(next_door(&rows), Some(1));
        // among additions, device order, not row order
        let rows = [row(&b), row(&a)];
        assert_eq!(next_door(&rows), Some(1));
        let rows = [
            DoorRow {
                present: false,
                ..row(&b)
            },
            DoorRow {
                present: false,
                ..row(&a)
            },
        ];
        assert_eq!(next_door(&rows), Some(1));
    }

    #[test]
    fn only_pending_doors_are_worked_and_none_when_all_agree() {
        let (a, b) = (device(1), device(2));
        let confirmed_removal = DoorRow {
            present: false,
            sync: DoorSync::Confirmed,
            ..row(&a)
        };
        let failed = DoorRow {
            sync: DoorSync::Failed,
            ..row(&a)
        };
        assert_eq!(next_door(&[confirmed_removal, row(&b)]), Some(1));
        assert_eq!(next_door(&[failed, row(&b)]), Some(1));
        assert_eq!(next_door(&[confirmed_removal, failed]), None);
        assert_eq!(next_door(&[]), None);
    }

    #[test]
    fn a_removal_looks_up_what_an_earlier_attempt_may_have_left() {
        let a = device(1);
        let gone = |attempts, has_vendor_ref| DoorRow {
            present: false,
            attempts,
            has_vendor_ref,
            ..row(&a)
        };
        assert_eq!(
            plan_door(&gone(2, true), S::Revoked),
            DoorPlan::Remove(Removal::Delete)
        );
        assert_eq!(
            plan_door(&gone(1, false), S::Revoked),
            DoorPlan::Remove(Removal::FindThenDelete)
        );
        assert_eq!(
            plan_door(&gone(0, false), S::Revoked),
            DoorPlan::Remove(Removal::NothingThere)
        );
    }

    #[test]
    fn a_credential_that_holds_no_door_leaves_even_a_door_marked_present() {
        let a = device(1);
        let there = DoorRow {
            has_vendor_ref: true,
            ..row(&a)
        };
        for state in [S::Suspended, S::Revoked, S::Failed] {
            assert_eq!(
                plan_door(&there, state),
                DoorPlan::Remove(Removal::Delete),
                "{state:?}"
            );
        }
        for state in [S::Requested, S::Pending, S::Active] {
            assert_eq!(plan_door(&there, state), DoorPlan::Update, "{state:?}");
        }
    }

    #[test]
    fn an_issue_that_may_have_landed_is_found_before_it_is_sent_again() {
        let a = device(1);
        let tried = DoorRow {
            attempts: 1,
            ..row(&a)
        };
        assert_eq!(plan_door(&tried, S::Pending), DoorPlan::Issue);
        assert!(issue_lookup(&tried, false));
        // the decision's intent of this drain was never sent: nothing to look for
        assert!(!issue_lookup(&tried, true));
        assert_eq!(plan_door(&row(&a), S::Requested), DoorPlan::Issue);
        assert!(!issue_lookup(&row(&a), false));
        // an update the vendor no longer knows is issued the same way
        let updated = DoorRow {
            has_vendor_ref: true,
            ..tried
        };
        assert!(issue_lookup(&updated, false));
        assert!(!issue_lookup(&updated, true));
    }

    #[test]
    fn the_attempt_cap_fails_an_issue_but_never_a_wait_or_an_active_key() {
        assert_eq!(
            before_issue(None::<&str>, 40, 40, S::Pending, false),
            BeforeIssue::BudgetSpent
        );
        assert_eq!(
            before_issue(None::<&str>, 41, 40, S::Requested, false),
            BeforeIssue::BudgetSpent
        );
        assert_eq!(
            before_issue(None::<&str>, 39, 40, S::Pending, false),
            BeforeIssue::Call {
                commit_intent: true
            }
        );
        // a held account parks, spent budget or not
        assert_eq!(
            before_issue(Some("held"), 40, 40, S::Pending, false),
            BeforeIssue::Park("held")
        );
        assert_eq!(
            before_issue(Some("draining"), 0, 40, S::Pending, true),
            BeforeIssue::Park("draining")
        );
        // an active key is never failed by the cap: its other doors hold it
        assert_eq!(
            before_issue(None::<&str>, 40, 40, S::Active, false),
            BeforeIssue::Call {
                commit_intent: true
            }
        );
    }

    #[test]
    fn the_intent_is_committed_before_the_call_unless_the_decision_did() {
        assert_eq!(
            before_issue(None::<&str>, 1, 40, S::Pending, true),
            BeforeIssue::Call {
                commit_intent: false
            }
        );
        assert_eq!(
            before_issue(None::<&str>, 0, 40, S::Requested, false),
            BeforeIssue::Call {
                commit_intent: true
            }
        );
    }

    #[test]
    fn a_pin_collision_regenerates_up_to_three_times() {
        assert_eq!(MAX_PIN_COLLISIONS, 3, "spec 002: max 3 attempts");
        assert_eq!(after_pin_collision(1), PinCollision::Regenerate);
        assert_eq!(after_pin_collision(2), PinCollision::Regenerate);
        assert_eq!(after_pin_collision(3), PinCollision::Exhausted);
        assert_eq!(after_pin_collision(4), PinCollision::Exhausted);
    }

    #[test]
    fn a_pending_credential_activates_when_every_door_holds_it() {
        let (a, b) = (device(1), device(2));
        let held = |d| DoorRow {
            sync: DoorSync::Confirmed,
            ..row(d)
        };
        assert!(activates(S::Pending, &[held(&a), held(&b)], None));
        // one door still waiting
        assert!(!activates(S::Pending, &[held(&a), row(&b)], None));
        // ... unless it is the door the vendor just confirmed
        assert!(activates(S::Pending, &[held(&a), row(&b)], Some(&b)));
        assert!(!activates(S::Pending, &[row(&a), row(&b)], Some(&b)));
        // a door the key must leave, or one given up, is not holding it
        let leaving = DoorRow {
            present: false,
            ..held(&b)
        };
        let failed = DoorRow {
            sync: DoorSync::Failed,
            ..row(&b)
        };
        assert!(!activates(S::Pending, &[held(&a), leaving], None));
        assert!(!activates(S::Pending, &[held(&a), failed], None));
        // only a pending credential activates
        for state in [S::Requested, S::Active, S::Suspended, S::Revoked, S::Failed] {
            assert!(!activates(state, &[held(&a)], None), "{state:?}");
        }
    }

    #[test]
    fn a_door_holds_nothing_only_when_nothing_was_sent_and_no_object_is_known() {
        assert!(holds_nothing(0, false, false));
        assert!(holds_nothing(1, false, true), "a fresh intent taken back");
        assert!(
            !holds_nothing(1, false, false),
            "an attempt may have landed"
        );
        assert!(!holds_nothing(0, true, false));
        assert!(!holds_nothing(1, true, true));
    }
}
