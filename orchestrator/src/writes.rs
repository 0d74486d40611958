//! Operator writes on a credential (spec `002` Key APIs): revoke, suspend, unsuspend and
//! the lost-key replace. Each becomes a command on the credential's saga subject and
//! travels the partitioned path ([`crate::commands`]); the request waits for its step and
//! answers 200 with the credential, or 202 with its location when the step has not run
//! within the deadline (the vendor side always continues in the background: the door
//! truth shows it).
//!
//! Roles: revoke, suspend and unsuspend for operators, admins and platform services;
//! replace (a guest lost a key at the desk) for operators and admins and services.
//! `Idempotency-Key` (1 to 60 letters, digits, `-`, `_`) makes a retried request the same
//! command: it is stored once and answers with the first one's outcome.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use lockstep_actors::step::InternalTopic;
use lockstep_domain::operator::{self, Rejection};
use lockstep_domain::{
    CredentialFacts, DomainError, KeyCredential, KeyCredentialId, OperatorCommand, RevokeReason,
    StepOutcome, SuspendReason, TenantId,
};
use serde_json::json;

use crate::app::Shared;
use crate::auth::Role;
use crate::commands::{self, Command, SendError};
use crate::http::{authenticate, credential_json, credential_or_404, subject, ApiError};

/// Who may change a credential.
const WRITERS: &[Role] = &[Role::Operator, Role::Admin, Role::Service];

/// Revoke reasons an operator may give (`expired` and `replaced` are Lockstep's own).
const OPERATOR_REVOKE_REASONS: &[RevokeReason] = &[
    RevokeReason::Checkout,
    RevokeReason::Cancellation,
    RevokeReason::Lost,
    RevokeReason::Security,
];

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReasonBody {
    reason: Option<String>,
}

/// An optional JSON body: empty is `{}`; anything else must be the shape.
pub(crate) fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_object(bytes)
}

/// A JSON object of `T`'s shape.
fn parse_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bad = |reason: String| {
        let mut err = ApiError::new(
            StatusCode::BAD_REQUEST,
            "MELMASTOON.GENERAL.VALIDATION_FAILED",
            "the body is not valid JSON of this request's shape",
        );
        err.details = json!({ "reason": reason });
        err
    };
    // an object, never an array: serde would read `["lost"]` as `{"reason": "lost"}`
    // one reader for every body: a key given twice is ambiguous and refused (issue 14)
    let value = crate::json::parse(bytes).map_err(|e| bad(e.to_string()))?;
    if !value.is_object() {
        return Err(bad("the body must be a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

/// The saga subject that owns a credential: its reservation's (or booking's), or for a
/// master key its shift's.
async fn saga_subject(
    shared: &Shared,
    tenant: TenantId,
    cred: &KeyCredential,
) -> Result<String, ApiError> {
    if let Some(r) = cred.reservation_id() {
        return Ok(format!("reservation:{}", r.as_str()));
    }
    match shared
        .rt
        .store
        .master_by_credential(tenant, cred.id())
        .await?
        .and_then(|m| m.shift_id)
    {
        Some(shift) => Ok(format!("shift:{shift}")),
        None => {
            Err(DomainError::validation("id", "this credential has no saga to act on it").into())
        }
    }
}

pub(crate) fn message_id(req: &HttpRequest) -> Result<String, ApiError> {
    match req.headers().get("idempotency-key") {
        None => Ok(format!("api-{}", ulid::Ulid::new())),
        Some(v) => {
            // the message id of the command or event: the envelope's id alphabet
            let key = v
                .to_str()
                .ok()
                .filter(|k| {
                    (1..=60).contains(&k.len())
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
                .ok_or_else(|| {
                    ApiError::from(DomainError::validation(
                        "Idempotency-Key",
                        "1 to 60 letters, digits, '-' or '_'",
                    ))
                })?;
            Ok(format!("api-{key}"))
        }
    }
}

/// Sends `command` for `cred` and answers with its outcome.
pub(crate) async fn run_command(
    req: &HttpRequest,
    shared: &Shared,
    tenant: TenantId,
    cred: &KeyCredential,
    command: OperatorCommand,
    mut payload: serde_json::Value,
) -> Result<HttpResponse, ApiError> {
    let id = cred.id().clone();
    payload["credentialId"] = json!(id.as_str());
    payload["by"] = json!(subject(req, shared));
    let cmd = Command {
        message_id: message_id(req)?,
        tenant_id: tenant,
        property_id: cred.property_id().clone(),
        subject: saga_subject(shared, tenant, cred).await?,
        topic: InternalTopic::from(command).as_str().to_owned(),
        payload,
    };
    let rt = &shared.rt;
    match shared
        .commands
        .send(&cmd, rt.store.as_ref(), rt.clock.as_ref(), &shared.router)
        .await
    {
        Ok(()) => {}
        Err(SendError::BusDown) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "MELMASTOON.GENERAL.UNAVAILABLE",
                "the bus is unavailable; retry later",
            ))
        }
        Err(SendError::Store(e)) => return Err(e.into()),
    }
    let location = format!("/api/v1/key-credentials/{}", id.as_str());
    let outcome = commands::outcome(
        rt.store.as_ref(),
        tenant,
        &cmd.message_id,
        commands::DEFAULT_WAIT,
    )
    .await?;
    let Some(outcome) = outcome else {
        return Ok(HttpResponse::Accepted()
            .insert_header(("location", location))
            .json(json!({ "status": "pending", "credentialId": id.as_str() })));
    };
    if outcome == StepOutcome::Applied.as_str() {
        let cred = credential_or_404(rt.store.as_ref(), tenant, &id).await?;
        let devices = rt.store.credential_devices(tenant, &id).await?;
        return Ok(HttpResponse::Ok()
            .insert_header(("location", location))
            .json(credential_json(&cred, &devices)));
    }
    match Rejection::parse(&outcome) {
        Some(Rejection::K2) => Err(DomainError::validation(
            "validUntil",
            "extends the key more than the policy allows past the end it was issued with (K-2)",
        )
        .into()),
        Some(Rejection::UnknownCredential) => Err(DomainError::NotFound {
            entity: "key_credential",
        }
        .into()),
        _ => {
            tracing::info!(outcome, "operator command refused by the saga");
            Err(DomainError::InvalidStateTransition {
                from: cred.state().as_str(),
                action: command.action(),
            }
            .into())
        }
    }
}

/// Spec `003` §8 `CredentialExpiredError` (410 `CREDENTIAL_EXPIRED`): a credential whose
/// window has ended — revoked `expired`, or past its `validUntil` before its expiry timer
/// ran — takes no operator change (update, suspend, unsuspend, replace) and reveals no
/// PIN: the stay is over, not the request malformed. Revoking it still answers it.
pub(crate) fn check_not_expired(
    cred: &KeyCredential,
    now: lockstep_domain::Timestamp,
) -> Result<(), ApiError> {
    if CredentialFacts::of(cred).window_ended(now) {
        Err(DomainError::CredentialExpired.into())
    } else {
        Ok(())
    }
}

/// Refuses at once what the domain's rules never let `command` do to `cred` now (a key
/// whose window ended, a state the machine never leaves by it, a master's replace); the
/// step asks the same rules again when it carries the command out.
fn check_command(
    shared: &Shared,
    cred: &KeyCredential,
    command: OperatorCommand,
) -> Result<(), ApiError> {
    operator::check_request(command, &CredentialFacts::of(cred), shared.rt.clock.now())
        .map_err(|r| DomainError::from(r).into())
}

async fn load(
    req: &HttpRequest,
    shared: &Shared,
    path: String,
) -> Result<(TenantId, KeyCredential), ApiError> {
    let tenant = authenticate(req, shared, WRITERS)?;
    let id = KeyCredentialId::parse(&path)?;
    let cred = credential_or_404(shared.rt.store.as_ref(), tenant, &id).await?;
    Ok((tenant, cred))
}

/// `POST /api/v1/key-credentials/{id}/revoke` `{reason}`: the credential leaves every
/// door; revoking a revoked one answers it unchanged.
pub(crate) async fn revoke(
    req: HttpRequest,
    path: web::Path<String>,
    bytes: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, cred) = load(&req, &shared, path.into_inner()).await?;
    let b: ReasonBody = body(&bytes)?;
    let reason = b
        .reason
        .as_deref()
        .ok_or_else(|| DomainError::validation("reason", "is required"))?;
    let reason = RevokeReason::parse(reason)?;
    if !OPERATOR_REVOKE_REASONS.contains(&reason) {
        return Err(DomainError::validation(
            "reason",
            "one of checkout, cancellation, lost, security",
        )
        .into());
    }
    check_command(&shared, &cred, OperatorCommand::Revoke)?;
    run_command(
        &req,
        &shared,
        tenant,
        &cred,
        OperatorCommand::Revoke,
        json!({ "reason": reason.as_str() }),
    )
    .await
}

/// `POST /api/v1/key-credentials/{id}/suspend` `{reason?}` (default `manual`): an active
/// credential leaves the door until it is unsuspended.
pub(crate) async fn suspend(
    req: HttpRequest,
    path: web::Path<String>,
    bytes: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, cred) = load(&req, &shared, path.into_inner()).await?;
    let b: ReasonBody = body(&bytes)?;
    let reason = SuspendReason::parse(b.reason.as_deref().unwrap_or("manual"))?;
    check_command(&shared, &cred, OperatorCommand::Suspend)?;
    run_command(
        &req,
        &shared,
        tenant,
        &cred,
        OperatorCommand::Suspend,
        json!({ "reason": reason.as_str() }),
    )
    .await
}

/// `POST /api/v1/key-credentials/{id}/unsuspend`: only from `suspended`.
pub(crate) async fn unsuspend(
    req: HttpRequest,
    path: web::Path<String>,
    bytes: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, cred) = load(&req, &shared, path.into_inner()).await?;
    let _: EmptyBody = body(&bytes)?;
    check_command(&shared, &cred, OperatorCommand::Unsuspend)?;
    run_command(
        &req,
        &shared,
        tenant,
        &cred,
        OperatorCommand::Unsuspend,
        json!({}),
    )
    .await
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

/// `POST /api/v1/key-credentials/{id}/replace`: lost key. The credential is revoked
/// (`lost`) and a new one with the same kind, rooms and window is issued in the same step;
/// the answer is the old credential, whose `replacedById` names the new one.
pub(crate) async fn replace(
    req: HttpRequest,
    path: web::Path<String>,
    bytes: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, cred) = load(&req, &shared, path.into_inner()).await?;
    let _: EmptyBody = body(&bytes)?;
    check_command(&shared, &cred, OperatorCommand::Replace)?;
    run_command(
        &req,
        &shared,
        tenant,
        &cred,
        OperatorCommand::Replace,
        json!({}),
    )
    .await
}

/// A required JSON body: an object of `T`'s shape.
pub(crate) fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(DomainError::validation("body", "a JSON object is required").into());
    }
    parse_object(bytes)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UpdateBody {
    valid_until: Option<String>,
    room_ids: Option<Vec<String>>,
}

/// `PATCH /api/v1/key-credentials/{id}` `{validUntil?, roomIds?}`: moves an active or
/// suspended key's end (K-2 caps extensions) and/or its rooms; the doors follow. A scope
/// is not changed here: a master key's scope is its shift's.
pub(crate) async fn update(
    req: HttpRequest,
    path: web::Path<String>,
    bytes: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, cred) = load(&req, &shared, path.into_inner()).await?;
    let b: UpdateBody = json_object(&bytes)?;
    if b.valid_until.is_none() && b.room_ids.is_none() {
        return Err(DomainError::validation("body", "validUntil or roomIds is required").into());
    }
    let mut payload = json!({});
    if let Some(t) = &b.valid_until {
        let until = chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|_| DomainError::validation("validUntil", "an RFC 3339 instant"))?
            .with_timezone(&chrono::Utc);
        // I-1 before the saga sees it
        lockstep_domain::ValidityWindow::new(cred.validity().from(), until)?;
        payload["validUntil"] = json!(until.to_rfc3339());
    }
    if let Some(rooms) = &b.room_ids {
        if rooms.is_empty() {
            return Err(DomainError::validation("roomIds", "at least one room").into());
        }
        for r in rooms {
            lockstep_domain::RoomId::parse(r)?;
        }
        payload["roomIds"] = json!(rooms);
    }
    check_command(&shared, &cred, OperatorCommand::Update)?;
    run_command(
        &req,
        &shared,
        tenant,
        &cred,
        OperatorCommand::Update,
        payload,
    )
    .await
}
