//! Values that must never reach a log line, an API response, an event or an error (I-8).

use std::fmt;

/// A vendor's opaque reference to a credential it holds (a TTLock `keyboardPwdId`, a
/// Salto key id...). I-8: it has no `Display`, its `Debug` is redacted, and it carries no
/// serde derive, so it cannot be formatted or serialized by accident; the one way out is
/// [`VendorRef::expose`], used by the adapter that minted it and by the encrypted store.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VendorRef(String);

impl VendorRef {
    /// Wraps a vendor reference.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw reference: only for the adapter that owns it and for encryption at rest.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for VendorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VendorRef(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_ref_debug_never_shows_the_value() {
        // I-8
        let r = VendorRef::new("kbpwd-9137311");
        assert!(!format!("{r:?}").contains("9137311"));
        assert!(!format!("{:?}", Some(&r)).contains("9137311"));
        assert_eq!(r.expose(), "kbpwd-9137311");
    }
}

/// A vendor's identifier of a physical lock (a TTLock `lockId`, a Salto lock id). Stored
/// encrypted (`vendor_device_ref_ciphertext`, spec `004` §5); `Debug` shows it, because a
/// device id is an operational identifier rather than a credential, but it has no serde
/// derive so it leaves Lockstep only through the adapter.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DeviceRef(String);

impl DeviceRef {
    /// Wraps a vendor device id.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw id, for the adapter's wire request and for encryption at rest.
    pub fn expose(&self) -> &str {
        &self.0
    }
}
