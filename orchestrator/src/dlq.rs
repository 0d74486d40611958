//! `lockstep dlq list|show|replay`: the dead-letter queue `<prefix>.dlq` for operators.
//!
//! Reading: messages are taken with `basic.get` (the queue is a quorum queue without
//! single active consumer, which allows it) and held unacknowledged while the command
//! runs; `list` and `show` give every one back (nack with requeue), so reading changes
//! nothing. Each dead letter is named by Lockstep's `x-lockstep-dead-letter-id`, else its
//! AMQP `message_id`, else `sha256:` and the first 16 hex digits of its body's digest.
//! Its reason is Lockstep's (`x-lockstep-reason`, `x-lockstep-detail`) or, for what the
//! broker dead-lettered on its own, the first `x-death` entry's reason and queue.
//!
//! Replaying: each selected message is republished, as Lockstep's own broker user, to the
//! intake queue through the default exchange (not to the platform's topic exchange, whose
//! other consumers must not see it again), with its body and message id unchanged and two
//! headers: `x-lockstep-replayed-by` (the operator) and `x-lockstep-original-user-id` (who
//! published it first). Intake then judges it like any new message: schema, the original
//! publisher against `[amqp.publishers]` (the replay header is honoured only from
//! Lockstep's user, which RabbitMQ validates), and dedupe by message id, so a message
//! that was in fact applied before is applied once. The operator's decision is written
//! to the property's audit chain first (`action = "dlq_replay"`); the message leaves the
//! queue only after the broker confirmed the republish. Operator commands
//! (`x-lockstep-command`) are never replayed: re-issue them through the API.

use std::sync::Arc;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use lockstep_config::{AmqpSettings, Settings};
use lockstep_domain::{PropertyId, TenantId, Timestamp};
use lockstep_persistence::{AuditRow, Store, StoreError, UnitOfWork};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::bus::amqp::{
    Names, DEAD_LETTER_ID_HEADER, DETAIL_HEADER, ORIGINAL_ROUTING_KEY_HEADER, ORIGINAL_USER_HEADER,
    REASON_HEADER, REPLAYED_BY_HEADER,
};
use crate::commands::COMMAND_HEADER;

/// Header naming the dead letter a replay came from.
pub const REPLAY_OF_HEADER: &str = "x-lockstep-replay-of";

/// Why a DLQ command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// Embedded mode has no broker.
    #[error("the dead-letter queue is RabbitMQ's: give a production config with [amqp]")]
    NoBroker,
    /// The config does not load.
    #[error(transparent)]
    Config(#[from] lockstep_config::ConfigError),
    /// RabbitMQ failed.
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    /// The store (for the audit row) failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Opening the store failed.
    #[error("opening the store: {0:#}")]
    OpenStore(anyhow::Error),
    /// No dead letter has this id.
    #[error("no dead letter {0} in the queue")]
    NotFound(String),
    /// A replay names nothing.
    #[error("nothing selected: name dead-letter ids, or use --reason or --all")]
    NothingSelected,
    /// The operator's name is missing.
    #[error("name the operator who replays (--operator, or USER in the environment)")]
    NoOperator,
    /// The broker did not confirm a republish.
    #[error("the broker did not confirm the replay of {0}; it stays in the dead-letter queue")]
    NotConfirmed(String),
}

/// One dead letter, as `list` shows it (never its body).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// How to name it in `show` and `replay`.
    pub id: String,
    /// Lockstep's reason, or the broker's (`delivery_limit`, `rejected`, ...).
    pub reason: String,
    /// `lockstep` (refused at intake) or `broker` (dead-lettered by RabbitMQ).
    pub source: &'static str,
    /// What exactly was wrong (Lockstep's refusals).
    pub detail: Option<String>,
    /// The queue the broker dead-lettered it from.
    pub queue: Option<String>,
    /// When the broker dead-lettered it.
    pub dead_lettered_at: Option<String>,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Its AMQP message id.
    pub message_id: Option<String>,
    /// The broker user that published it.
    pub original_user_id: Option<String>,
    /// The operator who replayed it before, if it is a replay that failed again.
    pub replayed_by: Option<String>,
    /// The envelope's subject, when the body is an envelope.
    pub subject: Option<String>,
    /// The envelope's id.
    pub envelope_id: Option<String>,
    /// The envelope's tenant.
    pub tenant_id: Option<String>,
    /// The envelope's property.
    pub property_id: Option<String>,
    /// An operator command (never replayed).
    pub command: bool,
    /// Body size.
    pub bytes: usize,
    #[serde(skip)]
    tag: u64,
    #[serde(skip)]
    body: Vec<u8>,
    #[serde(skip)]
    headers: Vec<(String, String)>,
}

fn amqp_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => s.to_string(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Timestamp(t) => chrono::DateTime::from_timestamp(*t as i64, 0)
            .map(|d| d.to_rfc3339())
            .unwrap_or_else(|| t.to_string()),
        AMQPValue::FieldArray(a) => format!(
            "[{}]",
            a.as_slice()
                .iter()
                .map(amqp_text)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        AMQPValue::FieldTable(t) => {
            let mut parts: Vec<String> = t
                .inner()
                .iter()
                .map(|(k, v)| format!("{}={}", k.as_str(), amqp_text(v)))
                .collect();
            parts.sort();
            format!("{{{}}}", parts.join(", "))
        }
        other => format!("{other:?}"),
    }
}

/// The first `x-death` entry: (reason, queue, time).
fn first_death(h: &FieldTable) -> Option<(String, Option<String>, Option<String>)> {
    let AMQPValue::FieldArray(deaths) = h.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let get = |k: &str| first.inner().get(k).map(amqp_text);
    Some((get("reason")?, get("queue"), get("time")))
}

impl DeadLetter {
    fn from_delivery(d: &lapin::message::Delivery) -> Self {
        let h = d.properties.headers().clone().unwrap_or_default();
        let text = |k: &str| h.inner().get(k).map(amqp_text);
        let death = first_death(&h);
        let envelope: Option<Value> = serde_json::from_slice(&d.data).ok();
        let field = |k: &str| {
            envelope
                .as_ref()
                .and_then(|e| e.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let message_id = d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned());
        let digest: String = Sha256::digest(&d.data)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let id = text(DEAD_LETTER_ID_HEADER)
            .or_else(|| message_id.clone())
            .unwrap_or_else(|| format!("sha256:{digest}"));
        let (reason, source, queue, at) = match (text(REASON_HEADER), death) {
            (Some(r), _) => (r, "lockstep", None, None),
            (None, Some((r, q, t))) => (r, "broker", q, t),
            (None, None) => ("unknown".to_owned(), "broker", None, None),
        };
        let mut headers: Vec<(String, String)> = h
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), amqp_text(v)))
            .collect();
        headers.sort();
        Self {
            id,
            reason,
            source,
            detail: text(DETAIL_HEADER),
            queue,
            dead_lettered_at: at,
            routing_key: text(ORIGINAL_ROUTING_KEY_HEADER)
                .unwrap_or_else(|| d.routing_key.as_str().to_owned()),
            message_id,
            original_user_id: text(ORIGINAL_USER_HEADER).or_else(|| {
                d.properties
                    .user_id()
                    .as_ref()
                    .map(|u| u.as_str().to_owned())
            }),
            replayed_by: text(REPLAYED_BY_HEADER),
            subject: field("subject"),
            envelope_id: field("id"),
            tenant_id: field("tenantId"),
            property_id: field("propertyId"),
            command: h.inner().contains_key(COMMAND_HEADER),
            bytes: d.data.len(),
            tag: d.delivery_tag,
            body: d.data.clone(),
            headers,
        }
    }

    /// Whether the selection picks it.
    fn selected(&self, sel: &Selection) -> bool {
        sel.all || sel.ids.contains(&self.id) || sel.reasons.contains(&self.reason)
    }
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// By id.
    pub ids: Vec<String>,
    /// By reason.
    pub reasons: Vec<String>,
    /// Everything read.
    pub all: bool,
}

/// The dead-letter queue, read through one channel.
struct Dlq {
    conn: Connection,
    ch: Channel,
    names: Names,
    user: String,
}

impl Dlq {
    async fn open(settings: &Settings) -> Result<(Self, AmqpSettings), DlqError> {
        let a = settings.amqp.clone().ok_or(DlqError::NoBroker)?;
        let url = lockstep_config::resolve_secret(&a.url)?;
        let user = url
            .parse::<lapin::uri::AMQPUri>()
            .map(|u| u.authority.userinfo.username)
            .unwrap_or_else(|_| "guest".to_owned());
        let conn = Connection::connect(
            &url,
            ConnectionProperties::default().with_connection_name("lockstep dlq".into()),
        )
        .await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let names = Names::new(&a);
        Ok((
            Self {
                conn,
                ch,
                names,
                user,
            },
            a,
        ))
    }

    /// Takes up to `limit` dead letters (held until given back or acknowledged); whether
    /// more are waiting.
    async fn take(&self, limit: usize) -> Result<(Vec<DeadLetter>, bool), DlqError> {
        let mut out = Vec::new();
        let mut more = false;
        while out.len() < limit {
            match self
                .ch
                .basic_get(
                    self.names.dlq.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await?
            {
                Some(m) => {
                    more = m.message_count > 0;
                    out.push(DeadLetter::from_delivery(&m.delivery));
                }
                None => {
                    more = false;
                    break;
                }
            }
        }
        let more = more && out.len() == limit;
        Ok((out, more))
    }

    async fn give_back(&self, dl: &DeadLetter) -> Result<(), DlqError> {
        self.ch
            .basic_nack(
                dl.tag,
                BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    }

    async fn close(self) {
        let _ = self.ch.close(200, "done".into()).await;
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// `lockstep dlq list`: up to `limit` dead letters with their reasons, left in the queue.
pub async fn list(settings: &Settings, limit: usize) -> Result<(Vec<DeadLetter>, bool), DlqError> {
    let (dlq, _) = Dlq::open(settings).await?;
    let taken = dlq.take(limit).await;
    if let Ok((all, _)) = &taken {
        for dl in all {
            dlq.give_back(dl).await?;
        }
    }
    dlq.close().await;
    taken
}

/// What `show` prints of one dead letter: its properties and headers, and its body (at
/// most `max_body` bytes of it).
pub fn describe(dl: &DeadLetter, max_body: usize) -> Value {
    let body = match serde_json::from_slice::<Value>(&dl.body) {
        Ok(v) if dl.body.len() <= max_body => v,
        _ => {
            let cut = &dl.body[..dl.body.len().min(max_body)];
            Value::String(String::from_utf8_lossy(cut).into_owned())
        }
    };
    json!({
        "deadLetter": dl,
        "headers": dl.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "body": body,
        "bodyTruncated": dl.body.len() > max_body,
    })
}

/// `lockstep dlq show`: one dead letter (the first with `id` among the first `scan`),
/// left in the queue.
pub async fn show(
    settings: &Settings,
    id: &str,
    scan: usize,
    max_body: usize,
) -> Result<Value, DlqError> {
    let (dlq, _) = Dlq::open(settings).await?;
    let taken = dlq.take(scan).await;
    let mut found = None;
    if let Ok((all, _)) = &taken {
        found = all
            .iter()
            .find(|d| d.id == id)
            .map(|d| describe(d, max_body));
        for dl in all {
            dlq.give_back(dl).await?;
        }
    }
    dlq.close().await;
    taken?;
    found.ok_or_else(|| DlqError::NotFound(id.to_owned()))
}

/// What a replay did with one dead letter.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replayed {
    /// The dead letter.
    pub id: String,
    /// Its subject, if an envelope.
    pub subject: Option<String>,
    /// `replayed`, or why not (`command`).
    pub outcome: &'static str,
    /// The audit row written, when the envelope names a tenant and property.
    pub audit_id: Option<String>,
    #[serde(skip)]
    tag: u64,
}

fn header(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

/// `lockstep dlq replay`: republishes the selected dead letters (among the first `scan`)
/// to intake as described in the module docs, then removes them from the queue.
pub async fn replay(
    settings: &Settings,
    store: Option<Arc<dyn Store>>,
    sel: &Selection,
    operator: &str,
    scan: usize,
    now: Timestamp,
) -> Result<Vec<Replayed>, DlqError> {
    if sel.ids.is_empty() && sel.reasons.is_empty() && !sel.all {
        return Err(DlqError::NothingSelected);
    }
    if operator.trim().is_empty() {
        return Err(DlqError::NoOperator);
    }
    let (dlq, _) = Dlq::open(settings).await?;
    let (all, _) = match dlq.take(scan).await {
        Ok(t) => t,
        Err(e) => {
            dlq.close().await;
            return Err(e);
        }
    };
    let mut done = Vec::new();
    let result = replay_taken(&dlq, store, &all, sel, operator, now, &mut done).await;
    // whatever was not replayed goes back
    for dl in &all {
        if !done
            .iter()
            .any(|x| x.tag == dl.tag && x.outcome == "replayed")
        {
            let _ = dlq.give_back(dl).await;
        }
    }
    dlq.close().await;
    result?;
    for id in &sel.ids {
        if !done.iter().any(|r| &r.id == id) {
            return Err(DlqError::NotFound(id.clone()));
        }
    }
    Ok(done)
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn replay_taken(
    dlq: &Dlq,
    store: Option<Arc<dyn Store>>,
    all: &[DeadLetter],
    sel: &Selection,
    operator: &str,
    now: Timestamp,
    done: &mut Vec<Replayed>,
) -> Result<(), DlqError> {
    for dl in all.iter().filter(|d| d.selected(sel)) {
        if dl.command {
            done.push(Replayed {
                id: dl.id.clone(),
                subject: dl.subject.clone(),
                outcome: "command",
                audit_id: None,
                tag: dl.tag,
            });
            continue;
        }
        // the operator's decision first, in the property's audit chain
        let audit_id = match (&store, audit_target(dl)) {
            (Some(store), Some((tenant, property))) => {
                let row = audit_row(dl, operator, tenant, property, now);
                let id = row.id.clone();
                let mut uow = UnitOfWork::new(tenant, None, now);
                uow.audit.push(row);
                store.commit(uow).await?;
                Some(id)
            }
            _ => None,
        };
        let mut headers = FieldTable::default();
        headers.insert(REPLAYED_BY_HEADER.into(), header(operator));
        headers.insert(REPLAY_OF_HEADER.into(), header(&dl.id));
        if let Some(u) = &dl.original_user_id {
            headers.insert(ORIGINAL_USER_HEADER.into(), header(u));
        }
        // intake judges the replay's subject against the key it was first published with
        // (Lockstep's own dead letters come from the intake queue; a partition copy's key
        // is its hash key, not a subject)
        if dl.source == "lockstep" {
            headers.insert(ORIGINAL_ROUTING_KEY_HEADER.into(), header(&dl.routing_key));
        }
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            // RabbitMQ checks it is the connection's user: only Lockstep's may replay
            .with_user_id(dlq.user.as_str().into())
            .with_headers(headers);
        if let Some(m) = dl.message_id.as_ref().or(dl.envelope_id.as_ref()) {
            props = props.with_message_id(m.as_str().into());
        }
        let confirm = dlq
            .ch
            .basic_publish(
                "".into(),
                dlq.names.intake.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &dl.body,
                props,
            )
            .await?
            .await?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            return Err(DlqError::NotConfirmed(dl.id.clone()));
        }
        dlq.ch.basic_ack(dl.tag, BasicAckOptions::default()).await?;
        done.push(Replayed {
            id: dl.id.clone(),
            subject: dl.subject.clone(),
            outcome: "replayed",
            audit_id,
            tag: dl.tag,
        });
    }
    Ok(())
}

fn audit_target(dl: &DeadLetter) -> Option<(TenantId, PropertyId)> {
    Some((
        TenantId::parse(dl.tenant_id.as_deref()?).ok()?,
        PropertyId::parse(dl.property_id.as_deref()?).ok()?,
    ))
}

fn audit_row(
    dl: &DeadLetter,
    operator: &str,
    tenant: TenantId,
    property: PropertyId,
    now: Timestamp,
) -> AuditRow {
    AuditRow {
        id: ulid::Ulid::new().to_string(),
        tenant_id: tenant,
        property_id: property,
        credential_id: None,
        device_id: None,
        actor_kind: "operator".into(),
        action: "dlq_replay".into(),
        reason: Some(dl.reason.clone()),
        vendor: None,
        trace_id: None,
        created_at: now,
        payload: json!({
            "deadLetterId": dl.id,
            "messageId": dl.message_id.as_ref().or(dl.envelope_id.as_ref()),
            "subject": dl.subject,
            "originalUserId": dl.original_user_id,
            "replayedBy": operator,
        }),
    }
}

fn cell(v: Option<&str>, width: usize) -> String {
    let mut t: String = v.unwrap_or("-").chars().take(width).collect();
    if t.chars().count() < width {
        t = format!("{t:<width$}");
    }
    t
}

/// `lockstep dlq list`.
pub async fn cli_list(settings: &Settings, limit: usize, json_out: bool) -> anyhow::Result<()> {
    let (items, more) = list(settings, limit).await?;
    if json_out {
        println!("{}", json!({ "items": items, "more": more }));
        return Ok(());
    }
    println!(
        "{} dead letter(s){}",
        items.len(),
        if more { ", more waiting" } else { "" }
    );
    println!(
        "{} {} {} {} {} DETAIL",
        cell(Some("ID"), 28),
        cell(Some("REASON"), 22),
        cell(Some("SOURCE"), 8),
        cell(Some("SUBJECT"), 42),
        cell(Some("PUBLISHER"), 20),
    );
    for d in &items {
        let detail = match (&d.detail, &d.queue) {
            (Some(x), _) => x.clone(),
            (None, Some(q)) => format!("dead-lettered by the broker from {q}"),
            (None, None) => String::new(),
        };
        println!(
            "{} {} {} {} {} {}",
            cell(Some(&d.id), 28),
            cell(Some(&d.reason), 22),
            cell(Some(d.source), 8),
            cell(d.subject.as_deref().or(Some(&d.routing_key)), 42),
            cell(d.original_user_id.as_deref(), 20),
            detail.chars().take(120).collect::<String>(),
        );
    }
    Ok(())
}

/// `lockstep dlq show`.
pub async fn cli_show(
    settings: &Settings,
    id: &str,
    scan: usize,
    full: bool,
) -> anyhow::Result<()> {
    let max = if full { usize::MAX } else { 4096 };
    let v = show(settings, id, scan, max).await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// `lockstep dlq replay`: the audit rows go to the configured store.
pub async fn cli_replay(
    settings: &Settings,
    sel: &Selection,
    operator: Option<String>,
    scan: usize,
    json_out: bool,
) -> anyhow::Result<()> {
    let operator = operator
        .filter(|o| !o.trim().is_empty())
        .ok_or(DlqError::NoOperator)?;
    let store = crate::app::open_store(settings)
        .await
        .map_err(DlqError::OpenStore)?;
    let now = lockstep_domain::Clock::now(&lockstep_domain::SystemClock);
    let done = replay(settings, Some(store.clone()), sel, &operator, scan, now).await;
    store.close().await;
    let done = done?;
    if json_out {
        println!("{}", json!({ "items": done }));
        return Ok(());
    }
    for r in &done {
        match r.outcome {
            "replayed" => println!(
                "replayed {} ({}) to intake as {operator}{}",
                r.id,
                r.subject.as_deref().unwrap_or("not an envelope"),
                r.audit_id
                    .as_deref()
                    .map(|a| format!("; audit row {a}"))
                    .unwrap_or_else(|| "; no property to audit it in".into()),
            ),
            _ => println!(
                "skipped {}: an operator command is not replayed; re-issue it through the API",
                r.id
            ),
        }
    }
    println!(
        "{} replayed; intake validates each like a new message (a refusal dead-letters it again)",
        done.iter().filter(|r| r.outcome == "replayed").count()
    );
    Ok(())
}
