//! One test per scenario, short profile, TTLock: nothing lost, duplicated, stale or stuck
//! (and every other invariant of the scenario). Issue 10 lists bugs some of them find.

use lockstep_chaos::check::Figures;
use lockstep_chaos::rig::{Rig, RigOptions};
use lockstep_chaos::scenarios::{self, Profile, Spec};
use lockstep_chaos::vendors::Vendor;
use lockstep_chaos::world::LoadPlan;

async fn run_short(name: &str) -> Figures {
    crate::ensure_lockstep_built();
    let f = scenarios::run(name, &Spec::new(Profile::Short, &[Vendor::Ttlock])).await;
    println!("{}", f.report());
    f
}

fn assert_door_invariants(f: &Figures) {
    assert_eq!(f.error, None, "{}", f.report());
    assert_eq!(f.lost(), 0, "{}", f.report());
    assert_eq!(f.duplicated(), 0, "{}", f.report());
    assert_eq!(f.stale(), 0, "{}", f.report());
    assert_eq!(f.stuck(), 0, "{}", f.report());
    assert!(f.passed(), "{}", f.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_loses_nothing() {
    assert_door_invariants(&run_short("kill9").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_under_load_loses_nothing() {
    assert_door_invariants(&run_short("broker_down").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_under_load_loses_nothing_and_dead_letters_nothing() {
    let f = run_short("postgres_down").await;
    assert_eq!(f.dlq.unexpected, 0, "{}", f.report());
    assert_door_invariants(&f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_vendor_responses_and_latency_spikes_duplicate_nothing() {
    assert_door_invariants(&run_short("vendor_faults").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_within_the_bound_and_loses_nothing() {
    let f = run_short("sigterm").await;
    assert!(
        f.extra
            .iter()
            .any(|(k, v)| k == "exit_over_bound" && v == "0"),
        "{}",
        f.report()
    );
    assert_door_invariants(&f);
}

/// The checker's view of every vendor in a real run: with no fault, each stay on each of the
/// five vendors ends with exactly its key (kind, window) and each cancelled one without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vendor_holds_exactly_the_expected_keys_without_faults() -> anyhow::Result<()> {
    crate::ensure_lockstep_built();
    let mut options = RigOptions::new("all_vendors", &Vendor::ALL);
    options.properties_per_vendor = 1;
    options.rooms_per_property = 4;
    let mut rig = Rig::start(options).await?;
    rig.world
        .spawn_load(LoadPlan::standard(60, 20.0))
        .finish()
        .await?;
    let since = std::time::Instant::now();
    let c = rig
        .converge(since, std::time::Duration::from_secs(60))
        .await;
    let f = rig
        .figures("all_vendors", c, lockstep_chaos::rig::now(), false)
        .await;
    println!("{}", f.report());
    assert_door_invariants(&f);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twelve_hour_outage_of_every_vendor_costs_no_key_and_removals_land_first() {
    crate::ensure_lockstep_built();
    // every vendor (the scenario's own default), on the scaled clock
    let f = scenarios::run("vendor_outage", &Spec::new(Profile::Short, &[])).await;
    println!("{}", f.report());
    assert_eq!(f.vendors.len(), 5, "{}", f.report());
    assert!(f.failures.is_empty(), "{}", f.report());
    assert_door_invariants(&f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_fail_over_a_killed_and_a_cut_off_node_and_fence_the_stale_writer() {
    let f = run_short("failover").await;
    assert!(f.failures.is_empty(), "{}", f.report());
    assert_door_invariants(&f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_account_secret_holds_the_keys_until_it_is_fixed() {
    let f = run_short("wrong_secret").await;
    assert!(f.failures.is_empty(), "{}", f.report());
    assert_door_invariants(&f);
}
