//! Spec `003` §2 (D-4) and spec `002`'s device events: validation of a reading and the
//! edge-triggered signals a new reading raises.

use lockstep_domain::{
    assess, assess_probe_failure, BatteryThreshold, DeviceHealth, DeviceSignal, SkewLevel,
    PROBE_FAILURES_ALERT,
};

fn reading(online: bool, battery: Option<i32>, skew_ms: Option<i64>) -> DeviceHealth {
    DeviceHealth::new(online, battery, None, skew_ms).expect("a valid reading")
}

#[test]
fn d4_battery_and_threshold_ranges_are_enforced() {
    for bad in [-1, 101, 250] {
        let e = DeviceHealth::new(true, Some(bad), None, None).unwrap_err();
        assert_eq!(e.code(), "MELMASTOON.GENERAL.VALIDATION_FAILED", "{bad}");
    }
    for ok in [0, 55, 100] {
        assert!(
            DeviceHealth::new(true, Some(ok), None, None).is_ok(),
            "{ok}"
        );
    }
    for bad in [0, 4, 51, 100] {
        assert!(BatteryThreshold::new(bad).is_err(), "{bad}");
    }
    for ok in [5, 20, 50] {
        assert_eq!(BatteryThreshold::new(ok).map(|t| t.percent()), Ok(ok as u8));
    }
}

#[test]
fn d4_battery_low_fires_when_the_threshold_is_crossed_downward_only() {
    let t = BatteryThreshold::new(20).unwrap();
    let low = |b| DeviceSignal::BatteryLow {
        percent: b,
        threshold: 20,
    };
    // crossing down
    assert_eq!(
        assess(
            Some(&reading(true, Some(25), None)),
            &reading(true, Some(19), None),
            t
        ),
        vec![low(19)]
    );
    // staying below: nothing new
    assert!(assess(
        Some(&reading(true, Some(19), None)),
        &reading(true, Some(12), None),
        t
    )
    .is_empty());
    // going up: nothing; at the threshold is not below it
    assert!(assess(
        Some(&reading(true, Some(10), None)),
        &reading(true, Some(60), None),
        t
    )
    .is_empty());
    assert!(assess(
        Some(&reading(true, Some(30), None)),
        &reading(true, Some(20), None),
        t
    )
    .is_empty());
    // a first reading already low is news; an unknown battery raises nothing
    assert_eq!(assess(None, &reading(true, Some(3), None), t), vec![low(3)]);
    assert!(assess(None, &reading(true, None, None), t).is_empty());
}

#[test]
fn offline_and_online_fire_on_the_edges() {
    let t = BatteryThreshold::DEFAULT;
    let up = reading(true, None, None);
    let down = reading(false, None, None);
    assert_eq!(assess(Some(&up), &down, t), vec![DeviceSignal::Offline]);
    assert!(assess(Some(&down), &down, t).is_empty(), "still offline");
    assert_eq!(assess(Some(&down), &up, t), vec![DeviceSignal::Online]);
    assert!(assess(Some(&up), &up, t).is_empty());
    assert_eq!(assess(None, &down, t), vec![DeviceSignal::Offline]);
    assert!(assess(None, &up, t).is_empty());
    // D-2: a decommissioned device reads offline
    assert!(!DeviceHealth::decommissioned().online);
}

#[test]
fn clock_skew_warns_above_five_minutes_and_alerts_above_ten() {
    let min = 60_000;
    assert_eq!(SkewLevel::of(5 * min), SkewLevel::Ok);
    assert_eq!(SkewLevel::of(5 * min + 1), SkewLevel::Warn);
    assert_eq!(SkewLevel::of(-6 * min), SkewLevel::Warn, "a slow clock too");
    assert_eq!(SkewLevel::of(10 * min), SkewLevel::Warn);
    assert_eq!(SkewLevel::of(10 * min + 1), SkewLevel::Alert);
    let t = BatteryThreshold::DEFAULT;
    let at = |ms| reading(true, None, Some(ms));
    assert_eq!(
        assess(Some(&at(0)), &at(7 * min), t),
        vec![DeviceSignal::ClockSkew {
            level: SkewLevel::Warn,
            skew_ms: 7 * min
        }]
    );
    assert_eq!(
        assess(Some(&at(7 * min)), &at(-11 * min), t),
        vec![DeviceSignal::ClockSkew {
            level: SkewLevel::Alert,
            skew_ms: -11 * min
        }]
    );
    assert!(
        assess(Some(&at(11 * min)), &at(12 * min), t).is_empty(),
        "already alerting"
    );
    assert!(
        assess(Some(&at(11 * min)), &at(0), t).is_empty(),
        "recovery is quiet"
    );
}

/// D-4 (issue 14): a device without its own threshold uses 25 %, the DDL's default (spec
/// `004` §3), and a threshold of its own decides when `battery_low` fires.
#[test]
fn d4_the_default_threshold_is_25_and_a_device_s_own_threshold_decides() {
    assert_eq!(BatteryThreshold::DEFAULT.percent(), 25);
    // 24 % is low by the default, not by a device whose threshold is 10 %
    let before = reading(true, Some(30), None);
    let now = reading(true, Some(24), None);
    assert_eq!(
        assess(Some(&before), &now, BatteryThreshold::DEFAULT),
        vec![DeviceSignal::BatteryLow {
            percent: 24,
            threshold: 25
        }]
    );
    assert!(assess(Some(&before), &now, BatteryThreshold::new(10).unwrap()).is_empty());
}

/// spec `002` `health_alert.v1` (issue 14): a device whose probe its vendor refuses raises
/// one alert when the refusals in a row reach the limit, not before and not again.
#[test]
fn repeated_probe_refusals_alert_once_when_the_limit_is_reached() {
    assert_eq!(PROBE_FAILURES_ALERT, 3);
    let fired: Vec<_> = (1..=6).filter_map(assess_probe_failure).collect();
    assert_eq!(fired, vec![DeviceSignal::ProbeFailures { consecutive: 3 }]);
    assert_eq!(assess_probe_failure(0), None);
}
