//! Identifier newtypes. Lockstep's own ids are `<prefix>_<ULID>` (spec `004` §1); ids owned
//! by other services (properties, reservations, rooms, guests, users) are validated for a
//! safe shape; the tenant id is a UUID (spec `004`'s `tenant_id uuid`, see ARCHITECTURE.md
//! deviations).

use std::fmt;
use std::str::FromStr;

use crate::errors::DomainError;

macro_rules! lockstep_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The id prefix of spec `004` §1.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id from a ULID.
            pub fn from_ulid(ulid: ulid::Ulid) -> Self {
                Self(format!("{}{}", $prefix, ulid))
            }

            /// A fresh random id (ULID: time-ordered, 80 random bits).
            pub fn generate() -> Self {
                Self::from_ulid(ulid::Ulid::new())
            }

            /// Parses `<prefix><26-char ULID>`.
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                let rest = s.strip_prefix($prefix).ok_or_else(|| {
                    DomainError::validation(stringify!($name), format!("must start with {}", $prefix))
                })?;
                ulid::Ulid::from_string(rest).map_err(|_| {
                    DomainError::validation(stringify!($name), "must end in a 26-character ULID")
                })?;
                Ok(Self(s.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

lockstep_id!(/// A `KeyCredential` (`key_`).
    KeyCredentialId, "key_");
lockstep_id!(/// A `LockDevice` (`lck_`).
    LockDeviceId, "lck_");
lockstep_id!(/// A door-access attempt (`kca_`).
    KeyCredentialAttemptId, "kca_");
lockstep_id!(/// A `VendorAdapter` (`vad_`).
    VendorAdapterId, "vad_");
lockstep_id!(/// A `VendorCredential` (`vcr_`).
    VendorCredentialId, "vcr_");
lockstep_id!(/// An `EncoderSession` (`enc_`).
    EncoderSessionId, "enc_");
lockstep_id!(/// A `MasterKey` (`mky_`).
    MasterKeyId, "mky_");
lockstep_id!(/// A `KeyKindPolicy` (`kkp_`).
    KeyKindPolicyId, "kkp_");
lockstep_id!(/// An `OfflineIssuance` certificate (`oki_`).
    OfflineIssuanceId, "oki_");
lockstep_id!(/// An inbound vendor webhook (`whk_`).
    WebhookInboundId, "whk_");
lockstep_id!(/// A door anomaly Lockstep detected (`anm_`; not in spec `004`, see ARCHITECTURE.md).
    AnomalyId, "anm_");

/// Longest foreign id accepted.
const FOREIGN_ID_MAX: usize = 64;

macro_rules! foreign_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Accepts 1..=64 characters of `[A-Za-z0-9_-]`: ids of other services are
            /// opaque to Lockstep but must be safe to store, log and route on.
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                if s.is_empty() || s.len() > FOREIGN_ID_MAX {
                    return Err(DomainError::validation(
                        stringify!($name),
                        "must be 1 to 64 characters",
                    ));
                }
                if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                    return Err(DomainError::validation(
                        stringify!($name),
                        "may hold only letters, digits, '_' and '-'",
                    ));
                }
                Ok(Self(s.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

foreign_id!(/// A property of the property service.
    PropertyId);
foreign_id!(/// A reservation of the reservation service.
    ReservationId);
foreign_id!(/// A room of the property service.
    RoomId);
foreign_id!(/// A guest of the guest service (never more than the id: PII stays out).
    GuestId);
foreign_id!(/// A user of the IAM service (staff).
    UserId);
foreign_id!(/// A shift of the staff service (the subject of a master key's saga).
    ShiftId);

/// A tenant: a UUID, as spec `004` declares `tenant_id uuid`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(uuid::Uuid);

impl TenantId {
    /// Parses a UUID in its hyphenated form.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| DomainError::validation("TenantId", "must be a UUID"))
    }

    /// Wraps a UUID.
    pub fn from_uuid(u: uuid::Uuid) -> Self {
        Self(u)
    }

    /// A random tenant id (tests, demo data).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for TenantId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockstep_ids_carry_their_prefix_and_a_ulid() {
        let id = KeyCredentialId::generate();
        assert!(id.as_str().starts_with("key_"));
        assert_eq!(id.as_str().len(), 4 + 26);
        assert_eq!(KeyCredentialId::parse(id.as_str()).unwrap(), id);
        assert!(KeyCredentialId::parse("lck_01HX5JZ7QK3M2N4P5R6S7T8V9W").is_err());
        assert!(KeyCredentialId::parse("key_notaulid").is_err());
    }

    #[test]
    fn foreign_ids_refuse_unsafe_text() {
        assert!(RoomId::parse("rmu_204").is_ok());
        assert!(RoomId::parse("").is_err());
        assert!(RoomId::parse("204; DROP TABLE").is_err());
        assert!(RoomId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn tenant_ids_are_uuids() {
        assert!(TenantId::parse("5f0c7a4e-7a2b-4c1d-9e8f-0a1b2c3d4e5f").is_ok());
        assert!(TenantId::parse("tnt_01HX").is_err());
    }
}
