//! The Brivo adapter against its simulator over loopback HTTP (what only Brivo does: a
//! lost user create completed by `find`, a repeated label), replays of the examples in
//! Brivo's public API docs (apidocs.brivo.com), and Brivo's fixture of the `LockPort`
//! contract (`crate::contract`), which runs the rest.

use std::sync::Arc;

use lockstep_domain::{
    Clock, DeviceRef, KeyCredentialKind, SystemClock, ValidityWindow, VendorRef,
};
use lockstep_vendors::brivo::simulator::{
    SIM_API_KEY, SIM_CLIENT_SECRET, SIM_PASSWORD, SIM_SCHEDULE_ID,
};
use lockstep_vendors::brivo::wire::{self, ApiError, CreateUserRequest, Page, TokenResponse, User};
use lockstep_vendors::brivo::{
    BrivoAdapter, BrivoConfig, BrivoSimulator, RunningSimulator, Secret, SimHandle,
};
use lockstep_vendors::{IssueRequest, LockPort, VendorEntry, VendorError};

use crate::support::{loopback, patch_faults, request_on, sim_get};

/// The access point of the documented examples ("Front door").
const AP: i64 = 111_111;

type Env = crate::contract::Env<BrivoFixture>;

fn spawn() -> Env {
    spawn_with(|_| {}, Arc::new(SystemClock))
}

fn spawn_with(tweak: impl FnOnce(&mut BrivoConfig), clock: Arc<dyn Clock>) -> Env {
    let sim = BrivoSimulator::start(loopback()).expect("simulator binds on loopback");
    sim.handle().add_access_point(AP);
    crate::contract::env_on(sim, tweak, clock)
}

fn device() -> DeviceRef {
    DeviceRef::new(AP.to_string())
}

fn pin_request(label: &str, pin: &str) -> IssueRequest {
    request_on(device(), KeyCredentialKind::PinCode, label, Some(pin))
}

/// Nothing secret in any rendering of `err` (`crate::contract::assert_redacted`).
fn assert_redacted(err: &VendorError, pin: Option<&str>, vendor_ref: Option<&VendorRef>) {
    crate::contract::assert_redacted::<BrivoFixture>(err, pin, vendor_ref, &[]);
}

#[tokio::test]
async fn brivo_lost_issue_response_is_found_afterwards_exactly_once() -> anyhow::Result<()> {
    let env = spawn();
    env.adapter.health().await?;
    // The group is created on the first issue; make it exist so only the user is lost.
    let warmup = env
        .adapter
        .issue(&pin_request("key_01HWARM:111111", "100200"))
        .await?;
    env.adapter.revoke(&device(), &warmup).await?;

    env.handle.update_faults(|f| f.lose_response_rate = 1.0);
    let req = pin_request("key_01HLOST:111111", "738291");
    let err = env.adapter.issue(&req).await.expect_err("response lost");
    assert!(err.is_vendor_unwell(), "{err:?}");
    assert_redacted(&err, Some("738291"), None);
    env.handle.update_faults(|f| f.lose_response_rate = 0.0);

    // Reconcile before retry: the vendor did create the user, but never put it in the
    // group; find completes it.
    let found = env
        .adapter
        .find(&req)
        .await?
        .expect("the create was applied");
    let users = env.handle.users();
    assert_eq!(users.len(), 1, "exactly one user at the vendor");
    assert_eq!(users[0].id.to_string(), found.expose());
    assert_eq!(env.handle.users_on(AP).len(), 1, "and it opens the door");
    assert_eq!(env.handle.counters().users_created, 2);
    Ok(())
}

/// Issuing a label Brivo already holds (its external id) is refused, and the refusal
/// shows no secret, PIN or ref (the other error kinds are the contract's).
#[tokio::test]
async fn brivo_an_issue_repeating_a_label_is_refused_without_secrets() -> anyhow::Result<()> {
    let env = spawn();
    let req = pin_request("key_01HRED:111111", "564738");
    let vref = env.adapter.issue(&req).await?;
    let err = env.adapter.issue(&req).await.expect_err("duplicate label");
    assert!(!err.is_vendor_unwell(), "{err:?}");
    assert_redacted(&err, Some("564738"), Some(&vref));
    assert_eq!(env.handle.users().len(), 1);
    Ok(())
}

// ---- documented examples (apidocs.brivo.com) ----

/// "User - Create new user", Request-Body-Example, verbatim.
const DOC_CREATE_USER_REQUEST: &str = r#"{
  "firstName"    : "Peter",
  "middleName"   : "Jason",
  "lastName"     : "Quill",
  "externalId"   : "Star Lord",
  "pin"          : "5678",
  "effectiveFrom": "2015-04-14T18:17:49Z",
  "effectiveTo"  : "2020-12-31T23:59:59Z",
  "bleTwoFactorExempt"     : true,
  "emails"    : [{
                    "address": "peter.quill@brivo.com",
                    "type": "home"
                    },
                    {
                    "address": "pquill7777@gmail.com",
                    "type": "work"
                    }],
  "phoneNumbers"    : [{
                    "number": "(541) 754-3010",
                    "type": "home"
                    },
                    {
                    "number": "+1-541-754-3010",
                    "type": "work"
                    },
                    {
                    "number": "+49-89-636-48018",
                    "type": "other"
                    }]
}"#;

/// "User - Retrieve by id", Success-Response, with one fix: the documented example has
/// `"created":     : "..."` and `"updated":     : "..."` (a doubled colon, not JSON); the
/// second colon is removed. `userImage`, `emails` and `phoneNumbers` are left out.
const DOC_USER_REPLY: &str = r#"{
 "id"           : 442211,
 "externalId"   : "Star Lord",
 "firstName"    : "Peter",
 "middleName"   : "Jason",
 "lastName"     : "Quill",
 "pin"          : "5678",
 "effectiveFrom": "2015-04-14T18:17:49Z",
 "effectiveTo"  : "2020-12-31T23:59:59Z",
 "suspended"    : false,
 "created"      : "2010-06-15T04:00:00Z",
 "updated"      : "2018-03-14T04:00:00Z",
 "bleTwoFactorExempt"    :true,
 "customFields" : [{
                    "id"        : 222,
                    "fieldType" : "TEXT",
                    "fieldName" : "species",
                    "value"     : "human"
                   }]
 }"#;

/// "Group - Group Listing", Success-Response (the docs' markdown escapes removed).
const DOC_GROUP_LISTING: &str = r#"{
"data"    : [{
"id"     : 442211,
"name"   : "Staff"
}],
"offset"  : 0,
"pageSize": 20,
"count"   : 1
}"#;

/// "Group - Assign Permission to Group", Request-Body-Example (without its leading
/// `AccessPermission` type name, which is not JSON).
const DOC_ACCESS_PERMISSION: &str = r#"{
    "schedule": {
        "id": 439955
    },
    "privacyModeOverride": true
}"#;

/// "Overview - OAuth2 Tokens", example token response. The documented example has unquoted
/// keys (not JSON); this is it with the keys quoted and the placeholders as strings.
const DOC_TOKEN_REPLY: &str = r#"{
"access_token": "[ACCESS_TOKEN_VALUE]",
"token_type": "bearer",
"refresh_token": "[REFRESH_TOKEN_VALUE]",
"expires_in": 60
}"#;

#[test]
fn brivo_documented_bodies_parse_through_the_wire_types() {
    let req: CreateUserRequest =
        serde_json::from_str(DOC_CREATE_USER_REQUEST).expect("documented create body");
    assert_eq!(req.external_id.as_deref(), Some("Star Lord"));
    assert_eq!(req.pin.as_deref(), Some("5678"));
    assert_eq!(req.emails.len(), 2);

    let user: User = serde_json::from_str(DOC_USER_REPLY).expect("documented user");
    let entry = VendorEntry::try_from(user).expect("dates parse");
    assert_eq!(entry.vendor_ref.expose(), "442211");
    assert_eq!(entry.label, "Star Lord");
    assert_eq!(
        entry.valid_from,
        wire::parse_time("2015-04-14T18:17:49Z", "t").expect("time")
    );
    assert_eq!(wire::format_time(entry.valid_until), "2020-12-31T23:59:59Z");

    let groups: Page<wire::Group> = serde_json::from_str(DOC_GROUP_LISTING).expect("listing");
    assert_eq!((groups.count, groups.data[0].id), (1, 442211));
    let perm: wire::AccessPermissionRequest =
        serde_json::from_str(DOC_ACCESS_PERMISSION).expect("permission");
    assert_eq!(perm.schedule.id, SIM_SCHEDULE_ID);
    let token: TokenResponse = serde_json::from_str(DOC_TOKEN_REPLY).expect("token");
    assert_eq!(
        (token.expires_in, token.token_type.as_deref()),
        (60, Some("bearer"))
    );
    let err: ApiError =
        serde_json::from_str(r#"{ "code" : 404, "message" : "User not found" }"#).expect("error");
    assert_eq!(err.code, 404);
}

#[test]
fn brivo_our_create_body_uses_the_documented_field_names() {
    let ours = CreateUserRequest {
        first_name: wire::USER_FIRST_NAME.into(),
        last_name: wire::USER_LAST_NAME.into(),
        external_id: Some("key_01HX:111111".into()),
        pin: Some("5678".into()),
        effective_from: Some("2015-04-14T18:17:49Z".into()),
        effective_to: Some("2020-12-31T23:59:59Z".into()),
        ..CreateUserRequest::default()
    };
    let ours = serde_json::to_value(&ours).expect("serializes");
    let documented: serde_json::Value =
        serde_json::from_str(DOC_CREATE_USER_REQUEST).expect("json");
    let ours = ours.as_object().expect("object");
    for key in ours.keys() {
        assert!(
            documented.get(key).is_some(),
            "{key} is not a documented field"
        );
    }
}

#[tokio::test]
async fn brivo_simulator_accepts_the_documented_requests_and_the_adapter_finds_the_user(
) -> anyhow::Result<()> {
    let env = spawn();
    let token = env.handle.issue_token();
    let http = reqwest::Client::new();
    let base = env.sim.base_url();
    let resp = http
        .post(format!("{base}/v1/api/users"))
        .header("api-key", SIM_API_KEY)
        .header("Authorization", format!("bearer {token}"))
        .header("Content-Type", "application/json")
        .body(DOC_CREATE_USER_REQUEST)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let created: User = serde_json::from_slice(&resp.bytes().await?)?;
    assert_eq!(created.external_id.as_deref(), Some("Star Lord"));
    assert_eq!(
        created.effective_to.as_deref(),
        Some("2020-12-31T23:59:59Z")
    );

    let resp = http
        .get(format!("{base}/v1/api/users/Star%20Lord/external"))
        .header("api-key", SIM_API_KEY)
        .header("Authorization", format!("bearer {token}"))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);

    // Without the api key the gateway's documented 403 comes back.
    let resp = http
        .get(format!("{base}/v1/api/users/{}", created.id))
        .header("Authorization", format!("bearer {token}"))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 403);
    assert!(resp.text().await?.contains("Developer Inactive"));

    // The adapter finds the documented user by its external id and gives it the door.
    let mut req = pin_request("Star Lord", "5678");
    req.validity = ValidityWindow::new(
        wire::parse_time("2015-04-14T18:17:49Z", "t")?,
        wire::parse_time("2020-12-31T23:59:59Z", "t")?,
    )?;
    let found = env.adapter.find(&req).await?.expect("documented user");
    assert_eq!(found.expose(), created.id.to_string());
    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].label, "Star Lord");
    assert_eq!(entries[0].valid_from, req.validity.from());
    Ok(())
}

#[tokio::test]
async fn brivo_simulator_fault_switches_are_reachable_over_http() -> anyhow::Result<()> {
    let env = spawn();
    let base = env.sim.base_url();
    let resp = patch_faults(&base, serde_json::json!({"outage": true})).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(env.handle.faults().outage);
    assert!(env.adapter.health().await.is_err());
    patch_faults(&base, serde_json::json!({"outage": false})).await;
    env.adapter.health().await?;
    let counters = sim_get(&base, "/_sim/counters").await;
    assert_eq!(counters["tokens_issued"], 1);
    Ok(())
}

/// Brivo in the `LockPort` contract (`crate::contract`): PINs of users in the group of
/// access points `111111`, `111112`, ...
pub struct BrivoFixture;

impl crate::contract::Fixture for BrivoFixture {
    type Handle = SimHandle;
    type Config = BrivoConfig;
    type Adapter = BrivoAdapter;

    const VENDOR: lockstep_domain::VendorCode = lockstep_domain::VendorCode::Brivo;
    const KIND: KeyCredentialKind = KeyCredentialKind::PinCode;
    const CAPABILITIES: &'static [&'static str] =
        &["mobile_key", "pin", "remote_revoke", "remote_issue"];
    // Brivo's mobile passes are not issued through this adapter.
    const REFUSED_KINDS: &'static [KeyCredentialKind] = &[
        KeyCredentialKind::RfidCard,
        KeyCredentialKind::MobileApp,
        KeyCredentialKind::QrCode,
        KeyCredentialKind::NfcTag,
    ];
    const SECRETS: &'static [&'static str] = &[SIM_CLIENT_SECRET, SIM_PASSWORD, SIM_API_KEY];
    const SINGLE_WRITE_ISSUE: bool = false;
    // Users are account-wide: `find` finds one by its external id (the label) whatever
    // the access point.
    const FIND_IS_PER_DEVICE: bool = false;
    const UPDATE_CHECKS_KIND: bool = true;
    const UNKNOWN_DEVICE: &'static str = "424242";
    const MALFORMED_REF: &'static str = "not-a-user-id";
    const UNKNOWN_DEVICE_CODE: &'static str = "lock_not_found";
    const TOKEN_LIFETIME_SECS: Option<i64> = Some(3600);
    // Wired readers report no battery or clock.
    const HEALTHY_PROBE: crate::contract::ProbeReading = crate::contract::ProbeReading {
        battery_percent: None,
        firmware: Some("6.2.4.1"),
        reads_clock: false,
    };

    crate::contract::simulator_fixture_fns!(BrivoAdapter, tokens);

    fn start() -> RunningSimulator {
        let sim = BrivoSimulator::start(loopback()).expect("simulator binds on loopback");
        for i in 0..crate::contract::DEVICES {
            sim.handle().add_access_point(AP + i as i64);
        }
        sim
    }

    fn bad_credentials() -> crate::contract::BadCredentials<BrivoConfig> {
        vec![
            ("wrong-secret", |c| {
                c.credentials.client_secret = Secret::new("wrong-secret")
            }),
            ("wrong-password", |c| {
                c.credentials.password = Secret::new("wrong-password")
            }),
            ("wrong-api-key", |c| {
                c.credentials.api_key = Secret::new("wrong-api-key")
            }),
        ]
    }

    fn device(i: usize) -> DeviceRef {
        DeviceRef::new((AP + i as i64).to_string())
    }

    fn tally(handle: &SimHandle) -> crate::contract::Tally {
        let c = handle.counters();
        crate::contract::Tally::from([
            c.users_created,
            c.users_patched,
            c.users_deleted,
            c.lost_responses,
            c.rejected_by_faults,
        ])
    }

    fn set_online(handle: &SimHandle, device: usize, online: bool) {
        handle.set_access_point_online(AP + device as i64, online);
    }

    /// A user with the PIN and the label as its external id, in the access point's group.
    fn check_stored(handle: &SimHandle, req: &IssueRequest, vref: &VendorRef) {
        let ap: i64 = req.device.expose().parse().expect("an access point id");
        let on_door = handle.users_on(ap);
        let user = on_door
            .iter()
            .find(|u| u.id.to_string() == vref.expose())
            .expect("the user opens the access point");
        assert_eq!(
            user.pin.as_deref(),
            req.pin.as_ref().map(|p| p.expose()),
            "the pin is not touched"
        );
        assert_eq!(user.external_id.as_deref(), Some(req.label.as_str()));
        assert!(handle
            .group_names()
            .values()
            .any(|n| *n == format!("lockstep-ap-{ap}")));
    }

    fn check_gone(handle: &SimHandle, req: &IssueRequest) {
        assert!(!handle
            .users()
            .iter()
            .any(|u| u.external_id.as_deref() == Some(req.label.as_str())));
    }
}

impl crate::contract::PinFixture for BrivoFixture {
    fn force_pin_collision_next(handle: &SimHandle) {
        handle.update_faults(|f| f.force_pin_collision_next = 1);
    }
}
