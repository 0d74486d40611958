//! PIN codes for `pin_code` credentials (US-MEL-0075).

use std::fmt;

use rand::rngs::OsRng;
use rand::Rng;

use crate::errors::DomainError;

/// A keypad PIN: 4 to 9 digits (TTLock's custom-passcode range; other vendors accept a
/// subset). Generated from the OS CSPRNG; `Debug` is redacted and there is no `Display`,
/// so a PIN never reaches a log line by formatting.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(String);

impl Pin {
    /// Default length of generated PINs.
    pub const DEFAULT_LEN: usize = 6;

    /// Parses a PIN of 4 to 9 ASCII digits.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        if !(4..=9).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DomainError::validation("pin", "must be 4 to 9 digits"));
        }
        Ok(Self(s.to_owned()))
    }

    /// A fresh PIN of `len` digits (clamped to 4..=9) from the OS CSPRNG. The first digit
    /// is never 0, so vendors that store PINs as integers keep every digit.
    pub fn generate(len: usize) -> Self {
        let len = len.clamp(4, 9);
        let mut rng = OsRng;
        let mut s = String::with_capacity(len);
        s.push(char::from(b'1' + rng.gen_range(0..9u8)));
        for _ in 1..len {
            s.push(char::from(b'0' + rng.gen_range(0..10u8)));
        }
        Self(s)
    }

    /// The digits: for the vendor call and for encryption at rest only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pins_are_digits_of_the_asked_length() {
        for len in [4, 6, 9] {
            let p = Pin::generate(len);
            assert_eq!(p.expose().len(), len);
            assert!(Pin::parse(p.expose()).is_ok());
            assert_ne!(p.expose().as_bytes()[0], b'0');
        }
    }

    #[test]
    fn pin_debug_is_redacted_and_parse_refuses_non_digits() {
        let p = Pin::parse("482913").unwrap();
        assert!(!format!("{p:?}").contains("482913"));
        assert!(Pin::parse("12a4").is_err());
        assert!(Pin::parse("123").is_err());
        assert!(Pin::parse("1234567890").is_err());
    }
}
