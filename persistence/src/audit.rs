//! The tamper-evident audit (DESIGN §12, issue 6): every `lock_audit` row is a link of a
//! hash chain per (tenant, property). A row's hash covers its content and the hash of the
//! row before it, and rows carry a gap-free sequence number, so editing, deleting,
//! inserting or reordering any row breaks the chain at that point ([`verify_chain`]).
//!
//! A chain alone does not stop someone with write access from recomputing every hash after
//! an edit; the daily signed roots (a key held outside the database) do.

use sha2::{Digest, Sha256};

use crate::model::AuditRow;

/// The hash before a chain's first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One stored audit row with its chain link.
#[derive(Clone, Debug)]
pub struct ChainedAuditRow {
    /// The row.
    pub row: AuditRow,
    /// Position in its (tenant, property) chain, from 1, gap-free.
    pub seq: i64,
    /// The previous row's hash ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// This row's hash.
    pub row_hash: String,
}

/// The hash of `row` following `prev_hash`: SHA-256 over a versioned, canonical encoding
/// of every column (timestamps to the millisecond, the payload with sorted keys).
pub fn row_hash(prev_hash: &str, seq: i64, row: &AuditRow) -> String {
    let canonical = serde_json::json!([
        row.id,
        row.tenant_id.to_string(),
        row.property_id.as_str(),
        row.credential_id.as_ref().map(|c| c.as_str()),
        row.device_id.as_ref().map(|d| d.as_str()),
        row.actor_kind,
        row.action,
        row.reason,
        row.vendor.map(|v| v.as_str()),
        row.trace_id,
        row.created_at.timestamp_millis(),
        row.payload,
    ]);
    let mut h = Sha256::new();
    h.update(b"lockstep-audit-v1\n");
    h.update(prev_hash.as_bytes());
    h.update(format!("\n{seq}\n").as_bytes());
    h.update(canonical.to_string().as_bytes());
    hex(&h.finalize())
}

/// Where a chain stops being what was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainFault {
    /// A sequence number is missing or out of place: a row was deleted, inserted or moved.
    Sequence {
        /// The sequence number expected here.
        expected: i64,
        /// The one found.
        found: i64,
    },
    /// The row does not link to the row before it.
    Link {
        /// The row's sequence number.
        seq: i64,
    },
    /// The row's content does not match its hash: it was edited.
    Content {
        /// The row's sequence number.
        seq: i64,
    },
}

/// Checks a chain given in sequence order; returns its faults (empty: intact) and the
/// hash of its last row.
pub fn verify_chain(rows: &[ChainedAuditRow]) -> (Vec<ChainFault>, String) {
    let mut faults = Vec::new();
    let mut prev = GENESIS.to_owned();
    for (i, r) in rows.iter().enumerate() {
        let expected = i64::try_from(i).unwrap_or(i64::MAX) + 1;
        if r.seq != expected {
            faults.push(ChainFault::Sequence {
                expected,
                found: r.seq,
            });
        }
        if r.prev_hash != prev {
            faults.push(ChainFault::Link { seq: r.seq });
        }
        if row_hash(&r.prev_hash, r.seq, &r.row) != r.row_hash {
            faults.push(ChainFault::Content { seq: r.seq });
        }
        prev = r.row_hash.clone();
    }
    (faults, prev)
}

/// The Merkle root of row hashes (SHA-256; leaves and nodes domain-separated; the last
/// node of an odd level is promoted), hex. The root of no rows is [`GENESIS`].
pub fn merkle_root(hashes: &[String]) -> String {
    let mut level: Vec<Vec<u8>> = hashes
        .iter()
        .map(|h| {
            let mut d = Sha256::new();
            d.update(b"leaf");
            d.update(h.as_bytes());
            d.finalize().to_vec()
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| {
                if let [a, b] = pair {
                    let mut d = Sha256::new();
                    d.update(b"node");
                    d.update(a);
                    d.update(b);
                    d.finalize().to_vec()
                } else {
                    pair[0].clone()
                }
            })
            .collect();
    }
    level
        .first()
        .map_or_else(|| GENESIS.to_owned(), |root| hex(root))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
