//! Readings taken around a phase from outside Lockstep: Postgres's statistics
//! (`pg_stat_database` of Lockstep's database, `pg_stat_wal`), what Postgres's backends are
//! doing (`pg_stat_activity`, sampled), Lockstep's counters (`/metrics`), the TTLock
//! simulator's call counters, the events seen, and CPU time by process (`/proc`). A
//! [`Snapshot`] takes them all at once; two of them make a [`Usage`].
//!
//! Postgres backends flush their statistics at most once a second (and within a second of
//! going idle), so a reading lags by up to about a second: readings that bound a window
//! are taken after a pause (see [`PG_STATS_LAG`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lockstep_vendors::ttlock::simulator::SimCounters;

use super::sys;
use crate::node::Node;
use crate::pg::PgCluster;
use crate::rig::Rig;

/// How long after a window's end its closing `pg_stat_database` reading waits.
pub const PG_STATS_LAG: Duration = Duration::from_secs(2);

/// Postgres's counters (`pg_stat_database` of Lockstep's database, `pg_stat_wal`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PgStats {
    /// `xact_commit + xact_rollback`.
    pub xacts: f64,
    /// `tup_inserted`.
    pub inserted: f64,
    /// `tup_updated`.
    pub updated: f64,
    /// `tup_deleted`.
    pub deleted: f64,
    /// `tup_fetched`.
    pub fetched: f64,
    /// `wal_records` (the whole cluster; Lockstep is its only user during a phase).
    pub wal_records: f64,
    /// `wal_bytes`.
    pub wal_bytes: f64,
    /// `wal_sync`: WAL fsyncs (commits that waited on the disk, one or a group).
    pub wal_syncs: f64,
}

impl PgStats {
    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            xacts: self.xacts - earlier.xacts,
            inserted: self.inserted - earlier.inserted,
            updated: self.updated - earlier.updated,
            deleted: self.deleted - earlier.deleted,
            fetched: self.fetched - earlier.fetched,
            wal_records: self.wal_records - earlier.wal_records,
            wal_bytes: self.wal_bytes - earlier.wal_bytes,
            wal_syncs: self.wal_syncs - earlier.wal_syncs,
        }
    }
}

/// Runs `sql` through `psql` as the superuser on database `postgres`, off the async
/// workers.
pub async fn psql(pg: &PgCluster, sql: &str) -> anyhow::Result<String> {
    let mut cmd = pg.client("psql");
    cmd.args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qtA", "-c", sql]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .context("the psql task panicked")?
        .context("running psql")?;
    if !out.status.success() {
        bail!(
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One statement's share of a phase (`pg_stat_statements` of Lockstep's database).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatementFigure {
    /// The normalized text, cut to 160 characters.
    pub query: String,
    /// Executions.
    pub calls: f64,
    /// Rows returned or affected.
    pub rows: f64,
    /// Execution time, milliseconds.
    pub exec_ms: f64,
    /// Shared buffers hit or read.
    pub buffers: f64,
}

/// Empties `pg_stat_statements` (creating the extension in database `postgres` first: its
/// view covers every database of the cluster).
pub async fn reset_statements(pg: &PgCluster) -> anyhow::Result<()> {
    psql(pg, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await?;
    psql(pg, "SELECT pg_stat_statements_reset()").await?;
    Ok(())
}

/// How [`top_statements`] ranks.
#[derive(Clone, Copy, Debug)]
pub enum Rank {
    /// Most execution time first.
    Time,
    /// Most executions first.
    Calls,
}

/// The `n` statements of Lockstep's database ranked by `rank` since the last
/// [`reset_statements`].
pub async fn top_statements(
    pg: &PgCluster,
    n: usize,
    rank: Rank,
) -> anyhow::Result<Vec<StatementFigure>> {
    // by calls, the transactions' own BEGIN and COMMIT stay in: their count beside the
    // statements' says which transactions the listed statements are
    let order = match rank {
        Rank::Time => "total_exec_time",
        Rank::Calls => "calls",
    };
    let out = psql(
        pg,
        &format!(
            "SELECT calls, rows, total_exec_time, shared_blks_hit + shared_blks_read, \
             regexp_replace(left(query, 160), '[[:space:]]+', ' ', 'g') \
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = 'lockstep' ORDER BY {order} DESC LIMIT {n}"
        ),
    )
    .await?;
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.splitn(5, '|').collect();
            let num = |i: usize| -> anyhow::Result<f64> {
                f.get(i)
                    .context("a pg_stat_statements row")?
                    .parse()
                    .context("a pg_stat_statements figure")
            };
            Ok(StatementFigure {
                calls: num(0)?,
                rows: num(1)?,
                exec_ms: num(2)?,
                buffers: num(3)?,
                query: f.get(4).copied().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// Lockstep's transaction statements since the last [`reset_statements`], by their text
/// (`BEGIN`, `BEGIN READ ONLY`, `COMMIT`, `ROLLBACK`): every store transaction is
/// explicit, so its `COMMIT`s and `ROLLBACK`s are the transactions Lockstep ran. Unlike
/// `pg_stat_database`'s count, this is exact at once (backends may hold their counters up
/// to 10 s before they flush them) and leaves out autovacuum's and connection start-ups'
/// transactions in the same database.
pub async fn transaction_statements(pg: &PgCluster) -> anyhow::Result<BTreeMap<String, f64>> {
    let out = psql(
        pg,
        "SELECT upper(regexp_replace(s.query, '[[:space:]]+', ' ', 'g')), sum(s.calls) FROM pg_stat_statements s \
         JOIN pg_database d ON d.oid = s.dbid \
         WHERE d.datname = 'lockstep' AND s.query ~* '^\\s*(BEGIN|COMMIT|ROLLBACK)' GROUP BY 1",
    )
    .await?;
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (q, n) = l
                .rsplit_once('|')
                .with_context(|| format!("a transaction statement row: {l:?}"))?;
            Ok((
                q.trim().to_owned(),
                n.trim().parse().context("a transaction statement count")?,
            ))
        })
        .collect()
}

/// Reads [`PgStats`] now.
pub async fn pg_stats(pg: &PgCluster) -> anyhow::Result<PgStats> {
    let row = psql(
        pg,
        "SELECT d.xact_commit + d.xact_rollback, d.tup_inserted, d.tup_updated, \
         d.tup_deleted, d.tup_fetched, w.wal_records, w.wal_bytes, w.wal_sync \
         FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = 'lockstep'",
    )
    .await?;
    let v: Vec<f64> = row
        .split('|')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading pg_stat_database: {row:?}"))?;
    let [xacts, inserted, updated, deleted, fetched, wal_records, wal_bytes, wal_syncs] =
        v.as_slice()
    else {
        bail!("pg_stat_database answered {row:?}");
    };
    Ok(PgStats {
        xacts: *xacts,
        inserted: *inserted,
        updated: *updated,
        deleted: *deleted,
        fetched: *fetched,
        wal_records: *wal_records,
        wal_bytes: *wal_bytes,
        wal_syncs: *wal_syncs,
    })
}

/// A running sampler of `pg_stat_activity`; [`BackendSampler::finish`] ends it.
#[derive(Debug)]
pub struct BackendSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(BTreeMap<String, f64>, usize)>,
}

impl BackendSampler {
    /// Samples the connections to Lockstep's database every second, by
    /// `state/wait_event_type:wait_event` (`running` when not waiting, `background` for a
    /// backend with no client state, such as autovacuum).
    pub fn start(pg: &PgCluster) -> Self {
        const SQL: &str = "SELECT coalesce(state, 'background') || '/' || \
            coalesce(wait_event_type || ':' || wait_event, 'running'), count(*) \
            FROM pg_stat_activity WHERE datname = 'lockstep' GROUP BY 1";
        // the task outlives the borrow of `pg`: keep what builds its psql command
        let base = pg.client("psql");
        let program = base.get_program().to_owned();
        let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> = base
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut sums: BTreeMap<String, f64> = BTreeMap::new();
            let mut samples = 0;
            while !flag.load(Ordering::SeqCst) {
                // as root over the cluster's socket (local connections are trusted)
                let mut cmd = std::process::Command::new(&program);
                cmd.args(["-d", "postgres", "-qtA", "-c", SQL])
                    .envs(envs.iter().map(|(k, v)| (k, v)));
                if let Ok(Ok(out)) = tokio::task::spawn_blocking(move || cmd.output()).await {
                    if out.status.success() {
                        samples += 1;
                        for line in String::from_utf8_lossy(&out.stdout).lines() {
                            if let Some((k, n)) = line.rsplit_once('|') {
                                *sums.entry(k.to_owned()).or_default() +=
                                    n.trim().parse::<f64>().unwrap_or(0.0);
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            (sums, samples)
        });
        Self { stop, task }
    }

    /// Stops it; returns the mean number of connections in each state and the number of
    /// samples.
    pub async fn finish(self) -> (BTreeMap<String, f64>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let (sums, samples) = self.task.await.unwrap_or_default();
        let means = sums
            .into_iter()
            .map(|(k, v)| (k, v / samples.max(1) as f64))
            .collect();
        (means, samples)
    }
}

/// Every sample of counter `name` in a Prometheus text, by its label set (`{…}` as
/// printed, or empty).
pub fn samples(text: &str, name: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            if !(labels.is_empty() || labels.starts_with('{')) {
                return None;
            }
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Counter `name` of every running node, summed by label set.
async fn node_counters(nodes: &[Node], name: &str) -> BTreeMap<String, f64> {
    let mut sum: BTreeMap<String, f64> = BTreeMap::new();
    for n in nodes {
        if let Some(text) = n.metrics_text().await {
            for (k, v) in samples(&text, name) {
                *sum.entry(k).or_default() += v;
            }
        }
    }
    sum
}

/// `after - before` by key, zeros left out.
fn delta<V>(after: &BTreeMap<String, V>, before: &BTreeMap<String, V>) -> BTreeMap<String, V>
where
    V: Copy + Default + PartialEq + std::ops::Sub<Output = V>,
{
    after
        .iter()
        .map(|(k, v)| (k.clone(), *v - before.get(k).copied().unwrap_or_default()))
        .filter(|(_, v)| *v != V::default())
        .collect()
}

fn sim_delta(after: SimCounters, before: SimCounters) -> SimCounters {
    SimCounters {
        tokens_issued: after.tokens_issued - before.tokens_issued,
        adds: after.adds - before.adds,
        deletes: after.deletes - before.deletes,
        changes: after.changes - before.changes,
        lists: after.lists - before.lists,
        rejected_by_faults: after.rejected_by_faults - before.rejected_by_faults,
        lost_responses: after.lost_responses - before.lost_responses,
        // A high-water mark, not a count: the most in flight up to `after`.
        max_in_flight: after.max_in_flight,
    }
}

/// CPU seconds so far, by who spent them.
#[derive(Clone, Debug)]
struct Cpu {
    machine: f64,
    cpus: usize,
    nodes: Vec<f64>,
    postgres: f64,
    rabbitmq: f64,
    harness: f64,
}

impl Cpu {
    fn now(rig: &Rig, ticks: f64) -> Self {
        let procs = sys::Processes::read(ticks);
        let tree = |pid: Option<u32>| pid.map_or(0.0, |p| procs.tree_seconds(p));
        let (machine, cpus) = sys::machine_busy_seconds(ticks);
        Self {
            machine,
            cpus,
            nodes: rig.nodes.iter().map(|n| tree(n.pid())).collect(),
            postgres: tree(rig.pg.pid()),
            rabbitmq: tree(rig.rabbit.pid()),
            harness: sys::own_cpu_seconds(ticks),
        }
    }
}

/// Everything read at one moment (Postgres's statistics may lag: see the module doc).
#[derive(Clone, Debug)]
pub struct Snapshot {
    at: Instant,
    cpu: Cpu,
    sim: SimCounters,
    vendor_calls: BTreeMap<String, f64>,
    saga_steps: BTreeMap<String, f64>,
    events: BTreeMap<String, u64>,
    pg: Option<(Instant, PgStats)>,
}

impl Snapshot {
    /// Reads the counters now: CPU, the simulator's `sim`, every node's
    /// `lockstep_vendor_calls_total` and `lockstep_saga_steps_total`, and `events` (what the
    /// platform's consumer saw so far, by subject). Postgres is read by
    /// [`Snapshot::read_pg`].
    pub async fn take(
        rig: &Rig,
        ticks: f64,
        sim: SimCounters,
        events: BTreeMap<String, u64>,
    ) -> Self {
        Self {
            at: Instant::now(),
            cpu: Cpu::now(rig, ticks),
            sim,
            vendor_calls: node_counters(&rig.nodes, "lockstep_vendor_calls_total").await,
            saga_steps: node_counters(&rig.nodes, "lockstep_saga_steps_total").await,
            events,
            pg: None,
        }
    }

    /// Adds Postgres's statistics, read now.
    pub async fn read_pg(&mut self, pg: &PgCluster) -> anyhow::Result<()> {
        self.pg = Some((Instant::now(), pg_stats(pg).await?));
        Ok(())
    }
}

/// What happened between two [`Snapshot`]s.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// CPU by process.
    pub cpu: CpuSplit,
    /// Each node's CPU seconds, in node order.
    pub node_cpu: Vec<f64>,
    /// The simulator's counters' deltas.
    pub sim: SimCounters,
    /// `lockstep_vendor_calls_total` deltas by label set, every node summed.
    pub vendor_calls: BTreeMap<String, f64>,
    /// `lockstep_saga_steps_total` deltas by label set, every node summed.
    pub saga_steps: BTreeMap<String, f64>,
    /// Lockstep's events seen by the platform's consumer, by subject.
    pub events_out: BTreeMap<String, u64>,
    /// Postgres's deltas between the two readings.
    pub pg: PgStats,
    /// Wall seconds between the two Postgres readings.
    pub pg_window: f64,
}

impl Usage {
    /// From `before` to `after`.
    pub fn between(before: &Snapshot, after: &Snapshot) -> Self {
        let (b, a) = (&before.cpu, &after.cpu);
        let (pg, pg_window) = match (before.pg, after.pg) {
            (Some((t0, p0)), Some((t1, p1))) => {
                (p1.since(&p0), t1.duration_since(t0).as_secs_f64())
            }
            _ => (PgStats::default(), 0.0),
        };
        Self {
            cpu: CpuSplit {
                wall: after.at.duration_since(before.at).as_secs_f64(),
                cpus: a.cpus,
                machine: a.machine - b.machine,
                lockstep: a.nodes.iter().sum::<f64>() - b.nodes.iter().sum::<f64>(),
                postgres: a.postgres - b.postgres,
                rabbitmq: a.rabbitmq - b.rabbitmq,
                harness: a.harness - b.harness,
            },
            node_cpu: a
                .nodes
                .iter()
                .enumerate()
                .map(|(k, v)| v - b.nodes.get(k).copied().unwrap_or(0.0))
                .collect(),
            sim: sim_delta(after.sim, before.sim),
            vendor_calls: delta(&after.vendor_calls, &before.vendor_calls),
            saga_steps: delta(&after.saga_steps, &before.saga_steps),
            events_out: delta(&after.events, &before.events),
            pg,
            pg_window,
        }
    }
}

/// CPU seconds spent over a window, by who spent them.
#[derive(Clone, Debug, Default)]
pub struct CpuSplit {
    /// Wall seconds of the window.
    pub wall: f64,
    /// CPUs of the machine.
    pub cpus: usize,
    /// Busy CPU seconds of the whole machine.
    pub machine: f64,
    /// Every Lockstep node.
    pub lockstep: f64,
    /// The Postgres cluster (every backend).
    pub postgres: f64,
    /// The RabbitMQ node.
    pub rabbitmq: f64,
    /// This process: publisher, consumer, simulator, samplers.
    pub harness: f64,
}

impl CpuSplit {
    /// Busy time of processes outside the run (a build, another test).
    pub fn others(&self) -> f64 {
        (self.machine - self.lockstep - self.postgres - self.rabbitmq - self.harness).max(0.0)
    }

    /// CPU seconds nobody used.
    pub fn idle(&self) -> f64 {
        (self.wall * self.cpus as f64 - self.machine).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_samples_are_read_by_label_set() {
        let text = "# HELP x\nlockstep_vendor_calls_total{vendor=\"ttlock\",op=\"issue\",outcome=\"ok\"} 3\nlockstep_vendor_calls_total_other 9\nlockstep_vendor_calls_total 2\n";
        let s = samples(text, "lockstep_vendor_calls_total");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.get("{vendor=\"ttlock\",op=\"issue\",outcome=\"ok\"}"),
            Some(&3.0)
        );
        assert_eq!(s.get(""), Some(&2.0));
    }

    #[test]
    fn deltas_leave_out_what_did_not_move() {
        let before = BTreeMap::from([("a".to_owned(), 1u64), ("b".to_owned(), 2)]);
        let after = BTreeMap::from([
            ("a".to_owned(), 1u64),
            ("b".to_owned(), 5),
            ("c".to_owned(), 4),
        ]);
        let d = delta(&after, &before);
        assert_eq!(
            d,
            BTreeMap::from([("b".to_owned(), 3), ("c".to_owned(), 4)])
        );
    }
}
