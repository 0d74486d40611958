//! Integration tests of `lockstep-vendors`: one binary (STYLE: one per crate).

mod support;
mod ttlock_adapter;
mod ttlock_docs_examples;
mod ttlock_simulator;
