//! Salto KS HTTP statuses and `ErrorCode`s and what they mean to Lockstep.
//!
//! The Connect API answers errors with an HTTP status and a body `{ErrorCode, Message}`
//! (the v2 routes answer RFC 7807 problem bodies instead; the adapter uses no v2 route).
//! The identity server answers OAuth errors (`{error, error_description}`) with 400/401.
//! Salto does not publish its `ErrorCode` table: the status decides the class of error,
//! and the few codes below refine it. Codes marked "reconstructed" are the simulator's
//! choice, not Salto's documented values; the adapter never depends on them alone (a 409
//! on the PIN route is a PIN collision whatever its code).

use std::time::Duration;

use crate::http_kit::{by_status, refused, CallError};
use crate::VendorError;

/// The one-time password of a remote opening was refused (measured: 400 or 403).
pub const OTP_REJECTED: i64 = 3102;
/// Reconstructed: a parameter was refused (400).
pub const INVALID_PARAMETER: i64 = 1000;
/// Reconstructed: the object does not exist (404).
pub const NOT_FOUND: i64 = 1100;
/// Reconstructed: the PIN is already used by another user of the site (409).
pub const PIN_IN_USE: i64 = 1301;
/// Reconstructed: PIN codes are not enabled on the site (KS Pro subscription) (403/409).
pub const PIN_NOT_ENABLED: i64 = 1302;
/// Reconstructed: the site's user licences are all used (409).
pub const LICENCES_EXHAUSTED: i64 = 1401;
/// Reconstructed: an internal error (500).
pub const INTERNAL: i64 = 9999;

/// Maps a Connect API error (status, and `ErrorCode` when the body had one) onto
/// Lockstep's vendor error; a 401 is our stale token ([`CallError::StaleToken`]: fetch a
/// new one, retry once). `Message` is deliberately not used: details are our own fixed
/// phrases, so nothing the vendor echoes (a PIN, a name) can leak. 429 and 5xx say the
/// vendor is unwell whatever the body holds.
pub fn classify(
    status: u16,
    error_code: Option<i64>,
    on_pin_route: bool,
    retry_after: Option<Duration>,
) -> CallError {
    use CallError::Vendor as Fail;
    match (status, error_code) {
        (429 | 500..=599, _) => Fail(by_status(status, retry_after)),
        (401, _) => CallError::StaleToken,
        (_, Some(PIN_IN_USE)) => Fail(VendorError::PinCollision),
        (409, _) if on_pin_route => Fail(VendorError::PinCollision),
        (_, Some(PIN_NOT_ENABLED)) => Fail(refused(
            "pin_not_enabled",
            "pin codes are not enabled on the site",
        )),
        (_, Some(LICENCES_EXHAUSTED)) => {
            Fail(refused("storage_full", "the site has no user licence left"))
        }
        (_, Some(OTP_REJECTED)) => {
            Fail(refused("otp_rejected", "the one-time password was refused"))
        }
        (403, _) => Fail(VendorError::Auth {
            detail: "our system user lacks a right on the site".into(),
        }),
        (404 | 410, _) => Fail(VendorError::NotFound),
        (400 | 422, _) => Fail(refused(
            "invalid_parameter",
            "the vendor refused a parameter",
        )),
        (409, _) => Fail(refused("conflict", "the vendor reported a conflict")),
        (other, Some(code)) => Fail(refused(
            &format!("http_{other}_errorcode_{code}"),
            "the vendor refused the request",
        )),
        (other, None) => Fail(by_status(other, None)),
    }
}

/// Maps an identity-server refusal (OAuth `error`) of our token request.
pub fn classify_token_error(status: u16, oauth_error: Option<&str>) -> VendorError {
    let detail = match oauth_error {
        Some("invalid_client") | Some("unauthorized_client") => {
            "invalid client id or client secret"
        }
        Some("invalid_grant") => "invalid system user or password",
        Some("invalid_scope") => "scope not granted to the client",
        Some("unsupported_grant_type") => "password grant not enabled for the client",
        _ if status == 401 => "invalid client id or client secret",
        _ => "token request refused",
    };
    VendorError::Auth {
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_map_to_the_right_error() {
        assert_eq!(classify(401, None, false, None), CallError::StaleToken);
        assert_eq!(
            classify(404, Some(NOT_FOUND), false, None),
            CallError::Vendor(VendorError::NotFound)
        );
        assert_eq!(
            classify(409, None, true, None),
            CallError::Vendor(VendorError::PinCollision)
        );
        assert_eq!(
            classify(409, Some(PIN_IN_USE), true, None),
            CallError::Vendor(VendorError::PinCollision)
        );
        assert!(matches!(
            classify(403, None, false, None),
            CallError::Vendor(VendorError::Auth { .. })
        ));
        match classify(400, Some(INVALID_PARAMETER), false, None) {
            CallError::Vendor(VendorError::Refused { code, .. }) => {
                assert_eq!(code, "invalid_parameter")
            }
            other => panic!("unexpected {other:?}"),
        }
        match classify(418, None, false, None) {
            CallError::Vendor(VendorError::Refused { code, .. }) => assert_eq!(code, "http_418"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            classify_token_error(400, Some("invalid_grant")),
            VendorError::Auth { .. }
        ));
    }
}
