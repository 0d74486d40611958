//! Intake shared by both buses: validate, then inbox + mailbox in one transaction, then
//! wake the subject's actor. The caller acknowledges its transport only after this returns.

use actix::Addr;
use lockstep_actors::events_in::Rejection;
use lockstep_actors::{Metrics, Router, Wake};
use lockstep_domain::Clock;
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
    let msg = IntakeMessage {
        message_id: parsed.message_id.clone(),
        consumer: CONSUMER.into(),
        tenant_id: parsed.tenant_id,
        property_id: parsed.property_id.clone(),
        partition,
        subject: parsed.saga_subject.clone(),
        topic: parsed.subject.clone(),
        payload: envelope,
        received_at: clock.now(),
    };
    let outcome = store.intake(&msg, fence).await?;
    match outcome {
        IntakeOutcome::Accepted => {
            metrics
                .intake_messages
                .with_label_values(&["accepted"])
                .inc();
            router.do_send(Wake(SubjectRef {
                tenant_id: msg.tenant_id,
                property_id: msg.property_id,
                partition,
                subject: msg.subject,
            }));
        }
        IntakeOutcome::Duplicate => metrics
            .intake_messages
            .with_label_values(&["duplicate"])
            .inc(),
    }
    Ok(outcome)
}
