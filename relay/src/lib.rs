//! The desktop relay (DESIGN §8): the WebSocket server that front-desk desktops connect to
//! (authenticated by an Ed25519 signature over a single-use server nonce with the key their
//! offline-issuance certificate binds), the hub that dispatches encode jobs to their card
//! encoders, the versioned message protocol both sides speak, the reference desktop
//! agent, and the provisional credentials a desk mints while cut off (`mint`). The protocol is documented in `docs/relay/`.
//!
//! Everything the relay needs from its host comes through small traits the host
//! implements: [`CertificateDirectory`] (certificate lookup and renewal), [`SessionEvents`] (session
//! persistence and events) and the [`Clock`](lockstep_domain::Clock); encode results are the
//! return value of [`Hub::dispatch`]. In-memory implementations serve tests.
//!
//! Architecture Invariant: `relay` depends only on `domain`; it knows no storage, no broker
//! and no HTTP route of the orchestrator.

pub mod agent;
pub mod auth;
mod config;
mod error;
pub mod events;
pub mod hub;
mod metrics;
pub mod mint;
pub mod protocol;
pub mod reconcile;
mod renew;
mod server;

pub use auth::{
    CertificateDirectory, DirectoryError, IssuedCertificate, MemoryCertificateDirectory,
    RenewedCertificate,
};
pub use config::RelayConfig;
pub use error::RelayError;
pub use events::{
    ChannelSessionEvents, CloseReason, OpenEncoder, RecordedSessionEvents, SessionClosed,
    SessionEvent, SessionEvents, SessionOpened,
};
pub use hub::{
    DesktopSummary, DispatchJournal, DoorRef, EncodeRequest, EncodedCard, FailedJob, Hub,
    JobOutcome,
};
pub use reconcile::{DeferAll, DesktopIdentity, Reconciler};
pub use server::{RelayDeps, RelayServer};
