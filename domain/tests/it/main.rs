//! Lockstep domain: the one integration-test binary of the crate (STYLE "Tests").

use proptest::test_runner::{Config as ProptestConfig, RngSeed};

/// The proptest configuration of this binary: a fixed 512 cases per property.
///
/// Seed source: `PROPTEST_RNG_SEED` when set (to replay a run), otherwise a fresh `u64`
/// from `rand::random` (the OS-seeded thread RNG). Either way the seed is printed, so a
/// failure can be replayed with `PROPTEST_RNG_SEED=<seed> cargo test -p lockstep-domain`;
/// proptest also prints the shrunk failing sequence and records it under
/// `tests/proptest-regressions/` (commit those files: they replay first).
pub fn proptest_config(property: &str) -> ProptestConfig {
    let mut config = ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    };
    if let RngSeed::Random = config.rng_seed {
        config.rng_seed = RngSeed::Fixed(rand::random());
    }
    eprintln!(
        "{property}: {} cases, seed {} (replay with PROPTEST_RNG_SEED={})",
        config.cases, config.rng_seed, config.rng_seed
    );
    config
}
mod anomaly;
mod anomaly_replay;
mod attempts;
mod breaker;
mod builders;
mod clock;
mod device;
mod events;
mod invariants;
mod master;
mod offline;
mod policy;
mod reservation_saga;
mod saga_props;
mod shift_saga;
mod state_machine_props;
