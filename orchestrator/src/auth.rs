//! Bearer JWTs from the platform's identity provider (issue 6): compact JWS with `EdDSA`
//! (Ed25519) or `HS256`, keys from configuration by `kid`; issuer, audience, expiry and
//! not-before are checked on every request, and the token names its tenant and roles.
//! `alg: none`, an algorithm that does not match the key, and unknown keys are refused.
//! [`mint`] makes development tokens (`lockstep token`).
//!
//! The signature, issuer and audience are verified by `jsonwebtoken` (issue 14). Around it,
//! thin checks of our own: the token's shape and its header (a field given twice is refused,
//! `alg` must be the one of the key `kid` names, before the library sees it), expiry and
//! not-before against our [`Clock`](lockstep_domain::Clock)'s `now` (the library reads the
//! system clock, so its time checks are off), and the tenant and role claims.

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

impl From<jsonwebtoken::errors::Error> for AuthError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidSignature => Self::Signature,
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => Self::Algorithm,
            K::MissingRequiredClaim(c) if c == "iss" => Self::Issuer,
            K::MissingRequiredClaim(c) if c == "aud" => Self::Audience,
            K::MissingRequiredClaim(_) | K::InvalidSubject => Self::Claims,
            K::InvalidIssuer => Self::Issuer,
            K::InvalidAudience => Self::Audience,
            K::ExpiredSignature => Self::Expired,
            K::ImmatureSignature => Self::NotYetValid,
            // the token's shape or encoding (base64, JSON, UTF-8), and whatever a later
            // version adds
            _ => Self::Malformed,
        }
    }
}

/// The header fields we read ourselves, before the library: `kid` picks the key, and `alg`
/// must be that key's. A field given twice is refused (serde's derive does that).
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
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

/// The claims checked here rather than by the library (`iss` and `aud` are the library's).
/// A field given twice is refused.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
    tenant_id: Option<String>,
    roles: Option<Vec<Role>>,
}

/// A configured key as the library takes it, with the validation of its algorithm.
#[derive(Clone)]
struct Key {
    decoding: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// Verifies tokens against configured keys.
#[derive(Clone, Debug)]
pub struct JwtVerifier {
    keys: HashMap<String, Key>,
    leeway_secs: i64,
}

impl JwtVerifier {
    /// Keys by `kid`; a token without `kid` is accepted only when there is exactly one key.
    pub fn new(
        keys: HashMap<String, VerifyKey>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        let (issuer, audience) = (issuer.into(), audience.into());
        let keys = keys
            .into_iter()
            .map(|(kid, key)| {
                let (decoding, alg) = match &key {
                    // `from_ed_der` takes the raw 32-byte public key (ring's `ED25519`)
                    VerifyKey::Ed25519(k) => (
                        jsonwebtoken::DecodingKey::from_ed_der(k.as_bytes()),
                        jsonwebtoken::Algorithm::EdDSA,
                    ),
                    VerifyKey::Hs256(secret) => (
                        jsonwebtoken::DecodingKey::from_secret(secret),
                        jsonwebtoken::Algorithm::HS256,
                    ),
                };
                let mut validation = jsonwebtoken::Validation::new(alg);
                // time is checked in `verify` against the clock it is given
                validation.validate_exp = false;
                validation.validate_nbf = false;
                validation.leeway = 0;
                validation.set_required_spec_claims(&["iss", "aud"]);
                validation.set_issuer(&[&issuer]);
                validation.set_audience(&[&audience]);
                (
                    kid,
                    Key {
                        decoding,
                        validation,
                    },
                )
            })
            .collect();
        Self {
            keys,
            leeway_secs: 30,
        }
    }

    /// Checks `token` at `now`.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Principal, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(_), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        // the library compares HMAC signatures as text: a signature that is not
        // base64url is malformed, whatever the algorithm
        URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::Malformed)?;
        let header: Header = decode_json(h)?;
        let key = match &header.kid {
            Some(kid) => self.keys.get(kid).ok_or(AuthError::UnknownKey)?,
            None if self.keys.len() == 1 => {
                self.keys.values().next().ok_or(AuthError::UnknownKey)?
            }
            None => return Err(AuthError::UnknownKey),
        };
        let alg = header
            .alg
            .parse::<jsonwebtoken::Algorithm>()
            .map_err(|_| AuthError::Algorithm)?;
        if !key.validation.algorithms.contains(&alg) {
            return Err(AuthError::Algorithm);
        }
        let c = jsonwebtoken::decode::<RawClaims>(token, &key.decoding, &key.validation)?.claims;
        let now = now.timestamp();
        let exp = c.exp.ok_or(AuthError::Claims)?;
        if now > exp + self.leeway_secs {
            return Err(AuthError::Expired);
        }
        if c.nbf.is_some_and(|nbf| now + self.leeway_secs < nbf) {
            return Err(AuthError::NotYetValid);
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

    /// Signs `header.payload` (both raw JSON, encoded here) with the Ed25519 `key`.
    fn ed_signed(key: &ed25519_dalek::SigningKey, header: &str, payload: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(header);
        ed_signed_parts(
            key,
            &format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload)),
        )
    }

    /// Signs `signed` (the first two segments as they are) with the Ed25519 `key`.
    fn ed_signed_parts(key: &ed25519_dalek::SigningKey, signed: &str) -> String {
        use ed25519_dalek::Signer;
        let sig = URL_SAFE_NO_PAD.encode(key.sign(signed.as_bytes()).to_bytes());
        format!("{signed}.{sig}")
    }

    /// Signs `header.payload` (both raw JSON, encoded here) with HMAC-SHA256 under `secret`.
    fn hs_signed(secret: &[u8], header: &str, payload: &str) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let key = jsonwebtoken::EncodingKey::from_secret(secret);
        let sig =
            jsonwebtoken::crypto::sign(signed.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .unwrap();
        format!("{signed}.{sig}")
    }

    /// The claims of [`claims`] as JSON, with `edit` applied to the object.
    fn payload(edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)) -> String {
        let mut v = serde_json::to_value(claims()).unwrap();
        edit(v.as_object_mut().unwrap());
        v.to_string()
    }

    /// Token attacks and malformed tokens, each refused for its own reason; the HS256 key
    /// `hs` sits beside the Ed25519 key `k1`, so key confusion has a target.
    #[test]
    fn token_attacks_are_refused_for_their_reason() {
        use serde_json::json;
        let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let other = ed25519_dalek::SigningKey::from_bytes(&[4u8; 32]);
        let secret = b"a-shared-secret-of-the-identity-provider".to_vec();
        let mut keys = HashMap::new();
        keys.insert("k1".to_owned(), VerifyKey::Ed25519(key.verifying_key()));
        keys.insert("hs".to_owned(), VerifyKey::Hs256(secret.clone()));
        let v = JwtVerifier::new(keys, "https://id.melmastoon.test", "lockstep");
        let ed = r#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#;
        let hs = r#"{"alg":"HS256","typ":"JWT","kid":"hs"}"#;
        let good = payload(&|_| {});
        let t = now().timestamp();
        let good_token = ed_signed(&key, ed, &good);
        let parts: Vec<&str> = good_token.split('.').collect();
        let (h, p, sig) = (parts[0], parts[1], parts[2]);
        let public = key.verifying_key().to_bytes();
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let ed_with =
            |edit: &dyn Fn(&mut serde_json::Map<_, _>)| ed_signed(&key, ed, &payload(edit));
        let mut cases: Vec<(&str, String, AuthError)> = Vec::new();
        let mut case = |what, token, want| cases.push((what, token, want));
        use AuthError::*;
        // signatures
        case(
            "another key's signature",
            ed_signed(&other, ed, &good),
            Signature,
        );
        case("an empty signature", format!("{h}.{p}."), Signature);
        case(
            "a truncated signature",
            format!("{h}.{p}.{}", &sig[..40]),
            Signature,
        );
        let zeros = URL_SAFE_NO_PAD.encode([0u8; 64]);
        case(
            "a signature of zeros",
            format!("{h}.{p}.{zeros}"),
            Signature,
        );
        case("a padded signature", format!("{h}.{p}.{sig}="), Malformed);
        let standard = sig.replace('-', "+").replace('_', "/");
        let want = if standard == sig {
            Signature
        } else {
            Malformed
        };
        case(
            "a signature in standard base64",
            format!("{h}.{p}.{standard}"),
            want,
        );
        let admin = b64(&payload(&|c| {
            c.insert("roles".into(), json!(["admin"]));
        }));
        case(
            "a payload changed after signing",
            format!("{h}.{admin}.{sig}"),
            Signature,
        );
        let bare = b64(r#"{"alg":"EdDSA","kid":"k1"}"#);
        case(
            "a header changed after signing",
            format!("{bare}.{p}.{sig}"),
            Signature,
        );
        let x = URL_SAFE_NO_PAD.encode(other.verifying_key().to_bytes());
        let jwk =
            json!({"alg": "EdDSA", "kid": "k1", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}});
        case(
            "an embedded jwk of the attacker's key",
            ed_signed(&other, &jwk.to_string(), &good),
            Signature,
        );
        let jku = r#"{"alg":"EdDSA","kid":"k1","jku":"https://evil.test/jwks"}"#;
        case(
            "a jku naming the attacker's keys",
            ed_signed(&other, jku, &good),
            Signature,
        );
        // algorithms and keys
        let none = b64(r#"{"alg":"none","kid":"k1"}"#);
        case("alg none", format!("{none}.{p}."), Algorithm);
        let none = b64(r#"{"alg":"None","kid":"k1"}"#);
        case("alg None", format!("{none}.{p}."), Algorithm);
        let empty = b64(r#"{"alg":"","kid":"k1"}"#);
        case("alg empty", format!("{empty}.{p}.{sig}"), Algorithm);
        let lower = r#"{"alg":"eddsa","kid":"k1"}"#;
        case(
            "alg in lower case",
            ed_signed(&key, lower, &good),
            Algorithm,
        );
        let rs = r#"{"alg":"RS256","kid":"k1"}"#;
        case("alg RS256", ed_signed(&key, rs, &good), Algorithm);
        let confused = hs_signed(&public, r#"{"alg":"HS256","kid":"k1"}"#, &good);
        case(
            "HS256 keyed with the Ed25519 public key",
            confused,
            Algorithm,
        );
        let ed_on_hs = r#"{"alg":"EdDSA","kid":"hs"}"#;
        case(
            "EdDSA naming the HS256 key",
            ed_signed(&key, ed_on_hs, &good),
            Algorithm,
        );
        let hs384 = r#"{"alg":"HS384","kid":"hs"}"#;
        case(
            "HS384 under the HS256 key",
            hs_signed(&secret, hs384, &good),
            Algorithm,
        );
        case(
            "HS256 under another secret",
            hs_signed(b"guessed", hs, &good),
            Signature,
        );
        let padded = format!("{}=", hs_signed(&secret, hs, &good));
        case("an HS256 signature padded", padded, Malformed);
        let k9 = r#"{"alg":"EdDSA","kid":"k9"}"#;
        case("an unknown kid", ed_signed(&key, k9, &good), UnknownKey);
        let no_kid = r#"{"alg":"EdDSA"}"#;
        case(
            "no kid among two keys",
            ed_signed(&key, no_kid, &good),
            UnknownKey,
        );
        let twice = r#"{"alg":"none","alg":"EdDSA","kid":"k1"}"#;
        case("alg given twice", ed_signed(&key, twice, &good), Malformed);
        let twice = r#"{"alg":"EdDSA","kid":"hs","kid":"k1"}"#;
        case("kid given twice", ed_signed(&key, twice, &good), Malformed);
        let listed = r#"{"alg":["EdDSA"],"kid":"k1"}"#;
        case(
            "alg not a string",
            ed_signed(&key, listed, &good),
            Malformed,
        );
        // shape
        case("empty", String::new(), Malformed);
        case("two parts", format!("{h}.{p}"), Malformed);
        case("four parts", format!("{good_token}.{sig}"), Malformed);
        let not_json = b64("alg=EdDSA");
        case(
            "a header that is not JSON",
            format!("{not_json}.{p}.{sig}"),
            Malformed,
        );
        let not_b64 = ed_signed_parts(&key, &format!("{h}.%%%"));
        case("a payload that is not base64url", not_b64, Malformed);
        case(
            "a payload that is not JSON",
            ed_signed(&key, ed, "roles=admin"),
            Malformed,
        );
        let twice = good.replacen('{', r#"{"roles":["admin"],"#, 1);
        case(
            "a claim given twice",
            ed_signed(&key, ed, &twice),
            Malformed,
        );
        let twice = good.replacen('{', r#"{"iss":"https://evil.test","#, 1);
        case("iss given twice", ed_signed(&key, ed, &twice), Malformed);
        let exp_text = ed_with(&|c| {
            c.insert("exp".into(), json!((t + 600).to_string()));
        });
        case("exp as a string", exp_text, Malformed);
        let root = ed_with(&|c| {
            c.insert("roles".into(), json!(["root"]));
        });
        case("an unknown role", root, Malformed);
        // claims
        let late = ed_with(&|c| {
            c.insert("exp".into(), json!(t - 31));
        });
        case("expired beyond the leeway", late, Expired);
        let early = ed_with(&|c| {
            c.insert("nbf".into(), json!(t + 60));
        });
        case("not valid for a minute", early, NotYetValid);
        for (claim, what, want) in [
            ("exp", "no exp", Claims),
            ("iss", "no iss", Issuer),
            ("aud", "no aud", Audience),
            ("sub", "no sub", Claims),
            ("tenant_id", "no tenant", Claims),
            ("roles", "no roles", Claims),
        ] {
            let without = ed_with(&|c| {
                c.remove(claim);
            });
            case(what, without, want);
        }
        let evil = ed_with(&|c| {
            c.insert("iss".into(), json!("https://evil.test"));
        });
        case("another issuer", evil, Issuer);
        let others = ed_with(&|c| {
            c.insert("aud".into(), json!(["billing", "crm"]));
        });
        case("an audience list without lockstep", others, Audience);
        let wrong: Vec<String> = cases
            .iter()
            .filter_map(|(what, token, want)| {
                let got = v.verify(token, now());
                (got != Err(*want)).then(|| format!("{what}: {got:?}, want {want:?}"))
            })
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
        // and what is accepted: within the leeway, an audience list naming lockstep, HS256
        let ok = [
            ed_with(&|c| {
                c.insert("exp".into(), json!(t - 30));
            }),
            ed_with(&|c| {
                c.insert("nbf".into(), json!(t + 30));
            }),
            ed_with(&|c| {
                c.insert("aud".into(), json!(["billing", "lockstep"]));
            }),
            hs_signed(&secret, hs, &good),
            good_token.clone(),
        ];
        for token in &ok {
            assert!(v.verify(token, now()).is_ok(), "{token}");
        }
        println!(
            "{} token attacks refused, {} tokens accepted",
            cases.len(),
            ok.len()
        );
    }

    #[test]
    fn hs256_tokens_verify_with_the_shared_secret() {
        let secret = b"a-shared-secret-of-the-identity-provider".to_vec();
        let mut keys = HashMap::new();
        keys.insert("hs".to_owned(), VerifyKey::Hs256(secret.clone()));
        let v = JwtVerifier::new(keys, "https://id.melmastoon.test", "lockstep");
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("hs".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        let mut parts = token.split('.');
        let (h, p, sig) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
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
