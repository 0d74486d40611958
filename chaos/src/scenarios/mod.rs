//! The scenarios, one file each: each starts a [`Rig`](crate::rig::Rig), publishes load,
//! injects its faults, waits for recovery and returns its [`Figures`].
//!
//! Every scenario is `async fn run(spec: &Spec) -> anyhow::Result<Figures>`: the [`Spec`]
//! names the [`Profile`] (short: CI-sized, well under 3 minutes each on two cores; full: the
//! issue's sizes), the vendors to put properties on (TTLock by default) and, to replay a
//! run, the seed it printed. A new scenario is a file here, one arm in [`run`] and its name
//! in [`NAMES`].

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::check::Figures;
use crate::rig::RigOptions;
use crate::vendors::Vendor;

pub mod broker_down;
pub mod failover;
pub mod kill9;
pub mod postgres_down;
pub mod sigterm;
pub mod vendor_faults;
pub mod vendor_outage;
pub mod wrong_secret;

/// How big a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// CI-sized: about 200 stays, short faults.
    Short,
    /// The sizes: 1,000 stays, long faults.
    Full,
}

impl Profile {
    /// Parses `short` or `full`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "short" => Ok(Self::Short),
            "full" => Ok(Self::Full),
            other => anyhow::bail!("unknown profile {other:?} (short, full)"),
        }
    }

    /// Picks the short or the full value.
    pub fn pick<T>(self, short: T, full: T) -> T {
        match self {
            Self::Short => short,
            Self::Full => full,
        }
    }

    /// How long a scenario waits for recovery after its faults healed and its load ended.
    pub fn converge_timeout(self) -> Duration {
        self.pick(Duration::from_secs(60), Duration::from_secs(600))
    }
}

/// What to run a scenario with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Sizes and fault lengths.
    pub profile: Profile,
    /// Vendors with properties; empty: the scenario's own default (TTLock, or every
    /// vendor where the scenario is about all of them).
    pub vendors: Vec<Vendor>,
    /// The seed of the world's and the scenario's randomness (`None`: a random one, printed).
    pub seed: Option<u64>,
}

impl Spec {
    /// `profile` on `vendors`, a random seed.
    pub fn new(profile: Profile, vendors: &[Vendor]) -> Self {
        Self {
            profile,
            vendors: vendors.to_vec(),
            seed: None,
        }
    }

    /// The rig options of scenario `name`: the defaults, these vendors and this seed.
    pub fn options(&self, name: &str) -> RigOptions {
        self.options_or(name, &[Vendor::Ttlock])
    }

    /// [`Self::options`] with `default` as the vendors when none were named.
    pub fn options_or(&self, name: &str, default: &[Vendor]) -> RigOptions {
        let vendors = if self.vendors.is_empty() {
            default
        } else {
            &self.vendors
        };
        let mut o = RigOptions::new(name, vendors);
        if let Some(seed) = self.seed {
            o.seed = seed;
        }
        o
    }
}

/// Every scenario's name, in the order `lockstep-chaos` runs them.
pub const NAMES: &[&str] = &[
    "kill9",
    "broker_down",
    "postgres_down",
    "vendor_faults",
    "sigterm",
    "vendor_outage",
    "failover",
    "wrong_secret",
];

/// Runs scenario `name`; a harness failure (a process that would not start) is reported in
/// [`Figures::error`], never as a pass.
pub async fn run(name: &str, spec: &Spec) -> Figures {
    let result = match name {
        "kill9" => kill9::run(spec).await,
        "broker_down" => broker_down::run(spec).await,
        "postgres_down" => postgres_down::run(spec).await,
        "vendor_faults" => vendor_faults::run(spec).await,
        "sigterm" => sigterm::run(spec).await,
        "vendor_outage" => vendor_outage::run(spec).await,
        "failover" => failover::run(spec).await,
        "wrong_secret" => wrong_secret::run(spec).await,
        other => Err(anyhow::anyhow!(
            "unknown scenario {other:?} (one of {NAMES:?})"
        )),
    };
    result.unwrap_or_else(|e| Figures {
        scenario: name.to_owned(),
        vendors: spec.vendors.clone(),
        error: Some(format!("{e:#}")),
        ..Figures::default()
    })
}

/// A random pause between `min` and `max` (the scenario's own seeded RNG).
pub(crate) fn pause(rng: &mut StdRng, min: Duration, max: Duration) -> Duration {
    let span = max.saturating_sub(min).as_millis() as u64;
    min + Duration::from_millis(rng.gen_range(0..=span))
}

/// The scenario RNG, from the world's seed (printed at start).
pub(crate) fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ 0x5eed_c4a0_5000_0001)
}

/// Adds `panics=N` to the figures when the nodes' logs show panics (e.g. issue 10's sqlx
/// panics at shutdown).
pub(crate) fn note_panics(rig: &crate::rig::Rig, f: &mut Figures) {
    let mut panics = 0;
    for n in &rig.nodes {
        let log = n.log_text();
        let lines: Vec<&str> = log.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.contains("panicked at") {
                panics += 1;
                // the rig's directory goes when the scenario passes: say where and what
                let what = lines.get(i + 1).copied().unwrap_or_default();
                eprintln!("  panic in a node's log: {} {}", l.trim(), what.trim());
            }
        }
    }
    if panics > 0 {
        f.extra.push(("panics".into(), panics.to_string()));
    }
}
