//! `KeyCredentialAttempt` (spec `003` §1.4–§1.5): one door-access event a vendor reported,
//! immutable once recorded (A-1: there is no method that changes one).

use chrono::Duration;

use crate::{
    DomainError, KeyCredential, KeyCredentialAttemptId, KeyCredentialId, KeyCredentialState,
    LockDeviceId, PropertyId, TenantId, Timestamp, VendorCode,
};

/// how far in the future a vendor's time may be before it is clamped.
pub const CLOCK_SKEW_TOLERANCE_MINUTES: i64 = 5;

/// Whether the door opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// It opened.
    Granted,
    /// It stayed shut.
    Denied,
}

/// Why a door stayed shut, as far as Lockstep can tell from its own records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptDenyReason {
    /// The credential's window ended.
    Expired,
    /// The credential is suspended.
    Suspended,
    /// The credential is revoked.
    Revoked,
    /// The credential does not open this room.
    WrongRoom,
    /// Before the credential's window.
    OutsideWindow,
    /// No credential of Lockstep's.
    UnknownCredential,
    /// The lock was offline.
    LockOffline,
    /// Anything else.
    Other,
}

/// What a vendor reported, before it becomes an attempt.
#[derive(Clone, Debug)]
pub struct AttemptReport {
    /// The vendor's id of the event (A-2 dedupe key with the vendor).
    pub vendor_event_id: String,
    /// The vendor's time of it.
    pub attempted_at: Timestamp,
    /// Whether the door opened.
    pub granted: bool,
    /// The device.
    pub device_id: LockDeviceId,
    /// Its property.
    pub property_id: PropertyId,
    /// The vendor.
    pub vendor: VendorCode,
    /// How (`pin_code`, `mobile_app`, `rfid_card`, `remote`, `other`).
    pub method: &'static str,
}

/// One recorded door attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCredentialAttempt {
    /// Id (`kca_`).
    pub id: KeyCredentialAttemptId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// The credential used, when it is one of Lockstep's.
    pub key_credential_id: Option<KeyCredentialId>,
    /// Device.
    pub device_id: LockDeviceId,
    /// The vendor's time, clamped.
    pub attempted_at: Timestamp,
    /// When Lockstep recorded it.
    pub ingested_at: Timestamp,
    /// Outcome.
    pub outcome: AttemptOutcome,
    /// Why it was denied.
    pub deny_reason: Option<AttemptDenyReason>,
    /// Vendor.
    pub vendor: VendorCode,
    /// The vendor's event id.
    pub vendor_event_id: String,
    /// Whether A-3 clamped the vendor's time (worth a warning).
    pub clamped: bool,
    /// How the door was tried.
    pub method: &'static str,
}

impl KeyCredentialAttempt {
    /// Records a report in `tenant`, with the credential it names when it is one of
    /// Lockstep's. A-4: that credential must be of the same tenant and property, or the
    /// report is refused (`CrossTenantReference`). A-3: a vendor time more than five
    /// minutes ahead of `now` is clamped to `now`.
    pub fn record(
        tenant: TenantId,
        report: AttemptReport,
        credential: Option<&KeyCredential>,
        now: Timestamp,
    ) -> Result<Self, DomainError> {
        if let Some(c) = credential {
            if c.tenant_id() != tenant || c.property_id() != &report.property_id {
                return Err(DomainError::CrossTenantReference {
                    field: "keyCredentialId",
                });
            }
        }
        let limit = now + Duration::minutes(CLOCK_SKEW_TOLERANCE_MINUTES);
        let clamped = report.attempted_at > limit;
        let attempted_at = if clamped { now } else { report.attempted_at };
        let (outcome, deny_reason) = if report.granted {
            (AttemptOutcome::Granted, None)
        } else {
            (
                AttemptOutcome::Denied,
                Some(deny_reason(credential, attempted_at)),
            )
        };
        Ok(Self {
            id: KeyCredentialAttemptId::generate(),
            tenant_id: tenant,
            property_id: report.property_id,
            key_credential_id: credential.map(|c| c.id().clone()),
            device_id: report.device_id,
            attempted_at,
            ingested_at: now,
            outcome,
            deny_reason,
            vendor: report.vendor,
            vendor_event_id: report.vendor_event_id,
            clamped,
            method: report.method,
        })
    }
}

/// Why a denied attempt was denied, from the credential's record.
fn deny_reason(credential: Option<&KeyCredential>, at: Timestamp) -> AttemptDenyReason {
    let Some(c) = credential else {
        return AttemptDenyReason::UnknownCredential;
    };
    match c.state() {
        KeyCredentialState::Revoked => AttemptDenyReason::Revoked,
        KeyCredentialState::Suspended => AttemptDenyReason::Suspended,
        _ if at >= c.validity().until() => AttemptDenyReason::Expired,
        _ if at < c.validity().from() => AttemptDenyReason::OutsideWindow,
        _ => AttemptDenyReason::Other,
    }
}

impl AttemptOutcome {
    /// The spec's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Denied => "denied",
        }
    }
}

impl AttemptDenyReason {
    /// The spec's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Suspended => "suspended",
            Self::Revoked => "revoked",
            Self::WrongRoom => "wrong_room",
            Self::OutsideWindow => "outside_window",
            Self::UnknownCredential => "unknown_credential",
            Self::LockOffline => "lock_offline",
            Self::Other => "other",
        }
    }
}
