//! The desktop relay (DESIGN §8): the WebSocket server that front-desk desktops connect to
//! (authenticated by an Ed25519 signature over a server nonce), the CloudProxy side of the
//! `generic-wiegand` adapter, the desktop agent library and its protocol, and the
//! reconciliation of provisional credentials minted offline.
//!
//! Not built yet: it lands with the relay issue. The crate exists so the workspace has the
//! shape of DESIGN §1 and nothing else claims its place.
//!
//! Architecture Invariant: `relay` depends only on `domain`; it knows no storage, no broker
//! and no HTTP route of the orchestrator.
