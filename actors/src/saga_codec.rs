//! The stored (JSON) form of the sagas' state. The domain derives no serde (STYLE), so the
//! mapping lives here, at the edge, field by field; a stored state that does not decode is
//! corrupt and its step is retried, never silently reset.

use lockstep_domain::master::{CommonArea, MasterScope};
use lockstep_domain::saga::{Ended, ReservationSaga, StayEnd, TrackedCredential, Versioned};
use lockstep_domain::shift::{ShiftSaga, ShiftStart, TrackedMaster};
use lockstep_domain::{
    FailureReason, GuestId, KeyCredentialId, KeyCredentialKind, KeyCredentialState, MasterKeyId,
    RoomId, ShiftId, Timestamp, UserId, ValidityWindow,
};
use serde_json::{json, Value};

/// Why a stored state did not decode.
#[derive(Debug, thiserror::Error)]
#[error("corrupt saga state: {0}")]
pub struct Corrupt(String);

fn bad(what: &str) -> Corrupt {
    Corrupt(what.to_owned())
}

fn ts(v: &Value, k: &str) -> Result<Timestamp, Corrupt> {
    v.get(k)
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok_or_else(|| bad(k))
}

fn window_json(w: &ValidityWindow) -> Value {
    json!({ "from": w.from().to_rfc3339(), "until": w.until().to_rfc3339() })
}

fn window(v: &Value) -> Result<ValidityWindow, Corrupt> {
    ValidityWindow::new(ts(v, "from")?, ts(v, "until")?).map_err(|_| bad("window"))
}

fn rooms_json(r: &[RoomId]) -> Value {
    json!(r.iter().map(|r| r.as_str()).collect::<Vec<_>>())
}

fn rooms(v: &Value) -> Result<Vec<RoomId>, Corrupt> {
    v.as_array()
        .ok_or_else(|| bad("rooms"))?
        .iter()
        .map(|r| {
            r.as_str()
                .and_then(|s| RoomId::parse(s).ok())
                .ok_or_else(|| bad("room"))
        })
        .collect()
}

fn opt<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|x| !x.is_null())
}

fn parse_with<T, E>(
    v: Option<&Value>,
    f: impl Fn(&str) -> Result<T, E>,
    what: &str,
) -> Result<Option<T>, Corrupt> {
    match v {
        None => Ok(None),
        Some(x) => x
            .as_str()
            .and_then(|s| f(s).ok())
            .map(Some)
            .ok_or_else(|| bad(what)),
    }
}

/// The stored form of a reservation saga.
pub fn reservation_to_json(s: &ReservationSaga) -> Value {
    json!({
        "revision": s.revision,
        "guestId": s.guest_id.as_ref().map(|g| g.as_str()),
        "confirmed": s.confirmed,
        "window": s.window.as_ref().map(|w| json!({ "revision": w.revision, "value": window_json(&w.value) })),
        "rooms": s.rooms.as_ref().map(|r| json!({ "revision": r.revision, "value": rooms_json(&r.value) })),
        "ended": s.ended.as_ref().map(|e| json!({
            "reason": match e.reason { StayEnd::Cancelled => "cancelled", StayEnd::CheckedOut => "checked_out" },
            "revision": e.revision,
        })),
        "fraudFlagged": s.fraud_flagged,
        "noShow": s.no_show,
        "noShowSuspendDue": s.no_show_suspend_due,
        "credential": s.credential.as_ref().map(|c| json!({
            "id": c.id.as_str(),
            "kind": c.kind.as_str(),
            "state": c.state.as_str(),
            "failureReason": c.failure_reason.map(|f| f.as_str()),
            "validity": window_json(&c.validity),
            "rooms": rooms_json(&c.rooms),
            "issuedUntil": c.issued_until.to_rfc3339(),
        })),
        "triedKinds": s.tried_kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "gaveUp": s.gave_up.map(|f| f.as_str()),
        "suspensionClearedThrough": s.suspension_cleared_through,
    })
}

/// Decodes what [`reservation_to_json`] stored.
pub fn reservation_from_json(v: &Value) -> Result<ReservationSaga, Corrupt> {
    let credential = match opt(v, "credential") {
        None => None,
        Some(c) => Some(TrackedCredential {
            id: parse_with(opt(c, "id"), KeyCredentialId::parse, "credential.id")?
                .ok_or_else(|| bad("credential.id"))?,
            kind: parse_with(opt(c, "kind"), KeyCredentialKind::parse, "credential.kind")?
                .ok_or_else(|| bad("credential.kind"))?,
            state: parse_with(
                opt(c, "state"),
                KeyCredentialState::parse,
                "credential.state",
            )?
            .ok_or_else(|| bad("credential.state"))?,
            failure_reason: parse_with(
                opt(c, "failureReason"),
                FailureReason::parse,
                "credential.failureReason",
            )?,
            validity: window(
                c.get("validity")
                    .ok_or_else(|| bad("credential.validity"))?,
            )?,
            rooms: rooms(c.get("rooms").ok_or_else(|| bad("credential.rooms"))?)?,
            issued_until: ts(c, "issuedUntil")?,
        }),
    };
    Ok(ReservationSaga {
        revision: opt(v, "revision").and_then(Value::as_i64),
        guest_id: parse_with(opt(v, "guestId"), GuestId::parse, "guestId")?,
        confirmed: v.get("confirmed").and_then(Value::as_bool).unwrap_or(false),
        window: match opt(v, "window") {
            None => None,
            Some(w) => Some(Versioned {
                revision: w
                    .get("revision")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| bad("window.revision"))?,
                value: window(w.get("value").ok_or_else(|| bad("window.value"))?)?,
            }),
        },
        rooms: match opt(v, "rooms") {
            None => None,
            Some(r) => Some(Versioned {
                revision: r
                    .get("revision")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| bad("rooms.revision"))?,
                value: rooms(r.get("value").ok_or_else(|| bad("rooms.value"))?)?,
            }),
        },
        ended: match opt(v, "ended") {
            None => None,
            Some(e) => Some(Ended {
                reason: match e.get("reason").and_then(Value::as_str) {
                    Some("cancelled") => StayEnd::Cancelled,
                    Some("checked_out") => StayEnd::CheckedOut,
                    _ => return Err(bad("ended.reason")),
                },
                revision: e
                    .get("revision")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| bad("ended.revision"))?,
            }),
        },
        fraud_flagged: v
            .get("fraudFlagged")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        no_show: v.get("noShow").and_then(Value::as_bool).unwrap_or(false),
        no_show_suspend_due: v
            .get("noShowSuspendDue")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        credential,
        tried_kinds: v
            .get("triedKinds")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().and_then(|s| KeyCredentialKind::parse(s).ok()))
                    .collect()
            })
            .unwrap_or_default(),
        gave_up: parse_with(opt(v, "gaveUp"), FailureReason::parse, "gaveUp")?,
        suspension_cleared_through: opt(v, "suspensionClearedThrough").and_then(Value::as_i64),
    })
}

/// The stored form of a master scope.
pub fn scope_to_json(s: &MasterScope) -> Value {
    match s {
        MasterScope::Room { room_id } => json!({ "kind": "room", "roomId": room_id.as_str() }),
        MasterScope::Floor { floor } => json!({ "kind": "floor", "floor": floor }),
        MasterScope::RoomsAssigned => json!({ "kind": "rooms_assigned" }),
        MasterScope::RoomsAll => json!({ "kind": "rooms_all" }),
        MasterScope::Areas { areas } => {
            json!({ "kind": "areas", "areas": areas.iter().map(|a| a.as_str()).collect::<Vec<_>>() })
        }
        MasterScope::AreasAll => json!({ "kind": "areas_all" }),
        MasterScope::BackOfHouse => json!({ "kind": "back_of_house" }),
    }
}

fn scope_from_json(v: &Value) -> Result<MasterScope, Corrupt> {
    Ok(match v.get("kind").and_then(Value::as_str) {
        Some("room") => MasterScope::Room {
            room_id: parse_with(opt(v, "roomId"), RoomId::parse, "scope.roomId")?
                .ok_or_else(|| bad("scope.roomId"))?,
        },
        Some("floor") => MasterScope::Floor {
            floor: v
                .get("floor")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("scope.floor"))?
                .to_owned(),
        },
        Some("rooms_assigned") => MasterScope::RoomsAssigned,
        Some("rooms_all") => MasterScope::RoomsAll,
        Some("areas") => MasterScope::Areas {
            areas: v
                .get("areas")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("scope.areas"))?
                .iter()
                .map(|a| {
                    a.as_str()
                        .and_then(|s| CommonArea::parse(s).ok())
                        .ok_or_else(|| bad("scope.area"))
                })
                .collect::<Result<_, _>>()?,
        },
        Some("areas_all") => MasterScope::AreasAll,
        Some("back_of_house") => MasterScope::BackOfHouse,
        _ => return Err(bad("scope.kind")),
    })
}

/// The stored form of a shift saga.
pub fn shift_to_json(s: &ShiftSaga) -> Value {
    json!({
        "started": s.started.as_ref().map(|st| json!({
            "shiftId": st.shift_id.as_str(),
            "staffUserId": st.staff_user_id.as_str(),
            "scope": scope_to_json(&st.scope),
            "validity": window_json(&st.validity),
        })),
        "ended": s.ended,
        "deactivatedUser": s.deactivated_user.as_ref().map(|u| u.as_str()),
        "master": s.master.as_ref().map(|m| json!({
            "masterKeyId": m.master_key_id.as_str(),
            "credentialId": m.credential_id.as_str(),
            "state": m.state.as_str(),
        })),
    })
}

/// Decodes what [`shift_to_json`] stored.
pub fn shift_from_json(v: &Value) -> Result<ShiftSaga, Corrupt> {
    Ok(ShiftSaga {
        started: match opt(v, "started") {
            None => None,
            Some(st) => Some(ShiftStart {
                shift_id: parse_with(opt(st, "shiftId"), ShiftId::parse, "shiftId")?
                    .ok_or_else(|| bad("shiftId"))?,
                staff_user_id: parse_with(opt(st, "staffUserId"), UserId::parse, "staffUserId")?
                    .ok_or_else(|| bad("staffUserId"))?,
                scope: scope_from_json(st.get("scope").ok_or_else(|| bad("scope"))?)?,
                validity: window(st.get("validity").ok_or_else(|| bad("validity"))?)?,
            }),
        },
        ended: v.get("ended").and_then(Value::as_bool).unwrap_or(false),
        deactivated_user: parse_with(opt(v, "deactivatedUser"), UserId::parse, "deactivatedUser")?,
        master: match opt(v, "master") {
            None => None,
            Some(m) => Some(TrackedMaster {
                master_key_id: parse_with(
                    opt(m, "masterKeyId"),
                    MasterKeyId::parse,
                    "masterKeyId",
                )?
                .ok_or_else(|| bad("masterKeyId"))?,
                credential_id: parse_with(
                    opt(m, "credentialId"),
                    KeyCredentialId::parse,
                    "credentialId",
                )?
                .ok_or_else(|| bad("credentialId"))?,
                state: parse_with(opt(m, "state"), KeyCredentialState::parse, "state")?
                    .ok_or_else(|| bad("state"))?,
            }),
        },
    })
}
