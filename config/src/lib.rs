//! lockstep-config
