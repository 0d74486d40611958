//! What the store reads and writes, as plain data.

use lockstep_domain::credential::KeyCredentialSnapshot;
use lockstep_domain::{
    CommonArea, DeviceRef, KeyCredentialId, LockDeviceId, Pin, PropertyId, RoomId, TenantId,
    Timestamp, VendorAdapterId, VendorCode, VendorRef,
};

/// Ownership of a partition at an epoch (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    /// Partition number.
    pub partition: i32,
    /// Epoch taken.
    pub epoch: i64,
}

/// A consumed message on its way into the mailbox.
#[derive(Clone, Debug)]
pub struct IntakeMessage {
    /// Broker message id (envelope id), the dedupe key with `consumer`.
    pub message_id: String,
    /// Consumer name.
    pub consumer: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Partition.
    pub partition: i32,
    /// Saga subject (e.g. `reservation:rsv_…`).
    pub subject: String,
    /// Topic subject.
    pub topic: String,
    /// Validated envelope.
    pub payload: serde_json::Value,
    /// When received.
    pub received_at: Timestamp,
}

/// Result of intake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// Stored in the mailbox.
    Accepted,
    /// Seen before: nothing stored.
    Duplicate,
}

/// What a mailbox entry asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailboxKind {
    /// A consumed event.
    Event {
        /// Message id.
        message_id: String,
        /// Topic.
        topic: String,
    },
    /// Drive a credential's vendor operations to completion.
    Drive {
        /// Which credential.
        credential_id: KeyCredentialId,
    },
}

/// One mailbox entry.
#[derive(Clone, Debug)]
pub struct MailboxEntry {
    /// Id (the per-subject order).
    pub id: i64,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Partition.
    pub partition: i32,
    /// Subject.
    pub subject: String,
    /// What it asks.
    pub kind: MailboxKind,
    /// Payload (the event envelope for events).
    pub payload: serde_json::Value,
    /// Due time.
    pub due_at: Timestamp,
    /// Attempts so far.
    pub attempts: i32,
    /// When it was stored (for a consumed event: when Lockstep received it).
    pub created_at: Timestamp,
}

/// A subject with due work.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubjectRef {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Partition.
    pub partition: i32,
    /// Subject.
    pub subject: String,
}

/// A subject with due work ([`crate::tables::ReadOnlyTimerTable::due_subjects`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueSubject {
    /// The subject.
    pub subject: SubjectRef,
    /// Some of the due work may take a key off a door: an open event of a removal topic,
    /// or a drive of a credential with a door row to remove. Its wake goes before
    /// waiting issuances (issue 11, revocations first: after an outage, the retries that
    /// come due together are woken by timers, not by the removal's message).
    pub removal: bool,
}

/// Progress on a mailbox entry.
#[derive(Clone, Debug)]
pub enum MailboxUpdate {
    /// Finished.
    Done {
        /// Entry.
        id: i64,
        /// The entry's subject.
        subject: String,
        /// Short outcome (`applied`, `ignored:stale`, ...).
        outcome: String,
    },
    /// Try again at `due_at` (a durable timer).
    Retry {
        /// Entry.
        id: i64,
        /// The entry's subject.
        subject: String,
        /// When.
        due_at: Timestamp,
        /// Attempts so far.
        attempts: i32,
        /// Last error, vendor-neutral and secret-free.
        last_error: String,
    },
}

/// Schedules (or brings forward) the one open drive entry of a credential.
#[derive(Clone, Debug)]
pub struct ScheduleDrive {
    /// Property.
    pub property_id: PropertyId,
    /// Partition.
    pub partition: i32,
    /// Subject.
    pub subject: String,
    /// Credential.
    pub credential_id: KeyCredentialId,
    /// When.
    pub due_at: Timestamp,
}

/// An event a saga sends itself: a durable timer or feedback from its own steps.
#[derive(Clone, Debug)]
pub struct InternalEvent {
    /// Property.
    pub property_id: PropertyId,
    /// Partition.
    pub partition: i32,
    /// Saga subject.
    pub subject: String,
    /// Internal topic (`lockstep.internal.*`).
    pub topic: String,
    /// Payload.
    pub payload: serde_json::Value,
    /// When it is due.
    pub due_at: Timestamp,
}

/// Whether a credential should exist on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desired {
    /// Should be at the door.
    Present,
    /// Should be gone from the door.
    Absent,
}

/// Whether the door agrees with `Desired` (DESIGN §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Not yet confirmed by the vendor.
    Pending,
    /// Confirmed.
    Confirmed,
    /// Given up.
    Failed,
}

impl Desired {
    /// Column value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Absent => "absent",
        }
    }
    /// Parses a column value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "present" => Some(Self::Present),
            "absent" => Some(Self::Absent),
            _ => None,
        }
    }
}

impl SyncState {
    /// Column value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
        }
    }
    /// Parses a column value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "confirmed" => Some(Self::Confirmed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One (credential, device) row, decrypted.
#[derive(Clone, Debug)]
pub struct CredentialDevice {
    /// Credential.
    pub credential_id: KeyCredentialId,
    /// Device.
    pub device_id: LockDeviceId,
    /// The vendor's id of the device.
    pub device_ref: DeviceRef,
    /// Adapter serving the device.
    pub vendor_adapter_id: VendorAdapterId,
    /// Target.
    pub desired: Desired,
    /// Door truth.
    pub sync: SyncState,
    /// PIN, for `pin_code`.
    pub pin: Option<Pin>,
    /// The vendor's reference, once known.
    pub vendor_ref: Option<VendorRef>,
    /// Vendor attempts made (>0 means a call may have reached the vendor).
    pub attempts: i32,
    /// PIN collisions so far.
    pub pin_collisions: i32,
    /// Last error.
    pub last_error: Option<String>,
    /// When Lockstep learned the credential must leave this device (set while it should
    /// be absent; the start of the stale-key window).
    pub removal_requested_at: Option<Timestamp>,
}

/// Write of one (credential, device) row. `pin`/`vendor_ref` `None` keep the stored value.
#[derive(Clone, Debug)]
pub struct DeviceSyncWrite {
    /// Credential.
    pub credential_id: KeyCredentialId,
    /// Device.
    pub device_id: LockDeviceId,
    /// Target.
    pub desired: Desired,
    /// Door truth.
    pub sync: SyncState,
    /// New PIN.
    pub pin: Option<Pin>,
    /// New vendor ref.
    pub vendor_ref: Option<VendorRef>,
    /// Attempts.
    pub attempts: i32,
    /// PIN collisions.
    pub pin_collisions: i32,
    /// Last error.
    pub last_error: Option<String>,
}

impl DeviceSyncWrite {
    /// A write that keeps everything of `d` (then change what the step changes).
    pub fn from_current(d: &CredentialDevice) -> Self {
        Self {
            credential_id: d.credential_id.clone(),
            device_id: d.device_id.clone(),
            desired: d.desired,
            sync: d.sync,
            pin: None,
            vendor_ref: None,
            attempts: d.attempts,
            pin_collisions: d.pin_collisions,
            last_error: d.last_error.clone(),
        }
    }
}

/// Write of the credential aggregate.
#[derive(Clone, Debug)]
pub struct CredentialWrite {
    /// State after the step.
    pub snapshot: KeyCredentialSnapshot,
    /// Version read before the step; `None` inserts a new credential.
    pub expected_version: Option<i64>,
}

/// A row of the transactional outbox.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    /// Event id (ULID).
    pub id: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Aggregate.
    pub aggregate_id: String,
    /// Subject / routing key.
    pub topic: String,
    /// Event data.
    pub payload: serde_json::Value,
    /// Full envelope as published.
    pub envelope: serde_json::Value,
    /// Created.
    pub created_at: Timestamp,
    /// Publish attempts so far.
    pub publish_attempts: i32,
}

/// A row of `lock_audit`.
#[derive(Clone, Debug)]
pub struct AuditRow {
    /// Id.
    pub id: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Credential.
    pub credential_id: Option<KeyCredentialId>,
    /// Device.
    pub device_id: Option<LockDeviceId>,
    /// `saga`, `operator`, `webhook`.
    pub actor_kind: String,
    /// Action.
    pub action: String,
    /// Reason.
    pub reason: Option<String>,
    /// Vendor.
    pub vendor: Option<VendorCode>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// When.
    pub created_at: Timestamp,
    /// Extra facts (never PII, secrets or vendor refs).
    pub payload: serde_json::Value,
}

/// One saga step's writes, applied in one transaction by [`crate::Store::commit`].
#[derive(Clone, Debug)]
pub struct UnitOfWork {
    /// Tenant the step runs under.
    pub tenant_id: TenantId,
    /// Partition fence checked before commit.
    pub fence: Option<Fence>,
    /// Time of the step.
    pub now: Timestamp,
    /// Aggregate write.
    pub credentials: Vec<CredentialWrite>,
    /// Door-truth writes.
    pub devices: Vec<DeviceSyncWrite>,
    /// When Lockstep learned what this step carries out (the triggering message's
    /// arrival); a door-truth row that becomes `absent` records it as the start of its
    /// stale-key window. `None`: the step's time.
    pub learned_at: Option<Timestamp>,
    /// Saga state write: (subject, state).
    pub saga: Option<(String, serde_json::Value)>,
    /// Outbox rows.
    pub outbox: Vec<OutboxRow>,
    /// Audit rows.
    pub audit: Vec<AuditRow>,
    /// Mailbox progress.
    pub mailbox: Vec<MailboxUpdate>,
    /// Drives to schedule.
    pub schedule: Vec<ScheduleDrive>,
    /// Internal events for a saga (its timers and feedback), due at a time.
    pub events: Vec<InternalEvent>,
    /// Master key write (insert, or set `revoked_at`).
    pub master: Option<MasterKeyWrite>,
    /// A device's new health reading (the probe's result).
    pub device_health: Vec<DeviceHealthWrite>,
    /// Door attempts to append (A-1, A-2: a second row with the same vendor event id
    /// refuses the whole commit).
    pub attempts: Vec<lockstep_domain::KeyCredentialAttempt>,
    /// Webhook deliveries to record (unique per tenant, vendor and external id).
    pub webhooks: Vec<WebhookInboxRow>,
}

/// One received webhook delivery (spec `004` `webhook_inbox`), already handled.
#[derive(Clone, Debug)]
pub struct WebhookInboxRow {
    /// `whk_` ULID.
    pub id: String,
    /// Vendor.
    pub vendor: lockstep_domain::VendorCode,
    /// The delivery's id at the vendor (or a digest of it where the vendor sends none).
    pub external_event_id: String,
    /// Its type (`lock_records`, ...).
    pub kind: String,
    /// A sanitized payload: never a PIN, card number or vendor reference.
    pub payload: serde_json::Value,
    /// Whether its authenticity was proven (signature, or read-back from the vendor).
    pub signature_ok: bool,
    /// When it arrived.
    pub received_at: Timestamp,
    /// How its handling ended.
    pub outcome: String,
}

/// A device's health reading to store (spec `003` §2): `online`, battery, firmware and
/// clock skew; `last_seen_at` moves only when the device is online.
#[derive(Clone, Debug)]
pub struct DeviceHealthWrite {
    /// The device.
    pub device_id: LockDeviceId,
    /// The reading.
    pub health: lockstep_domain::DeviceHealth,
}

/// What the registry holds of a device's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDeviceHealth {
    /// The last reading; `None` before the first probe.
    pub last: Option<lockstep_domain::DeviceHealth>,
    /// D-4: its battery threshold.
    pub threshold: lockstep_domain::BatteryThreshold,
    /// D-2: decommissioned devices read offline and are not probed.
    pub decommissioned: bool,
    /// When it was last seen online.
    pub last_seen_at: Option<Timestamp>,
}

impl UnitOfWork {
    /// An empty unit of work.
    pub fn new(tenant_id: TenantId, fence: Option<Fence>, now: Timestamp) -> Self {
        Self {
            tenant_id,
            fence,
            now,
            credentials: Vec::new(),
            events: Vec::new(),
            devices: Vec::new(),
            learned_at: None,
            saga: None,
            outbox: Vec::new(),
            audit: Vec::new(),
            mailbox: Vec::new(),
            schedule: Vec::new(),
            master: None,
            device_health: Vec::new(),
            attempts: Vec::new(),
            webhooks: Vec::new(),
        }
    }
}

/// A row of `master_keys` (spec 004 §3): a staff member's master key, backed by a
/// `staff_master` credential (M-1, enforced by a foreign key).
#[derive(Clone, Debug, PartialEq)]
pub struct MasterKeyRecord {
    /// Id (`mky_…`).
    pub id: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Staff user holding the key.
    pub staff_user_id: String,
    /// Shift the key was issued for, if any.
    pub shift_id: Option<String>,
    /// The `staff_master` credential behind the key.
    pub key_credential_id: KeyCredentialId,
    /// The kind of scope (e.g. `floors`, `areas`, `property`); M-2 allows one active key
    /// per (property, staff user, scope kind), enforced by a partial unique index.
    pub scope_kind: String,
    /// Scope as JSON.
    pub scope: serde_json::Value,
    /// Start of validity.
    pub valid_from: Timestamp,
    /// End of validity (exclusive).
    pub valid_until: Timestamp,
    /// When issued.
    pub issued_at: Timestamp,
    /// When revoked.
    pub revoked_at: Option<Timestamp>,
}

/// A master key write inside a [`UnitOfWork`].
// One per unit of work, moved once: boxing the record would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum MasterKeyWrite {
    /// Inserts a new key. A second active key of the same (tenant, property, staff user,
    /// scope kind) fails with [`crate::StoreError::Constraint`] (M-2); renewal is revoke,
    /// then insert.
    Insert(MasterKeyRecord),
    /// Sets `revoked_at` (the first revocation time is kept; revoking again is a no-op).
    /// An unknown id fails with [`crate::StoreError::Conflict`].
    Revoke {
        /// Master key id.
        id: String,
        /// When.
        revoked_at: Timestamp,
    },
}

/// A property's key-kind policy (`key_kind_policies`, spec 003 §4, spec 004 §3). One per
/// (tenant, property). Kinds are the wire names (`pin_code`, `rfid_card`, …).
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyRecord {
    /// Id (`kkp_…`); an upsert of an existing (tenant, property) keeps the stored id.
    pub id: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Kinds in order of preference; non-empty (K-1, checked by the schema).
    pub preferred_order: Vec<String>,
    /// Kinds to fall back to.
    pub fallback_chain: Vec<String>,
    /// At most 720 (K-2, checked by the schema).
    pub max_valid_until_extension_hours: i32,
    /// Kinds that need ID verification.
    pub id_verify_required_for: Vec<String>,
    /// Hours after check-in time before a no-show's credentials are suspended.
    pub no_show_suspend_after_hours: i32,
    /// Kinds the offline adapter may mint.
    pub allow_offline_issuance_kinds: Vec<String>,
    /// Last change.
    pub updated_at: Timestamp,
}

/// A credential of a property, with what routes it to its saga: the reservation for a
/// guest credential, the staff user (and shift) for a master credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyCredential {
    /// Credential.
    pub id: KeyCredentialId,
    /// State (`requested`, `pending`, `active`, `suspended`, `revoked`, `failed`).
    pub state: String,
    /// `guest` or `staff_master`.
    pub holder_kind: String,
    /// Reservation, for a guest credential.
    pub reservation_id: Option<String>,
    /// Staff user, for a master credential.
    pub staff_user_id: Option<String>,
    /// Shift of the master key backed by the credential, if any.
    pub shift_id: Option<String>,
}

/// Door truth not yet confirmed, across tenants (metrics; DESIGN §3.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DoorBacklog {
    /// (credential, device) rows that should be gone from the door and are not confirmed
    /// gone: "revoked" that is not yet a shut door.
    pub pending_removals: i64,
    /// `updated_at` of the oldest of those.
    pub oldest_pending_removal: Option<Timestamp>,
    /// Rows that should be at the door and are not confirmed there.
    pub pending_issues: i64,
}

/// A device of the registry, decrypted.
#[derive(Clone, Debug)]
pub struct Device {
    /// Id.
    pub id: LockDeviceId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Vendor.
    pub vendor: VendorCode,
    /// Adapter.
    pub vendor_adapter_id: VendorAdapterId,
    /// Vendor device id.
    pub device_ref: DeviceRef,
    /// Label.
    pub label: String,
    /// Rooms it serves (of those asked for, in `devices_for_rooms`).
    pub rooms: Vec<RoomId>,
    /// The common area (or back of house) it opens, if any (migration 0016; master-key
    /// area scopes).
    pub area: Option<CommonArea>,
}

/// What a decommission (D-2) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decommission {
    /// No such device in the tenant.
    Unknown,
    /// Retired now, its event written.
    Done(Timestamp),
    /// Retired before, at this time: nothing written.
    Already(Timestamp),
}

/// A vendor adapter row.
#[derive(Clone, Debug)]
pub struct AdapterRecord {
    /// Id.
    pub id: VendorAdapterId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Vendor.
    pub vendor: VendorCode,
    /// `sandbox` or `production`.
    pub environment: String,
    /// Capabilities as JSON.
    pub capabilities: serde_json::Value,
    /// Non-secret config (URLs, rate limits, secret pointers), encrypted at rest.
    pub config: serde_json::Value,
    /// Spec `003` §3 `enabled`.
    pub enabled: bool,
    /// Spec `003` §3 `precedence`.
    pub precedence: i32,
    /// When.
    pub now: Timestamp,
}

/// A device registration.
#[derive(Clone, Debug)]
pub struct DeviceRecord {
    /// Id.
    pub id: LockDeviceId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Vendor.
    pub vendor: VendorCode,
    /// Adapter.
    pub vendor_adapter_id: VendorAdapterId,
    /// Vendor device id.
    pub device_ref: DeviceRef,
    /// Label.
    pub label: String,
    /// Capabilities as JSON.
    pub capabilities: serde_json::Value,
    /// Rooms.
    pub rooms: Vec<RoomId>,
    /// The common area (or back of house) it opens, if any (master-key area scopes).
    pub area: Option<CommonArea>,
    /// When.
    pub now: Timestamp,
    /// Outbox rows written only if this registers a new device (`lock.device.registered`),
    /// in the same transaction.
    pub on_register: Vec<OutboxRow>,
}

/// A `vendor_credentials` row (spec `004` §3): where an adapter's secrets live and the
/// fingerprint of their current bytes. V-2: pointers only, never the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorCredentialRecord {
    /// `vcr_…`.
    pub id: lockstep_domain::VendorCredentialId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Vendor.
    pub vendor: VendorCode,
    /// `sandbox` or `production`.
    pub environment: String,
    /// Where the secrets are read from (`env:NAME`, `file:/path`, `inline`), never a value.
    pub secret_resource_name: String,
    /// SHA-256 of the secrets' current bytes.
    pub fingerprint: String,
    /// Next scheduled rotation.
    pub rotates_at: Timestamp,
    /// When it was written or found changed.
    pub updated_at: Timestamp,
}

/// What recording a vendor credential found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialChange {
    /// First record of the adapter's credential.
    New,
    /// The fingerprint changed: the secret was rotated.
    Rotated,
    /// Same secret as recorded.
    Unchanged,
}

/// Encryption contexts: a ciphertext is bound to the row it belongs to.
pub mod context {
    use lockstep_domain::{KeyCredentialId, LockDeviceId, VendorAdapterId};

    /// Domain of the blind index of vendor device refs (D-1).
    pub const DEVICE_REF_INDEX: &str = "lock_devices.vendor_device_ref";

    /// PIN of (credential, device).
    pub fn pin(c: &KeyCredentialId, d: &LockDeviceId) -> String {
        format!("pin:{c}:{d}")
    }
    /// Vendor ref of (credential, device).
    pub fn vendor_ref(c: &KeyCredentialId, d: &LockDeviceId) -> String {
        format!("vref:{c}:{d}")
    }
    /// Vendor device ref of a device.
    pub fn device_ref(d: &LockDeviceId) -> String {
        format!("dref:{d}")
    }
    /// Adapter config.
    pub fn adapter_config(a: &VendorAdapterId) -> String {
        format!("vadcfg:{a}")
    }

    /// The tables with one encrypted column keyed by `id` (key rotation): table, column
    /// prefix (`<prefix>_ciphertext`, `<prefix>_kms_version`), and the row id's context.
    pub type IdContext = fn(&str) -> Result<String, lockstep_domain::DomainError>;

    /// See [`IdContext`].
    pub fn single_secret_columns() -> [(&'static str, &'static str, IdContext); 4] {
        [
            ("lock_devices", "vendor_device_ref", |id| {
                Ok(device_ref(&LockDeviceId::parse(id)?))
            }),
            ("vendor_adapters", "config", |id| {
                Ok(adapter_config(&VendorAdapterId::parse(id)?))
            }),
            // card numbers the desk readers read (issue 12)
            ("encode_jobs", "card_number", |id| Ok(format!("card:{id}"))),
            ("provisional_credentials", "card_number", |id| {
                Ok(format!("pcard:{id}"))
            }),
        ]
    }
}

/// Filters of the credential list (`GET /api/v1/key-credentials`); every field set must
/// hold. Results are ordered by id (ULIDs: creation order) and start after `after`.
#[derive(Clone, Debug, Default)]
pub struct CredentialFilter {
    /// Property.
    pub property_id: Option<String>,
    /// Reservation (or booking).
    pub reservation_id: Option<String>,
    /// Guest.
    pub guest_id: Option<String>,
    /// Staff member (master keys).
    pub staff_user_id: Option<String>,
    /// State.
    pub state: Option<String>,
    /// A room the credential opens.
    pub room_id: Option<String>,
    /// Credentials that open their doors at this instant: `pending` or `active` (a pending
    /// key may already be on the lock) and within their window.
    pub opens_at: Option<Timestamp>,
    /// Cursor: the last id of the previous page.
    pub after: Option<String>,
}
