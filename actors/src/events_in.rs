//! Consumed events: the envelope and payloads the reservation system publishes
//! (`docs/events/*.schema.json` is the contract; the orchestrator validates against it at
//! intake, and these serde types turn a validated envelope into domain values).

use chrono::{DateTime, Utc};
use lockstep_domain::saga::ReservationEvent;
use lockstep_domain::{
    DomainError, GuestId, PropertyId, ReservationId, RoomId, TenantId, ValidityWindow,
};
use serde::Deserialize;

/// Subjects Lockstep consumes (spec `002`, "Key events (consumed)") and handles today.
pub const RESERVATION_CONFIRMED: &str = "melmastoon.reservation.confirmed.v1";
/// `reservation.cancelled.v1`.
pub const RESERVATION_CANCELLED: &str = "melmastoon.reservation.cancelled.v1";

/// Every subject of spec `002` Lockstep binds its intake queue to.
pub const CONSUMED_SUBJECTS: &[&str] = &[RESERVATION_CONFIRMED, RESERVATION_CANCELLED];

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
    /// Property.
    pub property_id: String,
    /// Optional trace id.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Subject-specific payload.
    pub data: serde_json::Value,
}

/// `reservation.confirmed.v1` data.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReservationConfirmed {
    /// Reservation.
    pub reservation_id: String,
    /// Per-reservation revision, increasing with every event of the reservation.
    pub revision: i64,
    /// Guest id (never a name, phone or e-mail: PII stays out of Lockstep).
    pub guest_id: String,
    /// Rooms of the stay.
    pub room_ids: Vec<String>,
    /// Start of access (check-in time).
    pub valid_from: DateTime<Utc>,
    /// End of access (check-out time).
    pub valid_until: DateTime<Utc>,
}

/// `reservation.cancelled.v1` data.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReservationCancelled {
    /// Reservation.
    pub reservation_id: String,
    /// Per-reservation revision.
    pub revision: i64,
    /// Free-text reason code of the reservation system (recorded, not interpreted).
    #[serde(default)]
    pub reason: Option<String>,
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
    /// Property.
    pub property_id: PropertyId,
    /// Trace id.
    pub trace_id: Option<String>,
    /// Saga subject key, e.g. `reservation:rsv_123`.
    pub saga_subject: String,
    /// The domain event.
    pub event: ReservationEvent,
}

/// Why a message was refused (it goes to the dead-letter queue with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not JSON, or not the envelope's shape.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// A subject (or version) Lockstep does not consume.
    #[error("unknown subject")]
    UnknownSubject,
    /// The payload breaks the subject's schema or a domain rule.
    #[error("invalid payload: {0}")]
    Invalid(String),
}

impl Rejection {
    /// Short, bounded reason label (metrics, DLQ header).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnknownSubject => "unknown_subject",
            Self::Invalid(_) => "invalid_payload",
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

/// Parses a validated envelope into a domain event.
pub fn parse(envelope: &serde_json::Value) -> Result<Parsed, Rejection> {
    let env: Envelope = serde_json::from_value(envelope.clone())
        .map_err(|e| Rejection::Malformed(e.to_string()))?;
    let tenant_id = TenantId::parse(&env.tenant_id).map_err(domain)?;
    let property_id = PropertyId::parse(&env.property_id).map_err(domain)?;
    if env.id.is_empty() || env.id.len() > 64 {
        return Err(Rejection::Malformed("id must be 1 to 64 characters".into()));
    }
    let (reservation, event) = match env.subject.as_str() {
        RESERVATION_CONFIRMED => {
            let d: ReservationConfirmed = data(&env.data)?;
            let rooms = d
                .room_ids
                .iter()
                .map(|r| RoomId::parse(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(domain)?;
            if rooms.is_empty() {
                return Err(Rejection::Invalid(
                    "roomIds: at least one room (I-12)".into(),
                ));
            }
            (
                ReservationId::parse(&d.reservation_id).map_err(domain)?,
                ReservationEvent::Confirmed {
                    revision: d.revision,
                    guest_id: GuestId::parse(&d.guest_id).map_err(domain)?,
                    rooms,
                    validity: ValidityWindow::new(d.valid_from, d.valid_until).map_err(domain)?,
                },
            )
        }
        RESERVATION_CANCELLED => {
            let d: ReservationCancelled = data(&env.data)?;
            (
                ReservationId::parse(&d.reservation_id).map_err(domain)?,
                ReservationEvent::Cancelled {
                    revision: d.revision,
                },
            )
        }
        _ => return Err(Rejection::UnknownSubject),
    };
    Ok(Parsed {
        message_id: env.id,
        subject: env.subject,
        tenant_id,
        property_id,
        trace_id: env.trace_id,
        saga_subject: format!("reservation:{reservation}"),
        event,
    })
}
