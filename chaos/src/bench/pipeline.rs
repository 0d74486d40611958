//! Publishing as fast as the broker takes it: persistent messages with publisher confirms,
//! pipelined in a window (up to `window` unconfirmed at a time) instead of one
//! publish-and-wait at a time. The benchmark's confirmations, cancellations and the raw
//! RabbitMQ baseline all go through [`publish`], so both sides of a ratio are published
//! the same way.

use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::mpsc;

use crate::util::wall_now;

/// How long one confirm may take before the run gives up on the broker.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(120);

/// One message to publish.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The routing key.
    pub routing_key: String,
    /// The message id.
    pub id: String,
    /// The body (JSON).
    pub body: Vec<u8>,
}

/// A connection and a channel in confirm mode.
pub async fn connect(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .context("connecting to the broker timed out")?
    .context("connecting to the broker")?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((conn, ch))
}

/// Publishes `messages` in order to `exchange` through `ch` (in confirm mode): persistent,
/// `mandatory`, JSON, with `user_id` when given, at most `window` unconfirmed at a time.
/// `before(i)` runs just before message `i` is handed to the broker. Returns each message's
/// confirm time (wall clock, when the ack was seen; acks are awaited in order as they
/// arrive); fails on a nack, a returned (unroutable) message or a broker that stops
/// confirming.
pub async fn publish(
    ch: &Channel,
    exchange: &str,
    user_id: Option<&str>,
    messages: &[Outgoing],
    window: usize,
    mut before: impl FnMut(usize),
) -> anyhow::Result<Vec<DateTime<Utc>>> {
    let (tx, mut rx) = mpsc::channel::<(usize, lapin::PublisherConfirm)>(window.max(1));
    let expected = messages.len();
    let reaper = tokio::spawn(async move {
        let mut confirmed = vec![None; expected];
        while let Some((i, confirm)) = rx.recv().await {
            let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
                .await
                .with_context(|| format!("no confirm within {CONFIRM_TIMEOUT:?}"))??;
            match outcome {
                Confirmation::Ack(None) => confirmed[i] = Some(wall_now()),
                Confirmation::Ack(Some(_)) => bail!("message {i} was unroutable"),
                Confirmation::Nack(_) => bail!("message {i} was nacked"),
                Confirmation::NotRequested => bail!("the channel is not in confirm mode"),
            }
        }
        Ok::<_, anyhow::Error>(confirmed)
    });
    for (i, m) in messages.iter().enumerate() {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(m.id.as_str().into());
        if let Some(user) = user_id {
            props = props.with_user_id(user.into());
        }
        before(i);
        let confirm = ch
            .basic_publish(
                exchange.into(),
                m.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &m.body,
                props,
            )
            .await
            .with_context(|| format!("publishing message {i}"))?;
        if tx.send((i, confirm)).await.is_err() {
            break; // the reaper failed: its error is the one to report
        }
    }
    drop(tx);
    let confirmed = reaper.await.context("the confirm reaper panicked")??;
    confirmed
        .into_iter()
        .enumerate()
        .map(|(i, at)| at.with_context(|| format!("message {i} was never confirmed")))
        .collect()
}
