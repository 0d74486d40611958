//! lockstep-orchestrator
