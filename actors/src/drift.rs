//! Drift reconciliation (DESIGN §6): what each device holds at the vendor is compared with
//! what Lockstep believes. An object Lockstep created (its label is one of our credential
//! ids) that should not be there is an orphan and is deleted at once (idempotent at the
//! vendor, no state of ours changes); a credential that should be at the door but is not
//! is missing, and its owning saga is told to re-issue it (an internal event, so the
//! subject's single writer does the work). Both are counted and audited. Objects other
//! people created at the lock are left alone.

use std::collections::{HashMap, HashSet};

use lockstep_domain::{
    assess, DeviceHealth, DeviceSignal, HolderKind, KeyCredentialId, KeyCredentialKind, PropertyId,
    SkewLevel, TenantId,
};
use lockstep_persistence::{
    AuditRow, Desired, Device, DeviceHealthWrite, InternalEvent, SyncState, UnitOfWork,
};
use lockstep_vendors::VendorEntry;
use serde_json::json;
use tracing::{info, warn};

use crate::events_in;
use crate::events_out;
use crate::runtime::Runtime;
use crate::step::StepError;
use crate::vendor::{VendorOp, VendorReply};

/// Devices of one property reconciled at the same time: as many as a vendor worker runs
/// calls at once by default, so one property's pass can fill it.
pub const DRIFT_DEVICES_AT_ONCE: usize = 8;

/// What one reconciliation found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DriftReport {
    /// Devices listed.
    pub devices: usize,
    /// Orphans deleted at the vendor.
    pub orphans_deleted: usize,
    /// Missing credentials sent back to their sagas for re-issue.
    pub missing_reissued: usize,
    /// Devices whose health was read.
    pub probed: usize,
    /// Health signals raised (offline, online, battery low, clock skew).
    pub signals: usize,
}

/// The saga subject that owns a credential.
async fn subject_of(
    rt: &Runtime,
    tenant: TenantId,
    id: &KeyCredentialId,
) -> Result<Option<String>, StepError> {
    let Some(c) = rt.store.get_credential(tenant, id).await? else {
        return Ok(None);
    };
    Ok(match c.holder_kind() {
        HolderKind::Guest => c.reservation_id().map(|r| format!("reservation:{r}")),
        HolderKind::StaffMaster => rt
            .store
            .master_by_credential(tenant, id)
            .await?
            .and_then(|m| m.shift_id)
            .map(|s| format!("shift:{s}")),
    })
}

/// Reconciles every device of a property.
pub async fn reconcile_property(
    rt: &Runtime,
    tenant: TenantId,
    property: &PropertyId,
    partition: i32,
) -> Result<DriftReport, StepError> {
    use futures_util::StreamExt as _;
    let rooms = rt.store.property_rooms(tenant, property).await?;
    let mut devices = rt.store.devices_for_rooms(tenant, property, &rooms).await?;
    // the doors of common areas and the back of house hold master keys too (issue 14)
    for d in rt.store.area_devices(tenant, property).await? {
        if !devices.iter().any(|x| x.id == d.id) {
            devices.push(d);
        }
    }
    let mut report = DriftReport::default();
    // Devices are reconciled DRIFT_DEVICES_AT_ONCE at a time: each one's calls wait on the
    // adapter's worker, which keeps the account's rate limit and serves revocations first,
    // so this only keeps that pipeline full (one device at a time, a pass over 1,000 TTLock
    // locks took about 3 minutes of mostly idle waiting on round trips).
    let mut each = futures_util::stream::iter(devices.iter())
        .map(|d| async move {
            let reconciled = reconcile_device(rt, tenant, property, partition, d).await;
            let probed = probe_device(rt, tenant, property, d).await;
            (d, reconciled, probed)
        })
        .buffer_unordered(DRIFT_DEVICES_AT_ONCE);
    while let Some((d, reconciled, probed)) = each.next().await {
        match reconciled {
            Ok(r) => {
                report.devices += 1;
                report.orphans_deleted += r.orphans_deleted;
                report.missing_reissued += r.missing_reissued;
            }
            // one unreachable lock must not stop the others; the next run tries again
            Err(e) => warn!(device = %d.id, error = %e, "drift reconciliation of a device failed"),
        }
        match probed {
            Ok(signals) => {
                report.probed += 1;
                report.signals += signals.len();
            }
            Err(e) => warn!(device = %d.id, error = %e, "device health probe failed"),
        }
    }
    rt.metrics
        .drift_runs
        .with_label_values(&["completed"])
        .inc();
    Ok(report)
}

/// Reads one device's health through its adapter's worker, stores the reading and raises
/// the signals it crosses (spec `002`: `lock.device.{offline,online,battery_low,
/// health_alert}.v1`; D-4; clock skew over 5 minutes warns, over 10 alerts), in one
/// commit. A vendor that cannot answer is not a device that is offline: the reading is
/// skipped and the next run tries again. D-2: a decommissioned device reads offline
/// without a vendor call.
pub async fn probe_device(
    rt: &Runtime,
    tenant: TenantId,
    property: &PropertyId,
    d: &Device,
) -> Result<Vec<DeviceSignal>, StepError> {
    let vendor = d.vendor.as_str();
    let Some(stored) = rt.store.device_health(tenant, &d.id).await? else {
        return Ok(Vec::new());
    };
    let health = if stored.decommissioned {
        DeviceHealth::decommissioned()
    } else {
        let reply = rt
            .ports
            .call(&d.vendor_adapter_id, VendorOp::Probe(d.device_ref.clone()))
            .await;
        let probe = match reply {
            Ok(VendorReply::Probed(p)) => p,
            Ok(_) => return Err(StepError::Retry("unexpected reply to probe".into())),
            Err(e) => {
                rt.metrics
                    .device_probes
                    .with_label_values(&[vendor, "vendor_error"])
                    .inc();
                if refuses_the_device(&e) {
                    probe_refused(rt, tenant, property, d).await?;
                }
                return Err(StepError::Retry(e.to_string()));
            }
        };
        let now = rt.clock.now();
        let skew = probe.device_time.map(|t| (t - now).num_milliseconds());
        DeviceHealth::new(
            probe.online,
            probe.battery_percent,
            probe.firmware.clone(),
            skew,
        )
        .unwrap_or_else(|e| {
            // D-4: a reading outside 0..=100 is the vendor's error; keep the rest
            warn!(device = %d.id, error = %e, "device battery reading out of range; ignored");
            DeviceHealth {
                online: probe.online,
                battery_percent: None,
                firmware: probe.firmware,
                clock_skew_ms: skew,
            }
        })
    };
    rt.metrics
        .device_probes
        .with_label_values(&[vendor, "ok"])
        .inc();
    let signals = assess(stored.last.as_ref(), &health, stored.threshold);
    for s in &signals {
        rt.metrics
            .device_signals
            .with_label_values(&[vendor, events_out::device_signal_label(s)])
            .inc();
        if let DeviceSignal::ClockSkew { level, skew_ms } = s {
            if *level == SkewLevel::Warn {
                warn!(device = %d.id, skew_ms, "device clock is more than 5 minutes off");
            }
        }
    }
    let now = rt.clock.now();
    let mut uow = UnitOfWork::new(tenant, None, now);
    uow.outbox = events_out::device_signal_rows(
        events_out::DeviceSubject {
            tenant_id: tenant,
            property_id: property,
            device_id: &d.id,
            vendor: d.vendor,
        },
        &signals,
        &health,
        now,
    );
    uow.device_health.push(DeviceHealthWrite {
        device_id: d.id.clone(),
        health,
    });
    rt.store.commit(uow).await?;
    Ok(signals)
}

/// Whether a failed probe says something about the device rather than its vendor: the
/// vendor answered and refused this lock (unknown there, or a refusal that is no passing
/// state). An outage, a rate limit, a rejected account or Lockstep's own gate says
/// nothing about the lock (those count against the vendor's health).
fn refuses_the_device(e: &lockstep_vendors::VendorError) -> bool {
    use lockstep_vendors::VendorError as E;
    match e {
        E::NotFound => true,
        E::Refused { code, .. } => !lockstep_vendors::TRANSIENT_REFUSALS.contains(&code.as_str()),
        _ => false,
    }
}

/// Counts a probe the vendor refused; the refusal that reaches
/// [`lockstep_domain::PROBE_FAILURES_ALERT`] in a row raises one `health_alert.v1`
/// (`check: probe_failures`) in the same commit (spec `002`: health degradation crossed a
/// threshold). A later good reading resets the count.
async fn probe_refused(
    rt: &Runtime,
    tenant: TenantId,
    property: &PropertyId,
    d: &Device,
) -> Result<(), StepError> {
    use lockstep_persistence::{DeviceTable as _, OutboxTable as _};
    let now = rt.clock.now();
    let mut tx = rt.store.begin(tenant, None).await?;
    let consecutive = tx.record_probe_failure(&d.id).await?;
    let signal = consecutive.and_then(lockstep_domain::assess_probe_failure);
    if let (Some(consecutive), Some(signal)) = (consecutive, &signal) {
        warn!(device = %d.id, consecutive, "the vendor refused the device's probe repeatedly");
        rt.metrics
            .device_signals
            .with_label_values(&[d.vendor.as_str(), events_out::device_signal_label(signal)])
            .inc();
        let rows = events_out::device_signal_rows(
            events_out::DeviceSubject {
                tenant_id: tenant,
                property_id: property,
                device_id: &d.id,
                vendor: d.vendor,
            },
            std::slice::from_ref(signal),
            // not read: this signal carries no reading
            &DeviceHealth::decommissioned(),
            now,
        );
        tx.append_outbox(&rows).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn reconcile_device(
    rt: &Runtime,
    tenant: TenantId,
    property: &PropertyId,
    partition: i32,
    d: &Device,
) -> Result<DriftReport, StepError> {
    let now = rt.clock.now();
    let vendor = d.vendor.as_str();
    let listings = match rt
        .ports
        .call(&d.vendor_adapter_id, VendorOp::List(d.device_ref.clone()))
        .await
    {
        Ok(VendorReply::Listings(l)) => l,
        Ok(_) => return Err(StepError::Retry("unexpected reply to list".into())),
        Err(e) => return Err(StepError::Retry(e.to_string())),
    };
    // Each list is judged on its own (issue 14): what a failed one holds is unknown, so
    // no key of its kinds is taken for missing; the others' orphans and gaps are handled.
    let mut entries: Vec<VendorEntry> = Vec::new();
    let mut unread: Vec<Vec<KeyCredentialKind>> = Vec::new();
    for l in listings {
        match l.entries {
            Ok(e) => entries.extend(e),
            Err(e) => {
                warn!(device = %d.id, kinds = ?l.kinds, error = %e, "drift: a list of the device failed; its kinds wait for the next run");
                unread.push(l.kinds);
            }
        }
    }
    let rows = rt.store.device_credentials(tenant, &d.id).await?;
    let ours: HashMap<&str, _> = rows.iter().map(|r| (r.credential_id.as_str(), r)).collect();
    let mut report = DriftReport::default();
    let mut uow = UnitOfWork::new(tenant, None, now);
    let mut seen: HashSet<&str> = HashSet::new();
    for e in &entries {
        // Only what Lockstep created is Lockstep's to judge.
        let Ok(id) = KeyCredentialId::parse(&e.label) else {
            continue;
        };
        seen.insert(e.label.as_str());
        let wanted = ours
            .get(e.label.as_str())
            .is_some_and(|r| r.desired == Desired::Present || r.sync == SyncState::Pending);
        if wanted {
            continue;
        }
        match rt
            .ports
            .call(
                &d.vendor_adapter_id,
                VendorOp::Revoke(d.device_ref.clone(), e.vendor_ref.clone()),
            )
            .await
        {
            Ok(_) | Err(lockstep_vendors::VendorError::NotFound) => {
                report.orphans_deleted += 1;
                rt.metrics
                    .drift_orphans_deleted
                    .with_label_values(&[vendor])
                    .inc();
                info!(device = %d.id, credential = %id, "drift: orphan deleted at the vendor");
                uow.audit.push(drift_audit(
                    tenant,
                    property,
                    &id,
                    d,
                    "drift_orphan_deleted",
                    now,
                ));
            }
            Err(err) => {
                warn!(device = %d.id, error = %err, "drift: deleting an orphan failed; next run retries")
            }
        }
    }
    for r in rows
        .iter()
        .filter(|r| r.desired == Desired::Present && r.sync == SyncState::Confirmed)
    {
        if seen.contains(r.credential_id.as_str()) {
            continue;
        }
        if !unread.is_empty() {
            let kind = rt
                .store
                .get_credential(tenant, &r.credential_id)
                .await?
                .map(|c| c.kind());
            let unknown = |kinds: &Vec<KeyCredentialKind>| {
                kinds.is_empty() || kind.is_none_or(|k| kinds.contains(&k))
            };
            if unread.iter().any(unknown) {
                continue;
            }
        }
        let Some(subject) = subject_of(rt, tenant, &r.credential_id).await? else {
            continue;
        };
        report.missing_reissued += 1;
        rt.metrics
            .drift_missing_reissued
            .with_label_values(&[vendor])
            .inc();
        info!(device = %d.id, credential = %r.credential_id, "drift: missing at the door; re-issuing");
        uow.audit.push(drift_audit(
            tenant,
            property,
            &r.credential_id,
            d,
            "drift_missing_reissued",
            now,
        ));
        uow.events.push(InternalEvent {
            property_id: property.clone(),
            partition,
            subject,
            topic: events_in::INTERNAL_REISSUE.into(),
            payload: json!({ "credentialId": r.credential_id.as_str(), "deviceId": d.id.as_str() }),
            due_at: now,
        });
    }
    if !uow.audit.is_empty() || !uow.events.is_empty() {
        rt.store.commit(uow).await?;
    }
    Ok(report)
}

fn drift_audit(
    tenant: TenantId,
    property: &PropertyId,
    id: &KeyCredentialId,
    d: &Device,
    action: &str,
    now: lockstep_domain::Timestamp,
) -> AuditRow {
    AuditRow {
        id: ulid::Ulid::new().to_string(),
        tenant_id: tenant,
        property_id: property.clone(),
        credential_id: Some(id.clone()),
        device_id: Some(d.id.clone()),
        actor_kind: "saga".into(),
        action: action.into(),
        reason: Some("drift".into()),
        vendor: Some(d.vendor),
        trace_id: None,
        created_at: now,
        payload: json!({}),
    }
}
