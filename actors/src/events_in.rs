//! Consumed events: the envelope and payloads other services publish
//! (`docs/events/*.schema.json` is the contract; the orchestrator validates against it at
//! intake, and these serde types turn a validated envelope into domain values), plus the
//! internal events a saga sends itself (timers, feedback), which never leave Lockstep.

use chrono::{DateTime, Utc};
use lockstep_domain::master::{CommonArea, MasterScope};
use lockstep_domain::saga::ReservationEvent;
use lockstep_domain::shift::ShiftEvent;
use lockstep_domain::{
    DomainError, GuestId, PropertyId, ReservationId, RoomId, ShiftId, TenantId, UserId,
    ValidityWindow,
};
use serde::Deserialize;

/// `reservation.confirmed.v1`.
pub const RESERVATION_CONFIRMED: &str = "melmastoon.reservation.confirmed.v1";
/// `reservation.cancelled.v1`.
pub const RESERVATION_CANCELLED: &str = "melmastoon.reservation.cancelled.v1";
/// `reservation.checked_out.v1`.
pub const RESERVATION_CHECKED_OUT: &str = "melmastoon.reservation.checked_out.v1";
/// `reservation.dates_changed.v1`.
pub const RESERVATION_DATES_CHANGED: &str = "melmastoon.reservation.dates_changed.v1";
/// `reservation.no_show.v1`.
pub const RESERVATION_NO_SHOW: &str = "melmastoon.reservation.no_show.v1";
/// `reservation.fraud_flagged.v1`.
pub const RESERVATION_FRAUD_FLAGGED: &str = "melmastoon.reservation.fraud_flagged.v1";
/// `staff.shift.started.v1`.
pub const SHIFT_STARTED: &str = "melmastoon.staff.shift.started.v1";
/// `staff.shift.ended.v1`.
pub const SHIFT_ENDED: &str = "melmastoon.staff.shift.ended.v1";
/// `tenant.property.deactivated.v1`.
pub const PROPERTY_DEACTIVATED: &str = "melmastoon.tenant.property.deactivated.v1";
/// `iam.user.deactivated.v1`.
pub const USER_DEACTIVATED: &str = "melmastoon.iam.user.deactivated.v1";

/// `booking.confirmed.v1` (coworking, spec `001`).
pub const BOOKING_CONFIRMED: &str = "melmastoon.booking.confirmed.v1";
/// `booking.cancelled.v1` (coworking, spec `001`).
pub const BOOKING_CANCELLED: &str = "melmastoon.booking.cancelled.v1";
/// `booking.completed.v1` (coworking, spec `001`).
pub const BOOKING_COMPLETED: &str = "melmastoon.booking.completed.v1";

/// Every subject of spec `002` ("Key events (consumed)") Lockstep binds its intake to,
/// and the coworking bookings of spec `001`.
pub const CONSUMED_SUBJECTS: &[&str] = &[
    RESERVATION_CONFIRMED,
    RESERVATION_CANCELLED,
    RESERVATION_CHECKED_OUT,
    RESERVATION_DATES_CHANGED,
    RESERVATION_NO_SHOW,
    RESERVATION_FRAUD_FLAGGED,
    SHIFT_STARTED,
    SHIFT_ENDED,
    PROPERTY_DEACTIVATED,
    USER_DEACTIVATED,
    BOOKING_CONFIRMED,
    BOOKING_CANCELLED,
    BOOKING_COMPLETED,
];

/// Whether a message of `topic` may take a key off a door (cancel, checkout, no-show,
/// fraud, shift end, deactivations, an expiry, an operator's revoke or suspend): its saga
/// steps are admitted before waiting issuances (issue 11, revocations first).
pub fn is_removal_topic(topic: &str) -> bool {
    REMOVAL_TOPICS.contains(&topic)
}

/// The topics of [`is_removal_topic`].
pub const REMOVAL_TOPICS: [&str; 13] = [
    RESERVATION_CANCELLED,
    RESERVATION_CHECKED_OUT,
    RESERVATION_NO_SHOW,
    RESERVATION_FRAUD_FLAGGED,
    SHIFT_ENDED,
    PROPERTY_DEACTIVATED,
    USER_DEACTIVATED,
    BOOKING_CANCELLED,
    BOOKING_COMPLETED,
    INTERNAL_NO_SHOW_DUE,
    INTERNAL_EXPIRE,
    INTERNAL_REVOKE,
    INTERNAL_SUSPEND,
];

/// Internal: the no-show suspension timer of a reservation saga fired.
pub const INTERNAL_NO_SHOW_DUE: &str = "lockstep.internal.no_show_suspend_due";
/// Internal: a saga's credential changed state in a drive step.
pub const INTERNAL_CREDENTIAL_OBSERVED: &str = "lockstep.internal.credential_observed";
/// Internal: a credential reached its `validUntil` (DESIGN §12: revoke it as `expired`).
pub const INTERNAL_EXPIRE: &str = "lockstep.internal.expire";
/// Internal: drift found a credential missing at a device; its saga re-issues it there.
pub const INTERNAL_REISSUE: &str = "lockstep.internal.reissue";
/// Internal: O-2, a provisional credential revoked with its certificate; the stay's saga
/// re-issues its key online unless the stay holds a live one.
pub const INTERNAL_REISSUE_PROVISIONAL: &str = "lockstep.internal.reissue_provisional";
/// Internal (operator): unsuspend a credential (`POST …/unsuspend`, issue 6).
pub const INTERNAL_UNSUSPEND: &str = "lockstep.internal.unsuspend";
/// Internal (operator): move a credential's end or rooms (`PATCH …/{id}`).
pub const INTERNAL_UPDATE: &str = "lockstep.internal.update";
/// Internal (operator): suspend a credential (`POST …/suspend`).
pub const INTERNAL_SUSPEND: &str = "lockstep.internal.suspend";
/// Internal (operator): lost-key replace, revoke + re-issue as one unit (`POST …/replace`).
pub const INTERNAL_REPLACE: &str = "lockstep.internal.replace";
/// Internal: revoke one credential on behalf of a property-wide or user-wide event.
pub const INTERNAL_REVOKE: &str = "lockstep.internal.revoke";

/// The envelope every event travels in.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    /// Unique message id (ULID or UUID): the inbox dedupe key.
    pub id: String,
    /// Topic subject; equals the routing key.
    pub subject: String,
    /// When the publisher created it.
    pub time: DateTime<Utc>,
    /// Tenant (UUID).
    pub tenant_id: String,
    /// Property (absent only on `iam.user.deactivated.v1`).
    #[serde(default)]
    pub property_id: Option<String>,
    /// Optional trace id.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Subject-specific payload.
    pub data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Confirmed {
    reservation_id: String,
    revision: i64,
    guest_id: String,
    room_ids: Vec<String>,
    valid_from: DateTime<Utc>,
    valid_until: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Revised {
    reservation_id: String,
    revision: i64,
    #[serde(default)]
    #[allow(dead_code)] // recorded upstream; Lockstep does not interpret it
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DatesChanged {
    reservation_id: String,
    revision: i64,
    valid_from: DateTime<Utc>,
    valid_until: DateTime<Utc>,
    #[serde(default)]
    room_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BookingConfirmed {
    booking_id: String,
    revision: i64,
    member_id: String,
    room_ids: Vec<String>,
    valid_from: DateTime<Utc>,
    valid_until: DateTime<Utc>,
}

impl From<BookingConfirmed> for Confirmed {
    fn from(b: BookingConfirmed) -> Self {
        Self {
            reservation_id: b.booking_id,
            revision: b.revision,
            guest_id: b.member_id,
            room_ids: b.room_ids,
            valid_from: b.valid_from,
            valid_until: b.valid_until,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BookingEnded {
    booking_id: String,
    revision: i64,
    #[serde(default)]
    reason: Option<String>,
}

impl From<BookingEnded> for Revised {
    fn from(b: BookingEnded) -> Self {
        Self {
            reservation_id: b.booking_id,
            revision: b.revision,
            reason: b.reason,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Scope {
    kind: String,
    #[serde(default)]
    room_ids: Vec<String>,
    #[serde(default)]
    floor: Option<String>,
    #[serde(default)]
    areas: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ShiftStarted {
    shift_id: String,
    staff_user_id: String,
    scope: Scope,
    valid_from: DateTime<Utc>,
    valid_until: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ShiftEnded {
    shift_id: String,
    staff_user_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PropertyDeactivated {
    #[serde(default)]
    #[allow(dead_code)] // recorded upstream
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserDeactivated {
    user_id: String,
}

/// What a consumed event means, in domain terms.
#[derive(Debug, Clone)]
pub enum Consumed {
    /// An input of a reservation's saga.
    Reservation {
        /// Reservation.
        reservation_id: ReservationId,
        /// Input.
        event: ReservationEvent,
    },
    /// An input of a shift's saga. The staff member comes with it so the saga can be
    /// addressed and M-2 checked.
    Shift {
        /// Shift.
        shift_id: ShiftId,
        /// Staff member.
        staff_user_id: UserId,
        /// Input.
        event: ShiftEvent,
        /// Rooms the scope names (floor, assigned rooms, a room).
        scope_rooms: Vec<RoomId>,
    },
    /// Revoke every live credential of the property.
    PropertyDeactivated,
    /// Revoke every live master of the user (fanned out per property at intake).
    UserDeactivated {
        /// The user.
        user_id: UserId,
    },
}

impl Consumed {
    /// Whether it may put a key on a door: a confirmation, a change of dates (it may name
    /// new rooms) or a shift's start. The others only take keys away. At a deactivated
    /// property these are refused, at intake and again at their step (issue 14).
    pub fn adds_keys(&self) -> bool {
        use lockstep_domain::shift::ShiftEvent;
        matches!(
            self,
            Consumed::Reservation {
                event: ReservationEvent::Confirmed { .. } | ReservationEvent::DatesChanged { .. },
                ..
            } | Consumed::Shift {
                event: ShiftEvent::Started { .. },
                ..
            }
        )
    }
}

/// A consumed event, parsed and converted into domain values.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Envelope id.
    pub message_id: String,
    /// Subject.
    pub subject: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property (`None` only for a user deactivation before its fan-out).
    pub property_id: Option<PropertyId>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// When the publisher created it.
    pub time: DateTime<Utc>,
    /// Saga subject key, e.g. `reservation:rsv_123`.
    pub saga_subject: String,
    /// What it means.
    pub event: Consumed,
}

/// Why a message was refused (it goes to the dead-letter queue with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not JSON, or not the envelope's shape.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// An object of it names the same key twice: `serde_json` would keep the last, another
    /// reader the first, so its meaning is ambiguous (issue 14).
    #[error("{0}")]
    DuplicateKey(String),
    /// A subject (or version) Lockstep does not consume.
    #[error("unknown subject")]
    UnknownSubject,
    /// The payload breaks the subject's schema or a domain rule.
    #[error("invalid payload: {0}")]
    Invalid(String),
    /// The broker user that published it may not publish this subject (DESIGN §4).
    #[error("publisher not allowed for this subject")]
    UnauthorizedPublisher,
    /// The routing key it arrived on names another subject than its envelope: it is
    /// applied by neither (a `confirmed` key carrying a `cancelled` body must not revoke).
    #[error("routing key {routing_key} does not match the envelope subject {subject}")]
    SubjectMismatch {
        /// The routing key it was published with.
        routing_key: String,
        /// The envelope's subject.
        subject: String,
    },
    /// A stay at a property where Lockstep knows no lock (no live device).
    #[error("unknown property: no live lock is registered at {0}")]
    UnknownProperty(String),
    /// A stay in a room no live device serves: no key could open its door.
    #[error("no live lock serves room {0}")]
    UnservedRoom(String),
    /// A stay whose window has already ended: a key for it could never open a door.
    #[error("the stay ended at {0}")]
    WindowEnded(String),
    /// An event that would put a key on a door of a property the tenant service has
    /// deactivated (a confirmation, a date change, a shift start): it issues nothing.
    #[error("property {0} is deactivated")]
    PropertyDeactivated(String),
}

impl Rejection {
    /// Short, bounded reason label (metrics, DLQ header).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::DuplicateKey(_) => "duplicate_key",
            Self::UnknownSubject => "unknown_subject",
            Self::Invalid(_) => "invalid_payload",
            Self::UnauthorizedPublisher => "unauthorized_publisher",
            Self::SubjectMismatch { .. } => "subject_mismatch",
            Self::UnknownProperty(_) => "unknown_property",
            Self::UnservedRoom(_) => "unserved_room",
            Self::WindowEnded(_) => "window_ended",
            Self::PropertyDeactivated(_) => "property_deactivated",
        }
    }
}

fn domain(e: DomainError) -> Rejection {
    match e {
        DomainError::Validation { field, reason } => {
            Rejection::Invalid(format!("{field}: {reason}"))
        }
        other => Rejection::Invalid(other.code().to_owned()),
    }
}

fn data<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, Rejection> {
    serde_json::from_value(v.clone()).map_err(|e| Rejection::Invalid(e.to_string()))
}

fn rooms(ids: &[String]) -> Result<Vec<RoomId>, Rejection> {
    ids.iter()
        .map(|r| RoomId::parse(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(domain)
}

fn scope(s: &Scope) -> Result<MasterScope, Rejection> {
    let one_room = || -> Result<RoomId, Rejection> {
        match s.room_ids.as_slice() {
            [r] => RoomId::parse(r).map_err(domain),
            _ => Err(Rejection::Invalid(
                "scope.roomIds: a room scope names exactly one room".into(),
            )),
        }
    };
    Ok(match s.kind.as_str() {
        "room" => MasterScope::Room {
            room_id: one_room()?,
        },
        "floor" => MasterScope::Floor {
            floor: s.floor.clone().ok_or_else(|| {
                Rejection::Invalid("scope.floor: required for a floor scope".into())
            })?,
        },
        "rooms_assigned" => MasterScope::RoomsAssigned,
        "rooms_all" => MasterScope::RoomsAll,
        "areas" => MasterScope::Areas {
            areas: s
                .areas
                .iter()
                .map(|a| CommonArea::parse(a).map_err(domain))
                .collect::<Result<Vec<_>, _>>()?,
        },
        "areas_all" => MasterScope::AreasAll,
        "back_of_house" => MasterScope::BackOfHouse,
        _ => return Err(Rejection::Invalid("scope.kind: unknown".into())),
    })
}

/// Parses a validated envelope into domain values.
pub fn parse(envelope: &serde_json::Value) -> Result<Parsed, Rejection> {
    let env: Envelope = serde_json::from_value(envelope.clone())
        .map_err(|e| Rejection::Malformed(e.to_string()))?;
    let tenant_id = TenantId::parse(&env.tenant_id).map_err(domain)?;
    let property_id = env
        .property_id
        .as_deref()
        .map(PropertyId::parse)
        .transpose()
        .map_err(domain)?;
    if env.id.is_empty() || env.id.len() > 64 {
        return Err(Rejection::Malformed("id must be 1 to 64 characters".into()));
    }
    let reservation =
        |id: &str, event: ReservationEvent| -> Result<(String, Consumed), Rejection> {
            let reservation_id = ReservationId::parse(id).map_err(domain)?;
            Ok((
                lockstep_domain::saga::subject_for_reservation(&reservation_id),
                Consumed::Reservation {
                    reservation_id,
                    event,
                },
            ))
        };
    let window = |from, until| ValidityWindow::new(from, until).map_err(domain);
    let (saga_subject, event) = match env.subject.as_str() {
        // A coworking booking is a stay like a reservation (spec `001`): the booking is the
        // saga's subject and the member holds the key.
        RESERVATION_CONFIRMED | BOOKING_CONFIRMED => {
            let d: Confirmed = if env.subject == BOOKING_CONFIRMED {
                data::<BookingConfirmed>(&env.data)?.into()
            } else {
                data(&env.data)?
            };
            let rooms = rooms(&d.room_ids)?;
            if rooms.is_empty() {
                return Err(Rejection::Invalid(
                    "roomIds: at least one room (I-12)".into(),
                ));
            }
            reservation(
                &d.reservation_id,
                ReservationEvent::Confirmed {
                    revision: d.revision,
                    guest_id: GuestId::parse(&d.guest_id).map_err(domain)?,
                    rooms,
                    validity: window(d.valid_from, d.valid_until)?,
                },
            )?
        }
        RESERVATION_CANCELLED
        | RESERVATION_CHECKED_OUT
        | RESERVATION_NO_SHOW
        | RESERVATION_FRAUD_FLAGGED
        | BOOKING_CANCELLED
        | BOOKING_COMPLETED => {
            let d: Revised = match env.subject.as_str() {
                BOOKING_CANCELLED | BOOKING_COMPLETED => data::<BookingEnded>(&env.data)?.into(),
                _ => data(&env.data)?,
            };
            let revision = d.revision;
            let event = match env.subject.as_str() {
                RESERVATION_CANCELLED | BOOKING_CANCELLED => {
                    ReservationEvent::Cancelled { revision }
                }
                RESERVATION_CHECKED_OUT | BOOKING_COMPLETED => {
                    ReservationEvent::CheckedOut { revision }
                }
                RESERVATION_NO_SHOW => ReservationEvent::NoShow { revision },
                _ => ReservationEvent::FraudFlagged { revision },
            };
            reservation(&d.reservation_id, event)?
        }
        RESERVATION_DATES_CHANGED => {
            let d: DatesChanged = data(&env.data)?;
            let new_rooms = d.room_ids.as_deref().map(rooms).transpose()?;
            reservation(
                &d.reservation_id,
                ReservationEvent::DatesChanged {
                    revision: d.revision,
                    validity: window(d.valid_from, d.valid_until)?,
                    rooms: new_rooms,
                },
            )?
        }
        SHIFT_STARTED => {
            let d: ShiftStarted = data(&env.data)?;
            let shift_id = ShiftId::parse(&d.shift_id).map_err(domain)?;
            (
                lockstep_domain::shift::subject_for_shift(&shift_id),
                Consumed::Shift {
                    staff_user_id: UserId::parse(&d.staff_user_id).map_err(domain)?,
                    event: ShiftEvent::Started {
                        shift_id: shift_id.clone(),
                        staff_user_id: UserId::parse(&d.staff_user_id).map_err(domain)?,
                        scope: scope(&d.scope)?,
                        validity: window(d.valid_from, d.valid_until)?,
                    },
                    scope_rooms: rooms(&d.scope.room_ids)?,
                    shift_id,
                },
            )
        }
        SHIFT_ENDED => {
            let d: ShiftEnded = data(&env.data)?;
            let shift_id = ShiftId::parse(&d.shift_id).map_err(domain)?;
            (
                lockstep_domain::shift::subject_for_shift(&shift_id),
                Consumed::Shift {
                    staff_user_id: UserId::parse(&d.staff_user_id).map_err(domain)?,
                    event: ShiftEvent::Ended {
                        shift_id: shift_id.clone(),
                    },
                    scope_rooms: Vec::new(),
                    shift_id,
                },
            )
        }
        PROPERTY_DEACTIVATED => {
            let _: PropertyDeactivated = data(&env.data)?;
            let p = property_id
                .as_ref()
                .ok_or_else(|| Rejection::Invalid("propertyId: required".into()))?;
            (format!("property:{p}"), Consumed::PropertyDeactivated)
        }
        USER_DEACTIVATED => {
            let d: UserDeactivated = data(&env.data)?;
            let user_id = UserId::parse(&d.user_id).map_err(domain)?;
            (
                format!("user:{user_id}"),
                Consumed::UserDeactivated { user_id },
            )
        }
        _ => return Err(Rejection::UnknownSubject),
    };
    if property_id.is_none() && !matches!(event, Consumed::UserDeactivated { .. }) {
        return Err(Rejection::Malformed(
            "propertyId is required for this subject".into(),
        ));
    }
    Ok(Parsed {
        message_id: env.id,
        subject: env.subject,
        tenant_id,
        property_id,
        trace_id: env.trace_id,
        time: env.time,
        saga_subject,
        event,
    })
}
