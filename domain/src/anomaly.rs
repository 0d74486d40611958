//! Door anomaly detection (epic `000` US-MEL-0079): rules over one recorded door attempt
//! ([`KeyCredentialAttempt`]) and what Lockstep knows of its credential and device, and a
//! bounded memory of recent attempts for the two rules that look across attempts.
//!
//! | rule | fires when | default |
//! |---|---|---|
//! | `invalid_credential_entry` | the door opened for a credential that was revoked, suspended, past its window (`expired`) or before it (`not_yet_valid`) at the attempt's time | on, grace 60 s |
//! | `wrong_room` | a credential opened a device that serves none of its rooms (denied tries too, if asked) | on, granted only |
//! | `master_outside_shift` | a staff master was tried (opened or not) outside its shift window | on, grace 300 s |
//! | `denied_burst` | `threshold` denials at one device within `window` (keypad brute force) | on, 5 in 300 s |
//! | `impossible_travel` | one credential at two devices that share no room within `window` | on, 5 s |
//!
//! "Far apart" (`impossible_travel`): Lockstep does not know floors, wings or distances,
//! only devices and the rooms each serves. Two devices that serve a common room are the
//! same place (two doors of one suite); any other two devices are apart, and nobody
//! presents one card at two such doors within a few seconds. The default of 5 s sits above
//! the locks' one-second record resolution and below the time to walk to a neighbouring
//! door and present the card again. Lock clocks are a limit: two locks whose clocks differ
//! by more than the window can hide a real case or make one up (the drift loop warns above
//! 5 minutes of skew).
//!
//! Times are the vendor's (the attempt's `attemptedAt`), compared with Lockstep's record
//! of the credential (`revokedAt`, `suspendedAt`, its window); each time-based rule allows
//! a `grace` for the lock's clock. An attempt whose time A-3 clamped (the lock's clock is
//! more than five minutes ahead) carries the ingestion time, not the lock's: only
//! `wrong_room`, which needs no time, judges it. A master outside its shift is
//! reported by `master_outside_shift` only, not also as an `expired` entry; a rule that is
//! off hands the case back to the others.
//!
//! [`AnomalyDetector`] keeps, per (tenant, device), the recent denials and, per (tenant,
//! credential), the recent sightings, each list and each map bounded ([`WindowLimits`]).
//! Evaluating an attempt twice (a commit retried after a concurrent delivery) gives the
//! same answer: entries are keyed by the vendor's event id, and an attempt is judged
//! against the entries that were observed before it (by arrival), whatever order the
//! vendor's records come in.

use std::collections::HashMap;

use chrono::Duration;

use crate::{
    AttemptOutcome, DomainError, HolderKind, KeyCredential, KeyCredentialAttempt,
    KeyCredentialAttemptId, KeyCredentialId, KeyCredentialState, LockDeviceId, RevokeReason,
    RoomId, TenantId, Timestamp, ValidityWindow,
};

/// The rules (stable names: metric label, audit reason, event field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyRule {
    /// The door opened for a revoked, suspended, expired or not-yet-valid credential.
    InvalidCredentialEntry,
    /// A credential used at a device that serves none of its rooms.
    WrongRoom,
    /// A staff master tried outside its shift.
    MasterOutsideShift,
    /// Many denials at one device in a short time (keypad brute force).
    DeniedBurst,
    /// One credential at two devices apart within seconds.
    ImpossibleTravel,
}

impl AnomalyRule {
    /// Every rule.
    pub const ALL: [AnomalyRule; 5] = [
        Self::InvalidCredentialEntry,
        Self::WrongRoom,
        Self::MasterOutsideShift,
        Self::DeniedBurst,
        Self::ImpossibleTravel,
    ];

    /// The rule's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCredentialEntry => "invalid_credential_entry",
            Self::WrongRoom => "wrong_room",
            Self::MasterOutsideShift => "master_outside_shift",
            Self::DeniedBurst => "denied_burst",
            Self::ImpossibleTravel => "impossible_travel",
        }
    }

    /// Parses a rule's name.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| DomainError::validation("rule", "unknown anomaly rule"))
    }
}

/// What made an entry invalid (`invalid_credential_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialStatus {
    /// Revoked before the attempt.
    Revoked,
    /// Suspended before the attempt.
    Suspended,
    /// The attempt was after the credential's window.
    Expired,
    /// The attempt was before the credential's window.
    NotYetValid,
}

impl CredentialStatus {
    /// The name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Suspended => "suspended",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
        }
    }
}

/// The evidence of one anomaly, by rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnomalyDetail {
    /// `invalid_credential_entry`.
    InvalidCredentialEntry {
        /// What was wrong with the credential.
        status: CredentialStatus,
        /// Since when (revocation, suspension, end or start of the window).
        since: Timestamp,
    },
    /// `wrong_room`.
    WrongRoom {
        /// The credential's rooms.
        credential_rooms: Vec<RoomId>,
        /// The rooms the device serves.
        device_rooms: Vec<RoomId>,
    },
    /// `master_outside_shift`.
    MasterOutsideShift {
        /// The shift (the master's validity).
        shift: ValidityWindow,
    },
    /// `denied_burst`.
    DeniedBurst {
        /// Denials within the window, this one included.
        denials: u32,
        /// The rule's window.
        window: Duration,
        /// The first denial of the burst.
        first_at: Timestamp,
    },
    /// `impossible_travel`.
    ImpossibleTravel {
        /// The other device.
        other_device: LockDeviceId,
        /// When the credential was there.
        other_at: Timestamp,
        /// Time between the two attempts.
        apart: Duration,
    },
}

impl AnomalyDetail {
    /// The rule this evidence belongs to.
    pub fn rule(&self) -> AnomalyRule {
        match self {
            Self::InvalidCredentialEntry { .. } => AnomalyRule::InvalidCredentialEntry,
            Self::WrongRoom { .. } => AnomalyRule::WrongRoom,
            Self::MasterOutsideShift { .. } => AnomalyRule::MasterOutsideShift,
            Self::DeniedBurst { .. } => AnomalyRule::DeniedBurst,
            Self::ImpossibleTravel { .. } => AnomalyRule::ImpossibleTravel,
        }
    }
}

/// One anomaly, found on one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    /// The attempt that showed it.
    pub attempt_id: KeyCredentialAttemptId,
    /// The evidence (and so the rule).
    pub detail: AnomalyDetail,
}

impl Anomaly {
    /// The rule.
    pub fn rule(&self) -> AnomalyRule {
        self.detail.rule()
    }
}

/// One rule's settings as configured, before validation (`None`: the default). A key a
/// rule does not take is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleInput {
    /// Whether the rule runs.
    pub enabled: Option<bool>,
    /// Allowance for lock clocks, seconds (`invalid_credential_entry`,
    /// `master_outside_shift`): 0 to 3600.
    pub grace_secs: Option<i64>,
    /// Whether denied attempts count too (`wrong_room`).
    pub include_denied: Option<bool>,
    /// Denials that make a burst (`denied_burst`): 2 to 1000.
    pub threshold: Option<i64>,
    /// The window, seconds (`denied_burst`: 1 to 86400; `impossible_travel`: 1 to 600).
    pub window_secs: Option<i64>,
}

/// Every rule's settings as configured, before validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnomalyRulesInput {
    /// `invalid_credential_entry`.
    pub invalid_credential_entry: RuleInput,
    /// `wrong_room`.
    pub wrong_room: RuleInput,
    /// `master_outside_shift`.
    pub master_outside_shift: RuleInput,
    /// `denied_burst`.
    pub denied_burst: RuleInput,
    /// `impossible_travel`.
    pub impossible_travel: RuleInput,
}

/// Validated rule settings of one property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnomalyRules {
    entry: Option<Duration>,
    wrong_room: Option<bool>,
    shift: Option<Duration>,
    burst: Option<(u32, Duration)>,
    travel: Option<Duration>,
}

/// Default grace of `invalid_credential_entry`: a minute of lock clock.
pub const DEFAULT_ENTRY_GRACE_SECS: i64 = 60;
/// Default grace of `master_outside_shift`: shift edges are soft (a room being finished).
pub const DEFAULT_SHIFT_GRACE_SECS: i64 = 300;
/// Default `denied_burst` threshold.
pub const DEFAULT_BURST_THRESHOLD: u32 = 5;
/// Default `denied_burst` window, seconds.
pub const DEFAULT_BURST_WINDOW_SECS: i64 = 300;
/// Default `impossible_travel` window, seconds.
pub const DEFAULT_TRAVEL_WINDOW_SECS: i64 = 5;

impl Default for AnomalyRules {
    fn default() -> Self {
        Self {
            entry: Some(Duration::seconds(DEFAULT_ENTRY_GRACE_SECS)),
            wrong_room: Some(false),
            shift: Some(Duration::seconds(DEFAULT_SHIFT_GRACE_SECS)),
            burst: Some((
                DEFAULT_BURST_THRESHOLD,
                Duration::seconds(DEFAULT_BURST_WINDOW_SECS),
            )),
            travel: Some(Duration::seconds(DEFAULT_TRAVEL_WINDOW_SECS)),
        }
    }
}

fn in_range(
    field: &'static str,
    v: Option<i64>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, DomainError> {
    let v = v.unwrap_or(default);
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(DomainError::validation(
            field,
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}

fn refuse(field: &'static str, given: bool) -> Result<(), DomainError> {
    if given {
        Err(DomainError::validation(
            field,
            "this rule takes no such key",
        ))
    } else {
        Ok(())
    }
}

impl AnomalyRules {
    /// Validates configured settings; what is not given takes its default.
    pub fn new(i: AnomalyRulesInput) -> Result<Self, DomainError> {
        let on = |r: &RuleInput| r.enabled.unwrap_or(true);
        let e = &i.invalid_credential_entry;
        refuse(
            "invalid_credential_entry.include_denied",
            e.include_denied.is_some(),
        )?;
        refuse("invalid_credential_entry.threshold", e.threshold.is_some())?;
        refuse(
            "invalid_credential_entry.window_secs",
            e.window_secs.is_some(),
        )?;
        let entry_grace = in_range(
            "invalid_credential_entry.grace_secs",
            e.grace_secs,
            DEFAULT_ENTRY_GRACE_SECS,
            0..=3600,
        )?;
        let w = &i.wrong_room;
        refuse("wrong_room.grace_secs", w.grace_secs.is_some())?;
        refuse("wrong_room.threshold", w.threshold.is_some())?;
        refuse("wrong_room.window_secs", w.window_secs.is_some())?;
        let s = &i.master_outside_shift;
        refuse(
            "master_outside_shift.include_denied",
            s.include_denied.is_some(),
        )?;
        refuse("master_outside_shift.threshold", s.threshold.is_some())?;
        refuse("master_outside_shift.window_secs", s.window_secs.is_some())?;
        let shift_grace = in_range(
            "master_outside_shift.grace_secs",
            s.grace_secs,
            DEFAULT_SHIFT_GRACE_SECS,
            0..=3600,
        )?;
        let b = &i.denied_burst;
        refuse("denied_burst.grace_secs", b.grace_secs.is_some())?;
        refuse("denied_burst.include_denied", b.include_denied.is_some())?;
        let threshold = in_range(
            "denied_burst.threshold",
            b.threshold,
            i64::from(DEFAULT_BURST_THRESHOLD),
            2..=1000,
        )?;
        let burst_window = in_range(
            "denied_burst.window_secs",
            b.window_secs,
            DEFAULT_BURST_WINDOW_SECS,
            1..=86_400,
        )?;
        let t = &i.impossible_travel;
        refuse("impossible_travel.grace_secs", t.grace_secs.is_some())?;
        refuse(
            "impossible_travel.include_denied",
            t.include_denied.is_some(),
        )?;
        refuse("impossible_travel.threshold", t.threshold.is_some())?;
        let travel_window = in_range(
            "impossible_travel.window_secs",
            t.window_secs,
            DEFAULT_TRAVEL_WINDOW_SECS,
            1..=600,
        )?;
        Ok(Self {
            entry: on(e).then(|| Duration::seconds(entry_grace)),
            wrong_room: on(w).then(|| w.include_denied.unwrap_or(false)),
            shift: on(s).then(|| Duration::seconds(shift_grace)),
            burst: on(b).then(|| {
                (
                    u32::try_from(threshold).unwrap_or(DEFAULT_BURST_THRESHOLD),
                    Duration::seconds(burst_window),
                )
            }),
            travel: on(t).then(|| Duration::seconds(travel_window)),
        })
    }

    /// Whether `rule` runs.
    pub fn enabled(&self, rule: AnomalyRule) -> bool {
        match rule {
            AnomalyRule::InvalidCredentialEntry => self.entry.is_some(),
            AnomalyRule::WrongRoom => self.wrong_room.is_some(),
            AnomalyRule::MasterOutsideShift => self.shift.is_some(),
            AnomalyRule::DeniedBurst => self.burst.is_some(),
            AnomalyRule::ImpossibleTravel => self.travel.is_some(),
        }
    }

    /// `denied_burst`'s threshold and window, when it runs.
    pub fn burst(&self) -> Option<(u32, Duration)> {
        self.burst
    }

    /// `impossible_travel`'s window, when it runs.
    pub fn travel_window(&self) -> Option<Duration> {
        self.travel
    }
}

/// One attempt and what Lockstep knows around it.
#[derive(Clone, Copy, Debug)]
pub struct AttemptContext<'a> {
    /// The recorded attempt.
    pub attempt: &'a KeyCredentialAttempt,
    /// Its credential, when it is one of Lockstep's (A-4 already checked).
    pub credential: Option<&'a KeyCredential>,
    /// Every room the device serves (none for a common-area door).
    pub device_rooms: &'a [RoomId],
    /// The common area or back of house the device opens, if any (`lock_devices.area`).
    pub device_area: Option<crate::master::CommonArea>,
}

/// Whether `t` is outside `w` by more than `grace`.
fn outside(w: ValidityWindow, t: Timestamp, grace: Duration) -> bool {
    t < w.from() - grace || t >= w.until() + grace
}

fn master_outside_shift(rules: &AnomalyRules, ctx: &AttemptContext<'_>) -> Option<AnomalyDetail> {
    let grace = rules.shift?;
    let c = ctx.credential?;
    (!ctx.attempt.clamped
        && c.holder_kind() == HolderKind::StaffMaster
        && outside(c.validity(), ctx.attempt.attempted_at, grace))
    .then(|| AnomalyDetail::MasterOutsideShift {
        shift: c.validity(),
    })
}

fn invalid_credential_entry(
    rules: &AnomalyRules,
    ctx: &AttemptContext<'_>,
) -> Option<AnomalyDetail> {
    let grace = rules.entry?;
    let c = ctx.credential?;
    if ctx.attempt.outcome != AttemptOutcome::Granted
        || ctx.attempt.clamped
        || c.state() == KeyCredentialState::Failed
        // a master outside its shift is that rule's to report
        || master_outside_shift(rules, ctx).is_some()
    {
        return None;
    }
    // a master's window is its shift, and the shift's end its expiry: that rule's too
    let shift_rule = c.holder_kind() == HolderKind::StaffMaster && rules.shift.is_some();
    let t = ctx.attempt.attempted_at;
    let w = c.validity();
    let (status, since) = if t >= w.until() + grace && !shift_rule {
        (CredentialStatus::Expired, w.until())
    } else if t < w.from() - grace && !shift_rule {
        (CredentialStatus::NotYetValid, w.from())
    } else {
        let shift_end = shift_rule && c.revoke_reason() == Some(RevokeReason::Expired);
        match (c.state(), c.revoked_at(), c.suspended_at()) {
            (KeyCredentialState::Revoked, Some(at), _) if t >= at + grace && !shift_end => {
                let status = if c.revoke_reason() == Some(RevokeReason::Expired) {
                    CredentialStatus::Expired
                } else {
                    CredentialStatus::Revoked
                };
                (status, at)
            }
            (KeyCredentialState::Suspended, _, Some(at)) if t >= at + grace => {
                (CredentialStatus::Suspended, at)
            }
            _ => return None,
        }
    };
    Some(AnomalyDetail::InvalidCredentialEntry { status, since })
}

fn wrong_room(rules: &AnomalyRules, ctx: &AttemptContext<'_>) -> Option<AnomalyDetail> {
    let include_denied = rules.wrong_room?;
    let c = ctx.credential?;
    if ctx.attempt.outcome == AttemptOutcome::Denied && !include_denied {
        return None;
    }
    // A master scoped by floors opens doors by the vendor's floor object, which Lockstep
    // cannot name; one scoped by areas opens its areas' doors (spec 003 §4), judged here.
    let scope = c.scope();
    if c.holder_kind() == HolderKind::StaffMaster && !scope.floors.is_empty() {
        return None;
    }
    if ctx.device_rooms.iter().any(|r| c.rooms().contains(r)) {
        return None;
    }
    if ctx
        .device_area
        .is_some_and(|a| scope.areas.iter().any(|s| s == a.as_str()))
    {
        return None;
    }
    Some(AnomalyDetail::WrongRoom {
        credential_rooms: c.rooms().to_vec(),
        device_rooms: ctx.device_rooms.to_vec(),
    })
}

/// The rules that need no memory of other attempts, in [`AnomalyRule::ALL`] order.
pub fn check_attempt(rules: &AnomalyRules, ctx: &AttemptContext<'_>) -> Vec<Anomaly> {
    [
        invalid_credential_entry(rules, ctx),
        wrong_room(rules, ctx),
        master_outside_shift(rules, ctx),
    ]
    .into_iter()
    .flatten()
    .map(|detail| Anomaly {
        attempt_id: ctx.attempt.id.clone(),
        detail,
    })
    .collect()
}

/// Bounds of [`AnomalyDetector`]'s memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowLimits {
    /// Devices with recent denials kept (the stalest go first).
    pub max_devices: usize,
    /// Denials kept per device.
    pub per_device: usize,
    /// Credentials with recent sightings kept (the stalest go first).
    pub max_credentials: usize,
    /// Sightings kept per credential.
    pub per_credential: usize,
    /// How far behind a list's newest entry older entries are still kept, beyond the
    /// rule's window (late records of a read-back still meet their neighbours).
    pub horizon: Duration,
}

impl Default for WindowLimits {
    fn default() -> Self {
        Self {
            max_devices: 20_000,
            per_device: 64,
            max_credentials: 50_000,
            per_credential: 8,
            horizon: Duration::hours(1),
        }
    }
}

#[derive(Clone, Debug)]
struct Denial {
    at: Timestamp,
    seq: u64,
    event: String,
}

#[derive(Clone, Debug)]
struct Sighting {
    at: Timestamp,
    seq: u64,
    event: String,
    device: LockDeviceId,
    rooms: Vec<RoomId>,
}

/// A list of timed entries, oldest first, with the arrival number of its latest entry.
#[derive(Clone, Debug)]
struct Recent<T> {
    entries: Vec<T>,
    touched: u64,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            touched: 0,
        }
    }
}

trait Timed {
    fn at(&self) -> Timestamp;
    fn seq(&self) -> u64;
    fn event(&self) -> &str;
}

impl Timed for Denial {
    fn at(&self) -> Timestamp {
        self.at
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn event(&self) -> &str {
        &self.event
    }
}

impl Timed for Sighting {
    fn at(&self) -> Timestamp {
        self.at
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn event(&self) -> &str {
        &self.event
    }
}

impl<T: Timed> Recent<T> {
    /// Adds `entry` unless an entry of the same vendor event is there already; answers the
    /// arrival number the event holds (its first one), or `None` if it was trimmed away.
    fn observe(&mut self, entry: T, keep: Duration, cap: usize) -> Option<u64> {
        if let Some(e) = self.entries.iter().find(|e| e.event() == entry.event()) {
            return Some(e.seq());
        }
        let seq = entry.seq();
        let pos = self.entries.partition_point(|e| e.at() <= entry.at());
        self.entries.insert(pos, entry);
        self.touched = self.touched.max(seq);
        if let Some(newest) = self.entries.last().map(Timed::at) {
            self.entries.retain(|e| e.at() >= newest - keep);
        }
        if self.entries.len() > cap {
            let drop = self.entries.len() - cap;
            self.entries.drain(..drop);
        }
        self.entries.iter().any(|e| e.seq() == seq).then_some(seq)
    }
}

/// Drops the stalest tenth of `map` once it is full, so the map stays bounded and the
/// cost of eviction is shared by many inserts.
fn make_room<K: Clone + Eq + std::hash::Hash, T>(map: &mut HashMap<K, Recent<T>>, max: usize) {
    if map.len() < max.max(1) {
        return;
    }
    let mut ages: Vec<(u64, K)> = map.iter().map(|(k, v)| (v.touched, k.clone())).collect();
    ages.sort_unstable_by_key(|(t, _)| *t);
    let n = (max / 10).max(1);
    for (_, k) in ages.into_iter().take(n) {
        map.remove(&k);
    }
}

/// The most denials in one `window`-long stretch that contains `p`, among `times`
/// (sorted), with the first of them. Left ends need only be tried at the entries within
/// `window` before `p` and at `p` itself.
fn densest(times: &[Timestamp], p: Timestamp, window: Duration) -> (u32, Option<Timestamp>) {
    let mut best = (0u32, None);
    let starts = times
        .iter()
        .copied()
        .filter(|t| *t >= p - window && *t <= p)
        .chain(std::iter::once(p));
    for s in starts {
        let inside: Vec<Timestamp> = times
            .iter()
            .copied()
            .filter(|t| *t >= s && *t <= s + window)
            .collect();
        let n = u32::try_from(inside.len()).unwrap_or(u32::MAX);
        if n > best.0 {
            best = (n, inside.first().copied());
        }
    }
    best
}

/// The memory of recent denials and sightings (per tenant and device, per tenant and
/// credential), and the rules that need it. Kept by the caller (one per process); pure.
#[derive(Debug, Default)]
pub struct AnomalyDetector {
    limits: WindowLimits,
    denials: HashMap<(TenantId, LockDeviceId), Recent<Denial>>,
    sightings: HashMap<(TenantId, KeyCredentialId), Recent<Sighting>>,
    arrivals: u64,
}

impl AnomalyDetector {
    /// An empty detector with these bounds.
    pub fn new(limits: WindowLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Devices and credentials currently remembered.
    pub fn remembered(&self) -> (usize, usize) {
        (self.denials.len(), self.sightings.len())
    }

    /// Every rule on one attempt: the stateless ones ([`check_attempt`]), then
    /// `denied_burst` and `impossible_travel` against what was observed before it, which
    /// it then joins. In [`AnomalyRule::ALL`] order.
    pub fn detect(&mut self, rules: &AnomalyRules, ctx: &AttemptContext<'_>) -> Vec<Anomaly> {
        let mut found = check_attempt(rules, ctx);
        let a = ctx.attempt;
        if a.clamped {
            // its time is ours, not the lock's: it cannot be placed among the others
            return found;
        }
        if let (Some((threshold, window)), AttemptOutcome::Denied) = (rules.burst, a.outcome) {
            if let Some(detail) = self.burst(a, threshold, window) {
                found.push(Anomaly {
                    attempt_id: a.id.clone(),
                    detail,
                });
            }
        }
        if let (Some(window), Some(c)) = (rules.travel, ctx.credential) {
            if let Some(detail) = self.travel(a, c.id(), ctx.device_rooms, window) {
                found.push(Anomaly {
                    attempt_id: a.id.clone(),
                    detail,
                });
            }
        }
        found
    }

    fn next_arrival(&mut self) -> u64 {
        self.arrivals += 1;
        self.arrivals
    }

    fn burst(
        &mut self,
        a: &KeyCredentialAttempt,
        threshold: u32,
        window: Duration,
    ) -> Option<AnomalyDetail> {
        let key = (a.tenant_id, a.device_id.clone());
        if !self.denials.contains_key(&key) {
            make_room(&mut self.denials, self.limits.max_devices);
        }
        let seq = self.next_arrival();
        let (keep, cap) = (window + self.limits.horizon, self.limits.per_device);
        let list = self.denials.entry(key).or_default();
        let mine = list.observe(
            Denial {
                at: a.attempted_at,
                seq,
                event: a.vendor_event_id.clone(),
            },
            keep,
            cap,
        )?;
        // the neighbourhood before this denial arrived, and with it
        let before: Vec<Timestamp> = list
            .entries
            .iter()
            .filter(|e| e.seq < mine)
            .map(|e| e.at)
            .collect();
        let with: Vec<Timestamp> = list
            .entries
            .iter()
            .filter(|e| e.seq <= mine)
            .map(|e| e.at)
            .collect();
        let (without_n, _) = densest(&before, a.attempted_at, window);
        let (with_n, first) = densest(&with, a.attempted_at, window);
        (with_n >= threshold && without_n < threshold).then(|| AnomalyDetail::DeniedBurst {
            denials: with_n,
            window,
            first_at: first.unwrap_or(a.attempted_at),
        })
    }

    fn travel(
        &mut self,
        a: &KeyCredentialAttempt,
        credential: &KeyCredentialId,
        rooms: &[RoomId],
        window: Duration,
    ) -> Option<AnomalyDetail> {
        let key = (a.tenant_id, credential.clone());
        if !self.sightings.contains_key(&key) {
            make_room(&mut self.sightings, self.limits.max_credentials);
        }
        let seq = self.next_arrival();
        let (keep, cap) = (window + self.limits.horizon, self.limits.per_credential);
        let list = self.sightings.entry(key).or_default();
        let mine = list.observe(
            Sighting {
                at: a.attempted_at,
                seq,
                event: a.vendor_event_id.clone(),
                device: a.device_id.clone(),
                rooms: rooms.to_vec(),
            },
            keep,
            cap,
        )?;
        // each pair is reported once: by whichever of the two arrived second
        list.entries
            .iter()
            .filter(|s| s.seq < mine && s.device != a.device_id)
            .filter(|s| !s.rooms.iter().any(|r| rooms.contains(r)))
            .map(|s| (s, (s.at - a.attempted_at).abs()))
            .filter(|(_, apart)| *apart <= window)
            .min_by_key(|(_, apart)| *apart)
            .map(|(s, apart)| AnomalyDetail::ImpossibleTravel {
                other_device: s.device.clone(),
                other_at: s.at,
                apart,
            })
    }
}
