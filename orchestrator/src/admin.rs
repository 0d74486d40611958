//! Admin writes that are not a credential's: registering a lock device (spec `002`
//! `POST /api/v1/lock-devices`, the desktop pairing wizard's call).
//!
//! A device is registered only if its adapter's vendor knows the lock (a probe through the
//! adapter's worker): a lock the vendor does not know is 409 `DEVICE_NOT_PAIRED`, an
//! unreachable vendor 502. A ref not in its vendor's form (`LockPort::check_device`) and a
//! label with control or bidi characters are 422 before any vendor call. D-1 (one device per vendor ref in a property and vendor) is the
//! store's unique blind index: a second registration of the same lock is 422. The vendor's
//! device reference is stored encrypted and never answered.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use lockstep_actors::events_out;
use lockstep_actors::{VendorOp, VendorReply};
use lockstep_domain::{
    CommonArea, DeviceRef, DomainError, LockDeviceId, PropertyId, RoomId, VendorAdapterId,
};
use lockstep_persistence::{DeviceRecord, StoreError};
use lockstep_vendors::VendorError;
use serde_json::json;

use crate::app::Shared;
use crate::auth::Role;
use crate::http::{authenticate, ApiError};

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RegisterDevice {
    property_id: String,
    vendor_adapter_id: String,
    vendor_device_ref: String,
    label: String,
    #[serde(default)]
    room_ids: Vec<String>,
    /// The common area or back of house the door opens (master-key area scopes).
    #[serde(default)]
    area: Option<String>,
}

/// `POST /api/v1/lock-devices` (admins and platform services).
pub(crate) async fn register_device(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, &[Role::Admin, Role::Service])?;
    let b: RegisterDevice = crate::writes::json_object(&body)?;
    let property = PropertyId::parse(&b.property_id)?;
    let adapter_id = VendorAdapterId::parse(&b.vendor_adapter_id)?;
    // shown to staff in lists and events: no control or bidi characters (issue 14)
    let label =
        crate::json::label(&b.label, 128).map_err(|why| DomainError::validation("label", why))?;
    let vendor_ref = b.vendor_device_ref.trim();
    if vendor_ref.is_empty()
        || vendor_ref.len() > 128
        || !vendor_ref.bytes().all(|c| c.is_ascii_graphic())
    {
        return Err(DomainError::validation(
            "vendorDeviceRef",
            "1 to 128 printable ASCII characters",
        )
        .into());
    }
    let area = b
        .area
        .as_deref()
        .map(CommonArea::parse)
        .transpose()
        .map_err(|_| {
            DomainError::validation(
                "area",
                "one of lobby, gym, pool, spa, parking, back_of_house",
            )
        })?;
    if b.room_ids.is_empty() && area.is_none() {
        return Err(DomainError::validation(
            "roomIds",
            "a device serves at least one room, or opens an area",
        )
        .into());
    }
    let rooms = b
        .room_ids
        .iter()
        .map(|r| RoomId::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    let (info, vendor) = shared
        .rt
        .ports
        .adapters()
        .into_iter()
        .find(|(i, _)| i.id == adapter_id && i.tenant_id == tenant && i.property_id == property)
        .ok_or(DomainError::NotFound {
            entity: "vendor_adapter",
        })?;
    let device_ref = DeviceRef::new(vendor_ref);
    // a ref the adapter could never use is the caller's mistake, not the vendor's outage:
    // 422 here, without a vendor call (issue 14)
    if let Some(port) = shared.rt.ports.port(&info.id) {
        port.check_device(&device_ref).map_err(|e| {
            let detail = match e {
                VendorError::Refused { detail, .. } => detail,
                other => other.to_string(),
            };
            ApiError::from(DomainError::validation("vendorDeviceRef", detail))
        })?;
    }
    match shared
        .rt
        .ports
        .call(&info.id, VendorOp::Probe(device_ref.clone()))
        .await
    {
        Ok(VendorReply::Probed(_)) => {}
        Err(VendorError::NotFound) => return Err(DomainError::DeviceNotPaired.into()),
        Err(VendorError::Refused { code, .. }) if code.contains("not_found") => {
            return Err(DomainError::DeviceNotPaired.into())
        }
        Err(VendorError::Refused { code, detail }) if code == "invalid_device" => {
            return Err(DomainError::validation("vendorDeviceRef", detail).into())
        }
        Ok(_) | Err(_) => return Err(DomainError::VendorUnreachable.into()),
    }
    let id = LockDeviceId::generate();
    let now = shared.rt.clock.now();
    let caps = shared
        .rt
        .ports
        .port(&info.id)
        .map(|p| crate::seed::caps_json(&p.capabilities()))
        .unwrap_or_else(|| json!({}));
    let mut fields = json!({
        "label": label,
        "roomIds": rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
    });
    if let Some(a) = area {
        fields["area"] = json!(a.as_str());
    }
    let registered = events_out::device_row(
        events_out::device::REGISTERED,
        events_out::DeviceSubject {
            tenant_id: tenant,
            property_id: &property,
            device_id: &id,
            vendor,
        },
        fields,
        now,
    );
    match shared
        .rt
        .store
        .upsert_device(&DeviceRecord {
            id: id.clone(),
            tenant_id: tenant,
            property_id: property.clone(),
            vendor,
            vendor_adapter_id: info.id.clone(),
            device_ref,
            label: label.to_owned(),
            capabilities: caps.clone(),
            rooms: rooms.clone(),
            area,
            now,
            on_register: vec![registered],
        })
        .await
    {
        // the saga reads the property's devices from this node's cache: a new one counts
        // at once here (other nodes see it within the cache's lifetime)
        Ok(_) => {
            shared.rt.config.invalidate(tenant, &property);
            shared.admit_cache.forget(tenant, &property);
        }
        Err(StoreError::Constraint(_)) => {
            return Err(DomainError::validation(
                "vendorDeviceRef",
                "this lock is registered at the property already (D-1)",
            )
            .into())
        }
        Err(e) => return Err(e.into()),
    }
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/api/v1/lock-devices/{}", id.as_str())))
        .json(json!({
            "id": id.as_str(),
            "tenantId": tenant.to_string(),
            "propertyId": property.as_str(),
            "vendor": vendor.as_str(),
            "vendorAdapterId": info.id.as_str(),
            "label": label,
            "rooms": rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "area": area.map(|a| a.as_str()),
            "capabilities": caps,
        })))
}

/// Who issues and revokes master keys: admins and the staffing platform's service.
const MASTER_WRITERS: &[Role] = &[Role::Admin, Role::Service];

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct IssueMaster {
    property_id: String,
    shift_id: String,
    staff_user_id: String,
    scope: serde_json::Value,
    valid_from: String,
    valid_until: String,
}

fn master_json(
    m: &lockstep_persistence::MasterKeyRecord,
    state: Option<&str>,
) -> serde_json::Value {
    json!({
        "id": m.id,
        "tenantId": m.tenant_id.to_string(),
        "propertyId": m.property_id.as_str(),
        "staffUserId": m.staff_user_id,
        "shiftId": m.shift_id,
        "keyCredentialId": m.key_credential_id.as_str(),
        "scopeKind": m.scope_kind,
        "scope": m.scope,
        "validFrom": m.valid_from.to_rfc3339(),
        "validUntil": m.valid_until.to_rfc3339(),
        "issuedAt": m.issued_at.to_rfc3339(),
        "revokedAt": m.revoked_at.map(|t| t.to_rfc3339()),
        "state": state,
    })
}

/// `POST /api/v1/master-keys`: a shift-bound, scope-bounded master key. The request is the
/// shift start the staffing platform would publish (`staff.shift.started.v1`'s data plus
/// `propertyId`); it travels the property's partition as that event and the shift's saga
/// issues the key (M-1..M-3 hold as for the broker's events). 200 with the master key once
/// issued, 202 while the step has not run, 422 when the saga issued none.
pub(crate) async fn issue_master(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, MASTER_WRITERS)?;
    let b: IssueMaster = crate::writes::json_object(&body)?;
    let property = PropertyId::parse(&b.property_id)?;
    let message_id = crate::writes::message_id(&req)?;
    let now = shared.rt.clock.now();
    let envelope = json!({
        "id": message_id,
        "subject": lockstep_actors::events_in::SHIFT_STARTED,
        "time": now.to_rfc3339(),
        "tenantId": tenant.to_string(),
        "propertyId": property.as_str(),
        "traceId": null,
        "data": {
            "shiftId": b.shift_id,
            "staffUserId": b.staff_user_id,
            "scope": b.scope,
            "validFrom": b.valid_from,
            "validUntil": b.valid_until,
        },
    });
    let bytes = serde_json::to_vec(&envelope).unwrap_or_default();
    match shared
        .commands
        .send_event(&shared, tenant, &property, &message_id, &bytes)
        .await
    {
        Ok(()) => {}
        Err(crate::intake::IntakeError::Rejected(r)) => {
            let mut e = ApiError::from(DomainError::validation("body", r.to_string()));
            e.details["reason"] = json!(r.label());
            return Err(e);
        }
        Err(crate::intake::IntakeError::Store(e)) => return Err(e.into()),
    }
    let store = shared.rt.store.as_ref();
    let outcome =
        crate::commands::outcome(store, tenant, &message_id, crate::commands::DEFAULT_WAIT).await?;
    let location = format!(
        "/api/v1/key-credentials?staffUserId={}&propertyId={}",
        b.staff_user_id,
        property.as_str()
    );
    if outcome.is_none() {
        return Ok(HttpResponse::Accepted()
            .insert_header(("location", location))
            .json(json!({ "status": "pending", "shiftId": b.shift_id })));
    }
    // the shift's live master key, newest first
    let creds = store
        .list_credentials(
            tenant,
            &lockstep_persistence::CredentialFilter {
                property_id: Some(property.as_str().to_owned()),
                staff_user_id: Some(b.staff_user_id.clone()),
                ..Default::default()
            },
            200,
        )
        .await?;
    for c in creds.iter().rev() {
        if let Some(m) = store.master_by_credential(tenant, c.id()).await? {
            if m.shift_id.as_deref() == Some(b.shift_id.as_str()) && m.revoked_at.is_none() {
                return Ok(HttpResponse::Ok()
                    .insert_header(("location", location))
                    .json(master_json(&m, Some(c.state().as_str()))));
            }
        }
    }
    let mut e = ApiError::from(DomainError::validation(
        "scope",
        "the shift's saga issued no master key (deactivated user, an unsupported scope, or no room with a lock)",
    ));
    e.details["outcome"] = json!(outcome);
    Err(e)
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeMaster {
    reason: Option<String>,
}

/// `POST /api/v1/master-keys/{id}/revoke` `{reason?}` (`expired` at shift end by default;
/// `security`): the master key's credential is revoked by its shift's saga.
pub(crate) async fn revoke_master(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, MASTER_WRITERS)?;
    let id = lockstep_domain::MasterKeyId::parse(&path.into_inner())?;
    let b: RevokeMaster = crate::writes::body(&body)?;
    let reason = lockstep_domain::RevokeReason::parse(b.reason.as_deref().unwrap_or("expired"))?;
    if !matches!(
        reason,
        lockstep_domain::RevokeReason::Expired | lockstep_domain::RevokeReason::Security
    ) {
        return Err(DomainError::validation("reason", "expired or security").into());
    }
    let store = shared.rt.store.as_ref();
    let not_found = || DomainError::NotFound {
        entity: "master_key",
    };
    let m = store
        .master_by_id(tenant, id.as_str())
        .await?
        .ok_or_else(not_found)?;
    let cred = crate::http::credential_or_404(store, tenant, &m.key_credential_id).await?;
    if m.revoked_at.is_none() {
        let answer = crate::writes::run_command(
            &req,
            &shared,
            tenant,
            &cred,
            lockstep_domain::OperatorCommand::Revoke,
            json!({ "reason": reason.as_str() }),
        )
        .await?;
        if answer.status() != actix_web::http::StatusCode::OK {
            return Ok(answer);
        }
    }
    let m = store
        .master_by_id(tenant, id.as_str())
        .await?
        .ok_or_else(not_found)?;
    let cred = crate::http::credential_or_404(store, tenant, &m.key_credential_id).await?;
    Ok(HttpResponse::Ok().json(master_json(&m, Some(cred.state().as_str()))))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct IssueCredential {
    property_id: String,
    reservation_id: String,
    revision: i64,
    guest_id: String,
    room_ids: Vec<String>,
    valid_from: String,
    valid_until: String,
}

/// `POST /api/v1/key-credentials`: issue a guest's key by hand (the front desk, or the
/// reservation system calling instead of publishing). The request is the stay's
/// `reservation.confirmed.v1` (with its `revision`) and travels the property's partition as
/// that event, so the saga decides exactly as for the broker's copy: a newer revision
/// updates the stay, the same one is a duplicate. 200 with the reservation's credentials
/// once the step has run, 202 before.
pub(crate) async fn issue_credential(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, &[Role::Operator, Role::Admin, Role::Service])?;
    let b: IssueCredential = crate::writes::json_object(&body)?;
    let property = PropertyId::parse(&b.property_id)?;
    let reservation = lockstep_domain::ReservationId::parse(&b.reservation_id)?;
    let message_id = crate::writes::message_id(&req)?;
    let now = shared.rt.clock.now();
    let envelope = json!({
        "id": message_id,
        "subject": lockstep_actors::events_in::RESERVATION_CONFIRMED,
        "time": now.to_rfc3339(),
        "tenantId": tenant.to_string(),
        "propertyId": property.as_str(),
        "traceId": null,
        "data": {
            "reservationId": reservation.as_str(),
            "revision": b.revision,
            "guestId": b.guest_id,
            "roomIds": b.room_ids,
            "validFrom": b.valid_from,
            "validUntil": b.valid_until,
        },
    });
    let bytes = serde_json::to_vec(&envelope).unwrap_or_default();
    match shared
        .commands
        .send_event(&shared, tenant, &property, &message_id, &bytes)
        .await
    {
        Ok(()) => {}
        Err(crate::intake::IntakeError::Rejected(r)) => {
            let mut e = ApiError::from(DomainError::validation("body", r.to_string()));
            e.details["reason"] = json!(r.label());
            return Err(e);
        }
        Err(crate::intake::IntakeError::Store(e)) => return Err(e.into()),
    }
    let store = shared.rt.store.as_ref();
    let location = format!(
        "/api/v1/key-credentials?reservationId={}",
        reservation.as_str()
    );
    let outcome =
        crate::commands::outcome(store, tenant, &message_id, crate::commands::DEFAULT_WAIT).await?;
    let Some(outcome) = outcome else {
        return Ok(HttpResponse::Accepted()
            .insert_header(("location", location))
            .json(json!({ "status": "pending", "reservationId": reservation.as_str() })));
    };
    let mut items = Vec::new();
    for c in store
        .credentials_by_reservation(tenant, &reservation)
        .await?
    {
        let devices = store.credential_devices(tenant, c.id()).await?;
        items.push(crate::http::credential_json(&c, &devices));
    }
    Ok(HttpResponse::Ok()
        .insert_header(("location", location))
        .json(json!({ "outcome": outcome, "items": items })))
}

/// The key offline-issuance certificates are signed with, and its id.
#[derive(Clone)]
pub struct OfflineSigner {
    key: ed25519_dalek::SigningKey,
    /// Named in every certificate.
    pub key_id: String,
}

impl std::fmt::Debug for OfflineSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl OfflineSigner {
    /// A signer from a 32-byte seed.
    pub fn new(seed: [u8; 32], key_id: String) -> Self {
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
            key_id,
        }
    }

    /// Lockstep's signature over a certificate's canonical payload.
    pub fn sign(&self, c: &lockstep_domain::OfflineIssuance) -> ed25519_dalek::Signature {
        ed25519_dalek::Signer::sign(&self.key, c.signed_payload().as_bytes())
    }

    /// The public half (the relay checks certificates against it).
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// The public half, hex (what desktops pin to verify certificates).
    pub fn public_hex(&self) -> String {
        self.key
            .verifying_key()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct IssueCert {
    property_id: String,
    desktop_device_id: String,
    public_key_ed25519: String,
    allowed_kinds: Option<Vec<String>>,
    max_valid_window_hours: Option<i64>,
}

fn cert_json(c: &lockstep_domain::OfflineIssuance) -> serde_json::Value {
    json!({
        "id": c.id.as_str(),
        "tenantId": c.tenant_id.to_string(),
        "propertyId": c.property_id.as_str(),
        "desktopDeviceId": c.desktop_device_id,
        "serial": c.serial,
        "publicKeyEd25519": c.public_key_ed25519,
        "allowedKinds": c.allowed_kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "maxValidWindowHours": c.max_valid_window_hours,
        "issuedAt": c.issued_at.to_rfc3339(),
        "expiresAt": c.expires_at.to_rfc3339(),
        "revokedAt": c.revoked_at.map(|t| t.to_rfc3339()),
        "revokeReason": c.revoke_reason.map(|r| r.as_str()),
    })
}

fn cert_audit(
    c: &lockstep_domain::OfflineIssuance,
    action: &str,
    by: String,
    now: lockstep_domain::Timestamp,
) -> lockstep_persistence::AuditRow {
    lockstep_persistence::AuditRow {
        id: ulid::Ulid::new().to_string(),
        tenant_id: c.tenant_id,
        property_id: c.property_id.clone(),
        credential_id: None,
        device_id: None,
        actor_kind: "operator".into(),
        action: action.into(),
        reason: c.revoke_reason.map(|r| r.as_str().to_owned()),
        vendor: None,
        trace_id: None,
        created_at: now,
        payload: json!({ "by": by, "certificateId": c.id.as_str(), "serial": c.serial }),
    }
}

/// `POST /api/v1/offline-issuance/certificates` (admins, the desktop pairing service): an
/// Ed25519 certificate for a desktop's public key (spec `003` §5: O-1 90 days, O-3 at most
/// 48 hours, kinds within the property's `allowOfflineIssuanceKinds`), signed by Lockstep.
pub(crate) async fn issue_cert(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    use base64::Engine as _;
    let tenant = authenticate(&req, &shared, &[Role::Admin, Role::Service])?;
    let signer = shared.offline_signer.as_ref().ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "MELMASTOON.GENERAL.UNAVAILABLE",
            "offline issuance is not configured ([offline] signing_key)",
        )
    })?;
    let b: IssueCert = crate::writes::json_object(&body)?;
    let property = PropertyId::parse(&b.property_id)?;
    if !shared
        .properties
        .iter()
        .any(|p| p.tenant_id == tenant.to_string() && p.property_id == property.as_str())
    {
        return Err(DomainError::NotFound { entity: "property" }.into());
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(b.public_key_ed25519.trim())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .filter(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_ok())
        .ok_or_else(|| {
            DomainError::validation("publicKeyEd25519", "base64 of a 32-byte Ed25519 public key")
        })?;
    let store = shared.rt.store.as_ref();
    let now = millis(shared.rt.clock.now());
    let policy_kinds: Vec<lockstep_domain::KeyCredentialKind> =
        match store.get_policy(tenant, &property).await? {
            Some(p) => p
                .allow_offline_issuance_kinds
                .iter()
                .filter_map(|k| lockstep_domain::KeyCredentialKind::parse(k).ok())
                .collect(),
            None => lockstep_domain::KeyKindPolicy::default_for(
                lockstep_domain::KeyKindPolicyId::generate(),
                tenant,
                property.clone(),
                now,
            )
            .allow_offline_issuance_kinds()
            .to_vec(),
        };
    let kinds = match b.allowed_kinds {
        Some(k) => k
            .iter()
            .map(|k| lockstep_domain::KeyCredentialKind::parse(k))
            .collect::<Result<Vec<_>, _>>()?,
        None => policy_kinds.clone(),
    };
    let cert = lockstep_domain::OfflineIssuance::issue(
        tenant,
        property,
        &b.desktop_device_id,
        &base64::engine::general_purpose::STANDARD.encode(key),
        kinds,
        &policy_kinds,
        b.max_valid_window_hours
            .unwrap_or(lockstep_domain::offline::MAX_OFFLINE_WINDOW_HOURS),
        now,
    )?;
    store.save_offline_cert(&cert).await?;
    let mut uow = lockstep_persistence::UnitOfWork::new(tenant, None, now);
    uow.audit.push(cert_audit(
        &cert,
        "offline_cert_issued",
        crate::http::subject(&req, &shared),
        now,
    ));
    store.commit(uow).await?;
    let payload = cert.signed_payload();
    let signature = ed25519_dalek::Signer::sign(&signer.key, payload.as_bytes());
    let signature_b64 = base64::engine::general_purpose::STANDARD.encode(signature.to_bytes());
    {
        // Kept beside the certificate: the relay checks a desktop's certificate against
        // it, so the desktop need not present it.
        use lockstep_persistence::OfflineCertSignatureTable as _;
        let mut tx = shared.rt.store.begin(tenant, None).await?;
        tx.set_offline_cert_signature(cert.id.as_str(), &signature_b64, &signer.key_id)
            .await?;
        tx.commit().await?;
    }
    let mut body = cert_json(&cert);
    body["certificate"] = json!(base64::engine::general_purpose::STANDARD.encode(&payload));
    body["signature"] =
        json!(base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()));
    body["signingKeyId"] = json!(signer.key_id);
    body["signingPublicKey"] = json!(signer.public_hex());
    Ok(HttpResponse::Created()
        .insert_header((
            "location",
            format!("/api/v1/offline-issuance/certificates/{}", cert.id.as_str()),
        ))
        .json(body))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeCert {
    reason: Option<String>,
}

/// `POST /api/v1/offline-issuance/certificates/{id}/revoke` `{reason}`; a desktop connected
/// to this node's relay with it is disconnected. O-2: unless the reason is `rotation`, the
/// provisional credentials minted under it that were materialized are flagged and revoked,
/// each with `revoked.v1` (`wasProvisional = true`); a repeated revoke retries what a failed
/// cascade left, and raises a rotation to a reason that cascades.
pub(crate) async fn revoke_cert(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, &[Role::Admin, Role::Service])?;
    let id = lockstep_domain::OfflineIssuanceId::parse(&path.into_inner())?;
    let b: RevokeCert = crate::writes::body(&body)?;
    let reason = lockstep_domain::OfflineRevokeReason::parse(
        b.reason.as_deref().unwrap_or("tenant_request"),
    )?;
    let store = shared.rt.store.as_ref();
    let mut cert = store
        .offline_cert(tenant, id.as_str())
        .await?
        .ok_or(DomainError::NotFound {
            entity: "offline_issuance",
        })?;
    let now = millis(shared.rt.clock.now());
    // A first revocation, or a rotated certificate's raised to one that doubts its key.
    if cert.revoke(reason, now) {
        store.save_offline_cert(&cert).await?;
        let mut uow = lockstep_persistence::UnitOfWork::new(tenant, None, now);
        uow.audit.push(cert_audit(
            &cert,
            "offline_cert_revoked",
            crate::http::subject(&req, &shared),
            now,
        ));
        store.commit(uow).await?;
    }
    // O-2, also on a repeated revoke: nothing is flagged twice. O-2 is for compromise: a
    // rotation doubts no key, and what the certificate minted while in force stays valid.
    let cascaded = if cert.revoke_reason.is_some_and(|r| r.cascades()) {
        crate::reconcile::cascade_certificate_revocation(
            store,
            tenant,
            cert.id.as_str(),
            shared.rt.clock.now(),
        )
        .await?
    } else {
        0
    };
    if cascaded > 0 {
        shared.rt.outbox_ready.notify_one();
    }
    // A desktop connected with it is cut now, not at its next handshake.
    if let Some(relay) = &shared.relay {
        relay.hub.disconnect_certificate(tenant, &cert.id);
    }
    Ok(HttpResponse::Ok().json(cert_json(&cert)))
}

/// Certificates keep times to the millisecond, as both stores do.
pub(crate) fn millis(t: lockstep_domain::Timestamp) -> lockstep_domain::Timestamp {
    use chrono::DurationRound as _;
    t.duration_trunc(chrono::Duration::milliseconds(1))
        .unwrap_or(t)
}
