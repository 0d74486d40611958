//! lockstep-chaos
