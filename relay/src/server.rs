//! The relay server: accepts desktops over WebSocket, authenticates them (see [`crate::auth`]),
//! hands them to the [`Hub`] and keeps their connections honest: heartbeats, a maximum
//! frame size, a handshake timeout, a cap on connections still authenticating, a bounded
//! outbound queue per desktop and a write timeout, so no desktop can stall another, the
//! dispatcher or the accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use lockstep_domain::{Clock, Timestamp};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::auth::{AuthenticatedDesktop, Authenticator, CertificateDirectory};
use crate::events::{CloseReason, SessionEvents};
use crate::hub::{CloseCommand, Hub, HubSettings, Link};
use crate::metrics::RelayMetrics;
use crate::protocol::{
    self, decode_desktop, Challenge, DesktopMessage, Heartbeat, JobOutcomeKind, JobResult, Nonce,
    ProtocolError, RefusalReason, Refused, ServerMessage, SyncResult, Welcome, SUPPORTED_VERSIONS,
};
use crate::reconcile::{DesktopIdentity, Reconciler};
use crate::renew::{self, RenewalContext};
use crate::{RelayConfig, RelayError};

/// What the relay needs from its host.
#[derive(Clone)]
pub struct RelayDeps {
    /// The offline-issuance certificates.
    pub certificates: Arc<dyn CertificateDirectory>,
    /// Where session events go.
    pub events: Arc<dyn SessionEvents>,
    /// Time (timestamps, certificate expiry, skew).
    pub clock: Arc<dyn Clock>,
    /// Where the relay registers its metrics (`lockstep_relay_*`).
    pub registry: prometheus::Registry,
    /// Judges provisional credentials desktops minted offline ([`crate::DeferAll`] defers
    /// every one).
    pub reconciler: Arc<dyn Reconciler>,
}

impl std::fmt::Debug for RelayDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayDeps").finish_non_exhaustive()
    }
}

/// A running relay server.
#[derive(Debug)]
pub struct RelayServer {
    local_addr: SocketAddr,
    hub: Hub,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct Ctx {
    config: RelayConfig,
    hub: Hub,
    auth: Authenticator,
    metrics: RelayMetrics,
    clock: Arc<dyn Clock>,
    gate: Arc<Semaphore>,
    reconciler: Arc<dyn Reconciler>,
}

impl RelayServer {
    /// Binds `addr` (port 0 for any) and serves desktops until [`RelayServer::shutdown`].
    pub async fn bind(
        addr: impl ToSocketAddrs,
        config: RelayConfig,
        deps: RelayDeps,
    ) -> Result<Self, RelayError> {
        config.validate()?;
        let metrics = RelayMetrics::register(&deps.registry)?;
        let listener = TcpListener::bind(addr).await.map_err(RelayError::Bind)?;
        let local_addr = listener.local_addr().map_err(RelayError::Bind)?;
        let hub = Hub::new(
            HubSettings {
                ack_timeout: config.ack_timeout,
                result_timeout: config.result_timeout,
                reconnect_grace: config.reconnect_grace,
                outbound_queue: config.outbound_queue,
                max_jobs_per_desktop: config.max_jobs_per_desktop,
            },
            deps.events,
            deps.clock.clone(),
            metrics.clone(),
        );
        let auth = Authenticator::new(
            deps.certificates,
            config.issuer_key,
            config.audience.clone(),
            config.clock_skew,
            config.handshake_timeout,
            deps.clock.clone(),
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let ctx = Arc::new(Ctx {
            gate: Arc::new(Semaphore::new(config.max_unauthenticated)),
            config,
            hub: hub.clone(),
            auth,
            metrics,
            clock: deps.clock,
            reconciler: deps.reconciler,
        });
        tracing::info!(addr = %local_addr, "relay listening");
        let task = tokio::spawn(accept_loop(listener, ctx, shutdown_rx));
        Ok(Self {
            local_addr,
            hub,
            shutdown,
            task,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The dispatcher and session registry.
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// Stops accepting, closes every session (`server_shutdown`, reported closed) and
    /// waits for the connections to end (at most the shutdown grace, then they are cut).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match ctx.gate.clone().try_acquire_owned() {
                    Ok(permit) => {
                        conns.spawn(connection(stream, peer, ctx.clone(), permit, shutdown.clone()));
                    }
                    Err(_) => {
                        // Dropped before any WebSocket work: a flood costs an accept each.
                        ctx.metrics.refused(RefusalReason::TooManyConnections, &peer.to_string());
                        drop(stream);
                    }
                },
                Err(e) => {
                    // Out of file descriptors and the like: let the system breathe.
                    tracing::warn!(error = %e, "relay accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    ctx.hub.shutdown();
    let drained = tokio::time::timeout(ctx.config.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(left = conns.len(), "relay connections cut at shutdown");
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    tracing::info!("relay stopped");
}

type Ws = WebSocketStream<TcpStream>;

/// Why a handshake read ended without a message.
enum ReadFail {
    Refuse(RefusalReason, String),
    Closed,
}

async fn read_message(ws: &mut Ws, deadline: Instant) -> Result<DesktopMessage, ReadFail> {
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => {
                return Err(ReadFail::Refuse(
                    RefusalReason::HandshakeTimeout,
                    "not authenticated in time".into(),
                ))
            }
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Err(ReadFail::Closed),
            Ok(Some(Err(WsError::Capacity(_)))) => {
                return Err(ReadFail::Refuse(
                    RefusalReason::FrameTooLarge,
                    "frame larger than maxFrameBytes".into(),
                ))
            }
            Ok(Some(Err(_))) => return Err(ReadFail::Closed),
            Ok(Some(Ok(Message::Text(text)))) => {
                return decode_desktop(text.as_str()).map_err(refusal_of)
            }
            Ok(Some(Ok(Message::Binary(_)))) => {
                return Err(ReadFail::Refuse(
                    RefusalReason::MalformedFrame,
                    "binary frames are not part of the protocol".into(),
                ))
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

fn refusal_of(e: ProtocolError) -> ReadFail {
    match e {
        ProtocolError::UnsupportedVersion(v) => ReadFail::Refuse(
            RefusalReason::UnsupportedVersion,
            format!("protocol version {v} is not spoken here"),
        ),
        ProtocolError::Malformed(m) => ReadFail::Refuse(RefusalReason::MalformedFrame, m),
    }
}

fn close_frame(reason: CloseReason) -> CloseFrame {
    let code = match reason {
        CloseReason::Graceful => CloseCode::Normal,
        CloseReason::ServerShutdown => CloseCode::Away,
        _ => CloseCode::Policy,
    };
    CloseFrame {
        code,
        reason: reason.as_str().into(),
    }
}

/// Sends `refused` and closes; nothing else happens to anything.
async fn refuse_handshake(
    mut ws: Ws,
    ctx: &Ctx,
    peer: &str,
    reason: RefusalReason,
    message: String,
) {
    ctx.metrics.refused(reason, peer);
    let frame = protocol::encode(&ServerMessage::Refused(reason.refusal(message)));
    let bye = async {
        ws.send(Message::text(frame)).await?;
        ws.close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: reason.as_str().into(),
        }))
        .await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
}

async fn handshake(
    stream: TcpStream,
    ctx: &Ctx,
    peer: &str,
) -> Option<(Ws, AuthenticatedDesktop, Nonce)> {
    let deadline = Instant::now() + ctx.config.handshake_timeout;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(ctx.config.max_frame_bytes))
        .max_frame_size(Some(ctx.config.max_frame_bytes));
    let mut ws = match tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config)),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(peer, error = %e, "websocket upgrade failed");
            return None;
        }
        Err(_) => {
            ctx.metrics.refused(RefusalReason::HandshakeTimeout, peer);
            return None;
        }
    };
    let nonce = Nonce::generate();
    let challenge = ServerMessage::Challenge(Challenge {
        nonce: nonce.clone(),
        server_time: ctx.clock.now(),
        audience: ctx.auth.audience().to_owned(),
        versions: SUPPORTED_VERSIONS.to_vec(),
    });
    let sent = tokio::time::timeout_at(
        deadline,
        ws.send(Message::text(protocol::encode(&challenge))),
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return None;
    }
    let hello = match read_message(&mut ws, deadline).await {
        Ok(DesktopMessage::Hello(h)) => h,
        Ok(other) => {
            let m = format!("expected hello, got {}", other.kind());
            refuse_handshake(ws, ctx, peer, RefusalReason::UnexpectedMessage, m).await;
            return None;
        }
        Err(ReadFail::Refuse(r, m)) => {
            refuse_handshake(ws, ctx, peer, r, m).await;
            return None;
        }
        Err(ReadFail::Closed) => return None,
    };
    let auth = match read_message(&mut ws, deadline).await {
        Ok(DesktopMessage::Auth(a)) => a,
        Ok(other) => {
            let m = format!("expected auth, got {}", other.kind());
            refuse_handshake(ws, ctx, peer, RefusalReason::UnexpectedMessage, m).await;
            return None;
        }
        Err(ReadFail::Refuse(r, m)) => {
            refuse_handshake(ws, ctx, peer, r, m).await;
            return None;
        }
        Err(ReadFail::Closed) => return None,
    };
    match tokio::time::timeout_at(deadline, ctx.auth.authenticate(&nonce, &hello, &auth)).await {
        Ok(Ok(desktop)) => Some((ws, desktop, nonce)),
        Ok(Err((reason, message))) => {
            refuse_handshake(ws, ctx, peer, reason, message).await;
            None
        }
        Err(_) => {
            refuse_handshake(
                ws,
                ctx,
                peer,
                RefusalReason::HandshakeTimeout,
                "not authenticated in time".into(),
            )
            .await;
            None
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    permit: OwnedSemaphorePermit,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = peer.to_string();
    let _ = stream.set_nodelay(true);
    ctx.metrics.unauthenticated().inc();
    let authenticated = tokio::select! {
        r = handshake(stream, &ctx, &peer) => r,
        _ = shutdown.changed() => None,
    };
    ctx.metrics.unauthenticated().dec();
    drop(permit);
    let Some((ws, desktop, nonce)) = authenticated else {
        return;
    };
    if *shutdown.borrow() {
        return;
    }
    let expires_at = desktop.certificate.expires_at;
    let (tenant_id, property_id, desktop_device_id, certificate_id) = (
        desktop.tenant_id,
        desktop.property_id.clone(),
        desktop.desktop_device_id.clone(),
        desktop.certificate.id.clone(),
    );
    let renewal = RenewalContext {
        nonce,
        certificate: desktop.certificate.clone(),
    };
    let link = ctx.hub.join(desktop);
    let identity = DesktopIdentity {
        tenant_id,
        property_id,
        desktop_device_id,
        certificate_id,
        session_id: link.session_id.clone(),
    };
    let welcome = ServerMessage::Welcome(Welcome {
        session_id: link.session_id.as_str().to_owned(),
        server_time: ctx.clock.now(),
        heartbeat_interval_ms: millis(ctx.config.heartbeat_interval),
        idle_timeout_ms: millis(ctx.config.idle_timeout),
        max_frame_bytes: ctx.config.max_frame_bytes as u64,
        ack_timeout_ms: millis(ctx.config.ack_timeout),
    });
    // A fresh queue has room: this cannot fail unless the hub closed it already.
    let _ = link.outbound.try_send(protocol::encode(&welcome));
    if renewal.certificate.replaces.is_some() {
        // The first authentication with a renewed certificate retires the one it replaced
        // (rotation); off the session's path, and its sessions (if any) are closed.
        let (ctx, certificate) = (ctx.clone(), renewal.certificate.clone());
        tokio::spawn(async move {
            let now = ctx.clock.now();
            for id in renew::in_use(&ctx.auth, &certificate, now).await {
                ctx.hub.disconnect_certificate(certificate.tenant_id, &id);
            }
        });
    }
    session(ws, link, &ctx, &peer, expires_at, identity, renewal).await;
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn session(
    ws: Ws,
    link: Link,
    ctx: &Arc<Ctx>,
    peer: &str,
    expires_at: Timestamp,
    identity: DesktopIdentity,
    renewal: RenewalContext,
) {
    // One batch reconciled at a time per desktop; the next waits its turn.
    let batches = Arc::new(Semaphore::new(1));
    // One renewal at a time, and at most one granted per session: the desktop reconnects
    // with the new certificate. `true` once granted.
    let renewed = Arc::new(tokio::sync::Mutex::new(false));
    let renewal = Arc::new(renewal);
    let Link {
        key,
        session_id: _,
        outbound,
        outbound_rx,
        control,
        control_rx,
    } = link;
    let (sink, mut stream) = ws.split();
    let writer = tokio::spawn(write_loop(
        sink,
        outbound_rx,
        control_rx.clone(),
        control.clone(),
        ctx.hub.clone(),
        key,
        ctx.config.write_timeout,
    ));
    let mut control_rx = control_rx;
    let hub = &ctx.hub;
    let close = |reason: CloseReason, refused: Option<(RefusalReason, String)>| {
        let refused = refused.map(|(r, m)| {
            ctx.metrics.refused(r, peer);
            r.refusal(m)
        });
        hub.close(key, &control, reason, refused);
    };
    let idle_timeout = ctx.config.idle_timeout;
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let beat = ctx.config.heartbeat_interval;
    let mut ticker = tokio::time::interval_at(Instant::now() + beat, beat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq: u64 = 0;
    let enqueue = |frame: String| -> Result<(), CloseReason> {
        outbound.try_send(frame).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => CloseReason::SlowConsumer,
            tokio::sync::mpsc::error::TrySendError::Closed(_) => CloseReason::ConnectionLost,
        })
    };
    loop {
        tokio::select! {
            _ = control_rx.changed() => break,
            _ = &mut idle => {
                close(CloseReason::HeartbeatTimeout, None);
                break;
            }
            _ = ticker.tick() => {
                if ctx.clock.now() >= expires_at {
                    close(
                        CloseReason::CertificateExpired,
                        Some((RefusalReason::OfflineCertExpired, "the certificate has expired".into())),
                    );
                    break;
                }
                seq += 1;
                if let Err(reason) = enqueue(protocol::encode(&ServerMessage::Ping(Heartbeat { seq }))) {
                    close(reason, None);
                    break;
                }
            }
            frame = stream.next() => {
                let text = match frame {
                    None | Some(Ok(Message::Close(_))) => {
                        let reason = if frame.is_some() { CloseReason::Graceful } else { CloseReason::ConnectionLost };
                        close(reason, None);
                        break;
                    }
                    Some(Err(WsError::Capacity(_))) => {
                        close(
                            CloseReason::ProtocolViolation,
                            Some((RefusalReason::FrameTooLarge, "frame larger than maxFrameBytes".into())),
                        );
                        break;
                    }
                    Some(Err(_)) => {
                        close(CloseReason::ConnectionLost, None);
                        break;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        close(
                            CloseReason::ProtocolViolation,
                            Some((RefusalReason::MalformedFrame, "binary frames are not part of the protocol".into())),
                        );
                        break;
                    }
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => {
                        idle.as_mut().reset(Instant::now() + idle_timeout);
                        continue;
                    }
                };
                idle.as_mut().reset(Instant::now() + idle_timeout);
                let message = match decode_desktop(text.as_str()) {
                    Ok(m) => m,
                    Err(e) => {
                        let ReadFail::Refuse(r, m) = refusal_of(e) else { break };
                        close(CloseReason::ProtocolViolation, Some((r, m)));
                        break;
                    }
                };
                let answered = match message {
                    DesktopMessage::Ping(h) => enqueue(protocol::encode(&ServerMessage::Pong(h))),
                    DesktopMessage::Pong(_) => Ok(()),
                    DesktopMessage::JobAck(a) => {
                        hub.on_ack(key, &a.job_id);
                        Ok(())
                    }
                    DesktopMessage::JobResult(r) => {
                        if let Err(m) = check_result(&r) {
                            close(CloseReason::ProtocolViolation, Some((RefusalReason::MalformedFrame, m)));
                            break;
                        }
                        hub.on_result(key, r);
                        Ok(())
                    }
                    DesktopMessage::ProvisionalBatch(b) => {
                        if b.items.is_empty() || b.items.len() > 100 {
                            close(
                                CloseReason::ProtocolViolation,
                                Some((RefusalReason::MalformedFrame, "1 to 100 items per batch".into())),
                            );
                            break;
                        }
                        // Reconciled off the read loop (heartbeats and job results keep
                        // flowing); the answer joins the desktop's queue like any frame.
                        let (reconciler, identity, outbound, control, hub, gate) = (
                            ctx.reconciler.clone(),
                            identity.clone(),
                            outbound.clone(),
                            control.clone(),
                            hub.clone(),
                            batches.clone(),
                        );
                        tokio::spawn(async move {
                            let Ok(_turn) = gate.acquire_owned().await else { return };
                            let items = reconciler.reconcile(&identity, &b).await;
                            let result = SyncResult { batch_id: b.batch_id, items };
                            let frame = protocol::encode(&ServerMessage::SyncResult(result));
                            if let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) = outbound.try_send(frame) {
                                hub.close(key, &control, CloseReason::SlowConsumer, None);
                            }
                        });
                        Ok(())
                    }
                    DesktopMessage::RenewCertificate(r) => {
                        // Answered off the read loop like a batch: the host writes a
                        // certificate, and heartbeats keep flowing meanwhile.
                        let (ctx, renewal, renewed, outbound, control, hub, desktop) = (
                            ctx.clone(),
                            renewal.clone(),
                            renewed.clone(),
                            outbound.clone(),
                            control.clone(),
                            hub.clone(),
                            identity.desktop_device_id.clone(),
                        );
                        tokio::spawn(async move {
                            let mut granted = renewed.lock().await;
                            let outcome = if *granted {
                                Err(renew::already_renewed(&renewal, &r))
                            } else {
                                renew::answer(&ctx.auth, &renewal, &r).await
                            };
                            *granted |= outcome.is_ok();
                            let label = match &outcome {
                                Ok(_) => "renewed",
                                Err(refused) => refused.reason.as_str(),
                            };
                            ctx.metrics.renewal(renewal.certificate.id.as_str(), &desktop, label);
                            let frame = protocol::encode(&renew::frame(&outcome));
                            if let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) = outbound.try_send(frame) {
                                hub.close(key, &control, CloseReason::SlowConsumer, None);
                            }
                        });
                        Ok(())
                    }
                    DesktopMessage::Hello(_) | DesktopMessage::Auth(_) => {
                        close(
                            CloseReason::ProtocolViolation,
                            Some((RefusalReason::UnexpectedMessage, "already authenticated".into())),
                        );
                        break;
                    }
                };
                if let Err(reason) = answered {
                    close(reason, None);
                    break;
                }
            }
        }
    }
    // The writer sends the refusal (if any) and the close frame, then ends.
    let _ = tokio::time::timeout(Duration::from_secs(3), writer).await;
}

fn check_result(r: &JobResult) -> Result<(), String> {
    match r.outcome {
        JobOutcomeKind::Encoded if r.card_number.is_none() || r.failure.is_some() => {
            Err("an encoded result carries a cardNumber and no failure".into())
        }
        JobOutcomeKind::Failed if r.failure.is_none() || r.card_number.is_some() => {
            Err("a failed result carries a failure and no cardNumber".into())
        }
        _ if r.detail.as_ref().is_some_and(|d| d.len() > 256) => {
            Err("detail: at most 256 characters".into())
        }
        _ => Ok(()),
    }
}

async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut rx: tokio::sync::mpsc::Receiver<String>,
    mut control_rx: watch::Receiver<Option<CloseCommand>>,
    control: Arc<watch::Sender<Option<CloseCommand>>>,
    hub: Hub,
    key: u64,
    write_timeout: Duration,
) {
    loop {
        tokio::select! {
            biased;
            _ = control_rx.changed() => break,
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                tokio::select! {
                    biased;
                    _ = control_rx.changed() => break,
                    sent = tokio::time::timeout(write_timeout, sink.send(Message::text(frame))) => match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => {
                            hub.close(key, &control, CloseReason::ConnectionLost, None);
                            break;
                        }
                        Err(_) => {
                            hub.close(key, &control, CloseReason::SlowConsumer, None);
                            break;
                        }
                    }
                }
            }
        }
    }
    let command = control_rx.borrow().clone();
    let farewell = async {
        if let Some(CloseCommand { reason, refused }) = command {
            if let Some(refused) = refused {
                let refused: Refused = refused;
                sink.send(Message::text(protocol::encode(&ServerMessage::Refused(
                    refused,
                ))))
                .await?;
            }
            sink.send(Message::Close(Some(close_frame(reason)))).await?;
        }
        sink.close().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), farewell).await;
}
