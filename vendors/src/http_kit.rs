//! What every HTTP lock-vendor adapter does the same way, written once (issue 14):
//!
//! - [`Transport`]: one `reqwest` client with the adapter's call timeout, every request
//!   through the account's [`RateGate`], the reply read whole, and a transport failure or a
//!   timeout mapped to `Unavailable` without its text (a URL may carry an access token);
//! - [`by_status`]: what an HTTP status means when the vendor's body adds nothing (429 rate
//!   limited with its `Retry-After`, 5xx unavailable, 401/403 our credentials, anything
//!   else a refusal named after the status);
//! - [`TokenCache`]: an OAuth-style bearer token, fetched through the adapter's
//!   [`TokenEndpoint`], used until shortly before it expires on the adapter's clock, and
//!   fetched again once when the vendor calls it stale;
//! - [`WireError`]: a vendor body we could not read, naming the field, never its value.
//!
//! What stays in a vendor's folder is what is the vendor's own: its URLs and request
//! shapes, how its token endpoint is asked (the grant, where the client secret goes), and
//! how its error bodies and codes refine a status (`<vendor>/errors.rs`; TTLock answers
//! HTTP 200 with an `errcode`, Salto `{ErrorCode}`, Vostio `{code}`, Kisi `{code}` and the
//! fields of a 422, Brivo a message or its gateway's HTML).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lockstep_domain::Clock;
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::rate::RateGate;
use crate::secrets::Secret;
use crate::VendorError;

/// Why one HTTP exchange of an adapter failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The vendor refused the access token (HTTP 401, TTLock errcode 10003/10004): fetch
    /// a new token and retry once.
    StaleToken,
    /// Anything else.
    Vendor(VendorError),
}

impl From<VendorError> for CallError {
    fn from(e: VendorError) -> Self {
        Self::Vendor(e)
    }
}

/// A vendor body we could not read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed vendor body: {field}: {reason}")]
pub struct WireError {
    /// Which field (or `body`).
    pub field: &'static str,
    /// What is wrong (never the value itself).
    pub reason: &'static str,
}

impl WireError {
    /// A body that is not the JSON the route answers.
    pub const UNEXPECTED_SHAPE: Self = Self {
        field: "body",
        reason: "unexpected shape",
    };
}

/// A body we could not read says the vendor is unwell (not this request's fault).
impl From<WireError> for VendorError {
    fn from(w: WireError) -> Self {
        Self::Unavailable {
            detail: w.to_string(),
        }
    }
}

/// A refusal with a stable code and one of our own fixed phrases (never the vendor's text).
pub(crate) fn refused(code: &str, detail: impl Into<String>) -> VendorError {
    VendorError::Refused {
        code: code.to_owned(),
        detail: detail.into(),
    }
}

/// What a non-success HTTP status means when the vendor's body adds nothing: 429 is the
/// rate limit (with the reply's `Retry-After`), 5xx the vendor unwell, 401 and 403 our
/// credentials, anything else a refusal named `http_<status>`. A bare 404 is *not*
/// `NotFound` here: a wrong base URL or a proxy answers it too, and a revoke must not read
/// it as "already gone"; a vendor whose routes answer 404 for a missing object says so in
/// its `errors.rs`.
pub fn by_status(status: u16, retry_after: Option<Duration>) -> VendorError {
    match status {
        429 => VendorError::RateLimited { retry_after },
        500..=599 => VendorError::Unavailable {
            detail: format!("http status {status}"),
        },
        401 | 403 => VendorError::Auth {
            detail: format!("http status {status}"),
        },
        s => refused(&format!("http_{s}"), "unexpected http status"),
    }
}

/// One reply, read whole. No `Debug`: a body may carry a PIN.
pub(crate) struct Reply {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The reply's headers.
    pub(crate) headers: HeaderMap,
    /// `Retry-After` of a failed reply, on the adapter's clock.
    pub(crate) retry_after: Option<Duration>,
    /// The body (best effort, maybe empty, for a failed reply).
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// Whether the status is 2xx.
    pub(crate) fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// A success without a body (204, or nothing but whitespace).
    pub(crate) fn is_empty(&self) -> bool {
        self.status == StatusCode::NO_CONTENT || self.body.iter().all(u8::is_ascii_whitespace)
    }
}

/// The `LockPort` methods an HTTP adapter answers from its config and its [`Transport`]
/// alone (written inside `impl LockPort for …`, on an adapter with `config` and
/// `net: Transport` fields): which vendor, the account key (`account: base / who`, two
/// fields of the config; an adapter whose account needs more writes `account` itself),
/// the account's rate gate, and what it can do, named by the [`crate::LockCapabilities`]
/// fields that are true (the others are false).
macro_rules! http_port_basics {
    (vendor: $vendor:ident, account: $base:ident / $($who:ident).+, can: [$($cap:ident),* $(,)?] $(,)?) => {
        fn account(&self) -> String {
            self.net.account(&self.config.$base, &self.config.$($who).+)
        }

        $crate::http_kit::http_port_basics!(vendor: $vendor, can: [$($cap),*]);
    };
    (vendor: $vendor:ident, can: [$($cap:ident),* $(,)?] $(,)?) => {
        fn vendor(&self) -> lockstep_domain::VendorCode {
            lockstep_domain::VendorCode::$vendor
        }

        fn rate_gate(&self) -> &$crate::rate::RateGate {
            self.net.gate()
        }

        fn capabilities(&self) -> $crate::LockCapabilities {
            $crate::LockCapabilities {
                $($cap: true,)*
                ..$crate::LockCapabilities::default()
            }
        }
    };
}
pub(crate) use http_port_basics;

/// One adapter's way to its vendor: the HTTP client, the adapter's clock and the account's
/// [`RateGate`] (installed by the runtime, DESIGN §6).
pub(crate) struct Transport {
    vendor: &'static str,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    gate: RateGate,
}

impl Transport {
    /// A transport whose every call (connect included) gives up after `call_timeout`.
    /// Fails only if the HTTP client cannot be built.
    pub(crate) fn new(
        vendor: &'static str,
        call_timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, VendorError> {
        let http = reqwest::Client::builder()
            .timeout(call_timeout)
            .connect_timeout(call_timeout)
            .build()
            .map_err(|_| VendorError::Unavailable {
                detail: "http client could not be built".into(),
            })?;
        Ok(Self {
            vendor,
            http,
            clock,
            gate: RateGate::default(),
        })
    }

    /// The key of the vendor account this transport calls as (`LockPort::account`):
    /// `<vendor>|<base url>|<who>`, `who` naming the account without a secret.
    pub(crate) fn account(&self, base_url: &str, who: &str) -> String {
        format!("{}|{base_url}|{who}", self.vendor)
    }

    /// The client, to build requests with.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Now, on the adapter's clock.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The account's rate gate.
    pub(crate) fn gate(&self) -> &RateGate {
        &self.gate
    }

    /// Sends one request under the account's rate gate and reads the reply whole. A
    /// transport failure, a timeout or an unreadable success body is `Unavailable`; the
    /// body of a failed reply is read best effort (a proxy's 502 page may break off).
    pub(crate) async fn send(
        &self,
        op: &'static str,
        rb: RequestBuilder,
    ) -> Result<Reply, VendorError> {
        let resp = self
            .gate
            .send(self.clock.as_ref(), rb)
            .await
            .map_err(|e| self.transport(op, &e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if status.is_success() {
            let body = resp.bytes().await.map_err(|e| self.transport(op, &e))?;
            return Ok(Reply {
                status,
                headers,
                retry_after: None,
                body: body.to_vec(),
            });
        }
        let retry_after = crate::rate::retry_after(&headers, self.clock.now());
        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Ok(Reply {
            status,
            headers,
            retry_after,
            body,
        })
    }

    /// Maps a transport error without its text (its URL may carry the access token).
    fn transport(&self, op: &'static str, e: &reqwest::Error) -> VendorError {
        let detail = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_body() || e.is_decode() {
            "reply body could not be read"
        } else {
            "transport error"
        };
        warn!(vendor = self.vendor, op, detail, "vendor call failed");
        VendorError::Unavailable {
            detail: detail.into(),
        }
    }

    /// Logs the failure of `op` once and returns it: at warn when the vendor or our
    /// account is unwell (429, 5xx, credentials), at debug for this request's refusal.
    pub(crate) fn failed(
        &self,
        op: &'static str,
        status: StatusCode,
        e: VendorError,
    ) -> VendorError {
        let kind = e.metric_label();
        if e.is_vendor_unwell() || e.is_account_level() {
            warn!(
                vendor = self.vendor,
                op,
                status = status.as_u16(),
                kind,
                "vendor call failed"
            );
        } else {
            debug!(
                vendor = self.vendor,
                op,
                status = status.as_u16(),
                kind,
                "vendor refused the request"
            );
        }
        e
    }

    /// Reads a JSON body as `T`; anything else is a malformed reply (`Unavailable`).
    pub(crate) fn parse<T: DeserializeOwned>(
        &self,
        op: &'static str,
        body: &[u8],
    ) -> Result<T, VendorError> {
        serde_json::from_slice(body).map_err(|_| {
            warn!(vendor = self.vendor, op, "malformed vendor reply");
            WireError::UNEXPECTED_SHAPE.into()
        })
    }

    /// Asks an RFC 6749 token endpoint for a token with the request `rb` (grant and client
    /// authentication are the vendor's). A 429 or 5xx is the vendor's state; any other
    /// refusal is read by the vendor's `refusal` (its OAuth error body).
    pub(crate) async fn grant(
        &self,
        rb: RequestBuilder,
        refusal: impl FnOnce(u16, &[u8]) -> VendorError,
    ) -> Result<Grant, VendorError> {
        let op = "token";
        let reply = self.send(op, rb).await?;
        if !reply.is_success() {
            let status = reply.status.as_u16();
            let e = match status {
                429 | 500..=599 => by_status(status, reply.retry_after),
                _ => refusal(status, &reply.body),
            };
            return Err(self.failed(op, reply.status, e));
        }
        let granted: Rfc6749Token = self.parse(op, &reply.body)?;
        Ok(Grant {
            access_token: Secret::new(granted.access_token),
            expires_in: granted.expires_in,
        })
    }
}

/// The fields of a successful RFC 6749 §5.1 token reply the adapters read (the vendor's
/// full reply is its `wire::TokenResponse`).
#[derive(Deserialize)]
struct Rfc6749Token {
    access_token: String,
    expires_in: i64,
}

/// A bearer token as a vendor's token endpoint granted it.
pub(crate) struct Grant {
    /// The token.
    pub(crate) access_token: Secret,
    /// Its lifetime in seconds.
    pub(crate) expires_in: i64,
}

/// Where an adapter gets a new token.
pub(crate) trait TokenEndpoint: Sync {
    /// Asks the vendor's token endpoint for a new token.
    fn fetch_token(&self) -> impl Future<Output = Result<Grant, VendorError>> + Send;

    /// The secret a cached token must have been fetched with to be used still (TTLock: the
    /// client secret as it is now, so a rotated secret is used at once); `None`: any.
    fn token_key(&self) -> Result<Option<Secret>, VendorError> {
        Ok(None)
    }
}

struct CachedToken {
    value: Secret,
    refresh_at: DateTime<Utc>,
    fetched_with: Option<Secret>,
}

/// An adapter's bearer token (see the module's docs).
#[derive(Default)]
pub(crate) struct TokenCache(Mutex<Option<CachedToken>>);

impl TokenCache {
    /// The cached token, or a fresh one when none is cached, it is about to expire on the
    /// adapter's clock, or it was fetched with another key than `endpoint`'s current one.
    async fn token<E: TokenEndpoint>(
        &self,
        net: &Transport,
        endpoint: &E,
    ) -> Result<Secret, VendorError> {
        let mut slot = self.0.lock().await;
        let key = endpoint.token_key()?;
        if let Some(t) = slot.as_ref() {
            if net.now() < t.refresh_at && t.fetched_with == key {
                return Ok(t.value.clone());
            }
        }
        let grant = endpoint.fetch_token().await?;
        let lifetime = grant.expires_in.max(0);
        // Refresh a little before the end: a tenth of the lifetime, at most five minutes.
        let margin = (lifetime / 10).min(300);
        let refresh_at = net.now() + chrono::Duration::seconds(lifetime - margin);
        debug!(
            vendor = net.vendor,
            expires_in = lifetime,
            "access token fetched"
        );
        let value = grant.access_token;
        *slot = Some(CachedToken {
            value: value.clone(),
            refresh_at,
            fetched_with: key,
        });
        Ok(value)
    }

    /// Forgets `stale` unless another task already replaced it.
    async fn forget(&self, stale: &Secret) {
        let mut slot = self.0.lock().await;
        if slot.as_ref().is_some_and(|t| &t.value == stale) {
            *slot = None;
        }
    }

    /// One call of `op` with the token; when the vendor calls the token stale, it is
    /// forgotten, a new one fetched and the call made once more. A fresh token refused is
    /// `Auth`.
    pub(crate) async fn authed<T, E, C, Fut>(
        &self,
        net: &Transport,
        endpoint: &E,
        op: &'static str,
        call: C,
    ) -> Result<T, VendorError>
    where
        E: TokenEndpoint,
        C: Fn(&Secret) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let mut refreshed = false;
        loop {
            let token = self.token(net, endpoint).await?;
            match call(&token).await {
                Ok(t) => return Ok(t),
                Err(CallError::Vendor(e)) => return Err(e),
                Err(CallError::StaleToken) if !refreshed => {
                    debug!(
                        vendor = net.vendor,
                        op, "access token refused, fetching a new one"
                    );
                    self.forget(&token).await;
                    refreshed = true;
                }
                Err(CallError::StaleToken) => {
                    warn!(vendor = net.vendor, op, "fresh access token refused");
                    return Err(VendorError::Auth {
                        detail: "fresh access token refused".into(),
                    });
                }
            }
        }
    }
}

/// The result of deleting a credential at the vendor, where already gone is success
/// (`LockPort::revoke` is idempotent).
pub(crate) fn gone_is_ok(
    vendor: &'static str,
    what: &'static str,
    res: Result<(), VendorError>,
) -> Result<(), VendorError> {
    match res {
        Ok(()) => {
            debug!(vendor, what, "credential deleted");
            Ok(())
        }
        Err(VendorError::NotFound) => {
            debug!(vendor, what, "credential already gone");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The OAuth 2.0 error body (RFC 6749 §5.2) of a token endpoint, e.g.
/// `{"error":"invalid_grant","error_description":"Bad credentials"}`: Brivo's, Salto's and
/// Vostio's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuthError {
    /// `invalid_client`, `invalid_grant`, `unauthorized_client`, `unsupported_grant_type`,
    /// `invalid_scope`, `invalid_request`, ...
    pub error: String,
    /// Human text (never read by the adapters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_alone_says_unwell_credentials_or_a_named_refusal() {
        let secs = Some(Duration::from_secs(2));
        assert_eq!(
            by_status(429, secs),
            VendorError::RateLimited { retry_after: secs }
        );
        assert_eq!(
            by_status(503, None),
            VendorError::Unavailable {
                detail: "http status 503".into()
            }
        );
        assert!(by_status(401, None).is_account_level());
        assert!(by_status(403, None).is_account_level());
        // a bare 404 is not "already gone"
        assert!(matches!(
            by_status(404, None),
            VendorError::Refused { code, .. } if code == "http_404"
        ));
    }
}
