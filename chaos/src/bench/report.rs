//! The benchmark's printed figures, one section at a time (each is printed as soon as it
//! is measured, so a run that fails late still shows what it measured): the run itself
//! (command line, commit, binary, machine, setup), the machine's baselines, Lockstep's
//! figures, and the ratios issue 11 asks for.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::echo::EchoFigures;
use super::lockstep::{Burst, LockstepFigures};
use super::machine::{PgbenchFigures, RabbitFigures};
use super::relay::{Connect, RelayFigures};
use crate::util::quantile;

/// What identifies a run.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    /// The command line, as typed (quoted where needed).
    pub command: String,
    /// `git rev-parse HEAD` and the working tree's state.
    pub commit: String,
    /// The `lockstep` binary and when it was built.
    pub binary: String,
    /// CPUs, memory, Postgres and RabbitMQ versions.
    pub machine: String,
    /// Nodes, partitions, properties, rooms, connections, the plan.
    pub setup: Vec<String>,
}

/// The run's header.
pub fn header(info: &RunInfo) -> String {
    titled_header("lockstep-bench", info)
}

/// The header of the benchmark called `title`.
pub fn titled_header(title: &str, info: &RunInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{title}");
    let _ = writeln!(s, "  command: {}", info.command);
    let _ = writeln!(s, "  commit:  {}", info.commit);
    let _ = writeln!(s, "  binary:  {}", info.binary);
    let _ = writeln!(s, "  machine: {}", info.machine);
    for line in &info.setup {
        let _ = writeln!(s, "  {line}");
    }
    s
}

/// The machine's baselines.
pub fn baselines(pg: &PgbenchFigures, mq: &RabbitFigures) -> String {
    let p = &pg.plan;
    let mut s =
        String::from("machine baselines (the same cluster and broker, before Lockstep started)\n");
    let _ = writeln!(
        s,
        "  pgbench -N -c {} -j {} -T {} (scale {}): {:.1} tps{}{}",
        p.clients,
        p.threads,
        p.seconds,
        p.scale,
        pg.tps,
        pg.latency_ms
            .map(|l| format!(", latency avg {l:.2} ms"))
            .unwrap_or_default(),
        pg.transactions
            .map(|t| format!(", {t} transactions"))
            .unwrap_or_default(),
    );
    let q = &mq.plan;
    let _ = writeln!(
        s,
        "  rabbitmq publish+consume: {:.0} msg/s ({} persistent messages of {} B, confirms in a window of {}, topic exchange → durable quorum queue, consumer prefetch {} acking each; all consumed in {:.2} s; publishes confirmed at {:.0} msg/s)",
        mq.rate(),
        q.messages,
        mq.body_bytes,
        q.window,
        q.prefetch,
        mq.consumed_in.as_secs_f64(),
        mq.publish_rate(),
    );
    s
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1} ms"))
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.2} s"))
}

fn per(total: f64, sagas: usize) -> f64 {
    total / sagas.max(1) as f64
}

/// Shortens `{vendor="ttlock",op="issue",outcome="ok"}` to `ttlock issue ok`.
fn labels(l: &str) -> String {
    let inner = l.trim_start_matches('{').trim_end_matches('}');
    if inner.is_empty() {
        return "(no labels)".into();
    }
    inner
        .split(',')
        .map(|kv| kv.split_once('=').map_or(kv, |(_, v)| v).trim_matches('"'))
        .collect::<Vec<_>>()
        .join(" ")
}

fn breakdown(map: &BTreeMap<String, f64>, sagas: usize) -> String {
    let mut v: Vec<(&String, &f64)> = map.iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(a.1));
    v.iter()
        .map(|(k, n)| format!("{} {:.2}", labels(k), per(**n, sagas)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn burst(b: &Burst) -> String {
    let mut s = String::new();
    let sagas = b.sagas();
    let _ = writeln!(
        s,
        "  burst: {} confirmations + {} cancellations (of warm-up stays, interleaved through the middle half) published in {:.2} s ({:.0} msg/s)",
        b.confirmations,
        b.cancellations,
        b.published_in.as_secs_f64(),
        (b.confirmations + b.cancellations) as f64 / b.published_in.as_secs_f64().max(1e-9),
    );
    if b.timed_out {
        let _ = writeln!(
            s,
            "    TIMED OUT after {:.0} s: {} of {} issued, {} of {} cancelled keys off the door; the figures below cover what completed",
            b.waited.as_secs_f64(),
            b.issued,
            b.confirmations,
            b.removed,
            b.cancellations
        );
    }
    let _ = writeln!(
        s,
        "    sagas/s: {:.1} ({} issued.v1 seen; first publish → last issued.v1 {:.1} s)",
        b.sagas_per_sec(),
        b.issued,
        b.to_last_issued.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "    publish→issued.v1 during the burst: p50 {} p99 {} max {}",
        secs(quantile(&b.latencies_s, 0.5)),
        secs(quantile(&b.latencies_s, 0.99)),
        secs(quantile(&b.latencies_s, 1.0)),
    );
    let _ = writeln!(
        s,
        "    cancel→door-delete during the burst: p50 {} p99 {} max {} ({} of {} removed; from the cancellation's broker confirm to the simulator's journal)",
        secs(quantile(&b.cancel_to_delete_s, 0.5)),
        secs(quantile(&b.cancel_to_delete_s, 0.99)),
        secs(quantile(&b.cancel_to_delete_s, 1.0)),
        b.removed,
        b.cancellations,
    );
    let legs = &b.cancel_legs;
    if !legs.stored_s.is_empty() {
        let _ = writeln!(
            s,
            "      its legs, p50/p99: confirm→stored {}/{} · stored→decided {}/{} · decided→door {}/{} ({} cancellations)",
            secs(quantile(&legs.stored_s, 0.5)),
            secs(quantile(&legs.stored_s, 0.99)),
            secs(quantile(&legs.decided_s, 0.5)),
            secs(quantile(&legs.decided_s, 0.99)),
            secs(quantile(&legs.door_s, 0.5)),
            secs(quantile(&legs.door_s, 0.99)),
            legs.stored_s.len(),
        );
    }
    let q = |d: Option<(f64, u32)>| {
        d.map_or("never seen holding any".to_owned(), |(at, most)| {
            format!("held ready messages until {at:.1} s (at most {most})")
        })
    };
    let _ = writeln!(
        s,
        "      queues (sampled every ~0.2 s): intake {} · partitions {}",
        q(b.queued.intake),
        q(b.queued.partitions),
    );
    if !legs.burst_stored_s.is_empty() {
        let _ = writeln!(
            s,
            "      the burst stored in the mailbox (first publish → row created): p50 {} p90 {} max {} ({} rows)",
            secs(quantile(&legs.burst_stored_s, 0.5)),
            secs(quantile(&legs.burst_stored_s, 0.9)),
            secs(quantile(&legs.burst_stored_s, 1.0)),
            legs.burst_stored_s.len(),
        );
    }
    let bg = b.background_xacts_per_sec * b.usage.pg_window;
    let _ = writeln!(
        s,
        "    postgres transactions per saga: {:.1} ({:.0} commits+rollbacks of database lockstep over {:.1} s / {} sagas = {} issued + {} cancelled to the door; {:.1} without the idle background of {:.1}/s)",
        per(b.usage.pg.xacts, sagas),
        b.usage.pg.xacts,
        b.usage.pg_window,
        sagas,
        b.issued,
        b.removed,
        per(b.usage.pg.xacts - bg, sagas),
        b.background_xacts_per_sec,
    );
    if let (Some(own), Some(by_text)) = (b.own_transactions(), &b.transactions) {
        let _ = writeln!(
            s,
            "    lockstep's own transactions per saga: {:.2} ({:.0} COMMIT and ROLLBACK statements over the burst, pg_stat_statements; per saga {}). The count above lags (backends flush counters up to 10 s late) and holds autovacuum's",
            per(own, sagas),
            own,
            by_text
                .iter()
                .map(|(q, n)| format!("{q} {:.2}", per(*n, sagas)))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    let _ = writeln!(
        s,
        "    per saga in postgres: {:.1} WAL fsyncs, {:.1} WAL records, {:.1} kB WAL; rows {:.1} inserted, {:.1} updated, {:.1} deleted, {:.0} fetched",
        per(b.usage.pg.wal_syncs, sagas),
        per(b.usage.pg.wal_records, sagas),
        per(b.usage.pg.wal_bytes, sagas) / 1024.0,
        per(b.usage.pg.inserted, sagas),
        per(b.usage.pg.updated, sagas),
        per(b.usage.pg.deleted, sagas),
        per(b.usage.pg.fetched, sagas),
    );
    let sim = &b.usage.sim;
    let sim_calls = sim.adds + sim.deletes + sim.changes + sim.lists + sim.tokens_issued;
    let _ = writeln!(
        s,
        "    vendor calls per saga: {:.2} (simulator: {} adds, {} deletes, {} changes, {} list pages, {} tokens{}); lockstep_vendor_calls_total per saga: {}",
        per(sim_calls as f64, sagas),
        sim.adds,
        sim.deletes,
        sim.changes,
        sim.lists,
        sim.tokens_issued,
        if sim.rejected_by_faults + sim.lost_responses > 0 {
            format!(", {} faulted", sim.rejected_by_faults + sim.lost_responses)
        } else {
            String::new()
        },
        breakdown(&b.usage.vendor_calls, sagas),
    );
    let _ = writeln!(
        s,
        "    saga steps per saga: {:.2} ({})",
        per(b.usage.saga_steps.values().sum(), sagas),
        breakdown(&b.usage.saga_steps, sagas),
    );
    let events: BTreeMap<String, f64> = b
        .usage
        .events_out
        .iter()
        .map(|(k, v)| {
            let short = k.strip_prefix("melmastoon.lock.").unwrap_or(k);
            (format!("{{s=\"{short}\"}}"), *v as f64)
        })
        .collect();
    let _ = writeln!(
        s,
        "    events out per saga: {:.2} ({})",
        per(b.usage.events_out.values().sum::<u64>() as f64, sagas),
        breakdown(&events, sagas),
    );
    let c = &b.usage.cpu;
    let per_ms = |cpu: f64| per(cpu, sagas) * 1000.0;
    let _ = writeln!(
        s,
        "    cpu over the burst ({:.1} s × {} CPUs = {:.1} cpu-s): lockstep {:.1} ({:.2} ms/saga), postgres {:.1} ({:.2} ms/saga), rabbitmq {:.1} ({:.2} ms/saga), harness {:.1}, other processes {:.1}, idle {:.1}",
        c.wall,
        c.cpus,
        c.wall * c.cpus as f64,
        c.lockstep,
        per_ms(c.lockstep),
        c.postgres,
        per_ms(c.postgres),
        c.rabbitmq,
        per_ms(c.rabbitmq),
        c.harness,
        c.others(),
        c.idle(),
    );
    let mut backends: Vec<(&String, &f64)> = b.backends.iter().collect();
    backends.sort_by(|a, b| b.1.total_cmp(a.1));
    let _ = writeln!(
        s,
        "    postgres connections of database lockstep by state/wait (mean of {} samples): {}",
        b.backend_samples,
        backends
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !b.statements.is_empty() {
        let sagas = b.sagas().max(1) as f64;
        let total: f64 = b.statements.iter().map(|t| t.exec_ms).sum();
        let _ = writeln!(
            s,
            "    postgres statements by execution time (top {}, {total:.0} ms in all; per saga: calls, rows, buffers):",
            b.statements.len()
        );
        for t in &b.statements {
            let _ = writeln!(
                s,
                "      {:>7.0} ms  {:>5.2} calls  {:>7.1} rows  {:>7.1} buffers  {}",
                t.exec_ms,
                t.calls / sagas,
                t.rows / sagas,
                t.buffers / sagas,
                t.query
            );
        }
    }
    if !b.busiest.is_empty() {
        let _ = writeln!(
            s,
            "    postgres statements by calls (top {}; per saga: calls, rows, ms):",
            b.busiest.len()
        );
        calls_rows_ms(&mut s, &b.busiest, b.sagas().max(1) as f64);
    }
    if !b.background_statements.is_empty() {
        let _ = writeln!(
            s,
            "    idle background ({:.1} transactions/s): statements by calls (top {}; per second: calls, rows, ms):",
            b.background_xacts_per_sec,
            b.background_statements.len()
        );
        calls_rows_ms(
            &mut s,
            &b.background_statements,
            b.background_window.max(1e-9),
        );
    }
    s
}

/// One line per statement: its calls, rows and milliseconds, each divided by `per` (a
/// phase's sagas or seconds).
fn calls_rows_ms(s: &mut String, statements: &[super::probe::StatementFigure], per: f64) {
    for t in statements {
        let _ = writeln!(
            s,
            "      {:>6.2} calls  {:>7.1} rows  {:>6.3} ms  {}",
            t.calls / per,
            t.rows / per,
            t.exec_ms / per,
            t.query
        );
    }
}

/// Lockstep's figures.
pub fn lockstep(f: &LockstepFigures) -> String {
    let mut s = String::from("lockstep\n");
    let _ = writeln!(
        s,
        "  warm-up: {} stays confirmed (pipelined) and issued in {:.1} s (cancelled during the burst)",
        f.warmup.stays,
        f.warmup.took.as_secs_f64()
    );
    let i = &f.idle;
    let _ = writeln!(
        s,
        "  idle: publish→issued.v1 p50 {} p99 {} max {} ({} confirmations one at a time, each waiting for its issued.v1{})",
        ms(quantile(&i.latencies_ms, 0.5)),
        ms(quantile(&i.latencies_ms, 0.99)),
        ms(quantile(&i.latencies_ms, 1.0)),
        i.latencies_ms.len() + i.missing,
        if i.missing > 0 {
            format!("; {} never came within 30 s", i.missing)
        } else {
            String::new()
        }
    );
    s.push_str(&burst(&f.burst));
    for n in &f.nodes {
        let _ = writeln!(
            s,
            "  node {}: peak RSS {} (VmHWM at the end), {:.1} cpu-s over the burst",
            n.name,
            n.peak_rss
                .map_or("-".into(), |b| format!("{:.1} MB", b as f64 / 1e6)),
            n.burst_cpu
        );
    }
    let inv = &f.invariants;
    let _ = writeln!(
        s,
        "  invariants after the run ({} stays): {}{}",
        inv.stays,
        if inv.consistent {
            "consistent"
        } else {
            "BROKEN"
        },
        inv.busy
            .as_ref()
            .map(|b| format!(", still busy: {b}"))
            .unwrap_or_default()
    );
    for p in &inv.problems {
        let _ = writeln!(s, "    {p}");
    }
    s
}

/// The ratios issue 11 asks for, and its targets beside them (`None`: the baselines were
/// not measured).
pub fn ratios(
    f: &LockstepFigures,
    pg: Option<&PgbenchFigures>,
    mq: Option<&RabbitFigures>,
) -> String {
    let b = &f.burst;
    let sps = b.sagas_per_sec();
    let mut s = String::from("ratios and issue 11's targets\n");
    let _ = writeln!(
        s,
        "  sagas/s ÷ pgbench tps:           {}  (target ≥ 0.25)",
        pg.map_or("- (not measured)".into(), |pg| format!(
            "{:.3} ({sps:.1} / {:.1})",
            sps / pg.tps.max(1e-9),
            pg.tps
        ))
    );
    let _ = writeln!(
        s,
        "  sagas/s ÷ raw rabbitmq rate:     {}",
        mq.map_or("- (not measured)".into(), |mq| format!(
            "{:.3} ({sps:.1} / {:.0})",
            sps / mq.rate().max(1e-9),
            mq.rate()
        ))
    );
    let _ = writeln!(
        s,
        "  postgres transactions per saga:  {:.1}  (target ≤ 3){}",
        per(b.usage.pg.xacts, b.sagas()),
        b.own_transactions()
            .map(|own| format!("; lockstep's own {:.2}", per(own, b.sagas())))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "  cancel→door-delete p99 (burst):  {}  (target < 5 s)",
        secs(quantile(&b.cancel_to_delete_s, 0.99))
    );
    let _ = writeln!(
        s,
        "  publish→issued.v1 p99 (idle):    {}  (target < 50 ms)",
        ms(quantile(&f.idle.latencies_ms, 0.99))
    );
    s
}

fn mb(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

/// `", N KB per <what> with both ends of its connection"` from RSS before and after.
fn per_connection(rss: (Option<u64>, Option<u64>), n: usize, what: &str) -> String {
    match rss {
        (Some(a), Some(b)) if b > a => format!(
            ", {:.1} KB per {what} with both ends of its connection",
            (b - a) as f64 / 1e3 / n.max(1) as f64
        ),
        _ => String::new(),
    }
}

fn latencies(v: &[f64]) -> String {
    format!(
        "p50 {} p99 {} max {}",
        ms2(quantile(v, 0.5)),
        ms2(quantile(v, 0.99)),
        ms2(quantile(v, 1.0))
    )
}

fn ms2(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.2} ms"))
}

/// `lockstep-relay-bench`'s baseline: the machine's WebSocket echo rate.
pub fn echo(e: &EchoFigures) -> String {
    let p = &e.plan;
    let mut s = String::from(
        "machine baseline: websocket echo (tokio-tungstenite server and clients in this process on 127.0.0.1, TCP_NODELAY)\n",
    );
    let _ = writeln!(
        s,
        "  {} round trips of a {} B text frame (an encode_job frame), {} in flight over {} connections (opened in {:.2} s; rss {} with them open{})",
        e.latencies_ms.len(),
        p.message.len(),
        p.window.min(p.connections),
        p.connections,
        e.connected_in.as_secs_f64(),
        mb(e.rss.1),
        per_connection(e.rss, p.connections, "connection"),
    );
    let _ = writeln!(
        s,
        "  round trips/s: {:.0} ({:.2} s); latency {}; cpu {:.2} cpu-s ({:.0} µs per round trip), other processes {:.2} cpu-s",
        e.rate(),
        e.took.as_secs_f64(),
        latencies(&e.latencies_ms),
        e.cpu_seconds,
        e.cpu_seconds / e.latencies_ms.len().max(1) as f64 * 1e6,
        e.others_cpu_seconds,
    );
    s
}

/// `lockstep-relay-bench`: the fleet connected.
pub fn relay_connect(c: &Connect) -> String {
    let mut s = String::from("lockstep relay (RelayServer + Hub with production defaults, reference agents, one process)\n");
    let refused = if c.refused.is_empty() {
        "none".to_owned()
    } else {
        c.refused
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        s,
        "  connect: {} agents authenticated in {:.2} s (all spawned at once; refusals meanwhile: {refused})",
        c.agents,
        c.took.as_secs_f64(),
    );
    let _ = writeln!(
        s,
        "  rss with {} agents connected: {} ({} before the first agent{})",
        c.agents,
        mb(c.rss_connected),
        mb(c.rss_before),
        per_connection((c.rss_before, c.rss_connected), c.agents, "agent"),
    );
    s
}

/// `lockstep-relay-bench`: the jobs and the exactly-once check.
pub fn relay_jobs(f: &RelayFigures) -> String {
    let (p, d, c) = (&f.plan, &f.dispatch, &f.check);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  jobs: {} through Hub::dispatch, {} in flight, over {} properties ({} agents each or so), encode time {} ms",
        d.jobs,
        p.window.min(p.jobs),
        p.properties,
        p.agents / p.properties.max(1),
        p.encode_delay.as_millis(),
    );
    let _ = writeln!(
        s,
        "    jobs/s: {:.0} ({:.2} s); dispatch→result {}; cpu {:.2} cpu-s ({:.0} µs per job), other processes {:.2} cpu-s; re-routes {:.0}",
        d.rate(),
        d.took.as_secs_f64(),
        latencies(&d.latencies_ms),
        d.cpu_seconds,
        d.cpu_seconds / d.latencies_ms.len().max(1) as f64 * 1e6,
        d.others_cpu_seconds,
        d.reroutes,
    );
    let _ = writeln!(
        s,
        "    outcomes: {} encoded{}",
        d.encoded,
        d.other
            .iter()
            .map(|(k, (n, first))| format!(", {n} {k} (first: {first})"))
            .collect::<String>(),
    );
    let _ = writeln!(
        s,
        "    exactly once: {} ({} keys: {} encoded once, {} twice or more, {} never; {} encodes in all, {} of keys no job carried)",
        if f.exactly_once() { "PASS" } else { "FAIL" },
        c.keys,
        c.once,
        c.more,
        c.never,
        c.encodes,
        c.strangers,
    );
    let _ = writeln!(s, "  peak rss of the process: {}", mb(f.peak_rss));
    s
}

/// `lockstep-relay-bench`: the relay beside the echo.
pub fn relay_ratio(f: &RelayFigures, e: Option<&EchoFigures>) -> String {
    let jps = f.dispatch.rate();
    let mut s = String::from("ratio\n");
    let _ = writeln!(
        s,
        "  jobs/s ÷ websocket echo round trips/s: {}",
        e.map_or("- (not measured)".into(), |e| format!(
            "{:.3} ({jps:.0} / {:.0}); a job is 3 frames (encode_job, job_ack, job_result) and an echo 2",
            jps / e.rate().max(1e-9),
            e.rate()
        ))
    );
    if let Some(e) = e {
        let _ = writeln!(
            s,
            "  p50 / p99 ÷ echo's: {:.1} / {:.1}",
            quantile(&f.dispatch.latencies_ms, 0.5).unwrap_or(0.0)
                / quantile(&e.latencies_ms, 0.5).unwrap_or(1.0).max(1e-9),
            quantile(&f.dispatch.latencies_ms, 0.99).unwrap_or(0.0)
                / quantile(&e.latencies_ms, 0.99).unwrap_or(1.0).max(1e-9),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_labels_are_shortened_to_their_values() {
        assert_eq!(
            labels("{vendor=\"ttlock\",op=\"issue\",outcome=\"ok\"}"),
            "ttlock issue ok"
        );
        assert_eq!(labels(""), "(no labels)");
    }
}
