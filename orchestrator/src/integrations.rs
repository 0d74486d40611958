//! The coworking admin endpoints of spec `001` (`POST /integrations/access/configure`,
//! `GET /integrations/access/status`, `GET /integrations/access/logs`), mapped onto vendor
//! adapters: an adapter is the "access integration" of its property.
//!
//! - `POST /api/v1/vendor-adapters/{id}/configure` `{secret, value}` (admin): writes a new
//!   API key (or client secret, password) where the adapter reads it, which must be a file:
//!   the adapter picks it up at its next request without a restart (US-MEL-0081), and the
//!   new fingerprint is recorded at once (V-1/V-2: the database holds the pointer and the
//!   fingerprint, never the value). The value is in no response, log line or audit row.
//! - `GET /api/v1/vendor-adapters/{id}/status` (admin): configured (every secret readable),
//!   enabled (served by this node), the fingerprint's first 12 hex digits and `rotatesAt`.
//! - `GET /api/v1/vendor-adapters/{id}/log` (admin): the adapter property's grants and
//!   revocations at that vendor, from the audit chain, a page at a time (`cursor` = the
//!   chain position of the previous page's last row).

use std::io::Write;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use lockstep_config::{RawAdapter, RawProperty, SecretSource};
use lockstep_domain::{DomainError, PropertyId, TenantId, VendorAdapterId, VendorCode};
use lockstep_persistence::{AuditRow, UnitOfWork};
use serde_json::json;

use crate::app::Shared;
use crate::auth::Role;
use crate::http::{authenticate, subject, ApiError};

const ADMINS: &[Role] = &[Role::Admin];

/// The tenant's adapter `id` with its property, or 404.
fn adapter_of<'a>(
    shared: &'a Shared,
    tenant: TenantId,
    id: &str,
) -> Result<(&'a RawProperty, &'a RawAdapter, PropertyId), ApiError> {
    let id = VendorAdapterId::parse(id)?;
    for p in &shared.properties {
        if p.tenant_id != tenant.to_string() {
            continue;
        }
        if let Some(a) = p.adapters.iter().find(|a| a.id == id.as_str()) {
            return Ok((p, a, PropertyId::parse(&p.property_id)?));
        }
    }
    Err(DomainError::NotFound {
        entity: "vendor_adapter",
    }
    .into())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Configure {
    secret: String,
    value: String,
}

/// Replaces `path`'s content with `value` (a temp file renamed over it; owner-only).
fn write_secret(path: &std::path::Path, value: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("new-{}", ulid::Ulid::new()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(value.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// `POST /api/v1/vendor-adapters/{id}/configure`.
pub(crate) async fn configure(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, ADMINS)?;
    let (property, adapter, property_id) = adapter_of(&shared, tenant, &path.into_inner())?;
    let b: Configure = crate::writes::json_object(&body)?;
    let value = b.value.trim();
    if value.is_empty() || value.len() > 4096 || value.chars().any(char::is_control) {
        return Err(DomainError::validation("value", "1 to 4096 printable characters").into());
    }
    let secrets = crate::seed::adapter_secrets(adapter);
    let Some((name, source)) = secrets.iter().find(|(n, _)| *n == b.secret) else {
        return Err(DomainError::validation(
            "secret",
            format!(
                "one of this adapter's secrets: {}",
                secrets
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .into());
    };
    let SecretSource::File(file) = source else {
        return Err(DomainError::validation(
            "secret",
            "this secret is not kept in a file Lockstep may write; rotate it where it lives",
        )
        .into());
    };
    write_secret(file, value).map_err(|e| {
        tracing::error!(adapter = %adapter.id, secret = name, error = %e.kind(), "writing a vendor secret failed");
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "MELMASTOON.GENERAL.UNAVAILABLE",
            "the secret could not be written",
        )
    })?;
    let rt = &shared.rt;
    crate::seed::check_secret_rotation(
        rt.store.as_ref(),
        rt.clock.as_ref(),
        std::slice::from_ref(property),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "MELMASTOON.GENERAL.UNAVAILABLE",
            "storage is unavailable; retry later",
        )
    })?;
    let vendor = VendorCode::parse(&adapter.vendor)?;
    let now = rt.clock.now();
    let mut uow = UnitOfWork::new(tenant, None, now);
    uow.audit.push(AuditRow {
        id: ulid::Ulid::new().to_string(),
        tenant_id: tenant,
        property_id: property_id.clone(),
        credential_id: None,
        device_id: None,
        actor_kind: "operator".into(),
        action: "vendor_secret_configured".into(),
        reason: None,
        vendor: Some(vendor),
        trace_id: None,
        created_at: now,
        payload: json!({ "by": subject(&req, &shared), "adapterId": adapter.id, "secret": name }),
    });
    rt.store.commit(uow).await?;
    tracing::info!(adapter = %adapter.id, secret = name, "vendor secret configured");
    status_body(&shared, tenant, adapter, &property_id).await
}

async fn status_body(
    shared: &Shared,
    tenant: TenantId,
    adapter: &RawAdapter,
    property: &PropertyId,
) -> Result<HttpResponse, ApiError> {
    let vendor = VendorCode::parse(&adapter.vendor)?;
    let record = shared
        .rt
        .store
        .vendor_credential(tenant, property, vendor, &adapter.environment)
        .await?;
    let configured = crate::seed::adapter_secrets(adapter)
        .iter()
        .all(|(_, s)| lockstep_config::resolve_secret(s).is_ok_and(|v| !v.trim().is_empty()));
    let id = VendorAdapterId::parse(&adapter.id)?;
    Ok(HttpResponse::Ok().json(json!({
        "id": adapter.id,
        "vendor": vendor.as_str(),
        "propertyId": property.as_str(),
        "configured": configured,
        "enabled": shared.rt.ports.port(&id).is_some(),
        "fingerprint": record.as_ref().map(|r| r.fingerprint.chars().take(12).collect::<String>()),
        "rotatesAt": record.as_ref().map(|r| r.rotates_at.to_rfc3339()),
        "updatedAt": record.as_ref().map(|r| r.updated_at.to_rfc3339()),
    })))
}

/// `GET /api/v1/vendor-adapters/{id}/status`.
pub(crate) async fn status(
    req: HttpRequest,
    path: web::Path<String>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, ADMINS)?;
    let (_, adapter, property) = adapter_of(&shared, tenant, &path.into_inner())?;
    status_body(&shared, tenant, adapter, &property).await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogQuery {
    limit: Option<usize>,
    cursor: Option<i64>,
}

/// `GET /api/v1/vendor-adapters/{id}/log`: grants (`issued`) and revocations (`revoked`).
pub(crate) async fn log(
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<LogQuery>,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = authenticate(&req, &shared, ADMINS)?;
    let (_, adapter, property) = adapter_of(&shared, tenant, &path.into_inner())?;
    let vendor = VendorCode::parse(&adapter.vendor)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(DomainError::validation("limit", "1 to 200").into());
    }
    let after = q.cursor.unwrap_or(0);
    let chain = shared.rt.store.audit_chain(tenant, &property).await?;
    let mut rows = chain.iter().filter(|r| {
        r.seq > after
            && r.row.vendor == Some(vendor)
            && matches!(r.row.action.as_str(), "issued" | "revoked")
    });
    let page: Vec<_> = rows.by_ref().take(limit).collect();
    let more = rows.next().is_some();
    let items: Vec<_> = page
        .iter()
        .map(|r| {
            json!({
                "seq": r.seq,
                "event": if r.row.action == "issued" { "granted" } else { "revoked" },
                "credentialId": r.row.credential_id.as_ref().map(|c| c.as_str()),
                "reason": r.row.reason,
                "at": r.row.created_at.to_rfc3339(),
            })
        })
        .collect();
    let next = if more {
        page.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(json!({ "items": items, "nextCursor": next })))
}
