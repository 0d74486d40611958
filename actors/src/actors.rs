//! The actor tree (DESIGN §2):
//!
//! ```text
//! Router ── PropertyActor (tenant, property) ── CredentialActor (saga subject)
//! ```
//!
//! A `CredentialActor` is the single writer of one saga subject (a reservation and the
//! credentials it owns): it drains the subject's persistent mailbox in id order, one step
//! at a time, and passivates when idle. Order and durability come from the mailbox in the
//! store, not from actix: an actor that dies loses nothing, and the next wake (intake, a
//! partition tick) rehydrates it from storage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::prelude::*;
use lockstep_domain::{PropertyId, TenantId};
use lockstep_persistence::{MailboxEntry, MailboxKind, SubjectRef};
use tracing::{debug, warn, Instrument};

use crate::db::StepDb;
use crate::runtime::Runtime;
use crate::step::{self, StepError};

/// Wakes made in this process, counted: a wake's stamp is the count when it was made.
static WAKE_STAMPS: AtomicU64 = AtomicU64::new(0);

/// The stamp of the newest wake made so far in this process.
pub(crate) fn wakes_made() -> u64 {
    WAKE_STAMPS.load(Ordering::SeqCst)
}

/// Work may be waiting for `subject`. Made after the work was stored: its stamp says
/// which looks at the mailbox saw it (see [`drain`]).
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Wake {
    /// The saga subject.
    pub subject: SubjectRef,
    /// The work may take a key off a door: its steps go before waiting issuances.
    pub removal: bool,
    /// Wakes made in this process before and with this one.
    stamp: u64,
}

impl Wake {
    /// A wake of `subject` (due timers, a restart: nothing known of the work).
    pub fn new(subject: SubjectRef) -> Self {
        Self::marked(subject, false)
    }

    /// A wake of `subject` for a stored message of `topic`.
    pub fn for_topic(subject: SubjectRef, topic: &str) -> Self {
        Self::marked(subject, crate::events_in::is_removal_topic(topic))
    }

    /// A wake of `subject` whose work may (`removal`) take a key off a door.
    pub fn marked(subject: SubjectRef, removal: bool) -> Self {
        Self {
            subject,
            removal,
            stamp: WAKE_STAMPS.fetch_add(1, Ordering::SeqCst) + 1,
        }
    }
}

/// Stop every actor working on `partition` (ownership lost).
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct ReleasePartition(pub i32);

/// Number of live credential actors (tests, metrics).
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "usize")]
pub struct LiveActors;

/// Routes wakes to property actors, creating them on demand.
pub struct Router {
    rt: Runtime,
    properties: HashMap<(TenantId, PropertyId), Addr<PropertyActor>>,
}

impl Router {
    /// A router over `rt`.
    pub fn new(rt: Runtime) -> Self {
        Self {
            rt,
            properties: HashMap::new(),
        }
    }
}

impl Actor for Router {
    type Context = Context<Self>;
}

impl Handler<Wake> for Router {
    type Result = ();
    fn handle(&mut self, msg: Wake, _ctx: &mut Self::Context) {
        if !self.rt.fences.owns(msg.subject.partition) {
            debug!(
                partition = msg.subject.partition,
                "wake for a partition not owned here"
            );
            return;
        }
        let key = (msg.subject.tenant_id, msg.subject.property_id.clone());
        let addr = match self.properties.get(&key) {
            Some(a) if a.connected() => a.clone(),
            _ => {
                let a = PropertyActor::new(self.rt.clone(), key.0, key.1.clone()).start();
                self.rt
                    .metrics
                    .live_actors
                    .with_label_values(&["property"])
                    .set(self.properties.len() as i64 + 1);
                self.properties.insert(key, a.clone());
                a
            }
        };
        addr.do_send(msg);
    }
}

impl Handler<ReleasePartition> for Router {
    type Result = ();
    fn handle(&mut self, msg: ReleasePartition, _ctx: &mut Self::Context) {
        for addr in self.properties.values() {
            addr.do_send(msg);
        }
    }
}

impl Handler<LiveActors> for Router {
    type Result = ResponseFuture<usize>;
    fn handle(&mut self, _msg: LiveActors, _ctx: &mut Self::Context) -> Self::Result {
        let addrs: Vec<_> = self.properties.values().cloned().collect();
        Box::pin(async move {
            let mut n = 0;
            for a in addrs {
                n += a.send(LiveActors).await.unwrap_or(0);
            }
            n
        })
    }
}

/// One per (tenant, property): owns the property's credential actors.
pub struct PropertyActor {
    rt: Runtime,
    tenant: TenantId,
    property: PropertyId,
    subjects: HashMap<String, (i32, Addr<CredentialActor>)>,
}

impl PropertyActor {
    fn new(rt: Runtime, tenant: TenantId, property: PropertyId) -> Self {
        Self {
            rt,
            tenant,
            property,
            subjects: HashMap::new(),
        }
    }
}

impl Actor for PropertyActor {
    type Context = Context<Self>;
}

impl Handler<Wake> for PropertyActor {
    type Result = ();
    fn handle(&mut self, msg: Wake, _ctx: &mut Self::Context) {
        debug_assert_eq!(msg.subject.tenant_id, self.tenant);
        debug_assert_eq!(msg.subject.property_id, self.property);
        self.subjects.retain(|_, (_, a)| a.connected());
        let addr = match self.subjects.get(&msg.subject.subject) {
            Some((_, a)) => a.clone(),
            None => {
                let a = CredentialActor::new(self.rt.clone(), msg.subject.clone()).start();
                self.subjects.insert(
                    msg.subject.subject.clone(),
                    (msg.subject.partition, a.clone()),
                );
                a
            }
        };
        addr.do_send(msg);
    }
}

impl Handler<ReleasePartition> for PropertyActor {
    type Result = ();
    fn handle(&mut self, msg: ReleasePartition, _ctx: &mut Self::Context) {
        self.subjects.retain(|_, (p, a)| {
            if *p == msg.0 {
                a.do_send(Stop);
                false
            } else {
                true
            }
        });
    }
}

impl Handler<LiveActors> for PropertyActor {
    type Result = usize;
    fn handle(&mut self, _msg: LiveActors, _ctx: &mut Self::Context) -> usize {
        self.subjects.retain(|_, (_, a)| a.connected());
        self.subjects.len()
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Stop;

#[derive(Message)]
#[rtype(result = "()")]
struct Drained {
    fenced: bool,
    /// The drain ended because the store had nothing due for the subject, at a look that
    /// began after this many wakes had been counted (see [`drain`]).
    seen: Option<u64>,
}

/// The single writer of one saga subject.
pub struct CredentialActor {
    rt: Runtime,
    subject: SubjectRef,
    running: bool,
    again: bool,
    /// A wake since the drain began said the work takes a key off a door.
    removal: bool,
    idle_generation: u64,
    /// The newest stamp of the wakes received.
    newest_wake: u64,
    /// The last drain ended with nothing due at a look begun after every wake up to this
    /// stamp was made: those wakes' work was seen, and needs no drain of its own (issue
    /// 11: under a burst, the partition ticks woke every subject waiting for a step
    /// permit again, and each such wake became an empty drain after the real one, about
    /// a transaction per saga).
    seen_through: Option<u64>,
}

impl CredentialActor {
    fn new(rt: Runtime, subject: SubjectRef) -> Self {
        Self {
            rt,
            subject,
            running: false,
            again: false,
            removal: false,
            idle_generation: 0,
            newest_wake: 0,
            seen_through: None,
        }
    }

    fn start_drain(&mut self, ctx: &mut Context<Self>) {
        self.running = true;
        self.again = false;
        let removal = std::mem::take(&mut self.removal);
        self.idle_generation += 1;
        let rt = self.rt.clone();
        let subject = self.subject.clone();
        let me = ctx.address();
        let span = tracing::info_span!("drain", tenant = %subject.tenant_id, property = %subject.property_id, subject = %subject.subject);
        // The drain runs as its own task so a slow vendor never blocks the arbiter; the
        // actor only learns when it is done.
        actix::spawn(
            async move {
                // A draining node (SIGTERM) starts nothing new: the entries stay due for the
                // next owner of the partition.
                let (fenced, seen) = match rt.work.enter() {
                    Some(_running) => match drain(&rt, &subject, removal).await {
                        Ok(seen) => (false, seen),
                        Err(e) => (matches!(e, StepError::Fenced), None),
                    },
                    None => (false, None),
                };
                me.do_send(Drained { fenced, seen });
            }
            .instrument(span),
        );
    }
}

impl Actor for CredentialActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.rt
            .metrics
            .live_actors
            .with_label_values(&["credential"])
            .inc();
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.rt
            .metrics
            .live_actors
            .with_label_values(&["credential"])
            .dec();
    }
}

impl Handler<Wake> for CredentialActor {
    type Result = ();
    fn handle(&mut self, msg: Wake, ctx: &mut Self::Context) {
        self.newest_wake = self.newest_wake.max(msg.stamp);
        if !self.running && self.seen_through.is_some_and(|s| msg.stamp <= s) {
            // made before the last drain's final look, which found nothing due
            return;
        }
        self.removal |= msg.removal;
        if self.running {
            self.again = true;
        } else {
            self.start_drain(ctx);
        }
    }
}

impl Handler<Drained> for CredentialActor {
    type Result = ();
    fn handle(&mut self, msg: Drained, ctx: &mut Self::Context) {
        self.running = false;
        if msg.fenced {
            warn!(
                partition = self.subject.partition,
                "partition fenced; stopping its actor"
            );
            ctx.stop();
            return;
        }
        self.seen_through = msg.seen;
        if self.again {
            // every wake was made before the drain's last look, which found nothing due
            let seen_all = msg.seen.is_some_and(|s| self.newest_wake <= s);
            if !seen_all {
                self.start_drain(ctx);
                return;
            }
            self.again = false;
            self.removal = false;
        }
        // Passivate after a quiet period; a wake in between cancels it.
        let generation = self.idle_generation;
        ctx.run_later(self.rt.settings.passivate_after, move |act, ctx| {
            if !act.running && act.idle_generation == generation {
                ctx.stop();
            }
        });
    }
}

impl Handler<Stop> for CredentialActor {
    type Result = ();
    fn handle(&mut self, _msg: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Handles every due entry of the subject, in order. A failed step becomes a durable
/// retry timer on its entry; the drain then moves on to entries that are due. Each step
/// is one transaction (`StepDb`): its first read opens it, its commit ends it and tells
/// what is due next, so a drain of N entries costs N transactions.
///
/// A drain woken for a removal has its transactions admitted before waiting issuances
/// (`removal`), and so does one whose entry is a removal message.
///
/// Ends `Ok(Some(n))` when the store had nothing due at a look (a read, or the peek of
/// the last step's commit) that began once the wake stamped `n` was made
/// (`StepDb::looked`): a wake is made after its work is stored, so that look saw the work
/// of every wake stamped up to `n`.
async fn drain(
    rt: &Runtime,
    subject: &SubjectRef,
    removal: bool,
) -> Result<Option<u64>, StepError> {
    let mut next: Option<Option<MailboxEntry>> = None;
    // wakes counted before the step whose commit peeked at `next`
    let mut seen = None;
    // the previous step's view: its fresh intents go on to the drive that follows
    let mut carried: Option<StepDb<'_>> = None;
    loop {
        if !rt.fences.owns(subject.partition) {
            return Err(StepError::Fenced);
        }
        if rt.work.is_draining() {
            return Ok(None);
        }
        let now = rt.clock.now();
        // the entry peeked at the last commit may itself say it is a removal
        let peeked_removal = matches!(
            &next,
            Some(Some(MailboxEntry { kind: MailboxKind::Event { topic, .. }, .. }))
                if crate::events_in::is_removal_topic(topic)
        );
        let mut db = StepDb::new(rt, subject.tenant_id, subject.partition, &subject.subject)
            .for_removal(removal || peeked_removal);
        if let Some(prev) = carried.as_mut() {
            prev.carry_into(&mut db);
        }
        let entry = match next.take() {
            Some(Some(e)) if e.due_at <= now => e,
            Some(None) => return Ok(seen),
            _ => {
                match db
                    .next_mailbox_entry(subject.tenant_id, &subject.subject, now)
                    .await?
                {
                    Some(e) => e,
                    None => {
                        db.release().await?;
                        return Ok(db.looked);
                    }
                }
            }
        };
        match step::run(rt, &mut db, &entry).await {
            Ok(()) => {
                next = db.next.take();
                seen = db.looked;
                db.release().await?;
                carried = Some(db);
                continue;
            }
            Err(StepError::Fenced) => {
                rt.metrics.fenced_commits.with_label_values(&["step"]).inc();
                return Err(StepError::Fenced);
            }
            Err(StepError::Retry(why)) => {
                drop(db);
                warn!(entry = entry.id, attempts = entry.attempts + 1, error = %why, "saga step failed; retry scheduled");
                rt.metrics
                    .saga_steps
                    .with_label_values(&["any", "retry"])
                    .inc();
                step::reschedule(rt, &entry, &why).await?;
            }
            Err(StepError::Parked(why)) => {
                drop(db);
                // waiting for a vendor or an account to recover is no failure: no warning
                debug!(entry = entry.id, why, "saga step parked");
                rt.metrics
                    .saga_steps
                    .with_label_values(&["any", "parked"])
                    .inc();
                step::reschedule(rt, &entry, &format!("parked: {why}")).await?;
            }
        }
    }
}
