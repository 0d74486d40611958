//! Lockstep's vendor edge: the [`LockPort`] the sagas call to put credentials on doors and
//! take them off again, one adapter per lock vendor speaking that vendor's real HTTP API,
//! and, beside each adapter, a simulator that speaks the same API with fault injection so
//! the adapter (and the whole system) can be tested without the vendor (DESIGN §6).
//!
//! Every vendor error is mapped here, inside the adapter, onto [`VendorError`]; no
//! `reqwest`, `serde_json` or vendor type crosses this crate's boundary, and no error,
//! log line or `Debug` output carries a PIN, a token, a client secret or a `vendorRef`.
//!
//! Architecture Invariant: this crate depends only on `lockstep-domain` among Lockstep's
//! crates. It must never depend on persistence, actors, the orchestrator or config: those
//! depend on it, and an adapter knows nothing of sagas, stores or breakers (the breaker
//! only reads [`VendorError::is_vendor_unwell`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use lockstep_domain::{
    DeviceRef, DomainError, KeyCredentialKind, Pin, ValidityWindow, VendorCode, VendorRef,
};
use thiserror::Error;

pub mod brivo;
pub mod http_kit;
pub mod kisi;
pub mod rate;
pub mod salto;
pub mod secrets;
#[cfg(feature = "sim")]
pub mod sim_kit;
#[cfg(feature = "sim")]
pub mod sim_server;
pub mod ttlock;
pub mod vostio;
pub mod webhook;
pub mod wiegand;

pub use ttlock::{TtlockAdapter, TtlockConfig};
pub use wiegand::{EncoderDispatch, GenericWiegandAdapter, WiegandConfig};

/// What an adapter can do (spec `003` §2), owned by the domain (the sagas filter kinds
/// with it, I-6).
pub use lockstep_domain::LockCapabilities;

/// One credential to create on one device.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// The lock.
    pub device: DeviceRef,
    /// What kind of credential.
    pub kind: KeyCredentialKind,
    /// Our stable name for the object at the vendor: the credential id plus device, e.g.
    /// "key_01H...". Used to find it again (reconcile before retry).
    pub label: String,
    /// The digits, `Some` for `pin_code`.
    pub pin: Option<Pin>,
    /// The number of the card the desk reader read, for an `rfid_card` a vendor registers
    /// by number (TTLock's IC cards); `None` otherwise.
    pub card_number: Option<CardNumber>,
    /// When the credential opens the door.
    pub validity: ValidityWindow,
}

impl IssueRequest {
    /// The PIN of a `pin_code` request; a request without one is refused `missing_pin`.
    pub fn required_pin(&self) -> Result<&Pin, VendorError> {
        self.pin.as_ref().ok_or_else(|| VendorError::Refused {
            code: "missing_pin".into(),
            detail: "a pin_code request carries no pin".into(),
        })
    }
}

/// A card's number as a reader reads it. `Debug` is redacted: a card number opens a door
/// as surely as a PIN while the card is valid.
#[derive(Clone, PartialEq, Eq)]
pub struct CardNumber(String);

impl CardNumber {
    /// Digits only, 1 to 20 of them (what desk readers print for ISO 14443 UIDs).
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let s = s.trim();
        if (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(DomainError::validation(
                "cardNumber",
                "a card number is 1 to 20 digits",
            ))
        }
    }

    /// The digits, for the vendor request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardNumber(<redacted>)")
    }
}

/// How a door was operated, as a vendor's records say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoorMethod {
    /// A mobile key (app over bluetooth or NFC).
    MobileApp,
    /// A PIN on the keypad.
    PinCode,
    /// A card.
    Card,
    /// Opened remotely (gateway, hub, cloud).
    Remote,
    /// Anything else (fingerprint, mechanical key, ...).
    Other,
}

/// One door operation a vendor recorded (the feed of `key_credential_attempts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoorEvent {
    /// The vendor's id of the record, unique per device (dedupe key).
    pub event_id: String,
    /// When the lock says it happened.
    pub at: DateTime<Utc>,
    /// How.
    pub method: DoorMethod,
    /// Whether the door opened.
    pub granted: bool,
    /// The label of the credential used, when it is one Lockstep created (the vendor's
    /// record names it); never a PIN or card number.
    pub label: Option<String>,
}

/// One object the vendor holds on a device.
#[derive(Clone, Debug)]
pub struct VendorEntry {
    /// The vendor's reference (redacted in `Debug`).
    pub vendor_ref: VendorRef,
    /// The name it carries at the vendor (our label, for objects we created).
    pub label: String,
    /// Start of validity.
    pub valid_from: DateTime<Utc>,
    /// End of validity (`DateTime::<Utc>::MAX_UTC` for a permanent object).
    pub valid_until: DateTime<Utc>,
}

/// One of the lists a vendor keeps of a device (drift reconciliation): the kinds of
/// credential it holds and what it answered. A vendor that keeps one list of everything
/// answers one listing for every kind; TTLock keeps three (passcodes, eKeys, cards), so a
/// failing one says nothing about the others' kinds.
#[derive(Clone, Debug)]
pub struct Listing {
    /// The kinds this list holds; empty: every kind.
    pub kinds: Vec<KeyCredentialKind>,
    /// What it held, or why it could not be read.
    pub entries: Result<Vec<VendorEntry>, VendorError>,
}

impl Listing {
    /// Whether this list holds credentials of `kind`.
    pub fn holds(&self, kind: KeyCredentialKind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }
}

/// What a vendor reports about one device (spec `003` §2): the health probe's reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceProbe {
    /// Whether the vendor can reach the lock now (through its gateway, hub or controller).
    pub online: bool,
    /// Battery charge in percent, as the vendor reports it (`None`: mains-powered or not
    /// reported). Values outside 0..=100 are passed through: the domain refuses them (D-4).
    pub battery_percent: Option<i32>,
    /// Firmware version, when reported.
    pub firmware: Option<String>,
    /// The lock's own clock when it was read, if the vendor can read it (clock skew).
    pub device_time: Option<DateTime<Utc>>,
}

/// The port the sagas use to reach a lock vendor (DESIGN §6).
#[async_trait::async_trait]
pub trait LockPort: Send + Sync + std::fmt::Debug {
    /// Which vendor this adapter speaks to.
    fn vendor(&self) -> VendorCode;
    /// What it can do.
    fn capabilities(&self) -> LockCapabilities;
    /// The vendor account this adapter calls as, as a key naming no secret (a secret-valued
    /// identity appears only as its fingerprint): adapters on one account share one rate
    /// limit, whichever property or node they serve (DESIGN §6).
    fn account(&self) -> String;
    /// Where every request of this adapter takes the account's rate limit.
    fn rate_gate(&self) -> &rate::RateGate;
    /// The request rate per minute the vendor documents for an account, if it publishes one.
    fn default_rate_per_minute(&self) -> Option<u32>;
    /// Checks the form of a device reference without calling the vendor: each vendor names
    /// its locks its own way (TTLock an integer `lockId`, Kisi `"<group_id>:<lock_id>"`).
    /// A ref this adapter could never use is `Refused { code: "invalid_device" }`, so it is
    /// refused where it is entered (device registration answers 422) rather than found at
    /// a vendor call (issue 14). Adapters whose refs are free-form keep the default.
    fn check_device(&self, _device: &DeviceRef) -> Result<(), VendorError> {
        Ok(())
    }
    /// Creates the credential. Not idempotent at TTLock: callers reconcile first with `find`.
    async fn issue(&self, req: &IssueRequest) -> Result<VendorRef, VendorError>;
    /// Finds an object we created earlier by its label (and, for PINs, its digits).
    /// `Ok(None)` when absent.
    async fn find(&self, req: &IssueRequest) -> Result<Option<VendorRef>, VendorError>;
    /// Changes the validity window of an object created by `issue` (same device, same vendorRef).
    /// The PIN/credential itself is unchanged. Changing something already gone is `Err(NotFound)`.
    async fn update(&self, req: &IssueRequest, vendor_ref: &VendorRef) -> Result<(), VendorError>;
    /// Deletes it. Deleting something already gone is `Ok(())` (idempotent).
    async fn revoke(&self, device: &DeviceRef, vendor_ref: &VendorRef) -> Result<(), VendorError>;
    /// Everything the device holds (drift reconciliation, tests).
    async fn list(&self, device: &DeviceRef) -> Result<Vec<VendorEntry>, VendorError>;
    /// What the device holds, list by list (drift judges each on its own): by default the
    /// one [`LockPort::list`], for every kind.
    async fn listings(&self, device: &DeviceRef) -> Vec<Listing> {
        vec![Listing {
            kinds: Vec::new(),
            entries: self.list(device).await,
        }]
    }
    /// A cheap probe of the vendor's API.
    async fn health(&self) -> Result<(), VendorError>;
    /// Reads one device's health: online, battery, firmware and its clock. A device the
    /// vendor does not know is `Err(NotFound)`; a lock the vendor cannot reach right now is
    /// `Ok` with `online: false`, not an error.
    async fn probe(&self, device: &DeviceRef) -> Result<DeviceProbe, VendorError>;
    /// Opens the door now, remotely (through the vendor's gateway or hub). Vendors without
    /// it answer `Refused { code: "unsupported" }`.
    async fn remote_unlock(&self, _device: &DeviceRef) -> Result<(), VendorError> {
        Err(VendorError::unsupported("remote unlock"))
    }
    /// The door operations the vendor recorded on the device since `since` (by the time
    /// they reached the vendor), oldest first. Vendors that push their records by webhook
    /// only answer `Refused { code: "unsupported" }`.
    async fn door_events(
        &self,
        _device: &DeviceRef,
        _since: DateTime<Utc>,
    ) -> Result<Vec<DoorEvent>, VendorError> {
        Err(VendorError::unsupported("reading door records"))
    }
}

/// What can go wrong at a vendor, in vendor-neutral terms.
///
/// Details are written by the adapter from fixed phrases and vendor error codes: they
/// never contain a PIN, a token, a secret or a `vendorRef`, and never the text of a
/// transport error (whose URL may carry an access token).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum VendorError {
    /// Transport error, timeout or 5xx: the vendor is unwell.
    #[error("vendor unavailable: {detail}")]
    Unavailable {
        /// What happened.
        detail: String,
    },
    /// HTTP 429 or the vendor's rate-limit code.
    #[error("vendor rate limit reached")]
    RateLimited {
        /// How long the vendor asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The vendor refuses a PIN that the lock already holds.
    #[error("pin already in use on the lock")]
    PinCollision,
    /// A business refusal of this request (no gateway, lock full, bad parameter...).
    #[error("vendor refused the request: {code}: {detail}")]
    Refused {
        /// A stable lowercase code (e.g. `storage_full`, `gateway_offline`, `errcode_-4043`).
        code: String,
        /// What it means.
        detail: String,
    },
    /// The vendor rejected our account: its credentials, the account itself (suspended,
    /// inactive) or its quota. An account-level state, not this request's failure: the
    /// caller holds the account's work until it is fixed (DESIGN §7).
    #[error("vendor rejected our credentials: {detail}")]
    Auth {
        /// Which part was rejected.
        detail: String,
    },
    /// The object does not exist at the vendor.
    #[error("not found at vendor")]
    NotFound,
    /// The call was never sent: Lockstep's own gate in front of the vendor refused it (the
    /// breaker is open, the account is held, revocations are drained first). Made by the
    /// caller's worker, never by an adapter; nothing reached the vendor, so it costs no
    /// attempt.
    #[error("call not sent: {reason}")]
    NotSent {
        /// `circuit_open`, `account_held` or `removals_first`.
        reason: &'static str,
    },
}

/// `Refused` codes that describe a passing state of the lock or its gateway: the same
/// request may succeed a little later.
pub const TRANSIENT_REFUSALS: &[&str] = &[
    "gateway_busy",
    "gateway_offline",
    "lock_busy",
    "lock_offline",
    "clock_skew",
    // the front desk's encoders (`wiegand::errors::TRANSIENT_CODES`)
    "card_encoder_offline",
    "encoder_busy",
    "no_card",
    "card_rejected",
    "encoder_error",
    "desk_ledger_unavailable",
];

impl VendorError {
    /// The refusal of an operation this adapter does not offer.
    pub fn unsupported(what: &str) -> Self {
        Self::Refused {
            code: "unsupported".into(),
            detail: format!("{what} is not offered by this vendor adapter"),
        }
    }

    /// Whether this error says the vendor as a whole is unwell. DESIGN §6: the breaker
    /// counts only transport errors, timeouts, 5xx and 429; a business refusal is this
    /// request's failure, not the vendor's.
    pub fn is_vendor_unwell(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::RateLimited { .. })
    }

    /// Whether this error is the account's state rather than this request's (bad
    /// credentials, suspended account, exhausted quota): every request of the account
    /// would fail the same way until someone fixes it.
    pub fn is_account_level(&self) -> bool {
        matches!(self, Self::Auth { .. })
    }

    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::RateLimited { .. } => "rate_limited",
            Self::PinCollision => "pin_collision",
            Self::Refused { .. } => "refused",
            Self::Auth { .. } => "auth",
            Self::NotFound => "not_found",
            Self::NotSent { reason } => reason,
        }
    }

    /// Whether the same request may succeed if tried again later: vendor unwell, or a
    /// refusal caused by a passing state of the lock or its gateway (busy, offline).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::RateLimited { .. } | Self::NotSent { .. } => true,
            Self::Refused { code, .. } => TRANSIENT_REFUSALS.contains(&code.as_str()),
            Self::PinCollision | Self::Auth { .. } | Self::NotFound => false,
        }
    }

    /// The domain error for a failed issue.
    pub fn to_domain_issue(&self) -> DomainError {
        match self {
            Self::Unavailable { .. } | Self::RateLimited { .. } | Self::NotSent { .. } => {
                DomainError::VendorUnreachable
            }
            other => DomainError::KeyIssueFailed {
                detail: other.neutral_detail(),
            },
        }
    }

    /// The domain error for a failed revoke.
    pub fn to_domain_revoke(&self) -> DomainError {
        match self {
            Self::Unavailable { .. } | Self::RateLimited { .. } | Self::NotSent { .. } => {
                DomainError::VendorUnreachable
            }
            other => DomainError::KeyRevokeFailed {
                detail: other.neutral_detail(),
            },
        }
    }

    fn neutral_detail(&self) -> String {
        match self {
            Self::PinCollision => "pin already in use on the lock".to_owned(),
            Self::Refused { code, detail } => format!("{code}: {detail}"),
            Self::Auth { detail } => format!("vendor rejected our credentials: {detail}"),
            Self::NotFound => "not found at vendor".to_owned(),
            Self::Unavailable { detail } => format!("vendor unavailable: {detail}"),
            Self::RateLimited { .. } => "vendor rate limit reached".to_owned(),
            Self::NotSent { reason } => format!("call not sent: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transport_and_rate_limit_errors_count_against_the_vendor() {
        let unwell = [
            VendorError::Unavailable {
                detail: "timeout".into(),
            },
            VendorError::RateLimited { retry_after: None },
        ];
        let request_failures = [
            VendorError::PinCollision,
            VendorError::Refused {
                code: "no_gateway".into(),
                detail: "x".into(),
            },
            VendorError::Auth { detail: "x".into() },
            VendorError::NotFound,
        ];
        for e in &unwell {
            assert!(e.is_vendor_unwell(), "{e:?}");
            assert!(e.is_retryable(), "{e:?}");
            assert_eq!(e.to_domain_issue(), DomainError::VendorUnreachable);
            assert_eq!(e.to_domain_revoke(), DomainError::VendorUnreachable);
        }
        for e in &request_failures {
            assert!(!e.is_vendor_unwell(), "{e:?}");
            assert!(!e.is_retryable(), "{e:?}");
            assert!(matches!(
                e.to_domain_issue(),
                DomainError::KeyIssueFailed { .. }
            ));
            assert!(matches!(
                e.to_domain_revoke(),
                DomainError::KeyRevokeFailed { .. }
            ));
        }
        let busy = VendorError::Refused {
            code: "gateway_busy".into(),
            detail: "x".into(),
        };
        assert!(busy.is_retryable() && !busy.is_vendor_unwell());
    }
}
