//! Kisi HTTP statuses and error codes and what they mean to Lockstep.
//!
//! Kisi answers errors with a proper HTTP status and a body
//! `{"code": "<6 hex>", "error": "<message>"}` (or, for 422, `{"errors": {field: [..]}}`);
//! success is 200 (create, fetch) or 204 (update, delete). Codes come from the error-code
//! table of Kisi's API description (api.kisi.io/docs); the `000401`/`000404` shape of the
//! status-echo codes is seen in a public 404 reply (`{"code":"000404","error":"The
//! endpoint does not exist..."}`) and extended to 401/403 by analogy. The simulator
//! answers with the same codes, so both sides share these constants.
//!
//! `error` messages are never copied into a [`VendorError`]: details are our own fixed
//! phrases, so nothing the vendor echoes can leak.

use std::time::Duration;

use crate::http_kit::{by_status, refused};
use crate::VendorError;

/// "Access denied." (the API key may not act on this object).
pub const ACCESS_DENIED: &str = "fcd8ef";
/// "Access denied." (older code of the same refusal).
pub const ACCESS_DENIED_LEGACY: &str = "afc496";
/// "Access disabled."
pub const ACCESS_DISABLED: &str = "fcd8ff";
/// "Wrong email address or password." (a bad login or API key).
pub const WRONG_LOGIN: &str = "afc516";
/// "An unexpected issue occured."
pub const UNEXPECTED: &str = "ffffff";
/// Status echo for 401 (reconstructed).
pub const UNAUTHORIZED: &str = "000401";
/// Status echo for 404 (seen in a public reply).
pub const NOT_FOUND: &str = "000404";
/// Status echo for 429 (reconstructed).
pub const TOO_MANY_REQUESTS: &str = "000429";

/// What a failed exchange tells us: the HTTP status, the `code` of the body if any, the
/// field names of a 422 body, and the `Retry-After` already parsed.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    /// HTTP status.
    pub status: u16,
    /// Kisi's `code`, when the body had one.
    pub code: Option<String>,
    /// Field names of a 422 `errors` object.
    pub fields: Vec<String>,
    /// `Retry-After`, when sent.
    pub retry_after: Option<Duration>,
}

/// Keeps a field name only if it looks like one (so a vendor echo cannot smuggle a value).
fn safe_field(f: &str) -> Option<&str> {
    let ok = !f.is_empty()
        && f.len() <= 40
        && f.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    ok.then_some(f)
}

/// Maps a non-success Kisi reply onto Lockstep's vendor error.
///
/// 404 is `NotFound` here; callers for whom a 404 means something else (the group of a
/// create is gone) re-map it.
pub fn classify(f: &Failure) -> VendorError {
    let code = f.code.as_deref();
    match f.status {
        401 => VendorError::Auth {
            detail: "api key refused".into(),
        },
        403 => match code {
            Some(ACCESS_DISABLED) => refused(
                "access_disabled",
                "access is disabled for this organization or user",
            ),
            _ => refused(
                "permission_denied",
                "our api key may not manage this group or user",
            ),
        },
        404 => VendorError::NotFound,
        422 => {
            let fields: Vec<&str> = f.fields.iter().filter_map(|f| safe_field(f)).collect();
            let detail = if fields.is_empty() {
                "the vendor refused the request".to_owned()
            } else {
                format!("the vendor refused fields: {}", fields.join(", "))
            };
            refused("invalid_request", detail)
        }
        // 429, 5xx, and what no body refines
        other => by_status(other, f.retry_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: u16, code: Option<&str>) -> Failure {
        Failure {
            status,
            code: code.map(str::to_owned),
            ..Failure::default()
        }
    }

    #[test]
    fn statuses_and_codes_map_to_the_right_error() {
        assert!(matches!(
            classify(&failure(401, Some(UNAUTHORIZED))),
            VendorError::Auth { .. }
        ));
        assert_eq!(
            classify(&failure(404, Some(NOT_FOUND))),
            VendorError::NotFound
        );
        assert!(classify(&failure(503, None)).is_vendor_unwell());
        let rl = classify(&Failure {
            status: 429,
            retry_after: Some(Duration::from_secs(2)),
            ..Failure::default()
        });
        assert_eq!(
            rl,
            VendorError::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        match classify(&failure(403, Some(ACCESS_DENIED))) {
            VendorError::Refused { code, .. } => assert_eq!(code, "permission_denied"),
            other => panic!("unexpected {other:?}"),
        }
        match classify(&failure(418, None)) {
            VendorError::Refused { code, .. } => assert_eq!(code, "http_418"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn validation_errors_name_fields_but_never_values() {
        let e = classify(&Failure {
            status: 422,
            fields: vec!["valid_until".into(), "secret value 1234".into()],
            ..Failure::default()
        });
        let s = format!("{e:?}");
        assert!(s.contains("valid_until"), "{s}");
        assert!(!s.contains("1234"), "{s}");
    }
}
