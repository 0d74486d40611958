//! Integration tests of `lockstep-vendors`: one binary (STYLE: one per crate).

mod brivo;
mod contract;
mod kisi;
mod rotation;
mod salto;
mod support;
mod ttlock_access;
mod ttlock_adapter;
mod ttlock_docs_examples;
mod ttlock_simulator;
mod vostio;
mod wiegand;
