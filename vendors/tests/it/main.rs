//! Integration tests of `lockstep-vendors`: one binary (STYLE: one per crate).

mod support;
mod vostio;
mod salto;
mod kisi;
mod brivo;
mod ttlock_adapter;
mod ttlock_docs_examples;
mod ttlock_simulator;
