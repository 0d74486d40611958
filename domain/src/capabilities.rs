//! What a vendor adapter can do (spec `003` §2 `LockCapabilities`), as the saga sees it
//! (spec `003` §6.1: the saga consumes vendor specifics only through these flags).

use crate::credential::KeyCredentialKind;

/// The ten capability flags of spec `003` §2. `Default` is "can do nothing".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LockCapabilities {
    /// Can deliver a mobile key (a phone app key).
    pub mobile_key: bool,
    /// Can encode RFID cards.
    pub card_encoding: bool,
    /// Can put a keypad PIN on a lock.
    pub pin: bool,
    /// Can issue QR codes.
    pub qr: bool,
    /// Can issue NFC tags.
    pub nfc: bool,
    /// Can delete a credential remotely.
    pub remote_revoke: bool,
    /// Can create a credential remotely.
    pub remote_issue: bool,
    /// Can issue credentials that the lock validates without a connection.
    pub offline_issuance: bool,
    /// Can scope a master key to floors.
    pub scope_floors: bool,
    /// Can scope a master key to common areas.
    pub scope_areas: bool,
}

impl LockCapabilities {
    /// Whether the adapter can issue a credential of `kind`. I-6: `rfid_card` needs
    /// `cardEncoding` (spec `003` §6.1: the saga removes it otherwise); every other kind
    /// needs its own flag (`pin_code` → `pin`, `mobile_app` → `mobileKey`, `qr_code` → `qr`,
    /// `nfc_tag` → `nfc`).
    pub fn supports(&self, kind: KeyCredentialKind) -> bool {
        match kind {
            KeyCredentialKind::MobileApp => self.mobile_key,
            KeyCredentialKind::PinCode => self.pin,
            KeyCredentialKind::RfidCard => self.card_encoding,
            KeyCredentialKind::QrCode => self.qr,
            KeyCredentialKind::NfcTag => self.nfc,
        }
    }
}
