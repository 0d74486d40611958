//! Lockstep's pure domain: ids, the `KeyCredential` aggregate and its state machine,
//! invariants of spec `003`, domain events, domain errors with their canonical codes, the
//! `Clock` port, and the saga decisions (saga state + event → commands).
//!
//! Architecture Invariant: this crate does no I/O, has no async, names no vendor wire
//! format, and depends on no framework (no serde, sqlx, actix, reqwest). Every other crate
//! may depend on it; it depends on none of them.

pub mod clock;
pub mod credential;
pub mod errors;
pub mod events;
pub mod ids;
pub mod pin;
pub mod saga;
pub mod secret;
pub mod validity;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use credential::{
    FailureReason, HolderKind, IssueIntent, KeyCredential, KeyCredentialKind, KeyCredentialScope,
    KeyCredentialState, RevokeReason, ScopedRoom, SuspendReason, Transition, UpdateInput,
    VendorCode,
};
pub use errors::DomainError;
pub use events::{DomainEvent, DomainEventKind};
pub use ids::*;
pub use pin::Pin;
pub use secret::{DeviceRef, VendorRef};
pub use validity::ValidityWindow;
