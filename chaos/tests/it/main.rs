//! The chaos crate's integration tests: its infrastructure (own Postgres, own RabbitMQ node,
//! fault proxy, the simulators' door journals) and one test per scenario on the short
//! profile. They need PostgreSQL and RabbitMQ installed (`scripts/services`) and root (the
//! cluster and node run as their service users); `.config/nextest.toml` runs them one at a
//! time.
//!
//! Deadlines here are wall-clock on purpose: they bound real processes.
#![allow(clippy::disallowed_methods)]

mod infra;
mod vendors;
