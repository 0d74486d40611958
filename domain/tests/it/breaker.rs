//! The circuit breaker state machine (DESIGN §2, §6; spec `002`; V-3).

use chrono::Duration;
use lockstep_domain::{
    Admission, Breaker, BreakerPolicy, CircuitState, CircuitTransition, Outcome, Timestamp,
};
use proptest::prelude::*;

use crate::builders::*;

fn t0() -> Timestamp {
    created_at()
}

fn ok(ms: i64) -> Outcome {
    Outcome {
        unwell: false,
        latency: Duration::milliseconds(ms),
    }
}

fn bad() -> Outcome {
    Outcome {
        unwell: true,
        latency: Duration::milliseconds(100),
    }
}

fn breaker() -> Breaker {
    Breaker::new(BreakerPolicy::default()).unwrap()
}

/// Records `n` calls, one per 100 ms from `t0`, the last `errors` of them unwell; returns
/// the last transition.
fn feed(b: &mut Breaker, n: usize, errors: usize) -> Option<CircuitTransition> {
    let mut last = None;
    for i in 0..n {
        let o = if i >= n - errors { bad() } else { ok(50) };
        if let Some(t) = b.record(t0() + Duration::milliseconds(100 * i as i64), o) {
            last = Some(t);
        }
    }
    last
}

fn tripped(b: &mut Breaker) -> Timestamp {
    feed(b, 10, 10);
    assert_eq!(b.state(), CircuitState::Open);
    t0() + Duration::milliseconds(900)
}

#[test]
fn circuit_states_have_the_spec_spelling() {
    assert_eq!(CircuitState::Closed.as_str(), "closed");
    assert_eq!(CircuitState::Open.as_str(), "open");
    assert_eq!(CircuitState::HalfOpen.as_str(), "half_open");
}

#[test]
fn a_vendor_that_is_down_trips_it_at_min_calls() {
    let mut b = breaker();
    assert_eq!(feed(&mut b, 9, 9), None);
    let t = b.record(t0() + Duration::milliseconds(900), bad());
    assert_eq!(
        t,
        Some(CircuitTransition {
            from: CircuitState::Closed,
            to: CircuitState::Open
        })
    );
    assert_eq!(
        b.snapshot(t0() + Duration::seconds(2)).last_tripped_at,
        Some(t0() + Duration::milliseconds(900))
    );
}

/// Every other call failing is surely above 25 %: it trips within three dozen calls.
#[test]
fn a_vendor_failing_half_its_calls_trips_within_three_dozen_calls() {
    let mut b = breaker();
    let tripped_at = (0..100).find(|&i| {
        let o = if i % 2 == 1 { bad() } else { ok(50) };
        b.record(t0() + Duration::milliseconds(100 * i), o)
            .is_some()
    });
    assert!(
        tripped_at.is_some_and(|i| (10..36).contains(&i)),
        "{tripped_at:?}"
    );
    assert_eq!(b.state(), CircuitState::Open);
}

/// The flap the vendor_faults chaos scenario met (CI, 2026-12-04): a vendor that loses
/// one write response in five showed three errors in its first ten calls (30 %), the raw
/// share tripped the circuit, and every new key waited 30 s, three times over. Judged with
/// confidence, neither that unlucky start nor a long run at 20 % trips it.
#[test]
fn a_vendor_losing_one_response_in_five_does_not_trip_it() {
    let mut b = breaker();
    // three of the first ten, then four of the first twelve
    assert_eq!(feed(&mut b, 10, 3), None);
    assert_eq!(
        b.record(t0() + Duration::milliseconds(1000), bad()),
        None,
        "4 of 11"
    );
    // then one in five for a long while (within the window)
    for i in 11..500 {
        let o = if i % 5 == 0 { bad() } else { ok(50) };
        assert_eq!(
            b.record(t0() + Duration::milliseconds(100 * i), o),
            None,
            "call {i}"
        );
    }
    assert_eq!(b.state(), CircuitState::Closed);
}

/// Measured over seeded runs: how often a 20 %-error vendor trips the circuit within 300
/// calls. The raw share (error rate > 25 % once ten calls are in) trips most of them; the
/// confident rule almost none. Fails if the rule goes back to the raw share.
#[test]
fn a_twenty_percent_vendor_rarely_trips_it_over_many_seeded_runs() {
    // xorshift64*: a fixed sequence, no dependency
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let runs = 400;
    let (mut confident, mut raw) = (0, 0);
    for _ in 0..runs {
        let mut b = breaker();
        let (mut errors, mut raw_tripped) = (0usize, false);
        let mut tripped = false;
        for i in 0..300i64 {
            let unwell = next() < 0.2;
            errors += usize::from(unwell);
            let n = i as usize + 1;
            raw_tripped |= n >= 10 && errors as f64 / n as f64 > 0.25;
            let o = if unwell { bad() } else { ok(50) };
            tripped |= b
                .record(t0() + Duration::milliseconds(100 * i), o)
                .is_some();
        }
        confident += usize::from(tripped);
        raw += usize::from(raw_tripped);
    }
    println!("20 % errors, {runs} runs of 300 calls: confident rule tripped {confident}, raw share {raw}");
    assert!(
        confident * 100 <= runs,
        "{confident} of {runs} runs tripped (the raw share: {raw})"
    );
    assert!(raw * 2 > runs, "the raw share tripped {raw} of {runs}");
}

#[test]
fn the_wilson_lower_bound_is_the_least_rate_the_window_fits() {
    use lockstep_domain::breaker::wilson_lower_bound;
    assert_eq!(wilson_lower_bound(0, 0, 3.09), 0.0);
    assert_eq!(wilson_lower_bound(0, 50, 3.09), 0.0);
    let all = wilson_lower_bound(10, 10, 3.09);
    assert!((all - 0.5115).abs() < 1e-3, "{all}");
    // more evidence, tighter bound, always below the observed share
    let small = wilson_lower_bound(3, 10, 3.09);
    let large = wilson_lower_bound(300, 1000, 3.09);
    assert!(small < large && large < 0.3, "{small} {large}");
}

#[test]
fn exactly_25_percent_does_not_trip() {
    let mut b = breaker();
    assert_eq!(feed(&mut b, 12, 3), None);
    assert_eq!(b.state(), CircuitState::Closed);
}

#[test]
fn does_not_trip_below_min_calls() {
    let mut b = breaker();
    assert_eq!(feed(&mut b, 9, 9), None);
    assert_eq!(b.admit(t0() + Duration::seconds(1)), Admission::Allowed);
}

#[test]
fn business_refusals_do_not_count_as_errors() {
    let mut b = breaker();
    // DESIGN §6: a refusal is reported as unwell = false
    for i in 0..20 {
        assert_eq!(b.record(t0() + Duration::milliseconds(i), ok(30)), None);
    }
    assert_eq!(b.snapshot(t0() + Duration::seconds(1)).error_rate_pct, 0.0);
}

#[test]
fn trips_on_p99_above_5_seconds() {
    let mut b = breaker();
    for i in 0..9 {
        assert_eq!(b.record(t0() + Duration::milliseconds(i), ok(100)), None);
    }
    let t = b.record(t0() + Duration::milliseconds(10), ok(5_001));
    assert_eq!(t.map(|t| t.to), Some(CircuitState::Open));
    // exactly 5 s is not greater
    let mut b = breaker();
    for i in 0..10 {
        assert_eq!(b.record(t0() + Duration::milliseconds(i), ok(5_000)), None);
    }
}

#[test]
fn old_calls_leave_the_window() {
    let mut b = breaker();
    feed(&mut b, 5, 5);
    // 61 s later the five errors are gone; five more errors are still below min calls
    for i in 0..5 {
        assert_eq!(
            b.record(
                t0() + Duration::seconds(61) + Duration::milliseconds(i),
                bad()
            ),
            None
        );
    }
    assert_eq!(b.snapshot(t0() + Duration::seconds(62)).window_size, 5);
}

#[test]
fn open_rejects_without_a_call_until_open_for_has_passed() {
    let mut b = breaker();
    let at = tripped(&mut b);
    assert_eq!(b.admit(at + Duration::seconds(29)), Admission::Rejected);
    assert_eq!(
        b.snapshot(at + Duration::seconds(29)).circuit,
        CircuitState::Open
    );
}

#[test]
fn half_open_after_open_for_admits_the_configured_probes() {
    let mut b = breaker();
    let at = tripped(&mut b) + Duration::seconds(30);
    assert_eq!(
        b.poll(at),
        Some(CircuitTransition {
            from: CircuitState::Open,
            to: CircuitState::HalfOpen
        })
    );
    assert_eq!(b.admit(at), Admission::Probe);
    assert_eq!(b.admit(at), Admission::Probe);
    assert_eq!(b.admit(at), Admission::Probe);
    assert_eq!(
        b.admit(at),
        Admission::Rejected,
        "three concurrent probes at most"
    );
}

#[test]
fn a_successful_probe_closes() {
    let mut b = breaker();
    let at = tripped(&mut b) + Duration::seconds(30);
    assert_eq!(b.admit(at), Admission::Probe);
    assert_eq!(
        b.record(at, ok(80)),
        Some(CircuitTransition {
            from: CircuitState::HalfOpen,
            to: CircuitState::Closed
        })
    );
    assert_eq!(b.admit(at), Admission::Allowed);
    assert_eq!(
        b.snapshot(at).window_size,
        0,
        "a closed circuit starts a fresh window"
    );
}

#[test]
fn a_failed_probe_reopens() {
    let mut b = breaker();
    let at = tripped(&mut b) + Duration::seconds(30);
    assert_eq!(b.admit(at), Admission::Probe);
    assert_eq!(
        b.record(at, bad()),
        Some(CircuitTransition {
            from: CircuitState::HalfOpen,
            to: CircuitState::Open
        })
    );
    // each failed probe doubles the wait: 60 s now
    assert_eq!(b.admit(at + Duration::seconds(59)), Admission::Rejected);
    assert_eq!(b.admit(at + Duration::seconds(60)), Admission::Probe);
}

/// DESIGN §7: a long outage is probed ever less often, up to `open_for_max`, so twelve
/// hours cost a few hundred probes (each one a credential's attempt), not thousands; a
/// closed circuit starts again from `open_for`.
#[test]
fn failed_probes_double_the_wait_up_to_the_cap_and_a_close_resets_it() {
    let mut b = breaker();
    let mut at = tripped(&mut b);
    let mut waits = Vec::new();
    for _ in 0..8 {
        let wait = b.open_duration();
        waits.push(wait.num_seconds());
        assert_eq!(
            b.admit(at + wait - Duration::seconds(1)),
            Admission::Rejected
        );
        at += wait;
        assert_eq!(b.admit(at), Admission::Probe);
        b.record(at, bad());
    }
    assert_eq!(waits, vec![30, 60, 120, 240, 300, 300, 300, 300]);
    // a probe that succeeds closes it; the next trip waits open_for again
    at += b.open_duration();
    assert_eq!(b.admit(at), Admission::Probe);
    b.record(at, ok(50));
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(b.open_duration(), Duration::seconds(30));
    // twelve hours of outage: how many probe rounds
    let rounds = (12 * 3600 - (30 + 60 + 120 + 240)) / 300 + 4;
    assert!(rounds < 150, "{rounds} probe rounds in 12 hours");
}

#[test]
fn snapshot_reports_rates_and_percentiles() {
    let mut b = breaker();
    for i in 0..20 {
        let o = if i < 2 { bad() } else { ok(10 * (i + 1)) };
        b.record(t0() + Duration::milliseconds(i), o);
    }
    let s = b.snapshot(t0() + Duration::seconds(1));
    assert_eq!(s.window_size, 20);
    assert!((s.error_rate_pct - 10.0).abs() < 1e-9);
    assert_eq!(s.p99_latency_ms, 200);
    assert_eq!(s.p95_latency_ms, 190);
    assert_eq!(s.circuit, CircuitState::Closed);
}

#[test]
fn invalid_policies_are_refused() {
    for p in [
        BreakerPolicy {
            min_calls: 0,
            ..BreakerPolicy::default()
        },
        BreakerPolicy {
            half_open_probes: 0,
            ..BreakerPolicy::default()
        },
        BreakerPolicy {
            error_rate: 1.5,
            ..BreakerPolicy::default()
        },
        BreakerPolicy {
            open_for: Duration::zero(),
            ..BreakerPolicy::default()
        },
    ] {
        assert!(Breaker::new(p).is_err(), "{p:?}");
    }
}

#[derive(Clone, Debug)]
enum Step {
    Admit,
    Record(bool, i64),
}

proptest! {
    #![proptest_config(crate::proptest_config("breaker_never_allows_a_call_while_open_before_open_for"))]

    /// V-3: from the moment the circuit opens until `open_for` has passed, nothing is
    /// admitted; and every admitted probe count stays within `half_open_probes`.
    #[test]
    fn breaker_never_allows_a_call_while_open_before_open_for(
        steps in proptest::collection::vec((prop_oneof![
            2 => Just(Step::Admit),
            3 => (any::<bool>(), 1i64..7_000).prop_map(|(u, l)| Step::Record(u, l)),
        ], 0i64..4_000), 1..200),
    ) {
        let mut b = breaker();
        let mut now = t0();
        let mut opened_at: Option<Timestamp> = None;
        let mut probes = 0u32;
        for (step, gap_ms) in steps {
            now += Duration::milliseconds(gap_ms);
            match step {
                Step::Admit => {
                    let a = b.admit(now);
                    if let Some(at) = opened_at {
                        if now - at < Duration::seconds(30) {
                            prop_assert_eq!(a, Admission::Rejected, "admitted {:?} while open", a);
                        }
                    }
                    if a == Admission::Probe { probes += 1; prop_assert!(probes <= 3); }
                }
                Step::Record(unwell, l) => {
                    if let Some(t) = b.record(now, Outcome { unwell, latency: Duration::milliseconds(l) }) {
                        prop_assert_ne!(t.from, t.to);
                        probes = 0;
                        opened_at = (t.to == CircuitState::Open).then_some(now);
                    } else if b.state() == CircuitState::HalfOpen {
                        probes = probes.saturating_sub(1);
                    }
                }
            }
            if b.state() != CircuitState::Open { opened_at = None; }
        }
    }
}
