//! The relay's settings, validated once at start.

use std::time::Duration;

use crate::RelayError;

/// Everything the relay server and its hub can be tuned with. Defaults are production
/// values; tests shorten the timeouts.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The server's name (audience) desktops sign for: a signature made for one relay is
    /// refused by any other.
    pub audience: String,
    /// Lockstep's offline-issuance public key (`[offline] signing_key`'s public half).
    /// When set, a certificate is accepted only if its signature verifies (the host's stored
    /// signature, else the one the desktop presents in `hello`).
    pub issuer_key: Option<ed25519_dalek::VerifyingKey>,
    /// Tolerated difference between the desktop's stated time (`auth.signedAt`) and ours.
    pub clock_skew: Duration,
    /// A connection must be authenticated within this, WebSocket upgrade included.
    pub handshake_timeout: Duration,
    /// At most this many connections may be between accept and authentication; more are
    /// dropped at once, so a flood cannot exhaust the server.
    pub max_unauthenticated: usize,
    /// Largest frame (and message) accepted from a desktop.
    pub max_frame_bytes: usize,
    /// Frames other than jobs (heartbeats, answers) that may wait to be written to one
    /// desktop, on top of its job slots; a desktop that lets its queue fill is disconnected
    /// (back-pressure never reaches the dispatcher or another desktop).
    pub outbound_queue: usize,
    /// Jobs one desktop may hold unanswered; more wait in the dispatcher for a free slot
    /// on any desktop of the property (at most the result timeout).
    pub max_jobs_per_desktop: usize,
    /// Longest time one frame may take to be written before the desktop is disconnected.
    pub write_timeout: Duration,
    /// The server pings every desktop this often.
    pub heartbeat_interval: Duration,
    /// A desktop silent for this long is disconnected.
    pub idle_timeout: Duration,
    /// A job not acknowledged within this goes to another desktop (spec `003` §6
    /// `desktopAckTimeoutMs`, 8 s).
    pub ack_timeout: Duration,
    /// An acknowledged job must have its result within this.
    pub result_timeout: Duration,
    /// When a desktop drops after acknowledging a job, the job waits this long for that
    /// desktop to come back (and answer from its record of encoded jobs) before it is
    /// given to another desktop.
    pub reconnect_grace: Duration,
    /// On shutdown, how long connections get to close before they are cut.
    pub shutdown_grace: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            audience: "lockstep-relay".into(),
            issuer_key: None,
            clock_skew: Duration::from_secs(5 * 60),
            handshake_timeout: Duration::from_secs(10),
            max_unauthenticated: 256,
            max_frame_bytes: 64 * 1024,
            outbound_queue: 64,
            max_jobs_per_desktop: 16,
            write_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            ack_timeout: Duration::from_secs(8),
            result_timeout: Duration::from_secs(120),
            reconnect_grace: Duration::from_secs(3),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl RelayConfig {
    /// Checks the values against each other; a bad one is named with the reason.
    pub fn validate(&self) -> Result<(), RelayError> {
        let bad = |field: &'static str, reason: &str| {
            Err(RelayError::Config {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.audience.is_empty()
            || self.audience.len() > 128
            || self.audience.chars().any(|c| c.is_control())
        {
            return bad("audience", "1 to 128 characters, no control characters");
        }
        if self.max_unauthenticated == 0 {
            return bad("max_unauthenticated", "must be at least 1");
        }
        if self.max_frame_bytes < 1024 {
            return bad("max_frame_bytes", "must be at least 1024");
        }
        if self.outbound_queue == 0 {
            return bad("outbound_queue", "must be at least 1");
        }
        if self.max_jobs_per_desktop == 0 {
            return bad("max_jobs_per_desktop", "must be at least 1");
        }
        for (field, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("write_timeout", self.write_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("idle_timeout", self.idle_timeout),
            ("ack_timeout", self.ack_timeout),
            ("result_timeout", self.result_timeout),
        ] {
            if d.is_zero() {
                return bad(field, "must be more than zero");
            }
        }
        if self.idle_timeout <= self.heartbeat_interval {
            return bad(
                "idle_timeout",
                "must be longer than heartbeat_interval, or every desktop is cut between pings",
            );
        }
        Ok(())
    }
}
