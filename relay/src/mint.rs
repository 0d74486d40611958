//! Minting at a desk cut off from Lockstep (spec `003` §5, I-7): the desk builds a
//! provisional credential for a stay, checks it against what the server will judge it by
//! (I-7's 48 hours, a stay and at least one room), and signs the protocol's canonical
//! payload ([`ProvisionalCredential::signed_payload`]) with the key its offline-issuance
//! certificate binds. The server's reconciler judges it again on the next sync; checking
//! here first means the desk never hands over a card the server must revoke for its shape.
//!
//! Two steps, so a card is encoded only for a credential that passed the checks: a
//! [`ProvisionalDraft`] is validated, then [`ProvisionalDraft::sign`] takes the number the
//! encoder read back.

use chrono::{DateTime, DurationRound as _, Utc};
use lockstep_domain::credential::PROVISIONAL_MAX_HOURS;
use lockstep_domain::{KeyCredentialKind, OfflineIssuanceId, ReservationId, RoomId};

use crate::agent::AgentKey;
use crate::protocol::{CardNumber, ProvisionalCredential, ProvisionalId, SignatureB64};

/// Why the desk refuses to mint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The window ends at or before its start.
    #[error("valid until must be after valid from (I-1)")]
    EmptyWindow,
    /// I-7: longer than 48 hours.
    #[error(
        "a provisional credential is valid for at most {max_hours} hours (I-7); this one would be valid for {} h {} min: pick an earlier valid-until",
        .minutes / 60,
        .minutes % 60
    )]
    WindowTooLong {
        /// The cap.
        max_hours: i64,
        /// The window asked for, in minutes.
        minutes: i64,
    },
    /// I-12: a guest's key opens at least one room.
    #[error("a provisional credential opens at least one room (I-12)")]
    NoRoom,
}

/// A provisional credential that passed the desk's checks and is not signed yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionalDraft {
    provisional_id: ProvisionalId,
    certificate_id: OfflineIssuanceId,
    kind: KeyCredentialKind,
    reservation_id: ReservationId,
    room_ids: Vec<RoomId>,
    valid_from: DateTime<Utc>,
    valid_until: DateTime<Utc>,
    minted_at: DateTime<Utc>,
}

/// Times to the millisecond: what the signed payload carries, so a stored draft reads back
/// exactly as it was signed.
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::Duration::milliseconds(1))
        .unwrap_or(t)
}

impl ProvisionalDraft {
    /// Checks a credential the desk is about to mint for `reservation_id` under
    /// `certificate_id`: a fresh provisional id, times kept to the millisecond.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        certificate_id: OfflineIssuanceId,
        kind: KeyCredentialKind,
        reservation_id: ReservationId,
        room_ids: Vec<RoomId>,
        valid_from: DateTime<Utc>,
        valid_until: DateTime<Utc>,
        minted_at: DateTime<Utc>,
    ) -> Result<Self, MintError> {
        let (valid_from, valid_until) = (millis(valid_from), millis(valid_until));
        if valid_until <= valid_from {
            return Err(MintError::EmptyWindow);
        }
        // I-7: at most 48 hours, refused here as the reconciler would refuse it.
        let window = valid_until - valid_from;
        if window > chrono::Duration::hours(PROVISIONAL_MAX_HOURS) {
            return Err(MintError::WindowTooLong {
                max_hours: PROVISIONAL_MAX_HOURS,
                minutes: window.num_minutes(),
            });
        }
        let mut room_ids = room_ids;
        room_ids.sort();
        room_ids.dedup();
        if room_ids.is_empty() {
            return Err(MintError::NoRoom);
        }
        Ok(Self {
            provisional_id: ProvisionalId::parse(&format!("prov_{}", crate::agent::ulid_like()))
                .expect("prov_ and 26 base32 characters is a valid provisional id"),
            certificate_id,
            kind,
            reservation_id,
            room_ids,
            valid_from,
            valid_until,
            minted_at: millis(minted_at),
        })
    }

    /// The desk's id for it.
    pub fn provisional_id(&self) -> &ProvisionalId {
        &self.provisional_id
    }

    /// The certificate it is minted under.
    pub fn certificate_id(&self) -> &OfflineIssuanceId {
        &self.certificate_id
    }

    /// The kind to mint.
    pub fn kind(&self) -> KeyCredentialKind {
        self.kind
    }

    /// The rooms it opens.
    pub fn room_ids(&self) -> &[RoomId] {
        &self.room_ids
    }

    /// Start of validity.
    pub fn valid_from(&self) -> DateTime<Utc> {
        self.valid_from
    }

    /// End of validity.
    pub fn valid_until(&self) -> DateTime<Utc> {
        self.valid_until
    }

    /// The credential, signed with `key` over its canonical payload; `card_number` is what
    /// the encoder read back when a card was encoded for it.
    pub fn sign(self, key: &AgentKey, card_number: Option<CardNumber>) -> ProvisionalCredential {
        let mut credential = ProvisionalCredential {
            provisional_id: self.provisional_id,
            certificate_id: self.certificate_id.as_str().to_owned(),
            kind: self.kind.as_str().to_owned(),
            reservation_id: Some(self.reservation_id.as_str().to_owned()),
            room_ids: self
                .room_ids
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
            valid_from: self.valid_from,
            valid_until: self.valid_until,
            minted_at: self.minted_at,
            card_number,
            // replaced below, once the payload it signs is complete
            signature: SignatureB64::from_signature(&ed25519_dalek::Signature::from_bytes(
                &[0u8; 64],
            )),
        };
        credential.signature =
            SignatureB64::from_signature(&key.sign(credential.signed_payload().as_bytes()));
        credential
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier as _;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2027-03-01T14:00:00.123456Z")
            .expect("a valid timestamp")
            .with_timezone(&Utc)
            + chrono::Duration::hours(h)
    }

    fn draft(hours: i64) -> Result<ProvisionalDraft, MintError> {
        ProvisionalDraft::new(
            OfflineIssuanceId::generate(),
            KeyCredentialKind::RfidCard,
            ReservationId::parse("rsv_1").expect("a reservation id"),
            vec![RoomId::parse("rmu_1").expect("a room id")],
            at(0),
            at(hours),
            at(0),
        )
    }

    #[test]
    fn a_minted_credential_verifies_with_the_desks_key() {
        let key = AgentKey::from_seed([7u8; 32]);
        let card = CardNumber::parse("1234567890").expect("a card number");
        let p = draft(48)
            .expect("48 hours is allowed")
            .sign(&key, Some(card));
        let public = ed25519_dalek::VerifyingKey::from_bytes(
            &base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                key.public_key_base64(),
            )
            .expect("base64")
            .try_into()
            .expect("32 bytes"),
        )
        .expect("a public key");
        assert!(public
            .verify(p.signed_payload().as_bytes(), &p.signature.to_signature())
            .is_ok());
        assert_eq!(p.valid_from.timestamp_subsec_micros(), 123_000);
        assert_eq!(p.kind, "rfid_card");
        assert_eq!(p.reservation_id.as_deref(), Some("rsv_1"));
        assert!(p.provisional_id.as_str().starts_with("prov_"));
    }

    #[test]
    fn over_48_hours_is_refused_at_minting() {
        assert_eq!(
            draft(49),
            Err(MintError::WindowTooLong {
                max_hours: 48,
                minutes: 49 * 60
            })
        );
        assert_eq!(draft(0), Err(MintError::EmptyWindow));
        let no_room = ProvisionalDraft::new(
            OfflineIssuanceId::generate(),
            KeyCredentialKind::RfidCard,
            ReservationId::parse("rsv_1").expect("a reservation id"),
            Vec::new(),
            at(0),
            at(1),
            at(0),
        );
        assert_eq!(no_room, Err(MintError::NoRoom));
    }
}
