//! Admin writes that are not a credential's: registering a lock device (spec `002`
//! `POST /api/v1/lock-devices`, the desktop pairing wizard's call).
//!
//! A device is registered only if its adapter's vendor knows the lock (a probe through the
//! adapter's worker): a lock the vendor does not know is 409 `DEVICE_NOT_PAIRED`, an
//! unreachable vendor 502. D-1 (one device per vendor ref in a property and vendor) is the
//! store's unique blind index: a second registration of the same lock is 422. The vendor's
//! device reference is stored encrypted and never answered.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use lockstep_actors::events_out;
use lockstep_actors::{VendorOp, VendorReply};
use lockstep_domain::{DeviceRef, DomainError, LockDeviceId, PropertyId, RoomId, VendorAdapterId};
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
    room_ids: Vec<String>,
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
    let label = b.label.trim();
    if label.is_empty() || label.chars().count() > 128 || label.chars().any(char::is_control) {
        return Err(DomainError::validation("label", "1 to 128 printable characters").into());
    }
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
    if b.room_ids.is_empty() {
        return Err(DomainError::validation("roomIds", "a device serves at least one room").into());
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
    let registered = events_out::device_row(
        events_out::device::REGISTERED,
        events_out::DeviceSubject {
            tenant_id: tenant,
            property_id: &property,
            device_id: &id,
            vendor,
        },
        json!({
            "label": label,
            "roomIds": rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        }),
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
            now,
            on_register: vec![registered],
        })
        .await
    {
        Ok(_) => {}
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
            "capabilities": caps,
        })))
}
