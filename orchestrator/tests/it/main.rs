//! Integration tests of the `lockstep` binary, driven the way its users drive it: events
//! on RabbitMQ or over HTTP, reads over the API, the vendor's state at its simulator.
//! Real PostgreSQL and RabbitMQ (started by `scripts/services`), one database and one
//! vhost per test.

mod anomalies;
mod contract;
mod desk;
mod desk_outage;
mod devices;
mod embedded;
mod events_table;
mod expired;
mod foul_weather;
mod harness;
mod http_intake;
mod leak;
mod master_areas;
mod newuser;
mod observability;
mod openapi;
mod operator_tools;
mod production;
mod reconcile;
mod reconcile_desk;
mod refusals;
mod security;
mod webhooks;
mod writes;
