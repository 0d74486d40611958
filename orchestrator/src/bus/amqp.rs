//! Production's RabbitMQ bus (DESIGN §4).
//!
//! ```text
//! melmastoon.events (topic) ──consumed subjects──▶ <p>.intake (quorum, delivery limit, DLX)
//!        intake consumer: validate → republish (confirmed) by tenant/property ──▶
//! <p>.partitions (x-consistent-hash) ──▶ <p>.partition.<i> (quorum, single active consumer)
//!        partition consumer: take epoch → inbox+mailbox commit → ack → wake actor
//! outbox ──publisher (mandatory + confirms)──▶ melmastoon.events
//! malformed / unknown / over the delivery limit ──▶ <p>.dlx ──▶ <p>.dlq (with a reason)
//!                                                          └──▶ <p>.dlq.watch (counted)
//! ```
//!
//! Every node consumes every partition; RabbitMQ keeps one active consumer per partition.
//! RabbitMQ 3.10 never tells a consumer it became active, so a ticker publishes a tick
//! into every partition that has nothing waiting: the active consumer learns of ownership
//! from its first delivery or tick, takes the partition's epoch in Postgres (every later
//! commit checks it), rehydrates the partition's due work, and fires its timers on its
//! own beat. A node holding another node's home partition hands it back when that node
//! claims it (a home claim published into the queue; see `serve_partition`), so a node
//! that joins or restarts gets its share.
//!
//! The delivery limit is for poison, never for Lockstep's own outages (DESIGN §4): a store
//! failure holds the delivery and retries (no nack, no session teardown), ticks carry no
//! expiry and are acknowledged first, and SIGTERM cancels the consumers and stores what
//! they hold before the connection closes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::{FutureExt as _, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use lockstep_actors::events_in::{Rejection, CONSUMED_SUBJECTS};
use lockstep_actors::{ReleasePartition, Wake};
use lockstep_config::AmqpSettings;
use lockstep_persistence::StoreError;
use tracing::{debug, info, warn};

use crate::app::Shared;
use crate::intake::{self, IntakeError};
use crate::shutdown;

/// Header that marks a tick.
pub const TICK_HEADER: &str = "x-lockstep-tick";
/// Header that marks a home claim: a partition's home node asks the active consumer to
/// hand the partition back (its value is the claiming node's id).
pub const HOME_CLAIM_HEADER: &str = "x-lockstep-home-claim";
/// Header carrying when a home claim was made (ms since the Unix epoch).
const HOME_CLAIM_AT_HEADER: &str = "x-lockstep-home-claim-at";
/// Header carrying the dead-letter reason.
pub const REASON_HEADER: &str = "x-lockstep-reason";
/// Header carrying what exactly was wrong (bounded text, never a secret).
pub const DETAIL_HEADER: &str = "x-lockstep-detail";
/// Header naming one of Lockstep's dead letters (a ULID), for `lockstep dlq`.
pub const DEAD_LETTER_ID_HEADER: &str = "x-lockstep-dead-letter-id";
/// Header keeping the routing key a message was published with, on its dead letter and
/// on a replay of it (which reaches intake through the default exchange): intake judges a
/// replay's subject against it.
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-original-routing-key";
/// Header keeping the broker user that published a message (its AMQP `user_id`) on the
/// copies Lockstep publishes itself: dead letters and partition copies, so a replay is
/// judged by the original publisher.
pub const ORIGINAL_USER_HEADER: &str = "x-lockstep-original-user-id";
/// Header naming the operator who replayed a dead letter (`lockstep dlq replay`); only
/// honoured on a message Lockstep's own broker user published.
pub const REPLAYED_BY_HEADER: &str = "x-lockstep-replayed-by";

/// Queue and exchange names under a prefix.
#[derive(Debug, Clone)]
pub struct Names {
    /// Platform exchange.
    pub events: String,
    /// Intake queue.
    pub intake: String,
    /// Consistent-hash exchange.
    pub partitions: String,
    /// Dead-letter exchange.
    pub dlx: String,
    /// Dead-letter queue.
    pub dlq: String,
    /// A copy of every dead letter, consumed by Lockstep to count the broker's own.
    pub dlq_watch: String,
    prefix: String,
}

impl Names {
    /// Names for `settings`.
    pub fn new(s: &AmqpSettings) -> Self {
        Self {
            events: s.exchange.clone(),
            intake: format!("{}.intake", s.prefix),
            partitions: format!("{}.partitions", s.prefix),
            dlx: format!("{}.dlx", s.prefix),
            dlq: format!("{}.dlq", s.prefix),
            dlq_watch: format!("{}.dlq.watch", s.prefix),
            prefix: s.prefix.clone(),
        }
    }

    /// Partition queue `i`.
    pub fn partition(&self, i: u32) -> String {
        format!("{}.partition.{i}", self.prefix)
    }

    /// A bounded label for one of Lockstep's queues.
    pub fn queue_kind(&self, queue: &str) -> &'static str {
        if queue == self.intake {
            "intake"
        } else if queue.starts_with(&format!("{}.partition.", self.prefix)) {
            "partition"
        } else {
            "other"
        }
    }
}

fn s(v: &str) -> ShortString {
    v.into()
}

fn quorum_args(names: &Names, delivery_limit: u32, single_active: bool) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        s("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    // A message that keeps crashing its consumer is dead-lettered, not redelivered forever.
    t.insert(
        s("x-delivery-limit"),
        AMQPValue::LongInt(delivery_limit as i32),
    );
    t.insert(
        s("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from(names.dlx.as_str())),
    );
    if single_active {
        t.insert(s("x-single-active-consumer"), AMQPValue::Boolean(true));
    }
    t
}

/// Declares the topology (idempotent).
pub async fn declare_topology(ch: &Channel, settings: &AmqpSettings) -> anyhow::Result<()> {
    let names = Names::new(settings);
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        s(&names.events),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        s(&names.dlx),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        s(&names.partitions),
        ExchangeKind::Custom("x-consistent-hash".into()),
        durable,
        FieldTable::default(),
    )
    .await
    .context(
        "declaring the consistent-hash exchange (is rabbitmq_consistent_hash_exchange enabled?)",
    )?;
    let qdurable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut dlq_args = FieldTable::default();
    dlq_args.insert(
        s("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    ch.queue_declare(s(&names.dlq), qdurable, dlq_args).await?;
    ch.queue_bind(
        s(&names.dlq),
        s(&names.dlx),
        s(""),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    // A bounded copy of every dead letter, counted by the nodes (the broker's own dead
    // letters must be visible, DESIGN §4); the oldest copies go first if nobody counts.
    let mut watch_args = FieldTable::default();
    watch_args.insert(
        s("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    watch_args.insert(s("x-max-length"), AMQPValue::LongInt(100_000));
    ch.queue_declare(s(&names.dlq_watch), qdurable, watch_args)
        .await?;
    ch.queue_bind(
        s(&names.dlq_watch),
        s(&names.dlx),
        s(""),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        s(&names.intake),
        qdurable,
        quorum_args(&names, settings.delivery_limit, false),
    )
    .await?;
    // Each consumed subject's family (`melmastoon.reservation.#`), not only its exact
    // subjects: an unknown subject or version under it is dead-lettered with a reason
    // instead of coming back to its publisher unroutable.
    for pattern in consumed_families() {
        ch.queue_bind(
            s(&names.intake),
            s(&names.events),
            s(&pattern),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    for i in 0..settings.partitions {
        let q = names.partition(i);
        ch.queue_declare(
            s(&q),
            qdurable,
            quorum_args(&names, settings.delivery_limit, true),
        )
        .await?;
        // binding key = weight of the queue on the hash ring
        ch.queue_bind(
            s(&q),
            s(&names.partitions),
            s("1"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// The binding patterns of the intake queue: each consumed subject without its event name
/// and version (`melmastoon.reservation.confirmed.v1` → `melmastoon.reservation.#`),
/// sorted, once each.
pub fn consumed_families() -> Vec<String> {
    let mut out: Vec<String> = CONSUMED_SUBJECTS
        .iter()
        .map(|subject| {
            let parts: Vec<&str> = subject.split('.').collect();
            let family = parts[..parts.len().saturating_sub(2)].join(".");
            format!("{family}.#")
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Why a session ended without an error.
enum SessionEnd {
    /// Draining on SIGTERM: do not reconnect.
    Shutdown,
}

/// Runs the bus until the node shuts down: connect, serve, and on any failure release
/// every partition, wait, and connect again. On shutdown the session drains (intake
/// stops, running steps finish, the outbox is flushed), the connection is closed, and
/// [`crate::shutdown::Shutdown::bus_closed`] reports it.
pub async fn run(shared: Arc<Shared>, settings: AmqpSettings, url: String) {
    shared
        .rt
        .metrics
        .partitions_configured
        .set(i64::from(settings.partitions));
    let mut down = shared.shutdown.watch();
    loop {
        let cause = match serve_once(shared.clone(), &settings, &url).await {
            Ok(SessionEnd::Shutdown) => "shutdown",
            Err(e) => {
                warn!(error = %format!("{e:#}"), "rabbitmq session ended");
                "broker"
            }
        };
        shared
            .rt
            .metrics
            .amqp_session_ends
            .with_label_values(&[cause])
            .inc();
        shared.bus_ready.store(false, Ordering::SeqCst);
        release_all(&shared, &settings);
        if shared.shutdown.is_begun() {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = shutdown::begun(&mut down) => break,
        }
    }
    shared.shutdown.bus_closed();
}

fn release_all(shared: &Shared, settings: &AmqpSettings) {
    shared.commands.detach();
    for p in 0..settings.partitions {
        let p = p as i32;
        if shared.rt.fences.get(p).is_some() {
            shared.rt.fences.remove(p);
            shared.router.do_send(ReleasePartition(p));
        }
    }
    shared.rt.metrics.partitions_owned.set(0);
}

/// How long a draining session waits for each of its phases.
const DRAIN_CONSUMERS: Duration = Duration::from_secs(5);

async fn serve_once(
    shared: Arc<Shared>,
    settings: &AmqpSettings,
    url: &str,
) -> anyhow::Result<SessionEnd> {
    let conn = Connection::connect(
        url,
        ConnectionProperties::default()
            .with_connection_name(format!("lockstep {}", shared.node_id).into()),
    )
    .await
    .context("connecting to rabbitmq")?;
    let setup = conn.create_channel().await?;
    declare_topology(&setup, settings).await?;
    let names = Names::new(settings);
    {
        // operator commands leave through their own confirmed channel, as our broker user
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let user = url
            .parse::<lapin::uri::AMQPUri>()
            .map(|u| u.authority.userinfo.username)
            .unwrap_or_else(|_| "guest".to_owned());
        shared.commands.attach(ch, names.partitions.clone(), user);
    }
    shared.bus_ready.store(true, Ordering::SeqCst);
    info!(partitions = settings.partitions, "rabbitmq topology ready");

    // Consumers: they stop on their own when draining begins.
    let mut consumers = tokio::task::JoinSet::new();
    {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        consumers.spawn(intake_loop(
            shared.clone(),
            ch,
            names.clone(),
            settings.clone(),
        ));
    }
    {
        let ch = conn.create_channel().await?;
        consumers.spawn(dead_letter_watch(shared.clone(), ch, names.clone()));
    }
    // Home partitions first; the others after a delay, as standby (DESIGN §4).
    let (home, standby): (Vec<u32>, Vec<u32>) =
        (0..settings.partitions).partition(|p| p % settings.node_count == settings.node_index);
    for (delay, list) in [(Duration::ZERO, home), (settings.standby_delay, standby)] {
        for p in list {
            let ch = conn.create_channel().await?;
            consumers.spawn(partition_loop(
                shared.clone(),
                ch,
                names.clone(),
                settings.clone(),
                p,
                delay,
            ));
        }
    }
    // The outbox publisher flushes and ends when told to stop.
    let (stop_outbox, outbox_stop) = tokio::sync::watch::channel(false);
    let mut outbox = {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        tokio::spawn(outbox_loop(
            shared.clone(),
            ch,
            names.clone(),
            settings.clone(),
            outbox_stop,
        ))
    };
    let mut ticker = {
        let ch = conn.create_channel().await?;
        tokio::spawn(tick_loop(ch, names.clone(), settings.clone()))
    };

    let mut down = shared.shutdown.watch();
    let broken = tokio::select! {
        first = consumers.join_next() => Some(match first {
            Some(Ok(Err(e))) => e,
            Some(Err(e)) => anyhow::anyhow!("bus task failed: {e}"),
            _ => anyhow::anyhow!("bus consumer ended"),
        }),
        r = &mut outbox => Some(anyhow::anyhow!("outbox publisher ended: {}", task_end(r))),
        r = &mut ticker => Some(anyhow::anyhow!("ticker ended: {}", task_end(r))),
        () = shutdown::begun(&mut down) => None,
    };
    if let Some(e) = broken {
        // Any task ending means the session is broken: tear it all down.
        consumers.abort_all();
        outbox.abort();
        ticker.abort();
        let _ = conn.close(0, "session ended".into()).await;
        return Err(e);
    }

    // Draining (SIGTERM). 1: intake stops; each consumer cancels, stores what it holds,
    // and ends.
    ticker.abort();
    info!("draining: intake stopped");
    let consumers_done = tokio::time::timeout(DRAIN_CONSUMERS, async {
        while consumers.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !consumers_done {
        warn!("draining: consumers did not finish in time; their deliveries return to the queue");
        consumers.abort_all();
    }
    // 2: running saga steps finish (a vendor call in flight completes or times out and is
    // committed); nothing new starts.
    let grace = shared.rt.settings.vendor_call_timeout + Duration::from_secs(5);
    if tokio::time::timeout(grace, shared.rt.work.idle())
        .await
        .is_err()
    {
        warn!(
            running = shared.rt.work.running(),
            "draining: saga steps still running; their entries stay due for the next owner"
        );
    }
    // 3: the outbox goes out, then the connection closes cleanly.
    stop_outbox.send_replace(true);
    match tokio::time::timeout(Duration::from_secs(10), &mut outbox).await {
        Ok(r) => {
            if let Err(e) = r.map_err(anyhow::Error::from).and_then(|r| r) {
                warn!(error = %format!("{e:#}"), "draining: outbox flush failed");
            }
        }
        Err(_) => {
            warn!("draining: outbox flush did not finish in time; the rest goes out on restart");
            outbox.abort();
        }
    }
    shared.commands.detach();
    if let Err(e) = conn.close(200, "lockstep shutting down".into()).await {
        warn!(error = %e, "closing the rabbitmq connection failed");
    }
    info!("draining: rabbitmq connection closed");
    Ok(SessionEnd::Shutdown)
}

fn task_end(r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(())) => "finished".into(),
        Ok(Err(e)) => format!("{e:#}"),
        Err(e) => e.to_string(),
    }
}

/// A store outage on one path, reported without flooding the log: the first failure at
/// WARN, then one line every 30 s while it lasts, and the recovery at INFO; every failure
/// is counted in `lockstep_store_errors_total{path}`. The path holds its work meanwhile
/// (DESIGN §4: an outage of the store never costs a message a delivery).
struct Outage {
    path: &'static str,
    since: Option<tokio::time::Instant>,
    last_log: tokio::time::Instant,
    failures: u32,
    /// It recovered since [`Self::take_healed`] last asked.
    healed: bool,
}

impl Outage {
    fn new(path: &'static str) -> Self {
        Self {
            path,
            since: None,
            last_log: tokio::time::Instant::now(),
            failures: 0,
            healed: false,
        }
    }

    /// Whether the store came back since this was last asked.
    fn take_healed(&mut self) -> bool {
        std::mem::take(&mut self.healed)
    }

    fn failed(&mut self, shared: &Shared, error: &dyn std::fmt::Display) {
        shared
            .rt
            .metrics
            .store_errors
            .with_label_values(&[self.path])
            .inc();
        self.failures = self.failures.saturating_add(1);
        let now = tokio::time::Instant::now();
        match self.since {
            None => {
                self.since = Some(now);
                self.last_log = now;
                warn!(path = self.path, error = %error, "store unavailable; holding work and retrying");
            }
            Some(since) if now - self.last_log >= Duration::from_secs(30) => {
                self.last_log = now;
                warn!(
                    path = self.path,
                    failures = self.failures,
                    down_for_s = (now - since).as_secs(),
                    error = %error,
                    "store still unavailable; holding work"
                );
            }
            Some(_) => {}
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            self.healed = true;
            info!(
                path = self.path,
                failures = self.failures,
                down_for_s = (tokio::time::Instant::now() - since).as_secs(),
                "store reachable again"
            );
        }
        self.failures = 0;
    }

    /// The wait before the next try: 250 ms doubling to 5 s.
    fn backoff(&self) -> Duration {
        let n = self.failures.clamp(1, 6) - 1;
        Duration::from_millis(250 << n).min(Duration::from_secs(5))
    }

    async fn wait(&self) {
        tokio::time::sleep(self.backoff()).await;
    }
}

fn persistent(message_id: Option<&str>) -> BasicProperties {
    let mut p = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(s("application/json"));
    if let Some(id) = message_id {
        p = p.with_message_id(s(id));
    }
    p
}

/// Who published a consumed message, as intake judges it.
#[derive(Debug, Clone, Default)]
struct Publisher {
    /// The broker user whose subject rights apply: the AMQP `user_id`, or for a replay
    /// the original publisher's.
    user: Option<String>,
    /// The operator who replayed it, for a replay.
    replayed_by: Option<String>,
}

fn header_text(d: &Delivery, name: &str) -> Option<String> {
    match d.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(v) => Some(v.to_string()),
        AMQPValue::ShortString(v) => Some(v.as_str().to_owned()),
        _ => None,
    }
}

/// The publisher of `d`. A replay (`x-lockstep-replayed-by`) is honoured only when
/// Lockstep's own broker user (`own`) published it, RabbitMQ having validated that
/// `user_id`: then the original publisher it names is judged, as if it had sent the
/// message again. Replay headers from anyone else are refused.
fn publisher_of(d: &Delivery, own: Option<&str>) -> Result<Publisher, Rejection> {
    let user = d
        .properties
        .user_id()
        .as_ref()
        .map(|u| u.as_str().to_owned());
    match header_text(d, REPLAYED_BY_HEADER) {
        None => Ok(Publisher {
            user,
            replayed_by: None,
        }),
        Some(by) if own.is_some() && user.as_deref() == own => Ok(Publisher {
            user: header_text(d, ORIGINAL_USER_HEADER),
            replayed_by: Some(by),
        }),
        Some(_) => Err(Rejection::UnauthorizedPublisher),
    }
}

fn text_value(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

async fn dead_letter(
    ch: &Channel,
    names: &Names,
    d: &Delivery,
    why: &Rejection,
    publisher: &Publisher,
) -> anyhow::Result<()> {
    let mut headers = FieldTable::default();
    headers.insert(s(REASON_HEADER), text_value(why.label()));
    let mut detail = why.to_string();
    detail.truncate(500);
    headers.insert(s(DETAIL_HEADER), text_value(&detail));
    // a replay arrives on the intake queue's name: its dead letter keeps the key the
    // message was first published with
    let routing_key = publisher
        .replayed_by
        .as_ref()
        .and_then(|_| header_text(d, ORIGINAL_ROUTING_KEY_HEADER))
        .unwrap_or_else(|| d.routing_key.to_string());
    headers.insert(s(ORIGINAL_ROUTING_KEY_HEADER), text_value(&routing_key));
    headers.insert(
        s(DEAD_LETTER_ID_HEADER),
        text_value(&ulid::Ulid::new().to_string()),
    );
    if let Some(u) = &publisher.user {
        headers.insert(s(ORIGINAL_USER_HEADER), text_value(u));
    }
    if let Some(by) = &publisher.replayed_by {
        headers.insert(s(REPLAYED_BY_HEADER), text_value(by));
    }
    let message_id = d.properties.message_id().as_ref().map(|m| m.as_str());
    let props = persistent(message_id).with_headers(headers);
    let confirm = ch
        .basic_publish(
            s(&names.dlx),
            d.routing_key.clone(),
            BasicPublishOptions::default(),
            &d.data,
            props,
        )
        .await?
        .await?;
    if !matches!(confirm, Confirmation::Ack(None)) {
        anyhow::bail!("dead-letter publish not confirmed");
    }
    Ok(())
}

/// Cancels a consumer and hands back what it had already delivered: draining stores and
/// acknowledges those, so none returns to the queue with a higher delivery count.
async fn cancel_and_collect(
    ch: &Channel,
    consumer: &mut lapin::Consumer,
    tag: &str,
) -> Vec<Delivery> {
    if let Err(e) = ch
        .basic_cancel(s(tag), lapin::options::BasicCancelOptions::default())
        .await
    {
        warn!(error = %e, "cancelling a consumer failed");
    }
    let mut held = Vec::new();
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(Duration::from_millis(300), consumer.next()).await
    {
        held.push(d);
    }
    held
}

async fn intake_loop(
    shared: Arc<Shared>,
    ch: Channel,
    names: Names,
    settings: AmqpSettings,
) -> anyhow::Result<()> {
    ch.basic_qos(
        (INTAKE_BATCH * INTAKE_WINDOW) as u16,
        BasicQosOptions::default(),
    )
    .await?;
    let tag = format!("{}-intake", shared.node_id);
    let mut consumer = ch
        .basic_consume(
            s(&names.intake),
            s(&tag),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut down = shared.shutdown.watch();
    let mut outage = Outage::new("intake");
    // republished batches whose confirms are not awaited yet, oldest first
    let mut in_flight: std::collections::VecDeque<Vec<Sent>> = Default::default();
    loop {
        // with batches in flight, a delivery already here is taken at once; nothing is
        // waited for before they are settled (their deliveries would stay unacknowledged)
        let ready = if in_flight.is_empty() || *down.borrow() {
            None
        } else {
            consumer.next().now_or_never()
        };
        let d = match ready {
            Some(Some(d)) => d?,
            Some(None) => anyhow::bail!("intake consumer ended"),
            None => {
                settle_all(&mut in_flight).await?;
                tokio::select! {
                    biased;
                    () = shutdown::begun(&mut down) => {
                        for d in cancel_and_collect(&ch, &mut consumer, &tag).await {
                            intake_one(&shared, &ch, &names, &settings, d, &mut outage).await?;
                        }
                        return Ok(());
                    }
                    d = consumer.next() => match d {
                        Some(d) => d?,
                        None => anyhow::bail!("intake consumer ended"),
                    },
                }
            }
        };
        // Whatever else the broker has already delivered is republished with it, and the
        // batch's confirms are awaited together (issue 11), behind up to INTAKE_WINDOW - 1
        // earlier batches.
        let mut batch = vec![d];
        while batch.len() < INTAKE_BATCH {
            match consumer.next().now_or_never() {
                Some(Some(d)) => batch.push(d?),
                Some(None) => anyhow::bail!("intake consumer ended"),
                None => break,
            }
        }
        let full = batch.len() == INTAKE_BATCH;
        if full {
            shared.intake_backlog.saw();
        }
        let mut sent = Vec::with_capacity(batch.len());
        for d in batch {
            if let Some(s) = intake_publish(&shared, &ch, &names, &settings, d, &mut outage).await?
            {
                sent.push(s);
            }
        }
        in_flight.push_back(sent);
        // Through a backlog the next batch is taken while the broker confirms this one (a
        // window of INTAKE_WINDOW batches); when nothing else is waiting, what is in
        // flight is settled before the loop waits for a delivery (above).
        if in_flight.len() >= INTAKE_WINDOW {
            settle_oldest(&mut in_flight).await?;
        }
        if full {
            // a full batch that took long (held through an outage, or slow confirms) keeps
            // the backlog marked until the next one is taken
            shared.intake_backlog.saw();
        }
    }
}

/// Deliveries of the intake queue taken and republished together.
const INTAKE_BATCH: usize = 64;
/// Batches republished before the oldest one's confirms are awaited, at most (the intake
/// prefetch is INTAKE_BATCH × INTAKE_WINDOW). Under a burst, awaiting each batch's confirms
/// before taking the next held the intake queue for 1.7–3.3 s in `lockstep-bench`.
const INTAKE_WINDOW: usize = 4;

/// A republished delivery and the confirms of its copies.
type Sent = (Delivery, Vec<lapin::PublisherConfirm>);

/// Awaits the confirms of every batch in flight, oldest first, acknowledging each delivery
/// whose copies were confirmed.
async fn settle_all(in_flight: &mut std::collections::VecDeque<Vec<Sent>>) -> anyhow::Result<()> {
    while !in_flight.is_empty() {
        settle_oldest(in_flight).await?;
    }
    Ok(())
}

/// Awaits the confirms of the oldest batch in flight and acknowledges its deliveries.
async fn settle_oldest(
    in_flight: &mut std::collections::VecDeque<Vec<Sent>>,
) -> anyhow::Result<()> {
    for (d, confirms) in in_flight.pop_front().unwrap_or_default() {
        settle(d, confirms).await?;
    }
    Ok(())
}

/// Whether this node's intake has a backlog: it took a full batch a moment ago (a burst,
/// or what piled up while it was held), or it is holding a delivery it could not admit
/// because the store is down. Partition consumers hold their non-removal wakes while it
/// lasts, so a cancellation queued behind thousands of confirmations, or published while
/// Postgres was down, still reaches the door before their new keys (issue 11, revocations
/// first through a backlog).
#[derive(Debug, Default)]
pub struct IntakeBacklog {
    full_batch: std::sync::Mutex<Option<tokio::time::Instant>>,
    stalled: std::sync::atomic::AtomicBool,
}

/// How long after intake's last full batch the backlog counts as still there.
const INTAKE_BACKLOG_QUIET: Duration = Duration::from_millis(500);

impl IntakeBacklog {
    fn saw(&self) {
        *self.full_batch.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(tokio::time::Instant::now());
    }

    /// Intake holds a delivery it could not admit (`true`: the store is down), or it got
    /// through (`false`).
    fn stalled(&self, stalled: bool) {
        let was = self
            .stalled
            .swap(stalled, std::sync::atomic::Ordering::SeqCst);
        if was && !stalled {
            // what piled up behind the outage is taken next: a backlog until intake sees
            // its first batch short of full
            self.saw();
        }
    }

    fn recent(&self) -> bool {
        self.stalled.load(std::sync::atomic::Ordering::SeqCst)
            || self
                .full_batch
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|t| t.elapsed() < INTAKE_BACKLOG_QUIET)
    }
}

/// Acknowledges a republished delivery once the broker confirmed every copy of it.
async fn settle(d: Delivery, confirms: Vec<lapin::PublisherConfirm>) -> anyhow::Result<()> {
    let mut confirmed = true;
    for c in confirms {
        confirmed &= matches!(c.await?, Confirmation::Ack(None));
    }
    if confirmed {
        d.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    } else {
        // The broker could not take the copy (no partition queue bound, or a nack): the
        // session is unwell; the delivery returns to the queue when it is rebuilt.
        anyhow::bail!("partition republish was not confirmed")
    }
}

/// Validates one consumed message and republishes it to its partition (or dead-letters
/// it), then acknowledges it.
async fn intake_one(
    shared: &Shared,
    ch: &Channel,
    names: &Names,
    settings: &AmqpSettings,
    d: Delivery,
    outage: &mut Outage,
) -> anyhow::Result<()> {
    match intake_publish(shared, ch, names, settings, d, outage).await? {
        Some((d, confirms)) => settle(d, confirms).await,
        None => Ok(()),
    }
}

/// Validates one consumed message and publishes its copies to their partitions, giving
/// back the delivery and the copies' confirms to [`settle`]; a refused message is
/// dead-lettered and acknowledged here (`None`). A store failure (the fan-out of a user
/// deactivation reads the store) holds the delivery and retries: it never returns to the
/// queue for it.
async fn intake_publish(
    shared: &Shared,
    ch: &Channel,
    names: &Names,
    settings: &AmqpSettings,
    d: Delivery,
    outage: &mut Outage,
) -> anyhow::Result<Option<Sent>> {
    // the schema first, then the publisher: each subject only from its owner's broker
    // user (RabbitMQ has validated `user_id` against the connection's user); a replay is
    // judged by its original publisher
    let own = shared.commands.broker_user();
    let publisher = publisher_of(&d, own.as_deref());
    let checked = shared
        .schemas
        .check_consumed(&d.data)
        .and_then(|(envelope, parsed)| {
            let p = publisher.clone()?;
            // the routing key is what the broker routed on (and what `[amqp.publishers]`
            // rights are granted for): a body of another subject is applied by neither
            let routing_key = match &p.replayed_by {
                None => Some(d.routing_key.to_string()),
                Some(_) => header_text(&d, ORIGINAL_ROUTING_KEY_HEADER),
            };
            if let Some(key) = routing_key.filter(|k| *k != parsed.subject) {
                return Err(Rejection::SubjectMismatch {
                    routing_key: key,
                    subject: parsed.subject,
                });
            }
            if settings.may_publish(&parsed.subject, p.user.as_deref()) {
                Ok((envelope, parsed))
            } else {
                Err(Rejection::UnauthorizedPublisher)
            }
        });
    // a refused replay keeps the user that sent it on its dead letter
    let publisher = publisher.unwrap_or_else(|_| Publisher {
        user: d
            .properties
            .user_id()
            .as_ref()
            .map(|u| u.as_str().to_owned()),
        replayed_by: None,
    });
    let checked = match checked {
        Ok((envelope, parsed)) => loop {
            // a stay no key could serve is refused here, not accepted to do nothing
            let (store, clock) = (shared.rt.store.as_ref(), shared.rt.clock.as_ref());
            match intake::admit(store, clock, &shared.admit_cache, &parsed).await {
                Ok(()) => {
                    outage.recovered();
                    shared.intake_backlog.stalled(false);
                    break Ok((envelope, parsed));
                }
                Err(IntakeError::Rejected(why)) => break Err(why),
                Err(IntakeError::Store(e)) => {
                    if shared.shutdown.is_begun() {
                        // left unacknowledged: it returns to the queue when we close
                        return Ok(None);
                    }
                    shared.intake_backlog.stalled(true);
                    outage.failed(shared, &e);
                    outage.wait().await;
                }
            }
        },
        Err(why) => Err(why),
    };
    let (mut envelope, parsed) = match checked {
        Err(why) => {
            warn!(
                reason = why.label(),
                routing_key = %d.routing_key,
                replayed_by = publisher.replayed_by.as_deref(),
                "message dead-lettered"
            );
            dead_letter(ch, names, &d, &why, &publisher).await?;
            shared
                .rt
                .metrics
                .dead_letters
                .with_label_values(&[why.label()])
                .inc();
            shared
                .rt
                .metrics
                .intake_messages
                .with_label_values(&["dead_lettered"])
                .inc();
            d.acker.ack(BasicAckOptions::default()).await?;
            return Ok(None);
        }
        Ok(v) => v,
    };
    // A user deactivation names no property: one copy per property where the user holds a
    // master key, each to that property's partition (DESIGN §4).
    let copies: Vec<(String, Vec<u8>)> = match &parsed.property_id {
        Some(p) => vec![(format!("{}/{}", parsed.tenant_id, p), d.data.clone())],
        None => {
            let props = loop {
                match intake::user_properties(shared.rt.store.as_ref(), &parsed).await {
                    Ok(p) => {
                        outage.recovered();
                        shared.intake_backlog.stalled(false);
                        break p;
                    }
                    Err(IntakeError::Rejected(why)) => {
                        dead_letter(ch, names, &d, &why, &publisher).await?;
                        d.acker.ack(BasicAckOptions::default()).await?;
                        return Ok(None);
                    }
                    Err(IntakeError::Store(e)) => {
                        if shared.shutdown.is_begun() {
                            // left unacknowledged: it returns to the queue when we close
                            return Ok(None);
                        }
                        shared.intake_backlog.stalled(true);
                        outage.failed(shared, &e);
                        outage.wait().await;
                    }
                }
            };
            let mut out = Vec::with_capacity(props.len());
            for p in props {
                envelope["propertyId"] = serde_json::json!(p.as_str());
                out.push((
                    format!("{}/{}", parsed.tenant_id, p),
                    serde_json::to_vec(&envelope)?,
                ));
            }
            out
        }
    };
    if let Some(by) = &publisher.replayed_by {
        info!(
            message_id = %parsed.message_id,
            subject = %parsed.subject,
            replayed_by = %by,
            original_user = publisher.user.as_deref(),
            "replayed dead letter accepted"
        );
    }
    // the partition copy keeps its publisher: should it be dead-lettered there, a replay
    // is judged by who sent it
    let mut props = persistent(Some(&parsed.message_id));
    if let Some(u) = &publisher.user {
        let mut headers = FieldTable::default();
        headers.insert(s(ORIGINAL_USER_HEADER), text_value(u));
        props = props.with_headers(headers);
    }
    let mut confirms = Vec::with_capacity(copies.len());
    for (key, body) in &copies {
        // Single writer per property: the hash key is tenant/property.
        confirms.push(
            ch.basic_publish(
                s(&names.partitions),
                s(key),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props.clone(),
            )
            .await?,
        );
    }
    Ok(Some((d, confirms)))
}

fn is_command(d: &Delivery) -> bool {
    has_header(d, crate::commands::COMMAND_HEADER)
}

/// A command on a partition: accepted only when Lockstep's own broker user published it
/// (RabbitMQ validates `user_id`) and its topic is an operator command.
async fn accept_command(
    shared: &Shared,
    d: &Delivery,
    partition: i32,
    fence: Option<lockstep_persistence::Fence>,
) -> Result<(), IntakeError> {
    let publisher = d
        .properties
        .user_id()
        .as_ref()
        .map(|u| u.as_str().to_owned());
    if publisher.is_none() || publisher != shared.commands.broker_user() {
        return Err(Rejection::UnauthorizedPublisher.into());
    }
    let cmd = crate::commands::Command::from_json(&d.data)
        .ok_or_else(|| Rejection::Malformed("not a command".into()))?;
    if !cmd.is_allowed() {
        return Err(Rejection::UnknownSubject.into());
    }
    let rt = &shared.rt;
    crate::commands::accept(
        rt.store.as_ref(),
        rt.clock.as_ref(),
        &shared.router,
        &cmd,
        partition,
        fence,
    )
    .await?;
    Ok(())
}

fn has_header(d: &Delivery, name: &str) -> bool {
    d.properties
        .headers()
        .as_ref()
        .is_some_and(|h| h.inner().contains_key(name))
}

fn is_tick(d: &Delivery) -> bool {
    has_header(d, TICK_HEADER)
}

/// Takes ownership of a partition: bumps its epoch in the store (fencing any other
/// writer), then wakes its due work.
async fn take(shared: &Shared, partition: i32) -> Result<(), StoreError> {
    let fence = shared
        .rt
        .store
        .take_partition(partition, &shared.node_id, shared.rt.clock.now())
        .await?;
    shared.rt.fences.set(fence);
    shared.rt.metrics.partitions_owned.inc();
    info!(partition, epoch = fence.epoch, "partition taken");
    wake_due(shared, partition).await?;
    Ok(())
}

/// Owns `partition` before returning: takes it, retrying through a store outage while the
/// caller holds its delivery. `false` when the node began draining meanwhile.
async fn ensure_owned(shared: &Shared, partition: i32, outage: &mut Outage) -> bool {
    while shared.rt.fences.get(partition).is_none() {
        if shared.shutdown.is_begun() {
            return false;
        }
        match take(shared, partition).await {
            Ok(()) => outage.recovered(),
            Err(e) => {
                outage.failed(shared, &e);
                outage.wait().await;
            }
        }
    }
    true
}

/// This node lost the partition (its fence is stale): its actors stop.
fn lose(shared: &Shared, partition: i32) {
    if shared.rt.fences.get(partition).is_some() {
        warn!(partition, "partition fenced by another node; releasing it");
        shared.rt.fences.remove(partition);
        shared.rt.metrics.partitions_owned.dec();
        shared.router.do_send(ReleasePartition(partition));
    }
    shared
        .rt
        .metrics
        .fenced_commits
        .with_label_values(&["intake"])
        .inc();
}

async fn wake_due(shared: &Shared, partition: i32) -> Result<(), StoreError> {
    for w in due_wakes(shared, partition).await? {
        shared.router.do_send(w);
    }
    Ok(())
}

/// The wakes of the partition's due work, removals first and marked: their steps go before
/// waiting issuances (issue 11).
async fn due_wakes(shared: &Shared, partition: i32) -> Result<Vec<Wake>, StoreError> {
    let subjects = shared
        .rt
        .store
        .due_subjects(
            Some(partition),
            shared.rt.clock.now(),
            10_000,
            &lockstep_actors::events_in::REMOVAL_TOPICS,
        )
        .await?;
    Ok(subjects
        .into_iter()
        .map(|due| Wake::marked(due.subject, due.removal))
        .collect())
}

/// Whether a store error is this message's own fault (retrying cannot help: dead-letter
/// it) rather than the store being unwell (hold the delivery and retry).
fn is_poison(e: &StoreError) -> bool {
    matches!(e, StoreError::Constraint(_) | StoreError::Corrupt(_))
}

/// Whether partition `p` is this node's home (DESIGN §4: home partitions first, the
/// others as standby).
fn is_home(settings: &AmqpSettings, p: u32) -> bool {
    p % settings.node_count.max(1) == settings.node_index
}

/// How a partition consumer's subscription ended.
enum Served {
    /// The node is draining.
    Shutdown,
    /// This node held another node's home partition and handed it back.
    HandedBack,
}

/// How long a node that handed a partition back waits before it subscribes again (at the
/// end of the line of standby consumers).
const HAND_BACK_PAUSE: Duration = Duration::from_secs(1);
/// A home claim older than this is stale (its node may have left since) and is ignored.
const HOME_CLAIM_TTL: Duration = Duration::from_secs(10);

async fn partition_loop(
    shared: Arc<Shared>,
    ch: Channel,
    names: Names,
    settings: AmqpSettings,
    p: u32,
    delay: Duration,
) -> anyhow::Result<()> {
    let mut down = shared.shutdown.watch();
    ch.basic_qos(PARTITION_BATCH as u16, BasicQosOptions::default())
        .await?;
    let mut pause = delay;
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown::begun(&mut down) => return Ok(()),
        }
        match serve_partition(&shared, &ch, &names, &settings, p).await? {
            Served::Shutdown => return Ok(()),
            Served::HandedBack => pause = HAND_BACK_PAUSE,
        }
    }
}

/// One subscription to partition `p`'s queue, until the node drains or (holding another
/// node's home partition) the home node claims it back.
///
/// Hand-back (issue 11: a second node takes half the partitions): RabbitMQ keeps the first
/// subscriber active for as long as it stays, so a node that came up, or back, after
/// another node had taken its home partitions as standby would idle beside it. A home
/// node that is subscribed but not active after a few ticks publishes a home claim into
/// the queue; the active consumer, when the partition is not its own home, stores and
/// acknowledges what it holds, cancels, releases the partition (its actors stop; the home
/// node's take bumps the epoch and fences anything still in flight, whose work stays due
/// for the new owner) and subscribes again at the end of the line.
async fn serve_partition(
    shared: &Arc<Shared>,
    ch: &Channel,
    names: &Names,
    settings: &AmqpSettings,
    p: u32,
) -> anyhow::Result<Served> {
    let mut down = shared.shutdown.watch();
    let partition = p as i32;
    let home = is_home(settings, p);
    let tag = format!("{}-p{p}", shared.node_id);
    let mut consumer = ch
        .basic_consume(
            s(&names.partition(p)),
            s(&tag),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let subscribed = tokio::time::Instant::now();
    let mut last_claim: Option<tokio::time::Instant> = None;
    let mut outage = Outage::new("partition");
    let mut held = HeldWakes::new(shared);
    // The owner fires the partition's due timers on its own beat, whether or not ticks
    // reach it (a backlog holds ticks back).
    let mut timers = tokio::time::interval(settings.tick_interval);
    timers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A home node that is not the active consumer after this long claims its partition.
    let claim_after = settings.tick_interval * 3;
    loop {
        let d = tokio::select! {
            biased;
            () = shutdown::begun(&mut down) => {
                let mut wakes = Vec::new();
                for d in cancel_and_collect(ch, &mut consumer, &tag).await {
                    partition_one(shared, partition, d, &mut outage, &mut wakes).await?;
                }
                held.settle(wakes, false);
                return Ok(Served::Shutdown);
            }
            () = tokio::time::sleep(HOLD_CHECK), if held.holding() => {
                // a backlog is being stored: removals go first, the rest waits for it to
                // end (at most HOLD_AT_MOST)
                held.settle(Vec::new(), shared.intake_backlog.recent());
                continue;
            }
            _ = timers.tick() => {
                if shared.rt.fences.get(partition).is_some() {
                    match due_wakes(shared, partition).await {
                        Ok(wakes) => {
                            outage.recovered();
                            // Through a backlog (a burst, or what piled up while the store
                            // was down) the due removals go at once and the rest waits
                            // with the held wakes: after an outage the drives stored
                            // before it would otherwise put their keys on doors before the
                            // cancellations queued meanwhile are even read. While wakes are
                            // held already, only the removals are new: the rest is found
                            // again by a tick after the release.
                            let backlog = held.holding() || shared.intake_backlog.recent();
                            healed(shared, &mut outage);
                            let wakes = if held.holding() {
                                wakes.into_iter().filter(|w| w.removal).collect()
                            } else {
                                wakes
                            };
                            held.settle(wakes, backlog);
                        }
                        Err(e) => outage.failed(shared, &e),
                    }
                } else if home
                    && settings.node_count > 1
                    && subscribed.elapsed() >= claim_after
                    && last_claim.is_none_or(|t| t.elapsed() >= claim_after)
                {
                    last_claim = Some(tokio::time::Instant::now());
                    claim_home(shared, ch, names, p).await?;
                }
                continue;
            }
            d = consumer.next() => match d {
                Some(d) => d?,
                None => anyhow::bail!("partition {p} consumer ended"),
            },
        };
        // Whatever else the broker has already delivered joins this one (issue 11): one
        // transaction stores them all. No waiting for more: an idle partition stores each
        // message at once.
        let mut batch = vec![d];
        while batch.len() < PARTITION_BATCH {
            match consumer.next().now_or_never() {
                Some(Some(d)) => batch.push(d?),
                Some(None) => anyhow::bail!("partition {p} consumer ended"),
                None => break,
            }
        }
        let full = batch.len() == PARTITION_BATCH;
        let claimed = !home && batch.iter().any(|d| fresh_home_claim(shared, d));
        let mut wakes = Vec::new();
        partition_batch(shared, partition, batch, &mut outage, &mut wakes).await?;
        // judged once stored: a batch held through a store outage comes out into the
        // backlog that piled up behind it
        let backlog = full || shared.intake_backlog.recent();
        healed(shared, &mut outage);
        held.settle(wakes, backlog);
        if claimed {
            let mut wakes = Vec::new();
            for d in cancel_and_collect(ch, &mut consumer, &tag).await {
                partition_one(shared, partition, d, &mut outage, &mut wakes).await?;
            }
            held.settle(wakes, false);
            if shared.rt.fences.get(partition).is_some() {
                shared.rt.fences.remove(partition);
                shared.rt.metrics.partitions_owned.dec();
                shared.router.do_send(ReleasePartition(partition));
            }
            info!(partition, "partition handed back to its home node");
            return Ok(Served::HandedBack);
        }
    }
}

/// Publishes a home claim into partition `p`'s queue (see [`serve_partition`]).
async fn claim_home(shared: &Shared, ch: &Channel, names: &Names, p: u32) -> anyhow::Result<()> {
    let at = shared.rt.clock.now().timestamp_millis();
    let mut headers = FieldTable::default();
    headers.insert(s(HOME_CLAIM_HEADER), text_value(&shared.node_id));
    headers.insert(s(HOME_CLAIM_AT_HEADER), AMQPValue::LongLongInt(at));
    publish_marker(ch, names, p, headers).await?;
    info!(
        partition = p,
        "home partition held by another node: claimed"
    );
    Ok(())
}

/// Publishes a marker (a tick or a home claim: headers and an empty body, no expiry)
/// straight into partition `p`'s queue.
async fn publish_marker(
    ch: &Channel,
    names: &Names,
    p: u32,
    headers: FieldTable,
) -> anyhow::Result<()> {
    ch.basic_publish(
        s(""),
        s(&names.partition(p)),
        BasicPublishOptions::default(),
        b"{}",
        BasicProperties::default().with_headers(headers),
    )
    .await?;
    Ok(())
}

fn is_home_claim(d: &Delivery) -> bool {
    has_header(d, HOME_CLAIM_HEADER)
}

/// Whether `d` is a home claim by another node made less than [`HOME_CLAIM_TTL`] ago.
fn fresh_home_claim(shared: &Shared, d: &Delivery) -> bool {
    if !is_home_claim(d) || header_text(d, HOME_CLAIM_HEADER).as_deref() == Some(&shared.node_id) {
        return false;
    }
    let at =
        d.properties
            .headers()
            .as_ref()
            .and_then(|h| match h.inner().get(HOME_CLAIM_AT_HEADER) {
                Some(AMQPValue::LongLongInt(ms)) => Some(*ms),
                _ => None,
            });
    let now = shared.rt.clock.now().timestamp_millis();
    at.is_some_and(|at| now.saturating_sub(at) < HOME_CLAIM_TTL.as_millis() as i64)
}

/// Revocations first through a backlog (issue 11): while a partition's consumer works
/// through a backlog (full batches: after a store or broker outage, under a burst), the
/// subjects of removal messages are woken at once and every other wake is held back until
/// the backlog is stored (or [`HOLD_AT_MOST`] passed), so the cancellations queued behind
/// thousands of confirmations reach the vendor before the confirmations' new keys.
struct HeldWakes {
    shared: Arc<Shared>,
    wakes: Vec<Wake>,
    since: Option<tokio::time::Instant>,
}

/// The longest a wake is held behind a backlog.
const HOLD_AT_MOST: Duration = Duration::from_secs(10);
/// How often held wakes look whether the backlog has ended.
const HOLD_CHECK: Duration = Duration::from_millis(100);

impl HeldWakes {
    fn new(shared: &Arc<Shared>) -> Self {
        Self {
            shared: shared.clone(),
            wakes: Vec::new(),
            since: None,
        }
    }

    fn settle(&mut self, wakes: Vec<Wake>, backlog: bool) {
        let (removals, others): (Vec<Wake>, Vec<Wake>) = wakes.into_iter().partition(|w| w.removal);
        for w in removals {
            self.shared.router.do_send(w);
        }
        self.wakes.extend(others);
        let since = match self.since {
            Some(since) => since,
            None => {
                // while it holds, the vendor accounts' removals first does not end on an
                // empty count: the backlog's cancellations may not be stored yet
                self.shared.rt.ports.backlog_held(true);
                *self.since.insert(tokio::time::Instant::now())
            }
        };
        if !backlog || since.elapsed() >= HOLD_AT_MOST {
            self.release();
        }
    }

    fn release(&mut self) {
        self.uncount();
        for w in self.wakes.drain(..) {
            self.shared.router.do_send(w);
        }
    }

    /// Ends this consumer's share of the node's backlog count.
    fn uncount(&mut self) {
        if self.since.take().is_some() {
            self.shared.rt.ports.backlog_held(false);
        }
    }

    fn holding(&self) -> bool {
        !self.wakes.is_empty()
    }
}

impl Drop for HeldWakes {
    /// A consumer that ends with an error (its subscription is retried) leaves no count
    /// behind: after a store outage the vendor accounts would hold new keys for a backlog
    /// nobody stores. The wakes it held are found again by the next owner's ticks.
    fn drop(&mut self) {
        self.uncount();
    }
}

/// After a store outage, removals first on every vendor account of this node
/// ([`lockstep_actors::PortRegistry::removals_first_everywhere`]): the drives stored
/// before the outage must not put new keys on doors before the cancellations received
/// during it are decided and sent (issue 11). The backlog behind the outage is held
/// ([`HeldWakes`]) meanwhile, so the accounts wait for it too.
fn healed(shared: &Shared, outage: &mut Outage) {
    if outage.take_healed() {
        shared.rt.ports.removals_first_everywhere();
    }
}

/// Deliveries a partition consumer stores in one transaction at most (its prefetch).
const PARTITION_BATCH: usize = 32;

/// Stores a partition's deliveries: ticks and commands one at a time, events of a tenant
/// together in one transaction (inbox + mailbox), each acknowledged after that commit.
/// Anything unusual — a store error, a fence, a fan-out that reads the store — goes back
/// to [`partition_one`], one delivery at a time, which knows how to hold, retry and
/// dead-letter.
async fn partition_batch(
    shared: &Shared,
    partition: i32,
    batch: Vec<Delivery>,
    outage: &mut Outage,
    wakes: &mut Vec<Wake>,
) -> anyhow::Result<()> {
    let mut events = Vec::with_capacity(batch.len());
    for d in batch {
        if is_tick(&d)
            || is_home_claim(&d)
            || is_command(&d)
            || shared.rt.fences.get(partition).is_none()
        {
            partition_one(shared, partition, d, outage, wakes).await?;
        } else {
            events.push(d);
        }
    }
    if events.len() < 2 {
        for d in events {
            partition_one(shared, partition, d, outage, wakes).await?;
        }
        return Ok(());
    }
    let rt = &shared.rt;
    // validated: (delivery, its messages); refused ones are dead-lettered at once
    let mut ready: Vec<(Delivery, Vec<lockstep_persistence::IntakeMessage>)> = Vec::new();
    let mut one_by_one = Vec::new();
    for d in events {
        // (a copy here names its property: intake fanned user deactivations out already,
        // so preparing reads no store; should it, a store error sends it one by one)
        let prepared = intake::prepare(
            &shared.schemas,
            rt.store.as_ref(),
            rt.clock.as_ref(),
            &rt.metrics,
            &d.data,
            partition,
        )
        .await;
        match prepared {
            Ok(msgs) => ready.push((d, msgs)),
            Err(IntakeError::Rejected(why)) => refuse(shared, d, why.label()).await?,
            Err(IntakeError::Store(_)) => one_by_one.push(d),
        }
    }
    let fence = rt.fences.get(partition);
    let mut rest = ready.into_iter().peekable();
    while let Some(first) = rest.next() {
        // a run of one tenant's deliveries: one transaction
        let tenant = first.1.first().map(|m| m.tenant_id);
        let mut run = vec![first];
        while let Some(next) = rest.next_if(|(_, m)| m.first().map(|m| m.tenant_id) == tenant) {
            run.push(next);
        }
        let msgs: Vec<_> = run.iter().flat_map(|(_, m)| m.iter().cloned()).collect();
        match rt.store.intake_batch(&msgs, fence).await {
            Ok(outcomes) => {
                outage.recovered();
                wakes.extend(
                    msgs.into_iter()
                        .zip(outcomes)
                        .filter_map(|(msg, outcome)| intake::counted(&rt.metrics, msg, outcome)),
                );
                for (d, _) in run {
                    d.acker.ack(BasicAckOptions::default()).await?;
                }
            }
            Err(e) => {
                debug!(partition, error = %e, "batched intake failed; storing one at a time");
                one_by_one.extend(run.into_iter().map(|(d, _)| d));
            }
        }
    }
    for d in one_by_one {
        partition_one(shared, partition, d, outage, wakes).await?;
    }
    Ok(())
}

/// Dead-letters a partition delivery through the queue's own dead-letter exchange.
async fn refuse(shared: &Shared, d: Delivery, reason: &'static str) -> anyhow::Result<()> {
    // validated at intake already; the queue's DLX keeps it with the broker's reason
    warn!(reason, "partition message refused");
    shared
        .rt
        .metrics
        .dead_letters
        .with_label_values(&[reason])
        .inc();
    d.acker
        .nack(BasicNackOptions {
            requeue: false,
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Stores one partition delivery (inbox + mailbox, epoch-checked), then acknowledges it.
/// While the store is down the delivery is held and retried: it is neither nacked nor
/// returned, so an outage costs it no delivery count. Only the message's own fault
/// (refused by intake, or by a constraint) dead-letters it.
async fn partition_one(
    shared: &Shared,
    partition: i32,
    d: Delivery,
    outage: &mut Outage,
    wakes: &mut Vec<Wake>,
) -> anyhow::Result<()> {
    if is_tick(&d) || is_home_claim(&d) {
        // A tick (or a home claim) needs no durability: acknowledged first, it can never
        // be redelivered into the dead-letter queue. Its news is that this node is the
        // active consumer (a claim's, that the caller hands the partition back).
        d.acker.ack(BasicAckOptions::default()).await?;
        ensure_owned(shared, partition, outage).await;
        return Ok(());
    }
    loop {
        if !ensure_owned(shared, partition, outage).await {
            // draining with the store down: left unacknowledged, it returns to the queue
            return Ok(());
        }
        let rt = &shared.rt;
        let fence = rt.fences.get(partition);
        let stored = if is_command(&d) {
            accept_command(shared, &d, partition, fence).await
        } else {
            // its wakes go to the caller, to be held behind a backlog like a batch's
            intake::store_one(
                &shared.schemas,
                rt.store.as_ref(),
                rt.clock.as_ref(),
                &rt.metrics,
                &d.data,
                partition,
                fence,
                wakes,
            )
            .await
            .map(drop)
        };
        let refused = match stored {
            Ok(()) => {
                outage.recovered();
                d.acker.ack(BasicAckOptions::default()).await?;
                return Ok(());
            }
            Err(IntakeError::Rejected(why)) => why.label(),
            Err(IntakeError::Store(StoreError::Fenced)) => {
                // Another node took the partition while we were away; we are the active
                // consumer again (this delivery came to us): take it back and store it.
                lose(shared, partition);
                continue;
            }
            Err(IntakeError::Store(e)) if is_poison(&e) => {
                warn!(partition, error = %e, "the store refused a message; dead-lettering it");
                "store_refused"
            }
            Err(IntakeError::Store(e)) => {
                if shared.shutdown.is_begun() {
                    return Ok(());
                }
                outage.failed(shared, &e);
                outage.wait().await;
                continue;
            }
        };
        return refuse(shared, d, refused).await;
    }
}

/// Publishes a tick into every partition that has nothing waiting: the active consumer
/// learns it owns the partition from it. Ticks carry no expiry, so none is ever
/// dead-lettered; a partition with messages ready needs no tick (the messages tell the
/// consumer), so ticks never pile up behind a busy or stalled consumer.
async fn tick_loop(ch: Channel, names: Names, settings: AmqpSettings) -> anyhow::Result<()> {
    loop {
        for p in 0..settings.partitions {
            let queue = ch
                .queue_declare(
                    s(&names.partition(p)),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            if queue.message_count() > 0 {
                continue;
            }
            let mut headers = FieldTable::default();
            headers.insert(s(TICK_HEADER), AMQPValue::Boolean(true));
            publish_marker(&ch, &names, p, headers).await?;
        }
        tokio::time::sleep(settings.tick_interval).await;
    }
}

/// Counts what the broker dead-lettered on its own (`x-death`: delivery limit, expiry,
/// rejection) from a copy of every dead letter, by queue kind and reason; Lockstep's own
/// refusals (no `x-death`) are counted where they are made. The copies are acknowledged
/// here; `<prefix>.dlq` keeps the originals for operators.
async fn dead_letter_watch(shared: Arc<Shared>, ch: Channel, names: Names) -> anyhow::Result<()> {
    ch.basic_qos(64, BasicQosOptions::default()).await?;
    let tag = format!("{}-dlq-watch", shared.node_id);
    let mut consumer = ch
        .basic_consume(
            s(&names.dlq_watch),
            s(&tag),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut down = shared.shutdown.watch();
    loop {
        let d = tokio::select! {
            biased;
            () = shutdown::begun(&mut down) => {
                let _ = ch.basic_cancel(s(&tag), lapin::options::BasicCancelOptions::default()).await;
                return Ok(());
            }
            d = consumer.next() => match d {
                Some(d) => d?,
                None => anyhow::bail!("dead-letter watch ended"),
            },
        };
        if let Some((queue, reason)) = first_death(&d) {
            let kind = names.queue_kind(&queue);
            warn!(
                queue = kind,
                reason = %reason,
                message_id = d.properties.message_id().as_ref().map(|m| m.as_str()).unwrap_or(""),
                "the broker dead-lettered a message"
            );
            shared
                .rt
                .metrics
                .broker_dead_letters
                .with_label_values(&[kind, bounded_reason(&reason)])
                .inc();
        }
        d.acker.ack(BasicAckOptions::default()).await?;
    }
}

/// The queue and reason of a message's first `x-death` entry (set by the broker).
fn first_death(d: &Delivery) -> Option<(String, String)> {
    let headers = d.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let text = |k: &str| match first.inner().get(k) {
        Some(AMQPValue::LongString(v)) => Some(v.to_string()),
        Some(AMQPValue::ShortString(v)) => Some(v.as_str().to_owned()),
        _ => None,
    };
    Some((text("queue")?, text("reason")?))
}

/// A metric label from the broker's reason: its documented set, anything else `other`.
fn bounded_reason(reason: &str) -> &'static str {
    match reason {
        "delivery_limit" => "delivery_limit",
        "expired" => "expired",
        "rejected" => "rejected",
        "maxlen" => "maxlen",
        _ => "other",
    }
}

/// An outbox row the broker returned: nothing is bound to its subject yet. It is kept
/// (`last_error = 'unroutable'`) with no attempt due, and tried again only by the
/// periodic probe (one row a subject) or when an event of its subject gets through.
fn unroutable_until(now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    now + chrono::Duration::days(3650)
}

/// How long a publisher holds the outbox rows it claimed (its confirms wait at most 30 s).
const OUTBOX_LEASE_S: i64 = 30;

async fn outbox_loop(
    shared: Arc<Shared>,
    ch: Channel,
    names: Names,
    settings: AmqpSettings,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let store = shared.rt.store.clone();
    let metrics = &shared.rt.metrics;
    let mut outage = Outage::new("outbox");
    // Subjects with kept unroutable rows: a clean publish of one of them releases the rest.
    let mut unroutable: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut next_probe = tokio::time::Instant::now();
    // rows the broker acked, marked published in the transaction of the next claim
    let mut published: Vec<String> = Vec::new();
    loop {
        let stopping = *stop.borrow();
        if !stopping && tokio::time::Instant::now() >= next_probe {
            next_probe = tokio::time::Instant::now() + settings.unroutable_probe;
            match store.unroutable_topics().await {
                Ok(topics) => {
                    unroutable = topics.iter().map(|(t, _)| t.clone()).collect();
                    for (topic, _) in &topics {
                        // one row a subject: if it routes now, the rest follows it
                        if let Err(e) = store
                            .release_unroutable(topic, shared.rt.clock.now(), Some(1))
                            .await
                        {
                            outage.failed(&shared, &e);
                        }
                    }
                }
                Err(e) => outage.failed(&shared, &e),
            }
        }
        let now = shared.rt.clock.now();
        // claimed for this publisher while it sends them: another node's publisher skips
        // them (no event sent twice at once); should this node die, they are due again
        // when the lease ends
        let lease_until = now + chrono::Duration::seconds(OUTBOX_LEASE_S);
        let claimed = store
            .mark_published_then_claim(&published, now, lease_until, 200)
            .await;
        let rows = match claimed {
            Ok(rows) => {
                outage.recovered();
                published.clear();
                rows
            }
            Err(e) => {
                if stopping {
                    return Ok(());
                }
                outage.failed(&shared, &e);
                outage.wait().await;
                continue;
            }
        };
        if rows.is_empty() {
            if stopping {
                return Ok(());
            }
            // pushed, not polled: a commit that wrote outbox rows wakes this loop at once;
            // the timer only picks up rows of steps this node did not run
            let mut stop = stop.clone();
            tokio::select! {
                () = shared.rt.outbox_ready.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let mut pending = Vec::with_capacity(rows.len());
        for r in &rows {
            let body = serde_json::to_vec(&r.envelope)?;
            let sent = ch
                .basic_publish(
                    s(&names.events),
                    s(&r.topic),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    persistent(Some(&r.id)),
                )
                .await;
            match sent {
                Ok(confirm) => pending.push((r, confirm)),
                Err(e) => {
                    // the session is gone: the claim is given back so the next session
                    // (or another node) sends the batch without waiting out the lease
                    for r in &rows {
                        let _ = store
                            .mark_publish_failed(&r.id, "error", shared.rt.clock.now())
                            .await;
                    }
                    return Err(e.into());
                }
            }
        }
        let mut routed_again = std::collections::BTreeSet::new();
        for (r, confirm) in pending {
            let failure = match tokio::time::timeout(Duration::from_secs(30), confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => None,
                Ok(Ok(Confirmation::Ack(Some(_)))) => Some("returned"),
                Ok(Ok(Confirmation::Nack(_))) => Some("nacked"),
                Ok(Ok(Confirmation::NotRequested)) => Some("unconfirmed"),
                Ok(Err(_)) => Some("error"),
                Err(_) => Some("unconfirmed"),
            };
            let Some(reason) = failure else {
                metrics
                    .outbox_published
                    .with_label_values(&[&r.topic])
                    .inc();
                if unroutable.remove(&r.topic) {
                    routed_again.insert(r.topic.clone());
                }
                published.push(r.id.clone());
                continue;
            };
            metrics.outbox_failures.with_label_values(&[reason]).inc();
            let (error, next) = if reason == "returned" {
                if unroutable.insert(r.topic.clone()) {
                    warn!(subject = %r.topic, "events unroutable: nothing is bound to their subject; kept until a consumer binds");
                }
                ("unroutable", unroutable_until(now))
            } else {
                warn!(subject = %r.topic, event_id = %r.id, reason, "outbox publish failed");
                let backoff = chrono::Duration::seconds(1i64 << r.publish_attempts.clamp(0, 8));
                (reason, now + backoff)
            };
            while let Err(e) = store.mark_publish_failed(&r.id, error, next).await {
                if stopping {
                    return Ok(());
                }
                outage.failed(&shared, &e);
                outage.wait().await;
            }
        }
        // The published rows are marked by the next claim, at once (a row published but
        // not marked would go out again when its lease ends; consumers dedupe on the
        // event id): the claim waits out a store outage with them.
        for topic in routed_again {
            // something is bound now: the subject's kept backlog goes out
            match store
                .release_unroutable(&topic, shared.rt.clock.now(), None)
                .await
            {
                Ok(n) if n > 0 => {
                    info!(subject = %topic, released = n, "kept unroutable events released: a consumer is bound now")
                }
                Ok(_) => {}
                Err(e) => {
                    unroutable.insert(topic);
                    outage.failed(&shared, &e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_intake_binds_each_consumed_family_and_none_of_lockstep_s_own_subjects() {
        let families = super::consumed_families();
        for f in [
            "melmastoon.booking.#",
            "melmastoon.iam.user.#",
            "melmastoon.reservation.#",
            "melmastoon.staff.shift.#",
            "melmastoon.tenant.property.#",
        ] {
            assert!(families.contains(&f.to_owned()), "{f} in {families:?}");
        }
        assert_eq!(families.len(), 5, "{families:?}");
        assert!(families.iter().all(|f| !f.starts_with("melmastoon.lock")));
    }
}
