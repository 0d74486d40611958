//! `encode_jobs`: the cards front-desk encoders made, one per idempotency key (issue 12).
//!
//! A job is stored before it is sent to any desktop; each desktop it is sent to is added to
//! its `holders` before the send, so after a Lockstep restart the job goes back to a desktop
//! that may hold its result (the agent answers a key it encoded with the earlier card) rather
//! than to one that would encode a second card. The card number the desk reader read is
//! encrypted, bound to the row, and never leaves this crate in a `Debug`.
//!
//! The table is also the ledger of the cards at a property's doors (a generic Wiegand lock
//! cannot be asked what it accepts): a card is `encoded` until its credential is revoked
//! (`cancelled`) or a moved window encoded a new card for it (`replaced`).

use async_trait::async_trait;
use lockstep_domain::{DeviceRef, PropertyId, TenantId, Timestamp, VendorCode};

use crate::crypto::Cipher;
use crate::dialect::{Row, Stmt};
use crate::tx::{Access, ReadWrite, Tx};
use crate::{StoreError, StoreResult};

/// Blind-index domain of the doors a card opens.
const DOOR_INDEX: &str = "encode_jobs.door";

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeJobState {
    /// Stored; sent (or about to be sent) to a desktop; no result yet.
    Dispatched,
    /// A card was encoded and read back.
    Encoded,
    /// The last desktop reported no card; it may be dispatched again.
    Failed,
    /// The credential was revoked; the card is void in Lockstep's ledger.
    Cancelled,
    /// A newer card (a moved window) replaced it.
    Replaced,
}

impl EncodeJobState {
    /// The stored spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Dispatched => "dispatched",
            Self::Encoded => "encoded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Replaced => "replaced",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "dispatched" => Self::Dispatched,
            "encoded" => Self::Encoded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "replaced" => Self::Replaced,
            other => return Err(StoreError::Corrupt(format!("encode job state {other}"))),
        })
    }
}

/// A job to store before its first dispatch.
#[derive(Clone, Debug)]
pub struct NewEncodeJob {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property (its desktops encode the card).
    pub property_id: PropertyId,
    /// One card per key.
    pub idempotency_key: String,
    /// Who registers the card: `generic-wiegand` (the card is the credential) or `ttlock`
    /// (the card's number is added to the locks).
    pub vendor: VendorCode,
    /// The credential the card carries (`key_`).
    pub credential_id: String,
    /// The doors it opens (their vendor device refs; kept as blind indexes).
    pub doors: Vec<DeviceRef>,
    /// Validity written on the card.
    pub valid_from: Timestamp,
    /// End of validity.
    pub valid_until: Timestamp,
    /// Now.
    pub now: Timestamp,
}

/// How a dispatch ended.
#[derive(Clone)]
pub enum EncodeResult {
    /// A card was encoded.
    Encoded {
        /// What the reader read (stored encrypted).
        card_number: String,
        /// The desktop that encoded it.
        desktop_device_id: String,
        /// Its encoder.
        encoder_id: Option<String>,
        /// The relay session it came over.
        session_id: Option<String>,
    },
    /// The desktop encoded nothing.
    Failed {
        /// Why (a bounded code such as `no_card`).
        failure: String,
    },
}

impl std::fmt::Debug for EncodeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Encoded {
                desktop_device_id, ..
            } => f
                .debug_struct("Encoded")
                .field("desktop_device_id", desktop_device_id)
                .finish_non_exhaustive(),
            Self::Failed { failure } => f.debug_struct("Failed").field("failure", failure).finish(),
        }
    }
}

/// A stored job.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodeJobRecord {
    /// Row id (the card number's encryption context).
    pub id: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Property.
    pub property_id: PropertyId,
    /// Its key.
    pub idempotency_key: String,
    /// Who registers the card.
    pub vendor: VendorCode,
    /// The credential (`key_`).
    pub credential_id: String,
    /// Blind indexes of the doors it opens.
    pub door_indexes: Vec<String>,
    /// Start of validity.
    pub valid_from: Timestamp,
    /// End of validity.
    pub valid_until: Timestamp,
    /// Where it stands.
    pub state: EncodeJobState,
    /// Desktops it was sent to, in order.
    pub holders: Vec<String>,
    /// How many times it was sent.
    pub dispatches: i32,
    /// The desktop that encoded the card.
    pub desktop_device_id: Option<String>,
    /// Its encoder.
    pub encoder_id: Option<String>,
    /// The relay session.
    pub session_id: Option<String>,
    /// The card's number, decrypted (redacted in `Debug`).
    pub card_number: Option<String>,
    /// The last failure.
    pub failure: Option<String>,
    /// Stored.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When the card was recorded.
    pub encoded_at: Option<Timestamp>,
    /// When it was cancelled or replaced.
    pub cancelled_at: Option<Timestamp>,
}

impl std::fmt::Debug for EncodeJobRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodeJobRecord")
            .field("id", &self.id)
            .field("idempotency_key", &self.idempotency_key)
            .field("vendor", &self.vendor)
            .field("credential_id", &self.credential_id)
            .field("state", &self.state)
            .field("holders", &self.holders)
            .field("dispatches", &self.dispatches)
            .field("desktop_device_id", &self.desktop_device_id)
            .field(
                "card_number",
                &self.card_number.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl EncodeJobRecord {
    /// Whether the card opens the door with this blind index.
    pub fn opens(&self, door_index: &str) -> bool {
        self.door_indexes.iter().any(|d| d == door_index)
    }
}

/// The blind index a door is kept under in `encode_jobs` (the same for every row).
pub fn door_index(cipher: &Cipher, device: &DeviceRef) -> String {
    cipher.blind_index(DOOR_INDEX, device.expose().as_bytes())
}

fn card_context(id: &str) -> String {
    format!("card:{id}")
}

fn strings(v: serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn job_from_row(cipher: &Cipher, r: &Row) -> StoreResult<EncodeJobRecord> {
    let id: String = r.get("id")?;
    let card_number = super::door_truth::decrypt_opt(cipher, r, "card_number", &card_context(&id))?;
    Ok(EncodeJobRecord {
        tenant_id: r.tenant("tenant_id")?,
        property_id: PropertyId::parse(r.get("property_id")?)?,
        idempotency_key: r.get("idempotency_key")?,
        vendor: VendorCode::parse(r.get("vendor")?)?,
        credential_id: r.get("credential_id")?,
        door_indexes: strings(r.json("door_indexes")?),
        valid_from: r.ts("valid_from")?,
        valid_until: r.ts("valid_until")?,
        state: EncodeJobState::parse(r.get("state")?)?,
        holders: strings(r.json("holders")?),
        dispatches: r.get("dispatches")?,
        desktop_device_id: r.get("desktop_device_id")?,
        encoder_id: r.get("encoder_id")?,
        session_id: r.get("session_id")?,
        card_number,
        failure: r.get("failure")?,
        created_at: r.ts("created_at")?,
        updated_at: r.ts("updated_at")?,
        encoded_at: r.opt_ts("encoded_at")?,
        cancelled_at: r.opt_ts("cancelled_at")?,
        id,
    })
}

/// Reads of a tenant's encode jobs.
#[async_trait]
pub trait ReadOnlyEncodeJobTable: Send {
    /// The job of an idempotency key.
    async fn encode_job(&mut self, key: &str) -> StoreResult<Option<EncodeJobRecord>>;

    /// Every job of a credential, oldest first.
    async fn encode_jobs_of_credential(
        &mut self,
        credential_id: &str,
    ) -> StoreResult<Vec<EncodeJobRecord>>;

    /// The live (`encoded`) cards of a property and vendor that open `door`.
    async fn live_cards_at(
        &mut self,
        property: &PropertyId,
        vendor: lockstep_domain::VendorCode,
        door: &DeviceRef,
    ) -> StoreResult<Vec<EncodeJobRecord>>;
}

/// Writes of a tenant's encode jobs.
#[async_trait]
pub trait EncodeJobTable: ReadOnlyEncodeJobTable {
    /// Stores a job unless its key is stored already; answers the stored job either way.
    async fn start_encode_job(&mut self, job: &NewEncodeJob) -> StoreResult<EncodeJobRecord>;

    /// Records that the job is being sent to `desktop` (before the send): added to its
    /// holders, one more dispatch, back to `dispatched` after a failure. `false` when the
    /// key is unknown.
    async fn add_encode_job_holder(
        &mut self,
        key: &str,
        desktop: &str,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// Records a dispatch's result. An encoded card is kept even when the job was
    /// cancelled meanwhile (the card exists; it stays void); a failure clears the holders
    /// (the desktop made no card). `false` when the key is unknown.
    async fn record_encode_result(
        &mut self,
        key: &str,
        result: &EncodeResult,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// A card wanted again after its credential came back (an unsuspend): `cancelled` →
    /// `encoded`. `false` unless it was cancelled with a card.
    async fn restore_encode_job(&mut self, key: &str, now: Timestamp) -> StoreResult<bool>;

    /// The credential was revoked: its live and pending cards are cancelled; how many.
    async fn cancel_cards_of_credential(
        &mut self,
        credential_id: &str,
        now: Timestamp,
    ) -> StoreResult<u64>;

    /// A newer card of the credential (key `keep`) replaces its other live cards; how many.
    async fn replace_cards_of_credential(
        &mut self,
        credential_id: &str,
        keep: &str,
        now: Timestamp,
    ) -> StoreResult<u64>;
}

#[async_trait]
impl<A: Access> ReadOnlyEncodeJobTable for Tx<A> {
    async fn encode_job(&mut self, key: &str) -> StoreResult<Option<EncodeJobRecord>> {
        let stmt =
            Stmt::new("SELECT * FROM encode_jobs WHERE tenant_id = $1 AND idempotency_key = $2")
                .bind(self.tenant)
                .bind(key);
        let row = self.conn.fetch_optional(stmt).await?;
        row.as_ref()
            .map(|r| job_from_row(&self.cipher, r))
            .transpose()
    }

    async fn encode_jobs_of_credential(
        &mut self,
        credential_id: &str,
    ) -> StoreResult<Vec<EncodeJobRecord>> {
        let stmt = Stmt::new(
            "SELECT * FROM encode_jobs WHERE tenant_id = $1 AND credential_id = $2 ORDER BY created_at, id",
        )
        .bind(self.tenant)
        .bind(credential_id);
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter().map(|r| job_from_row(&self.cipher, r)).collect()
    }

    async fn live_cards_at(
        &mut self,
        property: &PropertyId,
        vendor: VendorCode,
        door: &DeviceRef,
    ) -> StoreResult<Vec<EncodeJobRecord>> {
        let index = door_index(&self.cipher, door);
        let stmt = Stmt::new(
            "SELECT * FROM encode_jobs WHERE tenant_id = $1 AND property_id = $2 AND vendor = $3 AND state = 'encoded' ORDER BY created_at, id",
        )
        .bind(self.tenant)
        .bind(property.as_str())
        .bind(vendor.as_str());
        let rows = self.conn.fetch_all(stmt).await?;
        let mut out = Vec::new();
        for r in &rows {
            let job = job_from_row(&self.cipher, r)?;
            if job.opens(&index) {
                out.push(job);
            }
        }
        Ok(out)
    }
}

impl Tx<ReadWrite> {
    async fn set_holders(
        &mut self,
        key: &str,
        holders: &[String],
        dispatches: i32,
        state: EncodeJobState,
        now: Timestamp,
    ) -> StoreResult<()> {
        let stmt = Stmt::new(
            "UPDATE encode_jobs SET holders = $3, dispatches = $4, state = $5, updated_at = $6 \
             WHERE tenant_id = $1 AND idempotency_key = $2",
        )
        .bind(self.tenant)
        .bind(key)
        .bind(serde_json::json!(holders))
        .bind(dispatches)
        .bind(state.as_str())
        .bind(now);
        self.conn.execute(stmt).await?;
        Ok(())
    }
}

#[async_trait]
impl EncodeJobTable for Tx<ReadWrite> {
    async fn start_encode_job(&mut self, job: &NewEncodeJob) -> StoreResult<EncodeJobRecord> {
        self.own(job.tenant_id, "encode job")?;
        let doors: Vec<String> = job
            .doors
            .iter()
            .map(|d| door_index(&self.cipher, d))
            .collect();
        let stmt = Stmt::new(
            "INSERT INTO encode_jobs (id, tenant_id, property_id, idempotency_key, vendor, credential_id, door_indexes, valid_from, valid_until, state, holders, dispatches, created_at, updated_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,'dispatched',$10,0,$11,$11) \
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
        )
        .bind(format!("ejb_{}", ulid::Ulid::new()))
        .bind(self.tenant)
        .bind(job.property_id.as_str())
        .bind(job.idempotency_key.as_str())
        .bind(job.vendor.as_str())
        .bind(job.credential_id.as_str())
        .bind(serde_json::json!(doors))
        .bind(job.valid_from)
        .bind(job.valid_until)
        .bind(serde_json::json!([]))
        .bind(job.now);
        self.conn.execute(stmt).await?;
        self.encode_job(&job.idempotency_key)
            .await?
            .ok_or_else(|| StoreError::Database("encode job vanished after its insert".into()))
    }

    async fn add_encode_job_holder(
        &mut self,
        key: &str,
        desktop: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let Some(job) = self.encode_job(key).await? else {
            return Ok(false);
        };
        let mut holders = job.holders.clone();
        if !holders.iter().any(|h| h == desktop) {
            holders.push(desktop.to_owned());
        }
        let state = match job.state {
            EncodeJobState::Failed => EncodeJobState::Dispatched,
            s => s,
        };
        self.set_holders(key, &holders, job.dispatches.saturating_add(1), state, now)
            .await?;
        Ok(true)
    }

    async fn record_encode_result(
        &mut self,
        key: &str,
        result: &EncodeResult,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let Some(job) = self.encode_job(key).await? else {
            return Ok(false);
        };
        match result {
            EncodeResult::Encoded {
                card_number,
                desktop_device_id,
                encoder_id,
                session_id,
            } => {
                let (ct, ver) = self
                    .cipher
                    .encrypt(card_number.as_bytes(), &card_context(&job.id))?;
                // A job cancelled while its card was being encoded keeps its state: the card
                // exists and stays void.
                let state = match job.state {
                    EncodeJobState::Cancelled | EncodeJobState::Replaced => job.state,
                    _ => EncodeJobState::Encoded,
                };
                let stmt = Stmt::new(
                    "UPDATE encode_jobs SET state = $3, card_number_ciphertext = $4, card_number_kms_version = $5, \
                     desktop_device_id = $6, encoder_id = $7, session_id = $8, failure = NULL, encoded_at = $9, updated_at = $9 \
                     WHERE tenant_id = $1 AND idempotency_key = $2",
                )
                .bind(self.tenant)
                .bind(key)
                .bind(state.as_str())
                .bind(ct)
                .bind(ver)
                .bind(desktop_device_id.as_str())
                .bind(encoder_id.clone())
                .bind(session_id.clone())
                .bind(now);
                self.conn.execute(stmt).await?;
            }
            EncodeResult::Failed { failure } => {
                if job.state != EncodeJobState::Dispatched {
                    // an encoded or cancelled job keeps what it has
                    return Ok(true);
                }
                let stmt = Stmt::new(
                    "UPDATE encode_jobs SET state = 'failed', holders = $3, failure = $4, updated_at = $5 \
                     WHERE tenant_id = $1 AND idempotency_key = $2",
                )
                .bind(self.tenant)
                .bind(key)
                .bind(serde_json::json!([]))
                .bind(failure.as_str())
                .bind(now);
                self.conn.execute(stmt).await?;
            }
        }
        Ok(true)
    }

    async fn restore_encode_job(&mut self, key: &str, now: Timestamp) -> StoreResult<bool> {
        let stmt = Stmt::new(
            "UPDATE encode_jobs SET state = 'encoded', cancelled_at = NULL, updated_at = $3 \
             WHERE tenant_id = $1 AND idempotency_key = $2 AND state = 'cancelled' AND card_number_ciphertext IS NOT NULL",
        )
        .bind(self.tenant)
        .bind(key)
        .bind(now);
        Ok(self.conn.execute(stmt).await? == 1)
    }

    async fn cancel_cards_of_credential(
        &mut self,
        credential_id: &str,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let stmt = Stmt::new(
            "UPDATE encode_jobs SET state = 'cancelled', cancelled_at = $3, updated_at = $3 \
             WHERE tenant_id = $1 AND credential_id = $2 AND state IN ('encoded','dispatched','failed')",
        )
        .bind(self.tenant)
        .bind(credential_id)
        .bind(now);
        self.conn.execute(stmt).await
    }

    async fn replace_cards_of_credential(
        &mut self,
        credential_id: &str,
        keep: &str,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let stmt = Stmt::new(
            "UPDATE encode_jobs SET state = 'replaced', cancelled_at = $4, updated_at = $4 \
             WHERE tenant_id = $1 AND credential_id = $2 AND idempotency_key <> $3 AND state = 'encoded'",
        )
        .bind(self.tenant)
        .bind(credential_id)
        .bind(keep)
        .bind(now);
        self.conn.execute(stmt).await
    }
}
