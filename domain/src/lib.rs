//! Lockstep's pure domain: ids, the `KeyCredential` aggregate and its state machine,
//! invariants of spec `003`, domain events, domain errors with their canonical codes, the
//! `Clock` port, the saga decisions (saga state + event → commands) for reservations and
//! shifts and the subjects they are keyed by, the `KeyKindPolicy`, master-key scopes,
//! adapter capabilities, device health signals, the circuit breaker's state machine, the
//! door-sync plan (which door a credential's drive works next, and how), the device diff
//! of an update (which doors a key gains, keeps and loses), the operator commands' rules
//! (which state takes which command, K-2, what a replace creates), the outcomes a step
//! records, and the door anomaly rules.
//!
//! Architecture Invariant: this crate does no I/O, has no async, names no vendor wire
//! format, and depends on no framework (no serde, sqlx, actix, reqwest). Every other crate
//! may depend on it; it depends on none of them.

pub mod anomaly;
pub mod attempt;
pub mod breaker;
pub mod capabilities;
pub mod clock;
pub mod credential;
pub mod device;
pub mod device_diff;
pub mod door_sync;
pub mod errors;
pub mod events;
pub mod ids;
pub mod master;
pub mod offline;
pub mod operator;
pub mod outcome;
pub mod pin;
pub mod policy;
pub mod saga;
pub mod secret;
pub mod shift;
pub mod subject;
pub mod validity;

pub use anomaly::{
    check_attempt, Anomaly, AnomalyDetail, AnomalyDetector, AnomalyRule, AnomalyRules,
    AnomalyRulesInput, AttemptContext, CredentialStatus, RuleInput, WindowLimits,
};
pub use attempt::{
    AttemptDenyReason, AttemptOutcome, AttemptReport, KeyCredentialAttempt,
    CLOCK_SKEW_TOLERANCE_MINUTES,
};
pub use breaker::{
    Admission, Breaker, BreakerPolicy, CircuitState, HealthSnapshot, Outcome,
    Transition as CircuitTransition,
};
pub use capabilities::LockCapabilities;
pub use clock::{Clock, ManualClock, ScaledClock, SystemClock, Timestamp};
pub use credential::{
    FailureReason, HolderKind, IssueIntent, KeyCredential, KeyCredentialKind, KeyCredentialScope,
    KeyCredentialState, RevokeReason, ScopedRoom, SuspendReason, Transition, UpdateInput,
    VendorCode,
};
pub use device::{
    assess, assess_probe_failure, BatteryThreshold, DeviceHealth, DeviceSignal, SkewLevel,
    PROBE_FAILURES_ALERT,
};
pub use errors::DomainError;
pub use events::{DomainEvent, DomainEventKind};
pub use ids::*;
pub use master::{
    check_single_active_master, resolve_scope, CommonArea, LayoutRoom, MasterKey, MasterScope,
    MasterScopeKind, PropertyLayout, ResolvedScope, ScopeRefusal,
};
pub use offline::{OfflineIssuance, OfflineRevokeReason, RenewalRefusal, Unvouched};
pub use operator::{CredentialFacts, OperatorCommand};
pub use outcome::StepOutcome;
pub use pin::Pin;
pub use policy::{KeyKindPolicy, KeyKindPolicyInput};
pub use secret::{DeviceRef, VendorRef};
pub use subject::SagaSubject;
pub use validity::ValidityWindow;
