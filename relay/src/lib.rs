//! lockstep-relay
