//! Actor-level tests: the real actor tree, store (SQLite) and TTLock simulator in one
//! process, with faults injected at the vendor edge.

mod breaker;
mod choice;
mod contract;
mod fallback;
mod master_scopes;
mod model;
mod outage;
mod reissue;
mod rig;
mod saga;
mod supervision;
