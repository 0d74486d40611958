//! The stage a scenario plays on: its own Postgres cluster and RabbitMQ node, one simulator
//! per vendor in play, the properties on them, N Lockstep nodes (each optionally behind its
//! own AMQP and Postgres [`Proxy`]), the [`World`] publishing into the broker, a progress
//! line, and the end of every run: [`Rig::converge`] (wait, bounded, until the invariants
//! hold and Lockstep is idle) and [`Rig::figures`].
//!
//! A harder scenario is a function that starts a [`Rig`] with the [`RigOptions`] it needs,
//! drives load and faults through its fields, and ends with `converge` and `figures`; see
//! `scenarios::kill9` for the shape.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

use crate::check::{self, Api, ApiCredential, Doors, Evaluation, Figures};
use crate::node::{self, metric_value, Node, NodeConfig};
use crate::pg::PgCluster;
use crate::proxy::Proxy;
use crate::rabbit::{RabbitNode, LOCKSTEP_USER, RESERVATION_USER};
use crate::util::{self, wall_now};
use crate::vendors::{DoorChange, Vendor, VendorSim};
use crate::world::{Property, Publisher, World};

/// Tweaks a node's config before it is written: `(node index, config)`.
pub type ConfigureNode = Arc<dyn Fn(usize, &mut NodeConfig) + Send + Sync>;

/// What to set up.
#[derive(Clone)]
pub struct RigOptions {
    /// The scenario's name (directories, progress line, figures).
    pub name: String,
    /// Vendors with a simulator and properties.
    pub vendors: Vec<Vendor>,
    /// Properties per vendor.
    pub properties_per_vendor: usize,
    /// Rooms (one device each) per property.
    pub rooms_per_property: usize,
    /// Lockstep nodes.
    pub nodes: usize,
    /// Whether each node reaches Postgres and RabbitMQ through proxies of its own.
    pub proxies: bool,
    /// Seed of the world's randomness (printed).
    pub seed: u64,
    /// Changes to each node's config (knobs the defaults do not set).
    pub configure: Option<ConfigureNode>,
}

impl std::fmt::Debug for RigOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RigOptions")
            .field("name", &self.name)
            .field("vendors", &self.vendors)
            .field("nodes", &self.nodes)
            .field("proxies", &self.proxies)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl RigOptions {
    /// One node, no proxies, 2 properties of 8 rooms per vendor, a random seed.
    pub fn new(name: &str, vendors: &[Vendor]) -> Self {
        Self {
            name: name.to_owned(),
            vendors: vendors.to_vec(),
            properties_per_vendor: 2,
            rooms_per_property: 8,
            nodes: 1,
            proxies: false,
            seed: rand::random(),
            configure: None,
        }
    }
}

/// A node's own proxies.
#[derive(Debug)]
pub struct NodeProxies {
    /// In front of the broker's AMQP port.
    pub amqp: Proxy,
    /// In front of Postgres.
    pub pg: Proxy,
}

impl NodeProxies {
    /// Partitions the node away from both.
    pub fn cut(&self) {
        self.amqp.cut();
        self.pg.cut();
    }

    /// Heals both.
    pub fn heal(&self) {
        self.amqp.heal();
        self.pg.heal();
    }
}

/// Every piece of a running scenario. Dropping it stops everything and removes its files
/// (set `LOCKSTEP_CHAOS_KEEP=1` to keep the directory with the nodes' logs).
pub struct Rig {
    /// The options it was built with.
    pub options: RigOptions,
    /// Its own Postgres.
    pub pg: PgCluster,
    /// Its own RabbitMQ node.
    pub rabbit: RabbitNode,
    /// One simulator per vendor, in `options.vendors` order.
    pub sims: Arc<Vec<VendorSim>>,
    /// The reservation system.
    pub world: Arc<World>,
    /// The Lockstep nodes.
    pub nodes: Vec<Node>,
    /// Each node's proxies (empty without `options.proxies`).
    pub proxies: Vec<NodeProxies>,
    faults: Arc<AtomicU64>,
    dir: PathBuf,
    started: Instant,
}

impl std::fmt::Debug for Rig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rig")
            .field("options", &self.options)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Rig {
    /// Starts Postgres, RabbitMQ, the simulators, migrates, and starts every node (ready).
    pub async fn start(options: RigOptions) -> anyhow::Result<Self> {
        let mut rig = Self::prepare(options).await?;
        rig.start_nodes().await?;
        Ok(rig)
    }

    /// Everything [`Rig::start`] does except starting the nodes: Postgres, RabbitMQ, the
    /// simulators, the nodes' configs written and the schema migrated. For a run that uses
    /// the cluster and the broker before Lockstep does (the benchmark's machine baselines);
    /// [`Rig::start_nodes`] then starts them.
    pub async fn prepare(options: RigOptions) -> anyhow::Result<Self> {
        let started = Instant::now();
        let dir = util::scratch_dir(&options.name)?;
        eprintln!(
            "[{}] seed={} dir={} vendors={:?}",
            options.name,
            options.seed,
            dir.display(),
            options.vendors.iter().map(|v| v.name()).collect::<Vec<_>>()
        );
        let (pg, rabbit) = tokio::try_join!(PgCluster::start_new(), RabbitNode::start_new())?;
        bind_platform_consumers(&rabbit.url(LOCKSTEP_USER)).await?;
        let mut sims = Vec::new();
        let mut properties = Vec::new();
        let per_sim = options.properties_per_vendor * options.rooms_per_property;
        for (v, vendor) in options.vendors.iter().enumerate() {
            let sim = VendorSim::start(*vendor, per_sim, 7001 + v * 1000)?;
            for p in 0..options.properties_per_vendor {
                let r = options.rooms_per_property;
                properties.push(Property::on(&sim, p, &sim.devices()[p * r..(p + 1) * r]));
            }
            sims.push(sim);
        }
        let properties_toml: String = properties
            .iter()
            .map(|p| {
                let sim = sims
                    .iter()
                    .find(|s| s.vendor() == p.vendor)
                    .expect("every property's vendor has a simulator");
                p.toml(sim)
            })
            .collect();
        let mut proxies = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..options.nodes {
            let (db, amqp_url) = if options.proxies {
                let amqp = Proxy::start(([127, 0, 0, 1], rabbit.port()).into()).await?;
                let pgp = Proxy::start(([127, 0, 0, 1], pg.port()).into()).await?;
                let db = pg.urls().with_port(pg.port(), pgp.port());
                let url = rabbit.url(LOCKSTEP_USER).replace(
                    &format!(":{}/", rabbit.port()),
                    &format!(":{}/", amqp.port()),
                );
                proxies.push(NodeProxies { amqp, pg: pgp });
                (db, url)
            } else {
                (pg.urls(), rabbit.url(LOCKSTEP_USER))
            };
            let mut cfg = NodeConfig::new(
                &format!("chaos-{}-{i}", options.name.replace('_', "-")),
                db,
                amqp_url,
                properties_toml.clone(),
            );
            cfg.node_index = i as u32;
            cfg.node_count = options.nodes as u32;
            if let Some(f) = &options.configure {
                f(i, &mut cfg);
            }
            nodes.push(Node::new(&dir, cfg)?);
        }
        if let Some(first) = nodes.first() {
            node::migrate(&first.config_path())?;
        }
        let publisher = Publisher::new(rabbit.url(RESERVATION_USER), RESERVATION_USER);
        let world = Arc::new(World::new(properties, publisher, options.seed));
        Ok(Self {
            options,
            pg,
            rabbit,
            sims: Arc::new(sims),
            world,
            nodes,
            proxies,
            faults: Arc::new(AtomicU64::new(0)),
            dir,
            started,
        })
    }

    /// Starts every node of a [`Rig::prepare`]d rig and waits until each is ready.
    pub async fn start_nodes(&mut self) -> anyhow::Result<()> {
        for n in &mut self.nodes {
            n.start(Duration::from_secs(90)).await?;
        }
        // Lockstep's topology is declared now: make it survive a broker SIGKILL (see
        // `rabbit`'s module doc)
        self.rabbit.persist_metadata()?;
        eprintln!(
            "[{}] ready in {:.1}s: {} node(s), {} properties, postgres :{}, rabbitmq :{} ({})",
            self.options.name,
            self.started.elapsed().as_secs_f64(),
            self.nodes.len(),
            self.world.properties().len(),
            self.pg.port(),
            self.rabbit.port(),
            self.rabbit.node_name()
        );
        Ok(())
    }

    /// Counts one injected fault (for the progress line and the figures).
    pub fn fault(&self) {
        self.faults.fetch_add(1, Ordering::Relaxed);
    }

    /// Faults injected so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    /// The simulator of `vendor`.
    pub fn sim(&self, vendor: Vendor) -> Option<&VendorSim> {
        self.sims.iter().find(|s| s.vendor() == vendor)
    }

    /// The scenario's directory (nodes' logs are under it).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The API of the first running node.
    pub fn api(&mut self) -> anyhow::Result<Api> {
        let token = self.nodes[0].config().service_token.clone();
        for node in self.nodes.iter_mut() {
            if node.is_running() {
                return Api::new(node.http()?, &token);
            }
        }
        anyhow::bail!("no Lockstep node is running")
    }

    /// What every device of every simulator holds now.
    pub fn doors(&self) -> Doors {
        doors_of(&self.sims)
    }

    /// Every simulator's journal, merged in time order.
    pub fn journal(&self) -> Vec<DoorChange> {
        let mut all: Vec<DoorChange> = self.sims.iter().flat_map(|s| s.journal_since(1)).collect();
        all.sort_by_key(|c| c.at);
        all
    }

    /// The invariants now (API of the first running node, the simulators' doors).
    pub async fn evaluate(
        &mut self,
    ) -> anyhow::Result<(Evaluation, HashMap<String, Vec<ApiCredential>>)> {
        let api = self.api()?;
        let creds = api.all_credentials(self.world.properties()).await?;
        let doors = self.doors();
        let stays = self.world.stays();
        Ok((
            check::evaluate(self.world.properties(), &stays, &doors, &creds),
            creds,
        ))
    }

    /// `Ok` when every running node has no pending door work and an empty outbox, and the
    /// broker's intake and partition queues are empty; else what is still busy.
    pub async fn idle(&mut self) -> Result<(), String> {
        for n in self.nodes.iter_mut() {
            if !n.is_running() {
                continue;
            }
            let Some(text) = n.metrics_text().await else {
                return Err(format!("{}: /metrics unreachable", n.name()));
            };
            for gauge in [
                "lockstep_door_pending_removals",
                "lockstep_door_pending_issues",
                "lockstep_outbox_unpublished_rows",
            ] {
                match metric_value(&text, gauge) {
                    Some(0.0) => {}
                    v => return Err(format!("{}: {gauge}={v:?}", n.name())),
                }
            }
        }
        let partitions = self.nodes[0].config().partitions;
        match queue_depths(&self.rabbit.url(LOCKSTEP_USER), partitions).await {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!("{n} message(s) ready in intake/partition queues")),
            Err(e) => Err(format!("reading queue depths: {e:#}")),
        }
    }

    /// Waits until every invariant holds and Lockstep is idle, or `timeout` passes. The
    /// recovery time runs from `since` to the first evaluation that held (reset if a later
    /// one breaks again).
    pub async fn converge(&mut self, since: Instant, timeout: Duration) -> Convergence {
        let mut recovery: Option<Duration> = None;
        let mut last = Evaluation::default();
        let mut creds = HashMap::new();
        let mut last_error: Option<String>;
        let mut busy: Option<String> = None;
        loop {
            match self.evaluate().await {
                Ok((e, c)) => {
                    last_error = None;
                    if e.consistent() {
                        recovery.get_or_insert_with(|| since.elapsed());
                    } else {
                        recovery = None;
                    }
                    let done = if e.consistent() {
                        busy = self.idle().await.err();
                        busy.is_none()
                    } else {
                        busy = None;
                        false
                    };
                    last = e;
                    creds = c;
                    if done {
                        break;
                    }
                }
                Err(e) => {
                    recovery = None;
                    last_error = Some(format!("{e:#}"));
                }
            }
            if since.elapsed() > timeout {
                if let Some(err) = &last_error {
                    last.problems
                        .insert(0, format!("last evaluation failed: {err}"));
                }
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Convergence {
            evaluation: last,
            recovery,
            creds,
            error: last_error,
            busy,
        }
    }

    /// The figures of the run, from the final convergence; drains the DLQ.
    pub async fn figures(
        &mut self,
        scenario: &str,
        c: Convergence,
        healed_at: DateTime<Utc>,
        require_removals_first: bool,
    ) -> Figures {
        let stays = self.world.stays();
        let journal = self.journal();
        let mut f = Figures {
            scenario: scenario.to_owned(),
            vendors: self.options.vendors.clone(),
            events: self.world.counters.published.load(Ordering::Relaxed),
            duplicates_published: self.world.counters.duplicates.load(Ordering::Relaxed),
            stays: stays.len() as u64,
            faults: self.faults(),
            stale_windows: check::stale_windows(&stays, &c.creds, &journal),
            grants_before_removals: check::grants_before_removals(
                &stays, &c.creds, &journal, healed_at,
            ),
            require_removals_first,
            clock_scale: self.nodes[0].config().clock_scale.unwrap_or(1.0),
            recovery: c.recovery,
            evaluation: c.evaluation,
            error: c.error,
            ..Figures::default()
        };
        if let Some(busy) = c.busy {
            f.extra.push(("not_idle".into(), format!("{busy:?}")));
        }
        match check::drain_dlq(&self.rabbit.url(LOCKSTEP_USER), "lockstep.dlq").await {
            Ok(d) => f.dlq = d,
            Err(e) => f.error = Some(format!("reading the DLQ: {e:#}")),
        }
        f
    }

    /// Starts the progress line on stderr (rewritten in place on a terminal, a line every
    /// 10 s otherwise); stopped by [`Progress::stop`] or on drop.
    pub fn progress(&self) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let (world, sims, faults, name, started) = (
            self.world.clone(),
            self.sims.clone(),
            self.faults.clone(),
            self.options.name.clone(),
            self.started,
        );
        let flag = stop.clone();
        let tty = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let mut ticks = 0u64;
            while !flag.load(Ordering::SeqCst) {
                ticks += 1;
                if tty || ticks.is_multiple_of(10) {
                    let line = format!(
                        "[{name}] {}/{} published · {} issued · {} faults · {}s",
                        world.counters.published.load(Ordering::Relaxed),
                        world.planned.load(Ordering::Relaxed),
                        doors_of(&sims).labels().len(),
                        faults.load(Ordering::Relaxed),
                        started.elapsed().as_secs()
                    );
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
        });
        Progress {
            stop,
            task: Some(task),
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
        util::remove_unless_kept(&self.dir);
    }
}

fn doors_of(sims: &[VendorSim]) -> Doors {
    Doors::from_views(sims.iter().map(|s| (s.vendor(), s.door_view())).collect())
}

/// The queue standing in for the platform's consumers of Lockstep's events.
pub const PLATFORM_QUEUE: &str = "chaos.platform-events";

/// Binds [`PLATFORM_QUEUE`] to every `melmastoon.lock.#` event, as the platform's
/// consumers (notifications, front desk) are bound in production. Without any binding
/// Lockstep's outbox keeps every event unroutable (issue 10, bug 8) and never idles.
async fn bind_platform_consumers(url: &str) -> anyhow::Result<()> {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.exchange_declare(
        crate::world::EXCHANGE.into(),
        lapin::ExchangeKind::Topic,
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
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        PLATFORM_QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    ch.queue_bind(
        PLATFORM_QUEUE.into(),
        crate::world::EXCHANGE.into(),
        "melmastoon.lock.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let _ = conn.close(200, "bound".into()).await;
    Ok(())
}

/// Messages ready in the intake and partition queues of the broker at `url`.
async fn queue_depths(url: &str, partitions: u32) -> anyhow::Result<u32> {
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await??;
    let ch = conn.create_channel().await?;
    let (intake, parts) = ready_messages(&ch, partitions).await?;
    let _ = conn.close(200, "depths read".into()).await;
    Ok(intake + parts)
}

/// Messages ready in the intake queue and in all partition queues together, read on `ch`
/// (passive declares).
pub async fn ready_messages(ch: &lapin::Channel, partitions: u32) -> anyhow::Result<(u32, u32)> {
    let ready = |q: String| async move {
        let declared = ch
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        anyhow::Ok(declared.message_count())
    };
    let intake = ready("lockstep.intake".to_owned()).await?;
    let mut parts = 0;
    for i in 0..partitions {
        parts += ready(format!("lockstep.partition.{i}")).await?;
    }
    Ok((intake, parts))
}

/// The outcome of [`Rig::converge`].
#[derive(Debug)]
pub struct Convergence {
    /// The last evaluation.
    pub evaluation: Evaluation,
    /// Since → first consistent evaluation (that stayed so); `None` if never.
    pub recovery: Option<Duration>,
    /// The credentials of the last evaluation.
    pub creds: HashMap<String, Vec<ApiCredential>>,
    /// Why the last evaluation could not be made, if it could not.
    pub error: Option<String>,
    /// What was still busy when the invariants held but the wait ended (`None`: idle).
    pub busy: Option<String>,
}

/// The running progress line.
#[derive(Debug)]
pub struct Progress {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Stops it (ending the line).
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The wall time now, for `healed_at` (re-exported for scenarios).
pub fn now() -> DateTime<Utc> {
    wall_now()
}
