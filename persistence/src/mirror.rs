//! The front-desk agent's local SQLite mirror (spec `004` §7), kept by `lockstep agent`:
//! its certificate (the public half only; the private key stays in its key file), its
//! relay sessions, the credentials whose cards it encoded, and the local outbox that holds
//! each encoded card's number keyed by the job's idempotency key, so an agent restarted
//! after a card was encoded (and before its result reached the server) answers the job
//! again with the same card instead of encoding a second one.
//!
//! This is not a tenant store: one desktop, one file, no tenant scoping, no encryption (the
//! card numbers are what the desk's own encoder wrote; protect the file like the key file).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row as _;

use crate::StoreResult;

/// The topic of a card the desk encoded, in `local_outbox`.
pub const CARD_ENCODED_TOPIC: &str = "melmastoon.lock.card.encoded.local.v1";

const SCHEMA: &[&str] = &[
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

impl DeskMirror {
    /// Opens (creating it if missing) the mirror at `path`.
    pub async fn open(path: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite:{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
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
}
