//! What every actor shares: the store, the vendor ports, the clock, partition fences,
//! metrics and (test-only) failpoints.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use lockstep_domain::Clock;
use lockstep_persistence::{Fence, Store};

use crate::metrics::Metrics;
use crate::vendor::PortRegistry;

/// Fences of the partitions this node owns (DESIGN §4). A partition not in the book is
/// not owned: its work is not done here.
#[derive(Debug, Default, Clone)]
pub struct FenceBook {
    fences: Arc<RwLock<HashMap<i32, Fence>>>,
    /// The fence a partition was owned under before it was released: a step that was
    /// already running when the node lost the partition still commits with it, so the
    /// store refuses that commit if another node took the partition meanwhile.
    released: Arc<RwLock<HashMap<i32, Fence>>>,
    /// Whether commits carry fences at all (off only for single-node embedded mode).
    pub enforce: bool,
}

impl FenceBook {
    /// A book that fences every commit.
    pub fn enforcing() -> Self {
        Self {
            fences: Arc::default(),
            released: Arc::default(),
            enforce: true,
        }
    }

    /// Records ownership.
    pub fn set(&self, fence: Fence) {
        self.fences
            .write()
            .expect("fence book lock is never poisoned")
            .insert(fence.partition, fence);
    }

    /// Drops ownership; commits of steps still running keep the released fence.
    pub fn remove(&self, partition: i32) {
        let gone = self
            .fences
            .write()
            .expect("fence book lock is never poisoned")
            .remove(&partition);
        if let Some(f) = gone {
            self.released
                .write()
                .expect("fence book lock is never poisoned")
                .insert(partition, f);
        }
    }

    /// The fence of a partition, if owned.
    pub fn get(&self, partition: i32) -> Option<Fence> {
        self.fences
            .read()
            .expect("fence book lock is never poisoned")
            .get(&partition)
            .copied()
    }

    /// Whether work of `partition` may run here.
    pub fn owns(&self, partition: i32) -> bool {
        !self.enforce || self.get(partition).is_some()
    }

    /// The fence to put on a commit of `partition`: the one it is owned under, or, for a
    /// step that outlived the ownership, the one it was owned under (DESIGN §4: a stale
    /// writer is refused by the store, never waved through). A partition never owned here
    /// gets a fence no epoch matches.
    pub fn for_commit(&self, partition: i32) -> Option<Fence> {
        if !self.enforce {
            return None;
        }
        self.get(partition).or_else(|| {
            Some(
                self.released
                    .read()
                    .expect("fence book lock is never poisoned")
                    .get(&partition)
                    .copied()
                    .unwrap_or(Fence {
                        partition,
                        epoch: -1,
                    }),
            )
        })
    }
}

/// Crash-test hooks, off unless set through the environment. `hang_after_vendor_issue =
/// N` makes the Nth successful vendor issue of this process hang *before* its result is
/// committed, printing `failpoint hit: hang_after_vendor_issue` to stderr, so a test can
/// SIGKILL the process exactly between a vendor call and its commit.
#[derive(Debug, Default)]
pub struct Failpoints {
    hang_after_vendor_issue: Option<u64>,
    issues: AtomicU64,
}

impl Failpoints {
    /// Reads `LOCKSTEP_FAILPOINT_HANG_AFTER_VENDOR_ISSUE`.
    pub fn from_env() -> Self {
        Self {
            hang_after_vendor_issue: std::env::var("LOCKSTEP_FAILPOINT_HANG_AFTER_VENDOR_ISSUE")
                .ok()
                .and_then(|v| v.parse().ok()),
            issues: AtomicU64::new(0),
        }
    }

    /// Called after each successful vendor issue, before its commit.
    pub async fn after_vendor_issue(&self) {
        let n = self.issues.fetch_add(1, Ordering::SeqCst) + 1;
        if self.hang_after_vendor_issue == Some(n) {
            eprintln!("failpoint hit: hang_after_vendor_issue");
            tracing::warn!(n, "failpoint hit: hang_after_vendor_issue");
            std::future::pending::<()>().await;
        }
    }
}

/// Whether new work may start, and how much is running (SIGTERM drains, DESIGN §4): once
/// draining, no actor starts another mailbox entry and a drive stops between vendor calls
/// (its entry stays open and due for the next owner); the steps already running finish
/// and commit, and [`WorkGate::idle`] says when the last one did.
#[derive(Debug, Default, Clone)]
pub struct WorkGate {
    inner: Arc<GateInner>,
}

#[derive(Debug, Default)]
struct GateInner {
    draining: AtomicBool,
    running: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One unit of running work; dropping it ends it.
#[derive(Debug)]
pub struct WorkGuard {
    inner: Arc<GateInner>,
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if self.inner.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

impl WorkGate {
    /// Stops new work from starting.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Starts a unit of work, `None` once draining.
    pub fn enter(&self) -> Option<WorkGuard> {
        if self.is_draining() {
            return None;
        }
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        Some(WorkGuard {
            inner: self.inner.clone(),
        })
    }

    /// Units of work running now.
    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::SeqCst)
    }

    /// Resolves when no unit of work is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            // registered before the check, so a guard dropped in between still wakes it
            notified.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Admission of saga transactions to the store, removals first (issue 11, "revocations
/// first, everywhere"): a step's transaction takes a permit before it takes a connection,
/// and a freed permit goes to a waiting removal before any waiting issuance. So when
/// thousands of confirmations wait for the database, a cancellation that arrives after
/// them is decided next, not last. The permits are fewer than the pool's connections:
/// intake and the outbox, which take none, always find one.
#[derive(Debug, Clone)]
pub struct StepGate {
    inner: Arc<std::sync::Mutex<GateState>>,
}

#[derive(Debug)]
struct GateState {
    free: usize,
    removals: std::collections::VecDeque<tokio::sync::oneshot::Sender<StepPermit>>,
    others: std::collections::VecDeque<tokio::sync::oneshot::Sender<StepPermit>>,
}

/// A step's admission; dropping it hands it to the next waiter, removals first.
#[derive(Debug)]
pub struct StepPermit {
    gate: Option<Arc<std::sync::Mutex<GateState>>>,
}

impl StepGate {
    /// A gate of `permits` (at least one).
    pub fn new(permits: usize) -> Self {
        Self {
            inner: Arc::new(std::sync::Mutex::new(GateState {
                free: permits.max(1),
                removals: Default::default(),
                others: Default::default(),
            })),
        }
    }

    /// Waits for a permit; `removal` work is served before any other that waits.
    pub async fn acquire(&self, removal: bool) -> StepPermit {
        let rx = {
            let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if st.free > 0 {
                st.free -= 1;
                return StepPermit {
                    gate: Some(self.inner.clone()),
                };
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            if removal {
                st.removals.push_back(tx);
            } else {
                st.others.push_back(tx);
            }
            rx
        };
        match rx.await {
            Ok(p) => p,
            // the gate is gone (never while a Runtime holds it): admit
            Err(_) => StepPermit { gate: None },
        }
    }

    /// Steps waiting for a permit: (removals, others).
    pub fn waiting(&self) -> (usize, usize) {
        let st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (st.removals.len(), st.others.len())
    }
}

impl Default for StepGate {
    fn default() -> Self {
        Self::new(8)
    }
}

impl Drop for StepPermit {
    fn drop(&mut self) {
        let Some(gate) = self.gate.take() else {
            return;
        };
        let mut st = gate.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let next = match st.removals.pop_front() {
                Some(w) => w,
                None => match st.others.pop_front() {
                    Some(w) => w,
                    None => {
                        st.free += 1;
                        return;
                    }
                },
            };
            let permit = StepPermit {
                gate: Some(gate.clone()),
            };
            match next.send(permit) {
                Ok(()) => return,
                // that waiter gave up: its permit comes back here, unsent (no recursion)
                Err(mut p) => p.gate = None,
            }
        }
    }
}

/// Shared handles.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Vendor adapters.
    pub ports: PortRegistry,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Owned partitions.
    pub fences: FenceBook,
    /// Metrics.
    pub metrics: Metrics,
    /// Crash-test hooks.
    pub failpoints: Arc<Failpoints>,
    /// Settings of the saga.
    pub settings: SagaSettings,
    /// Draining on shutdown.
    pub work: WorkGate,
    /// Per-property configuration (devices, rooms, policy), cached.
    pub config: crate::db::ConfigCache,
    /// Woken by every commit that wrote outbox rows: the publisher sends them at once
    /// instead of at its next poll.
    pub outbox_ready: Arc<tokio::sync::Notify>,
    /// Woken by every commit that wrote audit rows: the linker chains them after a short
    /// gather instead of polling (issue 11: an idle node's background transactions).
    pub audit_ready: Arc<tokio::sync::Notify>,
    /// Admission of saga transactions, removals first.
    pub steps: StepGate,
}

/// Tunables of the saga executor.
#[derive(Debug, Clone)]
pub struct SagaSettings {
    /// Issuance attempts before a credential fails with `vendor_unreachable`.
    pub max_issue_attempts: i32,
    /// First retry delay.
    pub retry_base: std::time::Duration,
    /// Longest retry delay.
    pub retry_cap: std::time::Duration,
    /// Per vendor call timeout.
    pub vendor_call_timeout: std::time::Duration,
    /// How long an idle credential actor lives before it passivates.
    pub passivate_after: std::time::Duration,
    /// Outage fallback (DESIGN §7): a guest's issue that has waited this long on its
    /// vendor walks the KeyKindPolicy fallback chain to an adapter that is up (an open
    /// breaker or a held account does at once). Zero: never.
    pub outage_fallback_after: std::time::Duration,
}

impl Default for SagaSettings {
    fn default() -> Self {
        Self {
            max_issue_attempts: 40,
            retry_base: std::time::Duration::from_millis(500),
            retry_cap: std::time::Duration::from_secs(300),
            vendor_call_timeout: std::time::Duration::from_secs(15),
            passivate_after: std::time::Duration::from_secs(30),
            outage_fallback_after: std::time::Duration::from_secs(120),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Issue 11, revocations first: with every permit taken, a removal that starts
    /// waiting after many issuances is admitted before all of them; issuances keep their
    /// order among themselves; a waiter that gave up passes its turn on.
    #[tokio::test]
    async fn a_freed_permit_goes_to_a_waiting_removal_before_earlier_issuances() {
        let gate = StepGate::new(1);
        let held = gate.acquire(false).await;
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let spawn = |name: &'static str, removal: bool| {
            let (gate, order) = (gate.clone(), order.clone());
            tokio::spawn(async move {
                let _p = gate.acquire(removal).await;
                order.lock().unwrap().push(name);
            })
        };
        for name in ["issue-1", "issue-2", "issue-3"] {
            tasks.push(spawn(name, false));
            tokio::task::yield_now().await;
        }
        // a removal that gives up before its turn
        let quitter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.acquire(true).await })
        };
        tokio::task::yield_now().await;
        quitter.abort();
        let _ = quitter.await;
        tasks.push(spawn("cancel", true));
        tokio::task::yield_now().await;
        assert_eq!(gate.waiting(), (2, 3));
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec!["cancel", "issue-1", "issue-2", "issue-3"]
        );
        assert_eq!(gate.waiting(), (0, 0));
        // every permit came back: as many as the gate has are free at once
        let _a = gate.acquire(false).await;
    }

    /// The gate admits `permits` at once, never more.
    #[tokio::test]
    async fn the_gate_admits_as_many_steps_as_it_has_permits() {
        let gate = StepGate::new(2);
        let a = gate.acquire(false).await;
        let _b = gate.acquire(true).await;
        let third = tokio::time::timeout(Duration::from_millis(50), gate.acquire(true)).await;
        assert!(third.is_err(), "a third step waits");
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), gate.acquire(false))
            .await
            .expect("admitted once a permit is freed");
    }

    /// DESIGN §4: a step still running when its node lost the partition commits with the
    /// fence it started under (the store refuses it if another node took the partition),
    /// never with none; a partition never owned here gets a fence no epoch matches.
    #[test]
    fn a_released_partition_keeps_its_fence_for_commits_of_running_steps() {
        let book = FenceBook::enforcing();
        assert_eq!(
            book.for_commit(3),
            Some(Fence {
                partition: 3,
                epoch: -1
            })
        );
        let f = Fence {
            partition: 3,
            epoch: 7,
        };
        book.set(f);
        assert!(book.owns(3));
        assert_eq!(book.for_commit(3), Some(f));
        book.remove(3);
        assert!(!book.owns(3), "no new work starts on a released partition");
        assert_eq!(
            book.for_commit(3),
            Some(f),
            "running steps keep their fence"
        );
        // embedded mode fences nothing
        assert_eq!(FenceBook::default().for_commit(3), None);
    }
}
