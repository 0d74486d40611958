//! The simulator's eKeys, IC cards, cloud users, remote unlock, lock records and the lock
//! records callback (TTLock's only webhook).
//!
//! Routes: `POST /v3/user/register`, `GET /v3/user/list`, `POST /v3/key/send`,
//! `POST /v3/key/delete`, `POST /v3/key/changePeriod`, `GET /v3/lock/listKey`,
//! `POST /v3/identityCard/addForReversedCardNumber`, `POST /v3/identityCard/delete`,
//! `POST /v3/identityCard/changePeriod`, `GET /v3/identityCard/list`,
//! `POST /v3/lock/unlock`, `GET /v3/lockRecord/list`; control:
//! `POST /_sim/locks/{lockId}/attempts` (`{"method": "pin"|"card"|"app", "credential":
//! <digits, card number or user name>}`: someone tries the door) and
//! `POST /_sim/callback` (`{"url": ...}`: where lock records are pushed),
//! `POST /_sim/locks/{lockId}/health` (`{"offline", "batteryPercent"}`).
//!
//! Behaviour as documented: one eKey per user and lock (sending another replaces it);
//! cards are stored under their byte-reversed number (3661413478 lists as 1723612378) and
//! at most 1000 per lock (-4056); a remote unlock through an offline gateway is -3002;
//! every door operation becomes a record (`recordType` 1 app, 4 passcode, 7 card, 12
//! gateway) whose `username` is the eKey user or the passcode's or card's name, and is
//! pushed to the callback as `notifyType=1`, `lockId`, `lockMac`, `records` (a JSON array
//! in a form field), answered with the text `success`.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    authorize, code, errcode, param, param_i64, wire, Params, Refusal, SimHandle, SimState,
};

/// A lock holds at most this many IC cards (documented).
pub const MAX_CARDS_PER_LOCK: usize = 1000;
/// The prefix the simulated application puts before registered user names.
pub const USER_PREFIX: &str = "lkst";

/// An eKey held by a simulated lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimEkey {
    /// Its id.
    pub key_id: i64,
    /// The lock.
    pub lock_id: i64,
    /// The receiver (prefixed).
    pub username: String,
    /// Its name.
    pub key_name: String,
    /// Start, epoch ms.
    pub start_date: i64,
    /// End, epoch ms.
    pub end_date: i64,
}

/// An IC card held by a simulated lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimCard {
    /// Its id.
    pub card_id: i64,
    /// The lock.
    pub lock_id: i64,
    /// The number as the cloud stores it (byte-reversed from the request).
    pub card_number: String,
    /// Its name.
    pub card_name: String,
    /// Start, epoch ms.
    pub start_date: i64,
    /// End, epoch ms.
    pub end_date: i64,
}

/// How someone tries a simulated door.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimMethod {
    /// Digits on the keypad.
    Pin,
    /// A card on the reader (its number as a desk reader prints it).
    Card,
    /// The TTLock app of a user (the prefixed user name).
    App,
}

/// A door attempt to simulate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimAttempt {
    /// How.
    pub method: SimMethod,
    /// The digits, the card number or the user name.
    pub credential: String,
}

#[derive(Default)]
pub(super) struct AccessState {
    users: Vec<(String, i64)>,
    ekeys: Vec<SimEkey>,
    cards: Vec<SimCard>,
    records: Vec<wire::OperationRecord>,
    next_id: i64,
    callback: Option<String>,
}

/// The number TTLock stores for a card added by its reversed number: the 32-bit number
/// with its bytes in the other order (numbers above 32 bits are kept as they are).
pub fn reversed_card_number(number: &str) -> String {
    match number.parse::<u32>() {
        Ok(n) => n.swap_bytes().to_string(),
        Err(_) => number.to_owned(),
    }
}

impl SimEkey {
    /// As `GET /v3/lock/listKey` lists it.
    fn record(&self) -> wire::KeyRecord {
        wire::KeyRecord {
            key_id: self.key_id,
            lock_id: self.lock_id,
            username: Some(self.username.clone()),
            key_name: Some(self.key_name.clone()),
            key_status: Some("110401".into()),
            start_date: Some(self.start_date),
            end_date: Some(self.end_date),
        }
    }
}

impl SimCard {
    /// As `GET /v3/identityCard/list` lists it.
    fn record(&self) -> wire::CardRecord {
        wire::CardRecord {
            card_id: self.card_id,
            lock_id: self.lock_id,
            card_number: Some(self.card_number.clone()),
            card_name: Some(self.card_name.clone()),
            start_date: Some(self.start_date),
            end_date: Some(self.end_date),
        }
    }
}

impl AccessState {
    /// The eKeys and IC cards as door objects, named as Lockstep names them.
    pub(super) fn door_objects(&self, out: &mut Vec<super::journal::DoorObject>) {
        use lockstep_domain::KeyCredentialKind;
        let ekeys = self.ekeys.iter().map(|k| super::journal::DoorObject {
            device: k.lock_id.to_string(),
            label: k.key_name.clone(),
            kind: KeyCredentialKind::MobileApp,
            valid_from: super::ms_time(k.start_date),
            valid_until: super::ms_time(k.end_date),
        });
        let cards = self.cards.iter().map(|c| super::journal::DoorObject {
            device: c.lock_id.to_string(),
            label: c.card_name.clone(),
            kind: KeyCredentialKind::RfidCard,
            valid_from: super::ms_time(c.start_date),
            valid_until: super::ms_time(c.end_date),
        });
        out.extend(ekeys.chain(cards));
    }
}

fn next_id(s: &mut SimState) -> i64 {
    if s.access.next_id == 0 {
        s.access.next_id = 27_619;
    }
    s.access.next_id += 1;
    s.access.next_id
}

fn lock_mac(lock_id: i64) -> String {
    let b = lock_id.to_be_bytes();
    format!(
        "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
        b[2], b[3], b[4], b[5], b[6], b[7]
    )
}

impl SimHandle {
    /// The eKeys of one lock.
    pub fn ekeys(&self, lock_id: i64) -> Vec<SimEkey> {
        self.with(|s| {
            s.access
                .ekeys
                .iter()
                .filter(|k| k.lock_id == lock_id)
                .cloned()
                .collect()
        })
    }

    /// The IC cards of one lock.
    pub fn cards(&self, lock_id: i64) -> Vec<SimCard> {
        self.with(|s| {
            s.access
                .cards
                .iter()
                .filter(|c| c.lock_id == lock_id)
                .cloned()
                .collect()
        })
    }

    /// The registered users (prefixed names).
    pub fn users(&self) -> Vec<String> {
        self.with(|s| s.access.users.iter().map(|(u, _)| u.clone()).collect())
    }

    /// Number of lock records (door operations) so far.
    pub fn record_count(&self, lock_id: i64) -> usize {
        self.with(|s| {
            s.access
                .records
                .iter()
                .filter(|r| r.lock_id == lock_id)
                .count()
        })
    }

    /// Where lock records are pushed (TTLock's callback URL), `None` to stop.
    pub fn set_callback(&self, url: Option<String>) {
        self.with(|s| s.access.callback = url);
    }

    /// Someone tries the door: the attempt is judged against what the lock holds now,
    /// recorded, and pushed to the callback if one is set (awaited). `None` for an unknown
    /// lock; otherwise whether the door opened.
    pub async fn door_attempt(&self, lock_id: i64, attempt: &SimAttempt) -> Option<bool> {
        let now = self.clock.now();
        let (record, callback) =
            self.with(|s| -> Option<(wire::OperationRecord, Option<String>)> {
                let record = judge(s, lock_id, attempt, now)?;
                s.access.records.push(record.clone());
                Some((record, s.access.callback.clone()))
            })?;
        let opened = record.success == 1;
        if let Some(url) = callback {
            push_records(&url, lock_id, &[record]).await;
        }
        Some(opened)
    }
}

fn valid_at(start: i64, end: i64, now_ms: i64) -> bool {
    (start == 0 || start <= now_ms) && (end == 0 || now_ms < end)
}

fn judge(
    s: &SimState,
    lock_id: i64,
    attempt: &SimAttempt,
    now: DateTime<Utc>,
) -> Option<wire::OperationRecord> {
    let lock = s.locks.get(&lock_id)?;
    let now_ms = now.timestamp_millis();
    let (record_type, name) = match attempt.method {
        SimMethod::Pin => (
            wire::RECORD_PASSCODE,
            lock.iter()
                .find(|p| {
                    p.keyboard_pwd == attempt.credential
                        && valid_at(p.start_date, p.end_date, now_ms)
                })
                .map(|p| p.keyboard_pwd_name.clone()),
        ),
        SimMethod::Card => {
            let stored = reversed_card_number(&attempt.credential);
            (
                wire::RECORD_CARD,
                s.access
                    .cards
                    .iter()
                    .find(|c| {
                        c.lock_id == lock_id
                            && c.card_number == stored
                            && valid_at(c.start_date, c.end_date, now_ms)
                    })
                    .map(|c| c.card_name.clone()),
            )
        }
        SimMethod::App => (
            wire::RECORD_APP,
            s.access
                .ekeys
                .iter()
                .find(|k| {
                    k.lock_id == lock_id
                        && k.username == attempt.credential
                        && valid_at(k.start_date, k.end_date, now_ms)
                })
                .map(|k| k.username.clone()),
        ),
    };
    let record_id = now_ms * 1000 + i64::try_from(s.access.records.len() % 1000).unwrap_or(0);
    Some(wire::OperationRecord {
        record_id,
        lock_id,
        record_type,
        success: i64::from(name.is_some()),
        // a refused app user is still named; a refused passcode or card has no name
        username: name
            .or_else(|| (attempt.method == SimMethod::App).then(|| attempt.credential.clone())),
        keyboard_pwd: (attempt.method != SimMethod::App).then(|| attempt.credential.clone()),
        lock_date: now_ms,
        server_date: now_ms,
    })
}

/// Pushes records the way TTLock's callback does; failures are only logged (TTLock does
/// not retry either, as far as its docs say).
async fn push_records(url: &str, lock_id: i64, records: &[wire::OperationRecord]) {
    // the documented callback fields (no recordId: receivers read records back)
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "lockDate": r.lock_date,
                "serverDate": r.server_date,
                "recordType": r.record_type,
                "success": r.success,
                "username": r.username,
                "keyboardPwd": r.keyboard_pwd,
                "electricQuantity": 87,
            })
        })
        .collect();
    let Ok(records_json) = serde_json::to_string(&records) else {
        return;
    };
    let form = [
        ("notifyType", "1".to_owned()),
        ("lockId", lock_id.to_string()),
        ("lockMac", lock_mac(lock_id)),
        ("records", records_json),
    ];
    let client = reqwest::Client::new();
    match client.post(url).form(&form).send().await {
        Ok(r) => tracing::debug!(
            status = r.status().as_u16(),
            "ttlock simulator callback sent"
        ),
        Err(_) => tracing::warn!("ttlock simulator callback failed"),
    }
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v3/user/register", web::post().to(register_user))
        .route("/v3/user/list", web::get().to(list_users))
        .route("/v3/key/send", web::post().to(send_key))
        .route("/v3/key/delete", web::post().to(delete_key))
        .route("/v3/key/changePeriod", web::post().to(change_key))
        .route("/v3/lock/listKey", web::get().to(list_keys))
        .route(
            "/v3/identityCard/addForReversedCardNumber",
            web::post().to(add_card),
        )
        .route("/v3/identityCard/delete", web::post().to(delete_card))
        .route("/v3/identityCard/changePeriod", web::post().to(change_card))
        .route("/v3/identityCard/list", web::get().to(list_cards))
        .route("/v3/lock/unlock", web::post().to(unlock))
        .route("/v3/lockRecord/list", web::get().to(list_records))
        .route(
            "/_sim/locks/{lock_id}/attempts",
            web::post().to(post_attempt),
        )
        .route("/_sim/callback", web::post().to(post_callback))
        .route("/_sim/locks/{lock_id}/health", web::post().to(post_health));
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HealthBody {
    offline: Option<bool>,
    battery_percent: Option<i64>,
}

/// `POST /_sim/locks/{lockId}/health` `{offline?, batteryPercent?}`: changes a lock's health.
async fn post_health(
    h: web::Data<SimHandle>,
    path: web::Path<i64>,
    body: web::Json<HealthBody>,
) -> HttpResponse {
    let b = body.into_inner();
    h.update_lock_health(path.into_inner(), |l| {
        if let Some(o) = b.offline {
            l.offline = o;
        }
        if let Some(p) = b.battery_percent {
            l.battery_percent = p;
        }
    });
    HttpResponse::NoContent().finish()
}

/// Checks `clientId` and `clientSecret` of the user endpoints.
fn authorize_client(s: &SimState, p: &Params) -> Result<(), Refusal> {
    let client_id = param(p, "clientId")?;
    let secret = param(p, "clientSecret")?;
    param_i64(p, "date")?;
    if s.accounts
        .iter()
        .any(|a| a.client_id == client_id && a.client_secret.expose() == secret)
    {
        Ok(())
    } else {
        Err(errcode(code::INVALID_CLIENT, "invalid client"))
    }
}

/// `startDate` and `endDate` (epoch ms) of a call that sets a validity period.
fn period(p: &Params) -> Result<(i64, i64), Refusal> {
    Ok((param_i64(p, "startDate")?, param_i64(p, "endDate")?))
}

fn known_lock(s: &SimState, lock_id: i64) -> Result<(), Refusal> {
    if s.locks.contains_key(&lock_id) {
        Ok(())
    } else {
        Err(errcode(code::LOCK_NOT_FOUND, "lock does not exist"))
    }
}

fn ok() -> HttpResponse {
    errcode(code::OK, "none error message").into()
}

fn page<T: Serialize>(items: Vec<T>, p: &Params) -> Result<HttpResponse, Refusal> {
    let page_no = param_i64(p, "pageNo")?.max(1);
    let page_size = param_i64(p, "pageSize")?.clamp(1, wire::MAX_PAGE_SIZE);
    let total = i64::try_from(items.len()).unwrap_or(i64::MAX);
    let skip = usize::try_from((page_no - 1) * page_size).unwrap_or(usize::MAX);
    let take = usize::try_from(page_size).unwrap_or(usize::MAX);
    let list: Vec<T> = items.into_iter().skip(skip).take(take).collect();
    Ok(HttpResponse::Ok().json(wire::Page {
        list,
        page_no,
        page_size,
        pages: (total + page_size - 1) / page_size,
        total,
    }))
}

async fn register_user(h: web::Data<SimHandle>, form: web::Form<Params>) -> HttpResponse {
    h.write("register_user", |s, now| {
        authorize_client(s, &form)?;
        let name = param(&form, "username")?;
        param(&form, "password")?;
        if !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(errcode(
                code::INVALID_USERNAME,
                "invalid registered username",
            ));
        }
        let prefixed = format!("{USER_PREFIX}_{name}");
        if s.access.users.iter().any(|(u, _)| *u == prefixed) {
            return Err(errcode(code::USER_EXISTS, "existing registered users"));
        }
        s.access
            .users
            .push((prefixed.clone(), now.timestamp_millis()));
        Ok(HttpResponse::Ok().json(wire::RegisterUserResponse { username: prefixed }))
    })
    .await
}

async fn list_users(h: web::Data<SimHandle>, query: web::Query<Params>) -> HttpResponse {
    h.read(|s, _| {
        authorize_client(s, &query)?;
        let from = param_i64(&query, "startDate")?;
        let until = param_i64(&query, "endDate")?;
        let users = s
            .access
            .users
            .iter()
            .filter(|(_, at)| (from..=until).contains(at))
            .map(|(u, at)| wire::UserRecord {
                username: u.clone(),
                regtime: Some(*at),
            })
            .collect();
        page(users, &query)
    })
    .await
}

async fn send_key(h: web::Data<SimHandle>, form: web::Form<Params>) -> HttpResponse {
    h.write("send_key", |s, now| {
        authorize(s, &form, now)?;
        let lock_id = param_i64(&form, "lockId")?;
        let receiver = param(&form, "receiverUsername")?.to_owned();
        let key_name = param(&form, "keyName")?.to_owned();
        let (start_date, end_date) = period(&form)?;
        known_lock(s, lock_id)?;
        if !s.access.users.iter().any(|(u, _)| *u == receiver) {
            return Err(errcode(
                code::RECEIVER_NOT_REGISTERED,
                "receiver is not registered",
            ));
        }
        // one eKey per user and lock: a new one replaces the old
        s.access
            .ekeys
            .retain(|k| !(k.lock_id == lock_id && k.username == receiver));
        let key_id = next_id(s);
        s.access.ekeys.push(SimEkey {
            key_id,
            lock_id,
            username: receiver,
            key_name,
            start_date,
            end_date,
        });
        s.counters.adds += 1;
        Ok(HttpResponse::Ok().json(wire::SendKeyResponse { key_id }))
    })
    .await
}

fn ekey_mut(s: &mut SimState, key_id: i64) -> Result<&mut SimEkey, Refusal> {
    s.access
        .ekeys
        .iter_mut()
        .find(|k| k.key_id == key_id)
        .ok_or_else(|| errcode(code::EKEY_NOT_FOUND, "ekey does not exist"))
}

async fn delete_key(h: web::Data<SimHandle>, form: web::Form<Params>) -> HttpResponse {
    h.write("delete_key", |s, now| {
        authorize(s, &form, now)?;
        let key_id = param_i64(&form, "keyId")?;
        ekey_mut(s, key_id)?;
        s.access.ekeys.retain(|k| k.key_id != key_id);
        s.counters.deletes += 1;
        Ok(ok())
    })
    .await
}

async fn change_key(h: web::Data<SimHandle>, form: web::Form<Params>) -> HttpResponse {
    h.write("change_key", |s, now| {
        authorize(s, &form, now)?;
        let key_id = param_i64(&form, "keyId")?;
        let (start_date, end_date) = period(&form)?;
        let k = ekey_mut(s, key_id)?;
        k.start_date = start_date;
        k.end_date = end_date;
        s.counters.changes += 1;
        Ok(ok())
    })
    .await
}

async fn list_keys(h: web::Data<SimHandle>, query: web::Query<Params>) -> HttpResponse {
    list_of_lock(&h, &query, "ekeys", |s, lock_id| {
        s.access
            .ekeys
            .iter()
            .rev()
            .filter(|k| k.lock_id == lock_id)
            .map(SimEkey::record)
            .collect()
    })
    .await
}

async fn add_card(h: web::Data<SimHandle>, form: web::Form<Params>) -> HttpResponse {
    h.write("add_card", |s, now| {
        authorize(s, &form, now)?;
        let lock_id = param_i64(&form, "lockId")?;
        let number = param(&form, "cardNumber")?.to_owned();
        let card_name = form.get("cardName").cloned().unwrap_or_default();
        let (start_date, end_date) = period(&form)?;
        param_i64(&form, "addType")?;
        known_lock(s, lock_id)?;
        if !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(errcode(code::INVALID_PARAMETER, "Invalid Parameter."));
        }
        if s.access
            .cards
            .iter()
            .filter(|c| c.lock_id == lock_id)
            .count()
            >= MAX_CARDS_PER_LOCK
        {
            return Err(errcode(code::STORAGE_FULL, "storage is full"));
        }
        let card_id = next_id(s);
        s.access.cards.push(SimCard {
            card_id,
            lock_id,
            card_number: reversed_card_number(&number),
            card_name,
            start_date,
            end_date,
        });
        s.counters.adds += 1;
        Ok(HttpResponse::Ok().json(wire::AddCardResponse { card_id }))
    })
    .await
}

fn card_mut(s: &mut SimState, lock_id: i64, card_id: i64) -> Result<&mut SimCard, Refusal> {
    known_lock(s, lock_id)?;
    s.access
        .cards
        .iter_mut()
        .find(|c| c.card_id == card_id && c.lock_id == lock_id)
        .ok_or_else(|| errcode(code::CARD_NOT_FOUND, "ic card does not exist"))
}

async fn delete_card(h: web::Data<SimHandle>, form: web::Form<Params>) -> HttpResponse {
    h.write("delete_card", |s, now| {
        authorize(s, &form, now)?;
        let lock_id = param_i64(&form, "lockId")?;
        let card_id = param_i64(&form, "cardId")?;
        param_i64(&form, "deleteType")?;
        card_mut(s, lock_id, card_id)?;
        s.access.cards.retain(|c| c.card_id != card_id);
        s.counters.deletes += 1;
        Ok(ok())
    })
    .await
}

async fn change_card(h: web::Data<SimHandle>, form: web::Form<Params>) -> HttpResponse {
    h.write("change_card", |s, now| {
        authorize(s, &form, now)?;
        let lock_id = param_i64(&form, "lockId")?;
        let card_id = param_i64(&form, "cardId")?;
        let (start_date, end_date) = period(&form)?;
        let c = card_mut(s, lock_id, card_id)?;
        c.start_date = start_date;
        c.end_date = end_date;
        s.counters.changes += 1;
        Ok(ok())
    })
    .await
}

async fn list_cards(h: web::Data<SimHandle>, query: web::Query<Params>) -> HttpResponse {
    list_of_lock(&h, &query, "cards", |s, lock_id| {
        s.access
            .cards
            .iter()
            .rev()
            .filter(|c| c.lock_id == lock_id)
            .map(SimCard::record)
            .collect()
    })
    .await
}

/// One of a lock's lists (`list`, which `fail_list` may make fail): the call authorized,
/// the lock known, its `items` (newest first) paged.
async fn list_of_lock<T: Serialize>(
    h: &SimHandle,
    query: &Params,
    list: &str,
    items: impl FnOnce(&SimState, i64) -> Vec<T>,
) -> HttpResponse {
    h.read_list(list, |s, now| {
        authorize(s, query, now)?;
        let lock_id = param_i64(query, "lockId")?;
        known_lock(s, lock_id)?;
        page(items(s, lock_id), query)
    })
    .await
}

async fn unlock(h: web::Data<SimHandle>, form: web::Form<Params>) -> HttpResponse {
    if let Some(r) = h.gate().await {
        return r;
    }
    let now = h.clock.now();
    let res = h.with(
        |s| -> Result<(wire::OperationRecord, Option<String>), Refusal> {
            authorize(s, &form, now)?;
            let lock_id = param_i64(&form, "lockId")?;
            known_lock(s, lock_id)?;
            if s.lock_health.get(&lock_id).is_some_and(|l| l.offline) {
                return Err(errcode(code::GATEWAY_OFFLINE, "gateway is offline"));
            }
            let now_ms = now.timestamp_millis();
            let record = wire::OperationRecord {
                record_id: now_ms * 1000
                    + i64::try_from(s.access.records.len() % 1000).unwrap_or(0),
                lock_id,
                record_type: wire::RECORD_GATEWAY,
                success: 1,
                username: Some(super::SIM_USERNAME.to_owned()),
                keyboard_pwd: None,
                lock_date: now_ms,
                server_date: now_ms,
            };
            s.access.records.push(record.clone());
            Ok((record, s.access.callback.clone()))
        },
    );
    match res {
        Ok((record, callback)) => {
            if let Some(url) = callback {
                push_records(&url, record.lock_id, &[record]).await;
            }
            ok()
        }
        Err(r) => r.into(),
    }
}

async fn list_records(h: web::Data<SimHandle>, query: web::Query<Params>) -> HttpResponse {
    h.read(|s, now| {
        authorize(s, &query, now)?;
        let lock_id = param_i64(&query, "lockId")?;
        known_lock(s, lock_id)?;
        let from = super::opt_param_i64(&query, "startDate")?.unwrap_or(0);
        let until = super::opt_param_i64(&query, "endDate")?.unwrap_or(i64::MAX);
        let records = s
            .access
            .records
            .iter()
            .rev()
            .filter(|r| r.lock_id == lock_id && (from..=until).contains(&r.server_date))
            .cloned()
            .collect();
        page(records, &query)
    })
    .await
}

async fn post_attempt(
    h: web::Data<SimHandle>,
    path: web::Path<i64>,
    body: web::Json<SimAttempt>,
) -> HttpResponse {
    let opened = h.door_attempt(path.into_inner(), &body).await;
    crate::sim_kit::attempt_reply(opened, "unknown lock")
}

#[derive(Deserialize)]
struct CallbackBody {
    url: Option<String>,
}

async fn post_callback(h: web::Data<SimHandle>, body: web::Json<CallbackBody>) -> HttpResponse {
    h.set_callback(body.into_inner().url);
    HttpResponse::NoContent().finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_are_byte_reversed_as_documented() {
        assert_eq!(reversed_card_number("3661413478"), "1723612378");
        assert_eq!(reversed_card_number("99999999999"), "99999999999");
    }
}
