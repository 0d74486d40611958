//! Chaos scenarios for Lockstep (DESIGN §11): the real `lockstep` binary in production mode,
//! on a Postgres cluster and a RabbitMQ node of the scenario's own, facing the faults a
//! hotel chain meets, and judged afterwards by the door invariants (issue 10): every
//! confirmed stay holds exactly one working credential of the kind it should, every
//! cancelled stay none, no duplicate at the vendor, no credential stuck, nothing in the DLQ
//! that should have been applied. Each scenario prints its figures (events, lost,
//! duplicated, stale, stuck, recovery time, stale-key window p50/p99 from the simulators'
//! own journals).
//!
//! The pieces, each in its module: [`pg`] (own Postgres cluster), [`rabbit`] (own RabbitMQ
//! node), [`proxy`] (TCP fault proxy: cut, reset, heal), [`node`] (a Lockstep node: config,
//! spawn, kill, SIGTERM, metrics), [`vendors`] (the five simulators behind one handle),
//! [`world`] (the reservation system: publisher and model of every stay), [`check`]
//! (invariants and figures), [`rig`] (all of it set up for one scenario), [`scenarios`].
//! The `lockstep-chaos` binary runs the scenarios from the command line; the
//! `lockstep-bench` binary runs [`bench`], the benchmark, on the same pieces; the
//! `lockstep-relay-bench` binary runs [`bench::relay`] beside [`bench::echo`].
//!
//! For development only; benchmarks print figures, never timed assertions in tests.
//!
//! Architecture Invariant: no product crate depends on `chaos`; it talks to Lockstep only
//! the way users and operators do (processes, config files, RabbitMQ, HTTP), and depends on
//! `lockstep-vendors` for the simulators alone. One exception: the relay benchmark links
//! `lockstep-relay` and runs its server and reference agents in-process (the relay is a
//! library the `lockstep` binary embeds; the benchmark uses only its public API).

// Chaos runs measure real processes on the wall clock (deadlines, outage lengths, exit and
// recovery times); none of it is business time, so the Clock port does not apply here.
#![allow(clippy::disallowed_methods)]
#![warn(missing_docs)]

pub mod bench;
pub mod check;
pub mod node;
pub mod pg;
pub mod proxy;
pub mod rabbit;
pub mod rig;
pub mod scenarios;
pub mod util;
pub mod vendors;
pub mod world;
