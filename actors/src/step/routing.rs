//! Where a new key may go and what it can be: the property's KeyKindPolicy, the
//! capabilities of the adapters serving a stay's rooms, the choice among several adapters
//! (DESIGN §7), and the outage fallback.

use lockstep_domain::{
    KeyCredential, KeyCredentialKind, KeyCredentialState, KeyKindPolicy, KeyKindPolicyId,
    LockCapabilities, RoomId, VendorAdapterId,
};

use crate::db::StepDb;
use crate::runtime::Runtime;
use crate::saga_codec;

use super::{domain_err, Entry, StepError};

/// The property's KeyKindPolicy, or the default one (spec `003` §4).
pub(super) async fn policy(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
) -> Result<KeyKindPolicy, StepError> {
    let now = rt.clock.now();
    let Some(p) = db.get_policy(entry.tenant_id, &entry.property_id).await? else {
        return Ok(KeyKindPolicy::default_for(
            KeyKindPolicyId::generate(),
            entry.tenant_id,
            entry.property_id.clone(),
            now,
        ));
    };
    let kinds = |v: &[String]| -> Result<Vec<KeyCredentialKind>, StepError> {
        v.iter()
            .map(|k| KeyCredentialKind::parse(k).map_err(domain_err))
            .collect()
    };
    KeyKindPolicy::new(lockstep_domain::KeyKindPolicyInput {
        id: KeyKindPolicyId::parse(&p.id).unwrap_or_else(|_| KeyKindPolicyId::generate()),
        tenant_id: entry.tenant_id,
        property_id: entry.property_id.clone(),
        preferred_order: kinds(&p.preferred_order)?,
        fallback_chain: kinds(&p.fallback_chain)?,
        max_valid_until_extension_hours: Some(i64::from(p.max_valid_until_extension_hours)),
        id_verify_required_for: kinds(&p.id_verify_required_for)?,
        no_show_suspend_after_hours: Some(i64::from(p.no_show_suspend_after_hours)),
        allow_offline_issuance_kinds: kinds(&p.allow_offline_issuance_kinds)?,
        updated_at: p.updated_at,
    })
    .map_err(domain_err)
}

/// What the adapters serving `rooms` can do (I-6). With one adapter serving them (or none
/// serving all), the first device's adapter, as always. With several (DESIGN §7, outage
/// fallback), what those whose vendor is up can do together, or all of them when none is:
/// the saga then chooses and falls back only among kinds a working adapter can issue.
pub(super) async fn capabilities(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    rooms: &[RoomId],
    avoid: Option<&VendorAdapterId>,
) -> Result<LockCapabilities, StepError> {
    let devices = taking_new_work(
        &rt.ports,
        db.devices_for_rooms(entry.tenant_id, &entry.property_id, rooms)
            .await?,
    );
    let adapters = serving(&rt.ports, &devices, rooms);
    if adapters.len() < 2 {
        return Ok(devices
            .first()
            .and_then(|d| rt.ports.port(&d.vendor_adapter_id))
            .map(|p| p.capabilities())
            .unwrap_or_default());
    }
    let others: Vec<VendorAdapterId> = adapters
        .iter()
        .filter(|a| Some(*a) != avoid)
        .cloned()
        .collect();
    if let Some(up) = up_capabilities(rt, &others).await {
        return Ok(up);
    }
    Ok(adapters
        .iter()
        .filter_map(|a| rt.ports.port(a))
        .fold(LockCapabilities::default(), |c, p| {
            union(c, p.capabilities())
        }))
}

/// `adapters` with `avoid` (if among them) last.
fn avoided_last(
    mut adapters: Vec<VendorAdapterId>,
    avoid: Option<&VendorAdapterId>,
) -> Vec<VendorAdapterId> {
    adapters.sort_by_key(|a| Some(a) == avoid);
    adapters
}

/// `devices` without those of adapters that take no new work (spec `003` §3 `enabled`):
/// where a new key may go. Removals and updates of keys already at a door use every device.
pub(super) fn taking_new_work(
    ports: &crate::PortRegistry,
    mut devices: Vec<lockstep_persistence::Device>,
) -> Vec<lockstep_persistence::Device> {
    devices.retain(|d| ports.choice(&d.vendor_adapter_id).0);
    devices
}

/// The adapters that serve every one of `rooms` with their devices, by `precedence`
/// (spec `003` §3: lower preferred), then in device order.
fn serving(
    ports: &crate::PortRegistry,
    devices: &[lockstep_persistence::Device],
    rooms: &[RoomId],
) -> Vec<VendorAdapterId> {
    let mut out = serving_in_device_order(devices, rooms);
    out.sort_by_key(|a| ports.choice(a).1);
    out
}

fn serving_in_device_order(
    devices: &[lockstep_persistence::Device],
    rooms: &[RoomId],
) -> Vec<VendorAdapterId> {
    let mut out: Vec<VendorAdapterId> = Vec::new();
    for d in devices {
        let a = &d.vendor_adapter_id;
        if !out.contains(a)
            && rooms.iter().all(|r| {
                devices
                    .iter()
                    .any(|x| &x.vendor_adapter_id == a && x.rooms.contains(r))
            })
        {
            out.push(a.clone());
        }
    }
    out
}

/// What the adapters among `adapters` whose vendor is up (breaker closed, account not
/// held) can do together; `None` when none is up.
async fn up_capabilities(rt: &Runtime, adapters: &[VendorAdapterId]) -> Option<LockCapabilities> {
    let mut caps = None;
    for a in adapters {
        if rt.ports.outage(a).await.is_none() {
            if let Some(p) = rt.ports.port(a) {
                caps = Some(union(caps.unwrap_or_default(), p.capabilities()));
            }
        }
    }
    caps
}

fn union(a: LockCapabilities, b: LockCapabilities) -> LockCapabilities {
    LockCapabilities {
        mobile_key: a.mobile_key || b.mobile_key,
        card_encoding: a.card_encoding || b.card_encoding,
        pin: a.pin || b.pin,
        qr: a.qr || b.qr,
        nfc: a.nfc || b.nfc,
        remote_revoke: a.remote_revoke || b.remote_revoke,
        remote_issue: a.remote_issue || b.remote_issue,
        offline_issuance: a.offline_issuance || b.offline_issuance,
        scope_floors: a.scope_floors || b.scope_floors,
        scope_areas: a.scope_areas || b.scope_areas,
    }
}

/// The devices a new credential of `kind` goes to. With one adapter serving the rooms,
/// all of them, as always. With several (DESIGN §7), one adapter's: the first that can
/// issue `kind` and whose vendor is up (never `avoid`, the adapter a fallback leaves),
/// else the first that can issue it at all.
pub(super) async fn route(
    rt: &Runtime,
    devices: Vec<lockstep_persistence::Device>,
    rooms: &[RoomId],
    kind: KeyCredentialKind,
    avoid: Option<&VendorAdapterId>,
) -> Vec<lockstep_persistence::Device> {
    let adapters = serving(&rt.ports, &devices, rooms);
    if adapters.len() < 2 {
        return devices;
    }
    let adapters = avoided_last(adapters, avoid);
    let capable: Vec<VendorAdapterId> = adapters
        .into_iter()
        .filter(|a| {
            rt.ports
                .port(a)
                .is_some_and(|p| p.capabilities().supports(kind))
        })
        .collect();
    let mut chosen = None;
    for a in &capable {
        if Some(a) != avoid && rt.ports.outage(a).await.is_none() {
            chosen = Some(a.clone());
            break;
        }
    }
    match chosen.or_else(|| capable.first().cloned()) {
        Some(a) => devices
            .into_iter()
            .filter(|d| d.vendor_adapter_id == a)
            .collect(),
        None => devices,
    }
}

/// Outage fallback (DESIGN §7): whether a guest's credential still waiting on `adapter`
/// should fail as `vendor_unreachable`, so that the saga walks the KeyKindPolicy fallback
/// chain exactly as it does for a refused kind. Yes when the bound is set, the vendor is
/// down (breaker open, account held) or the credential has waited past the bound, and the
/// chain holds a kind not tried for this stay that another adapter, up, can issue for its
/// rooms. Otherwise it keeps waiting as before (a lone vendor's outage parks it).
pub(super) async fn outage_fallback(
    rt: &Runtime,
    db: &mut StepDb<'_>,
    entry: &Entry<'_>,
    cred: &KeyCredential,
    adapter: &VendorAdapterId,
) -> Result<bool, StepError> {
    let bound = rt.settings.outage_fallback_after;
    if bound.is_zero()
        || cred.reservation_id().is_none()
        || !matches!(
            cred.state(),
            KeyCredentialState::Requested | KeyCredentialState::Pending
        )
    {
        return Ok(false);
    }
    // No other adapter serves the rooms (the common case): nothing to fall back to, and
    // nothing else to ask.
    let devices = taking_new_work(
        &rt.ports,
        db.devices_for_rooms(entry.tenant_id, &entry.property_id, cred.rooms())
            .await?,
    );
    let others: Vec<VendorAdapterId> = serving(&rt.ports, &devices, cred.rooms())
        .into_iter()
        .filter(|a| a != adapter)
        .collect();
    if others.is_empty() {
        return Ok(false);
    }
    let waited = rt.clock.now() - cred.snapshot().created_at;
    let overdue = waited.to_std().is_ok_and(|w| w >= bound);
    if !overdue && rt.ports.outage(adapter).await.is_none() {
        return Ok(false);
    }
    let Some(caps) = up_capabilities(rt, &others).await else {
        return Ok(false);
    };
    let Some(json) = db.load_saga(entry.tenant_id, entry.key()).await? else {
        return Ok(false);
    };
    let Ok(saga) = saga_codec::reservation_from_json(&json) else {
        return Ok(false);
    };
    if saga.ended.is_some()
        || saga.gave_up.is_some()
        || saga.credential.as_ref().map(|c| &c.id) != Some(cred.id())
    {
        return Ok(false);
    }
    let policy = policy(rt, db, entry).await?;
    let mut k = cred.kind();
    while let Some(next) = policy.next_after(k, &caps, false) {
        if !saga.tried_kinds.contains(&next) {
            return Ok(true);
        }
        k = next;
    }
    Ok(false)
}
