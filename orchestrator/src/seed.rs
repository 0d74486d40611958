//! Registers the configured properties (adapters and devices) at start-up, and the demo
//! tenant with its built-in TTLock simulator in embedded mode.

use std::sync::Arc;

use anyhow::Context as _;
use lockstep_actors::{events_out, AdapterInfo, PortRegistry, RateLimit, VendorDeps};
use lockstep_config::{resolve_secret, RawAdapter, RawDevice, RawProperty, SecretSource};
use lockstep_domain::{
    Clock, CommonArea, DeviceRef, KeyCredentialKind, KeyKindPolicy, KeyKindPolicyId,
    KeyKindPolicyInput, LockDeviceId, PropertyId, RoomId, TenantId, VendorAdapterId, VendorCode,
    VendorCredentialId,
};
use lockstep_persistence::{
    AdapterRecord, CredentialChange, DeviceRecord, PolicyRecord, Store, VendorCredentialRecord,
};
use lockstep_vendors::secrets::SecretRef;
use lockstep_vendors::ttlock::{RotatingSecrets, RunningSimulator, Secret, TtlockSimulator};
use lockstep_vendors::wiegand::{DeskScope, GenericWiegandAdapter, WiegandConfig};
use lockstep_vendors::{EncoderDispatch, LockCapabilities, LockPort, TtlockAdapter, TtlockConfig};
use serde_json::json;
use tracing::info;

/// The demo tenant (embedded mode).
pub const DEMO_TENANT: &str = "00000000-0000-4000-8000-00000000d3e0";
/// The demo property.
pub const DEMO_PROPERTY: &str = "ppt_demo";
/// The demo adapter.
pub const DEMO_ADAPTER: &str = "vad_01J00000000000000000000001";
/// The demo locks: (device id, TTLock lockId, room).
pub const DEMO_LOCKS: &[(&str, i64, &str)] = &[
    ("lck_01J00000000000000000000101", 1001, "rmu_101"),
    ("lck_01J00000000000000000000102", 1002, "rmu_102"),
    ("lck_01J00000000000000000000103", 1003, "rmu_103"),
    ("lck_01J00000000000000000000104", 1004, "rmu_104"),
];

/// Capabilities in the API's and the store's JSON shape (spec `003` §2).
pub fn caps_json(c: &LockCapabilities) -> serde_json::Value {
    json!({
        "mobileKey": c.mobile_key, "cardEncoding": c.card_encoding, "pin": c.pin, "qr": c.qr,
        "nfc": c.nfc, "remoteRevoke": c.remote_revoke, "remoteIssue": c.remote_issue,
        "offlineIssuance": c.offline_issuance, "scopeFloors": c.scope_floors, "scopeAreas": c.scope_areas,
    })
}

fn secret_ref(s: &SecretSource) -> SecretRef {
    match s {
        SecretSource::Env(n) => SecretRef::Env(n.clone()),
        SecretSource::File(p) => SecretRef::File(p.clone()),
        SecretSource::Value(v) => SecretRef::Value(Secret::new(v.clone())),
    }
}

fn secret_pointer(s: &SecretSource) -> serde_json::Value {
    // V-2: only where the secret lives, never its bytes.
    match s {
        SecretSource::Env(n) => json!({ "env": n }),
        SecretSource::File(p) => json!({ "file": p.display().to_string() }),
        SecretSource::Value(_) => json!({ "inline": true }),
    }
}

/// How long a vendor secret is meant to live before its next rotation (spec `003` §3
/// `rotatesAt`; US-MEL-0081).
pub const SECRET_ROTATION_DAYS: i64 = 90;

/// An adapter's secrets, in a fixed order: (name, where it lives).
/// The secrets of an adapter's configuration, by name.
pub fn adapter_secrets(a: &RawAdapter) -> Vec<(&'static str, &SecretSource)> {
    [
        ("client_secret", a.client_secret.as_ref()),
        ("password", a.password.as_ref()),
        ("api_key", a.api_key.as_ref()),
    ]
    .into_iter()
    .filter_map(|(n, s)| s.map(|s| (n, s)))
    .collect()
}

/// V-2: where an adapter's secrets live (`client_secret=file:/run/…;password=env:…`) and
/// the SHA-256 fingerprint of their current bytes, read now. Never the bytes themselves.
pub fn credential_of(
    tenant: TenantId,
    property: &PropertyId,
    a: &RawAdapter,
    now: lockstep_domain::Timestamp,
) -> anyhow::Result<VendorCredentialRecord> {
    let secrets = adapter_secrets(a);
    let pointer = secrets
        .iter()
        .map(|(n, s)| match s {
            SecretSource::Env(v) => format!("{n}=env:{v}"),
            SecretSource::File(p) => format!("{n}=file:{}", p.display()),
            SecretSource::Value(_) => format!("{n}=inline"),
        })
        .collect::<Vec<_>>()
        .join(";");
    let mut material = String::new();
    for (n, s) in &secrets {
        let v = resolve_secret(s).map_err(|e| anyhow::anyhow!("adapters.{n}: {e}"))?;
        // length-prefixed so two secrets cannot be shifted into one another
        material.push_str(&format!("{n}:{}:{v}\n", v.len()));
    }
    Ok(VendorCredentialRecord {
        id: VendorCredentialId::generate(),
        tenant_id: tenant,
        property_id: property.clone(),
        vendor: VendorCode::parse(&a.vendor)
            .map_err(|e| anyhow::anyhow!("adapters.vendor: {e:?}"))?,
        environment: a.environment.clone(),
        secret_resource_name: pointer,
        fingerprint: lockstep_vendors::secrets::fingerprint(&material),
        rotates_at: now + chrono::Duration::days(SECRET_ROTATION_DAYS),
        updated_at: now,
    })
}

/// Re-reads every configured adapter's secrets and records their fingerprints; a changed
/// fingerprint is a rotation (logged, with the pointer, never the value). Returns how many
/// rotations it saw. Run at start and periodically (`[secrets] check_interval_ms`).
pub async fn check_secret_rotation(
    store: &dyn Store,
    clock: &dyn Clock,
    properties: &[RawProperty],
) -> anyhow::Result<usize> {
    let mut rotated = 0;
    for p in properties {
        let tenant = TenantId::parse(&p.tenant_id)
            .map_err(|e| anyhow::anyhow!("properties.tenant_id: {e:?}"))?;
        let property = PropertyId::parse(&p.property_id)
            .map_err(|e| anyhow::anyhow!("properties.property_id: {e:?}"))?;
        for a in &p.adapters {
            let rec = match credential_of(tenant, &property, a, clock.now()) {
                Ok(r) => r,
                Err(e) => {
                    // mid-rotation a file may be briefly missing: the next check sees it
                    tracing::warn!(adapter = %a.id, error = %e, "vendor secret not readable");
                    continue;
                }
            };
            if store.record_vendor_credential(&rec).await? == CredentialChange::Rotated {
                rotated += 1;
                info!(
                    adapter = %a.id,
                    vendor = %a.vendor,
                    secrets = %rec.secret_resource_name,
                    "vendor secret rotated: new fingerprint recorded"
                );
            }
        }
    }
    Ok(rotated)
}

/// Sets the rotation gauges (DESIGN §10): adapters whose vendor secret is due within 7
/// days, by vendor (`rotatesAt` of their `vendor_credentials` row), and unrevoked
/// offline-issuance certificates expiring within 7 days.
pub async fn refresh_rotation_gauges(
    store: &dyn Store,
    clock: &dyn Clock,
    metrics: &lockstep_actors::Metrics,
    properties: &[RawProperty],
) -> anyhow::Result<()> {
    let soon = clock.now() + chrono::Duration::days(7);
    let mut due: std::collections::BTreeMap<&'static str, i64> = Default::default();
    let mut tenants = std::collections::BTreeSet::new();
    for p in properties {
        let tenant = TenantId::parse(&p.tenant_id)
            .map_err(|e| anyhow::anyhow!("properties.tenant_id: {e:?}"))?;
        let property = PropertyId::parse(&p.property_id)
            .map_err(|e| anyhow::anyhow!("properties.property_id: {e:?}"))?;
        tenants.insert(tenant);
        for a in &p.adapters {
            let vendor = VendorCode::parse(&a.vendor)
                .map_err(|e| anyhow::anyhow!("adapters.vendor: {e:?}"))?;
            let environment = a.environment.clone();
            let entry = due.entry(vendor.as_str()).or_default();
            if let Some(rec) = store
                .vendor_credential(tenant, &property, vendor, &environment)
                .await?
            {
                if rec.rotates_at <= soon {
                    *entry += 1;
                }
            }
        }
    }
    for (vendor, n) in due {
        metrics
            .vendor_secrets_rotation_due
            .with_label_values(&[vendor])
            .set(n);
    }
    let mut expiring = 0;
    for t in tenants {
        expiring += store.offline_certs_expiring(t, soon).await?;
    }
    metrics.offline_certificates_expiring.set(expiring);
    Ok(())
}

/// The front desk the card adapters encode through, when this node runs the relay.
#[derive(Clone, Debug)]
pub struct Desk {
    /// The relay's encode jobs, kept in the store.
    pub dispatch: Arc<dyn EncoderDispatch>,
    /// Where desktops reach the relay (`relayWsBaseUrl` unless the adapter names one).
    pub relay_url: String,
}

/// Registers one property's adapters (building their ports) and devices. With a `desk`,
/// `generic-wiegand` adapters encode their cards there and TTLock adapters read IC card
/// numbers there; without one, a `generic-wiegand` adapter refuses to start.
pub async fn register_property(
    store: &dyn Store,
    ports: &PortRegistry,
    deps: &VendorDeps,
    p: &RawProperty,
    desk: Option<&Desk>,
) -> anyhow::Result<()> {
    let tenant = TenantId::parse(&p.tenant_id)
        .map_err(|e| anyhow::anyhow!("properties.tenant_id: {e:?}"))?;
    let property = PropertyId::parse(&p.property_id)
        .map_err(|e| anyhow::anyhow!("properties.property_id: {e:?}"))?;
    for a in &p.adapters {
        register_adapter(store, ports, deps, tenant, &property, a, desk).await?;
    }
    for d in &p.devices {
        let vendor = p
            .adapters
            .iter()
            .find(|a| a.id == d.adapter)
            .map(|a| VendorCode::parse(&a.vendor))
            .transpose()
            .map_err(|e| anyhow::anyhow!("adapters.vendor: {e:?}"))?
            .unwrap_or(VendorCode::Ttlock);
        register_device_of(store, tenant, &property, vendor, d).await?;
    }
    Ok(())
}

/// Builds the port of a configured adapter; names the missing key when one is needed.
fn build_port(
    a: &RawAdapter,
    clock: Arc<dyn Clock>,
    scope: DeskScope,
    desk: Option<&Desk>,
) -> anyhow::Result<(VendorCode, Arc<dyn LockPort>)> {
    use lockstep_vendors::{brivo, kisi, salto, vostio};
    let vendor =
        VendorCode::parse(&a.vendor).map_err(|e| anyhow::anyhow!("adapters.vendor: {e:?}"))?;
    if vendor != VendorCode::GenericWiegand && a.api_base_url.is_empty() {
        anyhow::bail!("adapters.api_base_url is required for {}", a.vendor);
    }
    let ack_timeout = a
        .desktop_ack_timeout_ms
        .map(std::time::Duration::from_millis)
        .unwrap_or(WiegandConfig::DEFAULT_ACK_TIMEOUT);
    let need = |v: &Option<String>, key: &str| -> anyhow::Result<String> {
        v.clone()
            .ok_or_else(|| anyhow::anyhow!("adapters.{key} is required for {}", a.vendor))
    };
    let secret = |v: &Option<SecretSource>, key: &str| -> anyhow::Result<String> {
        let src = v
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("adapters.{key} is required for {}", a.vendor))?;
        Ok(resolve_secret(src)?)
    };
    let err = |e: lockstep_vendors::VendorError| {
        anyhow::anyhow!("building the {} adapter: {e}", a.vendor)
    };
    // Secrets kept in a file or an environment variable are read again at each token
    // fetch or request: replacing them rotates them without a restart (US-MEL-0081).
    let refs = adapter_secrets(a).into_iter().fold(
        lockstep_vendors::secrets::SecretRefs::default(),
        |refs, (name, src)| match src {
            SecretSource::Value(_) => refs,
            other => refs.with(name, secret_ref(other)),
        },
    );
    let port: Arc<dyn LockPort> = match vendor {
        VendorCode::Ttlock => {
            let mut cfg = TtlockConfig::new(
                a.api_base_url.clone(),
                need(&a.client_id, "client_id")?,
                Secret::new(secret(&a.client_secret, "client_secret")?),
                need(&a.username, "username")?,
                Secret::new(secret(&a.password, "password")?),
            );
            // Read at each token fetch: replacing a secret file (or variable) rotates it
            // without a restart (US-MEL-0081).
            if let (Some(cs), Some(pw)) = (&a.client_secret, &a.password) {
                cfg.rotating = Some(RotatingSecrets {
                    client_secret: secret_ref(cs),
                    password: secret_ref(pw),
                });
            }
            let adapter = TtlockAdapter::new(cfg, clock).map_err(err)?;
            // IC cards (`rfid_card`) get the number the desk reader read.
            match desk {
                Some(d) => Arc::new(adapter.with_desk(d.dispatch.clone(), scope, ack_timeout)),
                None => Arc::new(adapter),
            }
        }
        VendorCode::Salto => {
            let mut cfg = salto::SaltoConfig::new(
                a.api_base_url.clone(),
                need(&a.auth_base_url, "auth_base_url")?,
                need(&a.site_id, "site_id")?,
                need(&a.client_id, "client_id")?,
                salto::Secret::new(secret(&a.client_secret, "client_secret")?),
                need(&a.username, "username")?,
                salto::Secret::new(secret(&a.password, "password")?),
            );
            cfg.secret_refs = refs;
            Arc::new(salto::SaltoAdapter::new(cfg, clock).map_err(err)?)
        }
        VendorCode::AssaAbloy => {
            let mut cfg = vostio::VostioConfig::new(
                a.api_base_url.clone(),
                need(&a.auth_base_url, "auth_base_url")?,
                vostio::Secret::new(need(&a.client_id, "client_id")?),
                vostio::Secret::new(secret(&a.client_secret, "client_secret")?),
                need(&a.site_id, "site_id")?,
            );
            cfg.secret_refs = refs;
            Arc::new(vostio::VostioAdapter::new(cfg, clock).map_err(err)?)
        }
        VendorCode::Kisi => {
            let mut cfg = kisi::KisiConfig::new(
                a.api_base_url.clone(),
                kisi::Secret::new(secret(&a.api_key, "api_key")?),
            );
            cfg.secret_refs = refs;
            Arc::new(kisi::KisiAdapter::new(cfg, clock).map_err(err)?)
        }
        VendorCode::Brivo => {
            let mut cfg = brivo::BrivoConfig::new(
                a.api_base_url.clone(),
                need(&a.auth_base_url, "auth_base_url")?,
                brivo::BrivoCredentials {
                    api_key: brivo::Secret::new(secret(&a.api_key, "api_key")?),
                    client_id: need(&a.client_id, "client_id")?,
                    client_secret: brivo::Secret::new(secret(&a.client_secret, "client_secret")?),
                    username: need(&a.username, "username")?,
                    password: brivo::Secret::new(secret(&a.password, "password")?),
                },
                a.access_schedule_id.ok_or_else(|| {
                    anyhow::anyhow!("adapters.access_schedule_id is required for brivo")
                })?,
            );
            cfg.secret_refs = refs;
            Arc::new(brivo::BrivoAdapter::new(cfg, clock).map_err(err)?)
        }
        VendorCode::GenericWiegand => {
            let desk = desk.ok_or_else(|| {
                anyhow::anyhow!(
                    "adapters.vendor: generic-wiegand encodes cards at the front desk: run the relay ([relay] bind)"
                )
            })?;
            let relay_ws_base_url = if a.api_base_url.is_empty() {
                desk.relay_url.clone()
            } else {
                a.api_base_url.clone()
            };
            Arc::new(GenericWiegandAdapter::new(
                WiegandConfig {
                    scope,
                    relay_ws_base_url,
                    desktop_ack_timeout: ack_timeout,
                },
                desk.dispatch.clone(),
            ))
        }
    };
    Ok((vendor, port))
}

async fn register_adapter(
    store: &dyn Store,
    ports: &PortRegistry,
    deps: &VendorDeps,
    tenant: TenantId,
    property: &PropertyId,
    a: &RawAdapter,
    desk: Option<&Desk>,
) -> anyhow::Result<()> {
    let id = VendorAdapterId::parse(&a.id).map_err(|e| anyhow::anyhow!("adapters.id: {e:?}"))?;
    let clock = deps.clock.clone();
    let scope = DeskScope {
        tenant_id: tenant,
        property_id: property.clone(),
    };
    let (vendor, port) = build_port(a, clock.clone(), scope, desk)?;
    let caps = port.capabilities();
    let mut deps = deps.clone();
    // Unset: what the vendor documents (TTLock 100/min); 0: none (simulators, test accounts).
    deps.worker.rate = RateLimit::from_config(a.rate_limit_per_min);
    ports.insert(
        AdapterInfo {
            id: id.clone(),
            tenant_id: tenant,
            property_id: property.clone(),
            environment: a.environment.clone(),
            enabled: a.enabled,
            precedence: a.precedence,
        },
        port,
        &deps,
    );
    store
        .upsert_adapter(&AdapterRecord {
            id,
            tenant_id: tenant,
            property_id: property.clone(),
            vendor,
            environment: a.environment.clone(),
            capabilities: caps_json(&caps),
            // V-2: the non-secret settings and where each secret lives, never its bytes.
            config: json!({
                "apiBaseUrl": a.api_base_url,
                "authBaseUrl": a.auth_base_url,
                "clientId": a.client_id,
                "username": a.username,
                "siteId": a.site_id,
                "clientSecret": a.client_secret.as_ref().map(secret_pointer),
                "password": a.password.as_ref().map(secret_pointer),
                "apiKey": a.api_key.as_ref().map(secret_pointer),
            }),
            enabled: a.enabled,
            precedence: a.precedence,
            now: clock.now(),
        })
        .await
        .context("registering an adapter")?;
    Ok(())
}

/// Registers a device of `vendor` with its rooms.
async fn register_device_of(
    store: &dyn Store,
    tenant: TenantId,
    property: &PropertyId,
    vendor: VendorCode,
    d: &RawDevice,
) -> anyhow::Result<()> {
    let rooms = d
        .rooms
        .iter()
        .map(|r| RoomId::parse(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("devices.rooms: {e:?}"))?;
    let area = d
        .area
        .as_deref()
        .map(CommonArea::parse)
        .transpose()
        .map_err(|_| {
            anyhow::anyhow!(
                "devices.area: one of lobby, gym, pool, spa, parking, back_of_house (device {})",
                d.id
            )
        })?;
    anyhow::ensure!(
        !rooms.is_empty() || area.is_some(),
        "devices: device {} opens no room and no area",
        d.id
    );
    let id = LockDeviceId::parse(&d.id).map_err(|e| anyhow::anyhow!("devices.id: {e:?}"))?;
    // D-4: 5 to 50, refused at start like any other bad device field
    let threshold =
        d.battery_low_threshold_percent
            .map(|p| {
                lockstep_domain::BatteryThreshold::new(i32::try_from(p).unwrap_or(i32::MAX))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "devices.battery_low_threshold_percent: 5 to 50 (device {})",
                            d.id
                        )
                    })
            })
            .transpose()?;
    let now = lockstep_domain::SystemClock.now();
    // spec 002: `lock.device.registered.v1` when the device is new, in the same commit
    let mut fields = json!({
        "label": d.label,
        "roomIds": rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
    });
    if let Some(a) = area {
        fields["area"] = json!(a.as_str());
    }
    let registered = events_out::device_row(
        events_out::device::REGISTERED,
        events_out::DeviceSubject {
            tenant_id: tenant,
            property_id: property,
            device_id: &id,
            vendor,
        },
        fields,
        now,
    );
    store
        .upsert_device(&DeviceRecord {
            id: id.clone(),
            tenant_id: tenant,
            property_id: property.clone(),
            vendor,
            vendor_adapter_id: VendorAdapterId::parse(&d.adapter)
                .map_err(|e| anyhow::anyhow!("devices.adapter: {e:?}"))?,
            device_ref: DeviceRef::new(d.vendor_device_ref.clone()),
            label: d.label.clone(),
            capabilities: json!({ "pin": true }),
            rooms,
            area,
            now,
            on_register: vec![registered],
        })
        .await
        .context("registering a device")?;
    if let Some(t) = threshold {
        store
            .set_battery_threshold(tenant, &id, t)
            .await
            .context("setting a device's battery threshold")?;
    }
    Ok(())
}

/// Starts the built-in TTLock simulator with the demo locks and returns the demo property.
pub fn demo(bind: std::net::SocketAddr) -> anyhow::Result<(RunningSimulator, RawProperty)> {
    let sim = TtlockSimulator::start(bind)
        .with_context(|| format!("starting the built-in TTLock simulator on {bind}"))?;
    for (_, lock, _) in DEMO_LOCKS {
        sim.handle().add_lock(*lock);
    }
    let cfg = sim.default_adapter_config();
    let property = RawProperty {
        tenant_id: DEMO_TENANT.into(),
        property_id: DEMO_PROPERTY.into(),
        adapters: vec![RawAdapter {
            id: DEMO_ADAPTER.into(),
            vendor: "ttlock".into(),
            environment: "sandbox".into(),
            api_base_url: cfg.api_base_url.clone(),
            auth_base_url: None,
            client_id: Some(cfg.client_id.clone()),
            client_secret: Some(SecretSource::Value(cfg.client_secret.expose().to_owned())),
            username: Some(cfg.username.clone()),
            password: Some(SecretSource::Value(cfg.password.expose().to_owned())),
            api_key: None,
            webhook_secret: None,
            site_id: None,
            access_schedule_id: None,
            // the built-in simulator is a test account: no rate limit
            rate_limit_per_min: Some(0),
            desktop_ack_timeout_ms: None,
            enabled: true,
            precedence: 100,
        }],
        devices: DEMO_LOCKS
            .iter()
            .map(|(id, lock, room)| RawDevice {
                id: (*id).into(),
                adapter: DEMO_ADAPTER.into(),
                vendor_device_ref: lock.to_string(),
                label: format!("Room {} door", room.trim_start_matches("rmu_")),
                rooms: vec![(*room).into()],
                area: None,
                battery_low_threshold_percent: None,
            })
            .collect(),
        policy: None,
        anomalies: None,
    };
    Ok((sim, property))
}

/// Stores the property's configured KeyKindPolicy after the domain validated it (K-1, K-2);
/// a property without one uses the domain's default.
pub async fn register_policy(
    store: &dyn Store,
    clock: &dyn Clock,
    ports: &PortRegistry,
    p: &RawProperty,
) -> anyhow::Result<()> {
    let Some(raw) = &p.policy else { return Ok(()) };
    let tenant = TenantId::parse(&p.tenant_id)
        .map_err(|e| anyhow::anyhow!("properties.tenant_id: {e:?}"))?;
    let property = PropertyId::parse(&p.property_id)
        .map_err(|e| anyhow::anyhow!("properties.property_id: {e:?}"))?;
    let now = clock.now();
    let defaults =
        KeyKindPolicy::default_for(KeyKindPolicyId::generate(), tenant, property.clone(), now);
    let kinds = |key: &str,
                 v: &Option<Vec<String>>,
                 d: &[KeyCredentialKind]|
     -> anyhow::Result<Vec<KeyCredentialKind>> {
        match v {
            None => Ok(d.to_vec()),
            Some(list) => list
                .iter()
                .map(|k| {
                    KeyCredentialKind::parse(k)
                        .map_err(|_| anyhow::anyhow!("properties.policy.{key}: unknown kind {k:?}"))
                })
                .collect(),
        }
    };
    let policy = KeyKindPolicy::new(KeyKindPolicyInput {
        id: defaults.id().clone(),
        tenant_id: tenant,
        property_id: property.clone(),
        preferred_order: kinds(
            "preferred_order",
            &raw.preferred_order,
            defaults.preferred_order(),
        )?,
        fallback_chain: kinds(
            "fallback_chain",
            &raw.fallback_chain,
            defaults.fallback_chain(),
        )?,
        max_valid_until_extension_hours: raw.max_valid_until_extension_hours.map(i64::from),
        id_verify_required_for: kinds(
            "id_verify_required_for",
            &raw.id_verify_required_for,
            defaults.id_verify_required_for(),
        )?,
        no_show_suspend_after_hours: raw.no_show_suspend_after_hours.map(i64::from),
        allow_offline_issuance_kinds: kinds(
            "allow_offline_issuance_kinds",
            &raw.allow_offline_issuance_kinds,
            defaults.allow_offline_issuance_kinds(),
        )?,
        updated_at: now,
    })
    .map_err(|e| anyhow::anyhow!("properties.policy of {}: {e:?}", p.property_id))?;
    issuable_kinds(&policy, ports)?;
    let names =
        |v: &[KeyCredentialKind]| v.iter().map(|k| k.as_str().to_owned()).collect::<Vec<_>>();
    store
        .upsert_policy(&PolicyRecord {
            id: policy.id().as_str().to_owned(),
            tenant_id: tenant,
            property_id: property,
            preferred_order: names(policy.preferred_order()),
            fallback_chain: names(policy.fallback_chain()),
            max_valid_until_extension_hours: policy.max_valid_until_extension_hours() as i32,
            id_verify_required_for: names(policy.id_verify_required_for()),
            no_show_suspend_after_hours: policy.no_show_suspend_after_hours() as i32,
            allow_offline_issuance_kinds: names(policy.allow_offline_issuance_kinds()),
            updated_at: now,
        })
        .await
        .context("storing the key-kind policy")?;
    Ok(())
}

/// Issue 14: a policy that names `qr_code` or `nfc_tag` is refused when it is configured
/// unless an adapter of its property issues that kind (capability `qr` / `nfc`), rather
/// than discovered at a guest's check-in. None of the five vendors' adapters documents
/// either today, so naming them is refused everywhere until one does.
fn issuable_kinds(policy: &KeyKindPolicy, ports: &PortRegistry) -> anyhow::Result<()> {
    let caps: Vec<LockCapabilities> = ports
        .adapters()
        .into_iter()
        .filter(|(a, _)| {
            a.tenant_id == policy.tenant_id() && &a.property_id == policy.property_id()
        })
        .filter_map(|(a, _)| ports.port(&a.id).map(|p| p.capabilities()))
        .collect();
    for kind in [KeyCredentialKind::QrCode, KeyCredentialKind::NfcTag] {
        let named = policy.preferred_order().contains(&kind)
            || policy.fallback_chain().contains(&kind)
            || policy.allow_offline_issuance_kinds().contains(&kind);
        if named && !caps.iter().any(|c| c.supports(kind)) {
            anyhow::bail!(
                "properties.policy of {}: {} is named but no adapter of the property issues it (none has the {} capability); remove it from the policy",
                policy.property_id(),
                kind.as_str(),
                if kind == KeyCredentialKind::QrCode { "qr" } else { "nfc" },
            );
        }
    }
    Ok(())
}

/// The demo's simulators of the other vendors, each serving one property of the demo tenant
/// (issue 5: the same reservation events produce credentials at every vendor).
pub struct VendorDemo {
    /// Keeps the simulators running.
    pub simulators: Vec<Box<dyn std::any::Any>>,
    /// Each simulator's vendor and base URL, for the start-up banner.
    pub urls: Vec<(&'static str, String)>,
    /// Each demo adapter's signed-webhook sender: its simulator, told where to post and
    /// with which secret once the node listens.
    pub webhooks: Vec<DemoWebhook>,
}

/// One demo adapter's webhook: its id, vendor, a secret made for this run, and how to point
/// its simulator at the node.
pub struct DemoWebhook {
    /// The adapter.
    pub adapter: VendorAdapterId,
    /// Its vendor.
    pub vendor: VendorCode,
    /// The secret its simulator signs with (made fresh at every start).
    pub secret: String,
    /// Points the simulator's webhook at `(url, secret)`.
    pub point: PointWebhook,
}

/// Points a simulator's webhook at `Some((url, secret))`, or nowhere.
pub type PointWebhook = Box<dyn Fn(Option<(String, String)>) + Send + Sync>;

impl DemoWebhook {
    fn new(adapter: &str, vendor: VendorCode, point: PointWebhook) -> anyhow::Result<Self> {
        Ok(Self {
            adapter: VendorAdapterId::parse(adapter).map_err(|e| anyhow::anyhow!("{e:?}"))?,
            vendor,
            secret: lockstep_persistence::Cipher::generate_hex(),
            point,
        })
    }
}

/// One demo property on another vendor: (property, adapter id, vendor, port, devices as
/// (device id, vendor device ref, room)).
type DemoProperty = (
    &'static str,
    &'static str,
    VendorCode,
    Arc<dyn LockPort>,
    Vec<(&'static str, String, &'static str)>,
);

/// Starts the Salto, Vostio, Kisi and Brivo simulators on loopback and registers one demo
/// property on each.
pub async fn demo_vendors(
    store: &dyn Store,
    ports: &PortRegistry,
    deps: &VendorDeps,
    simulator_bind: std::net::SocketAddr,
) -> anyhow::Result<VendorDemo> {
    use lockstep_vendors::{brivo, kisi, salto, vostio};
    // stable addresses beside the TTLock simulator's: 18081 to 18084 by default
    let at = |offset: u16| lockstep_config::demo_port(simulator_bind, offset);
    let clock = deps.clock.clone();
    // the built-in simulators are test accounts: no rate limit
    let mut deps = deps.clone();
    deps.worker.rate = RateLimit::Unlimited;
    let deps = &deps;
    let mut simulators: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut properties: Vec<DemoProperty> = Vec::new();
    let mut urls = Vec::new();
    let mut webhooks = Vec::new();

    let s = salto::SaltoSimulator::start(at(1))
        .with_context(|| format!("starting the Salto simulator on {}", at(1)))?;
    for l in ["salto-lock-101", "salto-lock-102"] {
        s.handle().add_lock(l);
    }
    println!("salto simulator listening on {}", s.base_url());
    urls.push(("salto", s.base_url()));
    let h = s.handle();
    webhooks.push(DemoWebhook::new(
        "vad_01J00000000000000000000002",
        VendorCode::Salto,
        Box::new(move |target| h.set_webhook(target)),
    )?);
    let port: Arc<dyn LockPort> = Arc::new(
        salto::SaltoAdapter::new(s.default_adapter_config(), clock.clone())
            .map_err(|e| anyhow::anyhow!("salto adapter: {e}"))?,
    );
    properties.push((
        "ppt_demo_salto",
        "vad_01J00000000000000000000002",
        VendorCode::Salto,
        port,
        vec![
            (
                "lck_01J00000000000000000000201",
                "salto-lock-101".into(),
                "rmu_s101",
            ),
            (
                "lck_01J00000000000000000000202",
                "salto-lock-102".into(),
                "rmu_s102",
            ),
        ],
    ));
    simulators.push(Box::new(s));

    let v = vostio::VostioSimulator::start(at(2))
        .with_context(|| format!("starting the Vostio simulator on {}", at(2)))?;
    let cfg = v.default_adapter_config();
    for d in ["door-201", "door-202"] {
        v.handle().add_door(&cfg.environment_ref, d);
    }
    println!("vostio simulator listening on {}", v.base_url());
    urls.push(("vostio", v.base_url()));
    let h = v.handle();
    webhooks.push(DemoWebhook::new(
        "vad_01J00000000000000000000003",
        VendorCode::AssaAbloy,
        Box::new(move |target| h.set_webhook(target)),
    )?);
    let port: Arc<dyn LockPort> = Arc::new(
        vostio::VostioAdapter::new(cfg, clock.clone())
            .map_err(|e| anyhow::anyhow!("vostio adapter: {e}"))?,
    );
    properties.push((
        "ppt_demo_vostio",
        "vad_01J00000000000000000000003",
        VendorCode::AssaAbloy,
        port,
        vec![
            (
                "lck_01J00000000000000000000301",
                "door-201".into(),
                "rmu_v201",
            ),
            (
                "lck_01J00000000000000000000302",
                "door-202".into(),
                "rmu_v202",
            ),
        ],
    ));
    simulators.push(Box::new(v));

    let k = kisi::KisiSimulator::start(at(3))
        .with_context(|| format!("starting the Kisi simulator on {}", at(3)))?;
    for l in [301, 302] {
        k.handle().add_group_lock(1, l);
    }
    println!("kisi simulator listening on {}", k.base_url());
    urls.push(("kisi", k.base_url()));
    let h = k.handle();
    webhooks.push(DemoWebhook::new(
        "vad_01J00000000000000000000004",
        VendorCode::Kisi,
        Box::new(move |target| h.set_webhook(target)),
    )?);
    let port: Arc<dyn LockPort> = Arc::new(
        kisi::KisiAdapter::new(k.default_adapter_config(), clock.clone())
            .map_err(|e| anyhow::anyhow!("kisi adapter: {e}"))?,
    );
    properties.push((
        "ppt_demo_kisi",
        "vad_01J00000000000000000000004",
        VendorCode::Kisi,
        port,
        vec![
            ("lck_01J00000000000000000000401", "1:301".into(), "rmu_k301"),
            ("lck_01J00000000000000000000402", "1:302".into(), "rmu_k302"),
        ],
    ));
    simulators.push(Box::new(k));

    let b = brivo::BrivoSimulator::start(at(4))
        .with_context(|| format!("starting the Brivo simulator on {}", at(4)))?;
    for ap in [401, 402] {
        b.handle().add_access_point(ap);
    }
    println!("brivo simulator listening on {}", b.base_url());
    urls.push(("brivo", b.base_url()));
    let h = b.handle();
    webhooks.push(DemoWebhook::new(
        "vad_01J00000000000000000000005",
        VendorCode::Brivo,
        Box::new(move |target| h.set_webhook(target)),
    )?);
    let port: Arc<dyn LockPort> = Arc::new(
        brivo::BrivoAdapter::new(b.default_adapter_config(), clock.clone())
            .map_err(|e| anyhow::anyhow!("brivo adapter: {e}"))?,
    );
    properties.push((
        "ppt_demo_brivo",
        "vad_01J00000000000000000000005",
        VendorCode::Brivo,
        port,
        vec![
            ("lck_01J00000000000000000000501", "401".into(), "rmu_b401"),
            ("lck_01J00000000000000000000502", "402".into(), "rmu_b402"),
        ],
    ));
    simulators.push(Box::new(b));

    let tenant = TenantId::parse(DEMO_TENANT).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for (property, adapter, vendor, port, devices) in properties {
        let property = PropertyId::parse(property).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let id = VendorAdapterId::parse(adapter).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let caps = port.capabilities();
        ports.insert(
            AdapterInfo {
                id: id.clone(),
                tenant_id: tenant,
                property_id: property.clone(),
                environment: "sandbox".into(),
                enabled: true,
                precedence: 100,
            },
            port,
            deps,
        );
        store
            .upsert_adapter(&AdapterRecord {
                id: id.clone(),
                tenant_id: tenant,
                property_id: property.clone(),
                vendor,
                environment: "sandbox".into(),
                capabilities: caps_json(&caps),
                config: json!({ "demo": true }),
                enabled: true,
                precedence: 100,
                now: clock.now(),
            })
            .await
            .context("registering a demo adapter")?;
        for (device, vendor_ref, room) in devices {
            let d = RawDevice {
                id: device.into(),
                adapter: adapter.into(),
                vendor_device_ref: vendor_ref,
                label: format!("Room {}", room.trim_start_matches("rmu_")),
                rooms: vec![room.into()],
                area: None,
                battery_low_threshold_percent: None,
            };
            register_device_of(store, tenant, &property, vendor, &d).await?;
        }
    }
    Ok(VendorDemo {
        simulators,
        urls,
        webhooks,
    })
}
