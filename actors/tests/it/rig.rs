//! A whole runtime in one process: SQLite store, actors, the TTLock simulator behind a
//! port that can panic or hang on demand.
#![allow(clippy::disallowed_methods)] // test deadlines are wall-clock

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use async_trait::async_trait;
use lockstep_actors::{
    AdapterInfo, Failpoints, FenceBook, Metrics, PortRegistry, Router, Runtime, SagaSettings,
    VendorDeps, Wake, WorkerSettings,
};
use lockstep_domain::breaker::BreakerPolicy;
use lockstep_domain::{
    Clock, DeviceRef, LockDeviceId, PropertyId, RoomId, SystemClock, TenantId, VendorAdapterId,
    VendorCode, VendorRef,
};
use lockstep_persistence::testing::{test_cipher, TempSqlite};
use lockstep_persistence::{DeviceRecord, IntakeMessage, Store, SubjectRef};
use lockstep_vendors::ttlock::RunningSimulator;
use lockstep_vendors::{
    IssueRequest, LockCapabilities, LockPort, TtlockAdapter, VendorEntry, VendorError,
};
use serde_json::json;

/// A port that wraps a real adapter and misbehaves on demand.
#[derive(Debug)]
pub struct FaultyPort {
    inner: TtlockAdapter,
    /// Next N issues panic.
    pub panic_issues: AtomicU32,
    /// Next N issues hang forever.
    pub hang_issues: AtomicU32,
    /// Order in which calls reached the vendor ("issue"/"revoke").
    pub log: Mutex<Vec<&'static str>>,
}

#[async_trait]
impl LockPort for FaultyPort {
    fn vendor(&self) -> VendorCode {
        self.inner.vendor()
    }
    fn capabilities(&self) -> LockCapabilities {
        self.inner.capabilities()
    }
    fn account(&self) -> String {
        self.inner.account()
    }
    fn rate_gate(&self) -> &lockstep_vendors::rate::RateGate {
        self.inner.rate_gate()
    }
    fn default_rate_per_minute(&self) -> Option<u32> {
        self.inner.default_rate_per_minute()
    }
    async fn issue(&self, req: &IssueRequest) -> Result<VendorRef, VendorError> {
        if take(&self.panic_issues) {
            panic!("injected vendor worker panic");
        }
        if take(&self.hang_issues) {
            std::future::pending::<()>().await;
        }
        self.log.lock().unwrap().push("issue");
        self.inner.issue(req).await
    }
    async fn find(&self, req: &IssueRequest) -> Result<Option<VendorRef>, VendorError> {
        self.inner.find(req).await
    }
    async fn update(&self, req: &IssueRequest, vendor_ref: &VendorRef) -> Result<(), VendorError> {
        self.inner.update(req, vendor_ref).await
    }
    async fn revoke(&self, device: &DeviceRef, vendor_ref: &VendorRef) -> Result<(), VendorError> {
        self.log.lock().unwrap().push("revoke");
        self.inner.revoke(device, vendor_ref).await
    }
    async fn list(&self, device: &DeviceRef) -> Result<Vec<VendorEntry>, VendorError> {
        self.inner.list(device).await
    }
    async fn listings(&self, device: &DeviceRef) -> Vec<lockstep_vendors::Listing> {
        self.inner.listings(device).await
    }
    async fn health(&self) -> Result<(), VendorError> {
        self.inner.health().await
    }
    async fn probe(
        &self,
        device: &DeviceRef,
    ) -> Result<lockstep_vendors::DeviceProbe, VendorError> {
        self.inner.probe(device).await
    }
}

fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

/// The runtime under test.
pub struct Rig {
    pub rt: Runtime,
    pub router: Addr<Router>,
    pub sim: RunningSimulator,
    pub port: Arc<FaultyPort>,
    /// The id of `port`'s adapter (TTLock, locks 1..=4).
    pub adapter: VendorAdapterId,
    pub tenant: TenantId,
    pub property: PropertyId,
    stop: Arc<std::sync::atomic::AtomicBool>,
    _db: TempSqlite,
}

/// Locks 1..=4 serve rooms rmu_1..rmu_4.
pub const LOCKS: &[i64] = &[1, 2, 3, 4];

impl Rig {
    /// Starts everything on the wall clock; call inside an actix system.
    pub async fn start(worker: WorkerSettings) -> anyhow::Result<Self> {
        let saga = SagaSettings {
            retry_base: Duration::from_millis(20),
            retry_cap: Duration::from_millis(100),
            ..SagaSettings::default()
        };
        Self::start_with(
            worker,
            Arc::new(SystemClock),
            BreakerPolicy::default(),
            saga,
        )
        .await
    }

    /// Starts everything on `clock` with `breaker`; call inside an actix system.
    pub async fn start_with(
        worker: WorkerSettings,
        clock: Arc<dyn Clock>,
        breaker: BreakerPolicy,
        saga: SagaSettings,
    ) -> anyhow::Result<Self> {
        let db = TempSqlite::new();
        let store: Arc<dyn Store> = Arc::new(db.open(test_cipher()).await?);
        let metrics = Metrics::new();
        let sim = lockstep_vendors::ttlock::TtlockSimulator::start("127.0.0.1:0".parse()?)?;
        for l in LOCKS {
            sim.handle().add_lock(*l);
        }
        let port = Arc::new(FaultyPort {
            inner: TtlockAdapter::new(sim.default_adapter_config(), clock.clone())?,
            panic_issues: AtomicU32::new(0),
            hang_issues: AtomicU32::new(0),
            log: Mutex::new(Vec::new()),
        });
        let tenant = TenantId::generate();
        let property = PropertyId::parse("ppt_rig")?;
        let adapter = VendorAdapterId::generate();
        let ports = PortRegistry::default();
        let deps = VendorDeps {
            clock: clock.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            worker,
            breaker,
        };
        ports.insert(
            AdapterInfo {
                id: adapter.clone(),
                tenant_id: tenant,
                property_id: property.clone(),
                environment: "sandbox".into(),
                enabled: true,
                precedence: 100,
            },
            port.clone(),
            &deps,
        );
        store
            .upsert_adapter(&lockstep_persistence::AdapterRecord {
                id: adapter.clone(),
                tenant_id: tenant,
                property_id: property.clone(),
                vendor: VendorCode::Ttlock,
                environment: "sandbox".into(),
                capabilities: json!({}),
                config: json!({}),
                enabled: true,
                precedence: 100,
                now: clock.now(),
            })
            .await?;
        for l in LOCKS {
            store
                .upsert_device(&DeviceRecord {
                    id: LockDeviceId::from_ulid(ulid::Ulid::from_parts(*l as u64, 1)),
                    tenant_id: tenant,
                    property_id: property.clone(),
                    vendor: VendorCode::Ttlock,
                    vendor_adapter_id: adapter.clone(),
                    device_ref: DeviceRef::new(l.to_string()),
                    label: format!("lock {l}"),
                    capabilities: json!({}),
                    rooms: vec![RoomId::parse(&format!("rmu_{l}"))?],
                    area: None,
                    now: clock.now(),
                    on_register: Vec::new(),
                })
                .await?;
        }
        let rt = Runtime {
            store,
            ports,
            clock,
            fences: FenceBook::default(),
            metrics,
            failpoints: Arc::new(Failpoints::default()),
            settings: saga,
            work: Default::default(),
            config: Default::default(),
            outbox_ready: Default::default(),
            audit_ready: Default::default(),
            steps: Default::default(),
        };
        let router = Router::new(rt.clone()).start();
        // Fire due timers the way the buses' ticks do.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (store, clock, r, halt) = (
            rt.store.clone(),
            rt.clock.clone(),
            router.clone(),
            stop.clone(),
        );
        actix::spawn(async move {
            while !halt.load(Ordering::SeqCst) {
                let removals = &lockstep_actors::events_in::REMOVAL_TOPICS;
                if let Ok(subjects) = store.due_subjects(None, clock.now(), 1000, removals).await {
                    for due in subjects {
                        r.do_send(Wake::marked(due.subject, due.removal));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Ok(Self {
            rt,
            router,
            sim,
            port,
            adapter,
            tenant,
            property,
            stop,
            _db: db,
        })
    }

    /// Ends the test cleanly: stops the ticker and lets in-flight store calls finish, so
    /// no pooled connection is dropped while the test runtime shuts down.
    pub async fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Delivers a reservation event the way intake does, and wakes its subject.
    pub async fn deliver(
        &self,
        id: &str,
        topic: &str,
        data: serde_json::Value,
    ) -> anyhow::Result<()> {
        let subject = format!(
            "reservation:{}",
            data["reservationId"].as_str().unwrap_or_default()
        );
        self.deliver_to(&subject, id, topic, data).await
    }

    /// Delivers an event to a saga `subject` the way intake does, and wakes it.
    pub async fn deliver_to(
        &self,
        subject: &str,
        id: &str,
        topic: &str,
        data: serde_json::Value,
    ) -> anyhow::Result<()> {
        let envelope = json!({
            "id": id, "subject": topic, "time": "2026-11-24T10:00:00Z",
            "tenantId": self.tenant.to_string(), "propertyId": self.property.as_str(), "data": data,
        });
        let msg = IntakeMessage {
            message_id: id.into(),
            consumer: "test".into(),
            tenant_id: self.tenant,
            property_id: self.property.clone(),
            partition: 0,
            subject: subject.into(),
            topic: topic.into(),
            payload: envelope,
            received_at: self.rt.clock.now(),
        };
        self.rt.store.intake(&msg, None).await?;
        self.router.do_send(Wake::for_topic(
            SubjectRef {
                tenant_id: self.tenant,
                property_id: self.property.clone(),
                partition: 0,
                subject: msg.subject,
            },
            &msg.topic,
        ));
        Ok(())
    }

    /// Enqueues an operator command (an internal event) for a saga subject, as the REST API
    /// does, and wakes the subject.
    pub async fn command(
        &self,
        subject: &str,
        topic: &str,
        payload: serde_json::Value,
    ) -> anyhow::Result<()> {
        let now = self.rt.clock.now();
        let mut uow = lockstep_persistence::UnitOfWork::new(self.tenant, None, now);
        uow.events.push(lockstep_persistence::InternalEvent {
            property_id: self.property.clone(),
            partition: 0,
            subject: subject.into(),
            topic: topic.into(),
            payload,
            due_at: now,
        });
        self.rt.store.commit(uow).await?;
        self.router.do_send(Wake::for_topic(
            SubjectRef {
                tenant_id: self.tenant,
                property_id: self.property.clone(),
                partition: 0,
                subject: subject.into(),
            },
            topic,
        ));
        Ok(())
    }

    /// Waits until no mailbox work is open and the door agrees with every credential.
    pub async fn wait_quiet(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut quiet_since: Option<Instant> = None;
        loop {
            // future timers (validity expiry) stay open; quiet means nothing is due
            let open = self
                .rt
                .store
                .due_subjects(None, self.rt.clock.now(), 1, &[])
                .await?
                .len();
            let door = self.rt.store.door_backlog().await?;
            if open == 0 && door.pending_removals == 0 && door.pending_issues == 0 {
                // quiet for a moment: nothing in flight re-opened work
                match quiet_since {
                    Some(t) if t.elapsed() > Duration::from_millis(300) => return Ok(()),
                    Some(_) => {}
                    None => quiet_since = Some(Instant::now()),
                }
            } else {
                quiet_since = None;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "never quiet: {open} subjects with due work, door {door:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A confirmed stay on `room` (1..=4).
    pub async fn confirm(&self, reservation: &str, room: i64) -> anyhow::Result<()> {
        self.deliver(
            &format!("c-{reservation}"),
            "melmastoon.reservation.confirmed.v1",
            json!({ "reservationId": reservation, "revision": 1, "guestId": "gst_1", "roomIds": [format!("rmu_{room}")],
                    "validFrom": "2027-06-01T14:00:00Z", "validUntil": "2027-06-02T11:00:00Z" }),
        )
        .await
    }

    /// A confirmed stay on `room` (1..=4) on day `day` of June 2027 (stays on one room on
    /// different days never overlap, I-9).
    pub async fn confirm_on(&self, reservation: &str, room: i64, day: u32) -> anyhow::Result<()> {
        self.deliver(
            &format!("c-{reservation}"),
            "melmastoon.reservation.confirmed.v1",
            json!({ "reservationId": reservation, "revision": 1, "guestId": "gst_1", "roomIds": [format!("rmu_{room}")],
                    "validFrom": format!("2027-06-{day:02}T14:00:00Z"), "validUntil": format!("2027-06-{:02}T11:00:00Z", day + 1) }),
        )
        .await
    }

    /// Its cancellation.
    pub async fn cancel(&self, reservation: &str) -> anyhow::Result<()> {
        self.deliver(
            &format!("x-{reservation}"),
            "melmastoon.reservation.cancelled.v1",
            json!({ "reservationId": reservation, "revision": 2 }),
        )
        .await
    }

    /// The state of a reservation's credential, with its door truth.
    pub async fn state(
        &self,
        reservation: &str,
    ) -> anyhow::Result<Option<(String, Vec<(String, String)>)>> {
        let creds = self
            .rt
            .store
            .credentials_by_reservation(
                self.tenant,
                &lockstep_domain::ReservationId::parse(reservation)?,
            )
            .await?;
        let Some(c) = creds.first() else {
            return Ok(None);
        };
        let devices = self
            .rt
            .store
            .credential_devices(self.tenant, c.id())
            .await?;
        Ok(Some((
            c.state().as_str().to_owned(),
            devices
                .iter()
                .map(|d| (d.desired.as_str().to_owned(), d.sync.as_str().to_owned()))
                .collect(),
        )))
    }

    /// The reservation's credentials.
    pub async fn credentials(
        &self,
        reservation: &str,
    ) -> anyhow::Result<Vec<lockstep_domain::KeyCredential>> {
        Ok(self
            .rt
            .store
            .credentials_by_reservation(
                self.tenant,
                &lockstep_domain::ReservationId::parse(reservation)?,
            )
            .await?)
    }

    /// Subjects of the produced events of a credential (nothing publishes in the rig).
    pub async fn outbox_subjects(&self, credential: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .rt
            .store
            .unpublished(self.rt.clock.now(), 10_000)
            .await?
            .into_iter()
            .filter(|r| r.aggregate_id == credential)
            .map(|r| r.topic)
            .collect())
    }

    /// Waits until the step has handled the consumed message `message_id` (its mailbox
    /// entry is done) and gives its outcome: a barrier after which "nothing came of it" can
    /// be asserted, since the subject's mailbox is stepped in order.
    pub async fn wait_outcome(&self, message_id: &str) -> anyhow::Result<String> {
        wait_until(|| async {
            match self
                .rt
                .store
                .message_outcome(self.tenant, message_id)
                .await?
            {
                Some(Some(outcome)) => Ok(Ok(outcome)),
                now => Ok(Err(format!("{message_id} never handled: {now:?}"))),
            }
        })
        .await
    }

    /// Waits until the reservation's credential is in `state`.
    pub async fn wait_state(&self, reservation: &str, state: &str) -> anyhow::Result<()> {
        wait_until(|| async {
            match self.state(reservation).await? {
                Some((s, _)) if s == state => Ok(Ok(())),
                now => Ok(Err(format!("{reservation} never reached {state}: {now:?}"))),
            }
        })
        .await
    }

    /// Waits until the reservation's credential is in `state` with every device confirmed.
    pub async fn wait_settled(&self, reservation: &str, state: &str) -> anyhow::Result<()> {
        wait_until(|| async {
            match self.state(reservation).await? {
                Some((s, devices))
                    if s == state && devices.iter().all(|(_, sync)| sync == "confirmed") =>
                {
                    Ok(Ok(()))
                }
                now => Ok(Err(format!(
                    "{reservation} never settled as {state}: {now:?}"
                ))),
            }
        })
        .await
    }

    /// The metrics as `/metrics` renders them.
    pub fn metrics_text(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.rt.metrics.registry.gather())
            .unwrap_or_default()
    }

    /// One sample of the metrics text (0 when absent).
    pub fn metric(&self, name_with_labels: &str) -> f64 {
        self.metrics_text()
            .lines()
            .find(|l| l.starts_with(name_with_labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// The sum of every sample of `family` whose labels contain `label`.
    pub fn metric_sum(&self, family: &str, label: &str) -> f64 {
        self.metrics_text()
            .lines()
            .filter(|l| l.starts_with(family) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }

    /// Passcodes at a lock.
    pub fn passcodes(&self, lock: i64) -> usize {
        self.sim.handle().passcodes(lock).len()
    }

    /// Waits until the rig's lock `lock` holds `n` passcodes.
    pub async fn wait_passcodes(&self, lock: i64, n: usize) -> anyhow::Result<()> {
        wait_until(|| async {
            match self.passcodes(lock) {
                held if held == n => Ok(Ok(())),
                held => Ok(Err(format!("lock {lock} holds {held} passcodes, not {n}"))),
            }
        })
        .await
    }

    /// Registers another adapter at the rig's property: its supervised worker (simulator
    /// worker settings, default breaker) and its row in the store, enabled.
    pub async fn add_adapter(
        &self,
        port: Arc<dyn LockPort>,
        vendor: VendorCode,
        environment: &str,
        precedence: i32,
    ) -> anyhow::Result<VendorAdapterId> {
        let id = VendorAdapterId::generate();
        self.rt.ports.insert(
            AdapterInfo {
                id: id.clone(),
                tenant_id: self.tenant,
                property_id: self.property.clone(),
                environment: environment.into(),
                enabled: true,
                precedence,
            },
            port,
            &VendorDeps {
                clock: self.rt.clock.clone(),
                store: self.rt.store.clone(),
                metrics: self.rt.metrics.clone(),
                worker: WorkerSettings::simulator(),
                breaker: BreakerPolicy::default(),
            },
        );
        self.rt
            .store
            .upsert_adapter(&lockstep_persistence::AdapterRecord {
                id: id.clone(),
                tenant_id: self.tenant,
                property_id: self.property.clone(),
                vendor,
                environment: environment.into(),
                capabilities: json!({}),
                config: json!({}),
                enabled: true,
                precedence,
                now: self.rt.clock.now(),
            })
            .await?;
        Ok(id)
    }

    /// Registers device `id` of `adapter` (the vendor's `device_ref`) opening `rooms`.
    pub async fn add_device(
        &self,
        id: LockDeviceId,
        adapter: &VendorAdapterId,
        vendor: VendorCode,
        device_ref: &str,
        rooms: &[&str],
    ) -> anyhow::Result<()> {
        self.rt
            .store
            .upsert_device(&DeviceRecord {
                id,
                tenant_id: self.tenant,
                property_id: self.property.clone(),
                vendor,
                vendor_adapter_id: adapter.clone(),
                device_ref: DeviceRef::new(device_ref),
                label: format!("{} door {device_ref}", vendor.as_str()),
                capabilities: json!({}),
                rooms: rooms
                    .iter()
                    .map(|r| RoomId::parse(r))
                    .collect::<Result<_, _>>()?,
                area: None,
                now: self.rt.clock.now(),
                on_register: Vec::new(),
            })
            .await?;
        Ok(())
    }
}

/// How long a rig wait gives its condition.
const WAIT_WITHIN: Duration = Duration::from_secs(20);

/// Waits on a condition: `check` answers `Ok(value)` once it holds, or `Err(why)` naming
/// what it saw; asked again every 10 ms (a poll interval, not a fixed sleep: the wait ends
/// as soon as the condition holds) until [`WAIT_WITHIN`] has passed, then fails with the
/// last `why`.
pub async fn wait_until<T, F, Fut>(mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Result<T, String>>>,
{
    let deadline = Instant::now() + WAIT_WITHIN;
    loop {
        match check().await? {
            Ok(value) => return Ok(value),
            Err(why) => anyhow::ensure!(Instant::now() < deadline, "{why}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
