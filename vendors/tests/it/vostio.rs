//! The Vostio adapter against its simulator over loopback HTTP (what only Vostio does:
//! card keys pending encoding, environments, offline doors, front-desk keys, its probe
//! readings), the reconstructed API examples through the wire types and the simulator,
//! and Vostio's fixture of the `LockPort` contract (`crate::contract`), which runs the
//! rest.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lockstep_domain::{
    Clock, DeviceRef, KeyCredentialKind, SystemClock, ValidityWindow, VendorCode, VendorRef,
};
use lockstep_vendors::vostio::simulator::{SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_ENVIRONMENT};
use lockstep_vendors::vostio::wire::{CreateKeyRequest, KeyRecord, ListKeysResponse};
use lockstep_vendors::vostio::{
    RunningSimulator, Secret, SimClient, SimHandle, VostioAdapter, VostioConfig, VostioSimulator,
};
use lockstep_vendors::{IssueRequest, LockPort, VendorEntry, VendorError};

use crate::support::{loopback, request_on, window};

/// The door of the examples (room 1204).
const DOOR: &str = "door-1204";

type Env = crate::contract::Env<VostioFixture>;

fn spawn() -> Env {
    spawn_with(|_| {}, Arc::new(SystemClock))
}

fn spawn_with(tweak: impl FnOnce(&mut VostioConfig), clock: Arc<dyn Clock>) -> Env {
    let sim = VostioSimulator::start(loopback()).expect("simulator binds on loopback");
    sim.handle().add_door(SIM_ENVIRONMENT, DOOR);
    crate::contract::env_on(sim, tweak, clock)
}

fn device() -> DeviceRef {
    DeviceRef::new(DOOR)
}

fn request(label: &str, kind: KeyCredentialKind) -> IssueRequest {
    request_on(device(), kind, label, None)
}

fn mobile(label: &str) -> IssueRequest {
    request(label, KeyCredentialKind::MobileApp)
}

#[tokio::test]
async fn card_key_is_created_pending_encoding() -> anyhow::Result<()> {
    let env = spawn();
    let req = request("key_01HVCARD:door-1204", KeyCredentialKind::RfidCard);
    let vref = env.adapter.issue(&req).await?;
    let at_sim = env.handle.keys_on_door(SIM_ENVIRONMENT, DOOR);
    assert_eq!(at_sim.len(), 1);
    assert_eq!(at_sim[0].id, vref.expose());
    assert_eq!(at_sim[0].key_type, "card");
    assert_eq!(at_sim[0].status, "pendingEncoding");
    Ok(())
}

#[tokio::test]
async fn environment_not_granted_to_the_client_is_an_auth_error() {
    let env = spawn_with(
        |c| c.environment_ref = "env-of-another-hotel".into(),
        Arc::new(SystemClock),
    );
    let err = env.adapter.health().await.expect_err("forbidden");
    assert!(matches!(err, VendorError::Auth { .. }), "{err:?}");
    assert!(!err.is_vendor_unwell());

    // Granted but unknown: refused, not "gone".
    env.handle.add_client(SimClient::new(
        "other-client",
        "other-secret",
        vec!["env-missing".into()],
    ));
    let mut cfg = env.sim.default_adapter_config();
    cfg.client_id = Secret::new("other-client");
    cfg.client_secret = Secret::new("other-secret");
    cfg.environment_ref = "env-missing".into();
    let adapter = VostioAdapter::new(cfg, Arc::new(SystemClock)).expect("builds");
    let err = adapter
        .revoke(&device(), &VendorRef::new("k-0123"))
        .await
        .expect_err("unknown environment");
    assert!(
        matches!(&err, VendorError::Refused { code, .. } if code == "environment_not_found"),
        "{err:?}"
    );
}

#[tokio::test]
async fn offline_door_is_a_transient_refusal_not_an_unwell_vendor() -> anyhow::Result<()> {
    let env = spawn();
    env.handle.update_faults(|f| f.door_offline = true);
    let err = env
        .adapter
        .issue(&mobile("key_01HVOFF:door-1204"))
        .await
        .expect_err("offline");
    assert!(
        matches!(&err, VendorError::Refused { code, .. } if code == "lock_offline"),
        "{err:?}"
    );
    assert!(err.is_retryable() && !err.is_vendor_unwell());
    env.handle.update_faults(|f| f.door_offline = false);
    env.adapter.issue(&mobile("key_01HVOFF:door-1204")).await?;
    Ok(())
}

#[tokio::test]
async fn list_pages_and_leaves_front_desk_keys_out() -> anyhow::Result<()> {
    let env = spawn();
    let w = window();
    for i in 0..150 {
        env.handle
            .seed_key(
                SIM_ENVIRONMENT,
                DOOR,
                Some(&format!("key_seed{i}:door-1204")),
                w.from(),
                Some(w.until()),
            )
            .expect("door exists");
    }
    // A key made at the front desk in the Vostio portal: no externalId, never ours.
    env.handle
        .seed_key(SIM_ENVIRONMENT, DOOR, None, w.from(), None)
        .expect("door exists");
    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 150);
    assert!(entries.iter().all(|e| e.label.starts_with("key_seed")));
    assert_eq!(env.handle.counters().lists, 2, "two pages of 100");
    Ok(())
}

// Reconstructed, not from public docs: Vostio's API reference is partner-only, so these
// are labelled reconstructions of a create-key exchange in the shape the adapter and the
// simulator speak (see `lockstep_vendors::vostio`).

/// `POST /api/v1/environments/env-0001/keys` body (reconstruction).
const CREATE_KEY_REQUEST_EXAMPLE: &str = r#"{
  "keyType": "mobileKey",
  "externalId": "key_01HXAMPLE0000000000000000:door-1204",
  "keyHolder": { "externalId": "key_01HXAMPLE0000000000000000:door-1204" },
  "accessRights": [ { "doorId": "door-1204" } ],
  "validFrom": "2024-05-01T14:00:00Z",
  "validTo": "2024-05-04T11:00:00Z"
}"#;

/// `201 Created` reply to it (reconstruction).
const CREATE_KEY_RESPONSE_EXAMPLE: &str = r#"{
  "id": "k-6f1c2b7e9a0d4c3b8e5f1a2b",
  "keyType": "mobileKey",
  "status": "active",
  "externalId": "key_01HXAMPLE0000000000000000:door-1204",
  "keyHolder": { "id": "kh-0c9d8e7f6a5b4c3d2e1f0a9b", "externalId": "key_01HXAMPLE0000000000000000:door-1204" },
  "accessRights": [ { "doorId": "door-1204" } ],
  "validFrom": "2024-05-01T14:00:00Z",
  "validTo": "2024-05-04T11:00:00Z",
  "createdAt": "2024-04-30T09:12:44Z"
}"#;

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("valid rfc3339")
        .with_timezone(&Utc)
}

#[test]
fn reconstructed_examples_parse_through_the_wire_types() {
    let req: CreateKeyRequest =
        serde_json::from_str(CREATE_KEY_REQUEST_EXAMPLE).expect("request example parses");
    assert_eq!(req.key_type, "mobileKey");
    assert_eq!(req.access_rights[0].door_id, "door-1204");
    assert_eq!(req.valid_to, ts("2024-05-04T11:00:00Z"));

    let rec: KeyRecord =
        serde_json::from_str(CREATE_KEY_RESPONSE_EXAMPLE).expect("response example parses");
    assert!(rec.opens("door-1204"));
    let entry = VendorEntry::try_from(rec).expect("converts");
    assert_eq!(entry.vendor_ref.expose(), "k-6f1c2b7e9a0d4c3b8e5f1a2b");
    assert_eq!(entry.label, "key_01HXAMPLE0000000000000000:door-1204");
    assert_eq!(entry.valid_from, ts("2024-05-01T14:00:00Z"));
    assert_eq!(entry.valid_until, ts("2024-05-04T11:00:00Z"));
}

#[tokio::test]
async fn simulator_accepts_the_reconstructed_example_as_sent() -> anyhow::Result<()> {
    let env = spawn();
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(env.sim.oauth_token_url())
        .basic_auth(SIM_CLIENT_ID, Some(SIM_CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(token["token_type"], "Bearer");
    let access = token["access_token"].as_str().expect("a token").to_owned();

    let keys_url = format!(
        "{}/v1/environments/{SIM_ENVIRONMENT}/keys",
        env.sim.cloud_base_url()
    );
    let resp = http
        .post(&keys_url)
        .bearer_auth(&access)
        .header("content-type", "application/json")
        .body(CREATE_KEY_REQUEST_EXAMPLE)
        .send()
        .await?;
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let rec: KeyRecord = serde_json::from_slice(&resp.bytes().await?)?;
    let expected: KeyRecord = serde_json::from_str(CREATE_KEY_RESPONSE_EXAMPLE)?;
    assert_eq!(rec.key_type, expected.key_type);
    assert_eq!(rec.status, expected.status);
    assert_eq!(rec.external_id, expected.external_id);
    assert_eq!(rec.key_holder.external_id, expected.key_holder.external_id);
    assert_eq!(rec.access_rights, expected.access_rights);
    assert_eq!(rec.valid_from, expected.valid_from);
    assert_eq!(rec.valid_to, expected.valid_to);
    assert!(rec.id.starts_with("k-") && rec.key_holder.id.is_some());

    // And the adapter finds what was created outside it, by label.
    let mut req = mobile("key_01HXAMPLE0000000000000000:door-1204");
    req.validity = ValidityWindow::new(ts("2024-05-01T14:00:00Z"), ts("2024-05-04T11:00:00Z"))?;
    assert_eq!(env.adapter.find(&req).await?, Some(VendorRef::new(rec.id)));

    // A documented-shape list page parses too.
    let page: ListKeysResponse = http
        .get(&keys_url)
        .bearer_auth(&access)
        .query(&[("doorId", DOOR)])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(page.items.len(), 1);
    assert!(page.next_page_token.is_none());

    // Without a token: 401 with the reconstructed error body.
    let resp = http.get(&keys_url).send().await?;
    assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["code"], "unauthorized");
    Ok(())
}

/// Spec 003 §2 health probe, Vostio's readings (the rest is the contract's): a low
/// battery and the lock's clock running behind.
#[tokio::test]
async fn vostio_probe_reads_a_low_battery_and_clock_skew() -> anyhow::Result<()> {
    let env = spawn();
    env.handle.update_door_health(SIM_ENVIRONMENT, DOOR, |h| {
        h.battery_level = 4;
        h.clock_skew = chrono::Duration::minutes(-11);
    });
    let p = env.adapter.probe(&device()).await?;
    assert_eq!(p.battery_percent, Some(4));
    let skew = p.device_time.expect("the lock's clock") - SystemClock.now();
    assert!((skew.num_seconds() + 660).abs() <= 2, "{skew}");
    Ok(())
}

/// Vostio (Assa Abloy) in the `LockPort` contract (`crate::contract`): mobile keys on
/// doors `door-1204`, `door-1205`, ... of one environment.
pub struct VostioFixture;

impl crate::contract::Fixture for VostioFixture {
    type Handle = SimHandle;
    type Config = VostioConfig;
    type Adapter = VostioAdapter;

    const VENDOR: VendorCode = VendorCode::AssaAbloy;
    const KIND: KeyCredentialKind = KeyCredentialKind::MobileApp;
    // Spec 003 §6.1.
    const CAPABILITIES: &'static [&'static str] = &[
        "mobile_key",
        "card_encoding",
        "remote_revoke",
        "remote_issue",
        "scope_floors",
        "scope_areas",
    ];
    const REFUSED_KINDS: &'static [KeyCredentialKind] = &[
        KeyCredentialKind::PinCode,
        KeyCredentialKind::QrCode,
        KeyCredentialKind::NfcTag,
    ];
    const SECRETS: &'static [&'static str] = &[SIM_CLIENT_SECRET, SIM_CLIENT_ID];
    const SINGLE_WRITE_ISSUE: bool = true;
    const FIND_IS_PER_DEVICE: bool = true;
    const UPDATE_CHECKS_KIND: bool = true;
    const UNKNOWN_DEVICE: &'static str = "door-9999";
    const MALFORMED_REF: &'static str = "../../environments/env-0001";
    const UNKNOWN_DEVICE_CODE: &'static str = "lock_not_found";
    const TOKEN_LIFETIME_SECS: Option<i64> = Some(3400);
    const HEALTHY_PROBE: crate::contract::ProbeReading = crate::contract::ProbeReading {
        battery_percent: Some(92),
        firmware: Some("3.4.1"),
        reads_clock: true,
    };

    crate::contract::simulator_fixture_fns!(VostioAdapter, tokens);

    fn start() -> RunningSimulator {
        let sim = VostioSimulator::start(loopback()).expect("simulator binds on loopback");
        for i in 0..crate::contract::DEVICES {
            sim.handle()
                .add_door(SIM_ENVIRONMENT, Self::device(i).expose());
        }
        sim
    }

    fn bad_credentials() -> crate::contract::BadCredentials<VostioConfig> {
        vec![("wrong-secret-value", |c| {
            c.client_secret = Secret::new("wrong-secret-value")
        })]
    }

    fn device(i: usize) -> DeviceRef {
        DeviceRef::new(format!("door-{}", 1204 + i))
    }

    fn tally(handle: &SimHandle) -> crate::contract::Tally {
        let c = handle.counters();
        crate::contract::Tally::from([
            c.creates,
            c.updates,
            c.deletes,
            c.lost_responses,
            c.rejected_by_faults,
        ])
    }

    fn set_online(handle: &SimHandle, device: usize, online: bool) {
        handle.update_door_health(SIM_ENVIRONMENT, Self::device(device).expose(), |h| {
            h.online = online
        });
    }

    /// An active `mobileKey` for that door, its key holder named by the label.
    fn check_stored(handle: &SimHandle, req: &IssueRequest, vref: &VendorRef) {
        let keys = handle.keys(SIM_ENVIRONMENT);
        let key = keys
            .iter()
            .find(|k| k.id == vref.expose())
            .expect("the key");
        assert_eq!(key.key_type, "mobileKey");
        assert_eq!(key.status, "active");
        assert_eq!(key.door_ids, vec![req.device.expose().to_owned()]);
        assert_eq!(
            key.key_holder_external_id.as_deref(),
            Some(req.label.as_str())
        );
    }
}
