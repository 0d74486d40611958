//! Intake shared by both buses: validate, then inbox + mailbox in one transaction, then
//! wake the subject's actor. The caller acknowledges its transport only after this returns.

use actix::Addr;
use lockstep_actors::events_in::{Consumed, Parsed, Rejection};
use lockstep_actors::{Metrics, Router, Wake};
use lockstep_domain::saga::ReservationEvent;
use lockstep_domain::Clock;
use lockstep_domain::{PropertyId, RoomId, TenantId};
use lockstep_persistence::{Fence, IntakeMessage, IntakeOutcome, Store, StoreError, SubjectRef};

use crate::schema::EventSchemas;

/// Consumer name recorded in the inbox.
pub const CONSUMER: &str = "lockstep.saga";

/// Why intake did not store a message.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Bad input: dead-letter it with this reason.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The store failed: do not acknowledge; the transport redelivers.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The properties where the user of a `iam.user.deactivated` holds a live master key.
///
/// Also records the deactivation itself, so a shift start that arrives after it (reordered
/// delivery) issues no master key even where the user holds none yet.
pub async fn user_properties(
    store: &dyn Store,
    parsed: &Parsed,
) -> Result<Vec<PropertyId>, IntakeError> {
    let Consumed::UserDeactivated { user_id } = &parsed.event else {
        return Err(Rejection::Malformed("propertyId is required".into()).into());
    };
    store
        .record_user_deactivated(parsed.tenant_id, user_id.as_str(), parsed.time)
        .await?;
    let mut props: Vec<PropertyId> = store
        .active_masters_of_user(parsed.tenant_id, user_id.as_str())
        .await?
        .into_iter()
        .map(|m| m.property_id)
        .collect();
    props.sort();
    props.dedup();
    Ok(props)
}

/// What intake last read of a property for [`admit`], kept for [`ADMIT_CACHE_TTL`]
/// (issue 11): under a burst, two reads per confirmation (deactivation, served rooms) in
/// the intake loop were two thirds of the engine's transactions and held every message
/// behind them, the cancellations included.
///
/// Only what lets a message in is kept: "not deactivated" and the rooms served when read.
/// A room missing from the kept set is read again before a stay is refused. What a stale
/// entry can let in is caught later, where it is enforced: a deactivation recorded by
/// another node in the last seconds is refused by the step's own guard (no key is issued),
/// and a room whose last lock was decommissioned meanwhile ends at the step as it would
/// without the intake check. A deactivation recorded here, or a device decommissioned
/// through this node's API, drops the entry at once.
#[derive(Debug, Default)]
pub struct AdmitCache(std::sync::Mutex<std::collections::HashMap<(TenantId, PropertyId), Known>>);

/// How long [`AdmitCache`] keeps what it read.
pub const ADMIT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug)]
struct Known {
    read_at: chrono::DateTime<chrono::Utc>,
    /// The property's served rooms, when read.
    rooms: Option<Vec<RoomId>>,
}

impl AdmitCache {
    fn fresh<T>(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        tenant: TenantId,
        property: &PropertyId,
        f: impl FnOnce(&Known) -> T,
    ) -> Option<T> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(tenant, property.clone()))
            .filter(|k| Self::young(k, now))
            .map(f)
    }

    fn young(k: &Known, now: chrono::DateTime<chrono::Utc>) -> bool {
        (now - k.read_at)
            .to_std()
            .is_ok_and(|age| age < ADMIT_CACHE_TTL)
    }

    fn keep(&self, now: chrono::DateTime<chrono::Utc>, tenant: TenantId, property: &PropertyId) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, k| Self::young(k, now));
        }
        map.insert(
            (tenant, property.clone()),
            Known {
                read_at: now,
                rooms: None,
            },
        );
    }

    fn set_rooms(&self, tenant: TenantId, property: &PropertyId, rooms: Vec<RoomId>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = map.get_mut(&(tenant, property.clone())) {
            k.rooms = Some(rooms);
        }
    }

    /// Drops what is kept of a property: it changed here (deactivated, a device retired).
    pub fn forget(&self, tenant: TenantId, property: &PropertyId) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&(tenant, property.clone()));
    }
}

/// Refuses a stay no key could serve, where it enters Lockstep (the AMQP intake, the HTTP
/// intake, the API's writes) rather than accepting it to do nothing: a confirmation whose
/// window has already ended (`window_ended`), at a property where no live lock is
/// registered (`unknown_property`), or for a room no live lock serves (`unserved_room`).
/// Only a confirmation is judged: the events that follow one may only take a key away.
/// Reads the property's deactivation and rooms at most once per [`ADMIT_CACHE_TTL`]
/// (`cache`). Also: an event that would add a key at a deactivated property is refused
/// (`property_deactivated`), and a property's deactivation is recorded here, where it
/// enters.
pub async fn admit(
    store: &dyn Store,
    clock: &dyn Clock,
    cache: &AdmitCache,
    parsed: &Parsed,
) -> Result<(), IntakeError> {
    let Some(property) = &parsed.property_id else {
        return Ok(());
    };
    let tenant = parsed.tenant_id;
    // A property's deactivation is recorded where it enters, before it is stored, so an
    // event that would put a key on its doors and is judged after it is refused even when
    // delivered out of order (issue 14: the decision in ARCHITECTURE.md).
    if matches!(parsed.event, Consumed::PropertyDeactivated) {
        store
            .record_property_deactivated(tenant, property, parsed.time)
            .await?;
        cache.forget(tenant, property);
        return Ok(());
    }
    let now = clock.now();
    if parsed.event.adds_keys() && cache.fresh(now, tenant, property, |_| ()).is_none() {
        if store
            .property_deactivated_at(tenant, property)
            .await?
            .is_some()
        {
            return Err(Rejection::PropertyDeactivated(property.to_string()).into());
        }
        cache.keep(now, tenant, property);
    }
    let Consumed::Reservation {
        event: ReservationEvent::Confirmed {
            rooms, validity, ..
        },
        ..
    } = &parsed.event
    else {
        return Ok(());
    };
    if validity.until() <= now {
        return Err(Rejection::WindowEnded(validity.until().to_rfc3339()).into());
    }
    let all_kept = cache.fresh(now, tenant, property, |k| {
        k.rooms
            .as_ref()
            .is_some_and(|kept| rooms.iter().all(|r| kept.contains(r)))
    });
    if all_kept == Some(true) {
        return Ok(());
    }
    let served = store.property_rooms(tenant, property).await?;
    if served.is_empty() {
        return Err(Rejection::UnknownProperty(property.to_string()).into());
    }
    if let Some(room) = rooms.iter().find(|r| !served.contains(r)) {
        return Err(Rejection::UnservedRoom(room.to_string()).into());
    }
    // kept beside the deactivation's answer this message was admitted on (and as old)
    cache.set_rooms(tenant, property, served);
    Ok(())
}

/// Validates and stores one message for `partition`; wakes its subject when stored.
#[allow(clippy::too_many_arguments)]
pub async fn accept(
    schemas: &EventSchemas,
    store: &dyn Store,
    clock: &dyn Clock,
    router: &Addr<Router>,
    metrics: &Metrics,
    bytes: &[u8],
    partition: i32,
    fence: Option<Fence>,
) -> Result<IntakeOutcome, IntakeError> {
    let mut wakes = Vec::new();
    let outcome = store_one(
        schemas, store, clock, metrics, bytes, partition, fence, &mut wakes,
    )
    .await?;
    for w in wakes {
        router.do_send(w);
    }
    Ok(outcome)
}

/// [`accept`] without the wakes sent: they are added to `wakes` for the caller to send
/// (or hold behind a backlog, `bus::amqp`).
#[allow(clippy::too_many_arguments)]
pub async fn store_one(
    schemas: &EventSchemas,
    store: &dyn Store,
    clock: &dyn Clock,
    metrics: &Metrics,
    bytes: &[u8],
    partition: i32,
    fence: Option<Fence>,
    wakes: &mut Vec<Wake>,
) -> Result<IntakeOutcome, IntakeError> {
    let msgs = prepare(schemas, store, clock, metrics, bytes, partition).await?;
    let mut outcome = IntakeOutcome::Duplicate;
    for msg in msgs {
        let stored = store.intake(&msg, fence).await?;
        if stored == IntakeOutcome::Accepted {
            outcome = IntakeOutcome::Accepted;
        }
        wakes.extend(counted(metrics, msg, stored));
    }
    Ok(outcome)
}

/// Validates one message for `partition` and gives what to store for it: one message, or
/// one per property for a user deactivation (which names no property: it fans out to
/// every property where the user holds a live master key, DESIGN §4).
pub async fn prepare(
    schemas: &EventSchemas,
    store: &dyn Store,
    clock: &dyn Clock,
    metrics: &Metrics,
    bytes: &[u8],
    partition: i32,
) -> Result<Vec<IntakeMessage>, IntakeError> {
    let (envelope, parsed) = match schemas.check_consumed(bytes) {
        Ok(v) => v,
        Err(r) => {
            metrics
                .intake_messages
                .with_label_values(&["rejected"])
                .inc();
            return Err(r.into());
        }
    };
    let received_at = clock.now();
    let fan_out = matches!(parsed.event, Consumed::UserDeactivated { .. });
    let properties = match &parsed.property_id {
        Some(p) => vec![p.clone()],
        None => user_properties(store, &parsed).await?,
    };
    Ok(properties
        .into_iter()
        .map(|property_id| IntakeMessage {
            // One user deactivation is one message per property: each copy is deduped
            // alone.
            message_id: if fan_out {
                format!("{}:{}", parsed.message_id, property_id)
            } else {
                parsed.message_id.clone()
            },
            consumer: CONSUMER.into(),
            tenant_id: parsed.tenant_id,
            property_id,
            partition,
            subject: parsed.saga_subject.clone(),
            topic: parsed.subject.clone(),
            payload: envelope.clone(),
            received_at,
        })
        .collect())
}

/// After the commit that stored `msg` (or found it stored): counts it and, when it is
/// new, wakes its subject.
pub fn settled(
    router: &Addr<Router>,
    metrics: &Metrics,
    msg: IntakeMessage,
    outcome: IntakeOutcome,
) {
    if let Some(wake) = counted(metrics, msg, outcome) {
        router.do_send(wake);
    }
}

/// Counts a stored (or duplicate) message and gives the wake its subject needs, if new.
pub fn counted(metrics: &Metrics, msg: IntakeMessage, outcome: IntakeOutcome) -> Option<Wake> {
    match outcome {
        IntakeOutcome::Accepted => {
            metrics
                .intake_messages
                .with_label_values(&["accepted"])
                .inc();
            Some(Wake::for_topic(
                SubjectRef {
                    tenant_id: msg.tenant_id,
                    property_id: msg.property_id,
                    partition: msg.partition,
                    subject: msg.subject,
                },
                &msg.topic,
            ))
        }
        IntakeOutcome::Duplicate => {
            metrics
                .intake_messages
                .with_label_values(&["duplicate"])
                .inc();
            None
        }
    }
}
