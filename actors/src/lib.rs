//! lockstep-actors
