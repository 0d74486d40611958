//! `provisional_credentials`: what the reconciler made of each provisional credential a
//! desktop minted offline and sent on reconnect (spec `003` §5, I-7, O-2, O-3).
//!
//! A verdict is final: the same item sent again (a lost `sync_result`) is answered from
//! here. A valid one keeps the credential id it was handed to the saga with; revoking its
//! certificate flags it for forced re-issue (O-2). The card number (when a card was encoded
//! offline) is encrypted and bound to the row.

use async_trait::async_trait;
use lockstep_domain::{PropertyId, TenantId, Timestamp};

use crate::crypto::Cipher;
use crate::dialect::{Row, Stmt};
use crate::tx::{Access, ReadWrite, Tx};
use crate::{StoreError, StoreResult};

/// The reconciler's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvisionalVerdict {
    /// Minted by the desktop within its certificate's rules: materialized by the saga.
    Valid,
    /// Minted by the desktop (its signature verifies) against a rule (window, kind, an
    /// expired or revoked certificate, an unknown room): revoked.
    Invalid,
    /// Not minted by the desktop: the signature does not verify with its certificate.
    Forged,
}

impl ProvisionalVerdict {
    /// The stored spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::Forged => "forged",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "valid" => Self::Valid,
            "invalid" => Self::Invalid,
            "forged" => Self::Forged,
            other => return Err(StoreError::Corrupt(format!("provisional verdict {other}"))),
        })
    }
}

/// One provisional credential and its verdict.
#[derive(Clone, PartialEq, Eq)]
pub struct ProvisionalRecord {
    /// Row id (the card number's encryption context).
    pub id: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// The certificate it names (`oki_`).
    pub certificate_id: String,
    /// The desktop's id for it.
    pub provisional_id: String,
    /// Property (the session's).
    pub property_id: PropertyId,
    /// The desktop that sent it.
    pub desktop_device_id: String,
    /// Kind, as sent.
    pub kind: String,
    /// Reservation, as sent.
    pub reservation_id: Option<String>,
    /// Rooms, as sent.
    pub room_ids: Vec<String>,
    /// Start of validity.
    pub valid_from: Timestamp,
    /// End of validity.
    pub valid_until: Timestamp,
    /// When the desktop says it minted it.
    pub minted_at: Timestamp,
    /// The card number the desk reader read, when a card was encoded (redacted in `Debug`).
    pub card_number: Option<String>,
    /// The desktop's signature as sent (base64).
    pub signature: String,
    /// Verdict.
    pub verdict: ProvisionalVerdict,
    /// Why, when not valid (a bounded code).
    pub reason: Option<String>,
    /// The server's credential id (`key_`) it was handed to the saga with.
    pub credential_id: Option<String>,
    /// The command that handed it over.
    pub handoff_message_id: Option<String>,
    /// When it was verified.
    pub verified_at: Timestamp,
    /// O-2: when its certificate's revocation flagged it for forced re-issue.
    pub reissue_flagged_at: Option<Timestamp>,
    /// The command that asked for the re-issue.
    pub reissue_message_id: Option<String>,
}

impl std::fmt::Debug for ProvisionalRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionalRecord")
            .field("certificate_id", &self.certificate_id)
            .field("provisional_id", &self.provisional_id)
            .field("kind", &self.kind)
            .field("verdict", &self.verdict)
            .field("reason", &self.reason)
            .field("credential_id", &self.credential_id)
            .field(
                "card_number",
                &self.card_number.as_ref().map(|_| "<redacted>"),
            )
            .field("reissue_flagged_at", &self.reissue_flagged_at)
            .finish_non_exhaustive()
    }
}

fn card_context(id: &str) -> String {
    format!("pcard:{id}")
}

fn from_row(cipher: &Cipher, r: &Row) -> StoreResult<ProvisionalRecord> {
    let id: String = r.get("id")?;
    let card_number = super::door_truth::decrypt_opt(cipher, r, "card_number", &card_context(&id))?;
    Ok(ProvisionalRecord {
        tenant_id: r.tenant("tenant_id")?,
        certificate_id: r.get("certificate_id")?,
        provisional_id: r.get("provisional_id")?,
        property_id: PropertyId::parse(r.get("property_id")?)?,
        desktop_device_id: r.get("desktop_device_id")?,
        kind: r.get("kind")?,
        reservation_id: r.get("reservation_id")?,
        room_ids: r
            .json("room_ids")?
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        valid_from: r.ts("valid_from")?,
        valid_until: r.ts("valid_until")?,
        minted_at: r.ts("minted_at")?,
        card_number,
        signature: r.get("signature")?,
        verdict: ProvisionalVerdict::parse(r.get("verdict")?)?,
        reason: r.get("reason")?,
        credential_id: r.get("credential_id")?,
        handoff_message_id: r.get("handoff_message_id")?,
        verified_at: r.ts("verified_at")?,
        reissue_flagged_at: r.opt_ts("reissue_flagged_at")?,
        reissue_message_id: r.get("reissue_message_id")?,
        id,
    })
}

/// Reads of a tenant's provisional credentials.
#[async_trait]
pub trait ReadOnlyProvisionalTable: Send {
    /// One by certificate and the desktop's id.
    async fn provisional(
        &mut self,
        certificate_id: &str,
        provisional_id: &str,
    ) -> StoreResult<Option<ProvisionalRecord>>;

    /// Everything minted under a certificate, in the order it was verified.
    async fn provisionals_of_certificate(
        &mut self,
        certificate_id: &str,
    ) -> StoreResult<Vec<ProvisionalRecord>>;
}

/// Writes of a tenant's provisional credentials.
#[async_trait]
pub trait ProvisionalTable: ReadOnlyProvisionalTable {
    /// Stores a verdict; `false` (and nothing changed) when the item has one already.
    async fn record_provisional(&mut self, p: &ProvisionalRecord) -> StoreResult<bool>;

    /// Records the command that handed it to the saga; `false` when unknown.
    async fn set_provisional_handoff(
        &mut self,
        certificate_id: &str,
        provisional_id: &str,
        message_id: &str,
    ) -> StoreResult<bool>;

    /// O-2: flags every valid item of a revoked certificate not flagged yet for forced
    /// re-issue; answers the ones flagged now.
    async fn flag_provisionals_for_reissue(
        &mut self,
        certificate_id: &str,
        at: Timestamp,
    ) -> StoreResult<Vec<ProvisionalRecord>>;

    /// Records the command that asked the saga to re-issue it; `false` when unknown.
    async fn set_provisional_reissue_handoff(
        &mut self,
        certificate_id: &str,
        provisional_id: &str,
        message_id: &str,
    ) -> StoreResult<bool>;
}

#[async_trait]
impl<A: Access> ReadOnlyProvisionalTable for Tx<A> {
    async fn provisional(
        &mut self,
        certificate_id: &str,
        provisional_id: &str,
    ) -> StoreResult<Option<ProvisionalRecord>> {
        let stmt = Stmt::new(
            "SELECT * FROM provisional_credentials WHERE tenant_id = $1 AND certificate_id = $2 AND provisional_id = $3",
        )
        .bind(self.tenant)
        .bind(certificate_id)
        .bind(provisional_id);
        let row = self.conn.fetch_optional(stmt).await?;
        row.as_ref().map(|r| from_row(&self.cipher, r)).transpose()
    }

    async fn provisionals_of_certificate(
        &mut self,
        certificate_id: &str,
    ) -> StoreResult<Vec<ProvisionalRecord>> {
        let stmt = Stmt::new(
            "SELECT * FROM provisional_credentials WHERE tenant_id = $1 AND certificate_id = $2 ORDER BY verified_at, id",
        )
        .bind(self.tenant)
        .bind(certificate_id);
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter().map(|r| from_row(&self.cipher, r)).collect()
    }
}

#[async_trait]
impl ProvisionalTable for Tx<ReadWrite> {
    async fn record_provisional(&mut self, p: &ProvisionalRecord) -> StoreResult<bool> {
        self.own(p.tenant_id, "provisional credential")?;
        let (ct, ver) = p
            .card_number
            .as_ref()
            .map(|c| self.cipher.encrypt(c.as_bytes(), &card_context(&p.id)))
            .transpose()?
            .unzip();
        let stmt = Stmt::new(
            "INSERT INTO provisional_credentials (id, tenant_id, certificate_id, provisional_id, property_id, desktop_device_id, kind, reservation_id, room_ids, valid_from, valid_until, minted_at, card_number_ciphertext, card_number_kms_version, signature, verdict, reason, credential_id, handoff_message_id, verified_at, reissue_flagged_at, reissue_message_id) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22) \
             ON CONFLICT (tenant_id, certificate_id, provisional_id) DO NOTHING",
        )
        .bind(p.id.as_str())
        .bind(self.tenant)
        .bind(p.certificate_id.as_str())
        .bind(p.provisional_id.as_str())
        .bind(p.property_id.as_str())
        .bind(p.desktop_device_id.as_str())
        .bind(p.kind.as_str())
        .bind(&p.reservation_id)
        .bind(serde_json::json!(p.room_ids))
        .bind(p.valid_from)
        .bind(p.valid_until)
        .bind(p.minted_at)
        .bind(ct)
        .bind(ver)
        .bind(p.signature.as_str())
        .bind(p.verdict.as_str())
        .bind(&p.reason)
        .bind(&p.credential_id)
        .bind(&p.handoff_message_id)
        .bind(p.verified_at)
        .bind(p.reissue_flagged_at)
        .bind(&p.reissue_message_id);
        Ok(self.conn.execute(stmt).await? == 1)
    }

    async fn set_provisional_handoff(
        &mut self,
        certificate_id: &str,
        provisional_id: &str,
        message_id: &str,
    ) -> StoreResult<bool> {
        let stmt = Stmt::new(
            "UPDATE provisional_credentials SET handoff_message_id = $4 \
             WHERE tenant_id = $1 AND certificate_id = $2 AND provisional_id = $3",
        )
        .bind(self.tenant)
        .bind(certificate_id)
        .bind(provisional_id)
        .bind(message_id);
        Ok(self.conn.execute(stmt).await? == 1)
    }

    async fn flag_provisionals_for_reissue(
        &mut self,
        certificate_id: &str,
        at: Timestamp,
    ) -> StoreResult<Vec<ProvisionalRecord>> {
        let pending: Vec<ProvisionalRecord> = self
            .provisionals_of_certificate(certificate_id)
            .await?
            .into_iter()
            .filter(|p| p.verdict == ProvisionalVerdict::Valid && p.reissue_flagged_at.is_none())
            .collect();
        let stmt = Stmt::new(
            "UPDATE provisional_credentials SET reissue_flagged_at = $3 \
             WHERE tenant_id = $1 AND certificate_id = $2 AND verdict = 'valid' AND reissue_flagged_at IS NULL",
        )
        .bind(self.tenant)
        .bind(certificate_id)
        .bind(at);
        self.conn.execute(stmt).await?;
        Ok(pending
            .into_iter()
            .map(|mut p| {
                p.reissue_flagged_at = Some(at);
                p
            })
            .collect())
    }

    async fn set_provisional_reissue_handoff(
        &mut self,
        certificate_id: &str,
        provisional_id: &str,
        message_id: &str,
    ) -> StoreResult<bool> {
        let stmt = Stmt::new(
            "UPDATE provisional_credentials SET reissue_message_id = $4 \
             WHERE tenant_id = $1 AND certificate_id = $2 AND provisional_id = $3",
        )
        .bind(self.tenant)
        .bind(certificate_id)
        .bind(provisional_id)
        .bind(message_id);
        Ok(self.conn.execute(stmt).await? == 1)
    }
}
