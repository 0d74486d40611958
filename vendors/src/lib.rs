//! lockstep-vendors
