//! The `KeyCredential` aggregate (spec `003` §1.1–§1.3) and its state machine:
//!
//! ```text
//! requested → pending → active ⇄ suspended
//!     │          │        │          │
//!     └──→ failed ←┘       └──→ revoked ←┘   (pending → revoked too)
//! ```
//!
//! Only these methods change state (I-10); each legal transition appends exactly one
//! [`DomainEvent`] and bumps `version` by one; every illegal one returns
//! [`DomainError::InvalidStateTransition`]. A repeat of the transition that put the
//! credential where it is (a second revoke of a revoked credential) is
//! [`Transition::AlreadyApplied`]: no event, no version bump. That is what makes saga steps
//! idempotent under redelivery.

use chrono::Duration;

use crate::clock::Timestamp;
use crate::errors::DomainError;
use crate::events::{DomainEvent, DomainEventKind};
use crate::ids::{
    GuestId, KeyCredentialId, PropertyId, ReservationId, RoomId, TenantId, UserId, VendorAdapterId,
};
use crate::validity::ValidityWindow;

/// Kinds of credential (spec `003` §1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyCredentialKind {
    /// A mobile key delivered to the guest's phone.
    MobileApp,
    /// A keypad PIN.
    PinCode,
    /// An RFID card encoded at the desk.
    RfidCard,
    /// A QR code.
    QrCode,
    /// An NFC tag.
    NfcTag,
}

/// States of a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyCredentialState {
    /// Recorded; no vendor call yet.
    Requested,
    /// The vendor call has been made; not yet confirmed.
    Pending,
    /// Confirmed at the vendor.
    Active,
    /// Temporarily disabled.
    Suspended,
    /// Terminal (I-4).
    Revoked,
    /// Terminal (I-5).
    Failed,
}

/// Who holds the credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderKind {
    /// A guest of a reservation.
    Guest,
    /// A staff member (master key).
    StaffMaster,
}

/// Why a credential was suspended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuspendReason {
    /// The guest did not show up.
    NoShow,
    /// Fraud review.
    FraudReview,
    /// Payment overdue.
    OverduePayment,
    /// By an operator.
    Manual,
}

/// Why a credential was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    /// Guest checked out.
    Checkout,
    /// Reservation cancelled.
    Cancellation,
    /// Security.
    Security,
    /// Lost key.
    Lost,
    /// Replaced by another credential.
    Replaced,
    /// Past `validUntil` (DESIGN §12: a durable timer revokes it so door and record agree).
    Expired,
}

/// Why a credential failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The vendor could not be reached after retries.
    VendorUnreachable,
    /// The vendor refused.
    VendorRefused,
    /// Three PIN collisions in a row.
    PinCollisionExhausted,
    /// No device can serve the room.
    NoCapableDevice,
    /// The kind is not supported.
    KindUnsupported,
    /// Cancelled before the vendor confirmed.
    CancelledMidFlight,
    /// I-9: another reservation's credential holds one of the rooms for overlapping dates
    /// (not in spec `003`'s list; see ARCHITECTURE.md).
    RoomConflict,
    /// A staff master's scope names no door Lockstep can give the key to: an area with no
    /// door at the property, a room scope with no room, a floor without rooms (spec `003`
    /// §4; not in spec `003`'s list, see ARCHITECTURE.md). Decided at the shift's start,
    /// before any vendor call.
    ScopeUnresolvable,
}

/// Vendors (spec `003` §1.1 plus the coworking vendors of spec `001`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VendorCode {
    /// TTLock Open API.
    Ttlock,
    /// Salto KS.
    Salto,
    /// Assa Abloy Vostio.
    AssaAbloy,
    /// A Wiegand encoder at the front desk, through the relay.
    GenericWiegand,
    /// Kisi (coworking).
    Kisi,
    /// Brivo (coworking).
    Brivo,
}

/// Areas a master key may open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyCredentialScope {
    /// Floors.
    pub floors: Vec<String>,
    /// Common areas (`lobby`, `gym`, `pool`, `spa`, `parking`, `back_of_house`).
    pub areas: Vec<String>,
}

/// A room reference as resolved against the registry: I-11 demands that its tenant (and
/// property) be the credential's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopedRoom {
    /// Tenant that owns the room.
    pub tenant_id: TenantId,
    /// Property that owns the room.
    pub property_id: PropertyId,
    /// The room.
    pub room_id: RoomId,
}

/// Everything needed to request a credential.
#[derive(Clone, Debug)]
pub struct IssueIntent {
    /// New credential's id.
    pub id: KeyCredentialId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Holder.
    pub holder_kind: HolderKind,
    /// Reservation (guests).
    pub reservation_id: Option<ReservationId>,
    /// Guest (guests).
    pub guest_id: Option<GuestId>,
    /// Staff member (masters).
    pub staff_user_id: Option<UserId>,
    /// Kind.
    pub kind: KeyCredentialKind,
    /// Rooms, resolved with their owners.
    pub rooms: Vec<ScopedRoom>,
    /// Scope.
    pub scope: KeyCredentialScope,
    /// Validity (I-1 by construction).
    pub validity: ValidityWindow,
    /// Vendor.
    pub vendor: VendorCode,
    /// Adapter.
    pub vendor_adapter_id: VendorAdapterId,
    /// Minted offline by a desktop.
    pub provisional: bool,
    /// Idempotency key of the request.
    pub idempotency_key: String,
    /// Lineage on replacement.
    pub replaces_id: Option<KeyCredentialId>,
    /// Trace id carried into events.
    pub trace_id: Option<String>,
}

/// An update of an active or suspended credential.
#[derive(Clone, Debug, Default)]
pub struct UpdateInput {
    /// New end of validity.
    pub valid_until: Option<Timestamp>,
    /// New rooms.
    pub rooms: Option<Vec<ScopedRoom>>,
    /// New scope.
    pub scope: Option<KeyCredentialScope>,
}

/// Outcome of a transition call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The state changed; one event was appended.
    Applied,
    /// The credential was already where the call would put it; nothing changed.
    AlreadyApplied,
}

/// I-7: a provisional credential is valid for at most 48 hours.
pub const PROVISIONAL_MAX_HOURS: i64 = 48;

/// The aggregate (spec `003` §1.1). The per-device vendor references live beside it in the
/// store (one per (credential, device), DESIGN §6), never in this struct's public surface.
#[derive(Clone, Debug)]
pub struct KeyCredential {
    id: KeyCredentialId,
    tenant_id: TenantId,
    property_id: PropertyId,
    holder_kind: HolderKind,
    reservation_id: Option<ReservationId>,
    guest_id: Option<GuestId>,
    staff_user_id: Option<UserId>,
    kind: KeyCredentialKind,
    rooms: Vec<RoomId>,
    scope: KeyCredentialScope,
    validity: ValidityWindow,
    state: KeyCredentialState,
    vendor: VendorCode,
    vendor_adapter_id: VendorAdapterId,
    provisional: bool,
    idempotency_key: String,
    issued_at: Option<Timestamp>,
    suspended_at: Option<Timestamp>,
    revoked_at: Option<Timestamp>,
    failure_reason: Option<FailureReason>,
    suspend_reason: Option<SuspendReason>,
    revoke_reason: Option<RevokeReason>,
    replaces_id: Option<KeyCredentialId>,
    replaced_by_id: Option<KeyCredentialId>,
    version: i64,
    created_at: Timestamp,
    updated_at: Timestamp,
    trace_id: Option<String>,
    pending_events: Vec<DomainEvent>,
}

/// A stored credential, as persistence reads it back. `KeyCredential::restore` re-checks
/// the invariants, so a corrupted row cannot become a live aggregate.
#[derive(Clone, Debug)]
pub struct KeyCredentialSnapshot {
    /// Id.
    pub id: KeyCredentialId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Holder.
    pub holder_kind: HolderKind,
    /// Reservation.
    pub reservation_id: Option<ReservationId>,
    /// Guest.
    pub guest_id: Option<GuestId>,
    /// Staff member.
    pub staff_user_id: Option<UserId>,
    /// Kind.
    pub kind: KeyCredentialKind,
    /// Rooms.
    pub rooms: Vec<RoomId>,
    /// Scope.
    pub scope: KeyCredentialScope,
    /// Validity.
    pub validity: ValidityWindow,
    /// State.
    pub state: KeyCredentialState,
    /// Vendor.
    pub vendor: VendorCode,
    /// Adapter.
    pub vendor_adapter_id: VendorAdapterId,
    /// Provisional.
    pub provisional: bool,
    /// Idempotency key.
    pub idempotency_key: String,
    /// Issued at.
    pub issued_at: Option<Timestamp>,
    /// Suspended at.
    pub suspended_at: Option<Timestamp>,
    /// Revoked at.
    pub revoked_at: Option<Timestamp>,
    /// Failure reason.
    pub failure_reason: Option<FailureReason>,
    /// Suspend reason.
    pub suspend_reason: Option<SuspendReason>,
    /// Revoke reason.
    pub revoke_reason: Option<RevokeReason>,
    /// Replaces.
    pub replaces_id: Option<KeyCredentialId>,
    /// Replaced by.
    pub replaced_by_id: Option<KeyCredentialId>,
    /// Version.
    pub version: i64,
    /// Created.
    pub created_at: Timestamp,
    /// Updated.
    pub updated_at: Timestamp,
}

fn check_holder(
    holder: HolderKind,
    reservation: &Option<ReservationId>,
    guest: &Option<GuestId>,
    staff: &Option<UserId>,
) -> Result<(), DomainError> {
    match holder {
        // I-2
        HolderKind::Guest => {
            if reservation.is_none() || guest.is_none() {
                return Err(DomainError::validation(
                    "reservationId",
                    "a guest credential needs reservationId and guestId (I-2)",
                ));
            }
            if staff.is_some() {
                return Err(DomainError::validation(
                    "staffUserId",
                    "a guest credential has no staffUserId (I-2)",
                ));
            }
        }
        // I-3
        HolderKind::StaffMaster => {
            if staff.is_none() {
                return Err(DomainError::validation(
                    "staffUserId",
                    "a master credential needs staffUserId (I-3)",
                ));
            }
            if reservation.is_some() {
                return Err(DomainError::validation(
                    "reservationId",
                    "a master credential has no reservationId (I-3)",
                ));
            }
        }
    }
    Ok(())
}

fn check_rooms(
    tenant: TenantId,
    property: &PropertyId,
    holder: HolderKind,
    rooms: &[ScopedRoom],
) -> Result<Vec<RoomId>, DomainError> {
    // I-12
    if holder == HolderKind::Guest && rooms.is_empty() {
        return Err(DomainError::validation(
            "rooms",
            "a guest credential opens at least one room (I-12)",
        ));
    }
    // I-11
    for r in rooms {
        if r.tenant_id != tenant || &r.property_id != property {
            return Err(DomainError::CrossTenantReference { field: "rooms" });
        }
    }
    let mut ids: Vec<RoomId> = rooms.iter().map(|r| r.room_id.clone()).collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn check_provisional(provisional: bool, validity: &ValidityWindow) -> Result<(), DomainError> {
    // I-7
    if provisional && validity.duration() > Duration::hours(PROVISIONAL_MAX_HOURS) {
        return Err(DomainError::validation(
            "validUntil",
            "a provisional credential is valid for at most 48 hours (I-7)",
        ));
    }
    Ok(())
}

impl KeyCredential {
    /// Records a new credential in `requested` and appends `KeyCredentialRequested`.
    pub fn request(input: IssueIntent, now: Timestamp) -> Result<Self, DomainError> {
        check_holder(
            input.holder_kind,
            &input.reservation_id,
            &input.guest_id,
            &input.staff_user_id,
        )?;
        let rooms = check_rooms(
            input.tenant_id,
            &input.property_id,
            input.holder_kind,
            &input.rooms,
        )?;
        check_provisional(input.provisional, &input.validity)?;
        if input.idempotency_key.is_empty() {
            return Err(DomainError::validation(
                "idempotencyKey",
                "must not be empty",
            ));
        }
        let mut c = Self {
            id: input.id,
            tenant_id: input.tenant_id,
            property_id: input.property_id,
            holder_kind: input.holder_kind,
            reservation_id: input.reservation_id,
            guest_id: input.guest_id,
            staff_user_id: input.staff_user_id,
            kind: input.kind,
            rooms,
            scope: input.scope,
            validity: input.validity,
            state: KeyCredentialState::Requested,
            vendor: input.vendor,
            vendor_adapter_id: input.vendor_adapter_id,
            provisional: input.provisional,
            idempotency_key: input.idempotency_key,
            issued_at: None,
            suspended_at: None,
            revoked_at: None,
            failure_reason: None,
            suspend_reason: None,
            revoke_reason: None,
            replaces_id: input.replaces_id,
            replaced_by_id: None,
            version: 1,
            created_at: now,
            updated_at: now,
            trace_id: input.trace_id,
            pending_events: Vec::new(),
        };
        c.push_event(DomainEventKind::Requested, now);
        Ok(c)
    }

    /// Rebuilds an aggregate from storage, re-checking I-1..I-3, I-7 and I-12.
    pub fn restore(s: KeyCredentialSnapshot) -> Result<Self, DomainError> {
        check_holder(
            s.holder_kind,
            &s.reservation_id,
            &s.guest_id,
            &s.staff_user_id,
        )?;
        if s.holder_kind == HolderKind::Guest && s.rooms.is_empty() {
            return Err(DomainError::validation(
                "rooms",
                "stored guest credential has no room (I-12)",
            ));
        }
        check_provisional(s.provisional, &s.validity)?;
        Ok(Self {
            id: s.id,
            tenant_id: s.tenant_id,
            property_id: s.property_id,
            holder_kind: s.holder_kind,
            reservation_id: s.reservation_id,
            guest_id: s.guest_id,
            staff_user_id: s.staff_user_id,
            kind: s.kind,
            rooms: s.rooms,
            scope: s.scope,
            validity: s.validity,
            state: s.state,
            vendor: s.vendor,
            vendor_adapter_id: s.vendor_adapter_id,
            provisional: s.provisional,
            idempotency_key: s.idempotency_key,
            issued_at: s.issued_at,
            suspended_at: s.suspended_at,
            revoked_at: s.revoked_at,
            failure_reason: s.failure_reason,
            suspend_reason: s.suspend_reason,
            revoke_reason: s.revoke_reason,
            replaces_id: s.replaces_id,
            replaced_by_id: s.replaced_by_id,
            version: s.version,
            created_at: s.created_at,
            updated_at: s.updated_at,
            trace_id: None,
            pending_events: Vec::new(),
        })
    }

    /// The stored form of this aggregate.
    pub fn snapshot(&self) -> KeyCredentialSnapshot {
        KeyCredentialSnapshot {
            id: self.id.clone(),
            tenant_id: self.tenant_id,
            property_id: self.property_id.clone(),
            holder_kind: self.holder_kind,
            reservation_id: self.reservation_id.clone(),
            guest_id: self.guest_id.clone(),
            staff_user_id: self.staff_user_id.clone(),
            kind: self.kind,
            rooms: self.rooms.clone(),
            scope: self.scope.clone(),
            validity: self.validity,
            state: self.state,
            vendor: self.vendor,
            vendor_adapter_id: self.vendor_adapter_id.clone(),
            provisional: self.provisional,
            idempotency_key: self.idempotency_key.clone(),
            issued_at: self.issued_at,
            suspended_at: self.suspended_at,
            revoked_at: self.revoked_at,
            failure_reason: self.failure_reason,
            suspend_reason: self.suspend_reason,
            revoke_reason: self.revoke_reason,
            replaces_id: self.replaces_id.clone(),
            replaced_by_id: self.replaced_by_id.clone(),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// Sets the trace id carried into the events this aggregate emits from now on.
    pub fn set_trace_id(&mut self, trace_id: Option<String>) {
        self.trace_id = trace_id;
    }

    fn illegal(&self, action: &'static str) -> DomainError {
        DomainError::InvalidStateTransition {
            from: self.state.as_str(),
            action,
        }
    }

    fn push_event(&mut self, kind: DomainEventKind, now: Timestamp) {
        self.pending_events.push(DomainEvent {
            kind,
            credential_id: self.id.clone(),
            tenant_id: self.tenant_id,
            property_id: self.property_id.clone(),
            reservation_id: self.reservation_id.clone(),
            staff_user_id: self.staff_user_id.clone(),
            credential_kind: self.kind,
            holder_kind: self.holder_kind,
            rooms: self.rooms.clone(),
            validity: self.validity,
            vendor: self.vendor,
            provisional: self.provisional,
            version: self.version,
            trace_id: self.trace_id.clone(),
            occurred_at: now,
        });
    }

    fn bump(&mut self, now: Timestamp) {
        self.version += 1;
        self.updated_at = now;
    }

    /// requested → pending: the vendor call is being made.
    pub fn mark_pending(&mut self, now: Timestamp) -> Result<Transition, DomainError> {
        match self.state {
            KeyCredentialState::Requested => {
                self.state = KeyCredentialState::Pending;
                self.bump(now);
                // The spec lists no event for `markPending` (§7): it is internal progress.
                Ok(Transition::Applied)
            }
            KeyCredentialState::Pending => Ok(Transition::AlreadyApplied),
            _ => Err(self.illegal("mark_pending")),
        }
    }

    /// pending → active: the vendor confirmed. Appends `KeyCredentialIssued`.
    pub fn mark_active(&mut self, issued_at: Timestamp) -> Result<Transition, DomainError> {
        match self.state {
            KeyCredentialState::Pending => {
                self.state = KeyCredentialState::Active;
                self.issued_at = Some(issued_at);
                self.bump(issued_at);
                self.push_event(DomainEventKind::Issued, issued_at);
                Ok(Transition::Applied)
            }
            KeyCredentialState::Active if self.issued_at.is_some() => {
                Ok(Transition::AlreadyApplied)
            }
            _ => Err(self.illegal("mark_active")),
        }
    }

    /// requested|pending → failed (I-5: terminal). Appends `KeyCredentialFailed`.
    pub fn mark_failed(
        &mut self,
        reason: FailureReason,
        now: Timestamp,
    ) -> Result<Transition, DomainError> {
        match self.state {
            KeyCredentialState::Requested | KeyCredentialState::Pending => {
                self.state = KeyCredentialState::Failed;
                self.failure_reason = Some(reason);
                self.bump(now);
                self.push_event(DomainEventKind::Failed { reason }, now);
                Ok(Transition::Applied)
            }
            KeyCredentialState::Failed if self.failure_reason == Some(reason) => {
                Ok(Transition::AlreadyApplied)
            }
            _ => Err(self.illegal("mark_failed")),
        }
    }

    /// active → suspended. Appends `KeyCredentialSuspended`.
    pub fn suspend(
        &mut self,
        reason: SuspendReason,
        now: Timestamp,
    ) -> Result<Transition, DomainError> {
        match self.state {
            KeyCredentialState::Active => {
                self.state = KeyCredentialState::Suspended;
                self.suspend_reason = Some(reason);
                self.suspended_at = Some(now);
                self.bump(now);
                self.push_event(DomainEventKind::Suspended { reason }, now);
                Ok(Transition::Applied)
            }
            KeyCredentialState::Suspended => Ok(Transition::AlreadyApplied),
            _ => Err(self.illegal("suspend")),
        }
    }

    /// suspended → active. Appends `KeyCredentialUnsuspended`.
    pub fn unsuspend(&mut self, now: Timestamp) -> Result<Transition, DomainError> {
        match self.state {
            KeyCredentialState::Suspended => {
                self.state = KeyCredentialState::Active;
                self.suspend_reason = None;
                self.suspended_at = None;
                self.bump(now);
                self.push_event(DomainEventKind::Unsuspended, now);
                Ok(Transition::Applied)
            }
            _ => Err(self.illegal("unsuspend")),
        }
    }

    /// active|suspended|pending → revoked (I-4: terminal). Appends `KeyCredentialRevoked`.
    pub fn revoke(
        &mut self,
        reason: RevokeReason,
        now: Timestamp,
    ) -> Result<Transition, DomainError> {
        match self.state {
            KeyCredentialState::Active
            | KeyCredentialState::Suspended
            | KeyCredentialState::Pending => {
                self.state = KeyCredentialState::Revoked;
                self.revoke_reason = Some(reason);
                self.revoked_at = Some(now);
                self.bump(now);
                self.push_event(DomainEventKind::Revoked { reason }, now);
                Ok(Transition::Applied)
            }
            KeyCredentialState::Revoked => Ok(Transition::AlreadyApplied),
            _ => Err(self.illegal("revoke")),
        }
    }

    /// Updates validity end, rooms or scope of an active|suspended credential. Appends
    /// `KeyCredentialUpdated`. I-1, I-7, I-11 and I-12 still hold afterwards.
    pub fn update(
        &mut self,
        input: UpdateInput,
        now: Timestamp,
    ) -> Result<Transition, DomainError> {
        if !matches!(
            self.state,
            KeyCredentialState::Active | KeyCredentialState::Suspended
        ) {
            return Err(self.illegal("update"));
        }
        let validity = match input.valid_until {
            Some(until) => ValidityWindow::new(self.validity.from(), until)?,
            None => self.validity,
        };
        check_provisional(self.provisional, &validity)?;
        let rooms = match &input.rooms {
            Some(r) => check_rooms(self.tenant_id, &self.property_id, self.holder_kind, r)?,
            None => self.rooms.clone(),
        };
        let scope = input.scope.unwrap_or_else(|| self.scope.clone());
        if validity == self.validity && rooms == self.rooms && scope == self.scope {
            return Ok(Transition::AlreadyApplied);
        }
        self.validity = validity;
        self.rooms = rooms;
        self.scope = scope;
        self.bump(now);
        self.push_event(DomainEventKind::Updated, now);
        Ok(Transition::Applied)
    }

    /// Records the credential that replaced this one. Only on a credential revoked as
    /// `lost` or `replaced` (spec `003` §1.3); appends no event (the revoke already did).
    pub fn link_replacement(
        &mut self,
        new_id: KeyCredentialId,
        now: Timestamp,
    ) -> Result<Transition, DomainError> {
        let revoked_for_replacement = self.state == KeyCredentialState::Revoked
            && matches!(
                self.revoke_reason,
                Some(RevokeReason::Lost) | Some(RevokeReason::Replaced)
            );
        if !revoked_for_replacement {
            return Err(self.illegal("link_replacement"));
        }
        match &self.replaced_by_id {
            Some(existing) if *existing == new_id => Ok(Transition::AlreadyApplied),
            Some(_) => Err(self.illegal("link_replacement")),
            None => {
                self.replaced_by_id = Some(new_id);
                self.bump(now);
                Ok(Transition::Applied)
            }
        }
    }

    /// Events appended since the last [`Self::take_pending_events`].
    pub fn pending_events(&self) -> &[DomainEvent] {
        &self.pending_events
    }

    /// Drains the pending events (the application layer writes them to the outbox).
    pub fn take_pending_events(&mut self) -> Vec<DomainEvent> {
        std::mem::take(&mut self.pending_events)
    }

    /// Id.
    pub fn id(&self) -> &KeyCredentialId {
        &self.id
    }
    /// Tenant.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }
    /// Property.
    pub fn property_id(&self) -> &PropertyId {
        &self.property_id
    }
    /// Holder kind.
    pub fn holder_kind(&self) -> HolderKind {
        self.holder_kind
    }
    /// Reservation.
    pub fn reservation_id(&self) -> Option<&ReservationId> {
        self.reservation_id.as_ref()
    }
    /// Guest.
    pub fn guest_id(&self) -> Option<&GuestId> {
        self.guest_id.as_ref()
    }
    /// Staff member.
    pub fn staff_user_id(&self) -> Option<&UserId> {
        self.staff_user_id.as_ref()
    }
    /// Kind.
    pub fn kind(&self) -> KeyCredentialKind {
        self.kind
    }
    /// Rooms (sorted, distinct).
    pub fn rooms(&self) -> &[RoomId] {
        &self.rooms
    }
    /// Scope.
    pub fn scope(&self) -> &KeyCredentialScope {
        &self.scope
    }
    /// Validity.
    pub fn validity(&self) -> ValidityWindow {
        self.validity
    }
    /// State.
    pub fn state(&self) -> KeyCredentialState {
        self.state
    }
    /// Vendor.
    pub fn vendor(&self) -> VendorCode {
        self.vendor
    }
    /// Adapter.
    pub fn vendor_adapter_id(&self) -> &VendorAdapterId {
        &self.vendor_adapter_id
    }
    /// Provisional.
    pub fn provisional(&self) -> bool {
        self.provisional
    }
    /// Idempotency key.
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }
    /// Issued at.
    pub fn issued_at(&self) -> Option<Timestamp> {
        self.issued_at
    }
    /// Revoked at.
    pub fn revoked_at(&self) -> Option<Timestamp> {
        self.revoked_at
    }
    /// Suspended at (while suspended).
    pub fn suspended_at(&self) -> Option<Timestamp> {
        self.suspended_at
    }
    /// Failure reason.
    pub fn failure_reason(&self) -> Option<FailureReason> {
        self.failure_reason
    }
    /// Revoke reason.
    pub fn revoke_reason(&self) -> Option<RevokeReason> {
        self.revoke_reason
    }
    /// Suspend reason.
    pub fn suspend_reason(&self) -> Option<SuspendReason> {
        self.suspend_reason
    }
    /// Replaces.
    pub fn replaces_id(&self) -> Option<&KeyCredentialId> {
        self.replaces_id.as_ref()
    }
    /// Replaced by.
    pub fn replaced_by_id(&self) -> Option<&KeyCredentialId> {
        self.replaced_by_id.as_ref()
    }
    /// Optimistic-concurrency version.
    pub fn version(&self) -> i64 {
        self.version
    }
    /// Whether the credential is in a terminal state (I-4, I-5).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.state,
            KeyCredentialState::Revoked | KeyCredentialState::Failed
        )
    }
}

macro_rules! text_enum {
    ($ty:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The spec's wire spelling.
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
            /// Parses the spec's wire spelling.
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(DomainError::validation(stringify!($ty), format!("unknown value '{}'", s.chars().take(40).collect::<String>()))),
                }
            }
            /// Every value.
            pub const ALL: &'static [$ty] = &[$(Self::$variant),+];
        }
    };
}

text_enum!(KeyCredentialKind { MobileApp => "mobile_app", PinCode => "pin_code", RfidCard => "rfid_card", QrCode => "qr_code", NfcTag => "nfc_tag" });
text_enum!(KeyCredentialState { Requested => "requested", Pending => "pending", Active => "active", Suspended => "suspended", Revoked => "revoked", Failed => "failed" });
text_enum!(HolderKind { Guest => "guest", StaffMaster => "staff_master" });
text_enum!(SuspendReason { NoShow => "no_show", FraudReview => "fraud_review", OverduePayment => "overdue_payment", Manual => "manual" });
text_enum!(RevokeReason { Checkout => "checkout", Cancellation => "cancellation", Security => "security", Lost => "lost", Replaced => "replaced", Expired => "expired" });
text_enum!(FailureReason { VendorUnreachable => "vendor_unreachable", VendorRefused => "vendor_refused", PinCollisionExhausted => "pin_collision_exhausted", NoCapableDevice => "no_capable_device", KindUnsupported => "kind_unsupported", CancelledMidFlight => "cancelled_mid_flight", RoomConflict => "room_conflict", ScopeUnresolvable => "scope_unresolvable" });
text_enum!(VendorCode { Ttlock => "ttlock", Salto => "salto", AssaAbloy => "assa-abloy", GenericWiegand => "generic-wiegand", Kisi => "kisi", Brivo => "brivo" });
