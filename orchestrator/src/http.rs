//! The REST surface of this issue: reads of credentials (never a vendorRef or PIN, I-8),
//! health, readiness, metrics, and in embedded mode the HTTP intake of events. One place
//! maps domain and store errors to status + `{code, message, details}`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use lockstep_actors::events_in::Rejection;
use lockstep_domain::{DomainError, KeyCredential, KeyCredentialId, ReservationId, TenantId};
use lockstep_persistence::{CredentialDevice, StoreError};
use serde_json::json;

use crate::app::Shared;
use crate::auth::Role;
use crate::intake::{self, IntakeError};

/// An API error: the spec's code, a message for people, details for programs.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    pub(crate) details: serde_json::Value,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "MELMASTOON.GENERAL.FORBIDDEN",
            "the token's roles do not allow this",
        )
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "MELMASTOON.GENERAL.UNAUTHENTICATED",
            "a valid bearer token is required",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({
            "code": self.code,
            "message": self.message,
            "details": self.details,
        }))
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut details = json!({});
        if let Some(sub) = e.sub_code() {
            details["subCode"] = json!(sub);
        }
        if let DomainError::Validation { field, reason } = &e {
            details["field"] = json!(field);
            details["reason"] = json!(reason);
        }
        Self {
            status,
            code: e.code(),
            message: e.to_string(),
            details,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error serving a request");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "MELMASTOON.GENERAL.UNAVAILABLE",
            "storage is unavailable; retry later",
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who may call what (issue 6): reads are for operators, admins and platform services;
/// event intake is for services.
const READERS: &[Role] = &[Role::Operator, Role::Admin, Role::Service];
const SERVICES: &[Role] = &[Role::Service];

/// Authenticates the bearer token and checks its roles; returns the tenant every read and
/// write of the request is confined to. A JWT of the identity provider names its tenant
/// (an `X-Tenant-Id` that disagrees is refused); the service token is a platform service
/// acting for the tenant in `X-Tenant-Id`.
pub(crate) fn authenticate(
    req: &HttpRequest,
    shared: &Shared,
    roles: &[Role],
) -> Result<TenantId, ApiError> {
    match caller(req, shared, roles)? {
        Some(t) => Ok(t),
        None => tenant(req),
    }
}

/// Authenticates a node-wide read (no tenant's data in the answer): the service token, or
/// a JWT with one of `roles` whatever its tenant.
pub(crate) fn authenticate_node(
    req: &HttpRequest,
    shared: &Shared,
    roles: &[Role],
) -> Result<(), ApiError> {
    caller(req, shared, roles).map(drop)
}

/// The token's tenant (`None` for the service token, which may act for any tenant) once
/// the token is authenticated and holds one of `roles`.
fn caller(
    req: &HttpRequest,
    shared: &Shared,
    roles: &[Role],
) -> Result<Option<TenantId>, ApiError> {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    if let Some(expected) = shared.service_token.as_deref() {
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            if !roles.contains(&Role::Service) {
                return Err(ApiError::forbidden());
            }
            return Ok(None);
        }
    }
    let verifier = shared.jwt.as_ref().ok_or_else(ApiError::unauthorized)?;
    let principal = verifier.verify(given, shared.rt.clock.now()).map_err(|e| {
        let mut err = ApiError::unauthorized();
        err.details = json!({ "reason": e.to_string() });
        err
    })?;
    if !principal.has_any(roles) {
        return Err(ApiError::forbidden());
    }
    if let Some(header) = req.headers().get("x-tenant-id") {
        if header.to_str().ok() != Some(principal.tenant.to_string().as_str()) {
            return Err(ApiError::forbidden());
        }
    }
    Ok(Some(principal.tenant))
}

/// Who the (already authenticated) caller is, for the audit: the JWT's `sub`, or
/// `service-token`.
pub(crate) fn subject(req: &HttpRequest, shared: &Shared) -> String {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    shared
        .jwt
        .as_ref()
        .and_then(|v| v.verify(given, shared.rt.clock.now()).ok())
        .map_or_else(|| "service-token".to_owned(), |p| p.subject)
}

fn tenant(req: &HttpRequest) -> Result<TenantId, ApiError> {
    let raw = req
        .headers()
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::from(DomainError::validation("X-Tenant-Id", "header is required"))
        })?;
    Ok(TenantId::parse(raw)?)
}

/// The tenant's credential `id`, or 404 `key_credential`.
pub(crate) async fn credential_or_404(
    store: &dyn lockstep_persistence::Store,
    tenant: TenantId,
    id: &KeyCredentialId,
) -> Result<KeyCredential, ApiError> {
    Ok(store
        .get_credential(tenant, id)
        .await?
        .ok_or(DomainError::NotFound {
            entity: "key_credential",
        })?)
}

/// The API view of a credential: every field of spec `003` §1.1 but `vendorRef`, plus the
/// door truth per device (DESIGN §3.5).
pub fn credential_json(c: &KeyCredential, devices: &[CredentialDevice]) -> serde_json::Value {
    let ts = |t: Option<lockstep_domain::Timestamp>| t.map(|t| t.to_rfc3339());
    json!({
        "id": c.id().as_str(),
        "tenantId": c.tenant_id().to_string(),
        "propertyId": c.property_id().as_str(),
        "holderKind": c.holder_kind().as_str(),
        "reservationId": c.reservation_id().map(|r| r.as_str()),
        "guestId": c.guest_id().map(|r| r.as_str()),
        "staffUserId": c.staff_user_id().map(|r| r.as_str()),
        "kind": c.kind().as_str(),
        "rooms": c.rooms().iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "scope": { "floors": c.scope().floors, "areas": c.scope().areas },
        "validFrom": c.validity().from().to_rfc3339(),
        "validUntil": c.validity().until().to_rfc3339(),
        "state": c.state().as_str(),
        "vendor": c.vendor().as_str(),
        "vendorAdapterId": c.vendor_adapter_id().as_str(),
        "provisional": c.provisional(),
        "issuedAt": ts(c.issued_at()),
        "revokedAt": ts(c.revoked_at()),
        "failureReason": c.failure_reason().map(|r| r.as_str()),
        "suspendReason": c.suspend_reason().map(|r| r.as_str()),
        "revokeReason": c.revoke_reason().map(|r| r.as_str()),
        "replacesId": c.replaces_id().map(|r| r.as_str()),
        "replacedById": c.replaced_by_id().map(|r| r.as_str()),
        "version": c.version(),
        "doorSync": devices.iter().map(|d| json!({
            "deviceId": d.device_id.as_str(),
            "desired": d.desired.as_str(),
            "sync": d.sync.as_str(),
            "attempts": d.attempts,
            "lastError": d.last_error,
        })).collect::<Vec<_>>(),
    })
}

async fn get_credential(
    req: HttpRequest,
    path: web::Path<String>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, READERS)?;
    let id = KeyCredentialId::parse(&path.into_inner())?;
    let cred = credential_or_404(shared.rt.store.as_ref(), tenant, &id).await?;
    let devices = shared.rt.store.credential_devices(tenant, &id).await?;
    Ok(HttpResponse::Ok().json(credential_json(&cred, &devices)))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    property_id: Option<String>,
    reservation_id: Option<String>,
    guest_id: Option<String>,
    staff_user_id: Option<String>,
    state: Option<String>,
    room_id: Option<String>,
    /// `now` or an RFC 3339 instant: credentials that open their doors then.
    opens_at: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Default and largest page of a list.
const PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

/// `GET /api/v1/key-credentials`: the tenant's credentials, filtered by property,
/// reservation (or booking), guest, staff member, state, room, and `opensAt` ("who can
/// open room X now": `roomId=…&opensAt=now`), by id, a page at a time (`limit`, `cursor`
/// = the previous page's `nextCursor`).
async fn list_credentials(
    req: HttpRequest,
    q: web::Query<ListQuery>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, READERS)?;
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(DomainError::validation("limit", format!("1 to {MAX_PAGE}")).into());
    }
    let opens_at = match q.opens_at.as_deref() {
        None => None,
        Some("now") => Some(shared.rt.clock.now()),
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| DomainError::validation("opensAt", "`now` or an RFC 3339 instant"))?
                .with_timezone(&chrono::Utc),
        ),
    };
    let filter = lockstep_persistence::CredentialFilter {
        property_id: q
            .property_id
            .map(|p| lockstep_domain::PropertyId::parse(&p).map(|p| p.as_str().to_owned()))
            .transpose()?,
        reservation_id: q
            .reservation_id
            .map(|r| ReservationId::parse(&r).map(|r| r.as_str().to_owned()))
            .transpose()?,
        guest_id: q
            .guest_id
            .map(|g| lockstep_domain::GuestId::parse(&g).map(|g| g.as_str().to_owned()))
            .transpose()?,
        staff_user_id: q
            .staff_user_id
            .map(|u| lockstep_domain::UserId::parse(&u).map(|u| u.as_str().to_owned()))
            .transpose()?,
        state: q
            .state
            .map(|s| lockstep_domain::KeyCredentialState::parse(&s).map(|s| s.as_str().to_owned()))
            .transpose()?,
        room_id: q
            .room_id
            .map(|r| lockstep_domain::RoomId::parse(&r).map(|r| r.as_str().to_owned()))
            .transpose()?,
        opens_at,
        after: q
            .cursor
            .map(|c| {
                KeyCredentialId::parse(&c)
                    .map(|c| c.as_str().to_owned())
                    .map_err(|_| DomainError::validation("cursor", "not a cursor of this list"))
            })
            .transpose()?,
    };
    let mut creds = shared
        .rt
        .store
        .list_credentials(tenant, &filter, limit + 1)
        .await?;
    let more = creds.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    creds.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = more
        .then(|| creds.last().map(|c| c.id().as_str().to_owned()))
        .flatten();
    let mut items = Vec::with_capacity(creds.len());
    for c in &creds {
        let devices = shared.rt.store.credential_devices(tenant, c.id()).await?;
        items.push(credential_json(c, &devices));
    }
    Ok(HttpResponse::Ok().json(json!({ "items": items, "nextCursor": next })))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DevicesQuery {
    property_id: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /api/v1/lock-devices?propertyId=`: a property's live devices (doors of rooms and of
/// areas; D-2: never a decommissioned one) with their last health reading (spec `003`
/// §2), by id, a page at a time (`limit`, `cursor` = the previous page's `nextCursor`).
/// Never the vendor's device reference.
async fn list_devices(
    req: HttpRequest,
    q: web::Query<DevicesQuery>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, READERS)?;
    let q = q.into_inner();
    let property = q
        .property_id
        .as_deref()
        .ok_or_else(|| DomainError::validation("propertyId", "is required"))?;
    let property = lockstep_domain::PropertyId::parse(property)?;
    let limit = q.limit.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(DomainError::validation("limit", format!("1 to {MAX_PAGE}")).into());
    }
    let after = q
        .cursor
        .map(|c| {
            lockstep_domain::LockDeviceId::parse(&c)
                .map_err(|_| DomainError::validation("cursor", "not a cursor of this list"))
        })
        .transpose()?;
    let store = &shared.rt.store;
    let mut devices = store
        .list_devices(tenant, &property, after.as_ref(), limit + 1)
        .await?;
    let more = devices.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    devices.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = more
        .then(|| devices.last().map(|d| d.id.as_str().to_owned()))
        .flatten();
    let mut items = Vec::with_capacity(devices.len());
    for d in &devices {
        items.push(device_json(store.as_ref(), tenant, d).await?);
    }
    Ok(HttpResponse::Ok().json(json!({ "items": items, "nextCursor": next })))
}

/// A device in the API's shape with its last health reading; never its vendor reference.
async fn device_json(
    store: &dyn lockstep_persistence::Store,
    tenant: TenantId,
    d: &lockstep_persistence::Device,
) -> Result<serde_json::Value, ApiError> {
    let mut item = json!({
        "id": d.id.as_str(),
        "tenantId": d.tenant_id.to_string(),
        "propertyId": d.property_id.as_str(),
        "vendor": d.vendor.as_str(),
        "vendorAdapterId": d.vendor_adapter_id.as_str(),
        "label": d.label,
        "rooms": d.rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "area": d.area.map(|a| a.as_str()),
    });
    if let Some(h) = store.device_health(tenant, &d.id).await? {
        merge(&mut item, health_json(&h));
    }
    Ok(item)
}

/// A live device of the tenant with every room it serves, `None` if unknown or retired.
async fn live_device(
    store: &dyn lockstep_persistence::Store,
    tenant: TenantId,
    id: &lockstep_domain::LockDeviceId,
) -> Result<Option<lockstep_persistence::Device>, ApiError> {
    let Some(property) = store.device_property(tenant, id).await? else {
        return Ok(None);
    };
    let rooms = store.property_rooms(tenant, &property).await?;
    let by_room = store.devices_for_rooms(tenant, &property, &rooms).await?;
    if let Some(d) = by_room.into_iter().find(|d| &d.id == id) {
        return Ok(Some(d));
    }
    // a door of an area that serves no room
    Ok(store
        .area_devices(tenant, &property)
        .await?
        .into_iter()
        .find(|d| &d.id == id))
}

/// `GET /api/v1/lock-devices/{id}/health`: probes the device now through its adapter's
/// worker (spec `002`), records the reading (and any signal it raises) and answers it. A
/// vendor that cannot answer is 502 `VENDOR_UNREACHABLE` (spec `003` §8); the last
/// reading stays. D-2: a decommissioned device reads offline without a vendor call.
async fn device_health(
    req: HttpRequest,
    path: web::Path<String>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, READERS)?;
    let id = lockstep_domain::LockDeviceId::parse(&path.into_inner())?;
    let store = &shared.rt.store;
    let not_found = || DomainError::NotFound {
        entity: "lock_device",
    };
    let stored = store
        .device_health(tenant, &id)
        .await?
        .ok_or_else(not_found)?;
    if stored.decommissioned {
        // D-2: retired, so offline, and no vendor is asked
        return Ok(HttpResponse::Ok().json(json!({
            "deviceId": id.as_str(),
            "online": false,
            "decommissioned": true,
            "signals": [],
        })));
    }
    let device = live_device(store.as_ref(), tenant, &id)
        .await?
        .ok_or_else(not_found)?;
    let signals =
        lockstep_actors::drift::probe_device(&shared.rt, tenant, &device.property_id, &device)
            .await
            .map_err(|_| ApiError::from(DomainError::VendorUnreachable))?;
    let health = store
        .device_health(tenant, &id)
        .await?
        .ok_or_else(not_found)?;
    let mut body = json!({
        "deviceId": id.as_str(),
        "signals": signals
            .iter()
            .map(lockstep_actors::events_out::device_signal_label)
            .collect::<Vec<_>>(),
    });
    merge(&mut body, health_json(&health));
    Ok(HttpResponse::Ok().json(body))
}

/// Who may change or retire a device: admins and platform services, as for registration.
const DEVICE_ADMINS: &[Role] = &[Role::Admin, Role::Service];

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DevicePatch {
    battery: Option<BatteryPatch>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BatteryPatch {
    low_threshold_percent: i64,
}

/// `PATCH /api/v1/lock-devices/{id}` `{"battery": {"lowThresholdPercent": n}}`: sets the
/// device's own battery threshold (D-4: 5 to 50, else 422), which its `battery_low`
/// signal uses from the next probe. A decommissioned or unknown device is 404.
async fn update_device(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, DEVICE_ADMINS)?;
    let id = lockstep_domain::LockDeviceId::parse(&path.into_inner())?;
    let patch: DevicePatch = crate::writes::json_object(&body)?;
    let battery = patch
        .battery
        .ok_or_else(|| DomainError::validation("battery", "nothing to change"))?;
    let threshold = lockstep_domain::BatteryThreshold::new(
        i32::try_from(battery.low_threshold_percent).unwrap_or(i32::MAX),
    )?;
    let store = &shared.rt.store;
    if !store.set_battery_threshold(tenant, &id, threshold).await? {
        return Err(DomainError::NotFound {
            entity: "lock_device",
        }
        .into());
    }
    let device = live_device(store.as_ref(), tenant, &id)
        .await?
        .ok_or(DomainError::NotFound {
            entity: "lock_device",
        })?;
    let mut item = device_json(store.as_ref(), tenant, &device).await?;
    // the threshold is answered even before the first battery reading
    item["battery"] = json!({
        "percent": item["battery"]["percent"].clone(),
        "lowThresholdPercent": threshold.percent(),
    });
    Ok(HttpResponse::Ok().json(item))
}

/// `POST /api/v1/lock-devices/{id}/decommission`: retires a device (D-2) with its
/// `lock.device.decommissioned.v1` in the same commit. From then it is not listed, its
/// health reads offline without a vendor call, no new key is issued to it (sagas, intake
/// and drift read live devices only) and drift neither probes nor repairs it; keys already
/// at the lock are left to their sagas (they end or are revoked as usual). A second call
/// answers the same `decommissionedAt` and publishes nothing.
async fn decommission_device(
    req: HttpRequest,
    path: web::Path<String>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    use lockstep_persistence::Decommission;
    let tenant = authenticate(&req, &shared, DEVICE_ADMINS)?;
    let id = lockstep_domain::LockDeviceId::parse(&path.into_inner())?;
    let store = &shared.rt.store;
    // to the millisecond, as both stores keep it: a second call answers the same instant
    let now = shared.rt.clock.now();
    let now = chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    let device = live_device(store.as_ref(), tenant, &id).await?;
    let event = device.as_ref().map(|d| {
        lockstep_actors::events_out::decommissioned_row(
            lockstep_actors::events_out::DeviceSubject {
                tenant_id: tenant,
                property_id: &d.property_id,
                device_id: &d.id,
                vendor: d.vendor,
            },
            now,
        )
    });
    let outcome = store
        .decommission_device(tenant, &id, now, event.as_slice())
        .await?;
    let at = match outcome {
        Decommission::Unknown => {
            return Err(DomainError::NotFound {
                entity: "lock_device",
            }
            .into())
        }
        Decommission::Done(at) => {
            if let Some(d) = &device {
                // the sagas and the intake of this node read the property's devices again
                // at once (a stay in a room no longer served is refused where it enters)
                shared.rt.config.invalidate(tenant, &d.property_id);
                shared.admit_cache.forget(tenant, &d.property_id);
                tracing::info!(device = %id, "device decommissioned");
            }
            at
        }
        Decommission::Already(at) => at,
    };
    Ok(HttpResponse::Ok().json(json!({
        "id": id.as_str(),
        "decommissionedAt": at.to_rfc3339(),
    })))
}

/// A device's last health reading in the API's shape (spec `003` §2).
fn health_json(health: &lockstep_persistence::StoredDeviceHealth) -> serde_json::Value {
    let last = health.last.as_ref();
    json!({
        "online": last.map(|h| h.online),
        "battery": last.and_then(|h| h.battery_percent).map(|p| json!({
            "percent": p,
            "lowThresholdPercent": health.threshold.percent(),
        })),
        "firmware": last.and_then(|h| h.firmware.clone()),
        "clockSkewMs": last.and_then(|h| h.clock_skew_ms),
        "lastSeenAt": health.last_seen_at.map(|t| t.to_rfc3339()),
    })
}

/// Adds `extra`'s fields to the object `into`.
fn merge(into: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(obj), serde_json::Value::Object(fields)) = (into.as_object_mut(), extra) {
        obj.extend(fields);
    }
}

/// Who may see a guest's PIN (DESIGN §12): the notification service and the front desk.
const PIN_READERS: &[Role] = &[Role::Service, Role::Operator];

/// `POST /api/v1/key-credentials/{id}/pin`: reveals an active `pin_code` credential's PIN,
/// once per request, and writes a `pin_revealed` row to the credential's audit chain in
/// the same step (who, never the digits). The reply is `Cache-Control: no-store`.
async fn reveal_pin(
    req: HttpRequest,
    path: web::Path<String>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, PIN_READERS)?;
    let id = KeyCredentialId::parse(&path.into_inner())?;
    let store = &shared.rt.store;
    let cred = credential_or_404(store.as_ref(), tenant, &id).await?;
    if cred.kind() != lockstep_domain::KeyCredentialKind::PinCode {
        return Err(DomainError::validation("kind", "only a pin_code credential has a PIN").into());
    }
    crate::writes::check_not_expired(&cred, shared.rt.clock.now())?;
    if cred.state() != lockstep_domain::KeyCredentialState::Active {
        return Err(DomainError::validation(
            "state",
            "a PIN is revealed only while the credential is active",
        )
        .into());
    }
    let devices = store.credential_devices(tenant, &id).await?;
    let pins: Vec<_> = devices
        .iter()
        .filter_map(|d| {
            d.pin
                .as_ref()
                .map(|p| json!({ "deviceId": d.device_id.as_str(), "pin": p.expose() }))
        })
        .collect();
    let now = shared.rt.clock.now();
    let mut uow = lockstep_persistence::UnitOfWork::new(tenant, None, now);
    uow.audit.push(lockstep_persistence::AuditRow {
        id: ulid::Ulid::new().to_string(),
        tenant_id: tenant,
        property_id: cred.property_id().clone(),
        credential_id: Some(id.clone()),
        device_id: None,
        actor_kind: "operator".into(),
        action: "pin_revealed".into(),
        reason: None,
        vendor: Some(cred.vendor()),
        trace_id: None,
        created_at: now,
        payload: json!({ "by": subject(&req, &shared), "devices": pins.len() }),
    });
    // audited first: no reveal without its row
    store.commit(uow).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(json!({ "credentialId": id.as_str(), "pins": pins })))
}

/// `GET /api/v1/key-credentials/{id}/audit`: the credential's audit trail, in the order of
/// its property's tamper-evident chain, each row with its link; rows the linker has not
/// reached yet (issue 11) follow, in the order it will link them, without one.
async fn credential_audit(
    req: HttpRequest,
    path: web::Path<String>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, READERS)?;
    let id = KeyCredentialId::parse(&path.into_inner())?;
    let store = &shared.rt.store;
    let cred = credential_or_404(store.as_ref(), tenant, &id).await?;
    let chain = store.audit_chain(tenant, cred.property_id()).await?;
    let pending = store.pending_audit(tenant, cred.property_id()).await?;
    let linked = chain.iter().map(|r| (&r.row, Some((r.seq, &r.row_hash))));
    let items: Vec<_> = linked
        .chain(pending.iter().map(|r| (r, None)))
        .filter(|(r, _)| r.credential_id.as_ref() == Some(&id))
        .map(|(r, link)| {
            json!({
                "id": r.id,
                "action": r.action,
                "actorKind": r.actor_kind,
                "reason": r.reason,
                "deviceId": r.device_id.as_ref().map(|d| d.as_str()),
                "vendor": r.vendor.map(|v| v.as_str()),
                "traceId": r.trace_id,
                "createdAt": r.created_at.to_rfc3339(),
                "payload": r.payload,
                "chainSeq": link.map(|(seq, _)| seq),
                "rowHash": link.map(|(_, hash)| hash),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "credentialId": id.as_str(), "items": items })))
}

async fn post_intake(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let own_tenant = caller(&req, &shared, SERVICES)?;
    let rt = &shared.rt;
    let refused = |status: StatusCode, r: &Rejection| {
        rt.metrics
            .dead_letters
            .with_label_values(&[r.label()])
            .inc();
        let mut e = ApiError::new(
            status,
            "MELMASTOON.GENERAL.VALIDATION_FAILED",
            "the event was refused",
        );
        e.details = json!({ "reason": r.label(), "detail": r.to_string() });
        e
    };
    // what is not one unambiguous JSON value (not JSON, a key given twice) is a malformed
    // request, 400, before anything else is judged (issue 14); a JSON value that breaks
    // the envelope or a rule is 422 below
    let value = crate::json::parse(&body)
        .map_err(|e| refused(StatusCode::BAD_REQUEST, &Rejection::from(e)))?;
    // a tenant's service token may only post that tenant's events
    if let Some(t) = own_tenant {
        let named = value.get("tenantId").and_then(|t| t.as_str());
        if named != Some(t.to_string().as_str()) {
            return Err(ApiError::forbidden());
        }
    }
    if let Some(amqp) = &shared.amqp {
        return intake_to_partitions(&req, &shared, amqp, &body, &refused).await;
    }
    let admitted = match shared.schemas.check_consumed(&body) {
        Ok((_, parsed)) => {
            intake::admit(
                rt.store.as_ref(),
                rt.clock.as_ref(),
                &shared.admit_cache,
                &parsed,
            )
            .await
        }
        // refused again (and counted) by `accept` below
        Err(_) => Ok(()),
    };
    let accepted = match admitted {
        Ok(()) => {
            intake::accept(
                &shared.schemas,
                rt.store.as_ref(),
                rt.clock.as_ref(),
                &shared.router,
                &rt.metrics,
                &body,
                0,
                None,
            )
            .await
        }
        Err(e) => Err(e),
    };
    match accepted {
        Ok(outcome) => Ok(HttpResponse::Accepted().json(json!({
            "outcome": match outcome { lockstep_persistence::IntakeOutcome::Accepted => "accepted", lockstep_persistence::IntakeOutcome::Duplicate => "duplicate" }
        }))),
        Err(IntakeError::Rejected(r)) => Err(refused(StatusCode::UNPROCESSABLE_ENTITY, &r)),
        Err(IntakeError::Store(e)) => Err(e.into()),
    }
}

/// The HTTP intake in production (issue 14), for publishers without RabbitMQ: the same
/// path as the broker's intake queue. The envelope is validated and its stay admitted as
/// there; `[amqp.publishers]` is judged with the caller (a JWT's `sub`, or `service-token`
/// for the platform's service token) in place of the broker user; then the event is
/// published to its property's partition (one copy per property for a user deactivation)
/// and 202 answers once the broker confirmed it. The partition's owner stores it with the
/// same inbox dedupe as the broker's copies, so the same event sent both ways is applied
/// once.
async fn intake_to_partitions(
    req: &HttpRequest,
    shared: &Shared,
    amqp: &lockstep_config::AmqpSettings,
    body: &[u8],
    refused: &dyn Fn(StatusCode, &Rejection) -> ApiError,
) -> Result<HttpResponse, ApiError> {
    let rt = &shared.rt;
    let (mut envelope, parsed) = shared
        .schemas
        .check_consumed(body)
        .map_err(|r| refused(StatusCode::UNPROCESSABLE_ENTITY, &r))?;
    let publisher = subject(req, shared);
    if !amqp.may_publish(&parsed.subject, Some(&publisher)) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            &Rejection::UnauthorizedPublisher,
        ));
    }
    let rejected = |e: IntakeError| match e {
        IntakeError::Rejected(r) => refused(StatusCode::UNPROCESSABLE_ENTITY, &r),
        IntakeError::Store(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "MELMASTOON.GENERAL.UNAVAILABLE",
            "the bus or the store is unavailable; retry later",
        ),
    };
    let copies: Vec<(lockstep_domain::PropertyId, Vec<u8>)> = match &parsed.property_id {
        Some(p) => vec![(p.clone(), body.to_vec())],
        None => {
            let mut out = Vec::new();
            for p in intake::user_properties(rt.store.as_ref(), &parsed)
                .await
                .map_err(rejected)?
            {
                envelope["propertyId"] = json!(p.as_str());
                out.push((p, serde_json::to_vec(&envelope).unwrap_or_default()));
            }
            out
        }
    };
    for (property, copy) in &copies {
        shared
            .commands
            .send_event(shared, parsed.tenant_id, property, &parsed.message_id, copy)
            .await
            .map_err(rejected)?;
    }
    rt.metrics
        .intake_messages
        .with_label_values(&["published"])
        .inc_by(copies.len() as u64);
    Ok(HttpResponse::Accepted().json(json!({ "outcome": "queued", "copies": copies.len() })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    limit: Option<usize>,
}

async fn recent_events(
    req: HttpRequest,
    q: web::Query<EventsQuery>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, SERVICES)?.to_string();
    let limit = q.limit.unwrap_or(100).min(1000);
    let events = shared.recent_events.lock().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "MELMASTOON.GENERAL.INTERNAL",
            "event buffer unavailable",
        )
    })?;
    let items: Vec<_> = events
        .iter()
        .rev()
        .filter(|e| e.get("tenantId").and_then(|t| t.as_str()) == Some(tenant.as_str()))
        .take(limit)
        .cloned()
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// How long readiness waits for the store: a probe must answer within a second whatever
/// is down (a pool waiting for a dead Postgres would otherwise hold it for the pool's
/// acquire timeout).
const READY_STORE_TIMEOUT: Duration = Duration::from_millis(800);

async fn readyz(shared: web::Data<Arc<Shared>>) -> HttpResponse {
    let store_ok = matches!(
        tokio::time::timeout(READY_STORE_TIMEOUT, shared.rt.store.ping()).await,
        Ok(Ok(()))
    );
    let bus_ok = shared.bus_ready.load(std::sync::atomic::Ordering::SeqCst);
    // a draining node takes no new work: load balancers should stop sending it any
    let draining = shared.shutdown.is_begun();
    let status = if store_ok && bus_ok && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status)
        .json(json!({ "store": store_ok, "bus": bus_ok, "draining": draining }))
}

async fn metrics(shared: web::Data<Arc<Shared>>) -> HttpResponse {
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&shared.rt.metrics.registry.gather()) {
        Ok(body) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(body),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "MELMASTOON.GENERAL.NOT_FOUND",
        "no such route",
    ))
}

/// How long a request's body may take to arrive, from when its head was read (`[http]
/// read_timeout_ms`; the head itself is bounded by the server's client request timeout).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// Cuts off a request whose body stalls (issue 14): actix bounds only the head's read, so a
/// client that sends its headers and half a body would otherwise hold the handler (and its
/// worker's attention) for as long as it keeps the connection open. The body's stream ends
/// with an error at the deadline; the answer is 408 `MELMASTOON.GENERAL.REQUEST_TIMEOUT`
/// with `Connection: close`, whatever the handler made of the cut body.
pub async fn body_deadline(
    mut req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let timeout = req
        .app_data::<BodyTimeout>()
        .map_or(Duration::from_secs(10), |t| t.0);
    let expired = std::rc::Rc::new(std::cell::Cell::new(false));
    let body = Deadline {
        inner: actix_web::HttpMessage::take_payload(&mut req),
        sleep: Box::pin(tokio::time::sleep(timeout)),
        expired: expired.clone(),
        done: false,
    };
    let body: std::pin::Pin<Box<dyn futures_util::Stream<Item = _>>> = Box::pin(body);
    req.set_payload(actix_web::dev::Payload::from(body));
    let timed_out = || {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "MELMASTOON.GENERAL.REQUEST_TIMEOUT",
            "the request's body did not arrive in time",
        )
    };
    match next.call(req).await {
        Ok(res) if expired.get() => {
            let (req, _) = res.into_parts();
            let mut answer = timed_out().error_response();
            answer.headers_mut().insert(
                actix_web::http::header::CONNECTION,
                actix_web::http::header::HeaderValue::from_static("close"),
            );
            Ok(actix_web::dev::ServiceResponse::new(req, answer).map_into_right_body())
        }
        Ok(res) => Ok(res.map_into_left_body()),
        Err(_) if expired.get() => Err(timed_out().into()),
        Err(e) => Err(e),
    }
}

/// A request body's stream that ends with an error once its deadline has passed.
struct Deadline {
    inner: actix_web::dev::Payload,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    expired: std::rc::Rc<std::cell::Cell<bool>>,
    done: bool,
}

impl futures_util::Stream for Deadline {
    type Item = Result<web::Bytes, actix_web::error::PayloadError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future as _;
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = std::pin::Pin::new(&mut self.inner).poll_next(cx) {
            self.done = item.is_none();
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired.set(true);
            self.done = true;
            return Poll::Ready(Some(Err(actix_web::error::PayloadError::Io(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "request body timed out"),
            ))));
        }
        Poll::Pending
    }
}

/// Renders the framework's own client errors (a body over the limit, a malformed query,
/// a wrong method) in the API's error shape `{code, message, details}`; responses that
/// already carry JSON pass unchanged.
pub fn error_bodies<B: 'static>() -> actix_web::middleware::ErrorHandlers<B> {
    actix_web::middleware::ErrorHandlers::new().default_handler_client(json_error)
}

fn json_error<B>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<actix_web::middleware::ErrorHandlerResponse<B>> {
    use actix_web::middleware::ErrorHandlerResponse;
    let is_json = res
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, message) = match status.as_u16() {
        413 => (
            "MELMASTOON.GENERAL.PAYLOAD_TOO_LARGE",
            "the body is larger than this endpoint accepts",
        ),
        404 => ("MELMASTOON.GENERAL.NOT_FOUND", "no such route"),
        405 => (
            "MELMASTOON.GENERAL.METHOD_NOT_ALLOWED",
            "this route does not take that method",
        ),
        415 => (
            "MELMASTOON.GENERAL.UNSUPPORTED_MEDIA_TYPE",
            "the body's content type is not accepted",
        ),
        _ => (
            "MELMASTOON.GENERAL.VALIDATION_FAILED",
            "the request is malformed",
        ),
    };
    let (req, _) = res.into_parts();
    let body = HttpResponse::build(status).json(json!({
        "code": code,
        "message": message,
        "details": {},
    }));
    Ok(ErrorHandlerResponse::Response(
        actix_web::dev::ServiceResponse::new(req, body).map_into_right_body(),
    ))
}

/// Routes.
pub fn configure(cfg: &mut web::ServiceConfig, embedded: bool) {
    let json_limit = web::JsonConfig::default().limit(64 * 1024);
    let query_errors = web::QueryConfig::default().error_handler(|e, _| {
        let mut err = ApiError::new(
            StatusCode::BAD_REQUEST,
            "MELMASTOON.GENERAL.VALIDATION_FAILED",
            "invalid query string",
        );
        err.details = json!({ "reason": e.to_string() });
        err.into()
    });
    cfg.app_data(json_limit)
        .app_data(query_errors)
        .app_data(web::PayloadConfig::new(crate::schema::MAX_MESSAGE_BYTES));
    // every route comes from the one table the OpenAPI document is generated from
    for e in crate::openapi::ENDPOINTS {
        if e.embedded_only && !embedded {
            continue;
        }
        let method = match e.method {
            "get" => web::get(),
            "post" => web::post(),
            "patch" => web::patch(),
            other => panic!("unsupported method {other} in the route table"),
        };
        let route = match e.op {
            "healthz" => method.to(healthz),
            "readyz" => method.to(readyz),
            "metrics" => method.to(metrics),
            "openapi" => method.to(openapi),
            "listCredentials" => method.to(list_credentials),
            "issueCredential" => method.to(crate::admin::issue_credential),
            "getCredential" => method.to(get_credential),
            "updateCredential" => method.to(crate::writes::update),
            "credentialAudit" => method.to(credential_audit),
            "revealPin" => method.to(reveal_pin),
            "revokeCredential" => method.to(crate::writes::revoke),
            "suspendCredential" => method.to(crate::writes::suspend),
            "unsuspendCredential" => method.to(crate::writes::unsuspend),
            "replaceCredential" => method.to(crate::writes::replace),
            "listDevices" => method.to(list_devices),
            "registerDevice" => method.to(crate::admin::register_device),
            "issueMasterKey" => method.to(crate::admin::issue_master),
            "revokeMasterKey" => method.to(crate::admin::revoke_master),
            "deviceHealth" => method.to(device_health),
            "updateDevice" => method.to(update_device),
            "decommissionDevice" => method.to(decommission_device),
            "listAdapters" => method.to(crate::webhooks::list_adapters),
            "adapterHealthCheck" => method.to(crate::webhooks::health_check),
            "configureAdapter" => method.to(crate::integrations::configure),
            "issueOfflineCert" => method.to(crate::admin::issue_cert),
            "revokeOfflineCert" => method.to(crate::admin::revoke_cert),
            "adapterStatus" => method.to(crate::integrations::status),
            "adapterLog" => method.to(crate::integrations::log),
            "vendorWebhook" => method.to(crate::webhooks::receive),
            "intake" => method.to(post_intake),
            "recentEvents" => method.to(recent_events),
            "nodeStatus" => method.to(crate::status::get_status),
            other => panic!("no handler for operation {other}"),
        };
        cfg.route(e.path, route);
    }
    cfg.default_service(web::to(not_found));
}
