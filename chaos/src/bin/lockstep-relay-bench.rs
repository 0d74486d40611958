//! `lockstep-relay-bench`: the desktop relay with a fleet of agents connected, beside the
//! machine's own WebSocket echo rate, in one run (see `lockstep_chaos::bench::relay` and
//! `lockstep_chaos::bench::echo`).
//!
//! ```sh
//! cargo build --release -p lockstep-chaos --bin lockstep-relay-bench
//! ulimit -n 65536        # 1,000 agents are 2,000 sockets in this one process
//! target/release/lockstep-relay-bench                     # 1,000 agents, 20,000 jobs
//! target/release/lockstep-relay-bench --agents 2000 --properties 200 --encode-ms 5
//! ```
//!
//! Needs no services and no root. Debug builds run, but their figures say little. The
//! figures go to stdout, progress to stderr. Exit codes: 0 the run completed and every job
//! was encoded exactly once; 1 the harness failed (the fleet did not connect, a socket
//! could not be opened); 2 a bad argument, or an open-files limit too low for the fleet;
//! 3 the exactly-once check failed (a job not encoded, or a key encoded twice).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lockstep_chaos::bench::echo::{self, EchoPlan};
use lockstep_chaos::bench::relay::{self, RelayPlan};
use lockstep_chaos::bench::{report, sys};

#[derive(Parser, Debug)]
#[command(
    name = "lockstep-relay-bench",
    about = "Measures the desktop relay with N agents connected (connect time, dispatch p50/p99, jobs/s, exactly-once) beside the machine's WebSocket echo rate"
)]
struct Cli {
    /// Agents (desktops) connected, each a WebSocket client with one simulated encoder.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Properties the agents are spread over (at least one agent each).
    #[arg(long, default_value_t = 100)]
    properties: usize,
    /// Jobs dispatched (and echo round trips).
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Jobs (and echo round trips) in flight at once.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Milliseconds the simulated encoder takes per card.
    #[arg(long, default_value_t = 0)]
    encode_ms: u64,
    /// The relay's `max_unauthenticated` (its production default): agents over it are
    /// dropped at accept and retry with their backoff.
    #[arg(long, default_value_t = 256)]
    max_unauthenticated: usize,
    /// Seconds the fleet may take to connect.
    #[arg(long, default_value_t = 120)]
    connect_timeout: u64,
    /// Skip the echo baseline (the ratios print `-`).
    #[arg(long)]
    no_echo: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.properties == 0 || cli.agents < cli.properties || cli.jobs == 0 || cli.window == 0 {
        eprintln!(
            "lockstep-relay-bench: --properties ≥ 1, --agents ≥ --properties (one agent per property at least), --jobs ≥ 1 and --window ≥ 1"
        );
        return ExitCode::from(2);
    }
    let plan = RelayPlan {
        agents: cli.agents,
        properties: cli.properties,
        jobs: cli.jobs,
        window: cli.window,
        encode_delay: Duration::from_millis(cli.encode_ms),
        max_unauthenticated: cli.max_unauthenticated.max(1),
        connect_timeout: Duration::from_secs(cli.connect_timeout),
    };
    let echo_connections = cli.agents.max(cli.window);
    // Both ends of every connection are in this process; the echo's are closed before the
    // fleet connects.
    let needed = 2 * cli.agents.max(echo_connections) as u64 + 64;
    if let Some(limit) = sys::open_files_limit() {
        if limit < needed {
            eprintln!(
                "lockstep-relay-bench: the open-files limit is {limit}; {} agents need about {needed} (both ends of each connection are in this process): run `ulimit -n 65536` in this shell first",
                cli.agents
            );
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lockstep-relay-bench: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(&plan, echo_connections, cli.no_echo)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("lockstep-relay-bench: the exactly-once check failed");
            ExitCode::from(3)
        }
        Err(e) => {
            println!("harness failure: {e:#}");
            eprintln!("lockstep-relay-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Prints each section as soon as it is measured; `Ok(exactly once held)`.
async fn run(plan: &RelayPlan, echo_connections: usize, no_echo: bool) -> anyhow::Result<bool> {
    let frame = relay::job_frame(plan)?;
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    println!(
        "{}",
        report::titled_header(
            "lockstep-relay-bench",
            &run_info(plan, workers, frame.len())
        )
    );
    let echo = if no_echo {
        None
    } else {
        eprintln!(
            "[relay-bench] websocket echo: {} round trips, {} in flight, {echo_connections} connections ...",
            plan.jobs, plan.window
        );
        let figures = echo::run(&EchoPlan {
            connections: echo_connections,
            window: plan.window,
            round_trips: plan.jobs,
            message: frame,
        })
        .await?;
        println!("{}", report::echo(&figures));
        Some(figures)
    };
    eprintln!(
        "[relay-bench] relay: {} agents connecting, then {} jobs ...",
        plan.agents, plan.jobs
    );
    let figures = relay::run(plan, |c| print!("{}", report::relay_connect(c))).await?;
    println!("{}", report::relay_jobs(&figures));
    println!("{}", report::relay_ratio(&figures, echo.as_ref()));
    Ok(figures.exactly_once())
}

fn run_info(plan: &RelayPlan, workers: usize, frame_bytes: usize) -> report::RunInfo {
    let binary = std::env::current_exe()
        .map(|path| {
            let built = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(|t| {
                    chrono::DateTime::<chrono::Utc>::from(t)
                        .format("%Y-%m-%d %H:%M:%S UTC")
                        .to_string()
                })
                .unwrap_or_else(|_| "?".into());
            format!(
                "{} (built {built}, {})",
                path.display(),
                if cfg!(debug_assertions) {
                    "DEBUG build: figures say little"
                } else {
                    "release"
                }
            )
        })
        .unwrap_or_else(|e| format!("? ({e})"));
    let cpus = sys::machine_busy_seconds(sys::clock_ticks()).1;
    let mem = sys::memory_bytes().map_or("?".into(), |b| {
        format!("{:.1} GiB", b as f64 / 2f64.powi(30))
    });
    report::RunInfo {
        command: lockstep_chaos::bench::command_line(),
        commit: lockstep_chaos::bench::git_commit(),
        binary,
        machine: format!(
            "{cpus} CPUs, {mem}; one tokio runtime of {workers} worker threads for everything; open-files limit {}",
            sys::open_files_limit().map_or("unlimited".into(), |l| l.to_string())
        ),
        setup: vec![
            format!(
                "setup:   relay with production defaults (max_unauthenticated {}, {} job slots per desktop), {} agents over {} properties, one simulated encoder each ({} ms per card)",
                plan.max_unauthenticated,
                lockstep_relay_default_slots(),
                plan.agents,
                plan.properties,
                plan.encode_delay.as_millis()
            ),
            format!(
                "plan:    {} jobs, {} in flight; the echo sends the same {frame_bytes} B encode_job frame, as many round trips, as many in flight",
                plan.jobs, plan.window
            ),
        ],
    }
}

fn lockstep_relay_default_slots() -> usize {
    lockstep_relay::RelayConfig::default().max_jobs_per_desktop
}
