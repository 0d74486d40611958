//! The Kisi adapter against its simulator over loopback HTTP (what only Kisi does: users
//! shared by label, group-and-lock device refs, members it did not create), the
//! simulator against the examples of Kisi's public docs, and Kisi's fixture of the
//! `LockPort` contract (`crate::contract`), which runs the rest.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lockstep_domain::{DeviceRef, KeyCredentialKind, SystemClock, VendorRef};
use lockstep_vendors::kisi::simulator::SIM_API_KEY;
use lockstep_vendors::kisi::wire::{self, CreateRoleAssignmentRequest, RoleAssignment};
use lockstep_vendors::kisi::{
    KisiAdapter, KisiConfig, KisiSimulator, RunningSimulator, Secret, SimHandle,
};
use lockstep_vendors::{IssueRequest, LockPort, VendorEntry, VendorError};

use crate::support::{loopback, patch_faults, request_on, window};

/// The group of the docs' example (`web.kisi.io/organization/3289/groups/45274`).
const GROUP: i64 = 45274;
const LOCK: i64 = 9021;

type KisiEnv = crate::contract::Env<KisiFixture>;

fn kisi_spawn() -> KisiEnv {
    kisi_spawn_with(|_| {})
}

fn kisi_spawn_with(tweak: impl FnOnce(&mut KisiConfig)) -> KisiEnv {
    let sim = KisiSimulator::start(loopback()).expect("simulator binds on loopback");
    sim.handle().add_group_lock(GROUP, LOCK);
    crate::contract::env_on(sim, tweak, Arc::new(SystemClock))
}

fn kisi_device() -> DeviceRef {
    DeviceRef::new(format!("{GROUP}:{LOCK}"))
}

fn kisi_request(label: &str) -> IssueRequest {
    request_on(kisi_device(), KeyCredentialKind::MobileApp, label, None)
}

/// A label issued for a second device reuses the label's Kisi user (one user, two
/// assignments).
#[tokio::test]
async fn kisi_a_second_device_reuses_the_labels_user() -> anyhow::Result<()> {
    let env = kisi_spawn();
    let req = kisi_request("key_01HKFIND");
    let vref = env.adapter.issue(&req).await?;
    env.handle.add_group_lock(777, 778);
    let mut elsewhere = req.clone();
    elsewhere.device = DeviceRef::new("777:778");
    let vref2 = env.adapter.issue(&elsewhere).await?;
    assert_ne!(vref2, vref);
    assert_eq!(env.handle.users().len(), 1);
    Ok(())
}

/// A Kisi device ref is `"<group_id>:<lock_id>"`: a bare lock id is refused before any
/// call (other kinds, unknown locks and bad refs are the contract's).
#[tokio::test]
async fn kisi_refuses_a_device_ref_without_its_group() {
    let env = kisi_spawn();
    let mut req = kisi_request("key_01HKBADDEV");
    req.device = DeviceRef::new("9021");
    let err = env.adapter.issue(&req).await.expect_err("bad device");
    assert!(
        matches!(&err, VendorError::Refused { code, .. } if code == "invalid_device"),
        "{err:?}"
    );
    assert_eq!(env.handle.counters().creates, 0);
    assert!(env.handle.users().is_empty());
}

#[tokio::test]
async fn kisi_list_shows_only_what_lockstep_created() -> anyhow::Result<()> {
    let env = kisi_spawn();
    // A member of the coworking space, added by its staff.
    env.handle
        .seed_member(GROUP, "ada@space.example", "Ada", None, None)
        .expect("group exists");
    let vref = env.adapter.issue(&kisi_request("key_01HKMINE")).await?;
    let entries = env.adapter.list(&kisi_device()).await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].vendor_ref, vref);
    assert_eq!(env.handle.role_assignments(GROUP).len(), 2);
    Ok(())
}

#[tokio::test]
async fn kisi_list_pages_through_every_page() -> anyhow::Result<()> {
    let env = kisi_spawn();
    let w = window();
    for i in 0..260 {
        env.handle.seed_member(
            GROUP,
            &format!("seed{i}@kisi-guests.lockstep.invalid"),
            &format!("seed{i}"),
            Some(w.from()),
            Some(w.until()),
        );
    }
    let entries = env.adapter.list(&kisi_device()).await?;
    assert_eq!(entries.len(), 260);
    assert_eq!(env.handle.counters().lists, 2);
    Ok(())
}

/// The request of docs.kisi.io "Assign access rights" (group level), verbatim except for
/// the ids and `role_id`, which the docs leave as placeholders (`0`, `"string"`).
const DOCS_CREATE_REQUEST: &str = r#"{
  "role_assignment": {
    "user_id": 0,
    "role_id": "string",
    "group_id": 0,
    "valid_from": "2023-05-24T14:15:22Z",
    "valid_until": "2023-05-25T14:15:22Z"
  }
}"#;

/// The response excerpt of the same guide.
const DOCS_CREATE_RESPONSE: &str = r#"{
  "id": 0,
  "role_id": "string",
  "type": "group",
  "group_id": 0
}"#;

/// The list of docs.kisi.io "Remove access rights".
const DOCS_LIST_RESPONSE: &str = r#"[
  { "id": 0, "user_id": 0, "role_id": "string" },
  { "id": 0, "user_id": 0, "role_id": "string" }
]"#;

/// The error example of Kisi's API description.
const DOCS_ERROR: &str = r#"{"code": "afc516", "error": "Wrong email address or password."}"#;

#[test]
fn kisi_documented_bodies_parse_through_the_wire_types() -> anyhow::Result<()> {
    let req: CreateRoleAssignmentRequest = serde_json::from_str(DOCS_CREATE_REQUEST)?;
    assert_eq!(req.role_assignment.user_id, Some(0));
    assert_eq!(req.role_assignment.group_id, Some(0));
    assert_eq!(
        req.role_assignment.valid_from.as_deref(),
        Some("2023-05-24T14:15:22Z")
    );
    let resp: RoleAssignment = serde_json::from_str(DOCS_CREATE_RESPONSE)?;
    assert_eq!(resp.id, 0);
    assert_eq!(resp.group(), Some(0));
    assert_eq!(resp.kind.as_deref(), Some("group"));
    let list: Vec<RoleAssignment> = serde_json::from_str(DOCS_LIST_RESPONSE)?;
    assert_eq!(list.len(), 2);
    let entry = VendorEntry::try_from(list[0].clone())?;
    assert_eq!(
        entry.valid_until,
        DateTime::<Utc>::MAX_UTC,
        "no end: open window"
    );
    let err: wire::ErrorBody = serde_json::from_str(DOCS_ERROR)?;
    assert_eq!(err.code.as_deref(), Some("afc516"));
    Ok(())
}

#[tokio::test]
async fn kisi_simulator_accepts_the_documented_create_request() -> anyhow::Result<()> {
    let env = kisi_spawn();
    // The docs' placeholders filled with a real user, group and role.
    env.handle
        .seed_member(GROUP, "doc@space.example", "Doc", None, None)
        .expect("group exists");
    let user_id = env.handle.users()[0].id;
    let mut body: serde_json::Value = serde_json::from_str(DOCS_CREATE_REQUEST)?;
    body["role_assignment"]["user_id"] = user_id.into();
    body["role_assignment"]["group_id"] = GROUP.into();
    body["role_assignment"]["role_id"] = "group_basic".into();

    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/role_assignments", env.sim.base_url()))
        .header("Authorization", format!("KISI-LOGIN {SIM_API_KEY}"))
        .json(&body)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let created: RoleAssignment = resp.json().await?;
    assert_eq!(created.group(), Some(GROUP));
    assert_eq!(created.kind.as_deref(), Some("group"));
    assert_eq!(created.role_id.as_deref(), Some("group_basic"));
    let at_sim = env
        .handle
        .role_assignments(GROUP)
        .into_iter()
        .find(|a| a.id == created.id)
        .expect("stored");
    let from = wire::from_kisi_time("2023-05-24T14:15:22Z", "valid_from")?;
    assert_eq!(at_sim.valid_from, Some(from));

    // The placeholder role of the docs is refused as Kisi would (422), without a key: 401.
    body["role_assignment"]["role_id"] = "string".into();
    let resp = http
        .post(format!("{}/role_assignments", env.sim.base_url()))
        .header("Authorization", format!("KISI-LOGIN {SIM_API_KEY}"))
        .json(&body)
        .send()
        .await?;
    assert_eq!(resp.status(), 422);
    let errors: wire::ValidationErrors = resp.json().await?;
    assert!(errors.errors.contains_key("role_id"));
    let resp = http
        .get(format!("{}/role_assignments", env.sim.base_url()))
        .send()
        .await?;
    assert_eq!(resp.status(), 401);
    let err: wire::ErrorBody = resp.json().await?;
    assert_eq!(err.code.as_deref(), Some("000401"));
    Ok(())
}

#[tokio::test]
async fn kisi_simulator_faults_are_settable_over_http() -> anyhow::Result<()> {
    let env = kisi_spawn();
    let resp = patch_faults(&env.sim.base_url(), serde_json::json!({"outage": true})).await;
    assert_eq!(resp.status(), 200);
    assert!(env.handle.faults().outage);
    assert!(env.adapter.health().await.is_err());
    Ok(())
}

/// Kisi in the `LockPort` contract (`crate::contract`): mobile keys (group role
/// assignments) on devices `45274:9021`, `45275:9022`, ... (one group per lock, since an
/// assignment opens every lock of its group). Kisi calls with an API key: it has no token
/// to expire or refresh.
pub struct KisiFixture;

impl crate::contract::Fixture for KisiFixture {
    type Handle = SimHandle;
    type Config = KisiConfig;
    type Adapter = KisiAdapter;

    const VENDOR: lockstep_domain::VendorCode = lockstep_domain::VendorCode::Kisi;
    const KIND: KeyCredentialKind = KeyCredentialKind::MobileApp;
    const CAPABILITIES: &'static [&'static str] = &["mobile_key", "remote_revoke", "remote_issue"];
    const REFUSED_KINDS: &'static [KeyCredentialKind] = &[
        KeyCredentialKind::PinCode,
        KeyCredentialKind::RfidCard,
        KeyCredentialKind::QrCode,
        KeyCredentialKind::NfcTag,
    ];
    const SECRETS: &'static [&'static str] = &[SIM_API_KEY];
    const SINGLE_WRITE_ISSUE: bool = true;
    // The group exists but does not grant that lock.
    const FIND_IS_PER_DEVICE: bool = true;
    const UPDATE_CHECKS_KIND: bool = true;
    const UNKNOWN_DEVICE: &'static str = "45274:777";
    const MALFORMED_REF: &'static str = "not-a-number-ra";
    const UNKNOWN_DEVICE_CODE: &'static str = "lock_not_in_group";
    const TOKEN_LIFETIME_SECS: Option<i64> = None;
    // Kisi reports no battery, firmware or clock.
    const HEALTHY_PROBE: crate::contract::ProbeReading = crate::contract::ProbeReading {
        battery_percent: None,
        firmware: None,
        reads_clock: false,
    };

    crate::contract::simulator_fixture_fns!(KisiAdapter);

    fn start() -> RunningSimulator {
        let sim = KisiSimulator::start(loopback()).expect("simulator binds on loopback");
        for i in 0..crate::contract::DEVICES {
            sim.handle()
                .add_group_lock(GROUP + i as i64, LOCK + i as i64);
        }
        sim
    }

    fn bad_credentials() -> crate::contract::BadCredentials<KisiConfig> {
        vec![("wrong-kisi-key-value", |c| {
            c.api_key = Secret::new("wrong-kisi-key-value")
        })]
    }

    fn device(i: usize) -> DeviceRef {
        DeviceRef::new(format!("{}:{}", GROUP + i as i64, LOCK + i as i64))
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
        handle.set_lock_online(LOCK + device as i64, online);
    }

    /// A `group_basic` assignment that sends no invitation, for a user named by the label
    /// whose e-mail is derived from it (no guest data).
    fn check_stored(handle: &SimHandle, req: &IssueRequest, vref: &VendorRef) {
        let group: i64 = req
            .device
            .expose()
            .split(':')
            .next()
            .and_then(|g| g.parse().ok())
            .expect("a group id");
        let assignment = handle
            .role_assignments(group)
            .into_iter()
            .find(|a| a.id.to_string() == vref.expose())
            .expect("the assignment");
        assert_eq!(assignment.role_id, "group_basic");
        assert!(!assignment.notify);
        let user = handle
            .users()
            .into_iter()
            .find(|u| u.id == assignment.user_id)
            .expect("its user");
        assert_eq!(user.name, req.label);
        assert_eq!(
            user.email,
            format!(
                "{}@kisi-guests.lockstep.invalid",
                req.label.to_ascii_lowercase()
            )
        );
    }
}
