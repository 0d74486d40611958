//! TTLock's lock callback: the one webhook TTLock sends, read.
//!
//! TTLock posts a form (`application/x-www-form-urlencoded`) to the callback URL of the
//! developer account and expects the text `success` back:
//!
//! ```text
//! notifyType=1&lockId=<lockId>&lockMac=<mac>&records=<JSON array of records>
//! notifyType=2&gatewayId=<gatewayId>&isOnline=0|1    (a gateway went on- or offline)
//! notifyType=3&lockId=<lockId>&isOnline=0|1          (a WiFi lock went on- or offline)
//! ```
//!
//! A record (`recordType`, `success`, `username`, `keyboardPwd`, `lockDate`, ...) carries
//! the PIN or card number that opened the door and no record id, and the callback is not
//! signed. So a callback is only a doorbell: the receiver reads the lock's records back
//! from TTLock's API (`LockPort::door_events`, `/v3/lockRecord/list`, each record named by
//! its eKey user, passcode or card name) and trusts only what the vendor answers; a status
//! callback is a hint to probe the device. This module reads the form and never the
//! records' content: it counts them, and nothing of them is kept.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

/// The body TTLock expects in answer to a callback (`text/plain`).
pub const ACK: &str = "success";

/// How far back a lock-records callback's records are read: a callback follows its
/// records by seconds; the margin covers a gateway that uploads late.
pub const READ_BACK_MINUTES: i64 = 15;

/// What a callback reports, by its `notifyType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackKind {
    /// `1`: a lock uploaded records (door operations).
    LockRecords,
    /// `2` (a gateway) or `3` (a WiFi lock) went on- or offline: a hint to probe, never
    /// trusted as is.
    DeviceStatus,
    /// Anything else TTLock may send.
    Other,
}

impl CallbackKind {
    /// The label `webhook_inbox` and the webhook events carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LockRecords => "lock_records",
            Self::DeviceStatus => "device_status",
            Self::Other => "other",
        }
    }
}

/// Why a body is not a TTLock callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// The body is not a form.
    #[error("not a form-encoded TTLock callback")]
    NotAForm,
    /// No readable `lockId` (only a gateway's status may name a gateway instead).
    #[error("a TTLock callback names its lock")]
    NoLock,
}

impl CallbackError {
    /// The part of the request at fault, as the API names it.
    pub fn field(self) -> &'static str {
        match self {
            Self::NotAForm => "body",
            Self::NoLock => "lockId",
        }
    }
}

/// One callback as TTLock posts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callback {
    /// `notifyType` as sent (empty when absent).
    pub notify_type: String,
    /// What it reports.
    pub kind: CallbackKind,
    /// The lock it names (`lockId`, the device ref); `None` only for a gateway's status,
    /// which names its gateway.
    pub lock_id: Option<i64>,
    /// How many records it lists (never read: the receiver reads the records back).
    pub records: usize,
    /// The first 8 bytes of the body's SHA-256 in hex: the same callback posted again has
    /// the same digest (TTLock sends no id of its own).
    pub digest: String,
}

impl Callback {
    /// Reads a callback's body.
    pub fn parse(body: &[u8]) -> Result<Self, CallbackError> {
        let form: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|_| CallbackError::NotAForm)?;
        let field = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let notify_type = field("notifyType").unwrap_or_default().to_owned();
        let kind = match notify_type.as_str() {
            "1" => CallbackKind::LockRecords,
            "2" | "3" => CallbackKind::DeviceStatus,
            _ => CallbackKind::Other,
        };
        let lock_id = match field("lockId").and_then(|l| l.parse().ok()) {
            Some(l) => Some(l),
            // a gateway's status names the gateway, not a lock
            None if notify_type == "2" && field("gatewayId").is_some() => None,
            None => return Err(CallbackError::NoLock),
        };
        let records = field("records")
            .and_then(|r| serde_json::from_str::<Vec<serde_json::Value>>(r).ok())
            .map_or(0, |r| r.len());
        let digest = Sha256::digest(body)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            notify_type,
            kind,
            lock_id,
            records,
            digest,
        })
    }

    /// Whether a gateway's status: which locks a gateway serves is TTLock's, so every lock
    /// of the account is a candidate.
    pub fn is_gateway_status(&self) -> bool {
        self.notify_type == "2"
    }

    /// What the callback is deduped on, `None` for a status hint: it is never a duplicate
    /// (two "offline"s may be byte-identical, and a probe is idempotent). No lock id in it:
    /// that is the vendor's device reference, kept encrypted (spec 004 §5).
    pub fn dedupe_id(&self) -> Option<String> {
        (self.kind != CallbackKind::DeviceStatus).then(|| format!("callback:{}", self.digest))
    }

    /// Whether `device_ref` is the lock the callback names.
    pub fn names(&self, device_ref: &str) -> bool {
        self.lock_id
            .is_some_and(|l| device_ref == l.to_string().as_str())
    }
}

/// Where a read-back of a lock-records callback received at `now` starts.
pub fn read_back_since(now: DateTime<Utc>) -> DateTime<Utc> {
    now - Duration::minutes(READ_BACK_MINUTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock-records callback as TTLock documents it (and the simulator posts it).
    const RECORDS: &str = "notifyType=1&lockId=1001&lockMac=AA%3ABB&records=%5B%7B%22recordType%22%3A4%2C%22success%22%3A1%2C%22username%22%3A%22key_01J%22%2C%22keyboardPwd%22%3A%22123456%22%2C%22lockDate%22%3A1%7D%5D";

    #[test]
    fn a_records_callback_names_its_lock_and_counts_its_records() {
        let c = Callback::parse(RECORDS.as_bytes()).unwrap();
        assert_eq!(c.kind, CallbackKind::LockRecords);
        assert_eq!(c.kind.as_str(), "lock_records");
        assert_eq!(c.lock_id, Some(1001));
        assert!(c.names("1001") && !c.names("10011") && !c.names(" 1001"));
        assert_eq!(c.records, 1);
        assert!(!c.is_gateway_status());
        assert_eq!(c.digest.len(), 16);
        assert_eq!(c.dedupe_id(), Some(format!("callback:{}", c.digest)));
        // the same body posted again is the same callback; another is not
        let again = Callback::parse(RECORDS.as_bytes()).unwrap();
        assert_eq!(again.dedupe_id(), c.dedupe_id());
        let other = Callback::parse(RECORDS.replace("1001", "1002").as_bytes()).unwrap();
        assert_ne!(other.dedupe_id(), c.dedupe_id());
        // records that are not a JSON array count as none
        let odd = Callback::parse(b"notifyType=1&lockId=1001&records=nope").unwrap();
        assert_eq!(odd.records, 0);
    }

    #[test]
    fn status_callbacks_are_hints_never_duplicates() {
        let lock = Callback::parse(b"notifyType=3&lockId=1001&isOnline=0").unwrap();
        assert_eq!(lock.kind, CallbackKind::DeviceStatus);
        assert_eq!(lock.lock_id, Some(1001));
        assert!(!lock.is_gateway_status());
        assert_eq!(lock.dedupe_id(), None);
        // a gateway's status names the gateway; a lock id, when sent, is still read
        let gateway = Callback::parse(b"notifyType=2&gatewayId=77&isOnline=1").unwrap();
        assert_eq!(gateway.kind, CallbackKind::DeviceStatus);
        assert!(gateway.is_gateway_status());
        assert_eq!(gateway.lock_id, None);
        assert!(!gateway.names("0"));
        let with_lock = Callback::parse(b"notifyType=2&gatewayId=77&lockId=9").unwrap();
        assert_eq!(with_lock.lock_id, Some(9));
        let other = Callback::parse(b"notifyType=9&lockId=1001").unwrap();
        assert_eq!(other.kind, CallbackKind::Other);
        assert_eq!(other.kind.as_str(), "other");
        assert!(other.dedupe_id().is_some());
    }

    #[test]
    fn a_callback_without_its_lock_is_refused_naming_the_field() {
        for body in [
            "notifyType=1&records=%5B%5D",
            "notifyType=1&lockId=abc",
            "notifyType=3&isOnline=0",
            // only a gateway's status may name a gateway instead
            "notifyType=1&gatewayId=77",
            "notifyType=2&isOnline=0",
            "",
        ] {
            let e = Callback::parse(body.as_bytes()).unwrap_err();
            assert_eq!(e, CallbackError::NoLock, "{body:?}");
            assert_eq!(e.field(), "lockId");
            assert_eq!(e.to_string(), "a TTLock callback names its lock");
        }
        assert_eq!(CallbackError::NotAForm.field(), "body");
    }

    #[test]
    fn records_are_read_back_from_fifteen_minutes_before() {
        use chrono::TimeZone;
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        assert_eq!(
            read_back_since(now),
            Utc.with_ymd_and_hms(2026, 12, 1, 11, 45, 0).unwrap()
        );
    }
}
