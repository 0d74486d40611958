//! Domain events appended by aggregate transitions (spec `003` §7) and their subjects.

use crate::clock::Timestamp;
use crate::credential::{
    FailureReason, HolderKind, KeyCredentialKind, RevokeReason, SuspendReason, VendorCode,
};
use crate::ids::{KeyCredentialId, PropertyId, ReservationId, RoomId, TenantId, UserId};
use crate::validity::ValidityWindow;

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainEventKind {
    /// `request()`.
    Requested,
    /// `mark_active()`.
    Issued,
    /// `mark_failed()`.
    Failed {
        /// Why.
        reason: FailureReason,
    },
    /// `update()`.
    Updated,
    /// `revoke()`.
    Revoked {
        /// Why.
        reason: RevokeReason,
    },
    /// `suspend()`.
    Suspended {
        /// Why.
        reason: SuspendReason,
    },
    /// `unsuspend()`.
    Unsuspended,
}

impl DomainEventKind {
    /// The topic subject of spec `002` (Lockstep follows `002`'s `lock.credential.*`, not
    /// epic `000`'s `lock.key.*`; see ARCHITECTURE.md).
    pub fn subject(&self) -> &'static str {
        match self {
            Self::Requested => "melmastoon.lock.credential.requested.v1",
            Self::Issued => "melmastoon.lock.credential.issued.v1",
            Self::Failed { .. } => "melmastoon.lock.credential.failed.v1",
            Self::Updated => "melmastoon.lock.credential.updated.v1",
            Self::Revoked { .. } => "melmastoon.lock.credential.revoked.v1",
            Self::Suspended { .. } => "melmastoon.lock.credential.suspended.v1",
            Self::Unsuspended => "melmastoon.lock.credential.unsuspended.v1",
        }
    }

    /// The audit action of `lock_audit.action`.
    pub fn audit_action(&self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Issued => "issued",
            Self::Failed { .. } => "failed",
            Self::Updated => "updated",
            Self::Revoked { .. } => "revoked",
            Self::Suspended { .. } => "suspended",
            Self::Unsuspended => "unsuspended",
        }
    }

    /// The reason, where the transition has one.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Self::Failed { reason } => Some(reason.as_str()),
            Self::Revoked { reason } => Some(reason.as_str()),
            Self::Suspended { reason } => Some(reason.as_str()),
            _ => None,
        }
    }
}

/// One event, with the facts its payload needs. Never a vendorRef, PIN or guest PII (I-8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainEvent {
    /// What happened.
    pub kind: DomainEventKind,
    /// Credential.
    pub credential_id: KeyCredentialId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Reservation, for guest credentials.
    pub reservation_id: Option<ReservationId>,
    /// Staff member, for masters.
    pub staff_user_id: Option<UserId>,
    /// Credential kind.
    pub credential_kind: KeyCredentialKind,
    /// Holder kind.
    pub holder_kind: HolderKind,
    /// Rooms after the transition.
    pub rooms: Vec<RoomId>,
    /// Validity after the transition.
    pub validity: ValidityWindow,
    /// Vendor.
    pub vendor: VendorCode,
    /// Provisional (`metadata.wasProvisional` on revoke).
    pub provisional: bool,
    /// Aggregate version after the transition.
    pub version: i64,
    /// Trace id of the request that caused it.
    pub trace_id: Option<String>,
    /// When.
    pub occurred_at: Timestamp,
}
