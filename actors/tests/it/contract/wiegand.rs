//! The generic Wiegand pair of the contract suite: the adapter on the store-backed desk
//! (`DeskDispatch`) over a real relay server on 127.0.0.1:0 and an in-process agent with
//! simulated encoders. Faults: an outage kills the agent (no desktop: `CARD_ENCODER_OFFLINE`)
//! and ends with a new one; a lost response is a card encoded and recorded whose answer
//! never reaches the caller (the desk's counterpart of a vendor dropping its HTTP reply);
//! the desk has no rate limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lockstep_actors::desk::DeskDispatch;
use lockstep_domain::{
    Clock, DeviceRef, KeyCredentialKind, LockDeviceId, OfflineIssuance, PropertyId, RoomId,
    SystemClock, TenantId, VendorAdapterId, VendorCode,
};
use lockstep_persistence::{AdapterRecord, DeviceRecord, Store};
use lockstep_relay::agent::{
    Agent, AgentConfig, AgentHandle, AgentKey, AgentStatus, AttachedEncoder, MemoryEncodedJobs,
    SimulatedEncoder,
};
use lockstep_relay::protocol::{EncoderId, EncoderInfo, Transport};
use lockstep_relay::{
    ChannelSessionEvents, IssuedCertificate, MemoryCertificateDirectory, RelayConfig, RelayDeps,
    RelayServer,
};
use lockstep_vendors::wiegand::{CardEntry, CardJob, DeskError, DeskScope};
use lockstep_vendors::{CardNumber, EncoderDispatch, GenericWiegandAdapter, WiegandConfig};

use super::{credential_label, Pair};

/// The desk, with the contract's lost-response switch in front of it.
#[derive(Debug)]
struct Lossy {
    inner: DeskDispatch,
    lose: Arc<AtomicBool>,
}

#[async_trait]
impl EncoderDispatch for Lossy {
    async fn encode(&self, job: &CardJob) -> Result<CardNumber, DeskError> {
        let card = self.inner.encode(job).await?;
        if self.lose.load(Ordering::SeqCst) {
            // encoded and recorded; the answer is lost on its way back
            return Err(DeskError::ResultTimeout);
        }
        Ok(card)
    }
    async fn encoded(&self, s: &DeskScope, key: &str) -> Result<Option<CardNumber>, DeskError> {
        self.inner.encoded(s, key).await
    }
    async fn cards_at(
        &self,
        s: &DeskScope,
        v: VendorCode,
        d: &DeviceRef,
    ) -> Result<Vec<CardEntry>, DeskError> {
        self.inner.cards_at(s, v, d).await
    }
    async fn cancel(&self, s: &DeskScope, l: &str) -> Result<(), DeskError> {
        self.inner.cancel(s, l).await
    }
    async fn replace(&self, s: &DeskScope, l: &str, k: &str) -> Result<(), DeskError> {
        self.inner.replace(s, l, k).await
    }
    async fn ready(&self, s: &DeskScope) -> Result<(), DeskError> {
        self.inner.ready(s).await
    }
}

/// What keeps the relay and the agent alive for the pair.
struct Keep {
    _server: RelayServer,
    _agent: Arc<Mutex<Option<AgentHandle>>>,
}

pub async fn pair(store: Arc<dyn Store>) -> anyhow::Result<Pair> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let tenant = TenantId::generate();
    let property = PropertyId::parse("ppt_contract_desk")?;
    // the desk's door, registered like a configured lock
    let adapter_id = VendorAdapterId::generate();
    store
        .upsert_adapter(&AdapterRecord {
            id: adapter_id.clone(),
            tenant_id: tenant,
            property_id: property.clone(),
            vendor: VendorCode::GenericWiegand,
            environment: "sandbox".into(),
            capabilities: serde_json::json!({ "cardEncoding": true }),
            config: serde_json::json!({}),
            enabled: true,
            precedence: 100,
            now: clock.now(),
        })
        .await?;
    store
        .upsert_device(&DeviceRecord {
            id: LockDeviceId::generate(),
            tenant_id: tenant,
            property_id: property.clone(),
            vendor: VendorCode::GenericWiegand,
            vendor_adapter_id: adapter_id,
            device_ref: DeviceRef::new("w-501"),
            label: "Room 501".into(),
            capabilities: serde_json::json!({}),
            rooms: vec![RoomId::parse("rmu_w501")?],
            area: None,
            now: clock.now(),
            on_register: vec![],
        })
        .await?;
    // a relay with short timeouts and the desktop's certificate
    let directory = Arc::new(MemoryCertificateDirectory::default());
    // the agent's key: the same seed for each agent that replaces a killed one
    let seed = [42u8; 32];
    let seed_key = AgentKey::from_seed(seed).public_key_base64();
    let cert = OfflineIssuance::issue(
        tenant,
        property.clone(),
        "desk-contract",
        &seed_key,
        vec![KeyCredentialKind::RfidCard],
        &[KeyCredentialKind::RfidCard],
        48,
        clock.now(),
    )?;
    directory.insert(IssuedCertificate {
        certificate: cert.clone(),
        issuer_signature: None,
    });
    let (events, _rx) = ChannelSessionEvents::new();
    let server = RelayServer::bind(
        "127.0.0.1:0",
        RelayConfig {
            audience: "contract".into(),
            ack_timeout: Duration::from_secs(2),
            result_timeout: Duration::from_secs(5),
            reconnect_grace: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
            ..RelayConfig::default()
        },
        RelayDeps {
            certificates: directory,
            events: Arc::new(events),
            clock: clock.clone(),
            registry: prometheus::Registry::new(),
            reconciler: Arc::new(lockstep_relay::DeferAll),
        },
    )
    .await?;
    let url = format!("ws://{}/relay/v1", server.local_addr());
    // the agent: two simulated encoders; its record survives a kill (same desk)
    let jobs = Arc::new(MemoryEncodedJobs::default());
    let spawn = {
        let (clock, cert, jobs) = (clock.clone(), cert.clone(), jobs.clone());
        move || {
            let encoders = (0..2)
                .map(|i| AttachedEncoder {
                    info: EncoderInfo {
                        encoder_id: EncoderId::parse(&format!("enc-{i}")).expect("an id"),
                        model: "simulated".into(),
                        transport: Transport::UsbHid,
                    },
                    encoder: Arc::new(SimulatedEncoder::new(Duration::from_millis(2))),
                })
                .collect();
            let mut config = AgentConfig::new(
                url.clone(),
                cert.id.clone(),
                cert.tenant_id,
                cert.property_id.clone(),
                cert.desktop_device_id.clone(),
            );
            config.backoff_min = Duration::from_millis(20);
            config.backoff_max = Duration::from_millis(200);
            Agent::spawn(
                config,
                AgentKey::from_seed(seed),
                encoders,
                jobs.clone(),
                clock.clone(),
            )
        }
    };
    let first = spawn();
    first
        .wait_for(
            |s| matches!(s, AgentStatus::Connected { .. }),
            Duration::from_secs(10),
        )
        .await
        .ok_or_else(|| anyhow::anyhow!("the contract desk did not connect"))?;
    let agent = Arc::new(Mutex::new(Some(first)));
    let lose = Arc::new(AtomicBool::new(false));
    let desk = Lossy {
        inner: DeskDispatch::new(server.hub(), store, clock),
        lose: lose.clone(),
    };
    let port = Arc::new(GenericWiegandAdapter::new(
        WiegandConfig {
            scope: DeskScope {
                tenant_id: tenant,
                property_id: property,
            },
            relay_ws_base_url: "ws://127.0.0.1".into(),
            desktop_ack_timeout: Duration::from_secs(2),
        },
        Arc::new(desk),
    ));
    let slot = agent.clone();
    Ok(Pair {
        name: "generic-wiegand",
        port,
        device: DeviceRef::new("w-501"),
        kind: KeyCredentialKind::RfidCard,
        label: credential_label,
        faults: Box::new(move |outage, lose_rate, _rate| {
            lose.store(lose_rate > 0.0, Ordering::SeqCst);
            let mut slot = slot.lock().expect("agent slot");
            match (outage, slot.take()) {
                // the desktop dies: no desk is connected
                (true, Some(running)) => running.kill(),
                (false, None) => *slot = Some(spawn()),
                (_, keep) => *slot = keep,
            }
        }),
        _sim: Box::new(Keep {
            _server: server,
            _agent: agent,
        }),
    })
}
