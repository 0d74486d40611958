//! Master keys (spec `003` §4): scope resolution, M-1, M-2, shift-bound validity.

use chrono::Duration;
use lockstep_domain::{
    check_single_active_master, resolve_scope, CommonArea, FailureReason, HolderKind,
    KeyCredentialState, LayoutRoom, LockCapabilities, MasterKey, MasterKeyId, MasterScope,
    PropertyLayout, ShiftId, ValidityWindow,
};

use crate::builders::*;

fn layout() -> PropertyLayout {
    let r = |id: &str, floor: &str| LayoutRoom {
        room_id: room_id(id),
        floor: floor.into(),
    };
    PropertyLayout {
        rooms: vec![r("rmu_101", "1"), r("rmu_102", "1"), r("rmu_201", "2")],
        assigned_rooms: vec![room_id("rmu_201"), room_id("rmu_999")],
        areas: vec![CommonArea::Gym, CommonArea::Pool, CommonArea::BackOfHouse],
    }
}

fn caps(floors: bool, areas: bool) -> LockCapabilities {
    LockCapabilities {
        scope_floors: floors,
        scope_areas: areas,
        ..LockCapabilities::default()
    }
}

fn mky(n: u8) -> MasterKeyId {
    MasterKeyId::from_ulid(ulid::Ulid::from_parts(1_700_000_000_000, u128::from(n) + 1))
}

#[test]
fn floor_scope_without_scope_floors_enumerates_the_floors_rooms() {
    let r = resolve_scope(
        &MasterScope::Floor { floor: "1".into() },
        &caps(false, false),
        &layout(),
    )
    .unwrap();
    assert_eq!(r.rooms, vec![room_id("rmu_101"), room_id("rmu_102")]);
    assert!(r.floors.is_empty());
    let r = resolve_scope(
        &MasterScope::Floor { floor: "1".into() },
        &caps(true, false),
        &layout(),
    )
    .unwrap();
    assert_eq!(r.floors, vec!["1".to_string()]);
    assert_eq!(r.rooms.len(), 2);
}

#[test]
fn empty_floor_is_refused() {
    assert!(resolve_scope(
        &MasterScope::Floor { floor: "9".into() },
        &caps(true, true),
        &layout()
    )
    .is_err());
}

#[test]
fn rooms_all_and_rooms_assigned_resolve_to_property_rooms() {
    let all = resolve_scope(&MasterScope::RoomsAll, &caps(false, false), &layout()).unwrap();
    assert_eq!(all.rooms.len(), 3);
    let assigned =
        resolve_scope(&MasterScope::RoomsAssigned, &caps(false, false), &layout()).unwrap();
    assert_eq!(
        assigned.rooms,
        vec![room_id("rmu_201")],
        "a room of another property is dropped"
    );
    let none = PropertyLayout {
        assigned_rooms: vec![],
        ..layout()
    };
    assert!(
        resolve_scope(&MasterScope::RoomsAssigned, &caps(false, false), &none).is_err(),
        "I-12"
    );
}

#[test]
fn room_scope_must_name_a_room_of_the_property() {
    let ok = resolve_scope(
        &MasterScope::Room {
            room_id: room_id("rmu_102"),
        },
        &caps(false, false),
        &layout(),
    )
    .unwrap();
    assert_eq!(ok.rooms, vec![room_id("rmu_102")]);
    assert!(resolve_scope(
        &MasterScope::Room {
            room_id: room_id("rmu_999")
        },
        &caps(false, false),
        &layout()
    )
    .is_err());
}

#[test]
fn area_scopes_resolve_to_their_doors_with_or_without_scope_areas() {
    // Spec 003 §6.1: without scopeAreas the areas are enumerated into their doors, as a
    // floor into its rooms; the capability refuses nothing.
    for areas_cap in [false, true] {
        let r = resolve_scope(
            &MasterScope::Areas {
                areas: vec![CommonArea::Pool, CommonArea::Gym, CommonArea::Gym],
            },
            &caps(false, areas_cap),
            &layout(),
        )
        .unwrap();
        assert!(r.rooms.is_empty());
        assert_eq!(r.areas, vec![CommonArea::Gym, CommonArea::Pool]);
        assert_eq!(r.credential_scope().areas, vec!["gym", "pool"]);
    }
}

#[test]
fn areas_all_is_every_area_with_a_door_and_back_of_house_only_its_own() {
    let all = resolve_scope(&MasterScope::AreasAll, &caps(false, false), &layout()).unwrap();
    assert_eq!(
        all.areas,
        vec![CommonArea::Gym, CommonArea::Pool, CommonArea::BackOfHouse],
        "the areas that have a door, back of house included; lobby, spa and parking have none"
    );
    assert!(all.rooms.is_empty());
    let boh = resolve_scope(&MasterScope::BackOfHouse, &caps(false, true), &layout()).unwrap();
    assert_eq!(boh.areas, vec![CommonArea::BackOfHouse]);
    assert!(boh.rooms.is_empty() && boh.floors.is_empty());
}

#[test]
fn an_area_scope_naming_an_area_without_a_door_is_refused_as_scope_unresolvable() {
    // every named area must have a door: a gym-and-spa master at a property with no spa
    // door is refused, not issued for the gym alone
    let err = resolve_scope(
        &MasterScope::Areas {
            areas: vec![CommonArea::Gym, CommonArea::Spa],
        },
        &caps(false, true),
        &layout(),
    )
    .unwrap_err();
    assert!(err.detail.contains("spa"), "{err}");
    assert_eq!(err.failure_reason(), FailureReason::ScopeUnresolvable);
    assert_eq!(err.failure_reason().as_str(), "scope_unresolvable");
    assert!(resolve_scope(
        &MasterScope::Areas { areas: vec![] },
        &caps(false, true),
        &layout()
    )
    .is_err());
    let no_areas = PropertyLayout {
        areas: vec![],
        ..layout()
    };
    for scope in [MasterScope::AreasAll, MasterScope::BackOfHouse] {
        let err = resolve_scope(&scope, &caps(true, true), &no_areas).unwrap_err();
        assert_eq!(
            err.failure_reason(),
            FailureReason::ScopeUnresolvable,
            "{scope:?}"
        );
    }
    // back of house needs a back-of-house door, not just any area door
    let no_boh = PropertyLayout {
        areas: vec![CommonArea::Gym],
        ..layout()
    };
    assert!(resolve_scope(&MasterScope::BackOfHouse, &caps(false, true), &no_boh).is_err());
}

#[test]
fn an_areas_only_resolution_makes_a_valid_master_credential() {
    let r = resolve_scope(
        &MasterScope::Areas {
            areas: vec![CommonArea::Gym],
        },
        &caps(false, false),
        &layout(),
    )
    .unwrap();
    // I-3/I-12: areas-only, no rooms
    let cred = a_master_key()
        .scope(r.credential_scope())
        .rooms(vec![])
        .try_request();
    assert!(cred.is_ok());
}

#[test]
fn scope_kinds_have_the_spec_spelling() {
    let kinds = [
        (
            MasterScope::Room {
                room_id: room_id("rmu_1"),
            },
            "room",
        ),
        (MasterScope::Floor { floor: "1".into() }, "floor"),
        (MasterScope::RoomsAssigned, "rooms_assigned"),
        (MasterScope::RoomsAll, "rooms_all"),
        (MasterScope::Areas { areas: vec![] }, "areas"),
        (MasterScope::AreasAll, "areas_all"),
        (MasterScope::BackOfHouse, "back_of_house"),
    ];
    for (s, text) in kinds {
        assert_eq!(s.kind().as_str(), text);
    }
    assert_eq!(CommonArea::parse("spa").unwrap(), CommonArea::Spa);
    assert!(CommonArea::parse("roof").is_err());
}

#[test]
fn m1_a_master_key_references_a_staff_master_credential() {
    let guest = a_key_credential().requested();
    assert_eq!(guest.holder_kind(), HolderKind::Guest);
    assert!(MasterKey::new(mky(1), &guest, None, MasterScope::RoomsAll, created_at()).is_err());
    let master = a_master_key().requested();
    let m = MasterKey::new(
        mky(1),
        &master,
        Some(ShiftId::parse("shf_1").unwrap()),
        MasterScope::AreasAll,
        created_at(),
    )
    .unwrap();
    assert_eq!(m.key_credential_id, *master.id());
    assert_eq!(
        m.validity,
        master.validity(),
        "shift-bound: the credential's window"
    );
    assert_eq!(m.staff_user_id.as_str(), "usr_01");
}

fn master(n: u8, scope: MasterScope, hours: (i64, i64)) -> MasterKey {
    let cred = a_master_key().in_state(KeyCredentialState::Active);
    let mut m = MasterKey::new(mky(n), &cred, None, scope, created_at()).unwrap();
    m.validity = ValidityWindow::new(
        valid_from() + Duration::hours(hours.0),
        valid_from() + Duration::hours(hours.1),
    )
    .unwrap();
    m
}

#[test]
fn m2_one_active_master_per_property_and_scope_kind() {
    let now = valid_from() + Duration::hours(1);
    let existing = vec![master(1, MasterScope::Floor { floor: "1".into() }, (0, 8))];
    // same kind (another floor), overlapping: refused
    let clash = master(2, MasterScope::Floor { floor: "2".into() }, (4, 12));
    assert!(check_single_active_master(&existing, &clash, now).is_err());
    // another kind: allowed (a GM holds rooms_all and areas_all)
    let other = master(3, MasterScope::AreasAll, (0, 8));
    assert!(check_single_active_master(&existing, &other, now).is_ok());
    // the old one revoked (the renewal chain): allowed
    let mut revoked = existing.clone();
    revoked[0].revoke(now);
    assert!(check_single_active_master(&revoked, &clash, now).is_ok());
    // the next shift, not overlapping: allowed
    let next_shift = master(4, MasterScope::Floor { floor: "1".into() }, (8, 16));
    assert!(check_single_active_master(&existing, &next_shift, now).is_ok());
}
