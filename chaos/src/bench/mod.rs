//! The benchmark (issue 11's `chaos/bench`; the `lockstep-bench` binary): in one run, the
//! machine's own limits and Lockstep's figures on the same Postgres cluster and RabbitMQ
//! node, printed side by side with the ratios the issue sets targets for.
//!
//! A [`Rig`] is prepared (its own cluster and broker, the TTLock simulator without a rate
//! limit, the nodes' configs); [`machine`] measures `pgbench -N` and a raw RabbitMQ
//! publish+consume rate before any node starts; the nodes start in production mode; then
//! [`lockstep`] runs its warm-up, idle and burst phases, and [`report`] prints each
//! section as soon as it is measured. A measurement, not a test: nothing here asserts a
//! figure.
//!
//! Build both binaries in release for meaningful numbers:
//!
//! ```sh
//! cargo build --release -p lockstep-orchestrator -p lockstep-chaos
//! LOCKSTEP_BIN=target/release/lockstep target/release/lockstep-bench --nodes 2
//! ```
//!
//! The desktop relay has a benchmark of its own, with no cluster or broker: [`relay`] (the
//! relay server and a fleet of reference agents in this process) read against [`echo`]
//! (the machine's WebSocket echo rate), run by the `lockstep-relay-bench` binary.

pub mod echo;
pub mod events;
pub mod lockstep;
pub mod machine;
pub mod pipeline;
pub mod probe;
pub mod relay;
pub mod report;
pub mod sys;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::Context;

use crate::node::lockstep_bin;
use crate::rabbit::LOCKSTEP_USER;
use crate::rig::{Rig, RigOptions};
use crate::vendors::Vendor;

/// Everything a run can be told.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Lockstep's phases.
    pub plan: lockstep::Plan,
    /// Lockstep nodes (2: they share the partitions, half each at home).
    pub nodes: usize,
    /// `[amqp] partitions`.
    pub partitions: u32,
    /// `[database] max_connections` of each node.
    pub max_connections: u32,
    /// `[amqp] tick_interval_ms`.
    pub tick_ms: u64,
    /// Properties on the TTLock simulator.
    pub properties: usize,
    /// Rooms (one lock each) per property.
    pub rooms: usize,
    /// `pgbench`'s run.
    pub pgbench: machine::PgbenchPlan,
    /// The raw RabbitMQ measurement.
    pub rabbit: machine::RabbitPlan,
    /// Skip both machine baselines (the ratios then print `-`).
    pub no_baselines: bool,
    /// The world's seed (`None`: random, printed).
    pub seed: Option<u64>,
}

/// This process's command line, quoted where a shell needs it.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the run was: command line, commit, binary, machine, setup.
fn run_info(options: &Options, rig: &Rig) -> report::RunInfo {
    let command = command_line();
    let command = match std::env::var("LOCKSTEP_BIN") {
        Ok(bin) => format!("LOCKSTEP_BIN={bin} {command}"),
        Err(_) => command,
    };
    let binary = match lockstep_bin() {
        Ok(path) => {
            let built = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(|t| {
                    chrono::DateTime::<chrono::Utc>::from(t)
                        .format("%Y-%m-%d %H:%M:%S UTC")
                        .to_string()
                })
                .unwrap_or_else(|_| "?".into());
            format!("{} (built {built})", path.display())
        }
        Err(e) => format!("? ({e:#})"),
    };
    let (cpus, mem) = (
        sys::machine_busy_seconds(sys::clock_ticks()).1,
        sys::memory_bytes().map_or("?".into(), |b| {
            format!("{:.1} GiB", b as f64 / 2f64.powi(30))
        }),
    );
    let pg_version = rig
        .pg
        .psql("SHOW server_version")
        .unwrap_or_else(|_| "?".into());
    let mq_version = rig
        .rabbit
        .ctl(&["version"])
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let p = &options.plan;
    report::RunInfo {
        command,
        commit: git_commit(),
        binary,
        machine: format!(
            "{cpus} CPUs, {mem}; postgres {pg_version} (fsync on, synchronous_commit on), rabbitmq {mq_version}"
        ),
        setup: vec![
            format!(
                "setup:   {} lockstep node(s) in production mode, {} partitions, [database] max_connections = {}, tick {} ms; {} properties × {} rooms on the TTLock simulator (rate limit off, door journal on)",
                options.nodes, options.partitions, options.max_connections, options.tick_ms, options.properties, options.rooms
            ),
            format!(
                "plan:    {} confirmations in the burst, {} cancellations ({:.1} %), {} idle samples, publish window {}, timeout {} s, seed {}",
                p.confirmations,
                p.cancellations(),
                p.cancel_share * 100.0,
                p.idle_samples,
                p.window,
                p.timeout.as_secs(),
                rig.world.seed()
            ),
        ],
    }
}

/// `git rev-parse HEAD` of the current directory's repository (else of the one this crate
/// was built from), and whether its working tree has changes.
pub fn git_commit() -> String {
    let git = |dir: &Path, args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let here = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in [here.as_path(), built_from.as_path()] {
        if let Some(head) = git(dir, &["rev-parse", "HEAD"]) {
            let changed = git(dir, &["status", "--porcelain", "--untracked-files=no"])
                .map_or(0, |s| s.lines().count());
            let tree = if changed == 0 {
                "clean working tree".to_owned()
            } else {
                format!("{changed} tracked file(s) changed in the working tree")
            };
            return format!("{head} ({tree}; the binary may have been built from another state: see its build time)");
        }
    }
    "? (not in a git repository)".into()
}

/// Runs the benchmark, printing each section on stdout as it is measured (the progress
/// line goes to stderr). An error is a harness failure: what was measured before it has
/// been printed.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let mut rig_options = RigOptions::new("bench", &[Vendor::Ttlock]);
    rig_options.properties_per_vendor = options.properties;
    rig_options.rooms_per_property = options.rooms;
    rig_options.nodes = options.nodes;
    if let Some(seed) = options.seed {
        rig_options.seed = seed;
    }
    let (partitions, max_connections, tick_ms) =
        (options.partitions, options.max_connections, options.tick_ms);
    rig_options.configure = Some(Arc::new(move |_, cfg| {
        cfg.partitions = partitions;
        cfg.db_max_connections = max_connections;
        cfg.tick_interval_ms = tick_ms;
    }));
    let mut rig = Rig::prepare(rig_options).await?;
    println!("{}", report::header(&run_info(options, &rig)));

    let baselines = if options.no_baselines {
        None
    } else {
        eprintln!(
            "[bench] pgbench -N -c {} -j {} -T {} (scale {}) ...",
            options.pgbench.clients,
            options.pgbench.threads,
            options.pgbench.seconds,
            options.pgbench.scale
        );
        let pg = tokio::task::block_in_place(|| machine::pgbench(&rig.pg, &options.pgbench))
            .context("the pgbench baseline")?;
        eprintln!(
            "[bench] rabbitmq: {} messages publish+consume ...",
            options.rabbit.messages
        );
        let mq = machine::rabbit_rate(&rig.rabbit.url(LOCKSTEP_USER), &options.rabbit)
            .await
            .context("the rabbitmq baseline")?;
        println!("{}", report::baselines(&pg, &mq));
        Some((pg, mq))
    };

    rig.start_nodes().await?;
    let figures = lockstep::run(&mut rig, &options.plan).await?;
    println!("{}", report::lockstep(&figures));
    println!(
        "{}",
        report::ratios(
            &figures,
            baselines.as_ref().map(|(pg, _)| pg),
            baselines.as_ref().map(|(_, mq)| mq)
        )
    );
    Ok(())
}
