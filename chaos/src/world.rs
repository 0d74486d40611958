//! The reservation system, as far as Lockstep can tell: a publisher speaking only the
//! README's contract ("Publishing events to Lockstep": topic exchange `melmastoon.events`,
//! routing key = subject, persistent, publisher confirms, `user_id = reservation-service`
//! over that user's own connection), and the model of every stay it published, against
//! which the checker judges the doors.
//!
//! Each stay gets a room-day of its own (room `k % rooms`, day `k / rooms`, 14:00 to 11:00
//! the next day), so no two stays ever overlap on a room (I-9 would refuse the second).
//! `dates_changed` only moves the end to 13:00, still before the next stay's 14:00.
//!
//! [`World::spawn_load`] publishes a [`LoadPlan`] at a target rate: new stays, and later on
//! (interleaved with newer stays, so they land during the faults too) cancellations,
//! checkouts, date changes, duplicates of earlier events (same envelope id) and reordered
//! stays (the cancel, with the higher revision, published before the confirmation). A
//! publish is retried until the broker confirms it, whatever is down: the reservation
//! system keeps its outbox too. A cancellation's time is when the broker confirmed it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Duration as Days, Utc};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use lockstep_domain::KeyCredentialKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::util::wall_now;
use crate::vendors::{Vendor, VendorSim};

/// The platform's exchange.
pub const EXCHANGE: &str = "melmastoon.events";
/// The tenant every chaos property belongs to.
pub const TENANT: &str = "7c4a3f9e-5b1d-4e8a-9c2f-0d1e2f3a4b5c";

/// How long one publish keeps retrying before the run gives up on the broker.
const PUBLISH_GIVE_UP: Duration = Duration::from_secs(900);

/// A room and the device that opens it.
#[derive(Clone, Debug)]
pub struct Room {
    /// `rmu_…`.
    pub room: String,
    /// Lockstep's device id, `lck_…`.
    pub device_id: String,
    /// The vendor's device ref (what the simulator's door view names).
    pub device_ref: String,
}

/// A property of the run: one adapter on one vendor simulator, one device per room, and the
/// policy that says which key kind a stay should get.
#[derive(Clone, Debug)]
pub struct Property {
    /// `ppt_…`.
    pub id: String,
    /// Its vendor.
    pub vendor: Vendor,
    /// The adapter's id, `vad_…`.
    pub adapter_id: String,
    /// Its rooms.
    pub rooms: Vec<Room>,
    /// The policy's preferred kind: what every stay should hold.
    pub expected_kind: KeyCredentialKind,
}

impl Property {
    /// A property named `ppt_chaos_<vendor>_<n>` on `sim`'s devices `devices`, one room
    /// per device.
    pub fn on(sim: &VendorSim, n: usize, devices: &[String]) -> Self {
        let vendor = sim.vendor();
        let id = format!("ppt_chaos_{}_{n}", vendor.name());
        let rooms = devices
            .iter()
            .enumerate()
            .map(|(i, d)| Room {
                room: format!("rmu_{}_{n}_{i}", vendor.name()),
                device_id: format!("lck_{}", ulid::Ulid::new()),
                device_ref: d.clone(),
            })
            .collect();
        Self {
            id,
            vendor,
            adapter_id: format!("vad_{}", ulid::Ulid::new()),
            rooms,
            expected_kind: vendor.preferred_kind(),
        }
    }

    /// The `[[properties]]` table: adapter on `sim`, policy, devices.
    pub fn toml(&self, sim: &VendorSim) -> String {
        let mut t = format!(
            "\n[[properties]]\ntenant_id = \"{TENANT}\"\nproperty_id = \"{}\"\n",
            self.id
        );
        t.push_str(&format!(
            "\n[properties.policy]\npreferred_order = [\"{}\"]\nfallback_chain = [\"{}\"]\n",
            self.expected_kind.as_str(),
            self.vendor.fallback_kind().as_str()
        ));
        t.push_str(&sim.adapter_toml(&self.adapter_id));
        for r in &self.rooms {
            t.push_str(&format!(
                "\n[[properties.devices]]\nid = \"{}\"\nadapter = \"{}\"\nvendor_device_ref = \"{}\"\nlabel = \"Room {}\"\nrooms = [\"{}\"]\n",
                r.device_id, self.adapter_id, r.device_ref, r.room, r.room
            ));
        }
        t
    }
}

/// How a stay ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndKind {
    /// `reservation.cancelled.v1`.
    Cancelled,
    /// `reservation.checked_out.v1`.
    CheckedOut,
}

/// The end of a stay as published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    /// Cancel or checkout.
    pub kind: EndKind,
    /// When the broker confirmed it (wall clock).
    pub published_at: DateTime<Utc>,
}

/// One stay of the model.
#[derive(Clone, Debug)]
pub struct Stay {
    /// `rsv_…`.
    pub reservation: String,
    /// Index into [`World::properties`].
    pub property: usize,
    /// Indexes into the property's rooms.
    pub rooms: Vec<usize>,
    /// The newest window published.
    pub window: (DateTime<Utc>, DateTime<Utc>),
    /// The highest revision published.
    pub revision: i64,
    /// Whether its confirmation was published.
    pub confirmed: bool,
    /// Its end, once published.
    pub ended: Option<Ending>,
    /// Whether the cancel was published before the confirmation.
    pub reordered: bool,
}

impl Stay {
    /// Whether a key should be at its doors now: confirmed and not ended.
    pub fn should_hold_key(&self) -> bool {
        self.confirmed && self.ended.is_none()
    }
}

/// What the publisher has done so far.
#[derive(Debug, Default)]
pub struct Counters {
    /// Publishes the broker confirmed (duplicates included).
    pub published: AtomicU64,
    /// Of which duplicates of an earlier envelope (same id).
    pub duplicates: AtomicU64,
    /// Publish attempts that failed and were retried.
    pub retries: AtomicU64,
}

/// Publishes envelopes as `reservation-service`, with confirms, retrying until confirmed.
pub struct Publisher {
    url: String,
    user: String,
    channel: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why one publish attempt failed.
enum Attempt {
    /// Nothing is bound to the subject yet (Lockstep has not declared its topology).
    Unroutable,
    /// Connection, channel or nack.
    Failed(String),
}

impl Publisher {
    /// A publisher for broker URL `url` (of user `user`, which becomes the `user_id`).
    pub fn new(url: String, user: &str) -> Self {
        Self {
            url,
            user: user.to_owned(),
            channel: tokio::sync::Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<(Connection, Channel), Attempt> {
        let fail = |e: lapin::Error| Attempt::Failed(e.to_string());
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect(&self.url, ConnectionProperties::default()),
        )
        .await
        .map_err(|_| Attempt::Failed("connect timed out".into()))?
        .map_err(fail)?;
        let ch = conn.create_channel().await.map_err(fail)?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(fail)?;
        Ok((conn, ch))
    }

    async fn try_once(&self, subject: &str, id: &str, body: &[u8]) -> Result<(), Attempt> {
        let mut guard = self.channel.lock().await;
        if guard
            .as_ref()
            .is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected())
        {
            *guard = Some(self.connect().await?);
        }
        let Some((_, ch)) = guard.as_ref() else {
            return Err(Attempt::Failed("no channel".into()));
        };
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(id.into())
            .with_user_id(self.user.as_str().into());
        let sent = async {
            ch.basic_publish(
                EXCHANGE.into(),
                subject.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await?
            .await
        };
        let confirmation = match tokio::time::timeout(Duration::from_secs(10), sent).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                *guard = None;
                return Err(Attempt::Failed(e.to_string()));
            }
            Err(_) => {
                *guard = None;
                return Err(Attempt::Failed("no confirm within 10 s".into()));
            }
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(Attempt::Unroutable),
            Confirmation::Nack(_) => Err(Attempt::Failed("nacked".into())),
            Confirmation::NotRequested => Err(Attempt::Failed("confirms are off".into())),
        }
    }

    /// Publishes one envelope and returns when the broker confirmed it (wall clock),
    /// retrying whatever fails for up to 15 minutes.
    pub async fn publish(
        &self,
        subject: &str,
        id: &str,
        body: &[u8],
        counters: &Counters,
    ) -> anyhow::Result<DateTime<Utc>> {
        let started = Instant::now();
        loop {
            match self.try_once(subject, id, body).await {
                Ok(()) => {
                    counters.published.fetch_add(1, Ordering::Relaxed);
                    return Ok(wall_now());
                }
                Err(Attempt::Unroutable) | Err(Attempt::Failed(_))
                    if started.elapsed() < PUBLISH_GIVE_UP =>
                {
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(Attempt::Unroutable) => {
                    bail!("{subject} stayed unroutable for {PUBLISH_GIVE_UP:?}")
                }
                Err(Attempt::Failed(e)) => {
                    bail!("publishing {subject} failed for {PUBLISH_GIVE_UP:?}: {e}")
                }
            }
        }
    }

    /// Closes the connection.
    pub async fn close(&self) {
        if let Some((conn, _)) = self.channel.lock().await.take() {
            let _ = conn.close(200, "done".into()).await;
        }
    }
}

/// What the load publishes (ratios are of the new stays).
#[derive(Clone, Debug, PartialEq)]
pub struct LoadPlan {
    /// New stays.
    pub stays: usize,
    /// Publishes per second (every event counts).
    pub rate_per_sec: f64,
    /// Share of stays cancelled later on.
    pub cancel_ratio: f64,
    /// Share of stays checked out later on.
    pub checkout_ratio: f64,
    /// Share of stays whose end moves later on.
    pub dates_change_ratio: f64,
    /// Share of events published a second time later on (same envelope id).
    pub duplicate_ratio: f64,
    /// Share of new stays published cancel-first (the cancel with the higher revision).
    pub reorder_ratio: f64,
}

impl LoadPlan {
    /// The brief's mix: `stays` stays at `rate` events/s, 10 % cancelled, 3 % checked out,
    /// 5 % moved, 5 % of events duplicated, 2 % cancel-first.
    pub fn standard(stays: usize, rate_per_sec: f64) -> Self {
        Self {
            stays,
            rate_per_sec,
            cancel_ratio: 0.10,
            checkout_ratio: 0.03,
            dates_change_ratio: 0.05,
            duplicate_ratio: 0.05,
            reorder_ratio: 0.02,
        }
    }

    /// Roughly how many events it publishes.
    pub fn expected_events(&self) -> usize {
        let n = self.stays as f64;
        let base = n * (1.0 + self.cancel_ratio + self.checkout_ratio + self.dates_change_ratio)
            + n * self.reorder_ratio;
        (base * (1.0 + self.duplicate_ratio)).round() as usize
    }
}

/// One published envelope, kept to be published again as a duplicate (same id).
#[derive(Clone, Debug)]
pub struct Envelope {
    subject: &'static str,
    id: String,
    body: Vec<u8>,
}

impl Envelope {
    /// Its subject (the routing key).
    pub fn subject(&self) -> &str {
        self.subject
    }

    /// Its envelope id (also the message id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The JSON body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// Something the load does a few steps after a new stay.
#[derive(Clone, Debug)]
enum FollowUp {
    Cancel(usize),
    CheckOut(usize),
    ChangeDates(usize),
    Duplicate(Envelope),
}

/// The model and the publisher.
#[derive(Debug)]
pub struct World {
    properties: Vec<Property>,
    publisher: Publisher,
    stays: Mutex<Vec<Stay>>,
    /// Next room-day slot per property.
    slots: Mutex<Vec<usize>>,
    rng: Mutex<StdRng>,
    seed: u64,
    base: DateTime<Utc>,
    /// Stays whose end is being published (so two callers never end one stay twice).
    ends_claimed: Mutex<std::collections::HashSet<usize>>,
    /// Publish counters.
    pub counters: Counters,
    /// Events the running load still plans to publish (for the progress line).
    pub planned: AtomicU64,
}

impl World {
    /// A world over `properties`, publishing through `publisher`, its randomness from
    /// `seed` (print it: a failing run can be replayed).
    pub fn new(properties: Vec<Property>, publisher: Publisher, seed: u64) -> Self {
        // stays start 30 days out, so no window is in the past even on a scaled clock
        let today = wall_now().date_naive();
        let base = (today + Days::days(30))
            .and_hms_opt(14, 0, 0)
            .expect("14:00 exists")
            .and_utc();
        let slots = vec![0; properties.len()];
        Self {
            properties,
            publisher,
            stays: Mutex::new(Vec::new()),
            slots: Mutex::new(slots),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            seed,
            base,
            ends_claimed: Mutex::new(std::collections::HashSet::new()),
            counters: Counters::default(),
            planned: AtomicU64::new(0),
        }
    }

    /// The seed of its randomness.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Its properties.
    pub fn properties(&self) -> &[Property] {
        &self.properties
    }

    /// A copy of every stay.
    pub fn stays(&self) -> Vec<Stay> {
        self.stays
            .lock()
            .expect("the stays lock is never poisoned")
            .clone()
    }

    /// Stays whose confirmation is published and that have not ended.
    pub fn live_stays(&self) -> Vec<usize> {
        self.stays()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.should_hold_key())
            .map(|(i, _)| i)
            .collect()
    }

    fn roll(&self, p: f64) -> bool {
        p > 0.0 && self.rng.lock().expect("rng lock").gen::<f64>() < p
    }

    fn pick(&self, n: usize) -> usize {
        self.rng.lock().expect("rng lock").gen_range(0..n.max(1))
    }

    /// Reserves the next room-day, round-robin over properties (by stay count).
    fn new_stay(&self) -> usize {
        let mut stays = self.stays.lock().expect("stays lock");
        let index = stays.len();
        let property = index % self.properties.len();
        let mut slots = self.slots.lock().expect("slots lock");
        let slot = slots[property];
        slots[property] += 1;
        let rooms = self.properties[property].rooms.len();
        let day = (slot / rooms) as i64;
        let from = self.base + Days::days(day);
        stays.push(Stay {
            reservation: format!("rsv_chaos_{index:06}_{}", self.seed % 100_000),
            property,
            rooms: vec![slot % rooms],
            window: (from, from + Days::hours(21)),
            revision: 0,
            confirmed: false,
            ended: None,
            reordered: false,
        });
        index
    }

    fn envelope(&self, stay: &Stay, subject: &'static str, data: serde_json::Value) -> Envelope {
        let id = format!("evt-{}", ulid::Ulid::new());
        let body = json!({
            "id": id,
            "subject": subject,
            "time": wall_now().to_rfc3339(),
            "tenantId": TENANT,
            "propertyId": self.properties[stay.property].id,
            "data": data,
        });
        Envelope {
            subject,
            id,
            body: serde_json::to_vec(&body).expect("a JSON value serializes"),
        }
    }

    async fn send(&self, e: &Envelope) -> anyhow::Result<DateTime<Utc>> {
        self.publisher
            .publish(e.subject, &e.id, &e.body, &self.counters)
            .await
    }

    fn room_ids(&self, stay: &Stay) -> Vec<String> {
        let p = &self.properties[stay.property];
        stay.rooms
            .iter()
            .map(|r| p.rooms[*r].room.clone())
            .collect()
    }

    fn confirmation(&self, stay: &Stay, revision: i64) -> Envelope {
        self.envelope(
            stay,
            "melmastoon.reservation.confirmed.v1",
            json!({
                "reservationId": stay.reservation,
                "revision": revision,
                "guestId": format!("gst_{}", stay.reservation),
                "roomIds": self.room_ids(stay),
                "validFrom": stay.window.0.to_rfc3339(),
                "validUntil": stay.window.1.to_rfc3339(),
            }),
        )
    }

    fn ending(&self, stay: &Stay, kind: EndKind, revision: i64) -> Envelope {
        let (subject, data) = match kind {
            EndKind::Cancelled => (
                "melmastoon.reservation.cancelled.v1",
                json!({ "reservationId": stay.reservation, "revision": revision, "reason": "guest_request" }),
            ),
            EndKind::CheckedOut => (
                "melmastoon.reservation.checked_out.v1",
                json!({ "reservationId": stay.reservation, "revision": revision }),
            ),
        };
        self.envelope(stay, subject, data)
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut Stay)) {
        f(&mut self.stays.lock().expect("stays lock")[index]);
    }

    /// A copy of stay `index`.
    pub fn stay(&self, index: usize) -> Stay {
        self.stays.lock().expect("stays lock")[index].clone()
    }

    /// Reserves a new stay and builds its confirmation (revision 1) without publishing it,
    /// for a caller with a publisher of its own (the benchmark pipelines its confirms);
    /// [`World::mark_confirmed`] once the broker confirmed it.
    pub fn prepare_confirmation(&self) -> (usize, Envelope) {
        let index = self.new_stay();
        let e = self.confirmation(&self.stay(index), 1);
        (index, e)
    }

    /// Records that stay `index`'s confirmation was published.
    pub fn mark_confirmed(&self, index: usize) {
        self.update(index, |s| {
            s.confirmed = true;
            s.revision = s.revision.max(1);
        });
    }

    /// Claims stay `index`'s end and builds it (next revision) without publishing it;
    /// `None` if the stay is already ended or being ended. [`World::mark_ended`] once the
    /// broker confirmed it.
    pub fn prepare_end(&self, index: usize, kind: EndKind) -> Option<(Envelope, i64)> {
        if !self.ends_claimed.lock().expect("ending lock").insert(index) {
            return None;
        }
        let stay = self.stay(index);
        let revision = stay.revision + 1;
        Some((self.ending(&stay, kind, revision), revision))
    }

    /// Records that stay `index`'s end (of `revision`) was confirmed by the broker at
    /// `published_at`: the stale-key window runs from there.
    pub fn mark_ended(
        &self,
        index: usize,
        kind: EndKind,
        revision: i64,
        published_at: DateTime<Utc>,
    ) {
        self.update(index, |s| {
            s.revision = s.revision.max(revision);
            s.ended = Some(Ending { kind, published_at });
        });
    }

    /// Publishes a new stay's confirmation (revision 1); returns its index and envelope.
    pub async fn confirm_new(&self) -> anyhow::Result<(usize, Envelope)> {
        self.confirm_new_enveloped().await
    }

    async fn confirm_new_enveloped(&self) -> anyhow::Result<(usize, Envelope)> {
        let (index, e) = self.prepare_confirmation();
        self.send(&e).await?;
        self.mark_confirmed(index);
        Ok((index, e))
    }

    /// Publishes a new stay cancel-first: the cancellation (revision 2), then the
    /// confirmation (revision 1). No key may ever open for it.
    pub async fn reordered_new(&self) -> anyhow::Result<usize> {
        let index = self.new_stay();
        let stay = self.stay(index);
        let cancel = self.ending(&stay, EndKind::Cancelled, 2);
        self.ends_claimed.lock().expect("ending lock").insert(index);
        let at = self.send(&cancel).await?;
        self.update(index, |s| {
            s.reordered = true;
            s.revision = 2;
            s.ended = Some(Ending {
                kind: EndKind::Cancelled,
                published_at: at,
            });
        });
        self.send(&self.confirmation(&stay, 1)).await?;
        self.update(index, |s| s.confirmed = true);
        Ok(index)
    }

    /// Ends a stay (next revision); a stay already ended is left alone.
    pub async fn end(&self, index: usize, kind: EndKind) -> anyhow::Result<()> {
        let Some((e, revision)) = self.prepare_end(index, kind) else {
            return Ok(()); // already ended, or being ended by another caller
        };
        // the model counts it as ended from the moment it is sent: a confirmed publish
        // is Lockstep's, and the stale window runs from the confirm
        let at = self.send(&e).await?;
        self.mark_ended(index, kind, revision, at);
        Ok(())
    }

    /// Cancels a stay.
    pub async fn cancel(&self, index: usize) -> anyhow::Result<()> {
        self.end(index, EndKind::Cancelled).await
    }

    /// Moves a live stay's end from 11:00 to 13:00 (next revision).
    pub async fn change_dates(&self, index: usize) -> anyhow::Result<Option<Envelope>> {
        let stay = self.stay(index);
        if !stay.should_hold_key() {
            return Ok(None);
        }
        let revision = stay.revision + 1;
        let until = stay.window.1 + Days::hours(2);
        let e = self.envelope(
            &stay,
            "melmastoon.reservation.dates_changed.v1",
            json!({
                "reservationId": stay.reservation,
                "revision": revision,
                "validFrom": stay.window.0.to_rfc3339(),
                "validUntil": until.to_rfc3339(),
            }),
        );
        self.send(&e).await?;
        self.update(index, |s| {
            s.revision = s.revision.max(revision);
            s.window.1 = until;
        });
        Ok(Some(e))
    }

    /// Cancels `n` live stays picked at random; returns how many it cancelled.
    pub async fn cancel_random(&self, n: usize) -> anyhow::Result<usize> {
        self.planned.fetch_add(n as u64, Ordering::Relaxed);
        let mut done = 0;
        for _ in 0..n {
            let live = self.live_stays();
            if live.is_empty() {
                break;
            }
            self.cancel(live[self.pick(live.len())]).await?;
            done += 1;
        }
        Ok(done)
    }

    /// Publishes `plan` in the background; see [`Load`].
    pub fn spawn_load(self: &Arc<Self>, plan: LoadPlan) -> Load {
        let done = Arc::new(AtomicBool::new(false));
        let world = self.clone();
        let flag = done.clone();
        self.planned
            .fetch_add(plan.expected_events() as u64, Ordering::Relaxed);
        let task = tokio::spawn(async move {
            let r = world.run_load(&plan).await;
            flag.store(true, Ordering::SeqCst);
            r
        });
        Load { task, done }
    }

    async fn run_load(&self, plan: &LoadPlan) -> anyhow::Result<()> {
        let every = Duration::from_secs_f64(1.0 / plan.rate_per_sec.max(0.01));
        let mut pacer = tokio::time::interval(every);
        pacer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // follow-ups land 1 to 40 new stays later, so they interleave with newer stays
        let mut later: BTreeMap<usize, Vec<FollowUp>> = BTreeMap::new();
        let schedule = |later: &mut BTreeMap<usize, Vec<FollowUp>>, step: usize, f| {
            later.entry(step + 1 + self.pick(40)).or_default().push(f);
        };
        for step in 0..plan.stays {
            for f in later.remove(&step).unwrap_or_default() {
                pacer.tick().await;
                if let Some(next) = self.follow_up(f, plan).await? {
                    schedule(&mut later, step, next);
                }
            }
            pacer.tick().await;
            if self.roll(plan.reorder_ratio) {
                self.reordered_new().await?;
                continue;
            }
            let (index, e) = self.confirm_new_enveloped().await?;
            if self.roll(plan.duplicate_ratio) {
                schedule(&mut later, step, FollowUp::Duplicate(e));
            }
            if self.roll(plan.dates_change_ratio) {
                schedule(&mut later, step, FollowUp::ChangeDates(index));
            }
            let r: f64 = self.rng.lock().expect("rng lock").gen();
            if r < plan.cancel_ratio {
                schedule(&mut later, step, FollowUp::Cancel(index));
            } else if r < plan.cancel_ratio + plan.checkout_ratio {
                schedule(&mut later, step, FollowUp::CheckOut(index));
            }
        }
        // what is still scheduled goes out now, in order
        while let Some((step, fs)) = later.pop_first() {
            for f in fs {
                pacer.tick().await;
                if let Some(next) = self.follow_up(f, plan).await? {
                    schedule(&mut later, step, next);
                }
            }
        }
        Ok(())
    }

    /// Publishes a follow-up; may return another to schedule (a duplicate of it).
    async fn follow_up(&self, f: FollowUp, plan: &LoadPlan) -> anyhow::Result<Option<FollowUp>> {
        match f {
            FollowUp::Cancel(i) => self.end(i, EndKind::Cancelled).await.map(|_| None),
            FollowUp::CheckOut(i) => self.end(i, EndKind::CheckedOut).await.map(|_| None),
            FollowUp::ChangeDates(i) => Ok(self
                .change_dates(i)
                .await?
                .filter(|_| self.roll(plan.duplicate_ratio))
                .map(FollowUp::Duplicate)),
            FollowUp::Duplicate(e) => self.republish(&e).await.map(|_| None),
        }
    }

    /// Publishes an envelope again, as a redelivery would (same id: applied once).
    pub async fn republish(&self, e: &Envelope) -> anyhow::Result<()> {
        self.send(e).await?;
        self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the publisher's connection.
    pub async fn close(&self) {
        self.publisher.close().await;
    }
}

/// A running load.
#[derive(Debug)]
pub struct Load {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    done: Arc<AtomicBool>,
}

impl Load {
    /// Whether it published everything (or failed).
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits for it to end.
    pub async fn finish(self) -> anyhow::Result<()> {
        self.task.await.context("the load task panicked")?
    }
}
