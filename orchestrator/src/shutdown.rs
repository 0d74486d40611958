//! Draining on SIGTERM (DESIGN §4): stop intake, let running saga steps finish or park
//! their vendor calls, publish the outbox, close the broker connection, and exit within a
//! bound. The signal handler calls [`Shutdown::begin`]; each part of the node watches it
//! and reports back when it is done.

use std::time::Duration;

use tokio::sync::watch;

/// The node's shutdown state, shared by the HTTP handlers and the bus.
#[derive(Debug)]
pub struct Shutdown {
    begun: watch::Sender<bool>,
    bus_closed: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// Nothing begun.
    pub fn new() -> Self {
        Self {
            begun: watch::channel(false).0,
            bus_closed: watch::channel(false).0,
        }
    }

    /// Starts draining (idempotent).
    pub fn begin(&self) {
        self.begun.send_replace(true);
    }

    /// Whether draining has begun (readiness answers 503 from then on).
    pub fn is_begun(&self) -> bool {
        *self.begun.borrow()
    }

    /// A receiver that sees `true` once draining begins.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.begun.subscribe()
    }

    /// The bus has stopped intake, flushed what it could and closed its connection.
    pub fn bus_closed(&self) {
        self.bus_closed.send_replace(true);
    }

    /// Waits until the bus reported closed, or `limit`; whether it did.
    pub async fn wait_bus_closed(&self, limit: Duration) -> bool {
        let mut rx = self.bus_closed.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|closed| *closed))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Resolves once `rx` sees draining begun (never, if the sender is gone without it).
pub async fn begun(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|b| *b).await.is_err() {
        std::future::pending::<()>().await;
    }
}
