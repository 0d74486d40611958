//! TTLock beyond passcodes, against the simulator: eKeys (`mobile_app`), IC cards
//! (`rfid_card`), remote unlock, door records, the records callback, and replays of the
//! documented examples of those endpoints.

use std::time::Duration;

use lockstep_domain::{Clock, KeyCredentialKind, SystemClock};
use lockstep_vendors::ttlock::access::{label_from_username, username_for};
use lockstep_vendors::ttlock::wire::{self, CardRecord, KeyRecord, OperationRecord, Page, Reply};
use lockstep_vendors::ttlock::{SimAttempt, SimMethod};
use lockstep_vendors::{CardNumber, DoorMethod, IssueRequest, LockPort, VendorError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{device, pin_request, post_as_client, shifted, spawn, window, LOCK};

const LABEL: &str = "key_01HQ3ZJ6W8K9V7T5R4P2N1M0AB";

fn ekey_request(label: &str) -> IssueRequest {
    IssueRequest {
        device: device(),
        kind: KeyCredentialKind::MobileApp,
        label: label.to_owned(),
        pin: None,
        card_number: None,
        validity: window(),
    }
}

fn card_request(label: &str, number: &str) -> IssueRequest {
    IssueRequest {
        kind: KeyCredentialKind::RfidCard,
        card_number: Some(CardNumber::parse(number).expect("digits")),
        ..ekey_request(label)
    }
}

#[tokio::test]
async fn an_ekey_goes_to_a_user_registered_for_the_credential() -> anyhow::Result<()> {
    let env = spawn();
    let req = ekey_request(LABEL);
    let vref = env.adapter.issue(&req).await?;
    assert!(vref.expose().starts_with("ekey:"));
    let users = env.handle.users();
    assert_eq!(users, vec![format!("lkst_{}", username_for(LABEL))]);
    let keys = env.handle.ekeys(LOCK);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].key_name, LABEL);
    assert_eq!(keys[0].username, users[0]);
    assert_eq!(keys[0].start_date, req.validity.from().timestamp_millis());

    assert_eq!(env.adapter.find(&req).await?, Some(vref.clone()));
    assert_eq!(env.adapter.find(&ekey_request("key_other")).await?, None);

    let moved = IssueRequest {
        validity: shifted(&req.validity, 2),
        ..req.clone()
    };
    env.adapter.update(&moved, &vref).await?;
    assert_eq!(
        env.handle.ekeys(LOCK)[0].end_date,
        moved.validity.until().timestamp_millis()
    );
    let listed = env.adapter.list(&device()).await?;
    assert!(listed
        .iter()
        .any(|e| e.label == LABEL && e.vendor_ref == vref));

    env.adapter.revoke(&device(), &vref).await?;
    assert!(env.handle.ekeys(LOCK).is_empty());
    env.adapter.revoke(&device(), &vref).await?;
    assert_eq!(
        env.adapter.update(&moved, &vref).await,
        Err(VendorError::NotFound)
    );
    Ok(())
}

#[tokio::test]
async fn a_lost_answer_leaves_one_user_and_one_ekey_after_the_retry() -> anyhow::Result<()> {
    let env = spawn();
    let req = ekey_request(LABEL);
    env.handle.update_faults(|f| f.lose_response_rate = 1.0);
    assert!(
        env.adapter.issue(&req).await.is_err(),
        "register's answer lost"
    );
    env.handle.update_faults(|f| f.lose_response_rate = 0.0);
    assert_eq!(env.adapter.find(&req).await?, None, "no eKey was sent");
    // the retry finds the user registered before and sends the key
    let vref = env.adapter.issue(&req).await?;
    assert_eq!(env.handle.users().len(), 1);
    assert_eq!(env.handle.ekeys(LOCK).len(), 1);
    // now the user exists: a second issue's register is refused 30003 and the send's
    // answer is lost; the key was sent, and find sees exactly that one
    env.adapter.revoke(&device(), &vref).await?;
    env.handle.update_faults(|f| f.lose_response_rate = 1.0);
    assert!(env.adapter.issue(&req).await.is_err(), "send's answer lost");
    env.handle.update_faults(|f| f.lose_response_rate = 0.0);
    let found = env.adapter.find(&req).await?.expect("the key was sent");
    assert_eq!(env.handle.ekeys(LOCK).len(), 1);
    assert_eq!(
        env.handle.ekeys(LOCK)[0].key_id.to_string(),
        found.expose()["ekey:".len()..]
    );
    assert_eq!(env.handle.users().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_card_is_added_by_its_number_and_found_by_its_name() -> anyhow::Result<()> {
    let env = spawn();
    let req = card_request(LABEL, "3661413478");
    let vref = env.adapter.issue(&req).await?;
    assert!(vref.expose().starts_with("card:"));
    let cards = env.handle.cards(LOCK);
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0].card_number, "1723612378", "stored byte-reversed");
    assert_eq!(cards[0].card_name, LABEL);
    assert_eq!(env.adapter.find(&req).await?, Some(vref.clone()));
    let moved = IssueRequest {
        validity: shifted(&req.validity, 1),
        ..req.clone()
    };
    env.adapter.update(&moved, &vref).await?;
    assert_eq!(
        env.handle.cards(LOCK)[0].start_date,
        moved.validity.from().timestamp_millis()
    );
    env.adapter.revoke(&device(), &vref).await?;
    assert!(env.handle.cards(LOCK).is_empty());
    env.adapter.revoke(&device(), &vref).await?;

    // without the reader's number nothing is sent
    let adds = env.handle.counters().adds;
    let no_number = IssueRequest {
        card_number: None,
        ..req
    };
    match env.adapter.issue(&no_number).await {
        Err(VendorError::Refused { code, .. }) => assert_eq!(code, "missing_card_number"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(env.handle.counters().adds, adds);
    assert!(CardNumber::parse("12ab").is_err());
    assert!(!format!("{:?}", CardNumber::parse("3661413478")?).contains("3661413478"));
    Ok(())
}

#[tokio::test]
async fn door_records_name_the_credential_without_its_digits() -> anyhow::Result<()> {
    let env = spawn();
    let since = SystemClock.now() - chrono::Duration::seconds(5);
    // credentials valid now
    let now_window = lockstep_domain::ValidityWindow::new(
        SystemClock.now() - chrono::Duration::hours(1),
        SystemClock.now() + chrono::Duration::hours(1),
    )?;
    let pin_label = "key_01HQ3ZJ6W8K9V7T5R4P2N1M0PN";
    let card_label = "key_01HQ3ZJ6W8K9V7T5R4P2N1M0CD";
    let pin = IssueRequest {
        validity: now_window,
        ..pin_request(pin_label, "482913")
    };
    env.adapter.issue(&pin).await?;
    env.adapter
        .issue(&IssueRequest {
            validity: now_window,
            ..card_request(card_label, "3661413478")
        })
        .await?;
    env.adapter
        .issue(&IssueRequest {
            validity: now_window,
            ..ekey_request(LABEL)
        })
        .await?;
    let user = env.handle.users().remove(0);

    let attempt = |method, credential: &str| SimAttempt {
        method,
        credential: credential.to_owned(),
    };
    assert_eq!(
        env.handle
            .door_attempt(LOCK, &attempt(SimMethod::Pin, "482913"))
            .await,
        Some(true)
    );
    assert_eq!(
        env.handle
            .door_attempt(LOCK, &attempt(SimMethod::Pin, "111999"))
            .await,
        Some(false)
    );
    assert_eq!(
        env.handle
            .door_attempt(LOCK, &attempt(SimMethod::Card, "3661413478"))
            .await,
        Some(true)
    );
    assert_eq!(
        env.handle
            .door_attempt(LOCK, &attempt(SimMethod::App, &user))
            .await,
        Some(true)
    );
    env.adapter.remote_unlock(&device()).await?;

    let events = env.adapter.door_events(&device(), since).await?;
    let seen: Vec<(DoorMethod, bool, Option<&str>)> = events
        .iter()
        .map(|e| (e.method, e.granted, e.label.as_deref()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (DoorMethod::PinCode, true, Some(pin_label)),
            (DoorMethod::PinCode, false, None),
            (DoorMethod::Card, true, Some(card_label)),
            (DoorMethod::MobileApp, true, Some(LABEL)),
            (DoorMethod::Remote, true, None),
        ]
    );
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), 5, "record ids are distinct (dedupe key)");
    let rendered = format!("{events:?}");
    assert!(!rendered.contains("482913") && !rendered.contains("3661413478"));

    // nothing after a later `since`
    let later = SystemClock.now() + chrono::Duration::seconds(5);
    assert!(env.adapter.door_events(&device(), later).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn remote_unlock_through_an_offline_gateway_is_a_passing_refusal() {
    let env = spawn();
    env.handle.update_lock_health(LOCK, |h| h.offline = true);
    match env.adapter.remote_unlock(&device()).await {
        Err(e @ VendorError::Refused { .. }) => {
            assert!(e.is_retryable() && !e.is_vendor_unwell(), "{e:?}")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(env.handle.record_count(LOCK), 0);
}

/// TTLock pushes lock records to the application's callback URL as a form with
/// `notifyType=1`, `lockId`, `lockMac` and `records` (a JSON array as a string).
#[tokio::test]
async fn the_simulator_pushes_records_to_the_callback_as_documented() -> anyhow::Result<()> {
    let env = spawn();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks/v1/ttlock/t0k3n", listener.local_addr()?);
    env.handle.set_callback(Some(url));
    let receive = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = sock.read(&mut chunk).await?;
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if n == 0 || text.contains("records=") && text.ends_with("%5D") {
                break;
            }
        }
        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsuccess")
            .await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
    });
    let opened = env
        .handle
        .door_attempt(
            LOCK,
            &SimAttempt {
                method: SimMethod::Pin,
                credential: "000111".into(),
            },
        )
        .await;
    assert_eq!(opened, Some(false));
    let request = tokio::time::timeout(Duration::from_secs(10), receive).await???;
    assert!(
        request.starts_with("POST /webhooks/v1/ttlock/t0k3n "),
        "{request}"
    );
    assert!(request
        .to_ascii_lowercase()
        .contains("application/x-www-form-urlencoded"));
    let body = request.split("\r\n\r\n").nth(1).unwrap_or_default();
    let form: Vec<(String, String)> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("notifyType"), Some("1"));
    assert_eq!(get("lockId"), Some(LOCK.to_string().as_str()));
    let records: serde_json::Value = serde_json::from_str(get("records").unwrap_or("null"))?;
    assert_eq!(records[0]["recordType"], 4);
    assert_eq!(records[0]["success"], 0);
    Ok(())
}

/// From the public docs: `document-pages/cloud/ekey/listByLock`, `cloud/card/list` and
/// `cloud/lockRecord/list` return examples (fields as documented, values from the docs).
#[test]
fn documented_list_replies_parse() {
    let keys = br#"{"list": [{"keyId": 3234293, "lockId": 532323, "username": "lock@google.com",
        "uid": 6355997, "keyName": "Ekey for jack", "keyStatus": "110401",
        "startDate": 1528878944000, "endDate": 1628878944000, "keyRight": 0,
        "remoteEnable": 2, "senderUsername": "admin", "remarks": "", "date": 1528878944000}],
        "pageNo": 1, "pageSize": 20, "pages": 1, "total": 1}"#;
    let Ok(Reply::Ok(page)) = wire::parse_reply::<Page<KeyRecord>>(keys) else {
        panic!("eKey list does not parse");
    };
    assert_eq!(page.list[0].key_id, 3234293);
    assert_eq!(page.list[0].key_name.as_deref(), Some("Ekey for jack"));

    let cards = br#"{"list": [{"cardId": 124242, "lockId": 163377, "cardNumber": "1723612378",
        "cardName": "card of mum", "cardType": 1, "startDate": 1625025703000,
        "endDate": 1645025703000, "createDate": 1625025703000, "senderUsername": "admin"}],
        "pageNo": 1, "pageSize": 20, "pages": 1, "total": 1}"#;
    let Ok(Reply::Ok(page)) = wire::parse_reply::<Page<CardRecord>>(cards) else {
        panic!("card list does not parse");
    };
    assert_eq!(page.list[0].card_number.as_deref(), Some("1723612378"));

    let records = br#"{"list": [{"recordId": 1635556821, "lockId": 163377,
        "recordTypeFromLock": 30, "recordType": 4, "success": 1, "username": "alexa",
        "keyboardPwd": "123456", "lockDate": 1616674054000, "serverDate": 1616674056000}],
        "pageNo": 1, "pageSize": 20, "pages": 1, "total": 1}"#;
    let Ok(Reply::Ok(page)) = wire::parse_reply::<Page<OperationRecord>>(records) else {
        panic!("record list does not parse");
    };
    assert_eq!(page.list[0].record_type, wire::RECORD_PASSCODE);
    assert_eq!(page.list[0].lock_date, 1616674054000);

    // the documented send-key reply
    let sent = br#"{"keyId": 234522, "errcode": 0, "errmsg": "none error message"}"#;
    assert!(matches!(
        wire::parse_reply::<wire::SendKeyResponse>(sent),
        Ok(Reply::Ok(wire::SendKeyResponse { key_id: 234522 }))
    ));
    assert_eq!(label_from_username("alexa"), None);
}

/// The documented `key/send` and `identityCard/addForReversedCardNumber` curl examples,
/// replayed against the simulator (with our token and lock): both accepted.
#[tokio::test]
async fn documented_send_and_add_card_requests_are_accepted() -> anyhow::Result<()> {
    let env = spawn();
    let base = env.sim.base_url();
    let token = crate::support::token_for(&base).await;
    // the documented receiver must exist: register it as the docs' user-register example
    let reg = post_as_client(
        &base,
        "/v3/user/register",
        &[
            (
                "clientSecret",
                lockstep_vendors::ttlock::simulator::SIM_CLIENT_SECRET,
            ),
            ("username", "18876191905"),
            ("password", "e10adc3949ba59abbe56e057f20f883e"),
            ("date", "1625025703000"),
        ],
    )
    .await;
    let receiver = reg["username"].as_str().unwrap_or_default().to_owned();
    assert!(receiver.ends_with("_18876191905"), "{reg}");
    let lock = LOCK.to_string();
    let sent = post_as_client(
        &base,
        "/v3/key/send",
        &[
            ("accessToken", token.as_str()),
            ("lockId", lock.as_str()),
            ("receiverUsername", receiver.as_str()),
            ("keyName", "Ekey for jack"),
            ("startDate", "1625025703000"),
            ("endDate", "1635025703000"),
            ("remarks", "water bill due"),
            ("date", "1625025703000"),
        ],
    )
    .await;
    assert!(sent["keyId"].as_i64().is_some(), "{sent}");
    let added = post_as_client(
        &base,
        "/v3/identityCard/addForReversedCardNumber",
        &[
            ("accessToken", token.as_str()),
            ("lockId", lock.as_str()),
            ("cardNumber", "3661413478"),
            ("cardName", "card of mum"),
            ("startDate", "1625025703000"),
            ("endDate", "1645025703000"),
            ("addType", "2"),
            ("date", "1625025703000"),
        ],
    )
    .await;
    assert!(added["cardId"].as_i64().is_some(), "{added}");
    assert_eq!(env.handle.cards(LOCK)[0].card_number, "1723612378");
    Ok(())
}

/// `application/x-www-form-urlencoded` decoding ('+' is a space, `%XX` a byte).
fn form_decode(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap_or(b'?'));
            }
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
