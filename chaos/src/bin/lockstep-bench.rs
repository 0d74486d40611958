//! `lockstep-bench`: Lockstep's throughput and latency beside the machine's own limits, in
//! one run (see `lockstep_chaos::bench`).
//!
//! ```sh
//! scripts/services                                            # once: Postgres and RabbitMQ
//! cargo build --release -p lockstep-orchestrator -p lockstep-chaos
//! LOCKSTEP_BIN=target/release/lockstep target/release/lockstep-bench             # 1 node
//! LOCKSTEP_BIN=target/release/lockstep target/release/lockstep-bench --nodes 2
//! ```
//!
//! Debug builds run, but their figures say little. Needs root, like the chaos scenarios
//! (its own Postgres cluster and RabbitMQ node). The figures go to stdout, the progress
//! line to stderr. The exit code is 0 whatever the figures are; 1 only when the harness
//! failed (a process that would not start, a phase that could not be measured), 2 for a
//! bad argument.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lockstep_chaos::bench::{self, lockstep::Plan, machine};

#[derive(Parser, Debug)]
#[command(
    name = "lockstep-bench",
    about = "Measures Lockstep's sagas/s, latencies, transactions and vendor calls per saga beside pgbench and a raw RabbitMQ rate"
)]
struct Cli {
    /// Confirmations in the burst.
    #[arg(long, default_value_t = 3000)]
    confirmations: usize,
    /// Cancellations during the burst, as a share of the confirmations (of stays issued
    /// before the burst).
    #[arg(long, default_value_t = 0.05)]
    cancel_share: f64,
    /// Lockstep nodes: 1, or 2 sharing the partitions.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Confirmations of the idle phase, one at a time.
    #[arg(long, default_value_t = 200)]
    idle_samples: usize,
    /// Keep the run's directories (nodes' logs and configs, the cluster's and broker's
    /// logs) and print where they are.
    #[arg(long)]
    keep: bool,
    /// `[amqp] partitions`.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// `[database] max_connections` of each node.
    #[arg(long, default_value_t = 16)]
    max_connections: u32,
    /// `[amqp] tick_interval_ms` (Lockstep's default).
    #[arg(long, default_value_t = 2000)]
    tick_ms: u64,
    /// Properties on the TTLock simulator (each a saga-serial unit of today's engine).
    #[arg(long, default_value_t = 8)]
    properties: usize,
    /// Rooms (one lock each) per property.
    #[arg(long, default_value_t = 8)]
    rooms: usize,
    /// Unconfirmed publishes at most (the burst's and the raw RabbitMQ rate's).
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Seconds the warm-up and the burst may each take before the run stops waiting and
    /// reports what completed.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// `pgbench -c`.
    #[arg(long, default_value_t = 8)]
    pgbench_clients: u32,
    /// `pgbench -j`.
    #[arg(long, default_value_t = 2)]
    pgbench_threads: u32,
    /// `pgbench -T`, seconds.
    #[arg(long, default_value_t = 20)]
    pgbench_seconds: u32,
    /// `pgbench -i -s`.
    #[arg(long, default_value_t = 10)]
    pgbench_scale: u32,
    /// Messages of the raw RabbitMQ rate.
    #[arg(long, default_value_t = 20_000)]
    raw_messages: usize,
    /// Skip the machine baselines (pgbench, raw RabbitMQ); the ratios print `-`.
    #[arg(long)]
    no_baselines: bool,
    /// Seed of the world's randomness (names of stays; printed).
    #[arg(long)]
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !(1..=2).contains(&cli.nodes) {
        eprintln!("lockstep-bench: --nodes is 1 or 2");
        return ExitCode::from(2);
    }
    if !(0.0..=1.0).contains(&cli.cancel_share) || cli.confirmations == 0 {
        eprintln!("lockstep-bench: --confirmations > 0 and --cancel-share in 0..=1");
        return ExitCode::from(2);
    }
    if cli.keep {
        lockstep_chaos::util::keep_scratch_dirs();
    }
    let options = bench::Options {
        plan: Plan {
            confirmations: cli.confirmations,
            cancel_share: cli.cancel_share,
            idle_samples: cli.idle_samples,
            window: cli.window.max(1),
            timeout: Duration::from_secs(cli.timeout),
        },
        nodes: cli.nodes,
        partitions: cli.partitions,
        max_connections: cli.max_connections,
        tick_ms: cli.tick_ms,
        properties: cli.properties.max(1),
        rooms: cli.rooms.max(1),
        pgbench: machine::PgbenchPlan {
            clients: cli.pgbench_clients,
            threads: cli.pgbench_threads,
            seconds: cli.pgbench_seconds,
            scale: cli.pgbench_scale,
        },
        rabbit: machine::RabbitPlan {
            messages: cli.raw_messages.max(1),
            window: cli.window.max(1),
            prefetch: 64,
        },
        no_baselines: cli.no_baselines,
        seed: cli.seed,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lockstep-bench: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(bench::run(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("harness failure: {e:#}");
            eprintln!("lockstep-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
