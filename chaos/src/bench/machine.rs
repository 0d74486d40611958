//! The machine's own limits, measured on the very Postgres cluster and RabbitMQ node the
//! run then gives Lockstep, before any Lockstep node starts: `pgbench -N` on a scratch
//! database of the cluster, and a raw publish-and-consume rate on the broker along
//! Lockstep's own message path (persistent messages, publisher confirms in a window, a
//! topic exchange into a durable quorum queue, a consumer with prefetch acking each
//! message). Lockstep's figures are read against these.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::ExchangeKind;
use tokio::sync::Notify;

use super::pipeline::{self, Outgoing};
use crate::pg::PgCluster;

/// How `pgbench` runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgbenchPlan {
    /// `-c`.
    pub clients: u32,
    /// `-j`.
    pub threads: u32,
    /// `-T`, seconds.
    pub seconds: u32,
    /// `-i -s`.
    pub scale: u32,
}

/// What `pgbench` printed.
#[derive(Clone, Debug, PartialEq)]
pub struct PgbenchFigures {
    /// The plan it ran.
    pub plan: PgbenchPlan,
    /// `tps = … (without initial connection time)`.
    pub tps: f64,
    /// `latency average = … ms`.
    pub latency_ms: Option<f64>,
    /// Transactions processed.
    pub transactions: Option<u64>,
}

/// The scratch database `pgbench` works in (dropped afterwards).
const PGBENCH_DB: &str = "lockstep_bench_pgbench";

/// Initialises a scratch database on `pg`, runs `pgbench -N` on it as `plan` says, drops it
/// and returns the figures. Blocking: run it off the async workers.
pub fn pgbench(pg: &PgCluster, plan: &PgbenchPlan) -> anyhow::Result<PgbenchFigures> {
    pg.psql(&format!("DROP DATABASE IF EXISTS {PGBENCH_DB}"))?;
    pg.psql(&format!("CREATE DATABASE {PGBENCH_DB}"))?;
    let run = |args: &[String]| -> anyhow::Result<String> {
        let out = pg
            .client("pgbench")
            .args(args)
            .output()
            .context("running pgbench")?;
        if !out.status.success() {
            bail!(
                "pgbench {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(&[
        "-i".into(),
        "-q".into(),
        "-s".into(),
        plan.scale.to_string(),
        PGBENCH_DB.into(),
    ])?;
    let text = run(&[
        "-N".into(),
        "-c".into(),
        plan.clients.to_string(),
        "-j".into(),
        plan.threads.to_string(),
        "-T".into(),
        plan.seconds.to_string(),
        PGBENCH_DB.into(),
    ])?;
    let _ = pg.psql(&format!("DROP DATABASE IF EXISTS {PGBENCH_DB}"));
    parse_pgbench(&text, plan.clone())
}

/// Reads tps, average latency and the transaction count from `pgbench`'s report.
fn parse_pgbench(text: &str, plan: PgbenchPlan) -> anyhow::Result<PgbenchFigures> {
    let after = |prefix: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let number = |s: &str| -> Option<f64> { s.split_whitespace().next()?.parse().ok() };
    let tps = after("tps =")
        .and_then(number)
        .with_context(|| format!("no tps in pgbench's report:\n{text}"))?;
    Ok(PgbenchFigures {
        plan,
        tps,
        latency_ms: after("latency average =").and_then(number),
        transactions: after("number of transactions actually processed:")
            .and_then(|s| s.split('/').next()?.trim().parse().ok()),
    })
}

/// How the raw RabbitMQ rate is measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RabbitPlan {
    /// Messages published (and consumed).
    pub messages: usize,
    /// Unconfirmed publishes at most.
    pub window: usize,
    /// The consumer's prefetch.
    pub prefetch: u16,
}

/// The raw RabbitMQ figures.
#[derive(Clone, Debug, PartialEq)]
pub struct RabbitFigures {
    /// The plan it ran.
    pub plan: RabbitPlan,
    /// Body size of each message, bytes.
    pub body_bytes: usize,
    /// From the first publish to the last confirm.
    pub published_in: Duration,
    /// From the first publish to the last message consumed and acked.
    pub consumed_in: Duration,
}

impl RabbitFigures {
    /// Messages per second through both ends: published, confirmed, consumed, acked.
    pub fn rate(&self) -> f64 {
        self.plan.messages as f64 / self.consumed_in.as_secs_f64().max(1e-9)
    }

    /// Publishes confirmed per second.
    pub fn publish_rate(&self) -> f64 {
        self.plan.messages as f64 / self.published_in.as_secs_f64().max(1e-9)
    }
}

/// The exchange and queue of the raw measurement (deleted afterwards).
const RAW: &str = "lockstep-bench.raw";

/// A body the size of a reservation confirmation.
fn sample_body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": format!("evt-raw-{i:08}-{}", ulid::Ulid::new()),
        "subject": "melmastoon.reservation.confirmed.v1",
        "time": "2026-11-24T10:00:00+00:00",
        "tenantId": crate::world::TENANT,
        "propertyId": "ppt_chaos_ttlock_0",
        "data": {
            "reservationId": format!("rsv_raw_{i:08}"),
            "revision": 1,
            "guestId": format!("gst_rsv_raw_{i:08}"),
            "roomIds": ["rmu_ttlock_0_0"],
            "validFrom": "2026-12-24T14:00:00+00:00",
            "validUntil": "2026-12-25T11:00:00+00:00",
        },
    }))
    .expect("a JSON value serializes")
}

/// Publishes `plan.messages` persistent messages with confirms (pipelined) through a
/// durable topic exchange into a durable quorum queue while a consumer on another
/// connection acks each one; `url` is an administrator's.
pub async fn rabbit_rate(url: &str, plan: &RabbitPlan) -> anyhow::Result<RabbitFigures> {
    let (consumer_conn, ch) = pipeline::connect(url).await?;
    ch.exchange_declare(
        RAW.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        RAW.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    ch.queue_bind(
        RAW.into(),
        RAW.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.basic_qos(plan.prefetch, BasicQosOptions::default())
        .await?;
    let consumed = Arc::new(AtomicU64::new(0));
    let all_in: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let done = Arc::new(Notify::new());
    let target = plan.messages as u64;
    let consumer = ch
        .basic_consume(
            RAW.into(),
            "lockstep-bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    {
        let (consumed, all_in, done) = (consumed.clone(), all_in.clone(), done.clone());
        consumer.set_delegate(move |delivery: lapin::message::DeliveryResult| {
            let (consumed, all_in, done) = (consumed.clone(), all_in.clone(), done.clone());
            async move {
                let Ok(Some(d)) = delivery else { return };
                if d.acker.ack(BasicAckOptions::default()).await.is_ok()
                    && consumed.fetch_add(1, Ordering::SeqCst) + 1 == target
                {
                    *all_in.lock().expect("never poisoned") = Some(Instant::now());
                    done.notify_one();
                }
            }
        });
    }
    let messages: Vec<Outgoing> = (0..plan.messages)
        .map(|i| Outgoing {
            routing_key: "raw.confirmed".into(),
            id: format!("raw-{i}"),
            body: sample_body(i),
        })
        .collect();
    let body_bytes = messages.first().map_or(0, |m| m.body.len());
    let (publisher_conn, pch) = pipeline::connect(url).await?;
    let started = Instant::now();
    pipeline::publish(&pch, RAW, None, &messages, plan.window, |_| {}).await?;
    let published_in = started.elapsed();
    tokio::time::timeout(Duration::from_secs(600), async {
        while consumed.load(Ordering::SeqCst) < target {
            done.notified().await;
        }
    })
    .await
    .with_context(|| {
        format!(
            "only {} of {target} raw messages consumed within 600 s",
            consumed.load(Ordering::SeqCst)
        )
    })?;
    let consumed_in = all_in
        .lock()
        .expect("never poisoned")
        .map_or(started.elapsed(), |t| t.duration_since(started));
    let _ = ch
        .queue_delete(RAW.into(), QueueDeleteOptions::default())
        .await;
    let _ = ch
        .exchange_delete(RAW.into(), ExchangeDeleteOptions::default())
        .await;
    let _ = publisher_conn.close(200, "raw rate measured".into()).await;
    let _ = consumer_conn.close(200, "raw rate measured".into()).await;
    Ok(RabbitFigures {
        plan: plan.clone(),
        body_bytes,
        published_in,
        consumed_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_report_figures_are_read() {
        let text = "pgbench (15.14 (Debian 15.14-0+deb12u1))\n\
            transaction type: <builtin: simple update>\n\
            scaling factor: 10\n\
            number of clients: 8\n\
            number of threads: 2\n\
            duration: 20 s\n\
            number of transactions actually processed: 24301\n\
            number of failed transactions: 0 (0.000%)\n\
            latency average = 6.583 ms\n\
            initial connection time = 9.730 ms\n\
            tps = 1215.308131 (without initial connection time)\n";
        let plan = PgbenchPlan {
            clients: 8,
            threads: 2,
            seconds: 20,
            scale: 10,
        };
        let f = parse_pgbench(text, plan).expect("parses");
        assert!((f.tps - 1215.308131).abs() < 1e-9);
        assert_eq!(f.latency_ms, Some(6.583));
        assert_eq!(f.transactions, Some(24301));
    }
}
