//! Operator commands from the REST API (DESIGN §4): a write to a credential travels the
//! same partitioned path as a consumed event, so only the node that owns the property's
//! partition mutates it, and the HTTP handler waits for the outcome with a deadline.
//!
//! A command is stored like an event (inbox dedupe on its id, then a mailbox row of the
//! credential's saga subject, topic `lockstep.internal.*`) and handled by the subject's
//! actor in order with its events. Embedded mode stores it directly; production publishes
//! it to the consistent-hash exchange with the `x-lockstep-command` header and Lockstep's
//! own broker user as the AMQP `user_id` (RabbitMQ checks it), and the partition consumer
//! accepts a command only from that user.

use std::sync::Mutex;
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use lockstep_actors::{Router, Wake};
use lockstep_domain::{Clock, PropertyId, TenantId};
use lockstep_persistence::{Fence, IntakeMessage, IntakeOutcome, Store, StoreError, SubjectRef};
use serde::{Deserialize, Serialize};

use crate::intake::CONSUMER;

/// Header that marks a command on the partition exchange.
pub const COMMAND_HEADER: &str = "x-lockstep-command";
/// How long a request waits for its command before answering 202.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// One operator command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Dedupe key (from the request's `Idempotency-Key`, or fresh).
    pub message_id: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property (partition key with the tenant).
    pub property_id: PropertyId,
    /// The saga subject that owns the credential (`reservation:…`, `shift:…`).
    pub subject: String,
    /// `lockstep.internal.{update,revoke,suspend,unsuspend,replace}`.
    pub topic: String,
    /// The handler's input (`credentialId`, `reason`, `by`).
    pub payload: serde_json::Value,
}

const ALLOWED_TOPICS: &[&str] = &[
    lockstep_actors::events_in::INTERNAL_UPDATE,
    lockstep_actors::events_in::INTERNAL_REVOKE,
    lockstep_actors::events_in::INTERNAL_SUSPEND,
    lockstep_actors::events_in::INTERNAL_UNSUSPEND,
    lockstep_actors::events_in::INTERNAL_REPLACE,
];

/// A command on the wire (the domain's ids derive no serde).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Wire {
    message_id: String,
    tenant_id: String,
    property_id: String,
    subject: String,
    topic: String,
    payload: serde_json::Value,
}

impl Command {
    /// The JSON body published to the partition exchange.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&Wire {
            message_id: self.message_id.clone(),
            tenant_id: self.tenant_id.to_string(),
            property_id: self.property_id.as_str().to_owned(),
            subject: self.subject.clone(),
            topic: self.topic.clone(),
            payload: self.payload.clone(),
        })
        .unwrap_or_default()
    }

    /// Reads a published command; `None` when it is not one.
    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        let w: Wire = serde_json::from_slice(bytes).ok()?;
        Some(Self {
            message_id: w.message_id,
            tenant_id: TenantId::parse(&w.tenant_id).ok()?,
            property_id: PropertyId::parse(&w.property_id).ok()?,
            subject: w.subject,
            topic: w.topic,
            payload: w.payload,
        })
    }

    /// Whether its topic is one an operator may send.
    pub fn is_allowed(&self) -> bool {
        ALLOWED_TOPICS.contains(&self.topic.as_str())
    }
}

/// How commands leave this node.
#[derive(Debug, Default)]
pub struct CommandBus {
    /// Production: the confirmed channel of the current RabbitMQ session, the partition
    /// exchange and our broker user. `None` in production means the bus is down.
    amqp: Mutex<Option<AmqpSink>>,
    production: bool,
}

#[derive(Debug, Clone)]
struct AmqpSink {
    channel: Channel,
    exchange: String,
    user: String,
}

/// Why a command could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The broker is not connected or did not confirm.
    #[error("the bus is unavailable")]
    BusDown,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CommandBus {
    /// A bus for production (RabbitMQ) or embedded mode.
    pub fn new(production: bool) -> Self {
        Self {
            amqp: Mutex::new(None),
            production,
        }
    }

    /// A RabbitMQ session is up: commands go through `channel` (confirms on).
    pub fn attach(&self, channel: Channel, exchange: String, user: String) {
        if let Ok(mut g) = self.amqp.lock() {
            *g = Some(AmqpSink {
                channel,
                exchange,
                user,
            });
        }
    }

    /// The session ended.
    pub fn detach(&self) {
        if let Ok(mut g) = self.amqp.lock() {
            *g = None;
        }
    }

    /// Our broker user, the only one whose commands partition consumers accept.
    pub fn broker_user(&self) -> Option<String> {
        self.amqp
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|s| s.user.clone()))
    }

    /// Sends `cmd` on its way: stored here in embedded mode, published to its partition in
    /// production.
    pub async fn send(
        &self,
        cmd: &Command,
        store: &dyn Store,
        clock: &dyn Clock,
        router: &actix::Addr<Router>,
    ) -> Result<(), SendError> {
        if !self.production {
            accept(store, clock, router, cmd, 0, None).await?;
            return Ok(());
        }
        let sink = self.sink()?;
        let mut headers = FieldTable::default();
        headers.insert(ShortString::from(COMMAND_HEADER), AMQPValue::Boolean(true));
        publish(
            &sink,
            cmd.tenant_id,
            &cmd.property_id,
            &cmd.to_json(),
            &cmd.message_id,
            headers,
        )
        .await
    }

    /// Sends an API-made event (a consumed subject, e.g. a shift start from `POST
    /// /api/v1/master-keys`) down the same path as the broker's: validated and stored here
    /// in embedded mode, published to its partition in production.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_event(
        &self,
        shared: &crate::app::Shared,
        tenant: TenantId,
        property: &PropertyId,
        message_id: &str,
        envelope: &[u8],
    ) -> Result<(), crate::intake::IntakeError> {
        let rt = &shared.rt;
        // validated here too: a bad event must not reach a partition
        let (_, parsed) = shared.schemas.check_consumed(envelope)?;
        crate::intake::admit(
            rt.store.as_ref(),
            rt.clock.as_ref(),
            &shared.admit_cache,
            &parsed,
        )
        .await?;
        if !self.production {
            crate::intake::accept(
                &shared.schemas,
                rt.store.as_ref(),
                rt.clock.as_ref(),
                &shared.router,
                &rt.metrics,
                envelope,
                0,
                None,
            )
            .await?;
            return Ok(());
        }
        let sink = self.sink().map_err(|_| {
            crate::intake::IntakeError::Store(StoreError::Database("bus down".into()))
        })?;
        publish(
            &sink,
            tenant,
            property,
            envelope,
            message_id,
            FieldTable::default(),
        )
        .await
        .map_err(|_| crate::intake::IntakeError::Store(StoreError::Database("bus down".into())))
    }

    fn sink(&self) -> Result<AmqpSink, SendError> {
        self.amqp
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .ok_or(SendError::BusDown)
    }
}

/// Publishes to the partition exchange, keyed by tenant/property, as our broker user, and
/// waits for the broker's confirm.
async fn publish(
    sink: &AmqpSink,
    tenant: TenantId,
    property: &PropertyId,
    body: &[u8],
    message_id: &str,
    headers: FieldTable,
) -> Result<(), SendError> {
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(message_id))
        .with_user_id(ShortString::from(sink.user.as_str()))
        .with_headers(headers);
    let confirm = sink
        .channel
        .basic_publish(
            ShortString::from(sink.exchange.as_str()),
            ShortString::from(format!("{tenant}/{property}").as_str()),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        )
        .await
        .map_err(|_| SendError::BusDown)?
        .await
        .map_err(|_| SendError::BusDown)?;
    if matches!(confirm, Confirmation::Ack(None)) {
        Ok(())
    } else {
        Err(SendError::BusDown)
    }
}

/// Stores a command for `partition` (inbox dedupe, mailbox row) and wakes its subject.
pub async fn accept(
    store: &dyn Store,
    clock: &dyn Clock,
    router: &actix::Addr<Router>,
    cmd: &Command,
    partition: i32,
    fence: Option<Fence>,
) -> Result<IntakeOutcome, StoreError> {
    let msg = IntakeMessage {
        message_id: cmd.message_id.clone(),
        consumer: CONSUMER.into(),
        tenant_id: cmd.tenant_id,
        property_id: cmd.property_id.clone(),
        partition,
        subject: cmd.subject.clone(),
        topic: cmd.topic.clone(),
        payload: cmd.payload.clone(),
        received_at: clock.now(),
    };
    let outcome = store.intake(&msg, fence).await?;
    if outcome == IntakeOutcome::Accepted {
        router.do_send(Wake::for_topic(
            SubjectRef {
                tenant_id: msg.tenant_id,
                property_id: msg.property_id,
                partition,
                subject: msg.subject,
            },
            &msg.topic,
        ));
    }
    Ok(outcome)
}

/// Waits until the command's step has run (its outcome) or `wait` has passed (`None`).
pub async fn outcome(
    store: &dyn Store,
    tenant: TenantId,
    message_id: &str,
    wait: Duration,
) -> Result<Option<String>, StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(Some(o)) = store.message_outcome(tenant, message_id).await? {
            return Ok(Some(o));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
