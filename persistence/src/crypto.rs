//! Envelope-style encryption of sensitive columns at rest (spec `004` §5): AES-256-GCM with
//! a random 96-bit nonce per value, the key version stored beside the ciphertext, and the
//! row's identity as associated data so a ciphertext cannot be moved to another row.
//! Keys come from a [`Kms`] by version; a [`Cipher`] is the ring built from it: the current
//! version encrypts, every listed version decrypts, and `Store::reencrypt` moves stored
//! values to the current version (key rotation). Blind indexes use a key derived from one
//! fixed version, so lookups survive a rotation.

use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::rngs::OsRng;
use rand::RngCore;

use crate::StoreError;

/// A key ring: the current key encrypts, every known version decrypts.
#[derive(Clone)]
pub struct Cipher {
    current: String,
    keys: HashMap<String, Aes256Gcm>,
    /// HMAC key of the blind indexes, derived from the ring's key: a lookup value must not
    /// change when data keys rotate, so it is derived once, not per version.
    index_key: [u8; 32],
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cipher")
            .field("current", &self.current)
            .field("versions", &self.keys.len())
            .finish()
    }
}

/// Where data keys come from (the KMS port): a version's 32-byte key. A cloud KMS adapter
/// implements this the same way as [`LocalKms`].
pub trait Kms: Send + Sync {
    /// The key of `version`.
    fn data_key(&self, version: &str) -> Result<[u8; 32], StoreError>;
}

/// Keys held by the process (from configuration: a file, an environment variable).
#[derive(Default)]
pub struct LocalKms {
    keys: HashMap<String, [u8; 32]>,
}

impl fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKms")
            .field("versions", &self.keys.len())
            .finish()
    }
}

impl LocalKms {
    /// Adds `version` from 64 hex digits.
    pub fn with_hex(mut self, version: &str, hex: &str) -> Result<Self, StoreError> {
        let bytes = decode_hex(hex.trim())
            .ok_or_else(|| StoreError::Corrupt("encryption key must be 64 hex digits".into()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| StoreError::Corrupt("encryption key must be 32 bytes".into()))?;
        self.keys.insert(version.to_owned(), key);
        Ok(self)
    }
}

impl Kms for LocalKms {
    fn data_key(&self, version: &str) -> Result<[u8; 32], StoreError> {
        self.keys
            .get(version)
            .copied()
            .ok_or_else(|| StoreError::Corrupt(format!("the KMS has no key version {version}")))
    }
}

impl Cipher {
    /// The ring of `versions` from `kms`: `current` encrypts (it must be listed), all of
    /// them decrypt, and blind indexes are keyed from `index_version`.
    pub fn from_kms(
        kms: &dyn Kms,
        current: &str,
        versions: &[&str],
        index_version: &str,
    ) -> Result<Self, StoreError> {
        if !versions.contains(&current) {
            return Err(StoreError::Corrupt(
                "the current key version is not in the ring".into(),
            ));
        }
        let mut keys = HashMap::new();
        for v in versions {
            keys.insert((*v).to_owned(), Aes256Gcm::new(&kms.data_key(v)?.into()));
        }
        Ok(Self {
            current: current.to_owned(),
            keys,
            index_key: hmac_sha256(&kms.data_key(index_version)?, b"lockstep blind index v1"),
        })
    }

    /// The version new values are encrypted with.
    pub fn current_version(&self) -> &str {
        &self.current
    }

    /// A ring with one key.
    pub fn new(version: &str, key: &[u8; 32]) -> Self {
        let mut keys = HashMap::new();
        keys.insert(version.to_owned(), Aes256Gcm::new(key.into()));
        Self {
            current: version.to_owned(),
            keys,
            index_key: hmac_sha256(key, b"lockstep blind index v1"),
        }
    }

    /// Parses a 64-hex-digit key.
    pub fn from_hex(version: &str, hex: &str) -> Result<Self, StoreError> {
        let bytes = decode_hex(hex.trim())
            .ok_or_else(|| StoreError::Corrupt("encryption key must be 64 hex digits".into()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| StoreError::Corrupt("encryption key must be 32 bytes".into()))?;
        Ok(Self::new(version, &key))
    }

    /// A fresh random 32-byte key as hex (demo setup).
    pub fn generate_hex() -> String {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        key.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Encrypts `plaintext` bound to `context`; returns (nonce ‖ ciphertext, key version).
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        context: &str,
    ) -> Result<(Vec<u8>, String), StoreError> {
        let cipher = self
            .keys
            .get(&self.current)
            .ok_or_else(|| StoreError::Corrupt("current key missing from ring".into()))?;
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Corrupt("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok((out, self.current.clone()))
    }

    /// The HMAC-SHA256 blind index of `value` in `domain` (hex): equal values give equal
    /// indexes, so an encrypted column can be unique or looked up, and the index reveals
    /// nothing without the key (spec `004` §5).
    pub fn blind_index(&self, domain: &str, value: &[u8]) -> String {
        let mut msg = Vec::with_capacity(domain.len() + 1 + value.len());
        msg.extend_from_slice(domain.as_bytes());
        msg.push(0);
        msg.extend_from_slice(value);
        hmac_sha256(&self.index_key, &msg)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Decrypts what [`Cipher::encrypt`] produced for the same `context`.
    pub fn decrypt(
        &self,
        blob: &[u8],
        version: &str,
        context: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let cipher = self
            .keys
            .get(version)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown key version {version}")))?;
        if blob.len() < 12 {
            return Err(StoreError::Corrupt("ciphertext too short".into()));
        }
        let (nonce, ct) = blob.split_at(12);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Corrupt("decryption failed".into()))
    }

    /// Decrypts to UTF-8 text.
    pub fn decrypt_string(
        &self,
        blob: &[u8],
        version: &str,
        context: &str,
    ) -> Result<String, StoreError> {
        String::from_utf8(self.decrypt(blob, version, context)?)
            .map_err(|_| StoreError::Corrupt("decrypted value is not text".into()))
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .expect("HMAC takes a key of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Hex digits to bytes (`None` for an odd length or a non-hex digit).
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_ring_reads_old_values_writes_new_ones_and_keeps_its_indexes() {
        let kms = LocalKms::default()
            .with_hex("v1", &"11".repeat(32))
            .and_then(|k| k.with_hex("v2", &"22".repeat(32)))
            .expect("hex keys");
        let old = Cipher::from_kms(&kms, "v1", &["v1"], "v1").expect("ring");
        let (blob, ver) = old.encrypt(b"482913", "pin:a:b").expect("encrypts");
        assert_eq!(ver, "v1");
        let rotated = Cipher::from_kms(&kms, "v2", &["v1", "v2"], "v1").expect("ring");
        assert_eq!(
            rotated.decrypt(&blob, "v1", "pin:a:b").expect("old value"),
            b"482913"
        );
        assert_eq!(rotated.encrypt(b"x", "c").expect("encrypts").1, "v2");
        assert_eq!(
            rotated.blind_index("d", b"1001"),
            old.blind_index("d", b"1001"),
            "indexes survive the rotation"
        );
        assert!(Cipher::from_kms(&kms, "v3", &["v1"], "v1").is_err());
        let dropped = Cipher::from_kms(&kms, "v2", &["v2"], "v1").expect("ring");
        assert!(
            dropped.decrypt(&blob, "v1", "pin:a:b").is_err(),
            "v1 retired"
        );
        // the one-key ring of earlier releases indexes as a KMS ring of that key does
        let single = Cipher::new("v1", &[0x11; 32]);
        assert_eq!(
            single.blind_index("d", b"1001"),
            old.blind_index("d", b"1001")
        );
    }

    #[test]
    fn blind_index_is_stable_keyed_and_domain_separated() {
        let a = Cipher::new("v1", &[1u8; 32]);
        let b = Cipher::new("v1", &[2u8; 32]);
        let i = a.blind_index("device_ref", b"1001");
        assert_eq!(i, a.blind_index("device_ref", b"1001"), "stable");
        assert_eq!(i.len(), 64);
        assert!(!i.contains("1001"));
        assert_ne!(i, b.blind_index("device_ref", b"1001"), "keyed");
        assert_ne!(i, a.blind_index("vendor_ref", b"1001"), "domain separated");
        assert_ne!(i, a.blind_index("device_ref", b"1002"));
    }

    #[test]
    fn round_trips_and_binds_to_context() {
        let c = Cipher::from_hex("v1", &Cipher::generate_hex()).unwrap();
        let (blob, v) = c.encrypt(b"482913", "pin:key_1:lck_1").unwrap();
        assert!(!blob.windows(6).any(|w| w == b"482913"));
        assert_eq!(
            c.decrypt_string(&blob, &v, "pin:key_1:lck_1").unwrap(),
            "482913"
        );
        assert!(c.decrypt(&blob, &v, "pin:key_2:lck_1").is_err());
        let (blob2, _) = c.encrypt(b"482913", "pin:key_1:lck_1").unwrap();
        assert_ne!(blob, blob2, "a fresh nonce per value");
    }
}
