//! Brivo HTTP statuses and error bodies, and what they mean to Lockstep.
//!
//! Brivo answers errors with the HTTP status and a body `{"code": <status>, "message":
//! "..."}` (apidocs.brivo.com, "Response Codes"); the OAuth server answers with
//! `{"error": ..., "error_description": ...}`; the Mashery gateway in front of the API
//! answers a missing or wrong `api-key` with 403 and `<h1>Developer Inactive</h1>`.
//!
//! Brivo's messages are read only to tell apart refusals that share a status (a duplicate
//! PIN from another bad request); details of the resulting errors are our own fixed
//! phrases, so nothing the vendor echoes can leak.

use std::time::Duration;

use crate::http_kit::{by_status, refused, CallError};
use crate::VendorError;

/// Message of the documented 403 for an invalid `api-key` header (HTML body).
pub const DEVELOPER_INACTIVE: &str = "Developer Inactive";
/// Mashery's per-key rate limit refusal (reconstructed: Mashery documents "Developer Over
/// Rate" and "Developer Over Qps"; Brivo does not document it).
pub const DEVELOPER_OVER_RATE: &str = "Developer Over";
/// Message of the simulator's (and, reconstructed, Brivo's) duplicate-PIN refusal (400).
pub const DUPLICATE_PIN_MESSAGE: &str = "Duplicate PIN found";
/// Message of the simulator's (reconstructed) duplicate-`externalId` refusal (400).
pub const DUPLICATE_EXTERNAL_ID_MESSAGE: &str = "A user with this externalId already exists";

/// Maps a non-success answer of the API (`api.brivo.com/v1/api`) onto Lockstep's vendor
/// error; a 401 is our stale token ([`CallError::StaleToken`]: fetch a new one, retry
/// once). `body` is the raw body (JSON or the gateway's HTML).
pub fn classify_api(status: u16, body: &[u8], retry_after: Option<Duration>) -> CallError {
    use CallError::Vendor as Fail;
    let text = String::from_utf8_lossy(body).to_lowercase();
    match status {
        401 => CallError::StaleToken,
        403 if text.contains(&DEVELOPER_INACTIVE.to_lowercase()) => Fail(VendorError::Auth {
            detail: "api key rejected".into(),
        }),
        403 if text.contains(&DEVELOPER_OVER_RATE.to_lowercase()) => {
            Fail(VendorError::RateLimited { retry_after: None })
        }
        403 => Fail(refused(
            "permission_denied",
            "our administrator may not perform this action",
        )),
        404 => Fail(VendorError::NotFound),
        400 if is_duplicate_pin(&text) => Fail(VendorError::PinCollision),
        400 if text.contains("externalid") || text.contains("external id") => Fail(refused(
            "duplicate_label",
            "a user with this external id already exists",
        )),
        400 => Fail(refused(
            "invalid_request",
            "the vendor refused the request criteria",
        )),
        412 => Fail(refused("lock_offline", "the access point is not connected")),
        415 => Fail(refused(
            "unsupported_media_type",
            "the vendor refused the content type",
        )),
        // 596 is Mashery's "Service Not Found": a wrong method or path on our side.
        596 => Fail(refused("service_not_found", "unknown vendor endpoint")),
        // 429, 5xx, and what no body refines
        s => Fail(by_status(s, retry_after)),
    }
}

/// Maps a non-success answer of the OAuth server (`auth.brivo.com/oauth/token`).
pub fn classify_token(status: u16, body: &[u8]) -> VendorError {
    let text = String::from_utf8_lossy(body).to_lowercase();
    match status {
        400 | 401 if text.contains("invalid_grant") => VendorError::Auth {
            detail: "administrator username or password rejected".into(),
        },
        400 | 401 => VendorError::Auth {
            detail: "client id or client secret rejected".into(),
        },
        403 if text.contains(&DEVELOPER_OVER_RATE.to_lowercase()) => {
            VendorError::RateLimited { retry_after: None }
        }
        403 => VendorError::Auth {
            detail: "api key rejected".into(),
        },
        s if s >= 500 => VendorError::Unavailable {
            detail: format!("http status {s}"),
        },
        s => VendorError::Refused {
            code: format!("http_{s}"),
            detail: "unexpected http status from the token endpoint".into(),
        },
    }
}

fn is_duplicate_pin(lowercase_body: &str) -> bool {
    lowercase_body.contains("pin")
        && (lowercase_body.contains("duplicate")
            || lowercase_body.contains("already")
            || lowercase_body.contains("in use"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_statuses_map_to_the_right_error() {
        assert_eq!(
            classify_api(404, br#"{"code":404,"message":"User not found"}"#, None),
            CallError::Vendor(VendorError::NotFound)
        );
        assert_eq!(
            classify_api(401, br#"{"error":"invalid_token"}"#, None),
            CallError::StaleToken
        );
        assert!(matches!(
            classify_api(403, b"<h1>Developer Inactive</h1>", None),
            CallError::Vendor(VendorError::Auth { .. })
        ));
        assert!(matches!(
            classify_api(403, br#"{"code":403,"message":"You are not allowed to perform that action"}"#, None),
            CallError::Vendor(VendorError::Refused { code, .. }) if code == "permission_denied"
        ));
        assert_eq!(
            classify_api(
                400,
                br#"{"code":400,"message":"Duplicate PIN found"}"#,
                None
            ),
            CallError::Vendor(VendorError::PinCollision)
        );
        assert!(matches!(
            classify_api(400, br#"{"code":400,"message":"Invalid criteria provided"}"#, None),
            CallError::Vendor(VendorError::Refused { code, .. }) if code == "invalid_request"
        ));
        assert!(matches!(
            classify_api(503, br#"{"code":503,"message":"x"}"#, None),
            CallError::Vendor(VendorError::Unavailable { .. })
        ));
        assert!(matches!(
            classify_token(
                401,
                br#"{"error":"invalid_grant","error_description":"Bad credentials"}"#
            ),
            VendorError::Auth { .. }
        ));
    }
}
