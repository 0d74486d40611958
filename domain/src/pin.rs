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
    /// is never 0, so vendors that store PINs as integers keep every digit. Never one that
    /// [`Pin::is_too_simple`]: TTLock refuses those (errcode -2032, "do not use consecutive
    /// or repeated digits"), and a guessable code is a weak one at any vendor; drawing again
    /// costs nothing, a refused vendor call costs an attempt. At most about 1 in 90 draws
    /// (4 digits) is drawn again.
    pub fn generate(len: usize) -> Self {
        let len = len.clamp(4, 9);
        let mut rng = OsRng;
        loop {
            let mut s = String::with_capacity(len);
            s.push(char::from(b'1' + rng.gen_range(0..9u8)));
            for _ in 1..len {
                s.push(char::from(b'0' + rng.gen_range(0..10u8)));
            }
            if !too_simple(s.as_bytes()) {
                return Self(s);
            }
        }
    }

    /// Whether the PIN is one a person would guess first: a pattern repeated (every digit
    /// the same, `1212`, `123123`: any period up to half its length), or a run up or down
    /// (`123456`, `4321`, `7890`, `3210`; counting on from 9 to 0). Generated PINs never are.
    pub fn is_too_simple(&self) -> bool {
        too_simple(self.0.as_bytes())
    }

    /// The digits: for the vendor call and for encryption at rest only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn too_simple(d: &[u8]) -> bool {
    let repeats = (1..=d.len() / 2).any(|p| (p..d.len()).all(|i| d[i] == d[i - p]));
    let run = |step: u8| {
        d.windows(2)
            .all(|w| (w[0] - b'0' + step) % 10 == w[1] - b'0')
    };
    repeats || run(1) || run(9)
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
    fn simple_pins_are_recognised() {
        for simple in [
            "1111",
            "999999999",
            "1212",
            "12121",
            "909090",
            "123123",
            "12341234",
            "1234",
            "123456",
            "456789",
            "7890",
            "8901234",
            "4321",
            "654321",
            "3210",
            "210987",
        ] {
            assert!(Pin::parse(simple).unwrap().is_too_simple(), "{simple}");
        }
        for fine in [
            "482913", "1123", "1223", "12312", "135792", "112233", "2580", "1235", "9876542",
            "111222", "333444", "778899", "123457", "98765431",
        ] {
            assert!(!Pin::parse(fine).unwrap().is_too_simple(), "{fine}");
        }
    }

    #[test]
    fn generated_pins_are_never_too_simple() {
        // 4 digits: 90 of the 9,000 draws are too simple, so 20,000 PINs without the
        // check would hold about 200 of them
        for len in 4..=9 {
            for _ in 0..20_000 {
                let p = Pin::generate(len);
                assert!(!p.is_too_simple(), "{len} digits");
                assert_eq!(p.expose().len(), len);
            }
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
