//! The device diff of an update (spec `003` §1.3 `update`): when a credential's rooms or
//! window change, which doors keep it (and are told the new window), which lose it, and
//! which gain it. The rules:
//!
//! - **Kept doors** of an active key are sent the new window; a suspended key is off its
//!   doors and stays off (its unsuspend puts it back with the window it has then).
//! - **Dropped doors** lose the key, suspended or not; a door nothing was ever sent to is
//!   taken to hold nothing at once ([`door_sync::holds_nothing`]), otherwise a removal is
//!   pending.
//! - **New doors** take new work only: none at an adapter that takes no new keys, and,
//!   where the key's own adapters serve a room, only theirs (another vendor's door of the
//!   same room would get a second key, maybe of a kind it cannot issue; spec `003` §3).
//!   An active key is put on them; a suspended one is recorded absent until unsuspended.
//! - **The drive** is scheduled when some door has vendor work pending.
//!
//! The actors' credential step reads the doors and writes the rows; the diff is here.

use crate::door_sync;
use crate::ids::{LockDeviceId, RoomId, VendorAdapterId};

/// A door the credential has a door-truth row for, as far as the diff depends on it.
#[derive(Clone, Copy, Debug)]
pub struct HeldDoor<'a> {
    /// The door.
    pub device: &'a LockDeviceId,
    /// Issue attempts committed before a vendor call: each may have reached the vendor.
    pub attempts: i32,
    /// The vendor's object for the key at this door is known.
    pub has_vendor_ref: bool,
}

/// A door of the credential's rooms (and a master's areas) after the change.
#[derive(Clone, Copy, Debug)]
pub struct WantedDoor<'a> {
    /// The door.
    pub device: &'a LockDeviceId,
    /// The adapter that drives it.
    pub adapter: &'a VendorAdapterId,
    /// The rooms it serves.
    pub rooms: &'a [RoomId],
    /// Its adapter takes new keys (not disabled).
    pub takes_new_work: bool,
}

/// What happens to one door's row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoorChange {
    /// A kept door of an active key: the vendor is sent the new window.
    Resend,
    /// A dropped door: the key leaves it; `nothing_there` when nothing was ever sent, so
    /// it is confirmed absent at once.
    Remove {
        /// Nothing was sent and no object is known: no vendor call is needed.
        nothing_there: bool,
    },
    /// A new door: the key is put on it (`present`), or, for a suspended key, recorded
    /// absent until the key is unsuspended.
    Add {
        /// The key should be on the door now.
        present: bool,
    },
}

impl DoorChange {
    /// The door should hold the key.
    pub fn present(self) -> bool {
        match self {
            Self::Resend => true,
            Self::Remove { .. } => false,
            Self::Add { present } => present,
        }
    }

    /// The door has vendor work pending (otherwise it already agrees).
    pub fn pending(self) -> bool {
        match self {
            Self::Resend => true,
            Self::Remove { nothing_there } => !nothing_there,
            Self::Add { present } => present,
        }
    }
}

/// The diff of one update.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceDiff {
    /// Changes to doors the credential has a row for: (index into `held`, change). A held
    /// door not listed is left as it is.
    pub held: Vec<(usize, DoorChange)>,
    /// Doors it gains: (index into `wanted`, change).
    pub added: Vec<(usize, DoorChange)>,
}

impl DeviceDiff {
    /// Some door has vendor work pending: the credential's drive is scheduled.
    pub fn drive(&self) -> bool {
        self.held
            .iter()
            .chain(&self.added)
            .any(|(_, change)| change.pending())
    }
}

/// The diff for a credential with rows at `held`, whose rooms are now served by `wanted`,
/// issued through `own_adapter`, `active` or (when not) suspended.
pub fn diff(
    held: &[HeldDoor<'_>],
    wanted: &[WantedDoor<'_>],
    own_adapter: &VendorAdapterId,
    active: bool,
) -> DeviceDiff {
    let is_held = |d: &LockDeviceId| held.iter().any(|h| h.device == d);
    let mut out = DeviceDiff::default();
    for (i, h) in held.iter().enumerate() {
        let kept = wanted.iter().any(|w| w.device == h.device);
        let change = if !kept {
            DoorChange::Remove {
                nothing_there: door_sync::holds_nothing(h.attempts, h.has_vendor_ref, false),
            }
        } else if active {
            DoorChange::Resend
        } else {
            continue;
        };
        out.held.push((i, change));
    }
    // the key's own adapters: those of the doors it keeps, and the one it was issued by
    let own: Vec<&VendorAdapterId> = wanted
        .iter()
        .filter(|w| is_held(w.device))
        .map(|w| w.adapter)
        .chain(std::iter::once(own_adapter))
        .collect();
    let served_by_own = |r: &RoomId| {
        wanted
            .iter()
            .any(|x| x.rooms.contains(r) && own.contains(&x.adapter))
    };
    for (i, w) in wanted.iter().enumerate() {
        if is_held(w.device) || !w.takes_new_work {
            continue;
        }
        // spec 003 §3: no second vendor's door for a room the key's own adapters serve
        if !own.contains(&w.adapter) && w.rooms.iter().any(served_by_own) {
            continue;
        }
        out.added.push((i, DoorChange::Add { present: active }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u128) -> LockDeviceId {
        LockDeviceId::from_ulid(ulid::Ulid::from_parts(1, n))
    }

    fn adapter(n: u128) -> VendorAdapterId {
        VendorAdapterId::from_ulid(ulid::Ulid::from_parts(2, n))
    }

    fn room(r: &str) -> RoomId {
        RoomId::parse(r).expect("valid room")
    }

    fn held(d: &LockDeviceId) -> HeldDoor<'_> {
        HeldDoor {
            device: d,
            attempts: 1,
            has_vendor_ref: true,
        }
    }

    fn wanted<'a>(
        d: &'a LockDeviceId,
        a: &'a VendorAdapterId,
        rooms: &'a [RoomId],
    ) -> WantedDoor<'a> {
        WantedDoor {
            device: d,
            adapter: a,
            rooms,
            takes_new_work: true,
        }
    }

    #[test]
    fn a_kept_door_of_an_active_key_is_sent_the_new_window() {
        let (d, a, r) = (device(1), adapter(1), [room("rmu_101")]);
        let out = diff(&[held(&d)], &[wanted(&d, &a, &r)], &a, true);
        assert_eq!(out.held, [(0, DoorChange::Resend)]);
        assert!(out.added.is_empty());
        assert!(out.drive());
    }

    #[test]
    fn a_suspended_key_stays_off_the_doors_it_keeps() {
        let (d, a, r) = (device(1), adapter(1), [room("rmu_101")]);
        let out = diff(&[held(&d)], &[wanted(&d, &a, &r)], &a, false);
        assert_eq!(out, DeviceDiff::default());
        assert!(!out.drive());
    }

    #[test]
    fn a_dropped_door_loses_the_key_at_once_only_when_nothing_was_sent() {
        let (gone, untried, kept, a) = (device(1), device(2), device(3), adapter(1));
        let r = [room("rmu_101")];
        let rows = [
            held(&gone),
            HeldDoor {
                attempts: 0,
                has_vendor_ref: false,
                ..held(&untried)
            },
            held(&kept),
        ];
        for active in [true, false] {
            let out = diff(&rows, &[wanted(&kept, &a, &r)], &a, active);
            let removals: Vec<_> = out
                .held
                .iter()
                .filter(|(_, c)| !c.present())
                .copied()
                .collect();
            assert_eq!(
                removals,
                [
                    (
                        0,
                        DoorChange::Remove {
                            nothing_there: false
                        }
                    ),
                    (
                        1,
                        DoorChange::Remove {
                            nothing_there: true
                        }
                    ),
                ],
                "active: {active}"
            );
        }
        // an attempt without a known object may have landed: the drive looks for it
        let maybe = HeldDoor {
            has_vendor_ref: false,
            ..held(&gone)
        };
        assert_eq!(
            diff(&[maybe], &[], &a, false).held,
            [(
                0,
                DoorChange::Remove {
                    nothing_there: false
                }
            )]
        );
        // a removal with nothing to call needs no drive
        let untried_only = diff(&rows[1..2], &[], &a, false);
        assert!(!untried_only.drive());
        assert!(diff(&rows[..1], &[], &a, false).drive());
    }

    #[test]
    fn a_new_door_gets_an_active_key_and_records_a_suspended_one_absent() {
        let (old, new, a) = (device(1), device(2), adapter(1));
        let (r1, r2) = ([room("rmu_101")], [room("rmu_102")]);
        let want = [wanted(&old, &a, &r1), wanted(&new, &a, &r2)];
        let out = diff(&[held(&old)], &want, &a, true);
        assert_eq!(out.added, [(1, DoorChange::Add { present: true })]);
        assert!(DoorChange::Add { present: true }.pending());
        let out = diff(&[held(&old)], &want, &a, false);
        assert_eq!(out.added, [(1, DoorChange::Add { present: false })]);
        assert!(!out.drive(), "nothing for a vendor until the unsuspend");
    }

    #[test]
    fn a_new_door_at_an_adapter_taking_no_new_keys_is_not_added() {
        let (old, new, a) = (device(1), device(2), adapter(1));
        let (r1, r2) = ([room("rmu_101")], [room("rmu_102")]);
        let disabled = WantedDoor {
            takes_new_work: false,
            ..wanted(&new, &a, &r2)
        };
        let out = diff(&[held(&old)], &[wanted(&old, &a, &r1), disabled], &a, true);
        assert!(out.added.is_empty());
        // a door it already has is kept even so
        let out = diff(&[held(&new)], &[disabled], &a, true);
        assert_eq!(out.held, [(0, DoorChange::Resend)]);
    }

    #[test]
    fn a_room_the_keys_own_adapter_serves_gets_no_second_vendors_door() {
        // spec 003 §3: the key's kind may be one the other vendor cannot issue
        let (own_door, other_door, a, b) = (device(1), device(2), adapter(1), adapter(2));
        let r = [room("rmu_102")];
        // the room is new to the key; both vendors serve it; only the own one is added
        let want = [wanted(&own_door, &a, &r), wanted(&other_door, &b, &r)];
        let out = diff(&[], &want, &a, true);
        assert_eq!(out.added, [(0, DoorChange::Add { present: true })]);
        // the adapter of a door the key keeps counts as its own too: b's door of the new
        // room is added, a's is not
        let kept = device(3);
        let r1 = [room("rmu_101")];
        let want = [
            wanted(&kept, &b, &r1),
            wanted(&other_door, &b, &r),
            wanted(&own_door, &a, &r),
        ];
        let out = diff(&[held(&kept)], &want, &adapter(9), true);
        assert_eq!(out.added, [(1, DoorChange::Add { present: true })]);
    }

    #[test]
    fn a_room_no_own_adapter_serves_takes_another_vendors_door() {
        let (door, a, b) = (device(2), adapter(1), adapter(2));
        let r = [room("rmu_102")];
        let out = diff(&[], &[wanted(&door, &b, &r)], &a, true);
        assert_eq!(out.added, [(0, DoorChange::Add { present: true })]);
    }
}
