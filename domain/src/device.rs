//! The health side of the `LockDevice` aggregate (spec `003` §2, D-4; spec `002` device
//! events): what a probe read, whether it is valid, and which signals a new reading
//! raises against the previous one.
//!
//! Signals are edge-triggered: a lock that stays offline raises `offline` once, when it
//! goes; a battery raises `battery_low` when it crosses the threshold downward (D-4), not
//! at every probe below it; clock skew raises a warning above 5 minutes and an alert above
//! 10 minutes (DESIGN §6 / spec `003` §1.4 tolerance), each when its level is entered;
//! a device whose probe the vendor refuses [`PROBE_FAILURES_ALERT`] times in a row raises
//! a health alert when that count is reached (issue 14).

use chrono::Duration;

use crate::errors::DomainError;

/// A battery threshold in percent, D-4: `lowThresholdPercent ∈ [5, 50]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatteryThreshold(u8);

impl BatteryThreshold {
    /// The default threshold when a device has none configured: 25 %, the DDL's default
    /// (spec `004` §3 `battery_low_threshold_pct DEFAULT 25`).
    pub const DEFAULT: Self = Self(25);

    /// D-4: refuses a threshold outside 5..=50.
    pub fn new(percent: i32) -> Result<Self, DomainError> {
        match u8::try_from(percent) {
            Ok(p) if (5..=50).contains(&p) => Ok(Self(p)),
            _ => Err(DomainError::validation(
                "battery.lowThresholdPercent",
                "must be between 5 and 50",
            )),
        }
    }

    /// The percent.
    pub fn percent(self) -> u8 {
        self.0
    }
}

/// Above this skew a device's clock is worth a warning.
pub const CLOCK_SKEW_WARN: Duration = Duration::minutes(5);
/// Above this skew a device's clock raises a health alert: time windows may misfire.
pub const CLOCK_SKEW_ALERT: Duration = Duration::minutes(10);

/// How far off a device's clock is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkewLevel {
    /// Within 5 minutes.
    Ok,
    /// More than 5 minutes.
    Warn,
    /// More than 10 minutes.
    Alert,
}

impl SkewLevel {
    /// The level of a skew in milliseconds (either direction).
    pub fn of(skew_ms: i64) -> Self {
        let abs = skew_ms.unsigned_abs();
        if abs > CLOCK_SKEW_ALERT.num_milliseconds().unsigned_abs() {
            Self::Alert
        } else if abs > CLOCK_SKEW_WARN.num_milliseconds().unsigned_abs() {
            Self::Warn
        } else {
            Self::Ok
        }
    }
}

/// After this many probes of one device refused in a row by its vendor (the device
/// unknown there, or refused, while the vendor itself answers), a health alert is raised.
pub const PROBE_FAILURES_ALERT: u32 = 3;

/// The signal of a device's `consecutive`-th refused probe in a row: a
/// [`DeviceSignal::ProbeFailures`] when the count reaches [`PROBE_FAILURES_ALERT`], once
/// (edge-triggered: the fourth refusal raises nothing; a good reading resets the count).
pub fn assess_probe_failure(consecutive: u32) -> Option<DeviceSignal> {
    (consecutive == PROBE_FAILURES_ALERT).then_some(DeviceSignal::ProbeFailures { consecutive })
}

/// One validated health reading of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceHealth {
    /// Reachable by the vendor.
    pub online: bool,
    /// D-4: 0..=100 when present.
    pub battery_percent: Option<u8>,
    /// Firmware version.
    pub firmware: Option<String>,
    /// Device clock minus our clock, when the vendor reads the device clock.
    pub clock_skew_ms: Option<i64>,
}

impl DeviceHealth {
    /// Builds a reading, refusing a battery outside 0..=100 (D-4).
    pub fn new(
        online: bool,
        battery_percent: Option<i32>,
        firmware: Option<String>,
        clock_skew_ms: Option<i64>,
    ) -> Result<Self, DomainError> {
        let battery_percent = match battery_percent {
            None => None,
            Some(p) => match u8::try_from(p) {
                Ok(p) if p <= 100 => Some(p),
                _ => {
                    return Err(DomainError::validation(
                        "battery.percent",
                        "must be between 0 and 100",
                    ))
                }
            },
        };
        Ok(Self {
            online,
            battery_percent,
            firmware,
            clock_skew_ms,
        })
    }

    /// The reading of a decommissioned device, D-2: never online.
    pub fn decommissioned() -> Self {
        Self {
            online: false,
            battery_percent: None,
            firmware: None,
            clock_skew_ms: None,
        }
    }

    fn skew_level(&self) -> SkewLevel {
        self.clock_skew_ms.map_or(SkewLevel::Ok, SkewLevel::of)
    }
}

/// What a new reading raises (spec `002`: `lock.device.{offline,online,battery_low,
/// health_alert}.v1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSignal {
    /// Was reachable, is not.
    Offline,
    /// Was unreachable, is again.
    Online,
    /// The battery crossed the threshold downward (D-4).
    BatteryLow {
        /// Now.
        percent: u8,
        /// The threshold it crossed.
        threshold: u8,
    },
    /// The clock skew entered the warning or the alert level.
    ClockSkew {
        /// `Warn` or `Alert`.
        level: SkewLevel,
        /// Device minus our clock.
        skew_ms: i64,
    },
    /// The vendor refused the device's probe this many times in a row (a health alert).
    ProbeFailures {
        /// Refusals in a row.
        consecutive: u32,
    },
}

/// The signals `next` raises after `previous` (`None`: the first reading of the device,
/// compared with a healthy, online device).
pub fn assess(
    previous: Option<&DeviceHealth>,
    next: &DeviceHealth,
    threshold: BatteryThreshold,
) -> Vec<DeviceSignal> {
    let mut out = Vec::new();
    let was_online = previous.is_none_or(|p| p.online);
    match (was_online, next.online) {
        (true, false) => out.push(DeviceSignal::Offline),
        (false, true) => out.push(DeviceSignal::Online),
        _ => {}
    }
    if let Some(now) = next.battery_percent {
        let t = threshold.percent();
        // unknown before counts as above the threshold: a first low reading is news
        let was_above = previous
            .and_then(|p| p.battery_percent)
            .is_none_or(|b| b >= t);
        if now < t && was_above {
            out.push(DeviceSignal::BatteryLow {
                percent: now,
                threshold: t,
            });
        }
    }
    let (before, after) = (
        previous.map_or(SkewLevel::Ok, DeviceHealth::skew_level),
        next.skew_level(),
    );
    if after > before {
        out.push(DeviceSignal::ClockSkew {
            level: after,
            skew_ms: next.clock_skew_ms.unwrap_or_default(),
        });
    }
    out
}
