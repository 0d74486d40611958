//! Bearer JWTs from the platform's identity provider (issue 6): compact JWS with `EdDSA`
//! (Ed25519) or `HS256`, keys from configuration by `kid`; issuer, audience, expiry and
//! not-before are checked on every request, and the token names its tenant and roles.
//! `alg: none`, an algorithm that does not match the key, and unknown keys are refused.
//! [`mint`] makes development tokens (`lockstep token`).

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use lockstep_domain::{TenantId, Timestamp};
use serde::{Deserialize, Serialize};

/// What a caller may do.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Front desk: reads credentials, devices and audit of its tenant.
    Operator,
    /// Tenant administrator: everything an operator does, plus configuration.
    Admin,
    /// Platform services (the reservation system, the notification service).
    Service,
}

/// Who is calling, from a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `sub`.
    pub subject: String,
    /// The tenant every request of this token is confined to.
    pub tenant: TenantId,
    /// Roles.
    pub roles: Vec<Role>,
}

impl Principal {
    /// Whether any of `roles` is held.
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }
}

/// A key that verifies tokens.
#[derive(Clone)]
pub enum VerifyKey {
    /// `EdDSA`.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// `HS256`, a shared secret.
    Hs256(Vec<u8>),
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ed25519(_) => f.write_str("VerifyKey::Ed25519"),
            Self::Hs256(_) => f.write_str("VerifyKey::Hs256(<redacted>)"),
        }
    }
}

/// Why a token was refused. The message is safe to show: it never repeats the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token.
    #[error("a bearer token is required")]
    Missing,
    /// Not a compact JWS, or its parts do not decode.
    #[error("the token is malformed")]
    Malformed,
    /// `alg` is not accepted, or does not match the key.
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    /// No configured key has its `kid`.
    #[error("the token's key is unknown")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    Signature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not the identity provider.
    #[error("the token's issuer is not accepted")]
    Issuer,
    /// `aud` does not name Lockstep.
    #[error("the token is not meant for this service")]
    Audience,
    /// A required claim is missing or malformed.
    #[error("the token lacks a required claim")]
    Claims,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims Lockstep reads.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Tenant (uuid).
    pub tenant_id: String,
    /// Roles.
    pub roles: Vec<Role>,
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    aud: Option<Audience>,
    sub: Option<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
    tenant_id: Option<String>,
    roles: Option<Vec<Role>>,
}

/// Verifies tokens against configured keys.
#[derive(Clone, Debug)]
pub struct JwtVerifier {
    keys: HashMap<String, VerifyKey>,
    issuer: String,
    audience: String,
    leeway_secs: i64,
}

impl JwtVerifier {
    /// Keys by `kid`; a token without `kid` is accepted only when there is exactly one key.
    pub fn new(
        keys: HashMap<String, VerifyKey>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_secs: 30,
        }
    }

    /// Checks `token` at `now`.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Principal, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header: Header = decode_json(h)?;
        let key = match &header.kid {
            Some(kid) => self.keys.get(kid).ok_or(AuthError::UnknownKey)?,
            None if self.keys.len() == 1 => {
                self.keys.values().next().ok_or(AuthError::UnknownKey)?
            }
            None => return Err(AuthError::UnknownKey),
        };
        let signed = format!("{h}.{p}");
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::Malformed)?;
        match (header.alg.as_str(), key) {
            ("EdDSA", VerifyKey::Ed25519(k)) => {
                use ed25519_dalek::Verifier;
                let sig: [u8; 64] = sig.try_into().map_err(|_| AuthError::Signature)?;
                k.verify(
                    signed.as_bytes(),
                    &ed25519_dalek::Signature::from_bytes(&sig),
                )
                .map_err(|_| AuthError::Signature)?;
            }
            ("HS256", VerifyKey::Hs256(secret)) => {
                use hmac::Mac;
                let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret)
                    .map_err(|_| AuthError::Signature)?;
                mac.update(signed.as_bytes());
                mac.verify_slice(&sig).map_err(|_| AuthError::Signature)?;
            }
            _ => return Err(AuthError::Algorithm),
        }
        let c: RawClaims = decode_json(p)?;
        let now = now.timestamp();
        let exp = c.exp.ok_or(AuthError::Claims)?;
        if now > exp + self.leeway_secs {
            return Err(AuthError::Expired);
        }
        if c.nbf.is_some_and(|nbf| now + self.leeway_secs < nbf) {
            return Err(AuthError::NotYetValid);
        }
        if c.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(AuthError::Issuer);
        }
        let aud_ok = match &c.aud {
            Some(Audience::One(a)) => *a == self.audience,
            Some(Audience::Many(all)) => all.contains(&self.audience),
            None => false,
        };
        if !aud_ok {
            return Err(AuthError::Audience);
        }
        let tenant = c
            .tenant_id
            .as_deref()
            .and_then(|t| TenantId::parse(t).ok())
            .ok_or(AuthError::Claims)?;
        let roles = c.roles.filter(|r| !r.is_empty()).ok_or(AuthError::Claims)?;
        Ok(Principal {
            subject: c.sub.ok_or(AuthError::Claims)?,
            tenant,
            roles,
        })
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

/// Signs `claims` with an Ed25519 key (`alg: EdDSA`, `kid`): development tokens.
pub fn mint(key: &ed25519_dalek::SigningKey, kid: &str, claims: &Claims) -> String {
    use ed25519_dalek::Signer;
    let header = serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": kid });
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).unwrap_or_default());
    let signed = format!("{h}.{p}");
    let sig = URL_SAFE_NO_PAD.encode(key.sign(signed.as_bytes()).to_bytes());
    format!("{signed}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            iss: "https://id.melmastoon.test".into(),
            aud: "lockstep".into(),
            sub: "usr_front_desk_1".into(),
            exp: now().timestamp() + 600,
            nbf: None,
            iat: now().timestamp(),
            tenant_id: "5f0c7a4e-7a2b-4c1d-9e8f-0a1b2c3d4e5f".into(),
            roles: vec![Role::Operator],
        }
    }

    fn verifier(key: &ed25519_dalek::SigningKey) -> JwtVerifier {
        let mut keys = HashMap::new();
        keys.insert("k1".to_owned(), VerifyKey::Ed25519(key.verifying_key()));
        JwtVerifier::new(keys, "https://id.melmastoon.test", "lockstep")
    }

    #[test]
    fn a_good_token_gives_its_tenant_and_roles() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let p = verifier(&key)
            .verify(&mint(&key, "k1", &claims()), now())
            .unwrap();
        assert_eq!(p.roles, vec![Role::Operator]);
        assert_eq!(p.tenant.to_string(), claims().tenant_id);
        assert!(p.has_any(&[Role::Operator, Role::Admin]));
        assert!(!p.has_any(&[Role::Service]));
    }

    #[test]
    fn every_bad_token_is_refused_for_its_reason() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let other = ed25519_dalek::SigningKey::from_bytes(&[4u8; 32]);
        let v = verifier(&key);
        let with = |f: &dyn Fn(&mut Claims)| {
            let mut c = claims();
            f(&mut c);
            mint(&key, "k1", &c)
        };
        let cases: Vec<(String, AuthError)> = vec![
            (mint(&other, "k1", &claims()), AuthError::Signature),
            (mint(&key, "k9", &claims()), AuthError::UnknownKey),
            (
                with(&|c| c.exp = now().timestamp() - 3600),
                AuthError::Expired,
            ),
            (
                with(&|c| c.nbf = Some(now().timestamp() + 3600)),
                AuthError::NotYetValid,
            ),
            (
                with(&|c| c.iss = "https://evil.test".into()),
                AuthError::Issuer,
            ),
            (with(&|c| c.aud = "billing".into()), AuthError::Audience),
            (with(&|c| c.tenant_id = "tnt_x".into()), AuthError::Claims),
            (with(&|c| c.roles.clear()), AuthError::Claims),
            ("not.a-token".into(), AuthError::Malformed),
            ("a.b.c.d".into(), AuthError::Malformed),
        ];
        for (token, want) in cases {
            assert_eq!(v.verify(&token, now()), Err(want), "{want:?}");
        }
        // a payload changed after signing
        let good = mint(&key, "k1", &claims());
        let parts: Vec<&str> = good.split('.').collect();
        let mut admin = claims();
        admin.roles = vec![Role::Admin];
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_string(&admin).unwrap());
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(v.verify(&forged, now()), Err(AuthError::Signature));
        // alg none, and HS256 signed with the public key as a secret (key confusion)
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#);
        assert_eq!(
            v.verify(&format!("{none_header}.{}.", parts[1]), now()),
            Err(AuthError::Algorithm)
        );
        let hs_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"k1"}"#);
        assert_eq!(
            v.verify(&format!("{hs_header}.{}.{}", parts[1], parts[2]), now()),
            Err(AuthError::Algorithm)
        );
    }

    #[test]
    fn hs256_tokens_verify_with_the_shared_secret() {
        use hmac::Mac;
        let secret = b"a-shared-secret-of-the-identity-provider".to_vec();
        let mut keys = HashMap::new();
        keys.insert("hs".to_owned(), VerifyKey::Hs256(secret.clone()));
        let v = JwtVerifier::new(keys, "https://id.melmastoon.test", "lockstep");
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"hs"}"#);
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_string(&claims()).unwrap());
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&secret).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert!(v.verify(&format!("{h}.{p}.{sig}"), now()).is_ok());
        assert_eq!(
            v.verify(
                &format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode([0u8; 32])),
                now()
            ),
            Err(AuthError::Signature)
        );
    }
}
