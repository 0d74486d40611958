//! Where adapters read their secrets (DESIGN §6, US-MEL-0081): a reference, resolved each
//! time a secret is needed, so a rotated secret is picked up without a restart. Values are
//! [`Secret`]s: redacted in `Debug`, never logged.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::VendorError;

/// A secret string (client secret, password, API key, access token): `Debug` is redacted
/// and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the one request or header that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// The SHA-256 of a secret's bytes, in hex (spec `003` §3 `fingerprint`: change detection).
/// It tells two secrets apart without revealing either.
pub fn fingerprint(secret: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A secret's location.
#[derive(Clone)]
pub enum SecretRef {
    /// A fixed value (demo, simulators).
    Value(Secret),
    /// An environment variable, read at each use.
    Env(String),
    /// A file's trimmed content, read at each use: replacing the file rotates the secret
    /// (a mounted secret volume, a secret manager's agent).
    File(PathBuf),
    /// A named entry of a shared in-memory store (tests, an embedding secret manager).
    Shared(Arc<MemorySecrets>, String),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("SecretRef::Value(<redacted>)"),
            Self::Env(n) => write!(f, "SecretRef::Env({n})"),
            Self::File(p) => write!(f, "SecretRef::File({})", p.display()),
            Self::Shared(_, n) => write!(f, "SecretRef::Shared({n})"),
        }
    }
}

impl SecretRef {
    /// The secret's current value. A missing secret is `Auth` (the tenant's
    /// configuration is wrong, the vendor is not unwell).
    pub fn current(&self) -> Result<Secret, VendorError> {
        let missing = |what: &str| VendorError::Auth {
            detail: format!("secret {what} is not available"),
        };
        match self {
            Self::Value(s) => Ok(s.clone()),
            Self::Env(name) => std::env::var(name)
                .map(Secret::new)
                .map_err(|_| missing(&format!("env:{name}"))),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret::new(s.trim().to_owned()))
                .map_err(|_| missing(&format!("file:{}", path.display()))),
            Self::Shared(store, name) => store
                .get(name)
                .ok_or_else(|| missing(&format!("shared:{name}"))),
        }
    }
}

/// An in-memory secret store whose entries can be replaced while adapters run.
#[derive(Default)]
pub struct MemorySecrets {
    values: RwLock<HashMap<String, Secret>>,
}

impl fmt::Debug for MemorySecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemorySecrets(<redacted>)")
    }
}

impl MemorySecrets {
    /// Sets (or rotates) a secret.
    pub fn set(&self, name: &str, value: impl Into<String>) {
        self.values
            .write()
            .expect("secret store lock is never poisoned")
            .insert(name.to_owned(), Secret::new(value.into()));
    }

    /// The current value.
    pub fn get(&self, name: &str) -> Option<Secret> {
        self.values
            .read()
            .expect("secret store lock is never poisoned")
            .get(name)
            .cloned()
    }
}

/// Where an adapter re-reads its secrets at each use, by name (`client_secret`,
/// `password`, `api_key`, `client_id`): a secret listed here is read again for every token
/// fetch or request, so replacing it rotates it without a restart (US-MEL-0081). A secret
/// not listed is the fixed value of the adapter's configuration.
#[derive(Clone, Debug, Default)]
pub struct SecretRefs(HashMap<String, SecretRef>);

impl SecretRefs {
    /// Reads `name` from `source` at each use.
    pub fn with(mut self, name: &str, source: SecretRef) -> Self {
        self.0.insert(name.to_owned(), source);
        self
    }

    /// Whether any secret is re-read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The current value of `name`: re-read when listed, else `fixed`.
    pub fn current(&self, name: &str, fixed: &Secret) -> Result<Secret, VendorError> {
        match self.0.get(name) {
            Some(source) => source.current(),
            None => Ok(fixed.clone()),
        }
    }
}
