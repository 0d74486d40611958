//! The front-desk agent's local SQLite mirror (spec `004` §7), kept by `lockstep agent`:
//! its certificate (the public half only; the private key stays in its key file), its
//! relay sessions, the credentials whose cards it encoded, and the local outbox that holds
//! each encoded card's number keyed by the job's idempotency key, so an agent restarted
//! after a card was encoded (and before its result reached the server) answers the job
//! again with the same card instead of encoding a second one.
//!
//! It also keeps the provisional credentials the desk minted while cut off from Lockstep
//! (spec `003` §5, I-7): each signed as minted, unsynced until the server's reconciler
//! answers, then with the server's verdict.
//!
//! A rotated certificate's successor is recorded here (with the certificate it replaces,
//! its expiry and Lockstep's signature) before the agent writes its new key: the agent runs
//! with the newest certificate of the rotation chain whose key is the key file's
//! ([`DeskMirror::successor`]), so a crash between the two leaves it on the old pair.
//!
//! This is not a tenant store: one desktop, one file, no tenant scoping, no encryption (the
//! card numbers are what the desk's own encoder wrote; protect the file like the key file).
//!
//! The schema is the mirror's own: [`MIGRATIONS`] in order, the file's `user_version`
//! naming how many it has applied. Every statement is `IF NOT EXISTS`, so a file created
//! before the versions were counted (version 0, the first migration's tables present)
//! takes the first one again harmlessly.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row as _;

use crate::StoreResult;

/// The topic of a card the desk encoded, in `local_outbox`.
pub const CARD_ENCODED_TOPIC: &str = "melmastoon.lock.card.encoded.local.v1";

/// The mirror's migrations, in order; a file at `user_version` n has applied the first n.
pub const MIGRATIONS: &[&[&str]] = &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3];

/// The tables of the first agents: certificate, sessions, encoded cards.
const SCHEMA_V1: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS offline_certificates_local (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        property_id TEXT NOT NULL,
        desktop_device_id TEXT NOT NULL,
        public_key_ed25519 TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS encoder_sessions_local (
        id TEXT PRIMARY KEY,
        relay_url TEXT NOT NULL,
        opened_at TEXT NOT NULL,
        closed_at TEXT,
        close_reason TEXT
    )",
    "CREATE TABLE IF NOT EXISTS key_credentials_local (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        rooms TEXT NOT NULL,
        valid_from TEXT NOT NULL,
        valid_until TEXT NOT NULL,
        provisional INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS local_outbox (
        id TEXT PRIMARY KEY,
        topic TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        payload TEXT NOT NULL,
        created_at TEXT NOT NULL,
        pushed_at TEXT
    )",
];

/// Provisional credentials minted offline (spec `003` §5, I-7): what the desk signed, and
/// the server's verdict once it answered (`outcome` NULL until then). The row keeps the
/// card's number because the signature covers it: the desk sends it again until answered.
const SCHEMA_V2: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS provisional_credentials_local (
        id TEXT PRIMARY KEY,
        certificate_id TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        property_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        reservation_id TEXT,
        rooms TEXT NOT NULL,
        valid_from TEXT NOT NULL,
        valid_until TEXT NOT NULL,
        minted_at TEXT NOT NULL,
        card_number TEXT,
        signature TEXT NOT NULL,
        outcome TEXT CHECK (outcome IN ('accepted', 'revoked')),
        reason TEXT,
        server_credential_id TEXT,
        synced_at TEXT
    )",
    "CREATE INDEX IF NOT EXISTS provisional_credentials_local_unsynced
        ON provisional_credentials_local (minted_at, id) WHERE outcome IS NULL",
];

/// Certificate rotation: a certificate's expiry, Lockstep's signature over it and the
/// certificate it renewed, for the successors the agent is given over the relay (and the
/// expiry of the first one, once the relay names it).
const SCHEMA_V3: &[&str] = &[
    "ALTER TABLE offline_certificates_local ADD COLUMN issued_at TEXT",
    "ALTER TABLE offline_certificates_local ADD COLUMN expires_at TEXT",
    "ALTER TABLE offline_certificates_local ADD COLUMN issuer_signature TEXT",
    "ALTER TABLE offline_certificates_local ADD COLUMN replaces_id TEXT",
    "CREATE INDEX IF NOT EXISTS offline_certificates_local_replaces
        ON offline_certificates_local (replaces_id) WHERE replaces_id IS NOT NULL",
];

/// A certificate the desk holds (the public half; its key is in the key file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirroredCertificate {
    /// `oki_`.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Property.
    pub property_id: String,
    /// The desktop it binds.
    pub desktop_device_id: String,
    /// Its key's public half (base64).
    pub public_key_ed25519: String,
    /// When issued, when known.
    pub issued_at: Option<DateTime<Utc>>,
    /// When it expires, when known.
    pub expires_at: Option<DateTime<Utc>>,
    /// Lockstep's signature over it (base64), when the desk was given it.
    pub issuer_signature: Option<String>,
    /// The certificate it renewed (rotation).
    pub replaces: Option<String>,
}

fn certificate_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<MirroredCertificate> {
    let opt_ts = |column: &str| -> StoreResult<Option<DateTime<Utc>>> {
        row.try_get::<Option<String>, _>(column)?
            .as_deref()
            .map(parse_ts)
            .transpose()
    };
    Ok(MirroredCertificate {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        property_id: row.try_get("property_id")?,
        desktop_device_id: row.try_get("desktop_device_id")?,
        public_key_ed25519: row.try_get("public_key_ed25519")?,
        issued_at: opt_ts("issued_at")?,
        expires_at: opt_ts("expires_at")?,
        issuer_signature: row.try_get("issuer_signature")?,
        replaces: row.try_get("replaces_id")?,
    })
}

/// A card the desk encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirroredCard {
    /// The job's idempotency key.
    pub idempotency_key: String,
    /// The credential it carries (`key_`).
    pub credential_id: String,
    /// The rooms it opens.
    pub rooms: Vec<String>,
    /// Start of validity.
    pub valid_from: DateTime<Utc>,
    /// End of validity.
    pub valid_until: DateTime<Utc>,
    /// What the reader read back.
    pub card_number: String,
    /// The encoder that made it.
    pub encoder_id: String,
    /// When.
    pub completed_at: DateTime<Utc>,
}

/// The mirror file.
#[derive(Clone, Debug)]
pub struct DeskMirror {
    pool: SqlitePool,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_ts(s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| crate::StoreError::Corrupt(format!("mirror timestamp: {e}")))
}

/// Applies the migrations the file has not applied yet, each with its `user_version` in
/// one transaction.
async fn migrate(pool: &SqlitePool) -> StoreResult<()> {
    let applied: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(pool)
        .await?;
    let applied = usize::try_from(applied).unwrap_or(0);
    if applied > MIGRATIONS.len() {
        return Err(crate::StoreError::Corrupt(format!(
            "mirror schema version {applied} is newer than this agent's {}: run a newer agent",
            MIGRATIONS.len()
        )));
    }
    for (version, statements) in MIGRATIONS.iter().enumerate().skip(applied) {
        let mut tx = pool.begin().await?;
        for statement in *statements {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        // PRAGMA takes no bound parameters; the value is our own constant.
        sqlx::query(&format!("PRAGMA user_version = {}", version + 1))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// What the server made of a provisional credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalVerdict {
    /// Materialized: a credential of Lockstep's now.
    Accepted,
    /// Refused and revoked: the card or code handed over opens nothing.
    Revoked,
}

impl LocalVerdict {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "accepted" => Ok(Self::Accepted),
            "revoked" => Ok(Self::Revoked),
            other => Err(crate::StoreError::Corrupt(format!(
                "mirror provisional outcome {other:?}"
            ))),
        }
    }
}

/// A provisional credential the desk minted, as it signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirroredProvisional {
    /// The desk's id for it.
    pub id: String,
    /// The certificate it was minted under (`oki_`).
    pub certificate_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Property.
    pub property_id: String,
    /// The kind minted.
    pub kind: String,
    /// The stay.
    pub reservation_id: Option<String>,
    /// The rooms it opens.
    pub rooms: Vec<String>,
    /// Start of validity.
    pub valid_from: DateTime<Utc>,
    /// End of validity.
    pub valid_until: DateTime<Utc>,
    /// When it was minted.
    pub minted_at: DateTime<Utc>,
    /// The card's number, when a card was encoded for it.
    pub card_number: Option<String>,
    /// The desk's Ed25519 signature (base64).
    pub signature: String,
}

/// The server's answer on a provisional credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionalSync {
    /// The verdict.
    pub outcome: LocalVerdict,
    /// Why, when revoked.
    pub reason: Option<String>,
    /// Lockstep's credential (`key_`), when accepted.
    pub server_credential_id: Option<String>,
    /// When the answer arrived.
    pub synced_at: DateTime<Utc>,
}

fn provisional_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<MirroredProvisional> {
    let rooms: String = row.try_get("rooms")?;
    Ok(MirroredProvisional {
        id: row.try_get("id")?,
        certificate_id: row.try_get("certificate_id")?,
        tenant_id: row.try_get("tenant_id")?,
        property_id: row.try_get("property_id")?,
        kind: row.try_get("kind")?,
        reservation_id: row.try_get("reservation_id")?,
        rooms: serde_json::from_str(&rooms)
            .map_err(|e| crate::StoreError::Corrupt(format!("mirror rooms: {e}")))?,
        valid_from: parse_ts(&row.try_get::<String, _>("valid_from")?)?,
        valid_until: parse_ts(&row.try_get::<String, _>("valid_until")?)?,
        minted_at: parse_ts(&row.try_get::<String, _>("minted_at")?)?,
        card_number: row.try_get("card_number")?,
        signature: row.try_get("signature")?,
    })
}

impl DeskMirror {
    /// Opens (creating it if missing) the mirror at `path`.
    pub async fn open(path: &str) -> StoreResult<Self> {
        crate::sqlite::private_file(std::path::Path::new(path))?;
        let options = SqliteConnectOptions::from_str(&format!("sqlite:{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        Ok(Self { pool })
    }

    /// Records the certificate the agent runs with (its public half).
    pub async fn record_certificate(
        &self,
        id: &str,
        tenant_id: &str,
        property_id: &str,
        desktop_device_id: &str,
        public_key_ed25519: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO offline_certificates_local (id, tenant_id, property_id, desktop_device_id, public_key_ed25519, recorded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(property_id)
        .bind(desktop_device_id)
        .bind(public_key_ed25519)
        .bind(ts(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a certificate the relay renewed for the desk, with what it replaces, its
    /// expiry and Lockstep's signature; recording it again changes nothing. Call it before
    /// the new key is written: until then the agent stays on the old pair.
    pub async fn record_renewed_certificate(
        &self,
        c: &MirroredCertificate,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO offline_certificates_local (id, tenant_id, property_id, desktop_device_id, public_key_ed25519, recorded_at, issued_at, expires_at, issuer_signature, replaces_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&c.id)
        .bind(&c.tenant_id)
        .bind(&c.property_id)
        .bind(&c.desktop_device_id)
        .bind(&c.public_key_ed25519)
        .bind(ts(now))
        .bind(c.issued_at.map(ts))
        .bind(c.expires_at.map(ts))
        .bind(&c.issuer_signature)
        .bind(&c.replaces)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records when certificate `id` expires (the relay named it); false when the mirror
    /// holds no such certificate.
    pub async fn record_certificate_expiry(
        &self,
        id: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE offline_certificates_local SET expires_at = ?2 WHERE id = ?1")
                .bind(id)
                .bind(ts(expires_at))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The certificate `id`, all that the mirror knows of it.
    pub async fn certificate_record(&self, id: &str) -> StoreResult<Option<MirroredCertificate>> {
        let row = sqlx::query("SELECT * FROM offline_certificates_local WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(certificate_from_row).transpose()
    }

    /// The newest recorded renewal of certificate `id`, if any.
    pub async fn successor(&self, id: &str) -> StoreResult<Option<MirroredCertificate>> {
        let row = sqlx::query(
            "SELECT * FROM offline_certificates_local WHERE replaces_id = ?1 ORDER BY issued_at DESC, recorded_at DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(certificate_from_row).transpose()
    }

    /// A relay session opened.
    pub async fn session_opened(
        &self,
        session_id: &str,
        relay_url: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO encoder_sessions_local (id, relay_url, opened_at) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(session_id)
        .bind(relay_url)
        .bind(ts(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every open session ended (`reason` lowercase); returns how many were closed.
    pub async fn sessions_closed(&self, reason: &str, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE encoder_sessions_local SET closed_at = ?1, close_reason = ?2 WHERE closed_at IS NULL",
        )
        .bind(ts(now))
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// `(open, closed)` sessions.
    pub async fn session_counts(&self) -> StoreResult<(i64, i64)> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE closed_at IS NULL) AS open, count(*) FILTER (WHERE closed_at IS NOT NULL) AS closed FROM encoder_sessions_local",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("open")?, row.try_get("closed")?))
    }

    /// Records an encoded card: its credential and the card's number (in the local
    /// outbox, keyed by the job's idempotency key). The first record of a key is kept.
    pub async fn record_card(&self, card: &MirroredCard) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let now = ts(card.completed_at);
        sqlx::query(
            "INSERT INTO key_credentials_local (id, kind, state, rooms, valid_from, valid_until, provisional, created_at, updated_at) \
             VALUES (?1, 'rfid_card', 'active', ?2, ?3, ?4, 0, ?5, ?5) \
             ON CONFLICT (id) DO UPDATE SET valid_from = excluded.valid_from, valid_until = excluded.valid_until, updated_at = excluded.updated_at",
        )
        .bind(&card.credential_id)
        .bind(serde_json::json!(card.rooms).to_string())
        .bind(ts(card.valid_from))
        .bind(ts(card.valid_until))
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        let payload = serde_json::json!({
            "idempotencyKey": card.idempotency_key,
            "credentialId": card.credential_id,
            "cardNumber": card.card_number,
            "encoderId": card.encoder_id,
            "validFrom": ts(card.valid_from),
            "validUntil": ts(card.valid_until),
            "completedAt": now,
        });
        sqlx::query(
            "INSERT INTO local_outbox (id, topic, idempotency_key, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(ulid::Ulid::new().to_string())
        .bind(CARD_ENCODED_TOPIC)
        .bind(&card.idempotency_key)
        .bind(payload.to_string())
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The card encoded for `idempotency_key`: `(card number, encoder, completed at)`.
    pub async fn card(
        &self,
        idempotency_key: &str,
    ) -> StoreResult<Option<(String, String, DateTime<Utc>)>> {
        let row = sqlx::query(
            "SELECT payload FROM local_outbox WHERE topic = ?1 AND idempotency_key = ?2",
        )
        .bind(CARD_ENCODED_TOPIC)
        .bind(idempotency_key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let payload: String = row.try_get("payload")?;
        let v: serde_json::Value = serde_json::from_str(&payload)
            .map_err(|e| crate::StoreError::Corrupt(format!("mirror payload: {e}")))?;
        let field = |k: &str| v[k].as_str().map(str::to_owned);
        match (
            field("cardNumber"),
            field("encoderId"),
            field("completedAt"),
        ) {
            (Some(n), Some(e), Some(at)) => Ok(Some((n, e, parse_ts(&at)?))),
            _ => Err(crate::StoreError::Corrupt(
                "mirror payload lacks a card".into(),
            )),
        }
    }

    /// How many cards the desk encoded.
    pub async fn cards(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT count(*) AS n FROM local_outbox WHERE topic = ?1")
            .bind(CARD_ENCODED_TOPIC)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// The recorded certificate `id`: `(tenant, property, public key)`.
    pub async fn certificate(&self, id: &str) -> StoreResult<Option<(String, String, String)>> {
        let row = sqlx::query(
            "SELECT tenant_id, property_id, public_key_ed25519 FROM offline_certificates_local WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                r.try_get("tenant_id")?,
                r.try_get("property_id")?,
                r.try_get("public_key_ed25519")?,
            ))
        })
        .transpose()
    }

    /// Records a provisional credential the desk minted, unsynced, with its local
    /// credential row (`provisional = 1`, `active`). False when its id was recorded before
    /// (the first record is kept).
    pub async fn record_provisional(&self, p: &MirroredProvisional) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let rooms = serde_json::json!(p.rooms).to_string();
        let minted = ts(p.minted_at);
        let inserted = sqlx::query(
            "INSERT INTO provisional_credentials_local (id, certificate_id, tenant_id, property_id, kind, reservation_id, rooms, \
             valid_from, valid_until, minted_at, card_number, signature) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&p.id)
        .bind(&p.certificate_id)
        .bind(&p.tenant_id)
        .bind(&p.property_id)
        .bind(&p.kind)
        .bind(&p.reservation_id)
        .bind(&rooms)
        .bind(ts(p.valid_from))
        .bind(ts(p.valid_until))
        .bind(&minted)
        .bind(&p.card_number)
        .bind(&p.signature)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            sqlx::query(
                "INSERT INTO key_credentials_local (id, kind, state, rooms, valid_from, valid_until, provisional, created_at, updated_at) \
                 VALUES (?1, ?2, 'active', ?3, ?4, ?5, 1, ?6, ?6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&p.id)
            .bind(&p.kind)
            .bind(&rooms)
            .bind(ts(p.valid_from))
            .bind(ts(p.valid_until))
            .bind(&minted)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// The provisional credentials the server has not answered yet, oldest first.
    pub async fn unsynced_provisionals(&self) -> StoreResult<Vec<MirroredProvisional>> {
        let rows = sqlx::query(
            "SELECT * FROM provisional_credentials_local WHERE outcome IS NULL ORDER BY minted_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(provisional_from_row).collect()
    }

    /// Records the server's verdict on provisional credential `id`; a revoked one's local
    /// credential becomes `revoked`. The first verdict is kept (the server answers the same
    /// one again anyway); false when there was one already or no such credential.
    pub async fn record_provisional_sync(
        &self,
        id: &str,
        sync: &ProvisionalSync,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let at = ts(sync.synced_at);
        let updated = sqlx::query(
            "UPDATE provisional_credentials_local SET outcome = ?2, reason = ?3, server_credential_id = ?4, synced_at = ?5 \
             WHERE id = ?1 AND outcome IS NULL",
        )
        .bind(id)
        .bind(sync.outcome.as_str())
        .bind(&sync.reason)
        .bind(&sync.server_credential_id)
        .bind(&at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if updated && sync.outcome == LocalVerdict::Revoked {
            sqlx::query(
                "UPDATE key_credentials_local SET state = 'revoked', updated_at = ?2 WHERE id = ?1 AND provisional = 1",
            )
            .bind(id)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(updated)
    }

    /// Every provisional credential with the server's verdict, if any, oldest first.
    pub async fn provisionals(
        &self,
    ) -> StoreResult<Vec<(MirroredProvisional, Option<ProvisionalSync>)>> {
        let rows =
            sqlx::query("SELECT * FROM provisional_credentials_local ORDER BY minted_at, id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let p = provisional_from_row(row)?;
                let outcome: Option<String> = row.try_get("outcome")?;
                let sync = match outcome {
                    None => None,
                    Some(o) => Some(ProvisionalSync {
                        outcome: LocalVerdict::parse(&o)?,
                        reason: row.try_get("reason")?,
                        server_credential_id: row.try_get("server_credential_id")?,
                        synced_at: parse_ts(&row.try_get::<String, _>("synced_at")?)?,
                    }),
                };
                Ok((p, sync))
            })
            .collect()
    }

    /// The state of the desk's local credential `id` (`active`, `revoked`).
    pub async fn local_credential_state(&self, id: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT state FROM key_credentials_local WHERE id = ?1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Closes the file.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_card_is_kept_once_per_key_and_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("lockstep-mirror-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("desk.sqlite").to_string_lossy().into_owned();
        let at = DateTime::parse_from_rfc3339("2027-01-01T14:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let card = MirroredCard {
            idempotency_key: "wg-key_1-1-2".into(),
            credential_id: "key_1".into(),
            rooms: vec!["rmu_101".into()],
            valid_from: at,
            valid_until: at + chrono::Duration::hours(20),
            card_number: "1234567890".into(),
            encoder_id: "enc-0".into(),
            completed_at: at,
        };
        let m = DeskMirror::open(&path).await.unwrap();
        m.record_certificate("oki_1", "t", "ppt_a", "desk-1", "pk", at)
            .await
            .unwrap();
        m.session_opened("enc_1", "ws://x/relay/v1", at)
            .await
            .unwrap();
        m.record_card(&card).await.unwrap();
        let again = MirroredCard {
            card_number: "9999999999".into(),
            ..card.clone()
        };
        m.record_card(&again).await.unwrap();
        assert_eq!(m.cards().await.unwrap(), 1);
        assert_eq!(m.sessions_closed("agent_stopped", at).await.unwrap(), 1);
        m.close().await;
        let m = DeskMirror::open(&path).await.unwrap();
        let (number, encoder, when) = m.card("wg-key_1-1-2").await.unwrap().unwrap();
        assert_eq!(
            (number.as_str(), encoder.as_str(), when),
            ("1234567890", "enc-0", at)
        );
        assert_eq!(m.card("other").await.unwrap(), None);
        assert_eq!(m.session_counts().await.unwrap(), (0, 1));
        m.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    fn scratch() -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("lockstep-mirror-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("desk.sqlite").to_string_lossy().into_owned();
        (dir, path)
    }

    fn provisional(id: &str, at: DateTime<Utc>) -> MirroredProvisional {
        MirroredProvisional {
            id: id.into(),
            certificate_id: "oki_1".into(),
            tenant_id: "t".into(),
            property_id: "ppt_a".into(),
            kind: "rfid_card".into(),
            reservation_id: Some("rsv_1".into()),
            rooms: vec!["rmu_101".into()],
            valid_from: at,
            valid_until: at + chrono::Duration::hours(24),
            minted_at: at,
            card_number: Some("1234567890".into()),
            signature: "c2ln".into(),
        }
    }

    #[tokio::test]
    async fn a_mirror_file_of_the_first_schema_gains_the_provisional_table_and_keeps_its_rows() {
        let (dir, path) = scratch();
        let at = DateTime::parse_from_rfc3339("2027-01-01T14:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // a file as the first agents left it: their tables, user_version 0
        {
            let options = SqliteConnectOptions::from_str(&format!("sqlite:{path}"))
                .unwrap()
                .create_if_missing(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            for statement in SCHEMA_V1 {
                sqlx::query(statement).execute(&pool).await.unwrap();
            }
            sqlx::query("INSERT INTO encoder_sessions_local (id, relay_url, opened_at) VALUES ('enc_1', 'ws://x', '2027-01-01T14:00:00.000Z')")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        for _ in 0..2 {
            let m = DeskMirror::open(&path).await.unwrap();
            let version: i64 = sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(&m.pool)
                .await
                .unwrap();
            assert_eq!(version, MIGRATIONS.len() as i64);
            assert_eq!(m.session_counts().await.unwrap(), (1, 0));
            m.record_provisional(&provisional("prov_1", at))
                .await
                .unwrap();
            assert_eq!(m.unsynced_provisionals().await.unwrap().len(), 1);
            m.close().await;
        }
        // a file a newer agent wrote is refused, not downgraded
        {
            let m = DeskMirror::open(&path).await.unwrap();
            sqlx::query("PRAGMA user_version = 99")
                .execute(&m.pool)
                .await
                .unwrap();
            m.close().await;
        }
        let newer = DeskMirror::open(&path).await.unwrap_err();
        assert!(newer.to_string().contains("newer"), "{newer}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_found_as_its_predecessors_successor_after_a_reopen() {
        let (dir, path) = scratch();
        let at = DateTime::parse_from_rfc3339("2027-03-24T14:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let m = DeskMirror::open(&path).await.unwrap();
        m.record_certificate("oki_1", "t", "ppt_a", "desk-1", "old-key", at)
            .await
            .unwrap();
        assert_eq!(m.successor("oki_1").await.unwrap(), None);
        assert!(m
            .record_certificate_expiry("oki_1", at + chrono::Duration::days(7))
            .await
            .unwrap());
        assert!(!m.record_certificate_expiry("oki_9", at).await.unwrap());
        let renewed = |id: &str, key: &str, issued: DateTime<Utc>| MirroredCertificate {
            id: id.into(),
            tenant_id: "t".into(),
            property_id: "ppt_a".into(),
            desktop_device_id: "desk-1".into(),
            public_key_ed25519: key.into(),
            issued_at: Some(issued),
            expires_at: Some(issued + chrono::Duration::days(90)),
            issuer_signature: Some("c2ln".into()),
            replaces: Some("oki_1".into()),
        };
        let lost = renewed("oki_2", "lost-key", at);
        let kept = renewed("oki_3", "new-key", at + chrono::Duration::minutes(5));
        m.record_renewed_certificate(&lost, at).await.unwrap();
        m.record_renewed_certificate(&kept, at).await.unwrap();
        m.record_renewed_certificate(&kept, at).await.unwrap();
        m.close().await;
        let m = DeskMirror::open(&path).await.unwrap();
        assert_eq!(m.successor("oki_1").await.unwrap(), Some(kept.clone()));
        assert_eq!(m.successor("oki_3").await.unwrap(), None);
        let first = m.certificate_record("oki_1").await.unwrap().unwrap();
        assert_eq!(first.expires_at, Some(at + chrono::Duration::days(7)));
        assert_eq!((first.issued_at, first.replaces), (None, None));
        assert_eq!(
            m.certificate("oki_3").await.unwrap(),
            Some(("t".into(), "ppt_a".into(), "new-key".into()))
        );
        m.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_provisional_credential_stays_unsynced_until_the_mirror_has_its_verdict() {
        let (dir, path) = scratch();
        let at = DateTime::parse_from_rfc3339("2027-01-01T14:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let m = DeskMirror::open(&path).await.unwrap();
        let first = provisional("prov_1", at);
        let second = provisional("prov_2", at + chrono::Duration::seconds(1));
        assert!(m.record_provisional(&first).await.unwrap());
        assert!(m.record_provisional(&second).await.unwrap());
        assert!(!m
            .record_provisional(&MirroredProvisional {
                signature: "b3RoZXI=".into(),
                ..first.clone()
            })
            .await
            .unwrap());
        assert_eq!(
            m.unsynced_provisionals().await.unwrap(),
            vec![first.clone(), second.clone()]
        );
        assert_eq!(
            m.local_credential_state("prov_1").await.unwrap().as_deref(),
            Some("active")
        );
        let accepted = ProvisionalSync {
            outcome: LocalVerdict::Accepted,
            reason: None,
            server_credential_id: Some("key_1".into()),
            synced_at: at,
        };
        let revoked = ProvisionalSync {
            outcome: LocalVerdict::Revoked,
            reason: Some("bad_signature".into()),
            server_credential_id: None,
            synced_at: at,
        };
        assert!(m
            .record_provisional_sync("prov_1", &accepted)
            .await
            .unwrap());
        assert!(m.record_provisional_sync("prov_2", &revoked).await.unwrap());
        // the first verdict is kept
        assert!(!m.record_provisional_sync("prov_1", &revoked).await.unwrap());
        assert!(!m.record_provisional_sync("prov_9", &revoked).await.unwrap());
        assert!(m.unsynced_provisionals().await.unwrap().is_empty());
        m.close().await;
        let m = DeskMirror::open(&path).await.unwrap();
        assert_eq!(
            m.provisionals().await.unwrap(),
            vec![(first, Some(accepted)), (second, Some(revoked))]
        );
        assert_eq!(
            m.local_credential_state("prov_1").await.unwrap().as_deref(),
            Some("active")
        );
        assert_eq!(
            m.local_credential_state("prov_2").await.unwrap().as_deref(),
            Some("revoked")
        );
        m.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
