//! The circuit breaker of one (vendor, environment), as a pure state machine (DESIGN §2
//! BreakerActor, §6, spec `002`: trip open on >25 % errors or p99 > 5 s). Time is passed
//! in; the actor owns the instance, asks [`Breaker::admit`] before each vendor call and
//! reports each call with [`Breaker::record`].
//!
//! "More than 25 % errors" is judged with confidence, not on the window's raw share: the
//! circuit trips when even the lower bound of the error rate's 99.9 % Wilson interval is above
//! the threshold. A vendor that is down trips it as soon as the window holds `min_calls`
//! (ten failures of ten: lower bound 0.51), a flaky one at 50 % within about thirty calls,
//! but one that loses a response in five no longer trips it on the luck of its first ten
//! calls (three of ten is 30 %, and happens in a third of such windows): each trip parks
//! every new key for `open_for`, so a breaker that flaps on noise costs more than the
//! errors it guards against (ARCHITECTURE, deviations).
//!
//! ```text
//! closed --(window ≥ min_calls and error rate surely > 25 % or p99 > 5 s)--> open
//! open   --(open_for elapsed)--> half_open (up to half_open_probes concurrent probes)
//! half_open --(a probe succeeds)--> closed      half_open --(a probe fails)--> open
//! ```

use std::collections::VecDeque;

use chrono::Duration;

use crate::clock::Timestamp;
use crate::errors::DomainError;

/// The state of a circuit (spec `003` §3 `CircuitState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// V-3: calls fail at once, without an outbound call.
    Open,
    /// A few probes test the vendor.
    HalfOpen,
}

impl CircuitState {
    /// The spec's wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Tuning of a breaker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerPolicy {
    /// Sliding window of calls considered (default 60 s).
    pub window: Duration,
    /// Fewest calls in the window before it may trip (default 10).
    pub min_calls: u32,
    /// Trip when the window's error rate is surely greater (default 0.25): the lower bound
    /// of its 99.9 % Wilson interval, not the raw share (see the module text).
    pub error_rate: f64,
    /// Trip when the window's p99 latency is strictly greater (default 5 s).
    pub p99_latency: Duration,
    /// How long an open circuit rejects before probing (default 30 s).
    pub open_for: Duration,
    /// The longest an open circuit rejects: each failed probe doubles the wait from
    /// `open_for` up to this (default 5 min), so a 12-hour outage costs a few hundred
    /// probes, not thousands (DESIGN §7: parked work does not spin).
    pub open_for_max: Duration,
    /// Concurrent probes admitted while half-open (default 3).
    pub half_open_probes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            window: Duration::seconds(60),
            min_calls: 10,
            error_rate: 0.25,
            p99_latency: Duration::seconds(5),
            open_for: Duration::seconds(30),
            open_for_max: Duration::minutes(5),
            half_open_probes: 3,
        }
    }
}

impl BreakerPolicy {
    /// Refuses a policy that could never trip or never recover.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.window <= Duration::zero() || self.open_for <= Duration::zero() {
            return Err(DomainError::validation(
                "breaker",
                "window and open_for must be positive",
            ));
        }
        if self.open_for_max < self.open_for {
            return Err(DomainError::validation(
                "breaker.open_for_max",
                "must be at least open_for",
            ));
        }
        if self.p99_latency <= Duration::zero() {
            return Err(DomainError::validation(
                "breaker.p99_latency",
                "must be positive",
            ));
        }
        if !(0.0..1.0).contains(&self.error_rate) {
            return Err(DomainError::validation(
                "breaker.error_rate",
                "must be in [0, 1)",
            ));
        }
        if self.min_calls == 0 || self.half_open_probes == 0 {
            return Err(DomainError::validation(
                "breaker",
                "min_calls and half_open_probes must be at least 1",
            ));
        }
        Ok(())
    }
}

/// May a call go out?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Closed: call.
    Allowed,
    /// Half-open: call as a probe; its outcome decides the circuit.
    Probe,
    /// V-3: open (or every probe slot taken): fail with `VENDOR_UNREACHABLE`, no call.
    Rejected,
}

/// The outcome of one vendor call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// DESIGN §6: only what says the vendor is unwell counts as an error (transport
    /// errors, timeouts, 5xx, 429); a business refusal is `false`.
    pub unwell: bool,
    /// How long the call took.
    pub latency: Duration,
}

/// A change of circuit state (emits `lock.vendor_adapter.health_changed.v1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: CircuitState,
    /// After.
    pub to: CircuitState,
}

/// Spec `003` §3 `AdapterHealthSnapshot` (without `lastError`, which the actor adds).
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSnapshot {
    /// Calls in the window.
    pub window_size: u32,
    /// Errors in the window, percent.
    pub error_rate_pct: f64,
    /// p95 latency of the window, ms.
    pub p95_latency_ms: u64,
    /// p99 latency of the window, ms.
    pub p99_latency_ms: u64,
    /// Circuit.
    pub circuit: CircuitState,
    /// When it last tripped open.
    pub last_tripped_at: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug)]
struct Call {
    at: Timestamp,
    unwell: bool,
    latency: Duration,
}

/// One breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: CircuitState,
    calls: VecDeque<Call>,
    opened_at: Option<Timestamp>,
    last_tripped_at: Option<Timestamp>,
    probes_in_flight: u32,
    /// Failed probes since the circuit last closed: the open wait doubles with each.
    reopens: u32,
}

/// Nearest-rank percentile (`q` in (0, 1]) of sorted latencies; zero when empty. With fewer
/// than 100 calls p99 is the slowest call.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::zero();
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One-sided 99.9 % normal quantile: how sure the breaker must be that a vendor's error rate
/// is above the threshold before it trips.
const TRIP_CONFIDENCE_Z: f64 = 3.09;

/// The lower bound of the Wilson score interval of `errors` failures in `n` calls, at `z`
/// standard deviations: the smallest error rate the window is still consistent with. Zero
/// for an empty window.
pub fn wilson_lower_bound(errors: usize, n: usize, z: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    let p = errors as f64 / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).max(0.0)
}

impl Breaker {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy) -> Result<Self, DomainError> {
        policy.validate()?;
        Ok(Self {
            policy,
            state: CircuitState::Closed,
            calls: VecDeque::new(),
            opened_at: None,
            last_tripped_at: None,
            probes_in_flight: 0,
            reopens: 0,
        })
    }

    /// How long the circuit stays open this time: `open_for`, doubled for every failed
    /// probe since it last closed, at most `open_for_max`.
    pub fn open_duration(&self) -> Duration {
        let factor = 1i32 << self.reopens.min(20);
        (self.policy.open_for * factor).min(self.policy.open_for_max)
    }

    /// Its policy.
    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// The state as stored (an open circuit whose `open_for` has passed stays `Open` until
    /// [`Self::poll`] or [`Self::admit`] moves it).
    pub fn state(&self) -> CircuitState {
        self.state
    }

    fn prune(&mut self, now: Timestamp) {
        let horizon = now - self.policy.window;
        while self.calls.front().is_some_and(|c| c.at <= horizon) {
            self.calls.pop_front();
        }
    }

    fn sorted_latencies(&self) -> Vec<Duration> {
        let mut l: Vec<Duration> = self.calls.iter().map(|c| c.latency).collect();
        l.sort();
        l
    }

    fn move_to(&mut self, to: CircuitState, now: Timestamp) -> Option<Transition> {
        let from = self.state;
        if from == to {
            return None;
        }
        self.state = to;
        match to {
            CircuitState::Open if from == CircuitState::HalfOpen => {
                // a failed probe: wait longer before the next one
                self.reopens = self.reopens.saturating_add(1);
                self.opened_at = Some(now);
                self.last_tripped_at = Some(now);
                self.probes_in_flight = 0;
            }
            CircuitState::Open => {
                self.opened_at = Some(now);
                self.last_tripped_at = Some(now);
                self.probes_in_flight = 0;
            }
            CircuitState::HalfOpen => self.probes_in_flight = 0,
            CircuitState::Closed => {
                // A closed circuit starts a fresh window: the errors that tripped it are
                // history, and counting them again would re-trip at once.
                self.calls.clear();
                self.opened_at = None;
                self.probes_in_flight = 0;
                self.reopens = 0;
            }
        }
        Some(Transition { from, to })
    }

    /// Moves an open circuit to half-open once `open_for` has passed. The actor calls it on
    /// its timer to learn of the transition; [`Self::admit`] does it too.
    pub fn poll(&mut self, now: Timestamp) -> Option<Transition> {
        match (self.state, self.opened_at) {
            (CircuitState::Open, Some(at)) if now - at >= self.open_duration() => {
                self.move_to(CircuitState::HalfOpen, now)
            }
            _ => None,
        }
    }

    /// May a call go out now? V-3: an open circuit rejects without a call until `open_for`
    /// has passed; then half-open admits up to `half_open_probes` concurrent probes.
    pub fn admit(&mut self, now: Timestamp) -> Admission {
        self.poll(now);
        match self.state {
            CircuitState::Closed => Admission::Allowed,
            CircuitState::Open => Admission::Rejected,
            CircuitState::HalfOpen => {
                if self.probes_in_flight < self.policy.half_open_probes {
                    self.probes_in_flight += 1;
                    Admission::Probe
                } else {
                    Admission::Rejected
                }
            }
        }
    }

    fn should_trip(&self) -> bool {
        let n = self.calls.len();
        if n < self.policy.min_calls as usize {
            return false;
        }
        let errors = self.calls.iter().filter(|c| c.unwell).count();
        wilson_lower_bound(errors, n, TRIP_CONFIDENCE_Z) > self.policy.error_rate
            || percentile(&self.sorted_latencies(), 0.99) > self.policy.p99_latency
    }

    /// Records one call's outcome. Closed: trips open when the window (with at least
    /// `min_calls`) has an error rate surely above `error_rate` (the lower bound of its
    /// 99 % Wilson interval) or a p99 above `p99_latency`.
    /// Half-open: any outcome is probe evidence (a call that finishes now tells as much as a
    /// probe); a healthy one closes, an unwell or too slow one re-opens. Open: the outcome
    /// only joins the window.
    pub fn record(&mut self, now: Timestamp, outcome: Outcome) -> Option<Transition> {
        self.prune(now);
        self.calls.push_back(Call {
            at: now,
            unwell: outcome.unwell,
            latency: outcome.latency,
        });
        match self.state {
            CircuitState::Closed if self.should_trip() => self.move_to(CircuitState::Open, now),
            CircuitState::Closed | CircuitState::Open => None,
            CircuitState::HalfOpen => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                if outcome.unwell || outcome.latency > self.policy.p99_latency {
                    self.move_to(CircuitState::Open, now)
                } else {
                    self.move_to(CircuitState::Closed, now)
                }
            }
        }
    }

    /// The circuit as it stands at `now`: an open circuit whose `open_for` has passed
    /// reads as half-open even before [`Self::poll`] moved it.
    pub fn circuit_at(&self, now: Timestamp) -> CircuitState {
        match (self.state, self.opened_at) {
            (CircuitState::Open, Some(at)) if now - at >= self.open_duration() => {
                CircuitState::HalfOpen
            }
            (s, _) => s,
        }
    }

    /// The health snapshot at `now` (spec `003` §3), over the calls inside the window.
    pub fn snapshot(&self, now: Timestamp) -> HealthSnapshot {
        let horizon = now - self.policy.window;
        let live: Vec<&Call> = self.calls.iter().filter(|c| c.at > horizon).collect();
        let n = live.len();
        let errors = live.iter().filter(|c| c.unwell).count();
        let mut sorted: Vec<Duration> = live.iter().map(|c| c.latency).collect();
        sorted.sort();
        let ms = |d: Duration| u64::try_from(d.num_milliseconds()).unwrap_or(0);
        HealthSnapshot {
            window_size: u32::try_from(n).unwrap_or(u32::MAX),
            error_rate_pct: if n == 0 {
                0.0
            } else {
                errors as f64 * 100.0 / n as f64
            },
            p95_latency_ms: ms(percentile(&sorted, 0.95)),
            p99_latency_ms: ms(percentile(&sorted, 0.99)),
            circuit: self.circuit_at(now),
            last_tripped_at: self.last_tripped_at,
        }
    }
}
