//! Lockstep's runtime on actix actors (DESIGN §2): the actor tree that executes the saga,
//! the saga step executor, and the wire formats of consumed and produced events.
//!
//! Architecture Invariant: actors hold no state that is not in the store; every state
//! change goes through `Store::commit` in one transaction. This crate knows no HTTP route
//! and no broker: the orchestrator feeds it `Wake`s.

pub mod actors;
pub mod breaker;
pub mod db;
pub mod desk;
pub mod drift;
pub mod events_in;
pub mod events_out;
pub mod metrics;
pub mod runtime;
pub mod saga_codec;
pub mod step;
pub mod vendor;

pub use actors::{LiveActors, ReleasePartition, Router, Wake};
pub use metrics::Metrics;
pub use runtime::{
    Failpoints, FenceBook, Runtime, SagaSettings, StepGate, StepPermit, WorkGate, WorkGuard,
};
pub use vendor::{
    AdapterHealth, AdapterInfo, LastError, PortRegistry, RateLimit, StoreLimiter, VendorDeps,
    VendorOp, VendorReply, WorkerSettings,
};
