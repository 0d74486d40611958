//! The `ScaledClock` (DESIGN §9).

use std::sync::Arc;

use chrono::Duration;
use lockstep_domain::{Clock, ManualClock, ScaledClock};

use crate::builders::*;

#[test]
fn scaled_clock_plays_an_hour_in_a_minute() {
    let base = ManualClock::new(created_at());
    let start = valid_from();
    let c = ScaledClock::new(Arc::new(base.clone()), start, 60.0).unwrap();
    assert_eq!(c.now(), start);
    base.advance(Duration::seconds(60));
    assert_eq!(c.now(), start + Duration::hours(1));
    base.advance(Duration::milliseconds(500));
    assert_eq!(c.now(), start + Duration::hours(1) + Duration::seconds(30));
}

#[test]
fn scaled_clock_never_runs_before_its_start() {
    let base = ManualClock::new(created_at());
    let c = ScaledClock::new(Arc::new(base.clone()), valid_from(), 10.0).unwrap();
    base.set(created_at() - Duration::hours(1));
    assert_eq!(c.now(), valid_from());
}

#[test]
fn scaled_clock_refuses_factors_below_one() {
    let base: Arc<dyn Clock> = Arc::new(ManualClock::new(created_at()));
    for f in [0.5, 0.0, -2.0, f64::NAN, f64::INFINITY] {
        assert!(
            ScaledClock::new(base.clone(), valid_from(), f).is_err(),
            "{f}"
        );
    }
    assert!(ScaledClock::new(base, valid_from(), 1.0).is_ok());
}
