//! What the vendors' signed webhooks share: an HMAC-SHA256 tag over a delivery's parts,
//! carried in hex, compared in constant time, and a replay window on the sender's
//! timestamp. Each vendor's module (`kisi::webhook`, `salto::webhook`, `vostio::webhook`,
//! `brivo::webhook`) says which parts are signed and where the tag and the timestamp travel.
//!
//! Secrets are only ever an argument here: nothing in this module logs or formats one.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signature's timestamp may be from the receiver's clock, seconds.
pub const TOLERANCE_SECONDS: i64 = 300;

/// Why a delivery is not authentic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header is missing or unreadable.
    #[error("signature headers missing or malformed")]
    Malformed,
    /// Signed too long ago or in the future (a replay, or a wrong clock).
    #[error("signature outside the accepted time window")]
    Stale,
    /// The signature does not match.
    #[error("signature does not match")]
    Mismatch,
}

fn mac(secret: &str, parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    for p in parts {
        m.update(p);
    }
    m
}

/// The lowercase hex HMAC-SHA256 of `parts` (concatenated) under `secret`.
pub fn sign_hex(secret: &str, parts: &[&[u8]]) -> String {
    mac(secret, parts)
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks that `hex` is the HMAC-SHA256 of `parts` under `secret` (constant time).
pub fn verify_hex(secret: &str, parts: &[&[u8]], hex: &str) -> Result<(), SignatureError> {
    let hex = hex.trim();
    if !hex.len().is_multiple_of(2) {
        return Err(SignatureError::Malformed);
    }
    let tag: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<_>>()
        .ok_or(SignatureError::Malformed)?;
    mac(secret, parts)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)
}

/// Reads a Unix-seconds timestamp and checks it lies within [`TOLERANCE_SECONDS`] of `now`.
pub fn timestamp_within(raw: Option<&str>, now: DateTime<Utc>) -> Result<i64, SignatureError> {
    let ts: i64 = raw
        .and_then(|t| t.trim().parse().ok())
        .ok_or(SignatureError::Malformed)?;
    if (now.timestamp() - ts).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    Ok(ts)
}

/// The hex tag of `"<timestamp>.<body>"` under `secret`: what Kisi, Salto, Vostio and
/// Brivo sign (each wraps it in its own header).
pub fn sign_timestamped(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    sign_hex(secret, &[ts.as_bytes(), b".", body])
}

/// Checks a delivery signed as [`sign_timestamped`]: `hex` given, the `timestamp` within
/// [`TOLERANCE_SECONDS`] of `now`, and `hex` the tag over `"<timestamp>.<body>"`
/// (compared in constant time).
pub fn verify_timestamped(
    secret: &str,
    timestamp: Option<&str>,
    hex: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let hex = hex.ok_or(SignatureError::Malformed)?;
    let ts = timestamp_within(timestamp, now)?.to_string();
    verify_hex(secret, &[ts.as_bytes(), b".", body], hex)
}

/// Checks shared by the vendors' webhook tests.
#[cfg(test)]
pub(crate) mod testing {
    use chrono::{DateTime, TimeZone, Utc};

    use super::SignatureError;

    /// A vendor's `sign`: the signature header's value of a body at a timestamp.
    pub(crate) type Sign = fn(&str, i64, &[u8]) -> String;
    /// A vendor's `verify` with the timestamp and signature headers apart.
    pub(crate) type Verify =
        fn(&str, Option<&str>, Option<&str>, &[u8], DateTime<Utc>) -> Result<(), SignatureError>;

    /// Asserts that a vendor's signature over `"<timestamp>.<body>"` verifies with its
    /// secret within five minutes either way, and never with another secret, for an
    /// `altered` body or another timestamp, nor with a header missing.
    pub(crate) fn assert_timestamped_signature(
        sign: Sign,
        verify: Verify,
        body: &[u8],
        altered: &[u8],
    ) {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let ts = now.timestamp();
        let t = ts.to_string();
        let sig = sign("s3cret", ts, body);
        assert_eq!(verify("s3cret", Some(&t), Some(&sig), body, now), Ok(()));
        assert_eq!(
            verify("guess", Some(&t), Some(&sig), body, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("s3cret", Some(&t), Some(&sig), altered, now),
            Err(SignatureError::Mismatch)
        );
        for skew in [-301, 301] {
            let then = now + chrono::Duration::seconds(skew);
            assert_eq!(
                verify("s3cret", Some(&t), Some(&sig), body, then),
                Err(SignatureError::Stale)
            );
        }
        assert_eq!(
            verify("s3cret", None, Some(&sig), body, now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify("s3cret", Some(&t), None, body, now),
            Err(SignatureError::Malformed)
        );
        // the timestamp is part of what is signed
        let other = (ts + 1).to_string();
        assert_eq!(
            verify("s3cret", Some(&other), Some(&sig), body, now),
            Err(SignatureError::Mismatch)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_tag_verifies_only_for_its_secret_and_parts() {
        let tag = sign_hex("k", &[b"12", b".", b"body"]);
        assert_eq!(tag.len(), 64);
        assert_eq!(verify_hex("k", &[b"12.body"], &tag), Ok(()));
        assert_eq!(
            verify_hex("other", &[b"12.body"], &tag),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_hex("k", &[b"12.bodY"], &tag),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_hex("k", &[b"12.body"], "zz"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_hex("k", &[b"12.body"], "abc"),
            Err(SignatureError::Malformed)
        );
        // a truncated tag does not verify
        assert_eq!(
            verify_hex("k", &[b"12.body"], &tag[..32]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn timestamps_outside_five_minutes_are_stale() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let t = now.timestamp();
        assert_eq!(timestamp_within(Some(&t.to_string()), now), Ok(t));
        assert_eq!(
            timestamp_within(Some(&(t - 300).to_string()), now),
            Ok(t - 300)
        );
        assert_eq!(
            timestamp_within(Some(&(t - 301).to_string()), now),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            timestamp_within(Some(&(t + 301).to_string()), now),
            Err(SignatureError::Stale)
        );
        assert_eq!(timestamp_within(None, now), Err(SignatureError::Malformed));
        assert_eq!(
            timestamp_within(Some("yesterday"), now),
            Err(SignatureError::Malformed)
        );
    }
}
