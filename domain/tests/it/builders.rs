//! Test builders (spec `003` §9): a valid credential with sensible defaults, overridden
//! field by field. They live here, in tests only, so production code cannot build an
//! aggregate that skips `KeyCredential::request`.

use chrono::{Duration, TimeZone, Utc};
use lockstep_domain::{
    GuestId, HolderKind, IssueIntent, KeyCredential, KeyCredentialId, KeyCredentialKind,
    KeyCredentialScope, KeyCredentialState, PropertyId, ReservationId, RoomId, ScopedRoom,
    TenantId, Timestamp, UserId, ValidityWindow, VendorAdapterId, VendorCode,
};

/// The tenant every builder uses unless told otherwise.
pub fn tenant() -> TenantId {
    TenantId::parse("5f0c7a4e-7a2b-4c1d-9e8f-0a1b2c3d4e5f").expect("fixed tenant is a uuid")
}

/// A tenant that is not [`tenant`].
pub fn other_tenant() -> TenantId {
    TenantId::parse("0b1c2d3e-4f50-4162-8374-8596a7b8c9d0").expect("fixed tenant is a uuid")
}

/// The property every builder uses unless told otherwise.
pub fn property() -> PropertyId {
    PropertyId::parse("ppt_01").expect("fixed property id is valid")
}

/// A property that is not [`property`].
pub fn other_property() -> PropertyId {
    PropertyId::parse("ppt_02").expect("fixed property id is valid")
}

/// `2026-05-01T14:00:00Z`, the default start of validity (spec `003` §9).
pub fn valid_from() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 5, 1, 14, 0, 0).unwrap()
}

/// `2026-05-03T11:00:00Z`, the default end of validity (spec `003` §9).
pub fn valid_until() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 5, 3, 11, 0, 0).unwrap()
}

/// `2026-04-30T10:00:00Z`, when the default credential is requested.
pub fn created_at() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 4, 30, 10, 0, 0).unwrap()
}

/// A room id.
pub fn room_id(id: &str) -> RoomId {
    RoomId::parse(id).expect("test room id is valid")
}

/// A room of the default tenant and property.
pub fn room(id: &str) -> ScopedRoom {
    ScopedRoom {
        tenant_id: tenant(),
        property_id: property(),
        room_id: room_id(id),
    }
}

/// A fixed credential id, distinct per `n`.
pub fn credential_id(n: u8) -> KeyCredentialId {
    KeyCredentialId::from_ulid(ulid::Ulid::from_parts(1_700_000_000_000, u128::from(n) + 1))
}

/// Builds an [`IssueIntent`]; start from [`a_key_credential`] or [`a_master_key`].
#[derive(Clone, Debug)]
pub struct KeyCredentialBuilder {
    intent: IssueIntent,
}

/// A valid guest credential: one room, 2026-05-01 14:00 → 2026-05-03 11:00, TTLock mobile key.
pub fn a_key_credential() -> KeyCredentialBuilder {
    KeyCredentialBuilder {
        intent: IssueIntent {
            id: credential_id(0),
            tenant_id: tenant(),
            property_id: property(),
            holder_kind: HolderKind::Guest,
            reservation_id: Some(ReservationId::parse("rsv_01").unwrap()),
            guest_id: Some(GuestId::parse("gst_01").unwrap()),
            staff_user_id: None,
            kind: KeyCredentialKind::MobileApp,
            rooms: vec![room("rmu_101")],
            scope: KeyCredentialScope::default(),
            validity: ValidityWindow::new(valid_from(), valid_until()).unwrap(),
            vendor: VendorCode::Ttlock,
            vendor_adapter_id: VendorAdapterId::from_ulid(ulid::Ulid::from_parts(
                1_700_000_000_000,
                42,
            )),
            provisional: false,
            idempotency_key: "sha256-test-idempotency-key".into(),
            replaces_id: None,
            trace_id: None,
        },
    }
}

/// A valid staff master key: a staff user, no reservation or guest, common areas only.
pub fn a_master_key() -> KeyCredentialBuilder {
    a_key_credential()
        .holder(HolderKind::StaffMaster)
        .reservation(None)
        .guest(None)
        .staff(Some("usr_01"))
        .rooms(vec![])
        .scope(KeyCredentialScope {
            floors: vec![],
            areas: vec!["lobby".into(), "gym".into()],
        })
}

impl KeyCredentialBuilder {
    /// Holder kind.
    pub fn holder(mut self, h: HolderKind) -> Self {
        self.intent.holder_kind = h;
        self
    }
    /// Reservation id (`None` to drop it).
    pub fn reservation(mut self, r: Option<&str>) -> Self {
        self.intent.reservation_id = r.map(|r| ReservationId::parse(r).unwrap());
        self
    }
    /// Guest id (`None` to drop it).
    pub fn guest(mut self, g: Option<&str>) -> Self {
        self.intent.guest_id = g.map(|g| GuestId::parse(g).unwrap());
        self
    }
    /// Staff user id (`None` to drop it).
    pub fn staff(mut self, s: Option<&str>) -> Self {
        self.intent.staff_user_id = s.map(|s| UserId::parse(s).unwrap());
        self
    }
    /// Rooms.
    pub fn rooms(mut self, rooms: Vec<ScopedRoom>) -> Self {
        self.intent.rooms = rooms;
        self
    }
    /// Scope.
    pub fn scope(mut self, scope: KeyCredentialScope) -> Self {
        self.intent.scope = scope;
        self
    }
    /// Validity starting at [`valid_from`] and lasting `d`.
    pub fn valid_for(mut self, d: Duration) -> Self {
        self.intent.validity = ValidityWindow::new(valid_from(), valid_from() + d).unwrap();
        self
    }
    /// Id.
    pub fn with_id(mut self, id: KeyCredentialId) -> Self {
        self.intent.id = id;
        self
    }
    /// Validity from `from` to `until`.
    pub fn window(mut self, from: Timestamp, until: Timestamp) -> Self {
        self.intent.validity = ValidityWindow::new(from, until).unwrap();
        self
    }
    /// Minted offline by a desktop (I-7).
    pub fn provisional(mut self, p: bool) -> Self {
        self.intent.provisional = p;
        self
    }
    /// `KeyCredential::request` at [`created_at`]; the result, for tests of refusals.
    pub fn try_request(self) -> Result<KeyCredential, lockstep_domain::DomainError> {
        KeyCredential::request(self.intent, created_at())
    }
    /// A requested credential with its `Requested` event already drained.
    pub fn requested(self) -> KeyCredential {
        let mut c = self.try_request().expect("builder defaults are valid");
        c.take_pending_events();
        c
    }
    /// A credential driven to `state` through legal transitions, events drained.
    pub fn in_state(self, state: KeyCredentialState) -> KeyCredential {
        self.in_state_revoked_as(state, lockstep_domain::RevokeReason::Checkout)
    }
    /// Like [`Self::in_state`]; a `Revoked` credential is revoked for `reason`.
    pub fn in_state_revoked_as(
        self,
        state: KeyCredentialState,
        reason: lockstep_domain::RevokeReason,
    ) -> KeyCredential {
        use lockstep_domain::FailureReason;
        let mut c = self.requested();
        let t = created_at() + Duration::minutes(1);
        match state {
            KeyCredentialState::Requested => {}
            KeyCredentialState::Failed => {
                c.mark_failed(FailureReason::VendorRefused, t).unwrap();
            }
            _ => {
                c.mark_pending(t).unwrap();
                if state != KeyCredentialState::Pending {
                    c.mark_active(t).unwrap();
                }
                match state {
                    KeyCredentialState::Suspended => {
                        c.suspend(lockstep_domain::SuspendReason::Manual, t)
                            .unwrap();
                    }
                    KeyCredentialState::Revoked => {
                        c.revoke(reason, t).unwrap();
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(c.state(), state, "builder reached the asked state");
        c.take_pending_events();
        c
    }
}
