//! The front desk behind the card adapters (issue 12): [`DeskDispatch`] implements the
//! vendors' [`EncoderDispatch`] with the desktop relay's hub and the store's
//! `encode_jobs`, so a card is encoded once per idempotency key whatever happens to
//! desktops or to Lockstep, like `StoreLimiter` gives the adapters a store-backed rate.
//!
//! One encode, step by step:
//! 1. the job is stored (or found: an encoded key answers its card, a cancelled one wanted
//!    again is restored);
//! 2. if desktops were sent the job before and none answered (a desktop died mid-job, or
//!    Lockstep restarted), the job may go only to those desktops: the agent answers a key
//!    it encoded with the earlier card. While none of them is connected the job waits
//!    (`HolderAway`, retried by the saga) up to the holder grace, then goes to any desktop;
//! 3. each desktop the hub picks is added to the job's holders *before* the frame is sent
//!    (the hub's `DispatchJournal`);
//! 4. the outcome is recorded: the card number encrypted, or the failure (which clears the
//!    holders: that desktop made no card).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockstep_domain::{
    Clock, DeviceRef, KeyCredentialId, KeyCredentialKind, RoomId, TenantId, VendorCode,
};
use lockstep_persistence::{
    EncodeJobRecord, EncodeJobState, EncodeJobTable, EncodeResult, NewEncodeJob,
    ReadOnlyCredentialTable, ReadOnlyDeviceTable, ReadOnlyEncodeJobTable, Store, StoreError,
};
use lockstep_relay::protocol::{EncodeFailure, IdempotencyKey, JobId};
use lockstep_relay::{DispatchJournal, DoorRef, EncodeRequest, Hub, JobOutcome, RelayError};
use lockstep_vendors::wiegand::{CardEntry, CardJob, DeskError, DeskScope};
use lockstep_vendors::{CardNumber, EncoderDispatch};
use tracing::{info, warn};

/// How long a job waits for a desktop that took it (and may hold its card) before it is
/// sent to another one, by default.
pub const DEFAULT_HOLDER_GRACE: Duration = Duration::from_secs(60);

/// The desk encoders of every property served by this node's relay.
#[derive(Clone)]
pub struct DeskDispatch {
    hub: Hub,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    holder_grace: Duration,
}

impl std::fmt::Debug for DeskDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeskDispatch")
            .field("holder_grace", &self.holder_grace)
            .finish_non_exhaustive()
    }
}

fn ledger(e: StoreError) -> DeskError {
    warn!(error = %e, "encode jobs: store call failed");
    DeskError::Ledger
}

fn card_of(job: &EncodeJobRecord) -> Result<Option<CardNumber>, DeskError> {
    job.card_number
        .as_deref()
        .map(|n| {
            CardNumber::parse(n).map_err(|_| DeskError::Failed {
                code: "card_rejected",
                detail: "the card's number is not one a lock registers".into(),
            })
        })
        .transpose()
}

fn failure_code(f: EncodeFailure) -> &'static str {
    match f {
        EncodeFailure::NoCard => "no_card",
        EncodeFailure::CardRejected => "card_rejected",
        EncodeFailure::EncoderError | EncodeFailure::EncoderUnavailable => "encoder_error",
        EncodeFailure::Unsupported => "encoder_unsupported",
    }
}

/// Records each desktop a job goes to before the hub sends it there.
struct Journal<'a> {
    store: &'a dyn Store,
    clock: &'a dyn Clock,
    tenant: TenantId,
    key: &'a str,
}

#[async_trait]
impl DispatchJournal for Journal<'_> {
    async fn sending(&self, desktop: &str) -> Result<(), String> {
        let write = async {
            let mut tx = self.store.begin(self.tenant, None).await?;
            tx.add_encode_job_holder(self.key, desktop, self.clock.now())
                .await?;
            tx.commit().await
        };
        write.await.map_err(|e: StoreError| e.to_string())
    }
}

impl DeskDispatch {
    /// The desks of `hub`'s desktops, with jobs kept in `store`.
    pub fn new(hub: Hub, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            hub,
            store,
            clock,
            holder_grace: DEFAULT_HOLDER_GRACE,
        }
    }

    /// How long a job waits for the desktop that took it before it goes to another.
    pub fn with_holder_grace(mut self, grace: Duration) -> Self {
        self.holder_grace = grace;
        self
    }

    /// The rooms and doors the card opens: every door of the credential at the job's
    /// vendor, or (a credential Lockstep does not know) the rooms of the job's door.
    async fn doors(&self, job: &CardJob) -> Result<(Vec<RoomId>, Vec<DoorRef>), DeskError> {
        let scope = &job.scope;
        let mut tx = self.store.read(scope.tenant_id).await.map_err(ledger)?;
        let credential = match KeyCredentialId::parse(&job.credential_label) {
            Ok(id) => tx.get_credential(&id).await.map_err(ledger)?,
            Err(_) => None,
        };
        let rooms = match &credential {
            Some(c) => c.rooms().to_vec(),
            None => tx
                .property_rooms(&scope.property_id)
                .await
                .map_err(ledger)?,
        };
        let devices = tx
            .devices_for_rooms(&scope.property_id, &rooms)
            .await
            .map_err(ledger)?;
        tx.commit().await.map_err(ledger)?;
        let devices: Vec<_> = devices
            .into_iter()
            .filter(|d| d.vendor == job.vendor)
            .filter(|d| credential.is_some() || d.device_ref == job.device)
            .collect();
        let mut doors = Vec::new();
        let mut card_rooms: Vec<RoomId> = Vec::new();
        for d in &devices {
            for r in &d.rooms {
                if !card_rooms.contains(r) {
                    card_rooms.push(r.clone());
                }
                doors.push(DoorRef {
                    room_id: r.clone(),
                    device_id: Some(d.id.clone()),
                    device_ref: Some(d.device_ref.clone()),
                });
            }
        }
        if credential.is_some() {
            card_rooms = rooms;
        }
        if card_rooms.is_empty() {
            return Err(DeskError::Invalid(
                "no room with a door of this vendor for the card".into(),
            ));
        }
        Ok((card_rooms, doors))
    }

    async fn record(
        &self,
        tenant: TenantId,
        key: &str,
        result: EncodeResult,
    ) -> Result<(), DeskError> {
        let mut tx = self.store.begin(tenant, None).await.map_err(ledger)?;
        tx.record_encode_result(key, &result, self.clock.now())
            .await
            .map_err(ledger)?;
        tx.commit().await.map_err(ledger)
    }
}

#[async_trait]
impl EncoderDispatch for DeskDispatch {
    async fn encode(&self, job: &CardJob) -> Result<CardNumber, DeskError> {
        let scope = &job.scope;
        let tenant = scope.tenant_id;
        let key = job.idempotency_key.as_str();
        let credential_id = KeyCredentialId::parse(&job.credential_label)
            .map_err(|_| DeskError::Invalid("the card's credential is not a key_ id".into()))?;
        let idempotency = IdempotencyKey::parse(key)
            .map_err(|_| DeskError::Invalid("the card's key is not a relay key".into()))?;
        let (rooms, doors) = self.doors(job).await?;
        let now = self.clock.now();
        // 1. stored once; an encoded key answers its card
        let stored = {
            let mut tx = self.store.begin(tenant, None).await.map_err(ledger)?;
            let mut stored = tx
                .start_encode_job(&NewEncodeJob {
                    tenant_id: tenant,
                    property_id: scope.property_id.clone(),
                    idempotency_key: key.to_owned(),
                    vendor: job.vendor,
                    credential_id: job.credential_label.clone(),
                    doors: doors
                        .iter()
                        .filter_map(|d| d.device_ref.clone())
                        .chain(std::iter::once(job.device.clone()))
                        .collect(),
                    valid_from: job.validity.from(),
                    valid_until: job.validity.until(),
                    now,
                })
                .await
                .map_err(ledger)?;
            if stored.state == EncodeJobState::Cancelled
                && stored.card_number.is_some()
                && tx.restore_encode_job(key, now).await.map_err(ledger)?
            {
                stored.state = EncodeJobState::Encoded;
            }
            tx.commit().await.map_err(ledger)?;
            stored
        };
        match stored.state {
            EncodeJobState::Encoded | EncodeJobState::Replaced => {
                if let Some(card) = card_of(&stored)? {
                    return Ok(card);
                }
            }
            EncodeJobState::Cancelled | EncodeJobState::Dispatched | EncodeJobState::Failed => {}
        }
        // 2. a job some desktop took goes back to it
        let connected: Vec<String> = self
            .hub
            .desktops(tenant, &scope.property_id)
            .into_iter()
            .map(|d| d.desktop_device_id)
            .collect();
        let mut only = None;
        if !stored.holders.is_empty() {
            let live: Vec<String> = stored
                .holders
                .iter()
                .filter(|h| connected.contains(h))
                .cloned()
                .collect();
            if !live.is_empty() {
                only = Some(live);
            } else {
                let away = (now - stored.updated_at).to_std().unwrap_or_default();
                if away < self.holder_grace {
                    return Err(DeskError::HolderAway);
                }
                warn!(
                    key,
                    holders = ?stored.holders,
                    "the desktops that took the job stayed away past the holder grace; sending it to another"
                );
            }
        }
        let bound = only.is_some();
        let request = EncodeRequest {
            job_id: JobId::parse(&format!("job_{}", ulid::Ulid::new()))
                .expect("a prefixed ulid is a valid job id"),
            tenant_id: tenant,
            property_id: scope.property_id.clone(),
            credential_id,
            kind: KeyCredentialKind::RfidCard,
            rooms,
            doors,
            validity: job.validity,
            idempotency_key: idempotency,
            prefer_desktop: None,
            only_desktops: only,
            ack_timeout: Some(job.ack_timeout),
        };
        // 3. each desktop recorded before the send
        let journal = Journal {
            store: self.store.as_ref(),
            clock: self.clock.as_ref(),
            tenant,
            key,
        };
        let outcome = self.hub.dispatch_with(request, Some(&journal)).await;
        // 4. the outcome recorded
        match outcome {
            Ok(JobOutcome::Encoded(card)) => {
                let number = CardNumber::parse(card.card_number.expose());
                let result = match &number {
                    Ok(_) => EncodeResult::Encoded {
                        card_number: card.card_number.expose().to_owned(),
                        desktop_device_id: card.desktop_device_id.clone(),
                        encoder_id: card.encoder_id.as_ref().map(|e| e.as_str().to_owned()),
                        session_id: Some(card.session_id.as_str().to_owned()),
                    },
                    Err(_) => EncodeResult::Failed {
                        failure: "card_rejected".into(),
                    },
                };
                self.record(tenant, key, result).await?;
                info!(key, desktop = %card.desktop_device_id, "card encoded at the desk");
                number.map_err(|_| DeskError::Failed {
                    code: "card_rejected",
                    detail: "the card's number is not one a lock registers".into(),
                })
            }
            Ok(JobOutcome::Failed(f)) => {
                let code = failure_code(f.failure);
                self.record(
                    tenant,
                    key,
                    EncodeResult::Failed {
                        failure: code.into(),
                    },
                )
                .await?;
                Err(DeskError::Failed {
                    code,
                    detail: f
                        .detail
                        .unwrap_or_else(|| "the desk encoded no card".into()),
                })
            }
            Err(RelayError::EncoderOffline) | Err(RelayError::ShuttingDown) if bound => {
                Err(DeskError::HolderAway)
            }
            Err(RelayError::EncoderOffline) | Err(RelayError::ShuttingDown) => {
                Err(DeskError::EncoderOffline)
            }
            Err(RelayError::ResultTimeout { .. }) => Err(DeskError::ResultTimeout),
            Err(RelayError::InvalidJob(reason)) => Err(DeskError::Invalid(reason)),
            Err(RelayError::Journal(_)) => Err(DeskError::Ledger),
            Err(other) => {
                warn!(error = %other, "encode dispatch failed");
                Err(DeskError::EncoderOffline)
            }
        }
    }

    async fn encoded(&self, scope: &DeskScope, key: &str) -> Result<Option<CardNumber>, DeskError> {
        let mut tx = self.store.read(scope.tenant_id).await.map_err(ledger)?;
        let job = tx.encode_job(key).await.map_err(ledger)?;
        tx.commit().await.map_err(ledger)?;
        match job {
            Some(j) if j.state == EncodeJobState::Encoded => card_of(&j),
            _ => Ok(None),
        }
    }

    async fn cards_at(
        &self,
        scope: &DeskScope,
        vendor: VendorCode,
        door: &DeviceRef,
    ) -> Result<Vec<CardEntry>, DeskError> {
        let mut tx = self.store.read(scope.tenant_id).await.map_err(ledger)?;
        let cards = tx
            .live_cards_at(&scope.property_id, vendor, door)
            .await
            .map_err(ledger)?;
        tx.commit().await.map_err(ledger)?;
        Ok(cards
            .into_iter()
            .map(|c| CardEntry {
                credential_label: c.credential_id,
                valid_from: c.valid_from,
                valid_until: c.valid_until,
            })
            .collect())
    }

    async fn cancel(&self, scope: &DeskScope, credential_label: &str) -> Result<(), DeskError> {
        let mut tx = self
            .store
            .begin(scope.tenant_id, None)
            .await
            .map_err(ledger)?;
        tx.cancel_cards_of_credential(credential_label, self.clock.now())
            .await
            .map_err(ledger)?;
        tx.commit().await.map_err(ledger)
    }

    async fn replace(
        &self,
        scope: &DeskScope,
        credential_label: &str,
        keep: &str,
    ) -> Result<(), DeskError> {
        let mut tx = self
            .store
            .begin(scope.tenant_id, None)
            .await
            .map_err(ledger)?;
        tx.replace_cards_of_credential(credential_label, keep, self.clock.now())
            .await
            .map_err(ledger)?;
        tx.commit().await.map_err(ledger)
    }

    async fn ready(&self, scope: &DeskScope) -> Result<(), DeskError> {
        let any = self
            .hub
            .desktops(scope.tenant_id, &scope.property_id)
            .iter()
            .any(|d| !d.encoders.is_empty());
        if any {
            Ok(())
        } else {
            Err(DeskError::EncoderOffline)
        }
    }
}
