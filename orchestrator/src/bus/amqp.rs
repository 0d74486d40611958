//! Production's RabbitMQ bus (DESIGN §4).
//!
//! ```text
//! melmastoon.events (topic) ──consumed subjects──▶ <p>.intake (quorum, delivery limit, DLX)
//!        intake consumer: validate → republish (confirmed) by tenant/property ──▶
//! <p>.partitions (x-consistent-hash) ──▶ <p>.partition.<i> (quorum, single active consumer)
//!        partition consumer: take epoch → inbox+mailbox commit → ack → wake actor
//! outbox ──publisher (mandatory + confirms)──▶ melmastoon.events
//! malformed / unknown / over the delivery limit ──▶ <p>.dlx ──▶ <p>.dlq (with a reason)
//! ```
//!
//! Every node consumes every partition; RabbitMQ keeps one active consumer per partition.
//! RabbitMQ 3.10 never tells a consumer it became active, so a ticker publishes a short-
//! lived tick into every partition: the active consumer learns of ownership from its first
//! delivery or tick, takes the partition's epoch in Postgres (every later commit checks
//! it), rehydrates the partition's due work, and fires its timers on each tick.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt;
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
use tracing::{info, warn};

use crate::app::Shared;
use crate::intake::{self, IntakeError};

/// Header that marks a tick.
pub const TICK_HEADER: &str = "x-lockstep-tick";
/// Header carrying the dead-letter reason.
pub const REASON_HEADER: &str = "x-lockstep-reason";

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
            prefix: s.prefix.clone(),
        }
    }

    /// Partition queue `i`.
    pub fn partition(&self, i: u32) -> String {
        format!("{}.partition.{i}", self.prefix)
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
    ch.queue_declare(
        s(&names.intake),
        qdurable,
        quorum_args(&names, settings.delivery_limit, false),
    )
    .await?;
    for subject in CONSUMED_SUBJECTS {
        ch.queue_bind(
            s(&names.intake),
            s(&names.events),
            s(subject),
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

/// Runs the bus until the process ends: connect, serve, and on any failure release every
/// partition, wait, and connect again.
pub async fn run(shared: Arc<Shared>, settings: AmqpSettings, url: String) {
    loop {
        match serve_once(shared.clone(), &settings, &url).await {
            Ok(()) => {}
            Err(e) => warn!(error = %format!("{e:#}"), "rabbitmq session ended"),
        }
        shared.bus_ready.store(false, Ordering::SeqCst);
        release_all(&shared, &settings);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
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

async fn serve_once(shared: Arc<Shared>, settings: &AmqpSettings, url: &str) -> anyhow::Result<()> {
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

    let mut tasks = tokio::task::JoinSet::new();
    {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        tasks.spawn(intake_loop(
            shared.clone(),
            ch,
            names.clone(),
            settings.clone(),
        ));
    }
    {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        tasks.spawn(outbox_loop(shared.clone(), ch, names.clone()));
    }
    {
        let ch = conn.create_channel().await?;
        tasks.spawn(tick_loop(ch, names.clone(), settings.clone()));
    }
    // Home partitions first; the others after a delay, as standby (DESIGN §4).
    let (home, standby): (Vec<u32>, Vec<u32>) =
        (0..settings.partitions).partition(|p| p % settings.node_count == settings.node_index);
    for (delay, list) in [(Duration::ZERO, home), (settings.standby_delay, standby)] {
        for p in list {
            let ch = conn.create_channel().await?;
            tasks.spawn(partition_loop(shared.clone(), ch, names.clone(), p, delay));
        }
    }
    // Any task ending means the session is broken: tear it all down.
    let first = tasks.join_next().await;
    tasks.abort_all();
    let _ = conn.close(0, "session ended".into()).await;
    match first {
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(anyhow::anyhow!("bus task failed: {e}")),
        _ => Err(anyhow::anyhow!("bus task ended")),
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

async fn dead_letter(
    ch: &Channel,
    names: &Names,
    d: &Delivery,
    why: &Rejection,
) -> anyhow::Result<()> {
    let mut headers = FieldTable::default();
    headers.insert(
        s(REASON_HEADER),
        AMQPValue::LongString(LongString::from(why.label())),
    );
    let mut detail = why.to_string();
    detail.truncate(500);
    headers.insert(
        s("x-lockstep-detail"),
        AMQPValue::LongString(LongString::from(detail.as_str())),
    );
    headers.insert(
        s("x-original-routing-key"),
        AMQPValue::LongString(LongString::from(d.routing_key.as_str())),
    );
    let props = persistent(None).with_headers(headers);
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

async fn intake_loop(
    shared: Arc<Shared>,
    ch: Channel,
    names: Names,
    settings: AmqpSettings,
) -> anyhow::Result<()> {
    ch.basic_qos(64, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            s(&names.intake),
            s(&format!("{}-intake", shared.node_id)),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(d) = consumer.next().await {
        let d = d?;
        // the schema first, then the publisher: each subject only from its owner's broker
        // user (RabbitMQ has validated `user_id` against the connection's user)
        let publisher = d
            .properties
            .user_id()
            .as_ref()
            .map(|u| u.as_str().to_owned());
        let checked = shared
            .schemas
            .check_consumed(&d.data)
            .and_then(|(envelope, parsed)| {
                if settings.may_publish(&parsed.subject, publisher.as_deref()) {
                    Ok((envelope, parsed))
                } else {
                    Err(Rejection::UnauthorizedPublisher)
                }
            });
        match checked {
            Err(why) => {
                warn!(reason = why.label(), routing_key = %d.routing_key, "message dead-lettered");
                dead_letter(&ch, &names, &d, &why).await?;
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
            }
            Ok((mut envelope, parsed)) => {
                // A user deactivation names no property: one copy per property where the
                // user holds a master key, each to that property's partition (DESIGN §4).
                let copies: Vec<(String, Vec<u8>)> = match &parsed.property_id {
                    Some(p) => vec![(format!("{}/{}", parsed.tenant_id, p), d.data.clone())],
                    None => {
                        let props = match intake::user_properties(shared.rt.store.as_ref(), &parsed)
                            .await
                        {
                            Ok(p) => p,
                            Err(e) => {
                                warn!(error = %e, "fan-out lookup failed; requeueing");
                                d.acker
                                    .nack(BasicNackOptions {
                                        requeue: true,
                                        ..Default::default()
                                    })
                                    .await?;
                                continue;
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
                let mut confirmed = true;
                for (key, body) in &copies {
                    // Single writer per property: the hash key is tenant/property.
                    let confirm = ch
                        .basic_publish(
                            s(&names.partitions),
                            s(key),
                            BasicPublishOptions {
                                mandatory: true,
                                ..Default::default()
                            },
                            body,
                            persistent(Some(&parsed.message_id)),
                        )
                        .await?
                        .await?;
                    confirmed &= matches!(confirm, Confirmation::Ack(None));
                }
                if confirmed {
                    d.acker.ack(BasicAckOptions::default()).await?;
                } else {
                    warn!("partition republish was not confirmed; requeueing");
                    d.acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await?;
                }
            }
        }
    }
    anyhow::bail!("intake consumer ended")
}

fn is_command(d: &Delivery) -> bool {
    d.properties
        .headers()
        .as_ref()
        .is_some_and(|h| h.inner().contains_key(crate::commands::COMMAND_HEADER))
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

fn is_tick(d: &Delivery) -> bool {
    d.properties
        .headers()
        .as_ref()
        .is_some_and(|h| h.inner().contains_key(TICK_HEADER))
}

async fn take(shared: &Shared, partition: i32) -> anyhow::Result<()> {
    let fence = shared
        .rt
        .store
        .take_partition(partition, &shared.node_id, shared.rt.clock.now())
        .await?;
    shared.rt.fences.set(fence);
    shared.rt.metrics.partitions_owned.inc();
    info!(partition, epoch = fence.epoch, "partition taken");
    wake_due(shared, partition).await;
    Ok(())
}

async fn wake_due(shared: &Shared, partition: i32) {
    match shared
        .rt
        .store
        .due_subjects(Some(partition), shared.rt.clock.now(), 10_000)
        .await
    {
        Ok(subjects) => {
            for sref in subjects {
                shared.router.do_send(Wake(sref));
            }
        }
        Err(e) => warn!(partition, error = %e, "timer scan failed"),
    }
}

async fn partition_loop(
    shared: Arc<Shared>,
    ch: Channel,
    names: Names,
    p: u32,
    delay: Duration,
) -> anyhow::Result<()> {
    tokio::time::sleep(delay).await;
    let partition = p as i32;
    ch.basic_qos(32, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            s(&names.partition(p)),
            s(&format!("{}-p{p}", shared.node_id)),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(d) = consumer.next().await {
        let d = d?;
        if shared.rt.fences.get(partition).is_none() {
            take(&shared, partition).await?;
        }
        if is_tick(&d) {
            wake_due(&shared, partition).await;
            d.acker.ack(BasicAckOptions::default()).await?;
            continue;
        }
        let mut tries = 0u32;
        loop {
            let rt = &shared.rt;
            let fence = rt.fences.get(partition);
            let stored = if is_command(&d) {
                accept_command(&shared, &d, partition, fence).await
            } else {
                intake::accept(
                    &shared.schemas,
                    rt.store.as_ref(),
                    rt.clock.as_ref(),
                    &shared.router,
                    &rt.metrics,
                    &d.data,
                    partition,
                    fence,
                )
                .await
                .map(drop)
            };
            match stored {
                Ok(_) => {
                    d.acker.ack(BasicAckOptions::default()).await?;
                    break;
                }
                Err(IntakeError::Rejected(why)) => {
                    // validated at intake already; the queue's DLX keeps it with the broker's reason
                    warn!(reason = why.label(), "partition message refused");
                    rt.metrics
                        .dead_letters
                        .with_label_values(&[why.label()])
                        .inc();
                    d.acker
                        .nack(BasicNackOptions {
                            requeue: false,
                            ..Default::default()
                        })
                        .await?;
                    break;
                }
                Err(IntakeError::Store(StoreError::Fenced)) => {
                    warn!(partition, "partition fenced by another node; releasing it");
                    rt.fences.remove(partition);
                    rt.metrics.partitions_owned.dec();
                    shared.router.do_send(ReleasePartition(partition));
                    d.acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await?;
                    break;
                }
                Err(IntakeError::Store(e)) => {
                    tries += 1;
                    warn!(partition, tries, error = %e, "storing a message failed; retrying");
                    if tries >= 10 {
                        d.acker
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            })
                            .await?;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(tries))).await;
                }
            }
        }
    }
    anyhow::bail!("partition {p} consumer ended")
}

async fn tick_loop(ch: Channel, names: Names, settings: AmqpSettings) -> anyhow::Result<()> {
    let ttl = (settings.tick_interval.as_millis() * 2).to_string();
    loop {
        for p in 0..settings.partitions {
            let mut headers = FieldTable::default();
            headers.insert(s(TICK_HEADER), AMQPValue::Boolean(true));
            let props = BasicProperties::default()
                .with_headers(headers)
                .with_expiration(s(&ttl));
            ch.basic_publish(
                s(""),
                s(&names.partition(p)),
                BasicPublishOptions::default(),
                b"{}",
                props,
            )
            .await?;
        }
        tokio::time::sleep(settings.tick_interval).await;
    }
}

async fn outbox_loop(shared: Arc<Shared>, ch: Channel, names: Names) -> anyhow::Result<()> {
    loop {
        let now = shared.rt.clock.now();
        let rows = shared.rt.store.unpublished(now, 200).await?;
        if rows.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let mut pending = Vec::with_capacity(rows.len());
        for r in &rows {
            let body = serde_json::to_vec(&r.envelope)?;
            let confirm = ch
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
                .await?;
            pending.push((r, confirm));
        }
        let mut published = Vec::new();
        for (r, confirm) in pending {
            let failure = match tokio::time::timeout(Duration::from_secs(30), confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => None,
                Ok(Ok(Confirmation::Ack(Some(_)))) => Some("returned"),
                Ok(Ok(Confirmation::Nack(_))) => Some("nacked"),
                Ok(Ok(Confirmation::NotRequested)) => Some("unconfirmed"),
                Ok(Err(_)) => Some("error"),
                Err(_) => Some("unconfirmed"),
            };
            match failure {
                None => {
                    shared
                        .rt
                        .metrics
                        .outbox_published
                        .with_label_values(&[&r.topic])
                        .inc();
                    published.push(r.id.clone());
                }
                Some(reason) => {
                    shared
                        .rt
                        .metrics
                        .outbox_failures
                        .with_label_values(&[reason])
                        .inc();
                    let backoff = chrono::Duration::seconds(1i64 << r.publish_attempts.clamp(0, 8));
                    warn!(subject = %r.topic, event_id = %r.id, reason, "outbox publish failed");
                    shared
                        .rt
                        .store
                        .mark_publish_failed(&r.id, reason, now + backoff)
                        .await?;
                }
            }
        }
        shared
            .rt
            .store
            .mark_published(&published, shared.rt.clock.now())
            .await?;
    }
}
