//! The `Clock` port (DESIGN §9): every timestamp and timer of Lockstep goes through it, so
//! tests can run a 12-hour outage on a manual or scaled clock.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// A point in time, always UTC.
pub type Timestamp = DateTime<Utc>;

/// Source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The wall clock. This is the one place allowed to read the system time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the Clock port is the one sanctioned reader
    fn now(&self) -> Timestamp {
        Utc::now()
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Timestamp>>,
}

impl ManualClock {
    /// A manual clock starting at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .expect("manual clock mutex is never poisoned");
        *now += by;
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: Timestamp) {
        *self
            .now
            .lock()
            .expect("manual clock mutex is never poisoned") = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self
            .now
            .lock()
            .expect("manual clock mutex is never poisoned")
    }
}

/// A clock that runs `factor` times faster than a base clock (DESIGN §9): chaos tests play
/// an hour of outage in a minute. `now = start + (base.now() - base_at_creation) × factor`.
/// Reading the base (rather than the wall) keeps it testable on a [`ManualClock`].
#[derive(Debug, Clone)]
pub struct ScaledClock {
    base: Arc<dyn Clock>,
    base_start: Timestamp,
    start: Timestamp,
    factor: f64,
}

impl ScaledClock {
    /// A clock that reads `start` now and then runs `factor` (finite, ≥ 1) times faster
    /// than `base`.
    pub fn new(
        base: Arc<dyn Clock>,
        start: Timestamp,
        factor: f64,
    ) -> Result<Self, crate::errors::DomainError> {
        if !factor.is_finite() || factor < 1.0 {
            return Err(crate::errors::DomainError::validation(
                "factor",
                "must be a finite number of at least 1",
            ));
        }
        Ok(Self {
            base_start: base.now(),
            base,
            start,
            factor,
        })
    }

    /// The speed-up.
    pub fn factor(&self) -> f64 {
        self.factor
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        // A base that steps back reads as no time elapsed: scaled time never precedes start.
        let elapsed = (self.base.now() - self.base_start).max(Duration::zero());
        let nanos = elapsed
            .num_nanoseconds()
            .map(|n| n as f64)
            .unwrap_or_else(|| elapsed.num_milliseconds() as f64 * 1e6);
        let scaled = nanos * self.factor;
        // Beyond ±292 years of scaled time, saturate instead of overflowing.
        let scaled = if scaled >= i64::MAX as f64 {
            i64::MAX
        } else {
            scaled as i64
        };
        self.start + Duration::nanoseconds(scaled)
    }
}
