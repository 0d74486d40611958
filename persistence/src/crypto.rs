//! Envelope-style encryption of sensitive columns at rest (spec `004` §5): AES-256-GCM with
//! a random 96-bit nonce per value, the key version stored beside the ciphertext, and the
//! row's identity as associated data so a ciphertext cannot be moved to another row.
//! The KMS port and key rotation come with issue 6; this holds the local key ring.

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

impl Cipher {
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

fn decode_hex(s: &str) -> Option<Vec<u8>> {
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
