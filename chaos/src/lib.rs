//! Chaos scenarios, load generators and benchmarks (DESIGN §11), for development only.
//! Benchmarks print their figures as ratios to the machine's own limits measured in the
//! same run, never as timed assertions in tests.
//!
//! Not built yet: the invariants chaos runs would check (nothing lost, nothing duplicated at
//! the vendor, no overlapping active credential, every revocation landed) are checked today
//! by the orchestrator's SIGKILL test and the actors' model-based test.
//!
//! Architecture Invariant: no product crate depends on `chaos`.
