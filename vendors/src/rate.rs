//! Request-level rate limits of a vendor account (DESIGN §6; spec `003` §6
//! `rateLimitPerMin`).
//!
//! A vendor counts HTTP requests, not `LockPort` operations, and one operation is several
//! requests at Salto, Kisi and Brivo (token, lookup, create, assign). So the limit is taken
//! here, in front of every request an adapter sends, token requests included, through the
//! adapter's [`RateGate`]. The runtime installs in that gate the [`AccountLimiter`] of the
//! vendor account the adapter uses ([`LockPort::account`](crate::LockPort::account)): one
//! per account, shared by every adapter (property) on it and, when it is backed by the
//! store's GCRA row, by every node.
//!
//! A 429 holds the whole account until its `Retry-After` (1 s when it names none), not only
//! the request that got it. Waits are measured on the [`Clock`] port, so a scaled clock
//! scales them (DESIGN §9), and the real time spent waiting is reported to the caller's
//! [`WaitMeter`] so a worker's timeout and latency figures leave it out.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use lockstep_domain::Clock;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};

/// The longest single sleep while waiting: a scaled or manual clock is re-read this often.
const POLL: Duration = Duration::from_millis(100);

/// How long a 429 without `Retry-After` holds the account.
const DEFAULT_HOLD: Duration = Duration::from_secs(1);

/// The request rate of one vendor account.
#[async_trait::async_trait]
pub trait AccountLimiter: Send + Sync + fmt::Debug {
    /// Waits until one more request of the account may be sent, and takes that slot.
    async fn acquire(&self);
    /// The vendor refused with 429: no request of the account before `until`.
    async fn hold_until(&self, until: DateTime<Utc>);
}

/// Sleeps until `at` on `clock`, re-reading it at least every 100 ms of real time.
pub async fn sleep_until(clock: &dyn Clock, at: DateTime<Utc>) {
    loop {
        let left = at - clock.now();
        let Ok(left) = left.to_std() else { return };
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(POLL)).await;
    }
}

/// governor's clock, read from our `Clock` port (DESIGN §9).
#[derive(Clone, Debug)]
pub struct LimiterClock(pub Arc<dyn Clock>);

impl GovernorClock for LimiterClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        let t = self.0.now();
        let nanos = t.timestamp_nanos_opt().unwrap_or(i64::MAX).max(0) as u64;
        Nanos::from(nanos)
    }
}

type Governor = RateLimiter<NotKeyed, InMemoryState, LimiterClock, NoOpMiddleware<Nanos>>;

/// An account's limit inside one process (governor, burst 1: requests evenly spaced).
pub struct LocalLimiter {
    governor: Governor,
    clock: Arc<dyn Clock>,
    held_until: Mutex<Option<DateTime<Utc>>>,
}

impl fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLimiter").finish_non_exhaustive()
    }
}

impl LocalLimiter {
    /// `per_minute` requests a minute, evenly spaced. governor's default burst is the whole
    /// minute's quota, and even a one-second burst on top of the steady rate can exceed a
    /// vendor that counts per second; spacing still delivers the configured rate.
    pub fn new(per_minute: NonZeroU32, clock: Arc<dyn Clock>) -> Self {
        Self {
            governor: RateLimiter::direct_with_clock(
                Quota::per_minute(per_minute).allow_burst(NonZeroU32::MIN),
                LimiterClock(clock.clone()),
            ),
            clock,
            held_until: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl AccountLimiter for LocalLimiter {
    async fn acquire(&self) {
        let held = *self.held_until.lock().expect("never poisoned");
        if let Some(until) = held {
            sleep_until(self.clock.as_ref(), until).await;
        }
        while let Err(not_until) = self.governor.check() {
            let wait = not_until.wait_time_from(LimiterClock(self.clock.clone()).now());
            tokio::time::sleep(wait.clamp(Duration::from_millis(1), POLL)).await;
        }
    }

    async fn hold_until(&self, until: DateTime<Utc>) {
        let mut held = self.held_until.lock().expect("never poisoned");
        *held = Some(held.map_or(until, |h| h.max(until)));
    }
}

/// Real time a task spent waiting at rate gates.
pub type WaitMeter = Arc<AtomicU64>;

tokio::task_local! {
    static WAIT_METER: WaitMeter;
}

/// Runs `f` with `meter` counting the nanoseconds of real time its requests wait at rate
/// gates (a vendor worker leaves them out of its timeout and latency).
pub async fn metered<F: std::future::Future>(meter: WaitMeter, f: F) -> F::Output {
    WAIT_METER.scope(meter, f).await
}

/// Where an adapter takes its account's limit before each request. Empty (no limit) until
/// the runtime installs the account's limiter.
#[derive(Clone, Default)]
pub struct RateGate(Arc<RwLock<Option<Arc<dyn AccountLimiter>>>>);

impl fmt::Debug for RateGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RateGate")
            .field(&self.limiter().is_some())
            .finish()
    }
}

impl RateGate {
    /// Puts every request of this adapter under `limiter` from now on.
    pub fn install(&self, limiter: Arc<dyn AccountLimiter>) {
        *self.0.write().expect("never poisoned") = Some(limiter);
    }

    fn limiter(&self) -> Option<Arc<dyn AccountLimiter>> {
        self.0.read().expect("never poisoned").clone()
    }

    /// Sends one request under the account's limit; a 429 holds the account for the
    /// `Retry-After` it names. The caller still reads the response (and maps the 429).
    pub(crate) async fn send(
        &self,
        clock: &dyn Clock,
        rb: RequestBuilder,
    ) -> reqwest::Result<Response> {
        let limiter = self.limiter();
        if let Some(l) = &limiter {
            // Real time, reported to the worker: not a business-time figure.
            #[allow(clippy::disallowed_methods)]
            let started = std::time::Instant::now();
            l.acquire().await;
            let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let _ = WAIT_METER.try_with(|m| m.fetch_add(waited, Ordering::Relaxed));
        }
        let resp = rb.send().await?;
        if let (Some(l), StatusCode::TOO_MANY_REQUESTS) = (&limiter, resp.status()) {
            let now = clock.now();
            let hold = retry_after(resp.headers(), now).unwrap_or(DEFAULT_HOLD);
            let hold = chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::zero());
            l.hold_until(now + hold).await;
        }
        Ok(resp)
    }
}

/// A response's `Retry-After`, as delta-seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_domain::ManualClock;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap();
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_static(v));
            retry_after(&h, now)
        };
        assert_eq!(with("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            with("Wed, 21 Oct 2015 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(with("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[tokio::test]
    async fn a_local_limiter_spaces_requests_and_honours_a_hold() {
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let l = LocalLimiter::new(NonZeroU32::new(60).unwrap(), clock.clone());
        l.acquire().await;
        // the next slot is a second later on the business clock: not before it moves
        let second = tokio::time::timeout(Duration::from_millis(300), l.acquire()).await;
        assert!(second.is_err(), "a second request within the second waits");
        clock.advance(chrono::Duration::seconds(1));
        l.acquire().await;
        // a hold keeps the account quiet past the rate's own slot
        l.hold_until(clock.now() + chrono::Duration::seconds(30))
            .await;
        clock.advance(chrono::Duration::seconds(2));
        let held = tokio::time::timeout(Duration::from_millis(300), l.acquire()).await;
        assert!(held.is_err(), "held until the Retry-After");
        clock.advance(chrono::Duration::seconds(29));
        tokio::time::timeout(Duration::from_secs(2), l.acquire())
            .await
            .expect("free after the hold");
    }
}
