//! The test rig: a relay on 127.0.0.1:0 with in-memory certificates, session events in a
//! channel, short timeouts, and helpers for agents and hand-driven raw clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use futures_util::{SinkExt as _, StreamExt as _};
use lockstep_domain::{
    Clock, KeyCredentialKind, OfflineIssuance, PropertyId, SystemClock, TenantId, Timestamp,
};
use lockstep_relay::agent::{
    Agent, AgentConfig, AgentHandle, AgentKey, AgentStatus, AttachedEncoder, EncodedJobs,
    MemoryEncodedJobs, SimulatedEncoder,
};
use lockstep_relay::protocol::{
    self, auth_payload, Auth, Challenge, DesktopMessage, EncoderId, EncoderInfo, Hello, Refused,
    ServerMessage, SignatureB64, Transport, Welcome,
};
use lockstep_relay::{
    ChannelSessionEvents, Hub, IssuedCertificate, MemoryCertificateDirectory, RelayConfig,
    RelayDeps, RelayServer, SessionEvent,
};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Short timeouts so refusals and re-routes happen in test time.
pub fn test_config() -> RelayConfig {
    RelayConfig {
        audience: "relay-test".into(),
        handshake_timeout: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(2),
        ack_timeout: Duration::from_secs(2),
        result_timeout: Duration::from_secs(30),
        reconnect_grace: Duration::from_millis(300),
        max_unauthenticated: 64,
        max_frame_bytes: 16 * 1024,
        ..RelayConfig::default()
    }
}

/// A desktop's identity: its certificate and the seed of its key.
#[derive(Clone)]
pub struct Desk {
    pub seed: [u8; 32],
    pub certificate: OfflineIssuance,
}

impl Desk {
    pub fn key(&self) -> AgentKey {
        AgentKey::from_seed(self.seed)
    }
}

pub struct Rig {
    pub server: Option<RelayServer>,
    pub addr: SocketAddr,
    pub hub: Hub,
    pub directory: Arc<MemoryCertificateDirectory>,
    pub events: mpsc::UnboundedReceiver<SessionEvent>,
    pub registry: prometheus::Registry,
    pub issuer: ed25519_dalek::SigningKey,
    pub tenant: TenantId,
    pub property: PropertyId,
    pub clock: Arc<dyn Clock>,
    pub config: RelayConfig,
}

impl Rig {
    pub async fn start() -> Rig {
        Self::with_config(test_config()).await
    }

    pub async fn with_config(config: RelayConfig) -> Rig {
        Self::with_reconciler(config, Arc::new(lockstep_relay::DeferAll)).await
    }

    pub async fn with_reconciler(
        config: RelayConfig,
        reconciler: Arc<dyn lockstep_relay::Reconciler>,
    ) -> Rig {
        Self::with_parts(config, reconciler, true).await
    }

    /// A relay whose host does not renew certificates.
    pub async fn without_renewal() -> Rig {
        Self::with_parts(test_config(), Arc::new(lockstep_relay::DeferAll), false).await
    }

    async fn with_parts(
        mut config: RelayConfig,
        reconciler: Arc<dyn lockstep_relay::Reconciler>,
        renews: bool,
    ) -> Rig {
        let issuer = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        config.issuer_key = Some(issuer.verifying_key());
        let directory = Arc::new(if renews {
            MemoryCertificateDirectory::with_issuer(issuer.clone())
        } else {
            MemoryCertificateDirectory::default()
        });
        let (events, rx) = ChannelSessionEvents::new();
        let registry = prometheus::Registry::new();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let server = RelayServer::bind(
            "127.0.0.1:0",
            config.clone(),
            RelayDeps {
                certificates: directory.clone(),
                events: Arc::new(events),
                clock: clock.clone(),
                registry: registry.clone(),
                reconciler,
            },
        )
        .await
        .expect("relay binds");
        Rig {
            addr: server.local_addr(),
            hub: server.hub(),
            server: Some(server),
            directory,
            events: rx,
            registry,
            issuer,
            tenant: TenantId::generate(),
            property: PropertyId::parse("ppt_relay").unwrap(),
            clock,
            config,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/relay/v1", self.addr)
    }

    /// A certificate for `desktop` at the rig's tenant and property, issued now.
    pub fn desk(&self, desktop: &str) -> Desk {
        self.desk_at(
            self.tenant,
            &self.property.clone(),
            desktop,
            self.clock.now(),
        )
    }

    /// A certificate issued at `issued_at`, stored with Lockstep's signature.
    pub fn desk_at(
        &self,
        tenant: TenantId,
        property: &PropertyId,
        desktop: &str,
        issued_at: Timestamp,
    ) -> Desk {
        use rand::RngCore as _;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let key = AgentKey::from_seed(seed);
        let certificate = OfflineIssuance::issue(
            tenant,
            property.clone(),
            desktop,
            &key.public_key_base64(),
            vec![KeyCredentialKind::RfidCard],
            &[KeyCredentialKind::RfidCard],
            48,
            issued_at,
        )
        .unwrap();
        let signature =
            ed25519_dalek::Signer::sign(&self.issuer, certificate.signed_payload().as_bytes());
        self.directory.insert(IssuedCertificate {
            certificate: certificate.clone(),
            issuer_signature: Some(signature),
        });
        Desk { seed, certificate }
    }

    /// An agent with `encoders` simulated encoders of `delay` each, and its record.
    pub fn agent(
        &self,
        desk: &Desk,
        encoders: usize,
        delay: Duration,
    ) -> (
        AgentHandle,
        Vec<Arc<SimulatedEncoder>>,
        Arc<MemoryEncodedJobs>,
    ) {
        let store = Arc::new(MemoryEncodedJobs::default());
        let (handle, sims) = self.agent_with_store(desk, encoders, delay, store.clone());
        (handle, sims, store)
    }

    pub fn agent_with_store(
        &self,
        desk: &Desk,
        encoders: usize,
        delay: Duration,
        store: Arc<dyn EncodedJobs>,
    ) -> (AgentHandle, Vec<Arc<SimulatedEncoder>>) {
        let sims: Vec<Arc<SimulatedEncoder>> = (0..encoders)
            .map(|_| Arc::new(SimulatedEncoder::new(delay)))
            .collect();
        let attached = sims
            .iter()
            .enumerate()
            .map(|(i, s)| AttachedEncoder {
                info: EncoderInfo {
                    encoder_id: EncoderId::parse(&format!("enc-{i}")).unwrap(),
                    model: "simulated".into(),
                    transport: Transport::UsbHid,
                },
                encoder: s.clone(),
            })
            .collect();
        let handle = Agent::spawn(
            self.agent_config(desk),
            desk.key(),
            attached,
            store,
            self.clock.clone(),
        );
        (handle, sims)
    }

    /// The configuration of an agent of `desk` (it knows its certificate's expiry).
    pub fn agent_config(&self, desk: &Desk) -> AgentConfig {
        let mut config = AgentConfig::new(
            self.url(),
            desk.certificate.id.clone(),
            desk.certificate.tenant_id,
            desk.certificate.property_id.clone(),
            desk.certificate.desktop_device_id.clone(),
        );
        config.expected_audience = Some(self.config.audience.clone());
        config.backoff_min = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        config.certificate_expires_at = Some(desk.certificate.expires_at);
        config
    }

    /// The certificate `id` as the directory holds it now.
    pub async fn certificate(&self, id: &lockstep_domain::OfflineIssuanceId) -> OfflineIssuance {
        use lockstep_relay::CertificateDirectory as _;
        self.directory
            .certificate(self.tenant, id)
            .await
            .expect("the memory directory answers")
            .unwrap_or_else(|| panic!("no certificate {id}"))
            .certificate
    }

    pub async fn next_event(&mut self, within: Duration) -> Option<SessionEvent> {
        tokio::time::timeout(within, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// No session event is waiting.
    pub fn assert_no_event(&mut self) {
        match self.events.try_recv() {
            Err(mpsc::error::TryRecvError::Empty) => {}
            other => panic!("expected no session event, got {other:?}"),
        }
    }

    /// A counter or gauge value by name and (optional) label value.
    pub fn metric(&self, name: &str, label: Option<&str>) -> f64 {
        let mut total = 0.0;
        for family in self.registry.gather() {
            if family.name() != name {
                continue;
            }
            let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
            for m in family.get_metric() {
                let matches = match label {
                    None => true,
                    Some(v) => m.get_label().iter().any(|l| l.value() == v),
                };
                if matches {
                    total += if counter {
                        m.get_counter().get_value()
                    } else {
                        m.get_gauge().get_value()
                    };
                }
            }
        }
        total
    }

    /// Nothing changed: no session, no event.
    pub fn assert_untouched(&mut self) {
        assert_eq!(self.hub.connected(), 0, "no session may be open");
        assert!(self.hub.desktops(self.tenant, &self.property).is_empty());
        self.assert_no_event();
    }
}

pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn connected(agent: &AgentHandle) -> String {
    match agent
        .wait_for(
            |s| matches!(s, AgentStatus::Connected { .. }),
            Duration::from_secs(5),
        )
        .await
    {
        Some(AgentStatus::Connected { session_id }) => session_id,
        other => panic!("agent did not connect: {other:?}"),
    }
}

/// Opens a WebSocket and reads the challenge.
pub async fn raw_connect(rig: &Rig) -> (RawWs, Challenge) {
    let (mut ws, _) = tokio_tungstenite::connect_async(rig.url()).await.unwrap();
    match read(&mut ws).await {
        Some(ServerMessage::Challenge(c)) => (ws, c),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

pub async fn read(ws: &mut RawWs) -> Option<ServerMessage> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                return Some(protocol::decode_server(t.as_str()).expect("server frames decode"))
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("no frame from the server within 5 s"),
        }
    }
}

pub fn hello(desk: &Desk) -> Hello {
    Hello {
        certificate_id: desk.certificate.id.as_str().to_owned(),
        tenant_id: desk.certificate.tenant_id.to_string(),
        property_id: desk.certificate.property_id.as_str().to_owned(),
        desktop_device_id: desk.certificate.desktop_device_id.clone(),
        encoders: vec![EncoderInfo {
            encoder_id: EncoderId::parse("enc-0").unwrap(),
            model: "simulated".into(),
            transport: Transport::UsbHid,
        }],
        agent_version: "raw-test".into(),
        certificate_signature: None,
    }
}

pub fn auth(challenge: &Challenge, hello: &Hello, key: &AgentKey, signed_at: Timestamp) -> Auth {
    let payload = auth_payload(
        &challenge.audience,
        &challenge.nonce,
        &hello.certificate_id,
        &hello.tenant_id,
        &hello.property_id,
        &hello.desktop_device_id,
        signed_at,
    );
    Auth {
        nonce: challenge.nonce.clone(),
        signed_at,
        signature: SignatureB64::from_signature(&key.sign(payload.as_bytes())),
    }
}

pub async fn send(ws: &mut RawWs, message: &DesktopMessage) {
    ws.send(Message::text(protocol::encode(message)))
        .await
        .unwrap();
}

/// Sends hello + auth (signed now with `key`) and answers what the server said.
pub async fn handshake(
    ws: &mut RawWs,
    challenge: &Challenge,
    hello: Hello,
    key: &AgentKey,
    signed_at: Timestamp,
) -> Option<ServerMessage> {
    let a = auth(challenge, &hello, key, signed_at);
    send(ws, &DesktopMessage::Hello(hello)).await;
    send(ws, &DesktopMessage::Auth(a)).await;
    read(ws).await
}

/// The refusal, and the connection closed right after it.
pub async fn expect_refused(ws: &mut RawWs, answer: Option<ServerMessage>) -> Refused {
    let refused = match answer {
        Some(ServerMessage::Refused(r)) => r,
        other => panic!("expected refused, got {other:?}"),
    };
    assert!(
        read(ws).await.is_none(),
        "the connection must close after refused"
    );
    refused
}

/// A raw client authenticated as `desk`.
pub async fn raw_session(rig: &Rig, desk: &Desk) -> (RawWs, Welcome) {
    let (mut ws, challenge) = raw_connect(rig).await;
    match handshake(
        &mut ws,
        &challenge,
        hello(desk),
        &desk.key(),
        rig.clock.now(),
    )
    .await
    {
        Some(ServerMessage::Welcome(w)) => (ws, w),
        other => panic!("expected welcome, got {other:?}"),
    }
}

pub fn days(n: i64) -> TimeDelta {
    TimeDelta::days(n)
}
