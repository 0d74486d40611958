//! `lockstep-chaos`: runs the chaos scenarios against the real `lockstep` binary.
//!
//! ```sh
//! scripts/services                                   # once: installs Postgres and RabbitMQ
//! cargo build -p lockstep-orchestrator -p lockstep-chaos  # the lockstep binary and this one
//! target/debug/lockstep-chaos --profile short        # every scenario, CI-sized
//! target/debug/lockstep-chaos --profile full kill9 postgres_down --vendors ttlock,salto
//! target/debug/lockstep-chaos --seed 9312091369738480256 postgres_down   # replay a run
//! ```
//!
//! `LOCKSTEP_CHAOS_KEEP=1` keeps each scenario's directories (nodes' logs and configs, the
//! cluster's and the broker's logs) and prints where they are.
//!
//! Each scenario starts its own Postgres cluster and RabbitMQ node (needs root, like
//! `scripts/services`), prints a progress line on stderr and a block of figures on stdout;
//! a summary table ends the run. The exit code is 1 if any invariant failed. The `lockstep`
//! binary is `$LOCKSTEP_BIN`, else the one next to this executable.

use std::process::ExitCode;

use clap::Parser;
use lockstep_chaos::scenarios::{self, Profile, Spec};
use lockstep_chaos::vendors::Vendor;

#[derive(Parser, Debug)]
#[command(
    name = "lockstep-chaos",
    about = "Runs Lockstep's chaos scenarios and checks the door invariants"
)]
struct Cli {
    /// `short` (CI-sized, a few minutes in all) or `full` (the issue's sizes).
    #[arg(long, default_value = "short")]
    profile: String,
    /// Vendors to put properties on: comma-separated names, or `all` (default: each
    /// scenario's own, TTLock for most, all five for `vendor_outage`).
    #[arg(long, value_delimiter = ',')]
    vendors: Vec<String>,
    /// Scenarios to run (default: all).
    #[arg(value_name = "SCENARIO")]
    scenarios: Vec<String>,
    /// Seed of every scenario's randomness (each run prints the one it used).
    #[arg(long)]
    seed: Option<u64>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        for name in scenarios::NAMES {
            println!("{name}");
        }
        return ExitCode::SUCCESS;
    }
    let parsed = (|| -> anyhow::Result<(Profile, Vec<Vendor>, Vec<String>)> {
        let profile = Profile::parse(&cli.profile)?;
        let vendors = if cli.vendors.iter().any(|v| v == "all") {
            Vendor::ALL.to_vec()
        } else {
            cli.vendors
                .iter()
                .map(|v| Vendor::parse(v.trim()))
                .collect::<anyhow::Result<_>>()?
        };
        let names = if cli.scenarios.is_empty() {
            scenarios::NAMES.iter().map(|s| (*s).to_owned()).collect()
        } else {
            for s in &cli.scenarios {
                if !scenarios::NAMES.contains(&s.as_str()) {
                    anyhow::bail!("unknown scenario {s:?} (one of {:?})", scenarios::NAMES);
                }
            }
            cli.scenarios.clone()
        };
        Ok((profile, vendors, names))
    })();
    let (profile, vendors, names) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lockstep-chaos: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lockstep-chaos: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let all = runtime.block_on(async {
        let mut all = Vec::new();
        for name in &names {
            let spec = Spec {
                seed: cli.seed,
                ..Spec::new(profile, &vendors)
            };
            let f = scenarios::run(name, &spec).await;
            println!("{}\n", f.report());
            all.push(f);
        }
        all
    });
    println!("summary ({profile:?} profile):");
    println!(
        "  {:<14} {:>7} {:>5} {:>10} {:>5} {:>5} {:>14} {:>9}  verdict",
        "scenario", "events", "lost", "duplicated", "stale", "stuck", "dlq_unexpected", "recovery"
    );
    for f in &all {
        println!(
            "  {:<14} {:>7} {:>5} {:>10} {:>5} {:>5} {:>14} {:>9}  {}",
            f.scenario,
            f.events,
            f.lost(),
            f.duplicated(),
            f.stale(),
            f.stuck(),
            f.dlq.unexpected,
            f.recovery
                .map(|d| format!("{:.1}s", d.as_secs_f64()))
                .unwrap_or_else(|| "never".into()),
            if f.passed() { "PASS" } else { "FAIL" }
        );
    }
    if all.iter().all(|f| f.passed()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
