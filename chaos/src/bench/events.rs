//! Lockstep's events as the platform sees them: a consumer on the rig's
//! [`PLATFORM_QUEUE`] (bound to `melmastoon.lock.#`), acking each, that notes when each
//! reservation's first `issued.v1` arrived, the key it named, and how many events of each
//! subject came.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use tokio::sync::Notify;

use super::pipeline;
use crate::rig::PLATFORM_QUEUE;

/// The subject whose arrival ends a saga of issue.
pub const ISSUED: &str = "melmastoon.lock.credential.issued.v1";

#[derive(Debug, Default)]
struct Seen {
    /// Reservation → first `issued.v1`.
    issued: HashMap<String, Instant>,
    /// Reservation → the key (`keyId`) its `issued.v1` named.
    key_of: HashMap<String, String>,
    /// Every event, by subject.
    subjects: BTreeMap<String, u64>,
}

/// The running consumer.
pub struct Events {
    seen: Arc<Mutex<Seen>>,
    notify: Arc<Notify>,
    conn: Connection,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// Starts consuming with the broker user of `url` (prefetch 256).
    pub async fn start(url: &str) -> anyhow::Result<Self> {
        let (conn, ch) = pipeline::connect(url).await?;
        ch.basic_qos(256, BasicQosOptions::default()).await?;
        let consumer = ch
            .basic_consume(
                PLATFORM_QUEUE.into(),
                "lockstep-bench".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let notify = Arc::new(Notify::new());
        let (s, n) = (seen.clone(), notify.clone());
        consumer.set_delegate(move |delivery: lapin::message::DeliveryResult| {
            let (seen, notify) = (s.clone(), n.clone());
            async move {
                let Ok(Some(d)) = delivery else { return };
                let at = Instant::now();
                let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap_or_default();
                let subject = v["subject"]
                    .as_str()
                    .map_or_else(|| d.routing_key.to_string(), str::to_owned);
                {
                    let mut seen = seen.lock().expect("never poisoned");
                    if subject == ISSUED {
                        if let Some(r) = v["data"]["reservationId"].as_str() {
                            seen.issued.entry(r.to_owned()).or_insert(at);
                            if let Some(k) = v["data"]["keyId"].as_str() {
                                seen.key_of.insert(r.to_owned(), k.to_owned());
                            }
                        }
                    }
                    *seen.subjects.entry(subject).or_default() += 1;
                }
                notify.notify_waiters();
                let _ = d.acker.ack(BasicAckOptions::default()).await;
            }
        });
        Ok(Self { seen, notify, conn })
    }

    /// When `reservation`'s first `issued.v1` arrived.
    pub fn issued_at(&self, reservation: &str) -> Option<Instant> {
        self.seen
            .lock()
            .expect("never poisoned")
            .issued
            .get(reservation)
            .copied()
    }

    /// How many of `reservations` were issued, and when the last of their `issued.v1`
    /// arrived.
    pub fn issued_of(&self, reservations: &[String]) -> (usize, Option<Instant>) {
        let seen = self.seen.lock().expect("never poisoned");
        reservations
            .iter()
            .filter_map(|r| seen.issued.get(r))
            .fold((0, None), |(n, last), t| {
                (n + 1, Some(last.map_or(*t, |l: Instant| l.max(*t))))
            })
    }

    /// The key `reservation`'s `issued.v1` named.
    pub fn key_of(&self, reservation: &str) -> Option<String> {
        self.seen
            .lock()
            .expect("never poisoned")
            .key_of
            .get(reservation)
            .cloned()
    }

    /// Events seen so far, by subject.
    pub fn subjects(&self) -> BTreeMap<String, u64> {
        self.seen.lock().expect("never poisoned").subjects.clone()
    }

    /// Waits until `reservation`'s `issued.v1` arrived, up to `timeout`; woken by each
    /// event, so the wait adds no polling delay.
    pub async fn wait_issued(&self, reservation: &str, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(t) = self.issued_at(reservation) {
                return Some(t);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.conn.close(200, "bench done".into()).await;
    }
}
