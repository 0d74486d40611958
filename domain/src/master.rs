//! Staff master keys (spec `003` §4): scope, the `MasterKey` record, M-1, M-2, shift-bound
//! validity, and scope resolution against the property's layout and the adapter's
//! capabilities (spec `003` §6.1).

use crate::capabilities::LockCapabilities;
use crate::clock::Timestamp;
use crate::credential::{FailureReason, HolderKind, KeyCredential, KeyCredentialScope};
use crate::errors::DomainError;
use crate::ids::{KeyCredentialId, MasterKeyId, PropertyId, RoomId, ShiftId, TenantId, UserId};
use crate::validity::ValidityWindow;

/// A common area of spec `003` §1.1 `KeyCredentialScope.areas`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommonArea {
    /// Lobby.
    Lobby,
    /// Gym.
    Gym,
    /// Pool.
    Pool,
    /// Spa.
    Spa,
    /// Parking.
    Parking,
    /// Back of house.
    BackOfHouse,
}

impl CommonArea {
    /// Every area, in the spec's order.
    pub const ALL: &'static [CommonArea] = &[
        Self::Lobby,
        Self::Gym,
        Self::Pool,
        Self::Spa,
        Self::Parking,
        Self::BackOfHouse,
    ];

    /// The spec's wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Lobby => "lobby",
            Self::Gym => "gym",
            Self::Pool => "pool",
            Self::Spa => "spa",
            Self::Parking => "parking",
            Self::BackOfHouse => "back_of_house",
        }
    }

    /// Parses the spec's wire spelling.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| DomainError::validation("areas", "unknown area"))
    }
}

/// What a master key opens (spec `003` §4 `MasterScope`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterScope {
    /// One room.
    Room {
        /// The room.
        room_id: RoomId,
    },
    /// Every room of a floor (housekeeping floor leads).
    Floor {
        /// The floor.
        floor: String,
    },
    /// The rooms of the staff member's open tasks (maintenance).
    RoomsAssigned,
    /// Every room (GMs).
    RoomsAll,
    /// Some common areas.
    Areas {
        /// Which.
        areas: Vec<CommonArea>,
    },
    /// Every common area.
    AreasAll,
    /// The back of house.
    BackOfHouse,
}

/// The `kind` discriminant of [`MasterScope`]; M-2 is per (property, scope kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MasterScopeKind {
    /// `room`.
    Room,
    /// `floor`.
    Floor,
    /// `rooms_assigned`.
    RoomsAssigned,
    /// `rooms_all`.
    RoomsAll,
    /// `areas`.
    Areas,
    /// `areas_all`.
    AreasAll,
    /// `back_of_house`.
    BackOfHouse,
}

impl MasterScopeKind {
    /// The spec's wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Room => "room",
            Self::Floor => "floor",
            Self::RoomsAssigned => "rooms_assigned",
            Self::RoomsAll => "rooms_all",
            Self::Areas => "areas",
            Self::AreasAll => "areas_all",
            Self::BackOfHouse => "back_of_house",
        }
    }
}

impl MasterScope {
    /// Its kind.
    pub fn kind(&self) -> MasterScopeKind {
        match self {
            Self::Room { .. } => MasterScopeKind::Room,
            Self::Floor { .. } => MasterScopeKind::Floor,
            Self::RoomsAssigned => MasterScopeKind::RoomsAssigned,
            Self::RoomsAll => MasterScopeKind::RoomsAll,
            Self::Areas { .. } => MasterScopeKind::Areas,
            Self::AreasAll => MasterScopeKind::AreasAll,
            Self::BackOfHouse => MasterScopeKind::BackOfHouse,
        }
    }
}

/// One room of the property and its floor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutRoom {
    /// Room.
    pub room_id: RoomId,
    /// Floor it is on.
    pub floor: String,
}

/// What scope resolution needs to know about the property and the staff member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertyLayout {
    /// Every room of the property with its floor.
    pub rooms: Vec<LayoutRoom>,
    /// The rooms of the staff member's open tasks (for `rooms_assigned`).
    pub assigned_rooms: Vec<RoomId>,
    /// The common areas that have at least one live door at the property (a door's area
    /// is registered with the device, `lock_devices.area`; ARCHITECTURE.md "Master-key
    /// scopes").
    pub areas: Vec<CommonArea>,
}

/// A scope resolved into what a credential holds: the rooms whose doors it goes to, the
/// areas whose doors it goes to, and the floors a vendor scopes natively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedScope {
    /// Rooms (sorted, distinct): their doors hold the key.
    pub rooms: Vec<RoomId>,
    /// Floors the vendor scopes natively (only with `scopeFloors`); the floor's rooms are
    /// in `rooms` either way.
    pub floors: Vec<String>,
    /// Common areas (sorted, distinct): their doors hold the key.
    pub areas: Vec<CommonArea>,
}

impl ResolvedScope {
    /// The credential's `scope` (spec `003` §1.1 `KeyCredentialScope`): the native floors
    /// and every area (I-12: an areas-only master has no rooms, its scope says what it
    /// opens).
    pub fn credential_scope(&self) -> KeyCredentialScope {
        KeyCredentialScope {
            floors: self.floors.clone(),
            areas: self.areas.iter().map(|a| a.as_str().to_owned()).collect(),
        }
    }
}

/// Why a master scope names no door Lockstep can give the key to. The shift's master
/// credential then fails at once as `scope_unresolvable` (spec `003` §4; ARCHITECTURE.md
/// "Deviations from the spec"), never waiting in `requested`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ScopeRefusal {
    /// What the scope names that has no door (no vendor data, no secrets).
    pub detail: String,
}

impl ScopeRefusal {
    fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
        }
    }

    /// The credential's failure reason.
    pub fn failure_reason(&self) -> FailureReason {
        FailureReason::ScopeUnresolvable
    }
}

fn sorted(mut rooms: Vec<RoomId>) -> Vec<RoomId> {
    rooms.sort();
    rooms.dedup();
    rooms
}

/// The doors of `areas`: each named area must have one at the property (`strict`), or,
/// for `areas_all`, those that have one, at least one of them.
fn areas_scope(
    layout: &PropertyLayout,
    areas: &[CommonArea],
    strict: bool,
    what: &str,
) -> Result<ResolvedScope, ScopeRefusal> {
    if areas.is_empty() {
        return Err(ScopeRefusal::new(format!(
            "{what} names no area (spec 003 §4)"
        )));
    }
    let mut named: Vec<CommonArea> = areas.to_vec();
    named.sort();
    named.dedup();
    let (with_door, without): (Vec<CommonArea>, Vec<CommonArea>) =
        named.into_iter().partition(|a| layout.areas.contains(a));
    if strict && !without.is_empty() {
        let missing: Vec<&str> = without.iter().map(|a| a.as_str()).collect();
        return Err(ScopeRefusal::new(format!(
            "{what} names {} with no door at the property",
            missing.join(", ")
        )));
    }
    if with_door.is_empty() {
        return Err(ScopeRefusal::new(format!(
            "{what} resolves to no door: the property has no door in any of its areas"
        )));
    }
    Ok(ResolvedScope {
        rooms: vec![],
        floors: vec![],
        areas: with_door,
    })
}

/// Resolves a master scope into the rooms and areas whose doors hold the key, and the
/// floors a vendor scopes natively. Every one of spec `003` §4's seven scopes ends at the
/// doors it names, or is refused ([`ScopeRefusal`]):
///
/// - `room`: the room, which must be the property's.
/// - `floor`: the floor's rooms; with `scopeFloors` the floor is also passed natively,
///   without it the rooms alone carry the scope (spec `003` §6.1 per-room enumeration).
/// - `rooms_assigned`: the staff member's assigned rooms that belong to the property.
/// - `rooms_all`: every room.
/// - `areas`: the doors of the named areas; every named area must have a door.
/// - `areas_all`: the doors of every area that has one (back of house included: it is
///   one of spec `003` §1.1's areas); at least one.
/// - `back_of_house`: the back-of-house doors.
///
/// Spec `003` §6.1: an adapter without `scopeAreas` gets the areas' doors one by one
/// (the areas are enumerated into doors as floors are into rooms), so the capability does
/// not refuse a scope. I-3/I-12: a scope that resolves to no door is refused, so a master
/// credential has empty rooms only when areas cover it.
pub fn resolve_scope(
    scope: &MasterScope,
    caps: &LockCapabilities,
    layout: &PropertyLayout,
) -> Result<ResolvedScope, ScopeRefusal> {
    let known = |r: &RoomId| layout.rooms.iter().any(|l| &l.room_id == r);
    let rooms_scope = |rooms: Vec<RoomId>, floors: Vec<String>, what: &str| {
        if rooms.is_empty() {
            return Err(ScopeRefusal::new(format!(
                "{what} resolves to no room of the property (I-12)"
            )));
        }
        Ok(ResolvedScope {
            rooms: sorted(rooms),
            floors,
            areas: vec![],
        })
    };
    match scope {
        MasterScope::Room { room_id } => {
            if !known(room_id) {
                return Err(ScopeRefusal::new(
                    "the room scope names a room with no door at the property",
                ));
            }
            rooms_scope(vec![room_id.clone()], vec![], "the room scope")
        }
        MasterScope::Floor { floor } => {
            let rooms = layout
                .rooms
                .iter()
                .filter(|l| &l.floor == floor)
                .map(|l| l.room_id.clone())
                .collect();
            let floors = if caps.scope_floors {
                vec![floor.clone()]
            } else {
                vec![]
            };
            rooms_scope(rooms, floors, "the floor scope")
        }
        MasterScope::RoomsAssigned => {
            let rooms = layout
                .assigned_rooms
                .iter()
                .filter(|r| known(r))
                .cloned()
                .collect();
            rooms_scope(rooms, vec![], "the rooms_assigned scope")
        }
        MasterScope::RoomsAll => rooms_scope(
            layout.rooms.iter().map(|l| l.room_id.clone()).collect(),
            vec![],
            "the rooms_all scope",
        ),
        MasterScope::Areas { areas } => areas_scope(layout, areas, true, "the areas scope"),
        MasterScope::AreasAll => areas_scope(layout, CommonArea::ALL, false, "the areas_all scope"),
        MasterScope::BackOfHouse => areas_scope(
            layout,
            &[CommonArea::BackOfHouse],
            true,
            "the back_of_house scope",
        ),
    }
}

/// A staff master key (spec `003` §4 `MasterKey`), 1:1 with its `KeyCredential`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterKey {
    /// Id (`mky_`).
    pub id: MasterKeyId,
    /// The underlying credential (M-1: a `staff_master` one).
    pub key_credential_id: KeyCredentialId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Staff member.
    pub staff_user_id: UserId,
    /// The shift it is bound to.
    pub shift_id: Option<ShiftId>,
    /// Scope.
    pub scope: MasterScope,
    /// Validity: the shift's window.
    pub validity: ValidityWindow,
    /// Issued at.
    pub issued_at: Timestamp,
    /// Revoked at.
    pub revoked_at: Option<Timestamp>,
}

impl MasterKey {
    /// Binds a master key record to its credential. M-1: the credential is a
    /// `staff_master` one of the same tenant, property and staff member; its validity is
    /// the master's (shift-bound: the actor builds both from the shift's window).
    pub fn new(
        id: MasterKeyId,
        credential: &KeyCredential,
        shift_id: Option<ShiftId>,
        scope: MasterScope,
        issued_at: Timestamp,
    ) -> Result<Self, DomainError> {
        if credential.holder_kind() != HolderKind::StaffMaster {
            return Err(DomainError::validation(
                "keyCredentialId",
                "a master key references a staff_master credential (M-1)",
            ));
        }
        let staff_user_id = credential.staff_user_id().cloned().ok_or_else(|| {
            DomainError::validation("staffUserId", "a master credential needs staffUserId (I-3)")
        })?;
        Ok(Self {
            id,
            key_credential_id: credential.id().clone(),
            tenant_id: credential.tenant_id(),
            property_id: credential.property_id().clone(),
            staff_user_id,
            shift_id,
            scope,
            validity: credential.validity(),
            issued_at,
            revoked_at: None,
        })
    }

    /// Whether the key is active at `now`: not revoked, and inside its window.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.validity.contains(now)
    }

    /// Records the revocation (idempotent: the first time stands).
    pub fn revoke(&mut self, at: Timestamp) {
        self.revoked_at.get_or_insert(at);
    }
}

/// M-2: a staff member holds at most one active master per (property, scope kind). Given
/// the member's existing masters and a new one, refuses the new one when an active master
/// of the same property and scope kind exists at `now` whose window overlaps it (overlap on
/// shift renewal goes through an explicit revoke + re-issue chain, which revokes the old
/// one first).
pub fn check_single_active_master(
    existing: &[MasterKey],
    new: &MasterKey,
    now: Timestamp,
) -> Result<(), DomainError> {
    let clash = existing.iter().any(|m| {
        m.id != new.id
            && m.staff_user_id == new.staff_user_id
            && m.tenant_id == new.tenant_id
            && m.property_id == new.property_id
            && m.scope.kind() == new.scope.kind()
            && m.revoked_at.is_none()
            && m.validity.until() > now
            && m.validity.overlaps(&new.validity)
    });
    if clash {
        return Err(DomainError::validation(
            "scope",
            format!(
                "the staff member already holds an active {} master at this property (M-2)",
                new.scope.kind().as_str()
            ),
        ));
    }
    Ok(())
}
