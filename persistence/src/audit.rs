//! The tamper-evident audit (DESIGN §12, issue 6): every `lock_audit` row is a link of a
//! hash chain per (tenant, property). A row's hash covers its content and the hash of the
//! row before it, and rows carry a gap-free sequence number, so editing, deleting,
//! inserting or reordering any row breaks the chain at that point ([`verify_chain`]).
//!
//! A chain alone does not stop someone with write access from recomputing every hash after
//! an edit; the daily signed roots (a key held outside the database) do.
//!
//! Rows are written unlinked by the step that makes them and linked afterwards by
//! [`link_all`] (a background task of the service; `lockstep audit seal` runs it before
//! [`seal_chains`]), so one property's steps never wait on each other for the chain (issue 11).
//! Retention deletes the oldest sealed stretches and leaves an anchor, the last deleted
//! row's sequence number and hash, from which [`verify_all`] checks the rest.

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

/// A chain's head: its last link, and the retention anchor it starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// Sequence number of the last linked row (0: none yet).
    pub seq: i64,
    /// Hash of the last linked row ([`GENESIS`] for none).
    pub head_hash: String,
    /// Rows up to this sequence number were deleted by retention (0: none).
    pub pruned_through_seq: i64,
    /// The hash of the last deleted row ([`GENESIS`] for none): the next row links to it.
    pub pruned_through_hash: String,
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
    /// The chain starts after a retention anchor that no valid signed root covers: rows
    /// were deleted that retention may not delete.
    Anchor {
        /// The anchor's sequence number.
        seq: i64,
    },
}

/// Checks a whole chain given in sequence order (from its first row, linked to
/// [`GENESIS`]); returns its faults (empty: intact) and the hash of its last row.
pub fn verify_chain(rows: &[ChainedAuditRow]) -> (Vec<ChainFault>, String) {
    verify_chain_from(0, GENESIS, rows)
}

/// Checks the rows of a chain after a retention anchor (`anchor_seq`, `anchor_hash`: the
/// last deleted row's number and hash), given in sequence order; returns the faults and
/// the hash of its last row.
pub fn verify_chain_from(
    anchor_seq: i64,
    anchor_hash: &str,
    rows: &[ChainedAuditRow],
) -> (Vec<ChainFault>, String) {
    let mut faults = Vec::new();
    let mut prev = anchor_hash.to_owned();
    for (i, r) in rows.iter().enumerate() {
        let expected = anchor_seq + i64::try_from(i).unwrap_or(i64::MAX) + 1;
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

/// A signed Merkle root over a stretch of one chain (`from_seq..=to_seq`), made daily by a
/// key held outside the database. Whoever can write the database can recompute every row
/// hash after an edit, but cannot sign the recomputed root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedRoot {
    /// Tenant.
    pub tenant_id: lockstep_domain::TenantId,
    /// Property.
    pub property_id: lockstep_domain::PropertyId,
    /// First row covered.
    pub from_seq: i64,
    /// Last row covered.
    pub to_seq: i64,
    /// Merkle root of the covered rows' hashes.
    pub merkle_root: String,
    /// Ed25519 signature of [`seal_message`], hex.
    pub signature: String,
    /// Which key signed (hex of its public key).
    pub key_id: String,
    /// When.
    pub sealed_at: lockstep_domain::Timestamp,
}

/// What is signed: every field that places the root.
pub fn seal_message(
    tenant: lockstep_domain::TenantId,
    property: &lockstep_domain::PropertyId,
    from_seq: i64,
    to_seq: i64,
    merkle_root: &str,
) -> Vec<u8> {
    format!("lockstep-audit-root-v1|{tenant}|{property}|{from_seq}|{to_seq}|{merkle_root}")
        .into_bytes()
}

/// The public half of a signing key, hex: the `key_id` of its seals.
pub fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    hex(key.as_bytes())
}

/// Parses a 32-byte key (64 hex digits): a signing key's seed or a public key.
pub fn key_bytes(hex_text: &str) -> Option<[u8; 32]> {
    let t = hex_text.trim();
    if t.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(t.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Rows the linker links per transaction.
pub const LINK_BATCH: i64 = 500;

/// Links every pending row of one chain, [`LINK_BATCH`] rows per short worker transaction
/// (each holds the chain's head only while it links). Returns how many rows it linked.
pub async fn link_chain<S: crate::Storage + ?Sized>(
    store: &S,
    tenant: lockstep_domain::TenantId,
    property: &lockstep_domain::PropertyId,
) -> crate::StoreResult<u64> {
    use crate::tables::AuditLinkTable;
    let mut linked = 0;
    loop {
        let mut tx = store.worker().await?;
        let n = tx.link_pending(tenant, property, LINK_BATCH).await?;
        tx.commit().await?;
        linked += n;
        if n < LINK_BATCH as u64 {
            return Ok(linked);
        }
    }
}

/// Links the pending rows of every chain (the linker's beat; issue 11). Returns how many
/// rows it linked. Rows committed while it runs may wait for the next beat.
pub async fn link_all<S: crate::Storage + ?Sized>(store: &S) -> crate::StoreResult<u64> {
    use crate::tables::ReadOnlyAuditHeadTable;
    const CHAINS: i64 = 200;
    let mut linked = 0;
    // a bounded number of rounds: a steady stream of new rows cannot keep it here
    for _ in 0..16 {
        let mut tx = store.worker_read().await?;
        let chains = tx.pending_audit_chains(CHAINS).await?;
        tx.commit().await?;
        for (tenant, property) in &chains {
            linked += link_chain(store, *tenant, property).await?;
        }
        if (chains.len() as i64) < CHAINS {
            break;
        }
    }
    Ok(linked)
}

/// Seals every chain's linked rows not yet covered by a root: one signed root per chain
/// that grew since its last seal. Returns the roots written. Rows still pending are left
/// for the next seal (`lockstep audit seal` runs [`link_all`] first).
pub async fn seal_chains(
    store: &dyn crate::Store,
    key: &ed25519_dalek::SigningKey,
    now: lockstep_domain::Timestamp,
) -> crate::StoreResult<Vec<SealedRoot>> {
    use ed25519_dalek::Signer;
    let mut sealed = Vec::new();
    for (tenant, property) in store.audit_chains().await? {
        let chain = store.audit_chain(tenant, &property).await?;
        let covered = store
            .audit_roots(tenant, &property)
            .await?
            .iter()
            .map(|r| r.to_seq)
            .max()
            .unwrap_or(0);
        let fresh: Vec<&ChainedAuditRow> = chain.iter().filter(|r| r.seq > covered).collect();
        let (Some(first), Some(last)) = (fresh.first(), fresh.last()) else {
            continue;
        };
        let hashes: Vec<String> = fresh.iter().map(|r| r.row_hash.clone()).collect();
        let root = merkle_root(&hashes);
        let msg = seal_message(tenant, &property, first.seq, last.seq, &root);
        let seal = SealedRoot {
            tenant_id: tenant,
            property_id: property.clone(),
            from_seq: first.seq,
            to_seq: last.seq,
            merkle_root: root,
            signature: hex(&key.sign(&msg).to_bytes()),
            key_id: key_id(&key.verifying_key()),
            sealed_at: now,
        };
        store.insert_audit_root(&seal).await?;
        sealed.push(seal);
    }
    Ok(sealed)
}

/// What `verify_all` found in one chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Tenant.
    pub tenant_id: lockstep_domain::TenantId,
    /// Property.
    pub property_id: lockstep_domain::PropertyId,
    /// Linked rows stored (after the retention anchor).
    pub rows: usize,
    /// Stored rows covered by a valid signed root.
    pub sealed_rows: i64,
    /// Rows deleted by retention (the chain is checked from their anchor on).
    pub pruned_rows: i64,
    /// Rows written but not linked yet: not a fault, the linker has not reached them.
    pub pending_rows: usize,
    /// Broken links, in chain order.
    pub faults: Vec<ChainFault>,
    /// Seals that do not verify: `(from_seq, to_seq, why)`.
    pub bad_seals: Vec<(i64, i64, &'static str)>,
}

impl ChainReport {
    /// Nothing wrong.
    pub fn intact(&self) -> bool {
        self.faults.is_empty() && self.bad_seals.is_empty()
    }
}

/// Verifies every chain: its links from its retention anchor on, and each signed root
/// against `key` and the rows it covers (a root signed by another key, a signature that
/// does not verify, or rows whose Merkle root no longer matches are bad seals). A root over
/// rows retention deleted is checked by its signature alone, and the anchor must lie under
/// a valid root. Rows not linked yet are counted, not judged. Reads only: it links nothing.
pub async fn verify_all(
    store: &dyn crate::Store,
    key: &ed25519_dalek::VerifyingKey,
) -> crate::StoreResult<Vec<ChainReport>> {
    let mut reports = Vec::new();
    for (tenant, property) in store.audit_chains().await? {
        let head = store.audit_head(tenant, &property).await?;
        let (anchor_seq, anchor_hash) = head
            .map(|h| (h.pruned_through_seq, h.pruned_through_hash))
            .unwrap_or_else(|| (0, GENESIS.to_owned()));
        let chain = store.audit_chain(tenant, &property).await?;
        let pending_rows = store.pending_audit(tenant, &property).await?.len();
        let (mut faults, _) = verify_chain_from(anchor_seq, &anchor_hash, &chain);
        let mut bad_seals = Vec::new();
        let mut sealed_rows = 0;
        let mut anchor_sealed = anchor_seq == 0;
        for seal in store.audit_roots(tenant, &property).await? {
            let why = if seal.from_seq <= anchor_seq {
                // some or all of its rows are gone: its signature still places it
                check_signature(&seal, key)
            } else {
                check_seal(&seal, &chain, key)
            };
            match why {
                None => {
                    sealed_rows += seal.to_seq - seal.from_seq.max(anchor_seq + 1) + 1;
                    anchor_sealed |= (seal.from_seq..=seal.to_seq).contains(&anchor_seq);
                }
                Some(w) => bad_seals.push((seal.from_seq, seal.to_seq, w)),
            }
        }
        if !anchor_sealed {
            faults.insert(0, ChainFault::Anchor { seq: anchor_seq });
        }
        reports.push(ChainReport {
            tenant_id: tenant,
            property_id: property,
            rows: chain.len(),
            sealed_rows,
            pruned_rows: anchor_seq,
            pending_rows,
            faults,
            bad_seals,
        });
    }
    Ok(reports)
}

/// Whether `seal` was signed by `key` over what it says.
fn check_signature(seal: &SealedRoot, key: &ed25519_dalek::VerifyingKey) -> Option<&'static str> {
    use ed25519_dalek::Verifier;
    if seal.key_id != key_id(key) {
        return Some("signed by another key");
    }
    let sig = match decode_sig(&seal.signature) {
        Some(s) => s,
        None => return Some("malformed signature"),
    };
    let msg = seal_message(
        seal.tenant_id,
        &seal.property_id,
        seal.from_seq,
        seal.to_seq,
        &seal.merkle_root,
    );
    if key.verify(&msg, &sig).is_err() {
        return Some("signature does not verify");
    }
    None
}

fn check_seal(
    seal: &SealedRoot,
    chain: &[ChainedAuditRow],
    key: &ed25519_dalek::VerifyingKey,
) -> Option<&'static str> {
    if let Some(why) = check_signature(seal, key) {
        return Some(why);
    }
    let hashes: Vec<String> = chain
        .iter()
        .filter(|r| (seal.from_seq..=seal.to_seq).contains(&r.seq))
        .map(|r| r.row_hash.clone())
        .collect();
    let expected = usize::try_from(seal.to_seq - seal.from_seq + 1).unwrap_or(0);
    if hashes.len() != expected {
        return Some("rows it covers are missing");
    }
    if merkle_root(&hashes) != seal.merkle_root {
        return Some("rows it covers changed");
    }
    None
}

fn decode_sig(hex_text: &str) -> Option<ed25519_dalek::Signature> {
    let t = hex_text.trim();
    if t.len() != 128 {
        return None;
    }
    let mut out = [0u8; 64];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(t.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(ed25519_dalek::Signature::from_bytes(&out))
}
