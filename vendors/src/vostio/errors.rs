//! Vostio HTTP statuses and error codes and what they mean to Lockstep.
//!
//! Reconstructed, not from public docs: Vostio's error catalogue is not public. The token
//! endpoint's errors are RFC 6749 §5.2 (`{"error": "invalid_client"}` with HTTP 400/401);
//! API errors are assumed to be HTTP 4xx/5xx with a flat body `{code, message}` whose
//! `code` is one of the constants below. The simulator answers with the same codes, so
//! both sides share them. `message` is never read: details are our own fixed phrases, so
//! nothing the vendor echoes (a key id, a token) can leak into an error.

use std::time::Duration;

use crate::http_kit::{by_status, refused, CallError};
use crate::VendorError;

/// The key does not exist (or no longer exists) in the environment.
pub const KEY_NOT_FOUND: &str = "key_not_found";
/// The door is not part of the environment.
pub const DOOR_NOT_FOUND: &str = "door_not_found";
/// The environment does not exist.
pub const ENVIRONMENT_NOT_FOUND: &str = "environment_not_found";
/// A body field is missing or malformed.
pub const VALIDATION_FAILED: &str = "validation_failed";
/// `validFrom` is not before `validTo`.
pub const INVALID_VALIDITY: &str = "invalid_validity";
/// The key type is unknown or not licensed in the environment (no mobile-key
/// subscription, PINs, ...).
pub const KEY_TYPE_NOT_SUPPORTED: &str = "key_type_not_supported";
/// The door holds as many keys as it can.
pub const KEY_LIMIT_REACHED: &str = "key_limit_reached";
/// An online (Zigbee) door did not answer.
pub const DOOR_OFFLINE: &str = "door_offline";
/// The key is being encoded or changed by another request.
pub const KEY_BUSY: &str = "key_busy";
/// The bearer token is missing, unknown or expired (HTTP 401).
pub const UNAUTHORIZED: &str = "unauthorized";
/// The client may not use this environment (HTTP 403).
pub const FORBIDDEN: &str = "forbidden";
/// Too many requests (HTTP 429).
pub const RATE_LIMITED: &str = "rate_limited";
/// Vostio's internal error (HTTP 500).
pub const INTERNAL: &str = "internal_error";
/// Vostio is down (HTTP 503).
pub const UNAVAILABLE: &str = "service_unavailable";

/// OAuth2 `error` values of the token endpoint (RFC 6749 §5.2).
pub mod oauth {
    /// Unknown client or wrong secret.
    pub const INVALID_CLIENT: &str = "invalid_client";
    /// The grant is invalid.
    pub const INVALID_GRANT: &str = "invalid_grant";
    /// The client may not use this grant type.
    pub const UNAUTHORIZED_CLIENT: &str = "unauthorized_client";
    /// The grant type is not supported.
    pub const UNSUPPORTED_GRANT_TYPE: &str = "unsupported_grant_type";
    /// The scope is not allowed.
    pub const INVALID_SCOPE: &str = "invalid_scope";
    /// A parameter is missing or repeated.
    pub const INVALID_REQUEST: &str = "invalid_request";
}

/// Maps a failed API call (HTTP status, the body's `code` when it had one) onto
/// Lockstep's vendor error.
///
/// A 404 is `NotFound` only when Vostio says the key is gone (`key_not_found`) or the
/// status is 410: a bare 404 (a wrong base URL, a proxy, an unknown environment) must not
/// read as "already revoked", or a revoke would report success while the key still opens
/// the door.
pub fn classify(status: u16, code: Option<&str>, retry_after: Option<Duration>) -> CallError {
    use CallError::Vendor as Fail;
    match (status, code) {
        (_, Some(RATE_LIMITED)) => Fail(VendorError::RateLimited { retry_after }),
        (429 | 500..=599, _) => Fail(by_status(status, retry_after)),
        (401, _) => CallError::StaleToken,
        (403, _) => Fail(VendorError::Auth {
            detail: "client not allowed in this environment".into(),
        }),
        (410, _) | (_, Some(KEY_NOT_FOUND)) => Fail(VendorError::NotFound),
        (_, Some(DOOR_NOT_FOUND)) => Fail(refused(
            "lock_not_found",
            "the vendor does not know the door",
        )),
        (_, Some(ENVIRONMENT_NOT_FOUND)) => Fail(refused(
            "environment_not_found",
            "the vendor does not know the configured environment",
        )),
        (_, Some(INVALID_VALIDITY)) => Fail(refused(
            "invalid_validity",
            "the vendor refused the validity period",
        )),
        (_, Some(KEY_TYPE_NOT_SUPPORTED)) => Fail(refused(
            "unsupported_kind",
            "the environment does not hold this kind of key",
        )),
        (_, Some(KEY_LIMIT_REACHED)) => Fail(refused(
            "storage_full",
            "the door holds its maximum number of keys",
        )),
        (_, Some(DOOR_OFFLINE)) => Fail(refused("lock_offline", "the door is offline")),
        (_, Some(KEY_BUSY)) => Fail(refused("lock_busy", "the key is being changed")),
        (_, Some(VALIDATION_FAILED)) | (400 | 422, _) => Fail(refused(
            "invalid_parameter",
            "the vendor refused a parameter",
        )),
        (404, _) => Fail(refused(
            "http_404",
            "the vendor answered not found without saying what",
        )),
        (409, _) => Fail(refused("conflict", "the vendor reported a conflict")),
        (other, _) => Fail(by_status(other, None)),
    }
}

/// Maps a token request refused (HTTP status, RFC 6749 `error`); 429 and 5xx are the
/// vendor's state, read before this (`http_kit::Transport::grant`).
pub fn classify_token(status: u16, error: Option<&str>) -> VendorError {
    match (status, error) {
        (_, Some(oauth::INVALID_CLIENT)) | (401, _) => VendorError::Auth {
            detail: "invalid client id or client secret".into(),
        },
        (_, Some(oauth::UNAUTHORIZED_CLIENT | oauth::INVALID_GRANT)) => VendorError::Auth {
            detail: "client not allowed the client-credentials grant".into(),
        },
        (_, Some(oauth::INVALID_SCOPE)) => VendorError::Auth {
            detail: "scope refused".into(),
        },
        (403, _) => VendorError::Auth {
            detail: "token endpoint refused our client".into(),
        },
        (other, _) => VendorError::Refused {
            code: format!("token_http_{other}"),
            detail: "the token endpoint refused the request".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_map_to_the_right_error() {
        let secs = Some(Duration::from_secs(2));
        assert_eq!(
            classify(429, None, secs),
            CallError::Vendor(VendorError::RateLimited { retry_after: secs })
        );
        assert_eq!(
            classify(401, Some(UNAUTHORIZED), None),
            CallError::StaleToken
        );
        assert!(matches!(
            classify(403, Some(FORBIDDEN), None),
            CallError::Vendor(VendorError::Auth { .. })
        ));
        assert_eq!(
            classify(404, Some(KEY_NOT_FOUND), None),
            CallError::Vendor(VendorError::NotFound)
        );
        assert_eq!(
            classify(410, None, None),
            CallError::Vendor(VendorError::NotFound)
        );
        assert!(matches!(
            classify(503, None, None),
            CallError::Vendor(VendorError::Unavailable { .. })
        ));
        let code_of = |a: CallError| match a {
            CallError::Vendor(VendorError::Refused { code, .. }) => code,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(code_of(classify(404, None, None)), "http_404");
        assert_eq!(
            code_of(classify(404, Some(DOOR_NOT_FOUND), None)),
            "lock_not_found"
        );
        assert_eq!(
            code_of(classify(422, Some(KEY_TYPE_NOT_SUPPORTED), None)),
            "unsupported_kind"
        );
        assert_eq!(
            code_of(classify(422, Some(DOOR_OFFLINE), None)),
            "lock_offline"
        );
        assert_eq!(
            code_of(classify(400, Some("whatever"), None)),
            "invalid_parameter"
        );
        assert_eq!(code_of(classify(418, None, None)), "http_418");
    }

    #[test]
    fn token_errors_are_auth_errors() {
        assert!(matches!(
            classify_token(401, Some(oauth::INVALID_CLIENT)),
            VendorError::Auth { .. }
        ));
        assert!(matches!(
            classify_token(400, Some(oauth::INVALID_CLIENT)),
            VendorError::Auth { .. }
        ));
        assert!(matches!(
            classify_token(403, None),
            VendorError::Auth { .. }
        ));
    }
}
