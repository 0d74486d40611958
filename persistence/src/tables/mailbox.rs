//! `mailbox`: the persistent mailbox of each saga subject and its durable timers
//! (DESIGN §3.2–3.3). A tenant reads and writes its own subjects' entries; the worker path
//! scans every tenant for due work and brings parked drives forward.

use async_trait::async_trait;
use lockstep_domain::{
    KeyCredentialId, PropertyId, TenantId, Timestamp, VendorAdapterId, VendorCode,
};

use crate::dialect::{corrupt, values, values_rows, Row, Stmt};
use crate::model::{
    DueSubject, IntakeMessage, InternalEvent, MailboxEntry, MailboxKind, ScheduleDrive, SubjectRef,
};
use crate::tx::{Access, ReadWrite, Tx, WorkerTx};
use crate::{StoreError, StoreResult};

/// Reads of a tenant's mailbox.
#[async_trait]
pub trait ReadOnlyMailboxTable: Send {
    /// The subject's next open entry due at `now`: consumed events before drives (a cancel
    /// is decided before the next vendor call), then in id order.
    async fn next_mailbox_entry(
        &mut self,
        subject: &str,
        now: Timestamp,
    ) -> StoreResult<Option<MailboxEntry>>;

    /// Where the message `message_id` stands (operator commands wait on it): `None` if it
    /// was never stored, `Some(None)` while it waits, `Some(Some(outcome))` once handled.
    async fn message_outcome(&mut self, message_id: &str) -> StoreResult<Option<Option<String>>>;

    /// The partition a saga subject's entries go to (the newest entry's), `None` when the
    /// subject has none. Partitions are chosen by the broker's hash ring, so a writer
    /// outside the intake path (the reconciler's O-2 re-issue) learns it here.
    async fn subject_partition(&mut self, subject: &str) -> StoreResult<Option<i32>>;

    /// Removal messages not yet decided: open event entries of `topics` (cancellations,
    /// checkouts, revocations, ...) due by `now` at properties with a device of any of
    /// `adapters`. Revocations first after an outage (DESIGN §7) waits for these as well as
    /// for the door truth already pending removal: a cancellation received during the
    /// outage and not yet stepped is a removal that waited too.
    async fn undecided_removals(
        &mut self,
        adapters: &[VendorAdapterId],
        topics: &[&str],
        now: Timestamp,
    ) -> StoreResult<i64>;
}

/// Writes of a tenant's mailbox: entries in, entries done or retried, drives scheduled.
#[async_trait]
pub trait MailboxTable: ReadOnlyMailboxTable {
    /// The mailbox entry of a consumed message, due when it was received.
    async fn enqueue_event(&mut self, msg: &IntakeMessage) -> StoreResult<()>;

    /// [`MailboxTable::enqueue_event`] of many messages in ONE statement (a partition
    /// consumer's batch, issue 11); their entries' ids follow the order of `msgs`, so each
    /// subject's events keep the order they were delivered in.
    async fn enqueue_events(&mut self, msgs: &[&IntakeMessage]) -> StoreResult<()>;

    /// An event a saga sends itself (a durable timer or feedback), due at `event.due_at`.
    async fn enqueue_internal(&mut self, event: &InternalEvent, now: Timestamp) -> StoreResult<()>;

    /// Schedules the credential's one open drive entry, or brings it forward to
    /// `drive.due_at` (never later).
    async fn schedule_drive(&mut self, drive: &ScheduleDrive, now: Timestamp) -> StoreResult<()>;

    /// Finishes an open entry of `subject` with its outcome; [`StoreError::Conflict`] when
    /// it is not open (done already, another tenant's or subject's, unknown). The subject
    /// makes the lookup one seek in the index of open entries: by tenant and id alone,
    /// Postgres chose that index too and read every open entry of the tenant (a burst's
    /// thousands, about 80 buffers a call in `lockstep-bench`).
    async fn complete_entry(
        &mut self,
        subject: &str,
        id: i64,
        outcome: &str,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Moves an open entry of `subject` to `due_at` (a durable timer) with its attempt
    /// count and last error; [`StoreError::Conflict`] when it is not open.
    async fn retry_entry(
        &mut self,
        subject: &str,
        id: i64,
        due_at: Timestamp,
        attempts: i32,
        last_error: &str,
    ) -> StoreResult<()>;
}

/// The worker path's reads of every tenant's mailbox.
#[async_trait]
pub trait ReadOnlyTimerTable: Send {
    /// Subjects with due work in a partition (every partition with `None`), at most
    /// `limit`: those whose due work may take a key off a door first (an open event of
    /// one of `removal_topics`, or a drive of a credential with a door row to remove),
    /// then the longest due.
    async fn due_subjects(
        &mut self,
        partition: Option<i32>,
        now: Timestamp,
        limit: i64,
        removal_topics: &[&str],
    ) -> StoreResult<Vec<DueSubject>>;

    /// The (tenant, property) pairs with mailbox entries in a partition.
    async fn properties_in_partition(
        &mut self,
        partition: i32,
    ) -> StoreResult<Vec<(TenantId, PropertyId)>>;

    /// Open entries, and the due time of the oldest (metrics).
    async fn mailbox_depth(&mut self) -> StoreResult<(i64, Option<Timestamp>)>;
}

/// The worker path's writes of every tenant's mailbox.
#[async_trait]
pub trait TimerTable: ReadOnlyTimerTable {
    /// A vendor is healthy again: its parked drives become due now, those with a removal
    /// pending a second earlier (revocations first, DESIGN §7); how many moved.
    async fn resume_parked(&mut self, vendor: VendorCode, now: Timestamp) -> StoreResult<u64>;
}

fn mailbox_from_row(row: &Row) -> StoreResult<MailboxEntry> {
    let kind = match row.get::<&str>("kind")? {
        "event" => MailboxKind::Event {
            message_id: row
                .get::<Option<String>>("message_id")?
                .ok_or_else(|| corrupt("event without message id"))?,
            topic: row
                .get::<Option<String>>("topic")?
                .ok_or_else(|| corrupt("event without topic"))?,
        },
        "drive" => MailboxKind::Drive {
            credential_id: KeyCredentialId::parse(
                &row.get::<Option<String>>("credential_id")?
                    .ok_or_else(|| corrupt("drive without credential"))?,
            )?,
        },
        _ => return Err(corrupt("unknown mailbox kind")),
    };
    Ok(MailboxEntry {
        id: row.get("id")?,
        tenant_id: row.tenant("tenant_id")?,
        property_id: PropertyId::parse(row.get("property_id")?)?,
        partition: row.get("partition")?,
        subject: row.get("subject")?,
        kind,
        payload: row.json("payload")?,
        due_at: row.ts("due_at")?,
        attempts: row.get("attempts")?,
        created_at: row.ts("created_at")?,
    })
}

/// The `event` entry insert, shared by consumed and internal events.
const INSERT_EVENT: &str = "INSERT INTO mailbox (tenant_id, property_id, partition, subject, kind, message_id, topic, payload, due_at, created_at) VALUES ($1, $2, $3, $4, 'event', $5, $6, $7, $8, $9)";

#[async_trait]
impl<A: Access> ReadOnlyMailboxTable for Tx<A> {
    async fn next_mailbox_entry(
        &mut self,
        subject: &str,
        now: Timestamp,
    ) -> StoreResult<Option<MailboxEntry>> {
        let stmt = Stmt::new(
            "SELECT * FROM mailbox WHERE tenant_id = $1 AND subject = $2 AND done_at IS NULL AND due_at <= $3 ORDER BY (kind = 'drive'), id LIMIT 1",
        )
        .bind(self.tenant)
        .bind(subject)
        .bind(now);
        let row = self.conn.fetch_optional(stmt).await?;
        row.as_ref().map(mailbox_from_row).transpose()
    }

    async fn message_outcome(&mut self, message_id: &str) -> StoreResult<Option<Option<String>>> {
        let stmt = Stmt::new(
            "SELECT outcome FROM mailbox WHERE tenant_id = $1 AND message_id = $2 AND kind = 'event' ORDER BY id DESC LIMIT 1",
        )
        .bind(self.tenant)
        .bind(message_id);
        let row = self.conn.fetch_optional(stmt).await?;
        row.map(|r| r.get("outcome")).transpose()
    }

    async fn subject_partition(&mut self, subject: &str) -> StoreResult<Option<i32>> {
        // an open entry first (indexed; a live stay has its expiry timer), then any
        for open in ["AND done_at IS NULL ", ""] {
            let stmt = Stmt::new(format!(
                "SELECT partition FROM mailbox WHERE tenant_id = $1 AND subject = $2 {open}ORDER BY id DESC LIMIT 1"
            ))
            .bind(self.tenant)
            .bind(subject);
            if let Some(row) = self.conn.fetch_optional(stmt).await? {
                return row.get::<i32>("partition").map(Some);
            }
        }
        Ok(None)
    }

    async fn undecided_removals(
        &mut self,
        adapters: &[VendorAdapterId],
        topics: &[&str],
        now: Timestamp,
    ) -> StoreResult<i64> {
        if adapters.is_empty() || topics.is_empty() {
            return Ok(0);
        }
        let d = self.conn.dialect();
        let ids: Vec<&str> = adapters.iter().map(|a| a.as_str()).collect();
        // both lists are short (an account's adapters, the removal topics); Postgres binds
        // each list as one array argument, SQLite each value apart
        let second = match d {
            crate::dialect::Dialect::Postgres => 4,
            crate::dialect::Dialect::Sqlite => 3 + topics.len(),
        };
        let stmt = Stmt::new(format!(
            "SELECT count(*) AS n FROM mailbox m WHERE m.tenant_id = $1 AND m.done_at IS NULL AND m.kind = 'event' \
             AND m.due_at <= $2 AND {} AND EXISTS (SELECT 1 FROM lock_devices d WHERE d.tenant_id = m.tenant_id \
             AND d.property_id = m.property_id AND {})",
            d.in_list("m.topic", 3, topics.len()),
            d.in_list("d.vendor_adapter_id", second, ids.len())
        ))
        .bind(self.tenant)
        .bind(now)
        .list(topics)
        .list(&ids);
        let row = self.conn.fetch_one(stmt).await?;
        row.get::<i64>("n")
    }
}

#[async_trait]
impl MailboxTable for Tx<ReadWrite> {
    async fn enqueue_event(&mut self, msg: &IntakeMessage) -> StoreResult<()> {
        self.enqueue_events(&[msg]).await
    }

    async fn enqueue_events(&mut self, msgs: &[&IntakeMessage]) -> StoreResult<()> {
        for m in msgs {
            self.own(m.tenant_id, "mailbox message")?;
        }
        const COLUMNS: usize = 10;
        // a multi-row VALUES is inserted in its order, and the chunks one after the other:
        // the ids follow `msgs`
        for chunk in msgs.chunks(values_rows(COLUMNS)) {
            let mut stmt = Stmt::new(format!(
                "INSERT INTO mailbox (tenant_id, property_id, partition, subject, kind, message_id, topic, payload, due_at, created_at) VALUES {}",
                values(chunk.len(), COLUMNS)
            ));
            for m in chunk {
                stmt = stmt
                    .bind(self.tenant)
                    .bind(m.property_id.as_str())
                    .bind(m.partition)
                    .bind(&m.subject)
                    .bind("event")
                    .bind(&m.message_id)
                    .bind(&m.topic)
                    .bind(&m.payload)
                    .bind(m.received_at)
                    .bind(m.received_at);
            }
            self.conn.execute(stmt).await?;
        }
        Ok(())
    }

    async fn enqueue_internal(&mut self, e: &InternalEvent, now: Timestamp) -> StoreResult<()> {
        let stmt = Stmt::new(INSERT_EVENT)
            .bind(self.tenant)
            .bind(e.property_id.as_str())
            .bind(e.partition)
            .bind(&e.subject)
            .bind(ulid::Ulid::new().to_string())
            .bind(&e.topic)
            .bind(&e.payload)
            .bind(e.due_at)
            .bind(now);
        self.conn.execute(stmt).await?;
        Ok(())
    }

    async fn schedule_drive(&mut self, s: &ScheduleDrive, now: Timestamp) -> StoreResult<()> {
        let stmt = Stmt::new(
            "UPDATE mailbox SET due_at = CASE WHEN due_at <= $3 THEN due_at ELSE $3 END WHERE tenant_id = $1 AND credential_id = $2 AND kind = 'drive' AND done_at IS NULL",
        )
        .bind(self.tenant)
        .bind(s.credential_id.as_str())
        .bind(s.due_at);
        let n = self.conn.execute(stmt).await?;
        if n == 0 {
            let stmt = Stmt::new(
                "INSERT INTO mailbox (tenant_id, property_id, partition, subject, kind, credential_id, due_at, created_at) VALUES ($1, $2, $3, $4, 'drive', $5, $6, $7)",
            )
            .bind(self.tenant)
            .bind(s.property_id.as_str())
            .bind(s.partition)
            .bind(&s.subject)
            .bind(s.credential_id.as_str())
            .bind(s.due_at)
            .bind(now);
            self.conn.execute(stmt).await?;
        }
        Ok(())
    }

    async fn complete_entry(
        &mut self,
        subject: &str,
        id: i64,
        outcome: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        let stmt = Stmt::new(
            "UPDATE mailbox SET done_at = $3, outcome = $4 WHERE tenant_id = $1 AND subject = $5 AND id = $2 AND done_at IS NULL",
        )
        .bind(self.tenant)
        .bind(id)
        .bind(now)
        .bind(outcome)
        .bind(subject);
        let n = self.conn.execute(stmt).await?;
        open_entry(n)
    }

    async fn retry_entry(
        &mut self,
        subject: &str,
        id: i64,
        due_at: Timestamp,
        attempts: i32,
        last_error: &str,
    ) -> StoreResult<()> {
        let stmt = Stmt::new(
            "UPDATE mailbox SET due_at = $3, attempts = $4, last_error = $5 WHERE tenant_id = $1 AND subject = $6 AND id = $2 AND done_at IS NULL",
        )
        .bind(self.tenant)
        .bind(id)
        .bind(due_at)
        .bind(attempts)
        .bind(last_error)
        .bind(subject);
        let n = self.conn.execute(stmt).await?;
        open_entry(n)
    }
}

/// An update of one open entry changed exactly one row.
fn open_entry(changed: u64) -> StoreResult<()> {
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict { entity: "mailbox" })
    }
}

#[async_trait]
impl<A: Access> ReadOnlyTimerTable for WorkerTx<A> {
    async fn due_subjects(
        &mut self,
        partition: Option<i32>,
        now: Timestamp,
        limit: i64,
        removal_topics: &[&str],
    ) -> StoreResult<Vec<DueSubject>> {
        let topics = if removal_topics.is_empty() {
            "false".to_owned()
        } else {
            self.conn
                .dialect()
                .in_list("m.topic", 4, removal_topics.len())
        };
        let stmt = Stmt::new(format!(
            "SELECT m.tenant_id, m.property_id, m.partition, m.subject, min(m.due_at) AS due, \
             max(CASE WHEN (m.kind = 'event' AND {topics}) OR (m.kind = 'drive' AND EXISTS (\
               SELECT 1 FROM key_credential_devices d WHERE d.tenant_id = m.tenant_id AND d.key_credential_id = m.credential_id \
               AND d.desired = 'absent' AND d.sync <> 'confirmed')) THEN 1 ELSE 0 END) AS removal \
             FROM mailbox m WHERE m.done_at IS NULL AND m.due_at <= $1 AND ($2 IS NULL OR m.partition = $2) \
             GROUP BY m.tenant_id, m.property_id, m.partition, m.subject ORDER BY removal DESC, due LIMIT $3"
        ))
        .bind(now)
        .bind(partition)
        .bind(limit);
        let stmt = if removal_topics.is_empty() {
            stmt
        } else {
            stmt.list(removal_topics)
        };
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| {
                Ok(DueSubject {
                    subject: SubjectRef {
                        tenant_id: r.tenant("tenant_id")?,
                        property_id: PropertyId::parse(r.get("property_id")?)?,
                        partition: r.get("partition")?,
                        subject: r.get("subject")?,
                    },
                    removal: r.get::<i32>("removal")? == 1,
                })
            })
            .collect()
    }

    async fn properties_in_partition(
        &mut self,
        partition: i32,
    ) -> StoreResult<Vec<(TenantId, PropertyId)>> {
        let stmt =
            Stmt::new("SELECT DISTINCT tenant_id, property_id FROM mailbox WHERE partition = $1")
                .bind(partition);
        let rows = self.conn.fetch_all(stmt).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.tenant("tenant_id")?,
                    PropertyId::parse(r.get("property_id")?)?,
                ))
            })
            .collect()
    }

    async fn mailbox_depth(&mut self) -> StoreResult<(i64, Option<Timestamp>)> {
        let stmt = Stmt::new(
            "SELECT count(*) AS n, min(due_at) AS oldest FROM mailbox WHERE done_at IS NULL",
        );
        let row = self.conn.fetch_one(stmt).await?;
        Ok((row.get("n")?, row.opt_ts("oldest")?))
    }
}

#[async_trait]
impl TimerTable for WorkerTx<ReadWrite> {
    async fn resume_parked(&mut self, vendor: VendorCode, now: Timestamp) -> StoreResult<u64> {
        // Removals a second ahead of the rest, so they are handed out first.
        let mut moved = 0;
        for (due, removals_only) in [(now - chrono::Duration::seconds(1), true), (now, false)] {
            let removal = if removals_only {
                " AND EXISTS (SELECT 1 FROM key_credential_devices d WHERE d.tenant_id = mailbox.tenant_id AND d.key_credential_id = mailbox.credential_id AND d.desired = 'absent' AND d.sync = 'pending')"
            } else {
                ""
            };
            let stmt = Stmt::new(format!(
                "UPDATE mailbox SET due_at = $1 WHERE kind = 'drive' AND done_at IS NULL AND due_at > $1 \
                 AND EXISTS (SELECT 1 FROM key_credentials c WHERE c.tenant_id = mailbox.tenant_id AND c.id = mailbox.credential_id AND c.vendor = $2){removal}"
            ))
            .bind(due)
            .bind(vendor.as_str());
            moved += self.conn.execute(stmt).await?;
        }
        Ok(moved)
    }
}
