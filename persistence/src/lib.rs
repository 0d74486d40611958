//! lockstep-persistence
