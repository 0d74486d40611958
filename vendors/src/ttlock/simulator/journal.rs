//! The door journal every vendor simulator keeps when asked: which labelled credentials each
//! simulated device accepts now ([`DoorObject`], a vendor-neutral view of the simulator's
//! own objects), and an ordered, bounded record of every change to that ([`DoorChange`]:
//! a grant, a change of window, a removal), stamped with the wall clock.
//!
//! Chaos runs read it to judge Lockstep from the vendor's side: how long a cancelled guest's
//! PIN stayed on the door (cancel published → removal applied), whether pending removals
//! were applied before new grants after an outage, whether one credential landed twice.
//!
//! Off by default: a simulator only computes its door view around a write while its
//! journal is on ([`DoorJournal::enable`]), so other tests pay nothing. A write is recorded
//! as the difference between the view before and after it, so every route that changes
//! what a door accepts is covered without per-route bookkeeping.
//!
//! Shared by every vendor's simulator. It lives in the TTLock simulator's folder only
//! because the simulators' own files were the ones open to this change; its natural home is
//! beside `sim_server`.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use lockstep_domain::KeyCredentialKind;

/// How many changes a journal keeps by default before the oldest are dropped.
pub const DEFAULT_JOURNAL_CAPACITY: usize = 1_000_000;

/// One credential object a simulated device accepts: the vendor's object seen through
/// Lockstep's eyes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoorObject {
    /// The device as Lockstep's config names it (`vendor_device_ref`: a TTLock `lockId`, a
    /// Salto lock id, a Vostio door id, a Kisi `"<group_id>:<lock_id>"`, a Brivo access
    /// point id).
    pub device: String,
    /// The label Lockstep gave the object (the credential id, `key_…`): the passcode's,
    /// eKey's or card's name, the access group's reference, the key's external id, the
    /// user's label.
    pub label: String,
    /// What kind of credential it is.
    pub kind: KeyCredentialKind,
    /// Start of validity, when the vendor has one.
    pub valid_from: Option<DateTime<Utc>>,
    /// End of validity, when the vendor has one.
    pub valid_until: Option<DateTime<Utc>>,
}

/// What a write did to one (device, label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DoorOp {
    /// One more object of the label on the device (the first one: the door now opens).
    Grant,
    /// The window (or kind) of an object changed.
    Change,
    /// One object of the label left the device.
    Remove,
}

impl DoorOp {
    /// `grant`, `change` or `remove`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Change => "change",
            Self::Remove => "remove",
        }
    }
}

/// One entry of the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoorChange {
    /// Position in this simulator's journal, from 1, gapless (also across dropped entries).
    pub seq: u64,
    /// When the simulator applied it, on the wall clock (not the simulator's clock, which a
    /// test may scale): chaos runs compare it with wall times of other processes.
    pub at: DateTime<Utc>,
    /// What happened.
    pub op: DoorOp,
    /// The device.
    pub device: String,
    /// The label.
    pub label: String,
    /// The kind of the object granted, changed or removed.
    pub kind: KeyCredentialKind,
    /// Its window after a grant or change; before a removal.
    pub valid_from: Option<DateTime<Utc>>,
    /// See `valid_from`.
    pub valid_until: Option<DateTime<Utc>>,
    /// Objects of this label left on this device after the change: 0 after a removal means
    /// the door no longer opens for it; 2 after a grant means a duplicate.
    pub remaining: u32,
}

/// A simulator's journal: off until enabled, then a ring of the last `capacity` changes.
#[derive(Debug)]
pub struct DoorJournal {
    enabled: bool,
    capacity: usize,
    next_seq: u64,
    entries: VecDeque<DoorChange>,
}

impl Default for DoorJournal {
    fn default() -> Self {
        Self {
            enabled: false,
            capacity: DEFAULT_JOURNAL_CAPACITY,
            next_seq: 1,
            entries: VecDeque::new(),
        }
    }
}

type Holdings = BTreeMap<(String, String), Vec<(&'static str, DoorObject)>>;

fn holdings(view: Vec<DoorObject>) -> Holdings {
    let mut map: Holdings = BTreeMap::new();
    for o in view {
        map.entry((o.device.clone(), o.label.clone()))
            .or_default()
            .push((o.kind.as_str(), o));
    }
    for objects in map.values_mut() {
        objects.sort_by(|(ka, a), (kb, b)| {
            (ka, a.valid_from, a.valid_until).cmp(&(kb, b.valid_from, b.valid_until))
        });
    }
    map
}

/// The wall clock, for the journal's stamps only.
#[allow(clippy::disallowed_methods)]
fn wall_now() -> DateTime<Utc> {
    // Deliberately the wall, not the simulator's Clock: journal times are compared with
    // wall times taken in other processes (the chaos publisher), whatever the clock scale.
    Utc::now()
}

impl DoorJournal {
    /// Starts recording, keeping at most `capacity` changes (at least 1).
    pub fn enable(&mut self, capacity: usize) {
        self.enabled = true;
        self.capacity = capacity.max(1);
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
    }

    /// Whether writes are being recorded.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The changes with `seq >= from_seq` still kept, oldest first.
    pub fn since(&self, from_seq: u64) -> Vec<DoorChange> {
        let skip = self
            .entries
            .front()
            .map(|first| from_seq.saturating_sub(first.seq))
            .unwrap_or(0);
        self.entries
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// The seq the next change will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records what changed between two door views (of the same simulator, before and after
    /// one write).
    pub fn record(&mut self, before: Vec<DoorObject>, after: Vec<DoorObject>) {
        if !self.enabled || before == after {
            return;
        }
        let at = wall_now();
        let before = holdings(before);
        let mut after = holdings(after);
        for (key, old) in before {
            let new = after.remove(&key).unwrap_or_default();
            self.diff(at, &key, old, new);
        }
        for (key, new) in after {
            self.diff(at, &key, Vec::new(), new);
        }
    }

    fn diff(
        &mut self,
        at: DateTime<Utc>,
        (device, label): &(String, String),
        old: Vec<(&'static str, DoorObject)>,
        new: Vec<(&'static str, DoorObject)>,
    ) {
        if old == new {
            return;
        }
        let remaining = u32::try_from(new.len()).unwrap_or(u32::MAX);
        let changed = old.len().min(new.len());
        let mut push = |op: DoorOp, o: &DoorObject| {
            let entry = DoorChange {
                seq: self.next_seq,
                at,
                op,
                device: device.clone(),
                label: label.clone(),
                kind: o.kind,
                valid_from: o.valid_from,
                valid_until: o.valid_until,
                remaining,
            };
            self.next_seq += 1;
            if self.entries.len() == self.capacity {
                self.entries.pop_front();
            }
            self.entries.push_back(entry);
        };
        for i in 0..changed {
            if old[i] != new[i] {
                push(DoorOp::Change, &new[i].1);
            }
        }
        for (_, o) in &old[changed..] {
            push(DoorOp::Remove, o);
        }
        for (_, o) in &new[changed..] {
            push(DoorOp::Grant, o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(device: &str, label: &str, until_h: i64) -> DoorObject {
        let base = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("a valid instant");
        DoorObject {
            device: device.into(),
            label: label.into(),
            kind: KeyCredentialKind::PinCode,
            valid_from: Some(base),
            valid_until: Some(base + chrono::Duration::hours(until_h)),
        }
    }

    #[test]
    fn a_disabled_journal_records_nothing() {
        let mut j = DoorJournal::default();
        j.record(Vec::new(), vec![obj("1", "key_a", 1)]);
        assert!(j.since(0).is_empty());
    }

    #[test]
    fn grants_changes_duplicates_and_removals_are_recorded_in_order() {
        let mut j = DoorJournal::default();
        j.enable(10);
        j.record(Vec::new(), vec![obj("1", "key_a", 1)]);
        j.record(vec![obj("1", "key_a", 1)], vec![obj("1", "key_a", 2)]);
        j.record(
            vec![obj("1", "key_a", 2)],
            vec![obj("1", "key_a", 2), obj("1", "key_a", 2)],
        );
        j.record(vec![obj("1", "key_a", 2), obj("1", "key_a", 2)], Vec::new());
        let ops: Vec<(DoorOp, u32)> = j.since(0).iter().map(|c| (c.op, c.remaining)).collect();
        assert_eq!(
            ops,
            vec![
                (DoorOp::Grant, 1),
                (DoorOp::Change, 1),
                (DoorOp::Grant, 2),
                (DoorOp::Remove, 0),
                (DoorOp::Remove, 0),
            ]
        );
        let seqs: Vec<u64> = j.since(3).iter().map(|c| c.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
    }

    #[test]
    fn the_ring_keeps_the_newest_entries() {
        let mut j = DoorJournal::default();
        j.enable(2);
        for i in 0..5 {
            j.record(Vec::new(), vec![obj("1", &format!("key_{i}"), 1)]);
        }
        let seqs: Vec<u64> = j.since(0).iter().map(|c| c.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
        assert_eq!(j.next_seq(), 6);
    }
}
