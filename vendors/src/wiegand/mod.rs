//! The generic Wiegand adapter (spec `003` §6 `GenericWiegandAdapterConfig`, the
//! `CloudProxy` of spec `002`): cards encoded at the front desk. The adapter never talks to
//! a lock: a Wiegand reader only reports the number on a card, and the card carries its
//! doors and window. Issuing is an encode job for a desktop's USB encoder, sent through
//! [`EncoderDispatch`] (the host implements it with the desktop relay; this crate knows no
//! relay, no store and no WebSocket).
//!
//! - `issue`: one card per credential and window (idempotency key
//!   `wg-<credential>-<from ms>-<until ms>`): the first door's issue encodes the card for
//!   every door of the credential; the other doors' issues answer the same card. The
//!   `vendorRef` names the credential's card (`wg:<credential>`), never its number.
//! - `find`: whether the key's card was encoded, from the host's durable record.
//! - `update`: a moved window is a new card (a new key); it replaces the old one in the
//!   ledger. The guest's old card keeps its old window at the doors.
//! - `revoke`: a standalone card lock cannot be told anything: the card is cancelled in
//!   Lockstep's ledger and stops opening doors at its own `validUntil` (capability
//!   `remoteRevoke: false`).
//! - `list`: the live cards of Lockstep's ledger that open the door.
//! - `health`: a desktop with an encoder is connected for the property; none is
//!   `Unavailable` (`CARD_ENCODER_OFFLINE`), which the breaker counts like any vendor
//!   outage.
//!
//! The same [`EncoderDispatch`] gives TTLock's IC cards their number
//! ([`crate::ttlock::TtlockAdapter::with_desk`]).

pub mod errors;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lockstep_domain::{
    DeviceRef, KeyCredentialKind, PropertyId, TenantId, ValidityWindow, VendorCode, VendorRef,
};

pub use self::errors::DeskError;
use crate::{CardNumber, IssueRequest, LockCapabilities, LockPort, VendorEntry, VendorError};

/// The property whose desktops encode a card.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeskScope {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
}

/// One card to encode at a desk.
#[derive(Clone, Debug)]
pub struct CardJob {
    /// Whose desktops encode it.
    pub scope: DeskScope,
    /// Who registers the card: `generic-wiegand` (the card is the credential) or `ttlock`
    /// (its number is added to the locks).
    pub vendor: VendorCode,
    /// One card per key, whatever happens to desktops or to Lockstep.
    pub idempotency_key: String,
    /// The credential it carries (`key_`; the issue request's label).
    pub credential_label: String,
    /// The door the issue was for (the host adds the credential's other doors).
    pub device: DeviceRef,
    /// Validity written on the card.
    pub validity: ValidityWindow,
    /// How long a desktop has to acknowledge the job (`desktopAckTimeoutMs`).
    pub ack_timeout: Duration,
}

/// A live card of the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardEntry {
    /// The credential it carries.
    pub credential_label: String,
    /// Start of validity.
    pub valid_from: DateTime<Utc>,
    /// End of validity.
    pub valid_until: DateTime<Utc>,
}

/// The front desk's encoders, as the host offers them (implemented over the desktop relay
/// and Lockstep's store). Every method is keyed so that a retry changes nothing.
#[async_trait]
pub trait EncoderDispatch: Send + Sync + std::fmt::Debug {
    /// Encodes the job's card at one of the property's desktops and answers the number the
    /// reader read. A key already encoded answers its card without a new encode (also
    /// after a desktop died mid-job or Lockstep restarted); a cancelled card wanted again
    /// comes back.
    async fn encode(&self, job: &CardJob) -> Result<CardNumber, DeskError>;

    /// The card of a key, when it was encoded.
    async fn encoded(&self, scope: &DeskScope, key: &str) -> Result<Option<CardNumber>, DeskError>;

    /// The live cards of `vendor` at the property that open `door`.
    async fn cards_at(
        &self,
        scope: &DeskScope,
        vendor: VendorCode,
        door: &DeviceRef,
    ) -> Result<Vec<CardEntry>, DeskError>;

    /// The credential's cards are void (it was revoked).
    async fn cancel(&self, scope: &DeskScope, credential_label: &str) -> Result<(), DeskError>;

    /// The card of `keep` replaces the credential's other live cards (a moved window).
    async fn replace(
        &self,
        scope: &DeskScope,
        credential_label: &str,
        keep: &str,
    ) -> Result<(), DeskError>;

    /// `Ok` when a desktop with an encoder is connected for the property.
    async fn ready(&self, scope: &DeskScope) -> Result<(), DeskError>;
}

/// How to reach one property's desk (spec `003` §6 `GenericWiegandAdapterConfig`).
#[derive(Clone, Debug)]
pub struct WiegandConfig {
    /// The property's desks.
    pub scope: DeskScope,
    /// Where desktops reach the relay (`relayWsBaseUrl`): what their agents are given.
    pub relay_ws_base_url: String,
    /// `desktopAckTimeoutMs` (8 s by default).
    pub desktop_ack_timeout: Duration,
}

impl WiegandConfig {
    /// The spec's default acknowledgement timeout.
    pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_millis(8000);
}

/// The generic Wiegand [`LockPort`].
#[derive(Debug)]
pub struct GenericWiegandAdapter {
    config: WiegandConfig,
    desk: Arc<dyn EncoderDispatch>,
    gate: crate::rate::RateGate,
}

const VREF_PREFIX: &str = "wg:";

impl GenericWiegandAdapter {
    /// An adapter encoding through `desk`.
    pub fn new(config: WiegandConfig, desk: Arc<dyn EncoderDispatch>) -> Self {
        Self {
            config,
            desk,
            gate: crate::rate::RateGate::default(),
        }
    }

    /// The key of one card: a credential and its window.
    pub fn card_key(label: &str, validity: &ValidityWindow) -> String {
        format!(
            "wg-{label}-{}-{}",
            validity.from().timestamp_millis(),
            validity.until().timestamp_millis()
        )
    }

    fn job(&self, req: &IssueRequest) -> Result<CardJob, VendorError> {
        if req.kind != KeyCredentialKind::RfidCard {
            return Err(VendorError::Refused {
                code: "unsupported_kind".into(),
                detail: "a desk encoder makes rfid cards only".into(),
            });
        }
        Ok(CardJob {
            scope: self.config.scope.clone(),
            vendor: VendorCode::GenericWiegand,
            idempotency_key: Self::card_key(&req.label, &req.validity),
            credential_label: req.label.clone(),
            device: req.device.clone(),
            validity: req.validity,
            ack_timeout: self.config.desktop_ack_timeout,
        })
    }

    fn vendor_ref(label: &str) -> VendorRef {
        VendorRef::new(format!("{VREF_PREFIX}{label}"))
    }

    fn label_of(vendor_ref: &VendorRef) -> Result<&str, VendorError> {
        vendor_ref
            .expose()
            .strip_prefix(VREF_PREFIX)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| VendorError::Refused {
                code: "bad_vendor_ref".into(),
                detail: "not a generic wiegand card reference".into(),
            })
    }
}

#[async_trait]
impl LockPort for GenericWiegandAdapter {
    fn vendor(&self) -> VendorCode {
        VendorCode::GenericWiegand
    }

    fn capabilities(&self) -> LockCapabilities {
        LockCapabilities {
            mobile_key: false,
            card_encoding: true,
            pin: false,
            qr: false,
            nfc: false,
            // a standalone card lock is never told anything: the card expires
            remote_revoke: false,
            // the cloud issues through the desk (CloudProxy)
            remote_issue: true,
            // spec 003 §6.1: "Wiegand (always)"
            offline_issuance: true,
            scope_floors: false,
            scope_areas: false,
        }
    }

    fn account(&self) -> String {
        format!(
            "generic-wiegand|desk|{}/{}",
            self.config.scope.tenant_id,
            self.config.scope.property_id.as_str()
        )
    }

    fn rate_gate(&self) -> &crate::rate::RateGate {
        &self.gate
    }

    fn default_rate_per_minute(&self) -> Option<u32> {
        None
    }

    async fn issue(&self, req: &IssueRequest) -> Result<VendorRef, VendorError> {
        let job = self.job(req)?;
        self.desk
            .encode(&job)
            .await
            .map_err(|e| e.for_wiegand("issue"))?;
        Ok(Self::vendor_ref(&req.label))
    }

    async fn find(&self, req: &IssueRequest) -> Result<Option<VendorRef>, VendorError> {
        let job = self.job(req)?;
        let card = self
            .desk
            .encoded(&job.scope, &job.idempotency_key)
            .await
            .map_err(|e| e.for_wiegand("find"))?;
        Ok(card.map(|_| Self::vendor_ref(&req.label)))
    }

    async fn update(&self, req: &IssueRequest, vendor_ref: &VendorRef) -> Result<(), VendorError> {
        let label = Self::label_of(vendor_ref)?;
        let mut job = self.job(req)?;
        job.credential_label = label.to_owned();
        self.desk
            .encode(&job)
            .await
            .map_err(|e| e.for_wiegand("update"))?;
        self.desk
            .replace(&job.scope, label, &job.idempotency_key)
            .await
            .map_err(|e| e.for_wiegand("update"))
    }

    async fn revoke(&self, _device: &DeviceRef, vendor_ref: &VendorRef) -> Result<(), VendorError> {
        let label = Self::label_of(vendor_ref)?;
        self.desk
            .cancel(&self.config.scope, label)
            .await
            .map_err(|e| e.for_wiegand("revoke"))
    }

    async fn list(&self, device: &DeviceRef) -> Result<Vec<VendorEntry>, VendorError> {
        let cards = self
            .desk
            .cards_at(&self.config.scope, VendorCode::GenericWiegand, device)
            .await
            .map_err(|e| e.for_wiegand("list"))?;
        Ok(cards
            .into_iter()
            .map(|c| VendorEntry {
                vendor_ref: Self::vendor_ref(&c.credential_label),
                label: c.credential_label,
                valid_from: c.valid_from,
                valid_until: c.valid_until,
            })
            .collect())
    }

    async fn health(&self) -> Result<(), VendorError> {
        self.desk
            .ready(&self.config.scope)
            .await
            .map_err(|e| e.for_wiegand("health"))
    }

    async fn probe(&self, _device: &DeviceRef) -> Result<crate::DeviceProbe, VendorError> {
        // A standalone card lock reports to nobody: there is no reading to take.
        Err(VendorError::unsupported(
            "reading a standalone card lock's health",
        ))
    }
}
