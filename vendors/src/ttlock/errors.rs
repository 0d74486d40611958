//! TTLock `errcode`s and what they mean to Lockstep.
//!
//! Codes come from TTLock's public error-code table
//! (euopen.ttlock.com/document-pages/en/cloud/errorCode). TTLock answers business errors
//! with HTTP 200 and a body `{"errcode": <n>, "errmsg": "..."}`; `errcode` 0 is success.
//! The simulator answers with the same codes, so both sides share these constants.

use crate::http_kit::{refused, CallError};
use crate::VendorError;

/// Success.
pub const OK: i64 = 0;
/// "failed or means no".
pub const FAILED: i64 = 1;
/// Invalid parameter (also what the simulator answers for a missing one).
pub const INVALID_PARAMETER: i64 = -3;
/// `client_id` does not exist.
pub const INVALID_CLIENT_ID: i64 = 10000;
/// Invalid client: wrong `client_id` or `client_secret`.
pub const INVALID_CLIENT: i64 = 10001;
/// The access token does not exist.
pub const INVALID_TOKEN: i64 = 10003;
/// The access token is invalid, expired or revoked.
pub const TOKEN_EXPIRED: i64 = 10004;
/// Wrong username or password.
pub const INVALID_ACCOUNT: i64 = 10007;
/// Invalid refresh token.
pub const INVALID_REFRESH_TOKEN: i64 = 10011;
/// Not the lock's admin.
pub const NOT_LOCK_ADMIN: i64 = 20002;
/// A user name with other than letters and digits.
pub const INVALID_USERNAME: i64 = 30002;
/// "existing registered users": the user name is taken.
pub const USER_EXISTS: i64 = 30003;
/// The password was not sent MD5-hashed.
pub const PASSWORD_NOT_MD5: i64 = 30005;
/// Too many API calls (rate limit).
pub const RATE_LIMITED: i64 = 30006;
/// Monthly API quota used up.
pub const MONTHLY_QUOTA: i64 = 30007;
/// `date` is more than five minutes away from the server's clock.
pub const DATE_SKEW: i64 = 80000;
/// TTLock's internal server error.
pub const INTERNAL: i64 = 90000;
/// The lock does not exist.
pub const LOCK_NOT_FOUND: i64 = -1003;
/// The lock holds no passcode data.
pub const NO_PASSCODE_DATA: i64 = -1007;
/// The eKey does not exist.
pub const EKEY_NOT_FOUND: i64 = -1008;
/// The IC card no longer exists.
pub const CARD_NOT_FOUND: i64 = -1021;
/// The receiver of an eKey is not a registered user.
pub const RECEIVER_NOT_REGISTERED: i64 = -4064;
/// The passcode does not exist.
pub const PASSCODE_NOT_FOUND: i64 = -2009;
/// No gateway near the lock.
pub const NO_GATEWAY: i64 = -2012;
/// Permission denied.
pub const PERMISSION_DENIED: i64 = -2018;
/// The lock is frozen.
pub const LOCK_FROZEN: i64 = -2025;
/// The passcode is too simple (sequences, repeats).
pub const PASSCODE_TOO_SIMPLE: i64 = -2032;
/// The gateway is offline.
pub const GATEWAY_OFFLINE: i64 = -3002;
/// The gateway is busy.
pub const GATEWAY_BUSY: i64 = -3003;
/// Passcode length must be 4 to 9 digits.
pub const PASSCODE_LENGTH: i64 = -3006;
/// "The same passcode already exists, please change it" (the duplicate-PIN refusal;
/// confirmed in the public error-code table).
pub const DUPLICATE_PASSCODE: i64 = -3007;
/// The lock's 250 custom passcodes are all used.
pub const PASSCODE_STORAGE_FULL: i64 = -3009;
/// A WiFi lock without network configured.
pub const WIFI_NOT_CONFIGURED: i64 = -3034;
/// A WiFi lock in power-saving mode.
pub const WIFI_POWER_SAVING: i64 = -3035;
/// The lock is offline.
pub const LOCK_OFFLINE: i64 = -3036;
/// The lock is busy.
pub const LOCK_BUSY: i64 = -3037;
/// The lock does not support the operation.
pub const UNSUPPORTED_OPERATION: i64 = -4043;
/// The lock's storage is full.
pub const STORAGE_FULL: i64 = -4056;

/// Maps a TTLock `errcode` onto Lockstep's vendor error. `errmsg` is deliberately not
/// used: details are our own fixed phrases, so nothing the vendor echoes can leak.
/// A stale token is [`CallError::StaleToken`]: fetch a new one and retry once.
pub fn classify(errcode: i64) -> CallError {
    use CallError::Vendor as Fail;
    match errcode {
        INVALID_TOKEN | TOKEN_EXPIRED => CallError::StaleToken,
        INVALID_CLIENT_ID | INVALID_CLIENT => Fail(VendorError::Auth {
            detail: "invalid client id or client secret".into(),
        }),
        INVALID_ACCOUNT | PASSWORD_NOT_MD5 => Fail(VendorError::Auth {
            detail: "invalid account username or password".into(),
        }),
        INVALID_REFRESH_TOKEN => Fail(VendorError::Auth {
            detail: "invalid refresh token".into(),
        }),
        RATE_LIMITED => Fail(VendorError::RateLimited { retry_after: None }),
        // the account's state, not a passing rate limit: held until the quota resets
        MONTHLY_QUOTA => Fail(VendorError::Auth {
            detail: "the account's monthly api quota is used up".into(),
        }),
        INTERNAL => Fail(VendorError::Unavailable {
            detail: "vendor internal error".into(),
        }),
        DUPLICATE_PASSCODE => Fail(VendorError::PinCollision),
        PASSCODE_NOT_FOUND | NO_PASSCODE_DATA | EKEY_NOT_FOUND | CARD_NOT_FOUND => {
            Fail(VendorError::NotFound)
        }
        RECEIVER_NOT_REGISTERED => Fail(refused(
            "receiver_not_registered",
            "the ekey's receiver is not a registered user",
        )),
        USER_EXISTS => Fail(refused("user_exists", "the user name is registered")),
        INVALID_USERNAME => Fail(refused(
            "invalid_username",
            "a user name takes letters and digits only",
        )),
        PASSCODE_STORAGE_FULL | STORAGE_FULL => Fail(refused(
            "storage_full",
            "the lock holds its maximum number of passcodes",
        )),
        NO_GATEWAY | WIFI_NOT_CONFIGURED => {
            Fail(refused("no_gateway", "no gateway can reach the lock"))
        }
        GATEWAY_OFFLINE => Fail(refused("gateway_offline", "the lock's gateway is offline")),
        GATEWAY_BUSY => Fail(refused("gateway_busy", "the lock's gateway is busy")),
        LOCK_OFFLINE | WIFI_POWER_SAVING => Fail(refused("lock_offline", "the lock is offline")),
        LOCK_BUSY => Fail(refused("lock_busy", "the lock is busy")),
        LOCK_NOT_FOUND => Fail(refused(
            "lock_not_found",
            "the vendor does not know the lock",
        )),
        LOCK_FROZEN => Fail(refused("lock_frozen", "the lock is frozen")),
        NOT_LOCK_ADMIN | PERMISSION_DENIED => Fail(refused(
            "permission_denied",
            "our account may not manage this lock",
        )),
        PASSCODE_LENGTH => Fail(refused("invalid_pin", "pin length not accepted")),
        PASSCODE_TOO_SIMPLE => Fail(refused("invalid_pin", "pin too simple")),
        INVALID_PARAMETER => Fail(refused(
            "invalid_parameter",
            "the vendor refused a parameter",
        )),
        DATE_SKEW => Fail(refused(
            "clock_skew",
            "our clock is more than five minutes from the vendor's",
        )),
        UNSUPPORTED_OPERATION => Fail(refused(
            "unsupported",
            "the lock does not support the operation",
        )),
        FAILED => Fail(refused("failed", "the vendor reported a failure")),
        other => Fail(VendorError::Refused {
            code: format!("errcode_{other}"),
            detail: "the vendor refused the request".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_codes_map_to_the_right_error() {
        assert_eq!(classify(TOKEN_EXPIRED), CallError::StaleToken);
        assert_eq!(classify(INVALID_TOKEN), CallError::StaleToken);
        assert_eq!(
            classify(DUPLICATE_PASSCODE),
            CallError::Vendor(VendorError::PinCollision)
        );
        assert!(matches!(
            classify(INVALID_ACCOUNT),
            CallError::Vendor(VendorError::Auth { .. })
        ));
        assert!(matches!(
            classify(RATE_LIMITED),
            CallError::Vendor(VendorError::RateLimited { retry_after: None })
        ));
        match classify(PASSCODE_STORAGE_FULL) {
            CallError::Vendor(VendorError::Refused { code, .. }) => {
                assert_eq!(code, "storage_full")
            }
            other => panic!("unexpected {other:?}"),
        }
        match classify(-9999) {
            CallError::Vendor(VendorError::Refused { code, .. }) => {
                assert_eq!(code, "errcode_-9999")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
