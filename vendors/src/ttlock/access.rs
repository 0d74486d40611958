//! TTLock beyond passcodes: eKeys for `mobile_app`, IC cards for `rfid_card`, remote
//! unlock through the gateway, and the lock's operation records.
//!
//! Endpoints used (TTLock Open API v3, form-encoded, JSON replies):
//! - eKeys: `POST /v3/user/register` (`clientId`, `clientSecret`, `username`, MD5
//!   `password` → `{username}` with the application's prefix), `GET /v3/user/list` (to find
//!   a user an earlier attempt registered: 30003 "existing registered users"),
//!   `POST /v3/key/send` (`receiverUsername`, `keyName`, `startDate`, `endDate`,
//!   `remoteEnable=2`, `createUser=2` → `{keyId}`), `POST /v3/key/changePeriod`,
//!   `POST /v3/key/delete` (-1008: the eKey does not exist), `GET /v3/lock/listKey`.
//! - IC cards: `POST /v3/identityCard/addForReversedCardNumber` with `addType=2` (through
//!   the gateway; `cardNumber` as the desk reader printed it → `{cardId}`),
//!   `POST /v3/identityCard/changePeriod` (`changeType=2`), `POST /v3/identityCard/delete`
//!   (`deleteType=2`; -1021: the card no longer exists), `GET /v3/identityCard/list`.
//! - `POST /v3/lock/unlock`: opens the lock through its gateway.
//! - `GET /v3/lockRecord/list` (`startDate`/`endDate` filter, pages of 200): door records.
//!   A record's `username` is the eKey user for app unlocks and the passcode's or card's
//!   name otherwise: with our label as every name, a record names its credential without
//!   the adapter ever reading the digits in `keyboardPwd`.
//!
//! The guest's mobile key: TTLock gives an eKey to a TTLock user. One user per credential
//! is registered through the API, named from the label (letters and digits only, as TTLock
//! requires: `key_01H…` becomes `key01h…`), with a random password that Lockstep does not
//! keep. The platform's mobile app (the mobile-key invite of spec `002`) takes the user over
//! with `/v3/user/resetPassword` (client-secret authenticated) and reads the eKey with the
//! TTLock SDK. That hand-over is outside Lockstep; the user name is not a secret (it opens
//! nothing without the password), the password never exists outside this function.
//! Reconstructed, not documented: the user-list page size limit (100 is used) and the
//! users' `regtime` filter being inclusive.
//!
//! Cards: TTLock stores a card added with `addForReversedCardNumber` under its byte-reversed
//! number (documented: 3661413478 lists as 1723612378), so `find` matches cards by name
//! only. The card number comes with the request (the desk reader's reading, see the relay);
//! a card request without one is refused `missing_card_number`.
//!
//! `vendorRef`s: a passcode is its bare `keyboardPwdId` (as stored since the first
//! release), an eKey `ekey:<keyId>`, a card `card:<cardId>`; `update` and `revoke` read the
//! kind from the ref. TTLock's eKey freeze/unfreeze is not used: the port suspends by
//! removal for every vendor (DESIGN §6).

use chrono::{DateTime, Utc};
use lockstep_domain::VendorRef;
use rand::Rng;
use reqwest::Method;
use serde::de::DeserializeOwned;
use tracing::debug;

use super::wire::{self, VIA_GATEWAY};
use super::{md5_hex, TtlockAdapter, MAX_PAGES, VENDOR};
use crate::http_kit::CallError;
use crate::{DoorEvent, DoorMethod, IssueRequest, VendorEntry, VendorError};

/// What a TTLock `vendorRef` names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TtRef {
    /// A passcode: `keyboardPwdId`.
    Passcode(i64),
    /// An eKey: `keyId`.
    Ekey(i64),
    /// An IC card: `cardId`.
    Card(i64),
}

impl TtRef {
    pub(crate) fn parse(r: &VendorRef) -> Result<Self, VendorError> {
        let s = r.expose();
        let (make, digits): (fn(i64) -> Self, &str) = if let Some(d) = s.strip_prefix("ekey:") {
            (Self::Ekey, d)
        } else if let Some(d) = s.strip_prefix("card:") {
            (Self::Card, d)
        } else {
            (Self::Passcode, s)
        };
        digits.parse().map(make).map_err(|_| VendorError::Refused {
            code: "invalid_vendor_ref".into(),
            detail: "not a ttlock passcode, ekey or card reference".into(),
        })
    }

    pub(crate) fn vendor_ref(self) -> VendorRef {
        VendorRef::new(match self {
            Self::Passcode(id) => id.to_string(),
            Self::Ekey(id) => format!("ekey:{id}"),
            Self::Card(id) => format!("card:{id}"),
        })
    }
}

/// The TTLock user name for a credential's label: letters and digits only, lowercase.
pub fn username_for(label: &str) -> String {
    label
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The label back from a (prefixed) user name Lockstep registered: `xx_key01h…` →
/// `key_01H…`. `None` for any other user.
pub fn label_from_username(username: &str) -> Option<String> {
    let name = username.rsplit('_').next()?;
    let ulid = name.strip_prefix("key")?;
    (ulid.len() == 26 && ulid.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| format!("key_{}", ulid.to_ascii_uppercase()))
}

fn window_ms(req: &IssueRequest) -> (i64, i64) {
    (
        wire::to_ms(req.validity.from()),
        wire::to_ms(req.validity.until()),
    )
}

fn entry(
    vendor_ref: TtRef,
    label: Option<String>,
    start: Option<i64>,
    end: Option<i64>,
) -> Result<VendorEntry, VendorError> {
    let at = |ms: Option<i64>, open: DateTime<Utc>| match ms {
        Some(ms) if ms > 0 => {
            DateTime::from_timestamp_millis(ms).ok_or_else(|| VendorError::Unavailable {
                detail: "malformed vendor body: date: out of range".into(),
            })
        }
        _ => Ok(open),
    };
    Ok(VendorEntry {
        vendor_ref: vendor_ref.vendor_ref(),
        label: label.unwrap_or_default(),
        valid_from: at(start, DateTime::<Utc>::UNIX_EPOCH)?,
        valid_until: at(end, DateTime::<Utc>::MAX_UTC)?,
    })
}

impl TtlockAdapter {
    pub(super) async fn list_keys(
        &self,
        lock_id: i64,
    ) -> Result<Vec<wire::KeyRecord>, VendorError> {
        self.list_by_lock("list_ekeys", "/v3/lock/listKey", lock_id, false)
            .await
    }

    pub(super) async fn list_cards(
        &self,
        lock_id: i64,
    ) -> Result<Vec<wire::CardRecord>, VendorError> {
        self.list_by_lock("list_cards", "/v3/identityCard/list", lock_id, false)
            .await
    }

    /// The eKeys of a lock as entries.
    pub(super) async fn ekey_entries(&self, lock_id: i64) -> Result<Vec<VendorEntry>, VendorError> {
        self.list_keys(lock_id)
            .await?
            .into_iter()
            .map(|k| entry(TtRef::Ekey(k.key_id), k.key_name, k.start_date, k.end_date))
            .collect()
    }

    /// The IC cards of a lock as entries.
    pub(super) async fn card_entries(&self, lock_id: i64) -> Result<Vec<VendorEntry>, VendorError> {
        self.list_cards(lock_id)
            .await?
            .into_iter()
            .map(|c| {
                entry(
                    TtRef::Card(c.card_id),
                    c.card_name,
                    c.start_date,
                    c.end_date,
                )
            })
            .collect()
    }

    /// A call authenticated with the client secret (the user endpoints take no token).
    async fn with_client_secret<T: DeserializeOwned>(
        &self,
        op: &'static str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<T, VendorError> {
        let (client_secret, _) = self.current_secrets()?;
        match self.exchange(op, build(client_secret.expose())).await {
            Ok(t) => Ok(t),
            Err(CallError::Vendor(e)) => Err(e),
            Err(CallError::StaleToken) => Err(VendorError::Auth {
                detail: "user endpoint refused our client".into(),
            }),
        }
    }

    /// The prefixed TTLock user of a credential, registered if it does not exist yet.
    async fn receiver(&self, label: &str) -> Result<String, VendorError> {
        let name = username_for(label);
        if name.is_empty() {
            return Err(VendorError::Refused {
                code: "invalid_label".into(),
                detail: "the label has no letter or digit".into(),
            });
        }
        let password: [u8; 16] = rand::thread_rng().gen();
        let password = md5_hex(
            &password
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        );
        let url = self.url("/v3/user/register");
        let registered: Result<wire::RegisterUserResponse, _> = self
            .with_client_secret("register_user", |secret| {
                self.net.http().post(&url).form(&wire::RegisterUserRequest {
                    client_id: &self.config.client_id,
                    client_secret: secret,
                    username: &name,
                    password: &password,
                    date: self.now_ms(),
                })
            })
            .await;
        match registered {
            Ok(r) => Ok(r.username),
            // An earlier attempt registered it and its answer was lost.
            Err(VendorError::Refused { code, .. }) if code == "user_exists" => self
                .find_user(&name)
                .await?
                .ok_or_else(|| VendorError::Unavailable {
                    detail: "registered user not listed yet".into(),
                }),
            Err(e) => Err(e),
        }
    }

    async fn find_user(&self, name: &str) -> Result<Option<String>, VendorError> {
        let url = self.url("/v3/user/list");
        let suffix = format!("_{name}");
        let mut page_no = 1;
        loop {
            let page: wire::Page<wire::UserRecord> = self
                .with_client_secret("list_users", |secret| {
                    self.net.http().get(&url).query(&wire::ListUsersQuery {
                        client_id: &self.config.client_id,
                        client_secret: secret,
                        start_date: 0,
                        end_date: self.now_ms(),
                        page_no,
                        page_size: 100,
                        date: self.now_ms(),
                    })
                })
                .await?;
            if let Some(u) = page
                .list
                .iter()
                .find(|u| u.username == name || u.username.ends_with(&suffix))
            {
                return Ok(Some(u.username.clone()));
            }
            if page.list.is_empty() || page_no >= page.pages || page_no >= MAX_PAGES {
                return Ok(None);
            }
            page_no += 1;
        }
    }

    pub(super) async fn issue_ekey(
        &self,
        lock_id: i64,
        req: &IssueRequest,
    ) -> Result<VendorRef, VendorError> {
        let receiver = self.receiver(&req.label).await?;
        let (start_date, end_date) = window_ms(req);
        let reply: wire::SendKeyResponse = self
            .call(
                "send_ekey",
                Method::POST,
                "/v3/key/send",
                wire::SendKeyRequest {
                    lock_id,
                    receiver_username: &receiver,
                    key_name: &req.label,
                    start_date,
                    end_date,
                    remote_enable: 2,
                    create_user: 2,
                },
            )
            .await?;
        debug!(vendor = VENDOR, "ekey sent");
        Ok(TtRef::Ekey(reply.key_id).vendor_ref())
    }

    pub(super) async fn issue_card(
        &self,
        lock_id: i64,
        req: &IssueRequest,
    ) -> Result<VendorRef, VendorError> {
        let number = self.card_number(req).await?;
        let (start_date, end_date) = window_ms(req);
        let reply: wire::AddCardResponse = self
            .call(
                "add_card",
                Method::POST,
                "/v3/identityCard/addForReversedCardNumber",
                wire::AddCardRequest {
                    lock_id,
                    card_number: number.expose(),
                    card_name: &req.label,
                    start_date,
                    end_date,
                    add_type: VIA_GATEWAY,
                },
            )
            .await?;
        debug!(vendor = VENDOR, "card added");
        Ok(TtRef::Card(reply.card_id).vendor_ref())
    }

    pub(super) async fn find_ekey(
        &self,
        lock_id: i64,
        label: &str,
    ) -> Result<Option<VendorRef>, VendorError> {
        Ok(self
            .list_keys(lock_id)
            .await?
            .into_iter()
            .find(|k| k.key_name.as_deref() == Some(label))
            .map(|k| TtRef::Ekey(k.key_id).vendor_ref()))
    }

    pub(super) async fn find_card(
        &self,
        lock_id: i64,
        label: &str,
    ) -> Result<Option<VendorRef>, VendorError> {
        Ok(self
            .list_cards(lock_id)
            .await?
            .into_iter()
            .find(|c| c.card_name.as_deref() == Some(label))
            .map(|c| TtRef::Card(c.card_id).vendor_ref()))
    }

    pub(super) async fn change_ekey(
        &self,
        key_id: i64,
        req: &IssueRequest,
    ) -> Result<(), VendorError> {
        let (start_date, end_date) = window_ms(req);
        self.post(
            "change_ekey",
            "/v3/key/changePeriod",
            wire::ChangeKeyPeriodRequest {
                key_id,
                start_date,
                end_date,
            },
        )
        .await?;
        Ok(())
    }

    pub(super) async fn change_card(
        &self,
        lock_id: i64,
        card_id: i64,
        req: &IssueRequest,
    ) -> Result<(), VendorError> {
        let (start_date, end_date) = window_ms(req);
        self.post(
            "change_card",
            "/v3/identityCard/changePeriod",
            wire::ChangeCardPeriodRequest {
                lock_id,
                card_id,
                start_date,
                end_date,
                change_type: VIA_GATEWAY,
            },
        )
        .await?;
        Ok(())
    }

    pub(super) async fn delete_ekey(&self, key_id: i64) -> Result<(), VendorError> {
        self.post("delete_ekey", "/v3/key/delete", wire::KeyRequest { key_id })
            .await?;
        Ok(())
    }

    pub(super) async fn delete_card(&self, lock_id: i64, card_id: i64) -> Result<(), VendorError> {
        self.post(
            "delete_card",
            "/v3/identityCard/delete",
            wire::DeleteCardRequest {
                lock_id,
                card_id,
                delete_type: VIA_GATEWAY,
            },
        )
        .await?;
        Ok(())
    }

    pub(super) async fn unlock(&self, lock_id: i64) -> Result<(), VendorError> {
        self.post(
            "remote_unlock",
            "/v3/lock/unlock",
            wire::LockQuery { lock_id },
        )
        .await?;
        debug!(vendor = VENDOR, "unlocked through the gateway");
        Ok(())
    }

    pub(super) async fn records_since(
        &self,
        lock_id: i64,
        since: DateTime<Utc>,
    ) -> Result<Vec<DoorEvent>, VendorError> {
        let start_date = wire::to_ms(since);
        let end_date = wire::to_ms(self.net.now());
        let mut records: Vec<wire::OperationRecord> = self
            .pages("list_records", "/v3/lockRecord/list", false, |page_no| {
                wire::ListRecordsQuery {
                    lock_id,
                    start_date,
                    end_date,
                    page_no,
                    page_size: wire::MAX_PAGE_SIZE,
                }
            })
            .await?;
        records.sort_by_key(|r| (r.server_date, r.record_id));
        records.into_iter().map(door_event).collect()
    }
}

fn door_event(r: wire::OperationRecord) -> Result<DoorEvent, VendorError> {
    let method = match r.record_type {
        wire::RECORD_APP => DoorMethod::MobileApp,
        wire::RECORD_PASSCODE => DoorMethod::PinCode,
        wire::RECORD_CARD => DoorMethod::Card,
        wire::RECORD_GATEWAY => DoorMethod::Remote,
        _ => DoorMethod::Other,
    };
    let label = match method {
        DoorMethod::MobileApp => r.username.as_deref().and_then(label_from_username),
        DoorMethod::PinCode | DoorMethod::Card => r.username.filter(|u| !u.is_empty()),
        DoorMethod::Remote | DoorMethod::Other => None,
    };
    let at = DateTime::from_timestamp_millis(if r.lock_date > 0 {
        r.lock_date
    } else {
        r.server_date
    })
    .ok_or_else(|| VendorError::Unavailable {
        detail: "malformed vendor body: lockDate: out of range".into(),
    })?;
    Ok(DoorEvent {
        event_id: r.record_id.to_string(),
        at,
        method,
        granted: r.success == 1,
        label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_round_trip_and_old_passcode_refs_still_read() {
        for r in [
            TtRef::Passcode(3_234_293),
            TtRef::Ekey(27_619),
            TtRef::Card(124_242),
        ] {
            assert!(TtRef::parse(&r.vendor_ref()).ok() == Some(r));
        }
        assert!(TtRef::parse(&VendorRef::new("3234293")).ok() == Some(TtRef::Passcode(3_234_293)));
        assert!(TtRef::parse(&VendorRef::new("ekey:x")).is_err());
        assert!(TtRef::parse(&VendorRef::new("")).is_err());
    }

    #[test]
    fn user_names_carry_the_label_both_ways() {
        let label = "key_01HQ3ZJ6W8K9V7T5R4P2N1M0AB";
        let name = username_for(label);
        assert_eq!(name, "key01hq3zj6w8k9v7t5r4p2n1m0ab");
        assert_eq!(
            label_from_username(&format!("mmst_{name}")).as_deref(),
            Some(label)
        );
        assert_eq!(label_from_username("someone_else"), None);
        assert_eq!(label_from_username("key_short"), None);
    }
}
