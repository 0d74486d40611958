//! The store as one saga step sees it (DESIGN §3.8): the step's reads and its writes in
//! ONE transaction. A [`StepDb`] opens a tenant transaction (fenced by the partition) at
//! the step's first read, keeps it for every further read, and [`StepDb::commit`] applies
//! the step's [`UnitOfWork`] in it and commits. It also looks, inside that same
//! transaction, at the subject's next due mailbox entry, so the actor learns what to do
//! next without another round trip.
//!
//! A step must never hold the transaction across a vendor call ([`StepDb::release`]
//! before it): a Postgres connection and, in SQLite, the single writer would wait on the
//! vendor.
//!
//! Per-property configuration (devices and their rooms, the key-kind policy) comes from
//! the [`PropertyConfig`] cache instead of the database.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lockstep_domain::{
    CommonArea, KeyCredential, KeyCredentialId, PropertyId, RoomId, TenantId, Timestamp,
};
use lockstep_persistence::{
    CredentialDevice, Device, MailboxEntry, MasterKeyRecord, PolicyRecord, PropertyCredential,
    ReadOnlyCredentialTable, ReadOnlyDeviceTable, ReadOnlyDoorTruthTable, ReadOnlyMailboxTable,
    ReadOnlyMasterKeyTable, ReadOnlyPolicyTable, ReadOnlySagaTable, ReadOnlyUserTable, StoreError,
    StoreResult, Tx, UnitOfWork,
};

use crate::runtime::Runtime;

/// One step's view of the store.
pub struct StepDb<'a> {
    rt: &'a Runtime,
    tenant: TenantId,
    partition: i32,
    subject: String,
    tx: Option<Tx>,
    /// The step's admission, held with its transaction (removals first).
    permit: Option<crate::runtime::StepPermit>,
    /// Whether this step's work is a removal (admitted before waiting issuances).
    removal: bool,
    /// The subject's next due entry as the last commit left it (`None`: not looked).
    pub(crate) next: Option<Option<MailboxEntry>>,
    /// Wakes made in this process when the last look at the subject's mailbox (a read, or
    /// the commit's peek) began: that look saw the work of every one of them.
    pub(crate) looked: Option<u64>,
    /// Credentials whose first vendor calls this step decided, staged until its commit.
    staged: Vec<(KeyCredentialId, Vec<CredentialDevice>)>,
    /// Fresh intents: credentials whose first vendor attempt (and `pending`) was
    /// committed by a step of this drain, and not yet called. Memory only: after a crash
    /// the next owner does not know them, and looks at the vendor before retrying.
    fresh: HashMap<KeyCredentialId, (KeyCredential, Vec<CredentialDevice>)>,
}

impl std::fmt::Debug for StepDb<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepDb")
            .field("subject", &self.subject)
            .field("open", &self.tx.is_some())
            .finish()
    }
}

impl<'a> StepDb<'a> {
    /// A step of `subject` (its tenant and partition).
    pub fn new(rt: &'a Runtime, tenant: TenantId, partition: i32, subject: &str) -> Self {
        Self {
            rt,
            tenant,
            partition,
            subject: subject.to_owned(),
            tx: None,
            permit: None,
            removal: false,
            next: None,
            looked: None,
            staged: Vec::new(),
            fresh: HashMap::new(),
        }
    }

    /// Marks the step's work as a removal: its transactions are admitted before waiting
    /// issuances (revocations first).
    pub fn for_removal(mut self, removal: bool) -> Self {
        self.removal = removal;
        self
    }

    /// The runtime.
    pub(crate) fn rt(&self) -> &Runtime {
        self.rt
    }

    /// Records that this step commits the first attempt of `id` on `devices` (the intent,
    /// DESIGN §3.4): once committed, the drive that follows in this drain calls the
    /// vendor at once, with what it already knows, without reading or committing again.
    pub(crate) fn stage_fresh(&mut self, id: KeyCredentialId, devices: Vec<CredentialDevice>) {
        self.staged.push((id, devices));
    }

    /// A fresh intent of `id`, taken (the drive calls the vendor now).
    pub(crate) fn take_fresh(
        &mut self,
        id: &KeyCredentialId,
    ) -> Option<(KeyCredential, Vec<CredentialDevice>)> {
        self.fresh.remove(id)
    }

    /// Moves the fresh intents into the next step's view (the drain carries them).
    pub(crate) fn carry_into(&mut self, next: &mut StepDb<'_>) {
        next.fresh = std::mem::take(&mut self.fresh);
    }

    async fn tx(&mut self) -> StoreResult<&mut Tx> {
        if self.tx.is_none() {
            if self.permit.is_none() {
                self.permit = Some(self.rt.steps.acquire(self.removal).await);
            }
            let fence = self.rt.fences.for_commit(self.partition);
            self.tx = Some(self.rt.store.begin(self.tenant, fence).await?);
        }
        Ok(self.tx.as_mut().expect("opened just above"))
    }

    fn check(&self, tenant: TenantId) -> StoreResult<()> {
        if tenant == self.tenant {
            Ok(())
        } else {
            Err(StoreError::Constraint(
                "a step reads only its own tenant".into(),
            ))
        }
    }

    /// Ends the transaction if one is open (before a vendor call, or when the step ends
    /// without writing): nothing of it is lost, it only read.
    pub async fn release(&mut self) -> StoreResult<()> {
        if let Some(tx) = self.tx.take() {
            // the permit goes with the transaction, whatever its commit answers
            let _permit = self.permit.take();
            tx.commit().await?;
        }
        Ok(())
    }

    /// Applies the step's writes in the open transaction (or a new one), looks at the
    /// subject's next due entry, and commits.
    pub async fn commit(&mut self, uow: UnitOfWork) -> StoreResult<()> {
        let now = uow.now;
        self.check(uow.tenant_id)?;
        self.tx().await?;
        let mut tx = self.tx.take().expect("opened just above");
        let _permit = self.permit.take();
        // a refused write (I-9, a stale version, the fence) ends the transaction: nothing
        // of the step is kept, and a retry starts afresh
        let staged = std::mem::take(&mut self.staged);
        tx.apply(&uow).await?;
        // as in `next_mailbox_entry`: a wake made by now is for work due by now
        self.looked = Some(crate::actors::wakes_made());
        let next = tx
            .next_mailbox_entry(&self.subject, now.max(self.rt.clock.now()))
            .await?;
        tx.commit().await?;
        self.next = Some(next);
        for (id, devices) in staged {
            let written = uow.credentials.iter().rev().find(|w| w.snapshot.id == id);
            if let Some(c) = written.and_then(|w| KeyCredential::restore(w.snapshot.clone()).ok()) {
                self.fresh.insert(id, (c, devices));
            }
        }
        if !uow.outbox.is_empty() {
            self.rt.outbox_ready.notify_one();
        }
        if !uow.audit.is_empty() {
            self.rt.audit_ready.notify_one();
        }
        Ok(())
    }

    /// The oldest open, due mailbox entry of the subject.
    pub async fn next_mailbox_entry(
        &mut self,
        tenant: TenantId,
        subject: &str,
        now: Timestamp,
    ) -> StoreResult<Option<MailboxEntry>> {
        self.check(tenant)?;
        self.tx().await?;
        // the look begins now: it sees the work of every wake made so far, which was
        // stored, and due, before its wake was made (hence the later of the two times)
        self.looked = Some(crate::actors::wakes_made());
        let now = now.max(self.rt.clock.now());
        self.tx().await?.next_mailbox_entry(subject, now).await
    }

    /// The stored saga state of a subject.
    pub async fn load_saga(
        &mut self,
        tenant: TenantId,
        subject: &str,
    ) -> StoreResult<Option<serde_json::Value>> {
        self.check(tenant)?;
        self.tx().await?.load_saga(subject).await
    }

    /// One credential.
    pub async fn get_credential(
        &mut self,
        tenant: TenantId,
        id: &KeyCredentialId,
    ) -> StoreResult<Option<KeyCredential>> {
        self.check(tenant)?;
        self.tx().await?.get_credential(id).await
    }

    /// Every credential of a reservation (the saga's own and the desk's provisional ones).
    pub async fn credentials_by_reservation(
        &mut self,
        tenant: TenantId,
        reservation: &lockstep_domain::ReservationId,
    ) -> StoreResult<Vec<KeyCredential>> {
        self.check(tenant)?;
        self.tx()
            .await?
            .credentials_by_reservation(reservation)
            .await
    }

    /// Door truth and vendor intents of a credential, decrypted.
    pub async fn credential_devices(
        &mut self,
        tenant: TenantId,
        id: &KeyCredentialId,
    ) -> StoreResult<Vec<CredentialDevice>> {
        self.check(tenant)?;
        self.tx().await?.credential_devices(id).await
    }

    /// The master key backed by a credential.
    pub async fn master_by_credential(
        &mut self,
        tenant: TenantId,
        credential: &KeyCredentialId,
    ) -> StoreResult<Option<MasterKeyRecord>> {
        self.check(tenant)?;
        self.tx().await?.master_by_credential(credential).await
    }

    /// A staff user's master keys not revoked.
    pub async fn active_masters_of_user(
        &mut self,
        tenant: TenantId,
        staff_user_id: &str,
    ) -> StoreResult<Vec<MasterKeyRecord>> {
        self.check(tenant)?;
        self.tx().await?.active_masters_of_user(staff_user_id).await
    }

    /// When a user was deactivated, if ever.
    pub async fn user_deactivated_at(
        &mut self,
        tenant: TenantId,
        user_id: &str,
    ) -> StoreResult<Option<Timestamp>> {
        self.check(tenant)?;
        self.tx().await?.user_deactivated_at(user_id).await
    }

    /// When a property was deactivated, if ever.
    pub async fn property_deactivated_at(
        &mut self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Option<Timestamp>> {
        self.check(tenant)?;
        self.tx().await?.property_deactivated_at(property).await
    }

    /// Credentials of a property in any of `states`.
    pub async fn credentials_of_property(
        &mut self,
        tenant: TenantId,
        property: &PropertyId,
        states: &[&str],
    ) -> StoreResult<Vec<PropertyCredential>> {
        self.check(tenant)?;
        self.tx()
            .await?
            .credentials_of_property(property, states)
            .await
    }

    /// Live devices serving any of the rooms (from the property's cached configuration).
    pub async fn devices_for_rooms(
        &mut self,
        tenant: TenantId,
        property: &PropertyId,
        rooms: &[RoomId],
    ) -> StoreResult<Vec<Device>> {
        self.check(tenant)?;
        let config = self.property_config(property).await?;
        Ok(config
            .devices
            .iter()
            .filter(|d| d.rooms.iter().any(|r| rooms.contains(r)))
            .map(|d| Device {
                rooms: d
                    .rooms
                    .iter()
                    .filter(|r| rooms.contains(r))
                    .cloned()
                    .collect(),
                ..d.clone()
            })
            .collect())
    }

    /// Live devices that open any of `areas` (cached configuration), each with the rooms
    /// it serves, if any.
    pub async fn devices_for_areas(
        &mut self,
        tenant: TenantId,
        property: &PropertyId,
        areas: &[CommonArea],
    ) -> StoreResult<Vec<Device>> {
        self.check(tenant)?;
        let config = self.property_config(property).await?;
        Ok(config
            .devices
            .iter()
            .filter(|d| d.area.is_some_and(|a| areas.contains(&a)))
            .cloned()
            .collect())
    }

    /// The common areas that have a live door at the property (cached configuration).
    pub async fn property_areas(
        &mut self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Vec<CommonArea>> {
        self.check(tenant)?;
        let config = self.property_config(property).await?;
        let mut areas: Vec<CommonArea> = config.devices.iter().filter_map(|d| d.area).collect();
        areas.sort();
        areas.dedup();
        Ok(areas)
    }

    /// Every room with a live lock at the property (cached configuration).
    pub async fn property_rooms(
        &mut self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Vec<RoomId>> {
        self.check(tenant)?;
        Ok(self.property_config(property).await?.rooms.clone())
    }

    /// The property's key-kind policy (cached configuration).
    pub async fn get_policy(
        &mut self,
        tenant: TenantId,
        property: &PropertyId,
    ) -> StoreResult<Option<PolicyRecord>> {
        self.check(tenant)?;
        Ok(self.property_config(property).await?.policy.clone())
    }

    async fn property_config(&mut self, property: &PropertyId) -> StoreResult<Arc<PropertyConfig>> {
        let key = (self.tenant, property.clone());
        if let Some(c) = self.rt.config.get(&key, self.rt.clock.now()) {
            return Ok(c);
        }
        let tx = self.tx().await?;
        let rooms = tx.property_rooms(property).await?;
        let mut devices = tx.devices_for_rooms(property, &rooms).await?;
        // Doors of a common area or the back of house that serve no room (master-key area
        // scopes); a door of rooms and an area is already there.
        for d in tx.area_devices(property).await? {
            if !devices.iter().any(|x| x.id == d.id) {
                devices.push(d);
            }
        }
        let policy = tx.get_policy(property).await?;
        let config = Arc::new(PropertyConfig {
            devices,
            rooms,
            policy,
        });
        self.rt.config.put(key, config.clone(), self.rt.clock.now());
        Ok(config)
    }
}

/// A property's configuration as the saga reads it at every step: its live devices (with
/// the rooms each serves) and its key-kind policy.
#[derive(Debug)]
pub struct PropertyConfig {
    /// Live devices, each with every room it serves and its area: the doors of rooms, then
    /// the doors of areas that serve no room.
    pub devices: Vec<Device>,
    /// Every room with a live lock, sorted.
    pub rooms: Vec<RoomId>,
    /// The stored policy (`None`: the default one).
    pub policy: Option<PolicyRecord>,
}

type ConfigKey = (TenantId, PropertyId);
type ConfigEntries = HashMap<ConfigKey, (Arc<PropertyConfig>, Timestamp)>;

/// Per-property configuration cached in the node (DESIGN §3.8): read once per property
/// instead of at every step. A change made through this node (device registration,
/// decommission, a policy) invalidates its property at once; a change made on another
/// node is seen after `ttl` at the latest.
#[derive(Debug, Clone)]
pub struct ConfigCache {
    entries: Arc<RwLock<ConfigEntries>>,
    ttl: chrono::Duration,
}

impl Default for ConfigCache {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl ConfigCache {
    /// A cache whose entries live `ttl` (business time).
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: Arc::default(),
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(10)),
        }
    }

    fn get(&self, key: &ConfigKey, now: Timestamp) -> Option<Arc<PropertyConfig>> {
        self.entries
            .read()
            .expect("config cache lock is never poisoned")
            .get(key)
            .filter(|(_, at)| now - *at < self.ttl && now >= *at)
            .map(|(c, _)| c.clone())
    }

    fn put(&self, key: ConfigKey, config: Arc<PropertyConfig>, now: Timestamp) {
        self.entries
            .write()
            .expect("config cache lock is never poisoned")
            .insert(key, (config, now));
    }

    /// Forgets a property's configuration (it changed).
    pub fn invalidate(&self, tenant: TenantId, property: &PropertyId) {
        self.entries
            .write()
            .expect("config cache lock is never poisoned")
            .remove(&(tenant, property.clone()));
    }
}
