//! Lockstep under load, on a started [`Rig`] with the TTLock simulator: three phases, each
//! read from the outside (the broker, the simulator's door journal, Postgres's statistics,
//! `/metrics`, `/proc`).
//!
//! 1. **Warm-up**: the stays to be cancelled later are confirmed (pipelined) and waited for
//!    until each one's `issued.v1` is seen.
//! 2. **Idle**: confirmations one at a time, each waiting for its `issued.v1`: the
//!    publish→`issued.v1` latency of a quiet system (from the publish call, before the
//!    broker's confirm, to the event's arrival on the platform's queue).
//! 3. **Burst**: N confirmations published as fast as the broker takes them (confirms
//!    pipelined), with the warm-up stays' cancellations interleaved evenly through the
//!    middle half of the stream, so each waits behind a quarter to three quarters of the
//!    burst. It ends when every confirmation's `issued.v1` was seen and every cancelled
//!    key left its door (the journal's removal), or at the timeout. Over it: sagas/s,
//!    cancel→door-delete (broker confirm of the cancellation → the journal's removal, as
//!    chaos's stale-key windows), the `pg_stat_database` and `pg_stat_wal` deltas of the
//!    cluster, vendor calls, saga steps, events out, CPU by process and what Postgres's
//!    backends were doing (sampled each second).
//!
//! Every confirmation's stay gets a room-day of its own (see [`crate::world`]), so the
//! burst never trips I-9; the invariants are checked at the end.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use lapin::{Channel, Connection};
use lockstep_vendors::ttlock::SimHandle;

use super::events::Events;
use super::pipeline::{self, Outgoing};
use super::probe::{self, BackendSampler, Snapshot, Usage};
use super::sys;
use crate::rabbit::{LOCKSTEP_USER, RESERVATION_USER};
use crate::rig::Rig;
use crate::vendors::{DoorOp, Vendor, VendorSim};
use crate::world::{EndKind, Envelope, World, EXCHANGE};

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Confirmations in the burst.
    pub confirmations: usize,
    /// Cancellations published during the burst, as a share of `confirmations` (of stays
    /// issued before it).
    pub cancel_share: f64,
    /// Confirmations of the idle phase.
    pub idle_samples: usize,
    /// Unconfirmed publishes at most.
    pub window: usize,
    /// How long the warm-up, and then the burst, may take before the run stops waiting.
    pub timeout: Duration,
}

impl Plan {
    /// Cancellations in the burst (and stays prepared for them).
    pub fn cancellations(&self) -> usize {
        (self.confirmations as f64 * self.cancel_share).round() as usize
    }
}

/// How long an idle sample waits for its `issued.v1`.
const IDLE_SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Lockstep's idle background is measured before the burst.
const BACKGROUND_WINDOW: Duration = Duration::from_secs(10);

/// Lockstep's idle background, measured between the idle phase and the burst.
#[derive(Clone, Debug, Default)]
pub struct Background {
    /// Transactions per second.
    pub xacts_per_sec: f64,
    /// The statements run most (empty without `pg_stat_statements`).
    pub statements: Vec<probe::StatementFigure>,
    /// Seconds measured.
    pub window: f64,
}

/// The warm-up.
#[derive(Clone, Debug, Default)]
pub struct Warmup {
    /// Stays confirmed.
    pub stays: usize,
    /// First publish → last `issued.v1`.
    pub took: Duration,
}

/// The idle phase.
#[derive(Clone, Debug, Default)]
pub struct Idle {
    /// Publish→`issued.v1` of each sample, ms.
    pub latencies_ms: Vec<f64>,
    /// Samples whose `issued.v1` did not come within 30 s.
    pub missing: usize,
}

/// The burst.
#[derive(Clone, Debug, Default)]
pub struct Burst {
    /// Confirmations published.
    pub confirmations: usize,
    /// Cancellations published.
    pub cancellations: usize,
    /// First publish → last confirm.
    pub published_in: Duration,
    /// Confirmations whose `issued.v1` was seen.
    pub issued: usize,
    /// Cancelled keys that left their door.
    pub removed: usize,
    /// First publish → last `issued.v1` of the burst.
    pub to_last_issued: Duration,
    /// First publish → the end of the wait (everything done, or the timeout).
    pub waited: Duration,
    /// Whether the wait ended at the timeout.
    pub timed_out: bool,
    /// Publish→`issued.v1` of each confirmation of the burst, seconds.
    pub latencies_s: Vec<f64>,
    /// Cancellation's broker confirm → removal at the door, seconds.
    pub cancel_to_delete_s: Vec<f64>,
    /// The same cancellations' path in three legs, seconds (empty when the mailbox could
    /// not be read): [`CancelLegs`].
    pub cancel_legs: CancelLegs,
    /// When the broker's queues last held ready messages of the burst.
    pub queued: QueuesDrained,
    /// Lockstep's transactions per second while idle (measured before the burst).
    pub background_xacts_per_sec: f64,
    /// The statements Lockstep ran most while idle, over [`Burst::background_window`].
    pub background_statements: Vec<probe::StatementFigure>,
    /// Seconds the idle background was measured.
    pub background_window: f64,
    /// CPU, Postgres, vendor calls, saga steps and events over the burst.
    pub usage: Usage,
    /// Postgres connections to Lockstep's database by `state/wait`, averaged over the
    /// samples.
    pub backends: std::collections::BTreeMap<String, f64>,
    /// Samples of `pg_stat_activity` taken.
    pub backend_samples: usize,
    /// The statements Postgres spent the most time on during the burst (empty when
    /// `pg_stat_statements` could not be read).
    pub statements: Vec<probe::StatementFigure>,
    /// Lockstep's transaction statements over the burst by text (`BEGIN`, `BEGIN READ
    /// ONLY`, `COMMIT`, `ROLLBACK`; `None` without `pg_stat_statements`).
    pub transactions: Option<std::collections::BTreeMap<String, f64>>,
    /// The statements Lockstep ran most often during the burst (its round trips).
    pub busiest: Vec<probe::StatementFigure>,
}

/// The last sample (seconds since the burst's first publish) at which the intake queue,
/// and the partition queues, still held ready messages, with the most each held.
#[derive(Clone, Debug, Default)]
pub struct QueuesDrained {
    /// Intake: last seen non-empty, most ready.
    pub intake: Option<(f64, u32)>,
    /// The partition queues together: last seen non-empty, most ready.
    pub partitions: Option<(f64, u32)>,
}

impl QueuesDrained {
    fn saw(&mut self, at: Duration, intake: u32, partitions: u32) {
        let at = at.as_secs_f64();
        for (slot, n) in [
            (&mut self.intake, intake),
            (&mut self.partitions, partitions),
        ] {
            if n > 0 {
                let most = slot.map_or(0, |(_, m)| m).max(n);
                *slot = Some((at, most));
            }
        }
    }
}

/// Where a cancellation's time went, one value per cancellation that reached the door:
/// broker confirm → its mailbox row (intake, the partition queue and its store),
/// mailbox row → the row done (waiting for the step and deciding the revoke), and
/// decided → the removal in the simulator's journal (the vendor worker and the call).
/// The node's clock stamps the mailbox, the benchmark's the rest (one machine).
#[derive(Clone, Debug, Default)]
pub struct CancelLegs {
    /// Broker confirm → mailbox row created.
    pub stored_s: Vec<f64>,
    /// Mailbox row created → done.
    pub decided_s: Vec<f64>,
    /// Done → door removal.
    pub door_s: Vec<f64>,
    /// Every event row the burst stored in the mailbox: seconds from the burst's first
    /// publish to the row's creation (how fast intake and the partitions took the burst).
    pub burst_stored_s: Vec<f64>,
}

impl CancelLegs {
    /// Reads each cancellation's mailbox row (worker role: it reads every tenant) and
    /// splits `published → removed` of each stay at its stamps.
    fn read(
        rig: &Rig,
        subjects: &HashMap<usize, String>,
        published: &HashMap<usize, DateTime<Utc>>,
        removed: &HashMap<usize, DateTime<Utc>>,
        burst_started: DateTime<Utc>,
    ) -> anyhow::Result<Self> {
        let rows = rig.pg.psql_url(
            &rig.pg.urls().worker,
            "SELECT subject, (extract(epoch FROM created_at) * 1000)::bigint, \
             (extract(epoch FROM done_at) * 1000)::bigint FROM mailbox \
             WHERE kind = 'event' AND topic LIKE '%reservation.cancelled%' AND done_at IS NOT NULL",
        )?;
        let mut stamps: HashMap<&str, (i64, i64)> = HashMap::new();
        for line in rows.lines() {
            let mut f = line.split('|');
            if let (Some(subject), Some(Ok(created)), Some(Ok(done))) = (
                f.next(),
                f.next().map(str::parse::<i64>),
                f.next().map(str::parse::<i64>),
            ) {
                stamps.insert(subject, (created, done));
            }
        }
        let mut legs = Self::default();
        let since = rig.pg.psql_url(
            &rig.pg.urls().worker,
            &format!(
                "SELECT (extract(epoch FROM created_at) * 1000)::bigint - {} FROM mailbox \
                 WHERE kind = 'event' AND topic NOT LIKE 'lockstep.internal.%' \
                 AND created_at >= to_timestamp({})",
                burst_started.timestamp_millis(),
                burst_started.timestamp_millis() as f64 / 1000.0
            ),
        )?;
        legs.burst_stored_s = since
            .lines()
            .filter_map(|l| l.trim().parse::<i64>().ok())
            .map(|ms| ms.max(0) as f64 / 1000.0)
            .collect();
        for (stay, gone) in removed {
            let (Some(subject), Some(sent)) = (subjects.get(stay), published.get(stay)) else {
                continue;
            };
            let Some((created, done)) = stamps.get(subject.as_str()) else {
                continue;
            };
            let s = |ms: i64| ms.max(0) as f64 / 1000.0;
            legs.stored_s.push(s(created - sent.timestamp_millis()));
            legs.decided_s.push(s(done - created));
            legs.door_s.push(s(gone.timestamp_millis() - done));
        }
        Ok(legs)
    }
}

impl Burst {
    /// Lockstep's own transactions over the burst: its `COMMIT`s and `ROLLBACK`s.
    pub fn own_transactions(&self) -> Option<f64> {
        self.transactions.as_ref().map(|t| {
            t.iter()
                .filter(|(q, _)| q.starts_with("COMMIT") || q.starts_with("ROLLBACK"))
                .map(|(_, n)| n)
                .sum()
        })
    }

    /// Sagas completed: confirmations issued and cancellations carried to the door.
    pub fn sagas(&self) -> usize {
        self.issued + self.removed
    }

    /// Confirmations issued per second, first publish → last `issued.v1`.
    pub fn sagas_per_sec(&self) -> f64 {
        self.issued as f64 / self.to_last_issued.as_secs_f64().max(1e-9)
    }
}

/// One Lockstep node at the end.
#[derive(Clone, Debug)]
pub struct NodeFigures {
    /// Its `node_id`.
    pub name: String,
    /// `VmHWM` at the end, bytes.
    pub peak_rss: Option<u64>,
    /// CPU seconds over the burst.
    pub burst_cpu: f64,
}

/// The invariants after the run.
#[derive(Clone, Debug, Default)]
pub struct Invariants {
    /// Stays in the model.
    pub stays: usize,
    /// Whether every invariant held.
    pub consistent: bool,
    /// What was still busy (None: idle).
    pub busy: Option<String>,
    /// Problems found (first few of each kind).
    pub problems: Vec<String>,
}

/// Everything measured on Lockstep.
#[derive(Clone, Debug, Default)]
pub struct LockstepFigures {
    /// Warm-up.
    pub warmup: Warmup,
    /// Idle phase.
    pub idle: Idle,
    /// Burst.
    pub burst: Burst,
    /// Each node.
    pub nodes: Vec<NodeFigures>,
    /// The invariants at the end.
    pub invariants: Invariants,
}

/// The progress line on stderr (rewritten in place on a terminal, a line every 10 s
/// otherwise).
#[derive(Debug, Default)]
struct Progress {
    phase: Mutex<String>,
    published: AtomicU64,
    to_publish: AtomicU64,
    issued: AtomicU64,
    to_issue: AtomicU64,
    removed: AtomicU64,
    to_remove: AtomicU64,
    stop: AtomicBool,
}

impl Progress {
    /// A new phase: its name and targets, the counts back to zero.
    fn phase(&self, name: &str, to_publish: usize, to_issue: usize, to_remove: usize) {
        *self.phase.lock().expect("never poisoned") = name.to_owned();
        for (a, v) in [
            (&self.to_publish, to_publish),
            (&self.to_issue, to_issue),
            (&self.to_remove, to_remove),
        ] {
            a.store(v as u64, Ordering::Relaxed);
        }
        for a in [&self.published, &self.issued, &self.removed] {
            a.store(0, Ordering::Relaxed);
        }
    }

    fn line(&self, issued_per_sec: Option<f64>, elapsed: Duration) -> String {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "[bench] {} · published {}/{} · issued {}/{} · cancelled keys off the door {}/{} · {} · {}s",
            self.phase.lock().expect("never poisoned"),
            n(&self.published),
            n(&self.to_publish),
            n(&self.issued),
            n(&self.to_issue),
            n(&self.removed),
            n(&self.to_remove),
            issued_per_sec.map_or("-".into(), |r| format!("{r:.1} issued/s over 10 s")),
            elapsed.as_secs()
        )
    }

    fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let tty = std::io::stderr().is_terminal();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut history: Vec<(Instant, u64)> = Vec::new();
            let mut ticks = 0u64;
            while !me.stop.load(Ordering::SeqCst) {
                ticks += 1;
                let issued = me.issued.load(Ordering::Relaxed);
                history.retain(|(t, _)| t.elapsed() <= Duration::from_secs(10));
                history.push((Instant::now(), issued));
                let rate = history
                    .first()
                    .filter(|(t, n)| *n <= issued && t.elapsed() >= Duration::from_secs(1))
                    .map(|(t, n)| (issued - n) as f64 / t.elapsed().as_secs_f64());
                if tty || ticks.is_multiple_of(10) {
                    let line = me.line(rate, started.elapsed());
                    let mut err = std::io::stderr().lock();
                    if tty {
                        let _ = write!(err, "\r\x1b[2K{line}");
                    } else {
                        let _ = writeln!(err, "{line}");
                    }
                    let _ = err.flush();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if tty {
                eprintln!();
            }
        })
    }
}

/// The run's outgoing messages, published as `reservation-service`.
fn outgoing(e: &Envelope) -> Outgoing {
    Outgoing {
        routing_key: e.subject().to_owned(),
        id: e.id().to_owned(),
        body: e.body().to_vec(),
    }
}

/// One message of the burst's stream.
enum Item {
    Confirm(usize),
    Cancel { stay: usize, revision: i64 },
}

/// Where the cancellations go among `confirmations` (before which confirmation each one
/// is published): evenly through the middle half.
fn cancel_slots(confirmations: usize, cancellations: usize) -> Vec<usize> {
    (0..cancellations)
        .map(|j| confirmations / 4 + j * (confirmations / 2) / cancellations.max(1))
        .collect()
}

/// The burst's stream: `n` new confirmations with the cancellations of `to_cancel`
/// interleaved at [`cancel_slots`].
fn burst_stream(world: &World, n: usize, to_cancel: &[usize]) -> (Vec<Item>, Vec<Outgoing>) {
    let slots = cancel_slots(n, to_cancel.len());
    let mut cancels = to_cancel.iter().zip(&slots).peekable();
    let (mut items, mut messages) = (Vec::new(), Vec::new());
    for k in 0..n {
        while let Some((stay, _)) = cancels.next_if(|(_, slot)| **slot == k) {
            if let Some((e, revision)) = world.prepare_end(*stay, EndKind::Cancelled) {
                messages.push(outgoing(&e));
                items.push(Item::Cancel {
                    stay: *stay,
                    revision,
                });
            }
        }
        let (i, e) = world.prepare_confirmation();
        messages.push(outgoing(&e));
        items.push(Item::Confirm(i));
    }
    (items, messages)
}

/// What a run holds while it goes through its phases.
struct Session {
    plan: Plan,
    world: Arc<World>,
    sims: Arc<Vec<VendorSim>>,
    ttlock: SimHandle,
    events: Events,
    publisher: Connection,
    ch: Channel,
    progress: Arc<Progress>,
    ticker: tokio::task::JoinHandle<()>,
    ticks: f64,
}

impl Session {
    async fn start(rig: &Rig, plan: &Plan) -> anyhow::Result<Self> {
        let ttlock = rig
            .sim(Vendor::Ttlock)
            .and_then(VendorSim::ttlock)
            .context("the bench runs on the TTLock simulator")?;
        let events = Events::start(&rig.rabbit.url(LOCKSTEP_USER)).await?;
        let (publisher, ch) = pipeline::connect(&rig.rabbit.url(RESERVATION_USER)).await?;
        let progress = Arc::new(Progress::default());
        let ticker = progress.spawn();
        Ok(Self {
            plan: plan.clone(),
            world: rig.world.clone(),
            sims: rig.sims.clone(),
            ttlock,
            events,
            publisher,
            ch,
            progress,
            ticker,
            ticks: sys::clock_ticks(),
        })
    }

    fn sim(&self) -> &VendorSim {
        self.sims
            .iter()
            .find(|s| s.vendor() == Vendor::Ttlock)
            .expect("checked at the start")
    }

    /// Publishes as `reservation-service`, pipelined; `before(i)` runs before each publish.
    async fn publish(
        &self,
        messages: &[Outgoing],
        mut before: impl FnMut(usize),
    ) -> anyhow::Result<Vec<DateTime<Utc>>> {
        let progress = &self.progress;
        pipeline::publish(
            &self.ch,
            EXCHANGE,
            Some(RESERVATION_USER),
            messages,
            self.plan.window,
            |i| {
                before(i);
                progress.published.fetch_add(1, Ordering::Relaxed);
            },
        )
        .await
    }

    /// Waits until each of `reservations` was issued, up to the plan's timeout; returns the
    /// last `issued.v1`.
    async fn wait_all_issued(&self, reservations: &[String]) -> anyhow::Result<Instant> {
        let started = Instant::now();
        loop {
            let (n, last) = self.events.issued_of(reservations);
            self.progress.issued.store(n as u64, Ordering::Relaxed);
            if n == reservations.len() {
                return Ok(last.unwrap_or(started));
            }
            if started.elapsed() > self.plan.timeout {
                bail!(
                    "only {n} of {} stays were issued within {:?}",
                    reservations.len(),
                    self.plan.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Phase 1: confirms the stays the burst will cancel and waits until each is issued;
    /// returns their indexes.
    async fn warmup(&self) -> anyhow::Result<(Warmup, Vec<usize>)> {
        let n = self.plan.cancellations();
        self.progress.phase("warm-up", n, n, 0);
        let prepared: Vec<(usize, Envelope)> =
            (0..n).map(|_| self.world.prepare_confirmation()).collect();
        let messages: Vec<Outgoing> = prepared.iter().map(|(_, e)| outgoing(e)).collect();
        let started = Instant::now();
        self.publish(&messages, |_| {})
            .await
            .context("publishing the warm-up")?;
        let stays: Vec<usize> = prepared.iter().map(|(i, _)| *i).collect();
        for i in &stays {
            self.world.mark_confirmed(*i);
        }
        let reservations: Vec<String> = stays
            .iter()
            .map(|i| self.world.stay(*i).reservation)
            .collect();
        let last = self
            .wait_all_issued(&reservations)
            .await
            .context("the warm-up")?;
        let took = last.saturating_duration_since(started);
        eprintln!(
            "[bench] warm-up: {n} stays issued in {:.1}s",
            took.as_secs_f64()
        );
        Ok((Warmup { stays: n, took }, stays))
    }

    /// Phase 2: confirmations one at a time, each waiting for its `issued.v1`.
    async fn idle(&self) -> anyhow::Result<Idle> {
        let samples = self.plan.idle_samples;
        self.progress.phase("idle", samples, samples, 0);
        let mut idle = Idle::default();
        for _ in 0..samples {
            let (i, e) = self.world.prepare_confirmation();
            let reservation = self.world.stay(i).reservation;
            let mut sent = Instant::now();
            self.publish(&[outgoing(&e)], |_| sent = Instant::now())
                .await
                .context("publishing an idle sample")?;
            self.world.mark_confirmed(i);
            match self
                .events
                .wait_issued(&reservation, IDLE_SAMPLE_TIMEOUT)
                .await
            {
                Some(t) => {
                    idle.latencies_ms
                        .push(t.duration_since(sent).as_secs_f64() * 1000.0);
                    self.progress.issued.fetch_add(1, Ordering::Relaxed);
                }
                None => idle.missing += 1,
            }
        }
        Ok(idle)
    }

    /// Between the phases: waits (bounded) until Lockstep is idle, then measures its
    /// background: transactions per second and the statements it runs most.
    async fn settle(&self, rig: &mut Rig) -> anyhow::Result<Background> {
        self.progress.phase("settling", 0, 0, 0);
        let since = Instant::now();
        while let Err(busy) = rig.idle().await {
            if since.elapsed() > Duration::from_secs(120) {
                eprintln!("[bench] still busy after the idle phase ({busy}); going on");
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let counted = probe::reset_statements(&rig.pg).await.is_ok();
        let (t0, p0) = (Instant::now(), probe::pg_stats(&rig.pg).await?);
        tokio::time::sleep(BACKGROUND_WINDOW).await;
        let (t1, p1) = (Instant::now(), probe::pg_stats(&rig.pg).await?);
        let window = t1.duration_since(t0).as_secs_f64().max(1e-9);
        let statements = if counted {
            probe::top_statements(&rig.pg, 12, probe::Rank::Calls)
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(Background {
            xacts_per_sec: (p1.xacts - p0.xacts) / window,
            statements,
            window,
        })
    }

    /// Phase 3: the burst, with the cancellations of `to_cancel` in its middle.
    async fn burst(
        &self,
        rig: &Rig,
        to_cancel: &[usize],
        background: Background,
    ) -> anyhow::Result<Burst> {
        let n = self.plan.confirmations;
        self.progress
            .phase("burst", n + to_cancel.len(), n, to_cancel.len());
        let (items, messages) = burst_stream(&self.world, n, to_cancel);
        let confirmed: Vec<usize> = items
            .iter()
            .filter_map(|it| match it {
                Item::Confirm(i) => Some(*i),
                Item::Cancel { .. } => None,
            })
            .collect();
        let reservations: Vec<String> = confirmed
            .iter()
            .map(|i| self.world.stay(*i).reservation)
            .collect();
        let cancelled_keys: HashMap<String, usize> = to_cancel
            .iter()
            .filter_map(|i| Some((self.events.key_of(&self.world.stay(*i).reservation)?, *i)))
            .collect();
        let journal_from = self.sim().journal_since(1).last().map_or(1, |c| c.seq + 1);

        if let Err(e) = probe::reset_statements(&rig.pg).await {
            eprintln!("[bench] pg_stat_statements unavailable: {e:#}");
        }
        let sampler = BackendSampler::start(&rig.pg);
        let mut before = self.snapshot(rig).await;
        before.read_pg(&rig.pg).await?;
        let started = Instant::now();
        #[allow(clippy::disallowed_methods)] // the wall clock the node's stamps are compared with
        let burst_started = Utc::now();
        let mut sent_at = vec![started; messages.len()];
        let confirmed_at = self
            .publish(&messages, |i| sent_at[i] = Instant::now())
            .await
            .context("publishing the burst")?;
        let published_in = started.elapsed();
        let mut cancel_published: HashMap<usize, DateTime<Utc>> = HashMap::new();
        for (k, item) in items.iter().enumerate() {
            match item {
                Item::Confirm(i) => self.world.mark_confirmed(*i),
                Item::Cancel { stay, revision } => {
                    let at = confirmed_at[k];
                    self.world
                        .mark_ended(*stay, EndKind::Cancelled, *revision, at);
                    cancel_published.insert(*stay, at);
                }
            }
        }

        // wait: every confirmation issued, every cancelled key off its door
        let mut removed_at: HashMap<usize, DateTime<Utc>> = HashMap::new();
        let mut cursor = journal_from;
        // where the burst waits: the queues' ready messages, sampled with the journal
        let depths_conn = Connection::connect(
            &rig.rabbit.url(LOCKSTEP_USER),
            lapin::ConnectionProperties::default(),
        )
        .await
        .ok();
        let depths_ch = match &depths_conn {
            Some(c) => c.create_channel().await.ok(),
            None => None,
        };
        let mut queued = QueuesDrained::default();
        let partitions = rig.nodes[0].config().partitions;
        let (last_issued, timed_out) = loop {
            if let Some(ch) = &depths_ch {
                if let Ok((intake, parts)) = crate::rig::ready_messages(ch, partitions).await {
                    queued.saw(started.elapsed(), intake, parts);
                }
            }
            for c in self.sim().journal_since(cursor) {
                cursor = c.seq + 1;
                if c.op == DoorOp::Remove && c.remaining == 0 {
                    if let Some(stay) = cancelled_keys.get(&c.label) {
                        removed_at.insert(*stay, c.at);
                    }
                }
            }
            let (issued, last) = self.events.issued_of(&reservations);
            self.progress.issued.store(issued as u64, Ordering::Relaxed);
            self.progress
                .removed
                .store(removed_at.len() as u64, Ordering::Relaxed);
            if issued == n && removed_at.len() == cancelled_keys.len() {
                break (last, false);
            }
            if started.elapsed() > self.plan.timeout {
                break (last, true);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let waited = started.elapsed();
        if let Some(c) = depths_conn {
            let _ = c.close(200, "depths read".into()).await;
        }
        let mut after = self.snapshot(rig).await;
        let (backends, backend_samples) = sampler.finish().await;
        tokio::time::sleep(probe::PG_STATS_LAG).await;
        after.read_pg(&rig.pg).await?;
        let statements = probe::top_statements(&rig.pg, 10, probe::Rank::Time)
            .await
            .unwrap_or_default();
        let transactions = probe::transaction_statements(&rig.pg).await.ok();
        let busiest = probe::top_statements(&rig.pg, 16, probe::Rank::Calls)
            .await
            .unwrap_or_default();

        let sent_of_confirmations = items.iter().zip(&sent_at).filter_map(|(it, t)| match it {
            Item::Confirm(_) => Some(*t),
            Item::Cancel { .. } => None,
        });
        let latencies_s: Vec<f64> = reservations
            .iter()
            .zip(sent_of_confirmations)
            .filter_map(|(r, sent)| {
                let t = self.events.issued_at(r)?;
                Some(t.saturating_duration_since(sent).as_secs_f64())
            })
            .collect();
        let cancel_to_delete_s = removed_at
            .iter()
            .filter_map(|(stay, gone)| {
                let published = cancel_published.get(stay)?;
                Some((*gone - *published).num_milliseconds().max(0) as f64 / 1000.0)
            })
            .collect();
        let subjects: HashMap<usize, String> = to_cancel
            .iter()
            .map(|i| {
                (
                    *i,
                    format!("reservation:{}", self.world.stay(*i).reservation),
                )
            })
            .collect();
        let cancel_legs = CancelLegs::read(
            rig,
            &subjects,
            &cancel_published,
            &removed_at,
            burst_started,
        )
        .unwrap_or_else(|e| {
            eprintln!("[bench] the cancellations' mailbox rows could not be read: {e:#}");
            CancelLegs::default()
        });
        let burst = Burst {
            confirmations: n,
            cancellations: to_cancel.len(),
            published_in,
            issued: latencies_s.len(),
            removed: removed_at.len(),
            to_last_issued: last_issued.map_or(waited, |t| t.saturating_duration_since(started)),
            waited,
            timed_out,
            latencies_s,
            cancel_to_delete_s,
            cancel_legs,
            queued,
            background_xacts_per_sec: background.xacts_per_sec,
            background_statements: background.statements,
            background_window: background.window,
            usage: Usage::between(&before, &after),
            backends,
            backend_samples,
            statements,
            transactions,
            busiest,
        };
        eprintln!(
            "[bench] burst: {} of {n} issued, {} of {} cancelled keys off the door in {:.1}s{}",
            burst.issued,
            burst.removed,
            burst.cancellations,
            waited.as_secs_f64(),
            if timed_out { " (timed out)" } else { "" }
        );
        Ok(burst)
    }

    async fn snapshot(&self, rig: &Rig) -> Snapshot {
        Snapshot::take(
            rig,
            self.ticks,
            self.ttlock.counters(),
            self.events.subjects(),
        )
        .await
    }

    async fn close(self) {
        self.progress.stop.store(true, Ordering::SeqCst);
        let _ = self.ticker.await;
        let _ = self.publisher.close(200, "bench done".into()).await;
        self.events.close().await;
    }
}

/// The invariants once Lockstep is done (waits up to 2 minutes for them and for idle).
async fn invariants(rig: &mut Rig) -> Invariants {
    let c = rig.converge(Instant::now(), Duration::from_secs(120)).await;
    Invariants {
        stays: rig.world.stays().len(),
        consistent: c.evaluation.consistent() && c.error.is_none(),
        busy: c.busy,
        problems: c
            .error
            .into_iter()
            .map(|e| format!("evaluation failed: {e}"))
            .chain(c.evaluation.problems)
            .collect(),
    }
}

/// Runs the three phases on `rig` (nodes started) and returns the figures.
pub async fn run(rig: &mut Rig, plan: &Plan) -> anyhow::Result<LockstepFigures> {
    let session = Session::start(rig, plan).await?;
    let (warmup, to_cancel) = session.warmup().await?;
    let idle = session.idle().await?;
    let background = session.settle(rig).await?;
    let burst = session.burst(rig, &to_cancel, background).await?;
    session.close().await;
    let invariants = invariants(rig).await;
    let nodes = rig
        .nodes
        .iter()
        .enumerate()
        .map(|(k, node)| NodeFigures {
            name: node.name().to_owned(),
            peak_rss: node.pid().and_then(sys::peak_rss_bytes),
            burst_cpu: burst.usage.node_cpu.get(k).copied().unwrap_or(0.0),
        })
        .collect();
    Ok(LockstepFigures {
        warmup,
        idle,
        burst,
        nodes,
        invariants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancellations_spread_through_the_middle_half() {
        assert_eq!(cancel_slots(3000, 150).first(), Some(&750));
        assert_eq!(cancel_slots(3000, 150).last(), Some(&(750 + 149 * 10)));
        assert_eq!(cancel_slots(100, 0), Vec::<usize>::new());
        assert!(cancel_slots(10, 8).iter().all(|s| (2..7).contains(s)));
    }
}
