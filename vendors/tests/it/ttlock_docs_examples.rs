//! Replays of the examples in TTLock's public Open API docs (see `fixtures/README.md`).

use lockstep_vendors::ttlock::wire::{
    self, AddPasscodeRequest, AddPasscodeResponse, Authed, ChangePasscodeRequest, ErrorResponse,
    ListPasscodesResponse, Reply, TokenResponse,
};
use lockstep_vendors::VendorEntry;

use crate::support::{spawn, LOCK};

/// From the public docs: `document-pages/cloud/passcode/list`, return example.
const LIST_REPLY: &str = include_str!("fixtures/ttlock_list_passcodes_reply.json");
/// From the public docs: `document-pages/cloud/passcode/add`, curl example.
const ADD_REQUEST: &str = include_str!("fixtures/ttlock_add_passcode_request.form");
/// From the public docs: `document-pages/en/cloud/passcode/update`, curl example.
const CHANGE_REQUEST: &str = include_str!("fixtures/ttlock_change_passcode_request.form");
/// From the public docs: `document-pages/cloud/oauth2/getAccessToken`, return example.
const TOKEN_REPLY: &str = include_str!("fixtures/ttlock_token_reply.json");

fn documented_add_form() -> Vec<(String, String)> {
    form_pairs(ADD_REQUEST)
}

fn documented_change_form() -> Vec<(String, String)> {
    form_pairs(CHANGE_REQUEST)
}

fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn documented_list_reply_parses_into_vendor_entries() {
    let page = match wire::parse_reply::<ListPasscodesResponse>(LIST_REPLY.as_bytes()) {
        Ok(Reply::Ok(p)) => p,
        Ok(Reply::Err { errcode }) => panic!("unexpected errcode {errcode}"),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(page.list.len(), 1);
    let rec = page.list[0].clone();
    assert_eq!(rec.keyboard_pwd_id, 3234293);
    assert_eq!(rec.lock_id, 532323);
    assert_eq!(rec.keyboard_pwd, "034234", "leading zero kept");
    assert_eq!(rec.keyboard_pwd_type, 3, "documented as the string \"3\"");
    let entry = VendorEntry::try_from(rec).expect("dates in range");
    assert_eq!(entry.vendor_ref.expose(), "3234293");
    assert_eq!(entry.label, "陈文亮");
    assert_eq!(entry.valid_from.timestamp_millis(), 1528878944000);
    assert_eq!(entry.valid_until.timestamp_millis(), 1628878944000);
}

#[test]
fn documented_token_reply_parses() {
    let Ok(Reply::Ok(t)) = wire::parse_reply::<TokenResponse>(TOKEN_REPLY.as_bytes()) else {
        panic!("token reply does not parse");
    };
    assert_eq!(t.expires_in, 7776000);
    assert_eq!(t.uid, Some(2340));
}

#[test]
fn documented_error_body_is_an_error_reply() {
    let body = br#"{"errcode": -3007, "errmsg": "same passcode exists", "description": ""}"#;
    assert!(matches!(
        wire::parse_reply::<AddPasscodeResponse>(body),
        Ok(Reply::Err { errcode: -3007 })
    ));
    let ok = br#"{"errcode": 0, "errmsg": "none error message"}"#;
    assert!(matches!(
        wire::parse_reply::<wire::ErrorResponse>(ok),
        Ok(Reply::Ok(_))
    ));
}

#[test]
fn our_add_form_uses_the_documented_field_names() {
    let ours = serde_json::to_value(Authed {
        client_id: "c",
        access_token: "t",
        call: AddPasscodeRequest {
            lock_id: 1,
            keyboard_pwd: "123456",
            keyboard_pwd_name: "n",
            keyboard_pwd_type: 3,
            start_date: 1,
            end_date: 2,
            add_type: 2,
        },
        date: 3,
    })
    .expect("serializes");
    let ours: std::collections::BTreeSet<String> = ours
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    let mut documented: std::collections::BTreeSet<String> =
        documented_add_form().into_iter().map(|(k, _)| k).collect();
    // Optional in the docs (defaults to 3); we send it explicitly.
    documented.insert("keyboardPwdType".to_owned());
    assert_eq!(ours, documented);
}

/// Posts the documented add request with the example's masked credentials replaced by
/// ours and, when given, another passcode; gives the reply's body.
async fn post_documented_add(env: &crate::support::Env, passcode: Option<&str>) -> Vec<u8> {
    let ours: Vec<_> = passcode
        .map(|p| ("keyboardPwd", p.to_owned()))
        .into_iter()
        .collect();
    post_documented(env, "/v3/keyboardPwd/add", documented_add_form(), &ours).await
}

/// Posts a documented request to `path` with the example's masked credentials (client id,
/// access token) replaced by ours and the fields in `ours` by their values; gives the
/// reply's body.
async fn post_documented(
    env: &crate::support::Env,
    path: &str,
    documented: Vec<(String, String)>,
    ours: &[(&str, String)],
) -> Vec<u8> {
    let base = env.sim.base_url();
    let token = crate::support::token_for(&base).await;
    let form: Vec<(String, String)> = documented
        .into_iter()
        .map(|(k, v)| {
            let v = match k.as_str() {
                "clientId" => lockstep_vendors::ttlock::simulator::SIM_CLIENT_ID.to_owned(),
                "accessToken" => token.clone(),
                _ => ours
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map_or(v, |(_, ours)| ours.clone()),
            };
            (k, v)
        })
        .collect();
    crate::support::answer_bytes(
        reqwest::Client::new()
            .post(format!("{base}{path}"))
            .form(&form),
    )
    .await
}

#[tokio::test]
async fn documented_add_request_is_accepted_by_the_simulator() {
    let env = spawn();
    assert_eq!(LOCK, 24451, "the documented example's lock");
    // the example's own passcode (123456) is one TTLock refuses as too simple: see below
    let body = post_documented_add(&env, Some("482913")).await;
    let Ok(Reply::Ok(reply)) = wire::parse_reply::<AddPasscodeResponse>(&body) else {
        panic!(
            "documented add request refused: {}",
            String::from_utf8_lossy(&body)
        );
    };
    let at_sim = env.handle.passcodes(24451);
    assert_eq!(at_sim.len(), 1);
    let p = &at_sim[0];
    assert_eq!(p.keyboard_pwd_id, reply.keyboard_pwd_id);
    assert_eq!(p.keyboard_pwd, "482913");
    assert_eq!(p.keyboard_pwd_name, "陈文亮");
    assert_eq!(p.keyboard_pwd_type, 3, "keyboardPwdType defaults to 3");
    assert_eq!(p.start_date, 1626945087000);
    assert_eq!(p.end_date, 1746945087000);
}

/// The docs' example passcode `123456` is a run of consecutive digits, which TTLock's
/// error table refuses: -2032, "do not use consecutive digits or repeated digits".
#[tokio::test]
async fn the_documented_example_passcode_is_refused_as_too_simple() {
    let env = spawn();
    let body = post_documented_add(&env, None).await;
    assert!(
        matches!(
            wire::parse_reply::<AddPasscodeResponse>(&body),
            Ok(Reply::Err { errcode: -2032 })
        ),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(env.handle.passcodes(24451).is_empty());
}

#[test]
fn our_change_form_uses_the_documented_field_names() {
    let ours = serde_json::to_value(Authed {
        client_id: "c",
        access_token: "t",
        call: ChangePasscodeRequest {
            lock_id: 1,
            keyboard_pwd_id: 2,
            start_date: 3,
            end_date: 4,
            change_type: 2,
        },
        date: 5,
    })
    .expect("serializes");
    let ours: std::collections::BTreeSet<String> = ours
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    let mut documented: std::collections::BTreeSet<String> = documented_change_form()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // Optional in the docs, and deliberately not sent: `update` changes the window only.
    assert!(documented.remove("keyboardPwdName"));
    assert!(documented.remove("newKeyboardPwd"));
    assert_eq!(ours, documented);
}

#[tokio::test]
async fn documented_change_request_is_accepted_by_the_simulator() {
    let env = spawn();
    let seeded = env
        .handle
        .seed_passcode(
            LOCK,
            "123456",
            "before",
            1_626_000_000_000,
            1_627_000_000_000,
        )
        .expect("the documented lock exists");
    // The documented request, with the example's masked credentials and its passcode id
    // replaced by ours.
    let body = post_documented(
        &env,
        "/v3/keyboardPwd/change",
        documented_change_form(),
        &[("keyboardPwdId", seeded.to_string())],
    )
    .await;
    let Ok(Reply::Ok(reply)) = wire::parse_reply::<ErrorResponse>(&body) else {
        panic!(
            "documented change request refused: {}",
            String::from_utf8_lossy(&body)
        );
    };
    assert_eq!(reply.errcode, 0);
    let at_sim = env.handle.passcodes(LOCK);
    assert_eq!(at_sim.len(), 1);
    let p = &at_sim[0];
    assert_eq!(p.keyboard_pwd_id, seeded);
    assert_eq!(p.keyboard_pwd, "689768");
    assert_eq!(p.keyboard_pwd_name, "Passcode for Tony");
    assert_eq!(p.start_date, 1626945087000);
    assert_eq!(p.end_date, 1846945087000);
    assert_eq!(env.handle.counters().changes, 1);
}
