//! Vendor webhooks: `POST /webhooks/v1/{vendor}/{token}` (DESIGN §6), and the vendor-adapter
//! endpoints that tell an admin each adapter's webhook URL and force a health probe.
//!
//! The URL token names the adapter (and through it the tenant and property): it is an HMAC
//! of the adapter id under the store's blind-index key, so it survives restarts, differs
//! per installation, and can be compared in constant time; a wrong token is a plain 404.
//!
//! TTLock does not sign its callbacks and sends no record id, so a callback is only a
//! doorbell (read in `lockstep_vendors::ttlock::webhook`): Lockstep reads the lock's
//! records back from TTLock's API through the adapter (`LockPort::door_events`) and trusts
//! only what the vendor answers. A forged callback
//! therefore records nothing the vendor did not record; a replayed one is recognised by
//! its digest in `webhook_inbox`, and each record is deduped on its vendor event id.
//! Each new record becomes a `key_credential_attempts` row, a `lock_audit` row and an
//! `audit.attempt.v1` event, and is judged by the property's door anomaly rules
//! (`crate::anomalies`: each anomaly an `anomaly.detected.v1` event and an audit row in the
//! same commit); the delivery gets `vendor_webhook.{received,processed}.v1`.
//! `webhook_inbox` keeps a sanitized payload: a TTLock record carries the PIN or card
//! number that opened the door, which is never stored.
//!
//! Kisi, Salto KS, Vostio and Brivo sign their webhooks: an HMAC-SHA256 over the sender's
//! timestamp and the raw body under the adapter's `webhook_secret`, refused outside a
//! five-minute window. How each one signs and what its event looks like is parsed in
//! `lockstep_vendors::<vendor>::webhook` (Kisi's, Salto's and Vostio's schemes and Brivo's
//! signature are labelled reconstructions); this module only routes. A delivery that does
//! not verify (or an adapter without a secret) is 401 `WEBHOOK_SIGNATURE_INVALID`, records
//! nothing and counts as `lockstep_webhooks_total{outcome="signature_invalid"}`; a verified
//! one is deduped on the vendor's event id (`webhook_inbox`, A-2 for its attempt) and its
//! door event recorded like TTLock's. A vendor without webhooks (`generic-wiegand`) answers
//! 404 like an unknown token.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use lockstep_actors::events_out::{self, intake_events};
use lockstep_actors::{AdapterInfo, VendorOp, VendorReply};
use lockstep_domain::{
    AttemptContext, AttemptReport, DomainError, KeyCredentialAttempt, KeyCredentialId,
    VendorAdapterId, VendorCode,
};
use lockstep_persistence::{AuditRow, Cipher, UnitOfWork, WebhookInboxRow};
use lockstep_vendors::webhook::SignatureError;
use lockstep_vendors::{DoorEvent, DoorMethod};
use serde_json::json;
use tracing::{info, warn};

use crate::anomalies::Detected;
use crate::app::Shared;
use crate::auth::Role;
use crate::http::{authenticate, ApiError};

/// Derives each adapter's webhook URL token.
#[derive(Clone)]
pub struct WebhookTokens(Cipher);

impl std::fmt::Debug for WebhookTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookTokens(<redacted>)")
    }
}

impl WebhookTokens {
    /// Tokens keyed by `cipher`'s blind-index key.
    pub fn new(cipher: Cipher) -> Self {
        Self(cipher)
    }

    /// The token of `adapter` (32 hex characters).
    pub fn token(&self, adapter: &VendorAdapterId) -> String {
        let mut t = self
            .0
            .blind_index("webhook.url_token", adapter.as_str().as_bytes());
        t.truncate(32);
        t
    }

    /// The webhook path of `adapter` for `vendor`.
    pub fn path(&self, vendor: VendorCode, adapter: &VendorAdapterId) -> String {
        format!("/webhooks/v1/{}/{}", vendor.as_str(), self.token(adapter))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "MELMASTOON.GENERAL.NOT_FOUND",
        "no such route",
    )
}

/// The adapter a (vendor, token) pair names, if any.
fn adapter_for(shared: &Shared, vendor: &str, token: &str) -> Option<AdapterInfo> {
    shared
        .rt
        .ports
        .adapters()
        .into_iter()
        .find(|(info, v)| {
            v.as_str() == vendor
                && constant_time_eq(
                    shared.webhook_tokens.token(&info.id).as_bytes(),
                    token.as_bytes(),
                )
        })
        .map(|(info, _)| info)
}

fn method_label(m: DoorMethod) -> &'static str {
    match m {
        DoorMethod::MobileApp => "mobile_app",
        DoorMethod::PinCode => "pin_code",
        DoorMethod::Card => "rfid_card",
        DoorMethod::Remote => "remote",
        DoorMethod::Other => "other",
    }
}

/// `POST /webhooks/v1/{vendor}/{token}`.
pub(crate) async fn receive(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let (vendor, token) = path.into_inner();
    let info = adapter_for(&shared, &vendor, &token).ok_or_else(not_found)?;
    match vendor.as_str() {
        "ttlock" => ttlock(&shared, &info, &body).await,
        "kisi" => kisi(&shared, &info, &req, &body).await,
        "salto" => salto(&shared, &info, &req, &body).await,
        "assa-abloy" => vostio(&shared, &info, &req, &body).await,
        "brivo" => brivo(&shared, &info, &req, &body).await,
        _ => Err(not_found()),
    }
}

/// TTLock's lock-records callback (`notifyType=1`, `lockId`, `records`): read back. Two
/// callbacks of one lock close together read overlapping records; the one that commits
/// second fails on A-2 and runs again, recording only what is still new.
async fn ttlock(
    shared: &Shared,
    info: &AdapterInfo,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    for _ in 0..3 {
        if let Some(done) = ttlock_once(shared, info, body).await? {
            return Ok(done);
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "MELMASTOON.GENERAL.UNAVAILABLE",
        "concurrent deliveries; retry later",
    ))
}

/// One webhook delivery, authenticated and read, ready to be recorded.
struct Delivery<'a> {
    vendor: VendorCode,
    kind: &'static str,
    /// The delivery's dedupe id in `webhook_inbox`.
    external_id: String,
    /// What `webhook_inbox` keeps (sanitized).
    payload: serde_json::Value,
    /// Whether its authenticity was proven (signature or read-back).
    signature_ok: bool,
    device: Option<&'a lockstep_persistence::Device>,
    /// The door events it reports, each with its vendor event id.
    events: Vec<(String, DoorEvent)>,
    outcome: &'static str,
}

/// The device of `info`'s adapter whose vendor reference `matches`.
async fn device_of(
    shared: &Shared,
    info: &AdapterInfo,
    matches: impl Fn(&str) -> bool,
) -> Result<Option<lockstep_persistence::Device>, ApiError> {
    let rt = &shared.rt;
    let rooms = rt
        .store
        .property_rooms(info.tenant_id, &info.property_id)
        .await?;
    Ok(rt
        .store
        .devices_for_rooms(info.tenant_id, &info.property_id, &rooms)
        .await?
        .into_iter()
        .find(|d| d.vendor_adapter_id == info.id && matches(d.device_ref.expose())))
}

/// Records a delivery in one commit: its new door attempts (A-2: events already recorded
/// are skipped), their audit rows and `audit.attempt.v1`, the anomalies they show (event
/// and audit row each), the webhook's `received`/`processed` events and its inbox row.
/// `None` when a concurrent delivery recorded some of the same events first (the caller
/// tries again; the anomaly memory answers the same for an attempt judged again).
async fn record_delivery(
    shared: &Shared,
    info: &AdapterInfo,
    d: Delivery<'_>,
) -> Result<Option<usize>, ApiError> {
    let rt = &shared.rt;
    let tenant = info.tenant_id;
    let now = rt.clock.now();
    let webhook_id = format!("whk_{}", ulid::Ulid::new());
    let vendor = d.vendor;
    let webhook_event = |subject: &str, extra: serde_json::Value| {
        let mut data = json!({
            "webhookId": webhook_id,
            "tenantId": tenant.to_string(),
            "propertyId": info.property_id.as_str(),
            "vendorAdapterId": info.id.as_str(),
            "vendor": vendor.as_str(),
            "type": d.kind,
        });
        if let (Some(o), serde_json::Value::Object(e)) = (data.as_object_mut(), extra) {
            o.extend(e);
        }
        events_out::event_row(subject, tenant, &info.property_id, &webhook_id, data, now)
    };
    let mut uow = UnitOfWork::new(tenant, None, now);
    uow.outbox.push(webhook_event(
        intake_events::WEBHOOK_RECEIVED,
        json!({ "receivedAt": now.to_rfc3339() }),
    ));
    let mut attempts = Vec::new();
    let mut anomalies = Vec::new();
    if let Some(device) = d.device {
        let ids: Vec<String> = d.events.iter().map(|(id, _)| id.clone()).collect();
        let seen = rt.store.seen_vendor_events(tenant, vendor, &ids).await?;
        for (id, e) in &d.events {
            if seen.contains(id) {
                continue;
            }
            let credential = match e.label.as_deref().map(KeyCredentialId::parse) {
                Some(Ok(cid)) => rt.store.get_credential(tenant, &cid).await?,
                _ => None,
            };
            let report = AttemptReport {
                vendor_event_id: id.clone(),
                attempted_at: e.at,
                granted: e.granted,
                device_id: device.id.clone(),
                property_id: info.property_id.clone(),
                vendor,
                method: method_label(e.method),
            };
            match KeyCredentialAttempt::record(tenant, report, credential.as_ref(), now) {
                Ok(a) => {
                    if a.clamped {
                        warn!(device = %device.id, "door attempt time ahead of ours; clamped (A-3)");
                    }
                    // `device.rooms`: every room it serves (it was looked up among all of
                    // the property's rooms)
                    let found = shared.anomalies.detect(&AttemptContext {
                        attempt: &a,
                        credential: credential.as_ref(),
                        device_rooms: &device.rooms,
                        device_area: device.area,
                    });
                    for x in found {
                        anomalies.push(Detected::new(x, &a, credential.as_ref(), now));
                    }
                    attempts.push(a);
                }
                Err(err) => warn!(device = %device.id, error = %err, "door attempt refused (A-4)"),
            }
        }
    }
    for a in &attempts {
        uow.outbox.push(events_out::attempt_row(a));
        uow.audit.push(AuditRow {
            id: ulid::Ulid::new().to_string(),
            tenant_id: tenant,
            property_id: info.property_id.clone(),
            credential_id: a.key_credential_id.clone(),
            device_id: Some(a.device_id.clone()),
            actor_kind: "vendor".into(),
            action: "attempt".into(),
            reason: a.deny_reason.map(|r| r.as_str().to_owned()),
            vendor: Some(vendor),
            trace_id: None,
            created_at: now,
            payload: json!({
                "attemptId": a.id.as_str(),
                "outcome": a.outcome.as_str(),
                "method": a.method,
                "attemptedAt": a.attempted_at.to_rfc3339(),
            }),
        });
    }
    for x in &anomalies {
        uow.outbox.push(x.event_row());
        uow.audit.push(x.audit_row());
    }
    uow.outbox.push(webhook_event(
        intake_events::WEBHOOK_PROCESSED,
        json!({
            "outcome": d.outcome,
            "attempts": attempts.len(),
            "processedAt": now.to_rfc3339(),
        }),
    ));
    let mut payload = d.payload;
    payload["deviceId"] = json!(d.device.map(|x| x.id.as_str()));
    uow.webhooks.push(WebhookInboxRow {
        id: webhook_id.clone(),
        vendor,
        external_event_id: d.external_id,
        kind: d.kind.into(),
        payload,
        signature_ok: d.signature_ok,
        received_at: now,
        outcome: d.outcome.into(),
    });
    let n = attempts.len();
    uow.attempts = attempts;
    match rt.store.commit(uow).await {
        Ok(()) => {}
        // a concurrent delivery won the race (the same one, or overlapping records)
        Err(lockstep_persistence::StoreError::Constraint(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    rt.metrics
        .webhooks
        .with_label_values(&[vendor.as_str(), d.outcome])
        .inc();
    for x in &anomalies {
        x.report(&rt.metrics);
    }
    info!(
        vendor = vendor.as_str(),
        outcome = d.outcome,
        attempts = n,
        "webhook handled"
    );
    Ok(Some(n))
}

/// One try; `None` when a concurrent delivery recorded some of the same records first.
async fn ttlock_once(
    shared: &Shared,
    info: &AdapterInfo,
    body: &[u8],
) -> Result<Option<HttpResponse>, ApiError> {
    use lockstep_vendors::ttlock::webhook::{self, Callback, CallbackKind};
    let callback =
        Callback::parse(body).map_err(|e| DomainError::validation(e.field(), e.to_string()))?;
    let rt = &shared.rt;
    let external_id = callback
        .dedupe_id()
        .unwrap_or_else(|| format!("status:{}", ulid::Ulid::new()));
    let success = || {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body(webhook::ACK)
    };
    if rt
        .store
        .webhook_seen(info.tenant_id, VendorCode::Ttlock, &external_id)
        .await?
    {
        info!(vendor = "ttlock", "webhook replayed; already handled");
        return Ok(Some(success()));
    }
    if callback.is_gateway_status() {
        // which locks a gateway serves is TTLock's: probe every lock of the adapter
        let rooms = rt
            .store
            .property_rooms(info.tenant_id, &info.property_id)
            .await?;
        for d in rt
            .store
            .devices_for_rooms(info.tenant_id, &info.property_id, &rooms)
            .await?
            .iter()
            .filter(|d| d.vendor_adapter_id == info.id)
        {
            if let Err(e) =
                lockstep_actors::drift::probe_device(rt, info.tenant_id, &info.property_id, d).await
            {
                warn!(vendor = "ttlock", device = %d.id, error = %e, "status probe failed");
            }
        }
    }
    let device = device_of(shared, info, |r| callback.names(r)).await?;
    let mut events = Vec::new();
    let outcome = match (&device, callback.kind) {
        (_, CallbackKind::Other) => "ignored",
        (None, CallbackKind::DeviceStatus) if callback.is_gateway_status() => "processed",
        (Some(d), CallbackKind::DeviceStatus) => {
            // the device's health is read from TTLock's API; the probe records it and
            // raises `device.offline` / `device.online` when it changed
            if let Err(e) =
                lockstep_actors::drift::probe_device(rt, info.tenant_id, &info.property_id, d).await
            {
                warn!(vendor = "ttlock", device = %d.id, error = %e, "status probe failed");
                return Err(DomainError::VendorUnreachable.into());
            }
            "processed"
        }
        (None, _) => "unknown_device",
        (Some(d), CallbackKind::LockRecords) => {
            // the callback is only a doorbell: the records come from TTLock's API
            let since = webhook::read_back_since(rt.clock.now());
            match rt
                .ports
                .call(&info.id, VendorOp::DoorEvents(d.device_ref.clone(), since))
                .await
            {
                Ok(VendorReply::DoorEvents(e)) => {
                    // record ids are unique per lock: ours per device
                    events = e
                        .into_iter()
                        .map(|e| (format!("{}:{}", d.id.as_str(), e.event_id), e))
                        .collect();
                }
                Ok(_) | Err(_) => {
                    warn!(vendor = "ttlock", device = %d.id, "webhook read-back failed; the vendor will call again");
                    return Err(DomainError::VendorUnreachable.into());
                }
            }
            "processed"
        }
    };
    let recorded = record_delivery(
        shared,
        info,
        Delivery {
            vendor: VendorCode::Ttlock,
            kind: callback.kind.as_str(),
            external_id,
            payload: json!({ "notifyType": callback.notify_type, "records": callback.records }),
            signature_ok: device.is_some(),
            device: device.as_ref(),
            events,
            outcome,
        },
    )
    .await?;
    Ok(recorded.map(|_| success()))
}

/// A signed vendor's delivery once read: what to dedupe it on, how to find its device,
/// the door event it reports and what `webhook_inbox` keeps of it.
struct Signed {
    /// The delivery's dedupe id (the vendor's event id).
    external_id: String,
    /// Whether a device ref is the one the event happened at.
    device_matches: Box<dyn Fn(&str) -> bool + Send>,
    /// The door event, `None` for events that are not door operations.
    door: Option<DoorEvent>,
    /// What `webhook_inbox` keeps (no PIN, no vendor device ref, no user).
    payload: serde_json::Value,
}

/// A webhook's headers by name.
fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Kisi's signed event webhook (see `lockstep_vendors::kisi::webhook`).
async fn kisi(
    shared: &Shared,
    info: &AdapterInfo,
    req: &HttpRequest,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    use lockstep_vendors::kisi::webhook;
    signed(
        shared,
        info,
        VendorCode::Kisi,
        body,
        |secret, now| {
            webhook::verify(
                secret,
                header(req, webhook::TIMESTAMP_HEADER),
                header(req, webhook::SIGNATURE_HEADER),
                body,
                now,
            )
        },
        |body| {
            let event: webhook::Event = serde_json::from_slice(body).ok()?;
            // Kisi device refs are "<group>:<lock>"
            let suffix = format!(":{}", event.object_id);
            Some(Signed {
                external_id: format!("event:{}", event.id),
                device_matches: Box::new(move |r: &str| r.ends_with(&suffix)),
                door: event.door_event(),
                payload: json!({ "action": event.action, "eventId": event.id }),
            })
        },
    )
    .await
}

/// Salto KS's signed event notification (see `lockstep_vendors::salto::webhook`, a
/// labelled reconstruction).
async fn salto(
    shared: &Shared,
    info: &AdapterInfo,
    req: &HttpRequest,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    use lockstep_vendors::salto::webhook;
    signed(
        shared,
        info,
        VendorCode::Salto,
        body,
        |secret, now| {
            webhook::verify(
                secret,
                header(req, webhook::TIMESTAMP_HEADER),
                header(req, webhook::SIGNATURE_HEADER),
                body,
                now,
            )
        },
        |body| {
            let event: webhook::Event = serde_json::from_slice(body).ok()?;
            let lock = event.lock.id.clone();
            Some(Signed {
                external_id: format!("event:{}", event.id),
                device_matches: Box::new(move |r: &str| r == lock),
                door: event.door_event(),
                payload: json!({ "type": event.kind, "eventId": event.id }),
            })
        },
    )
    .await
}

/// Vostio's signed access notification (see `lockstep_vendors::vostio::webhook`, a
/// labelled reconstruction).
async fn vostio(
    shared: &Shared,
    info: &AdapterInfo,
    req: &HttpRequest,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    use lockstep_vendors::vostio::webhook;
    signed(
        shared,
        info,
        VendorCode::AssaAbloy,
        body,
        |secret, now| webhook::verify(secret, header(req, webhook::SIGNATURE_HEADER), body, now),
        |body| {
            let n: webhook::Notification = serde_json::from_slice(body).ok()?;
            let door = n.door_id.clone();
            Some(Signed {
                external_id: format!("notification:{}", n.notification_id),
                device_matches: Box::new(move |r: &str| r.trim() == door),
                door: n.door_event(),
                payload: json!({ "eventType": n.event_type, "notificationId": n.notification_id }),
            })
        },
    )
    .await
}

/// Brivo's event-subscription delivery (see `lockstep_vendors::brivo::webhook`: Brivo's
/// access event, a reconstructed signature under the subscription's secret word).
async fn brivo(
    shared: &Shared,
    info: &AdapterInfo,
    req: &HttpRequest,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    use lockstep_vendors::brivo::webhook;
    signed(
        shared,
        info,
        VendorCode::Brivo,
        body,
        |secret, now| {
            webhook::verify(
                secret,
                header(req, webhook::TIMESTAMP_HEADER),
                header(req, webhook::SIGNATURE_HEADER),
                body,
                now,
            )
        },
        |body| {
            let e: webhook::AccessEvent = serde_json::from_slice(body).ok()?;
            let ap = e.access_point();
            Some(Signed {
                external_id: format!("event:{}", e.uuid),
                device_matches: Box::new(move |r: &str| {
                    ap.is_some_and(|ap| r.trim().parse::<i64>().ok() == Some(ap))
                }),
                door: e.door_event(),
                payload: json!({ "action": e.security_action.action, "eventId": e.uuid }),
            })
        },
    )
    .await
}

/// A vendor's signed webhook: the signature and its time window first, with the adapter's
/// `webhook_secret` (401 `WEBHOOK_SIGNATURE_INVALID` otherwise, nothing recorded, counted
/// as `lockstep_webhooks_total{outcome="signature_invalid"}`), then the delivery is
/// deduped on the vendor's event id (spec `002` "Duplicate webhook delivery"; A-2 for its
/// attempt) and a door event becomes an attempt (`record_delivery`).
async fn signed(
    shared: &Shared,
    info: &AdapterInfo,
    vendor: VendorCode,
    body: &[u8],
    verify: impl FnOnce(&str, chrono::DateTime<chrono::Utc>) -> Result<(), SignatureError>,
    parse: impl FnOnce(&[u8]) -> Option<Signed>,
) -> Result<HttpResponse, ApiError> {
    let refused = |why: &dyn std::fmt::Display| {
        warn!(vendor = vendor.as_str(), reason = %why, "webhook refused");
        shared
            .rt
            .metrics
            .webhooks
            .with_label_values(&[vendor.as_str(), "signature_invalid"])
            .inc();
        ApiError::from(DomainError::WebhookSignatureInvalid)
    };
    // an adapter without a secret takes no signed webhook
    let secret = shared
        .properties
        .iter()
        .flat_map(|p| p.adapters.iter())
        .find(|a| a.id == info.id.as_str())
        .and_then(|a| a.webhook_secret.as_ref())
        .and_then(|s| lockstep_config::resolve_secret(s).ok())
        .or_else(|| shared.demo_webhook_secrets.get(info.id.as_str()).cloned())
        .ok_or_else(|| refused(&"no webhook secret configured"))?;
    verify(&secret, shared.rt.clock.now()).map_err(|why| refused(&why))?;
    let what = format!("not a {} webhook event", vendor.as_str());
    let d = parse(body).ok_or_else(|| DomainError::validation("body", &what))?;
    let ok = || HttpResponse::Ok().json(json!({}));
    if shared
        .rt
        .store
        .webhook_seen(info.tenant_id, vendor, &d.external_id)
        .await?
    {
        info!(
            vendor = vendor.as_str(),
            "webhook replayed; already handled"
        );
        return Ok(ok());
    }
    let device = device_of(shared, info, |r| (d.device_matches)(r)).await?;
    let outcome = match (&device, &d.door) {
        (_, None) => "ignored",
        (None, _) => "unknown_device",
        (Some(_), Some(_)) => "processed",
    };
    // the vendor's event ids are unique per account: ours per device
    let events = match (&device, d.door) {
        (Some(dev), Some(e)) => vec![(format!("{}:{}", dev.id.as_str(), e.event_id), e)],
        _ => Vec::new(),
    };
    for _ in 0..3 {
        let recorded = record_delivery(
            shared,
            info,
            Delivery {
                vendor,
                kind: "event",
                external_id: d.external_id.clone(),
                payload: d.payload.clone(),
                signature_ok: true,
                device: device.as_ref(),
                events: events.clone(),
                outcome,
            },
        )
        .await?;
        if recorded.is_some() {
            return Ok(ok());
        }
        // the same delivery, committed concurrently, is a duplicate now
        if shared
            .rt
            .store
            .webhook_seen(info.tenant_id, vendor, &d.external_id)
            .await?
        {
            return Ok(ok());
        }
    }
    Ok(ok())
}

/// Who sees adapters: admins (with their webhook URLs) and operators and services.
const ADAPTER_READERS: &[Role] = &[Role::Admin, Role::Operator, Role::Service];

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AdaptersQuery {
    property_id: Option<String>,
}

/// `GET /api/v1/vendor-adapters?propertyId=`: the tenant's configured adapters with their
/// capabilities; for admins also the webhook path to configure at the vendor.
pub(crate) async fn list_adapters(
    req: HttpRequest,
    q: web::Query<AdaptersQuery>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, ADAPTER_READERS)?;
    let admin = authenticate(&req, &shared, &[Role::Admin]).is_ok();
    let property = q
        .property_id
        .as_deref()
        .map(lockstep_domain::PropertyId::parse)
        .transpose()?;
    let mut items = Vec::new();
    for (i, vendor) in shared
        .rt
        .ports
        .adapters()
        .into_iter()
        .filter(|(i, _)| i.tenant_id == tenant)
        .filter(|(i, _)| property.as_ref().is_none_or(|p| &i.property_id == p))
    {
        let caps = shared.rt.ports.port(&i.id).map(|p| p.capabilities());
        let health = shared.rt.ports.health(&i.id).await;
        let mut item = json!({
            "id": i.id.as_str(),
            "tenantId": i.tenant_id.to_string(),
            "propertyId": i.property_id.as_str(),
            "vendor": vendor.as_str(),
            "environment": i.environment,
            "enabled": i.enabled,
            "precedence": i.precedence,
            "capabilities": caps.map(|c| crate::seed::caps_json(&c)),
            "health": health.as_ref().map(health_json),
        });
        if admin {
            item["webhookPath"] = json!(shared.webhook_tokens.path(vendor, &i.id));
        }
        items.push(item);
    }
    Ok(HttpResponse::Ok().json(json!({ "items": items, "nextCursor": null })))
}

/// Spec `003` §3 `AdapterHealthSnapshot` as the API serves it: the breaker's window of the
/// adapter's vendor and environment, and the adapter's own last error (a code and when; the
/// vendor's message is not kept).
fn health_json(h: &lockstep_actors::AdapterHealth) -> serde_json::Value {
    let s = &h.snapshot;
    json!({
        "windowSize": s.window_size,
        "errorRatePct": s.error_rate_pct,
        "p95LatencyMs": s.p95_latency_ms,
        "p99LatencyMs": s.p99_latency_ms,
        "circuit": s.circuit.as_str(),
        "lastTrippedAt": s.last_tripped_at.map(|t| t.to_rfc3339()),
        "lastError": h.last_error.as_ref().map(|e| json!({
            "code": e.code,
            "at": e.at.to_rfc3339(),
        })),
    })
}

/// `POST /api/v1/vendor-adapters/{id}/health-check`: probes the vendor's API now, through
/// the adapter's worker (its breaker sees the result).
pub(crate) async fn health_check(
    req: HttpRequest,
    path: web::Path<String>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, &[Role::Admin, Role::Operator, Role::Service])?;
    let id = VendorAdapterId::parse(&path.into_inner())?;
    let (info, vendor) = shared
        .rt
        .ports
        .adapters()
        .into_iter()
        .find(|(i, _)| i.id == id && i.tenant_id == tenant)
        .ok_or(DomainError::NotFound {
            entity: "vendor_adapter",
        })?;
    #[allow(clippy::disallowed_methods)] // measuring the probe's latency
    let started = std::time::Instant::now();
    let result = shared.rt.ports.call(&info.id, VendorOp::Health).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(HttpResponse::Ok().json(json!({
        "id": info.id.as_str(),
        "vendor": vendor.as_str(),
        "healthy": result.is_ok(),
        "error": result.err().map(|e| e.metric_label()),
        "latencyMs": latency_ms,
        "checkedAt": shared.rt.clock.now().to_rfc3339(),
    })))
}
