//! The desktop relay served by the `lockstep` binary (issue 12, DESIGN §8): the host's side
//! of the relay's ports. Certificates come from the store (`offline_issuance` with its
//! stored signature) and are renewed there when a desktop rotates its key (the successor
//! signed with `[offline] signing_key`; the old one revoked for `rotation` when the new one
//! first authenticates, without O-2's cascade); each session is persisted in `encoder_sessions` with its
//! `lock.encoder_session.opened.v1` / `closed.v1` events in the same commit (the outbox
//! publishes them like every other event); provisional batches are deferred (the
//! reconciler of issue 12 is not built yet). The hub's [`DeskDispatch`] is what the card
//! adapters (`generic-wiegand`, TTLock IC cards) encode through.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use lockstep_actors::desk::DeskDispatch;
use lockstep_actors::events_out::event_row;
use lockstep_config::RelaySettings;
use lockstep_domain::{
    Clock, EncoderSessionId, OfflineIssuance, OfflineIssuanceId, OfflineRevokeReason, TenantId,
    Timestamp,
};
use lockstep_persistence::{
    AuditRow, EncoderSessionRecord, EncoderSessionTable, OfflineCertSignatureTable,
    OfflineCertTable, OutboxRow, OutboxTable, ReadOnlyEncoderSessionScanTable,
    ReadOnlyEncoderSessionTable, ReadOnlyOfflineCertSignatureTable, ReadOnlyOfflineCertTable,
    Store, StoreError, UnitOfWork,
};
use lockstep_relay::protocol::RenewalRefusalReason;
use lockstep_relay::{
    CertificateDirectory, DirectoryError, Hub, IssuedCertificate, RelayConfig, RelayDeps,
    RelayServer, RenewedCertificate, SessionClosed, SessionEvent, SessionEvents, SessionOpened,
};

use crate::admin::OfflineSigner;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{info, warn};

/// `lock.encoder_session.opened.v1`.
pub const SESSION_OPENED: &str = "melmastoon.lock.encoder_session.opened.v1";
/// `lock.encoder_session.closed.v1`.
pub const SESSION_CLOSED: &str = "melmastoon.lock.encoder_session.closed.v1";

/// The relay's certificate lookups and renewals, in the store.
#[derive(Debug)]
pub struct StoreCertificates {
    store: Arc<dyn Store>,
    signer: Option<OfflineSigner>,
}

impl StoreCertificates {
    /// Certificates of `store`; renewals are signed with `signer` (none: not offered).
    pub fn new(store: Arc<dyn Store>, signer: Option<OfflineSigner>) -> Self {
        Self { store, signer }
    }

    /// The successor of `id`, decided, stored and signed in one transaction of the tenant.
    async fn renew_in_store(
        &self,
        signer: &OfflineSigner,
        tenant: TenantId,
        id: &OfflineIssuanceId,
        public_key_ed25519: &str,
        now: Timestamp,
    ) -> Result<Result<RenewedCertificate, RenewalRefusalReason>, StoreError> {
        let mut tx = self.store.begin(tenant, None).await?;
        let Some(current) = tx.offline_cert(id.as_str()).await? else {
            tx.rollback().await?;
            // gone from the store: retention removes only revoked certificates
            return Ok(Err(RenewalRefusalReason::CertificateRevoked));
        };
        let next = match current.renew(public_key_ed25519, now) {
            Ok(next) => next,
            Err(refusal) => {
                tx.rollback().await?;
                return Ok(Err(refusal.into()));
            }
        };
        let signature = signer.sign(&next);
        tx.save_offline_cert(&next).await?;
        tx.set_offline_cert_signature(
            next.id.as_str(),
            &base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
            &signer.key_id,
        )
        .await?;
        let mut uow = UnitOfWork::new(tenant, None, now);
        uow.audit
            .push(rotation_audit(&next, "offline_cert_renewed", now));
        tx.apply(&uow).await?;
        tx.commit().await?;
        Ok(Ok(RenewedCertificate {
            certificate: next,
            issuer_signature: signature,
        }))
    }

    /// Revokes (`rotation`) what `certificate` renewed and its other, unused renewals.
    async fn retire(
        &self,
        certificate: &OfflineIssuance,
        replaced: &OfflineIssuanceId,
        now: Timestamp,
    ) -> Result<Vec<OfflineIssuanceId>, StoreError> {
        let mut tx = self.store.begin(certificate.tenant_id, None).await?;
        let mut retiring: Vec<OfflineIssuance> = tx
            .offline_cert(replaced.as_str())
            .await?
            .into_iter()
            .collect();
        retiring.extend(
            tx.offline_cert_successors(replaced.as_str())
                .await?
                .into_iter()
                .filter(|c| c.id != certificate.id),
        );
        let mut uow = UnitOfWork::new(certificate.tenant_id, None, now);
        let mut revoked = Vec::new();
        for mut c in retiring {
            if c.revoked_at.is_none() && c.revoke(OfflineRevokeReason::Rotation, now) {
                tx.save_offline_cert(&c).await?;
                uow.audit
                    .push(rotation_audit(&c, "offline_cert_revoked", now));
                revoked.push(c.id);
            }
        }
        // O-2 is for compromise: a rotation runs no cascade, and what the old certificate
        // minted while in force stays valid (`OfflineIssuance::vouches_for`).
        tx.apply(&uow).await?;
        tx.commit().await?;
        Ok(revoked)
    }
}

/// The audit row of a renewal or a rotation revoke: the desktop did it, over the relay.
fn rotation_audit(c: &OfflineIssuance, action: &str, now: Timestamp) -> AuditRow {
    AuditRow {
        id: ulid::Ulid::new().to_string(),
        tenant_id: c.tenant_id,
        property_id: c.property_id.clone(),
        credential_id: None,
        device_id: None,
        actor_kind: "desktop".into(),
        action: action.into(),
        reason: c.revoke_reason.map(|r| r.as_str().to_owned()),
        vendor: None,
        trace_id: None,
        created_at: now,
        payload: json!({
            "desktopDeviceId": c.desktop_device_id,
            "certificateId": c.id.as_str(),
            "serial": c.serial,
            "replaces": c.replaces.as_ref().map(|r| r.as_str()),
        }),
    }
}

fn directory_error(e: StoreError) -> DirectoryError {
    DirectoryError(e.to_string())
}

#[async_trait]
impl CertificateDirectory for StoreCertificates {
    async fn certificate(
        &self,
        tenant: TenantId,
        id: &OfflineIssuanceId,
    ) -> Result<Option<IssuedCertificate>, DirectoryError> {
        let mut tx = self.store.read(tenant).await.map_err(directory_error)?;
        let certificate = tx
            .offline_cert(id.as_str())
            .await
            .map_err(directory_error)?;
        let signature = tx
            .offline_cert_signature(id.as_str())
            .await
            .map_err(directory_error)?;
        tx.commit().await.map_err(directory_error)?;
        // A stored signature that does not decode is no signature: the desktop's copy
        // from `hello` is checked instead (and a forged row authenticates nobody).
        let issuer_signature = signature.and_then(|(b64, _key_id)| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|b| <[u8; 64]>::try_from(b).ok())
                .map(|b| ed25519_dalek::Signature::from_bytes(&b))
        });
        Ok(certificate.map(|certificate| IssuedCertificate {
            certificate,
            issuer_signature,
        }))
    }

    async fn renew(
        &self,
        tenant: TenantId,
        id: &OfflineIssuanceId,
        public_key_ed25519: &str,
        now: Timestamp,
    ) -> Result<RenewedCertificate, RenewalRefusalReason> {
        let Some(signer) = &self.signer else {
            return Err(RenewalRefusalReason::NotOffered);
        };
        let now = crate::admin::millis(now);
        match self
            .renew_in_store(signer, tenant, id, public_key_ed25519, now)
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                warn!(certificate = %id, error = %e, "renewing a certificate failed");
                Err(RenewalRefusalReason::Unavailable)
            }
        }
    }

    async fn in_use(
        &self,
        certificate: &OfflineIssuance,
        now: Timestamp,
    ) -> Result<Vec<OfflineIssuanceId>, DirectoryError> {
        let Some(replaced) = &certificate.replaces else {
            return Ok(Vec::new());
        };
        self.retire(certificate, replaced, crate::admin::millis(now))
            .await
            .map_err(directory_error)
    }
}

enum Note {
    Event(SessionEvent),
    Flush(oneshot::Sender<()>),
}

/// Session events into the store: one task writes them in order (a session's close never
/// before its open), each in one commit with its outbox rows, retrying while the store is
/// down.
#[derive(Debug)]
pub struct SessionRecorder {
    tx: mpsc::UnboundedSender<Note>,
}

impl SessionEvents for SessionRecorder {
    fn publish(&self, event: SessionEvent) {
        // The writer lives as long as the process.
        let _ = self.tx.send(Note::Event(event));
    }
}

impl SessionRecorder {
    /// Starts the writer.
    pub fn start(store: Arc<dyn Store>, node_id: String, outbox_ready: Arc<Notify>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(record_loop(rx, store, node_id, outbox_ready));
        Self { tx }
    }

    /// Waits until every event reported so far is stored, at most `limit`; whether it was.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Note::Flush(done)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(())))
    }
}

async fn record_loop(
    mut rx: mpsc::UnboundedReceiver<Note>,
    store: Arc<dyn Store>,
    node_id: String,
    outbox_ready: Arc<Notify>,
) {
    while let Some(note) = rx.recv().await {
        let event = match note {
            Note::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Note::Event(e) => e,
        };
        let mut backoff = Duration::from_millis(250);
        let mut failures = 0u32;
        loop {
            let written = match &event {
                SessionEvent::Opened(o) => record_opened(store.as_ref(), &node_id, o).await,
                SessionEvent::Closed(c) => record_closed(store.as_ref(), c).await,
            };
            match written {
                Ok(()) => {
                    if failures > 0 {
                        info!(failures, "encoder session stored after the store came back");
                    }
                    outbox_ready.notify_one();
                    break;
                }
                Err(e) => {
                    if failures.is_multiple_of(20) {
                        warn!(error = %e, "storing an encoder session failed; retrying");
                    }
                    failures += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// The data of an encoder session event.
fn session_data(r: &EncoderSessionRecord, at: Timestamp) -> serde_json::Value {
    let mut data = json!({
        "sessionId": r.id.as_str(),
        "connectionId": r.connection_id,
        "tenantId": r.tenant_id.to_string(),
        "propertyId": r.property_id.as_str(),
        "desktopDeviceId": r.desktop_device_id,
        "encoderId": r.encoder_id,
        "encoderModel": r.encoder_model,
        "transport": r.transport,
        "certificateId": r.certificate_id,
        "openedAt": r.opened_at.to_rfc3339(),
        "occurredAt": at.to_rfc3339(),
    });
    if let (Some(obj), Some(closed)) = (data.as_object_mut(), r.closed_at) {
        obj.insert("closedAt".into(), json!(closed.to_rfc3339()));
        obj.insert("closeReason".into(), json!(r.close_reason));
        obj.insert("closeDetail".into(), json!(r.close_detail));
    }
    data
}

fn session_row(subject: &str, r: &EncoderSessionRecord, at: Timestamp) -> OutboxRow {
    event_row(
        subject,
        r.tenant_id,
        &r.property_id,
        r.id.as_str(),
        session_data(r, at),
        at,
    )
}

async fn record_opened(
    store: &dyn Store,
    node_id: &str,
    o: &SessionOpened,
) -> Result<(), StoreError> {
    let mut tx = store.begin(o.tenant_id, None).await?;
    let mut rows = Vec::new();
    for e in &o.encoders {
        let record = EncoderSessionRecord {
            id: e.session_id.clone(),
            tenant_id: o.tenant_id,
            property_id: o.property_id.clone(),
            desktop_device_id: o.desktop_device_id.clone(),
            encoder_model: e.encoder.model.clone(),
            transport: e.encoder.transport.as_str().to_owned(),
            connection_id: o.session_id.as_str().to_owned(),
            encoder_id: e.encoder.encoder_id.as_str().to_owned(),
            certificate_id: o.certificate_id.as_str().to_owned(),
            node_id: node_id.to_owned(),
            opened_at: o.at,
            closed_at: None,
            close_reason: None,
            close_detail: None,
        };
        if tx.open_encoder_session(&record).await? {
            rows.push(session_row(SESSION_OPENED, &record, o.at));
        }
    }
    tx.append_outbox(&rows).await?;
    tx.commit().await
}

/// Closes one stored session and returns its `closed.v1` row (`None`: unknown or closed
/// already).
async fn close_one(
    tx: &mut lockstep_persistence::Tx,
    id: &EncoderSessionId,
    at: Timestamp,
    reason: &str,
    detail: &str,
) -> Result<Option<OutboxRow>, StoreError> {
    if !tx.close_encoder_session(id, at, reason, detail).await? {
        return Ok(None);
    }
    Ok(tx
        .encoder_session(id)
        .await?
        .map(|r| session_row(SESSION_CLOSED, &r, at)))
}

async fn record_closed(store: &dyn Store, c: &SessionClosed) -> Result<(), StoreError> {
    let mut tx = store.begin(c.tenant_id, None).await?;
    let mut rows = Vec::new();
    for e in &c.encoders {
        if let Some(row) = close_one(
            &mut tx,
            &e.session_id,
            c.at,
            c.reason.spec_reason(),
            c.reason.as_str(),
        )
        .await?
        {
            rows.push(row);
        }
    }
    tx.append_outbox(&rows).await?;
    tx.commit().await
}

/// Closes the sessions a previous run of this node left open (it was killed, or its store
/// was down when they ended): `node` names the node in production (several nodes serve
/// desktops), `None` closes every open session (embedded: one node). Returns how many.
pub async fn close_stale_sessions(
    store: &dyn Store,
    node: Option<&str>,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let open = {
        let mut tx = store.worker_read().await?;
        let open = tx.open_encoder_sessions(node).await?;
        tx.commit().await?;
        open
    };
    let mut closed = 0;
    for (tenant, id) in open {
        let mut tx = store.begin(tenant, None).await?;
        if let Some(row) = close_one(&mut tx, &id, now, "error", "server_restart").await? {
            tx.append_outbox(&[row]).await?;
            closed += 1;
        }
        tx.commit().await?;
    }
    Ok(closed)
}

/// The running relay of this node.
pub struct RelayHost {
    server: tokio::sync::Mutex<Option<RelayServer>>,
    recorder: Arc<SessionRecorder>,
    /// The dispatcher (connected desktops, encode jobs).
    pub hub: Hub,
    /// What the card adapters encode through.
    pub desk: Arc<DeskDispatch>,
    /// The URL desktops are given.
    pub public_url: String,
}

impl std::fmt::Debug for RelayHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayHost")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// What the relay needs from the node.
pub struct RelayStart<'a> {
    /// `[relay]`.
    pub settings: &'a RelaySettings,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Business time.
    pub clock: Arc<dyn Clock>,
    /// Where `lockstep_relay_*` is registered (the node's `/metrics` registry).
    pub registry: prometheus::Registry,
    /// This node.
    pub node_id: String,
    /// Close only this node's stale sessions at start (production), or every one.
    pub own_sessions_only: bool,
    /// Lockstep's offline-issuance key: certificates must carry its signature, and renewed
    /// ones are signed with it (none: certificates are not checked or renewed).
    pub signer: Option<OfflineSigner>,
    /// Woken when session events reach the outbox.
    pub outbox_ready: Arc<Notify>,
}

fn relay_config(s: &RelaySettings, issuer_key: Option<ed25519_dalek::VerifyingKey>) -> RelayConfig {
    let mut c = RelayConfig {
        issuer_key,
        shutdown_grace: s.shutdown_grace,
        ..RelayConfig::default()
    };
    if let Some(a) = &s.audience {
        c.audience = a.clone();
    }
    let set = |field: &mut Duration, v: Option<Duration>| {
        if let Some(v) = v {
            *field = v;
        }
    };
    set(&mut c.ack_timeout, s.ack_timeout);
    set(&mut c.result_timeout, s.result_timeout);
    set(&mut c.heartbeat_interval, s.heartbeat_interval);
    set(&mut c.idle_timeout, s.idle_timeout);
    set(&mut c.handshake_timeout, s.handshake_timeout);
    set(&mut c.reconnect_grace, s.reconnect_grace);
    if let Some(n) = s.max_unauthenticated {
        c.max_unauthenticated = n;
    }
    if let Some(n) = s.max_jobs_per_desktop {
        c.max_jobs_per_desktop = n;
    }
    c
}

impl RelayHost {
    /// Closes what a previous run left open, then binds the relay and serves desktops.
    pub async fn start(r: RelayStart<'_>) -> anyhow::Result<Self> {
        let node = r.own_sessions_only.then_some(r.node_id.as_str());
        match close_stale_sessions(r.store.as_ref(), node, r.clock.now()).await {
            Ok(0) => {}
            Ok(n) => info!(
                sessions = n,
                "closed encoder sessions a previous run left open"
            ),
            Err(e) => warn!(error = %e, "closing stale encoder sessions failed"),
        }
        let recorder = Arc::new(SessionRecorder::start(
            r.store.clone(),
            r.node_id.clone(),
            r.outbox_ready.clone(),
        ));
        let server = RelayServer::bind(
            r.settings.bind,
            relay_config(r.settings, r.signer.as_ref().map(|s| s.verifying_key())),
            RelayDeps {
                certificates: Arc::new(StoreCertificates::new(r.store.clone(), r.signer)),
                events: recorder.clone(),
                clock: r.clock.clone(),
                registry: r.registry,
                // Provisional credentials minted offline are judged, stored and
                // materialized or revoked here (spec 003 §5, I-7).
                reconciler: Arc::new(
                    crate::reconcile::HostReconciler::new(r.store.clone(), r.clock.clone())
                        .with_outbox_ready(r.outbox_ready.clone()),
                ),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("relay: {e}"))?;
        let hub = server.hub();
        let mut desk = DeskDispatch::new(hub.clone(), r.store.clone(), r.clock.clone());
        if let Some(grace) = r.settings.holder_grace {
            desk = desk.with_holder_grace(grace);
        }
        let public_url = r
            .settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("ws://{}/relay/v1", server.local_addr()));
        // Tests and scripts wait for this line to learn the port.
        info!(addr = %server.local_addr(), url = %public_url, "relay listening");
        println!("lockstep relay listening on {public_url}");
        Ok(Self {
            server: tokio::sync::Mutex::new(Some(server)),
            recorder,
            hub,
            desk: Arc::new(desk),
            public_url,
        })
    }

    /// Stops accepting, closes every session (reported closed and stored) and waits for
    /// the connections to end, bounded by the relay's shutdown grace plus the store.
    pub async fn shutdown(&self) {
        let server = self.server.lock().await.take();
        if let Some(server) = server {
            server.shutdown().await;
            if !self.recorder.flush(Duration::from_secs(5)).await {
                warn!("encoder sessions not all stored at shutdown; the next start closes them");
            }
        }
    }
}
