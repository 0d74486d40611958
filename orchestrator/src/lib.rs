//! The `lockstep` binary's library: CLI, wiring, REST API, the event contract, the
//! RabbitMQ and in-process buses, intake and the outbox publisher.
//!
//! Architecture Invariant: this is the only crate that knows HTTP routes and AMQP; it
//! talks to the saga only through `Wake` messages and the store.

pub mod admin;
pub mod agent;
pub mod anomalies;
pub mod app;
pub mod auth;
pub mod bus;
pub mod commands;
pub mod desk;
pub mod dlq;
pub mod http;
pub mod intake;
pub mod integrations;
pub mod json;
pub mod openapi;
pub mod reconcile;
pub mod schema;
pub mod seed;
pub mod shutdown;
pub mod status;
pub mod upkeep;
pub mod webhooks;
pub mod writes;
