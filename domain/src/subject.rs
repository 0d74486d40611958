//! The saga subject: whose single writer carries out a mailbox entry (DESIGN §12: sagas are
//! keyed by subject). It is stored, routed and logged as text (`reservation:<id>`,
//! `shift:<id>`, `property:<id>`, `user:<id>`; the tenant is beside it in storage), and
//! parsed once where a step begins, so what a step does for a reservation or a shift is a
//! `match`, not a prefix test on a string.

use std::fmt;
use std::str::FromStr;

use crate::errors::DomainError;
use crate::ids::{PropertyId, ReservationId, ShiftId, UserId};

/// The subject a saga step belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SagaSubject {
    /// A stay: a reservation, or a coworking booking (spec `001`), and the guest
    /// credentials it owns.
    Reservation(ReservationId),
    /// A staff shift and the master key it owns.
    Shift(ShiftId),
    /// A property-wide event (`tenant.property.deactivated`): it owns no credential and
    /// fans out to the subjects that do.
    Property(PropertyId),
    /// A user-wide event (`iam.user.deactivated`): it owns no credential and fans out to
    /// the user's shifts.
    User(UserId),
}

impl SagaSubject {
    const RESERVATION: &'static str = "reservation";
    const SHIFT: &'static str = "shift";
    const PROPERTY: &'static str = "property";
    const USER: &'static str = "user";

    /// Parses `<kind>:<id>`, where the kind is one of `reservation`, `shift`, `property`
    /// and `user` (exactly, lowercase) and the id is valid for that kind. Foreign ids hold
    /// no `:`, so the first one separates them.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let (kind, id) = s.split_once(':').ok_or_else(|| {
            DomainError::validation("subject", "must be <kind>:<id>, e.g. reservation:rsv_1")
        })?;
        match kind {
            Self::RESERVATION => ReservationId::parse(id).map(Self::Reservation),
            Self::SHIFT => ShiftId::parse(id).map(Self::Shift),
            Self::PROPERTY => PropertyId::parse(id).map(Self::Property),
            Self::USER => UserId::parse(id).map(Self::User),
            _ => Err(DomainError::validation(
                "subject",
                "kind must be reservation, shift, property or user",
            )),
        }
    }

    /// The kind before the `:`, a bounded label (logs, metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Reservation(_) => Self::RESERVATION,
            Self::Shift(_) => Self::SHIFT,
            Self::Property(_) => Self::PROPERTY,
            Self::User(_) => Self::USER,
        }
    }

    /// The reservation, when the subject is a stay.
    pub fn reservation(&self) -> Option<&ReservationId> {
        match self {
            Self::Reservation(id) => Some(id),
            _ => None,
        }
    }

    /// The shift, when the subject is one.
    pub fn shift(&self) -> Option<&ShiftId> {
        match self {
            Self::Shift(id) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for SagaSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = match self {
            Self::Reservation(id) => id.as_str(),
            Self::Shift(id) => id.as_str(),
            Self::Property(id) => id.as_str(),
            Self::User(id) => id.as_str(),
        };
        write!(f, "{}:{id}", self.kind())
    }
}

impl FromStr for SagaSubject {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(s: &str) -> SagaSubject {
        let subject = SagaSubject::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(subject.to_string(), s, "display gives back what was parsed");
        assert_eq!(s.parse::<SagaSubject>().as_ref(), Ok(&subject));
        subject
    }

    #[test]
    fn each_kind_parses_and_displays_the_stored_text() {
        assert_eq!(
            round_trip("reservation:rsv_123"),
            SagaSubject::Reservation(ReservationId::parse("rsv_123").unwrap())
        );
        assert_eq!(
            round_trip("shift:shf_m-2"),
            SagaSubject::Shift(ShiftId::parse("shf_m-2").unwrap())
        );
        assert_eq!(
            round_trip("property:prop_9"),
            SagaSubject::Property(PropertyId::parse("prop_9").unwrap())
        );
        assert_eq!(
            round_trip("user:usr_7"),
            SagaSubject::User(UserId::parse("usr_7").unwrap())
        );
    }

    #[test]
    fn the_sagas_subjects_are_the_text_they_have_always_stored() {
        let r = ReservationId::parse("rsv_1").unwrap();
        let s = ShiftId::parse("shf_1").unwrap();
        assert_eq!(
            crate::saga::subject_for_reservation(&r),
            "reservation:rsv_1"
        );
        assert_eq!(crate::shift::subject_for_shift(&s), "shift:shf_1");
    }

    #[test]
    fn accessors_name_only_their_own_kind() {
        let r = round_trip("reservation:rsv_1");
        let s = round_trip("shift:shf_1");
        assert_eq!(r.reservation().map(|id| id.as_str()), Some("rsv_1"));
        assert_eq!(r.shift(), None);
        assert_eq!(s.shift().map(|id| id.as_str()), Some("shf_1"));
        assert_eq!(s.reservation(), None);
        assert_eq!(round_trip("user:usr_1").reservation(), None);
        assert_eq!(round_trip("property:p").shift(), None);
        assert_eq!(
            [&r, &s].map(SagaSubject::kind),
            [SagaSubject::RESERVATION, SagaSubject::SHIFT]
        );
    }

    #[test]
    fn malformed_subjects_are_refused() {
        for bad in [
            "",
            "reservation",
            "rsv_123",
            ":rsv_123",
            "reservation:",
            "shift:",
            "Reservation:rsv_1",
            "booking:bkg_1",
            "tenant:5f0c7a4e-7a2b-4c1d-9e8f-0a1b2c3d4e5f",
            " reservation:rsv_1",
            "reservation:rsv 1",
            "reservation:rsv_1:extra",
            "shift:shf/1",
            "user:usr_1\n",
        ] {
            let err = SagaSubject::parse(bad).expect_err(bad);
            assert!(
                matches!(err, DomainError::Validation { .. }),
                "{bad:?}: {err:?}"
            );
        }
        let long = format!("reservation:{}", "a".repeat(65));
        assert!(SagaSubject::parse(&long).is_err());
        assert!(SagaSubject::parse(&format!("reservation:{}", "a".repeat(64))).is_ok());
    }
}
