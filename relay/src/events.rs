//! Session events (spec `002` `lock.encoder_session.{opened,closed}.v1`, spec `004`
//! `encoder_sessions`): the relay reports, the host persists and publishes. E-1: a session
//! is reported closed as soon as its connection is found gone (a killed desktop's socket
//! closes at once; a silent one after the idle timeout).

use std::sync::Mutex;

use lockstep_domain::{EncoderSessionId, OfflineIssuanceId, PropertyId, TenantId, Timestamp};
use tokio::sync::mpsc;

use crate::protocol::EncoderInfo;

/// One encoder of a session, with the `encoder_sessions` row id the host writes for it
/// (spec `003` §5: one `EncoderSession` per desktop and encoder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenEncoder {
    /// The row id (`enc_`).
    pub session_id: EncoderSessionId,
    /// The encoder as the desktop described it.
    pub encoder: EncoderInfo,
}

/// A desktop authenticated and its session opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOpened {
    /// The connection's session (`enc_`; the one `welcome` names).
    pub session_id: EncoderSessionId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// The desktop.
    pub desktop_device_id: String,
    /// The certificate it authenticated with.
    pub certificate_id: OfflineIssuanceId,
    /// Its agent's version.
    pub agent_version: String,
    /// Its encoders.
    pub encoders: Vec<OpenEncoder>,
    /// When, by the relay's clock.
    pub at: Timestamp,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The desktop closed the WebSocket cleanly (the app quit or the agent stopped).
    Graceful,
    /// The connection dropped without a close (process killed, network gone).
    ConnectionLost,
    /// Nothing heard from the desktop within the idle timeout.
    HeartbeatTimeout,
    /// The desktop did not read: its outbound queue filled or a write timed out.
    SlowConsumer,
    /// The desktop did not acknowledge a job within the ack timeout.
    AckTimeout,
    /// The desktop broke the protocol (malformed or oversized frame, wrong message).
    ProtocolViolation,
    /// Its certificate was revoked while connected.
    CertificateRevoked,
    /// Its certificate expired while connected.
    CertificateExpired,
    /// The same desktop connected again; the older connection is closed.
    Superseded,
    /// The relay is shutting down.
    ServerShutdown,
}

impl CloseReason {
    /// Metric label and log field.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Graceful => "graceful",
            Self::ConnectionLost => "connection_lost",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::SlowConsumer => "slow_consumer",
            Self::AckTimeout => "ack_timeout",
            Self::ProtocolViolation => "protocol_violation",
            Self::CertificateRevoked => "certificate_revoked",
            Self::CertificateExpired => "certificate_expired",
            Self::Superseded => "superseded",
            Self::ServerShutdown => "server_shutdown",
        }
    }

    /// The spec's `EncoderSession.closeReason` (`graceful`, `usb_disconnect`, `app_quit`,
    /// `error`). The relay never sees a USB disconnect: the desktop reports that itself.
    pub fn spec_reason(&self) -> &'static str {
        match self {
            Self::Graceful => "app_quit",
            Self::ServerShutdown | Self::Superseded => "graceful",
            _ => "error",
        }
    }
}

/// A session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionClosed {
    /// The connection's session.
    pub session_id: EncoderSessionId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// The desktop.
    pub desktop_device_id: String,
    /// Its encoders (the rows to close).
    pub encoders: Vec<OpenEncoder>,
    /// Why.
    pub reason: CloseReason,
    /// When, by the relay's clock.
    pub at: Timestamp,
}

/// A session event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// Opened.
    Opened(SessionOpened),
    /// Closed.
    Closed(SessionClosed),
}

/// Where the relay reports session events. Called on the relay's tasks: it must not block
/// (hand the event to a channel or a task). Each session is reported opened once and
/// closed once, in that order.
pub trait SessionEvents: Send + Sync + 'static {
    /// One event.
    fn publish(&self, event: SessionEvent);
}

/// Session events into an unbounded channel (two events per connection, so the channel
/// grows only as fast as desktops connect).
#[derive(Debug)]
pub struct ChannelSessionEvents {
    tx: mpsc::UnboundedSender<SessionEvent>,
}

impl ChannelSessionEvents {
    /// The sink and the receiver the host reads from.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<SessionEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }
}

impl SessionEvents for ChannelSessionEvents {
    fn publish(&self, event: SessionEvent) {
        // A host that dropped its receiver no longer wants events.
        let _ = self.tx.send(event);
    }
}

/// Session events kept in memory (tests, the embedded demo).
#[derive(Debug, Default)]
pub struct RecordedSessionEvents {
    events: Mutex<Vec<SessionEvent>>,
}

impl RecordedSessionEvents {
    /// Every event so far, in order.
    pub fn all(&self) -> Vec<SessionEvent> {
        self.events
            .lock()
            .expect("session event log mutex is never poisoned")
            .clone()
    }
}

impl SessionEvents for RecordedSessionEvents {
    fn publish(&self, event: SessionEvent) {
        self.events
            .lock()
            .expect("session event log mutex is never poisoned")
            .push(event);
    }
}
