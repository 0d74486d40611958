//! `lockstep agent`: the reference front-desk client (DESIGN §8) around
//! `lockstep_relay::agent`: it connects to a relay, authenticates with the Ed25519 key its
//! offline-issuance certificate binds, drives simulated USB encoders, and keeps spec
//! `004` §7's local SQLite mirror (its certificate, its sessions, the cards it encoded),
//! so a card encoded just before the agent was killed is answered again after a restart
//! rather than encoded twice.
//!
//! Cut off from Lockstep, the desk still hands out keys: `lockstep agent mint` mints a
//! provisional card (spec `003` §5, I-7) into the same mirror, signed with the desk's key,
//! and `run` sends every one not yet answered right after it connects and keeps the
//! server's verdicts.
//!
//! In its certificate's last 7 days `run` rotates it (issue 12): the relay issues a
//! successor for a new key; the mirror records the successor first, then the key file is
//! replaced (a temporary file, synced, renamed over it, mode 0600), and only then does the
//! agent reconnect with them. `run` and `mint` use the newest certificate of the given
//! one's rotation chain whose key is the key file's ([`current_certificate`]), so a desk
//! killed between the two steps comes back on the old pair, which stays in force until the
//! successor authenticates.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use lockstep_domain::{
    Clock, KeyCredentialKind, OfflineIssuanceId, PropertyId, ReservationId, RoomId, SystemClock,
    TenantId,
};
use lockstep_persistence::mirror::{
    DeskMirror, LocalVerdict, MirroredCard, MirroredCertificate, MirroredProvisional,
    ProvisionalSync,
};
use lockstep_relay::agent::{
    Agent, AgentConfig, AgentHost, AgentKey, AgentStatus, AttachedEncoder, EncodedJobs, Encoder,
    Renewal, SimulatedEncoder, StoredEncode,
};
use lockstep_relay::mint::ProvisionalDraft;
use lockstep_relay::protocol::{
    CardKind, CardNumber, EncodeJob, EncoderId, EncoderInfo, IdempotencyKey, JobId,
    ProvisionalCredential, ProvisionalId, SignatureB64, SyncOutcome, SyncResult, Transport,
};
use tracing::{info, warn};

/// What `lockstep agent run` is given.
#[derive(Debug, Clone)]
pub struct AgentArgs {
    /// The relay (`ws://host:port/relay/v1`).
    pub url: String,
    /// The desktop's Ed25519 seed (64 hex digits; `lockstep agent keygen` writes one).
    pub key_file: PathBuf,
    /// Its certificate (`oki_…`).
    pub certificate_id: String,
    /// Tenant (uuid).
    pub tenant: String,
    /// Property.
    pub property: String,
    /// The desktop id the certificate binds.
    pub desktop_id: String,
    /// Lockstep's signature over the certificate (base64), when the relay does not keep it.
    pub certificate_signature: Option<String>,
    /// Only sign for a relay announcing this audience.
    pub audience: Option<String>,
    /// The SQLite mirror file.
    pub mirror: PathBuf,
    /// Simulated encoders.
    pub encoders: usize,
    /// How long the simulated encoder takes per card.
    pub encode_time: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

/// What `lockstep agent mint` is given.
#[derive(Debug, Clone)]
pub struct MintArgs {
    /// The SQLite mirror file (the one `run` uses).
    pub mirror: PathBuf,
    /// The desktop's Ed25519 seed.
    pub key_file: PathBuf,
    /// Its certificate (`oki_…`).
    pub certificate_id: String,
    /// Tenant (uuid).
    pub tenant: String,
    /// Property.
    pub property: String,
    /// The stay.
    pub reservation: String,
    /// The rooms the key opens.
    pub rooms: Vec<String>,
    /// The kind (`rfid_card`).
    pub kind: String,
    /// End of validity (RFC 3339); 24 hours from now when absent.
    pub valid_until: Option<String>,
    /// How long the simulated encoder takes per card.
    pub encode_time: Duration,
}

/// A provisional key minted offline lasts this long unless told otherwise (I-7 allows 48).
const DEFAULT_PROVISIONAL_HOURS: i64 = 24;

/// `lockstep agent mint`: mints one provisional card while the desk is cut off (spec `003`
/// §5): checks it (I-7's 48 hours, before any card is encoded), encodes the card on a
/// simulated encoder, signs it and keeps it unsynced in the mirror; prints its id and
/// nothing else (never the card's number).
pub async fn mint(a: MintArgs) -> anyhow::Result<()> {
    let tenant = TenantId::parse(&a.tenant).map_err(|_| anyhow::anyhow!("--tenant: not a uuid"))?;
    let property = PropertyId::parse(&a.property)
        .map_err(|_| anyhow::anyhow!("--property: not a property id"))?;
    let certificate = OfflineIssuanceId::parse(&a.certificate_id)
        .map_err(|_| anyhow::anyhow!("--certificate-id: not an oki_ id"))?;
    let reservation = ReservationId::parse(&a.reservation)
        .map_err(|_| anyhow::anyhow!("--reservation: 1 to 64 letters, digits, '_' or '-'"))?;
    let rooms = a
        .rooms
        .iter()
        .map(|r| {
            RoomId::parse(r)
                .map_err(|_| anyhow::anyhow!("--room {r:?}: 1 to 64 letters, digits, '_' or '-'"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kind = KeyCredentialKind::parse(&a.kind)
        .map_err(|_| anyhow::anyhow!("--kind {:?}: not a credential kind", a.kind))?;
    anyhow::ensure!(
        kind == KeyCredentialKind::RfidCard,
        "--kind {}: this agent mints rfid_card only (it encodes the card at the desk; it has no way to hand over another kind offline)",
        kind.as_str()
    );
    let clock = SystemClock;
    let now = clock.now();
    let valid_until = match &a.valid_until {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| {
                anyhow::anyhow!(
                    "--valid-until {t:?}: an RFC 3339 time such as 2027-03-02T11:00:00Z"
                )
            })?,
        None => now + chrono::Duration::hours(DEFAULT_PROVISIONAL_HOURS),
    };
    let key = AgentKey::from_seed(read_seed(&a.key_file)?);
    // Checked before the mirror is touched or a card encoded (I-7).
    let mut draft = ProvisionalDraft::new(
        certificate.clone(),
        kind,
        reservation.clone(),
        rooms.clone(),
        now,
        valid_until,
        now,
    )
    .map_err(|e| anyhow::anyhow!("nothing minted: {e}"))?;
    let mirror = open_mirror(&a.mirror).await?;
    // Minted under the certificate the desk holds now: the given one, or its renewal.
    let current = match current_certificate(&mirror, certificate.as_str(), &key).await {
        Ok(c) => c,
        Err(e) => {
            mirror.close().await;
            return Err(e);
        }
    };
    if let Some(c) = current.filter(|c| c.id != certificate.as_str()) {
        let renewed = OfflineIssuanceId::parse(&c.id)
            .map_err(|_| anyhow::anyhow!("the mirror's certificate {} is not an oki_ id", c.id))?;
        draft = ProvisionalDraft::new(renewed, kind, reservation, rooms, now, valid_until, now)
            .map_err(|e| anyhow::anyhow!("nothing minted: {e}"))?;
    }
    let encoder = SimulatedEncoder::new(a.encode_time);
    let minted = mint_provisional(&mirror, &key, tenant, &property, draft, &encoder).await;
    mirror.close().await;
    println!("{}", minted?.provisional_id);
    Ok(())
}

/// Mints `draft` into `mirror` (spec `003` §5, I-7): a card is encoded for it on
/// `encoder` (its number goes into what the desk signs), the canonical payload is signed
/// with `key`, and the credential is kept unsynced until `run` hands it to the relay. When
/// the mirror recorded the certificate, the key, tenant and property must be that
/// certificate's: a credential signed by another key would only be refused as forged.
pub async fn mint_provisional(
    mirror: &DeskMirror,
    key: &AgentKey,
    tenant: TenantId,
    property: &PropertyId,
    draft: ProvisionalDraft,
    encoder: &dyn Encoder,
) -> anyhow::Result<ProvisionalCredential> {
    let certificate = draft.certificate_id().as_str().to_owned();
    if let Some((t, p, public)) = mirror.certificate(&certificate).await? {
        anyhow::ensure!(
            public == key.public_key_base64(),
            "--key-file: not the key certificate {certificate} binds (the mirror recorded another); nothing minted"
        );
        anyhow::ensure!(
            t == tenant.to_string() && p == property.as_str(),
            "certificate {certificate} is of tenant {t}, property {p}; nothing minted"
        );
    }
    let id = draft.provisional_id().as_str().to_owned();
    let card = match draft.kind() {
        KeyCredentialKind::RfidCard => {
            let job = EncodeJob {
                job_id: JobId::parse(&id)?,
                credential_id: id.clone(),
                kind: CardKind::RfidCard,
                rooms: draft
                    .room_ids()
                    .iter()
                    .map(|r| r.as_str().to_owned())
                    .collect(),
                doors: Vec::new(),
                valid_from: draft.valid_from(),
                valid_until: draft.valid_until(),
                idempotency_key: IdempotencyKey::parse(&id)?,
            };
            let card = encoder.encode(&job).await.map_err(|e| {
                anyhow::anyhow!(
                    "encoding the card failed ({}: {}); nothing minted",
                    e.failure.as_str(),
                    e.detail
                )
            })?;
            Some(card)
        }
        _ => None,
    };
    let credential = draft.sign(key, card);
    let stored = mirrored(&credential, tenant, property);
    anyhow::ensure!(
        mirror.record_provisional(&stored).await?,
        "provisional id {id} exists in the mirror; nothing minted"
    );
    info!(
        provisional = %credential.provisional_id,
        certificate = %credential.certificate_id,
        kind = %credential.kind,
        rooms = credential.room_ids.len(),
        "provisional credential minted offline"
    );
    Ok(credential)
}

/// The mirror's row of a provisional credential.
pub fn mirrored(
    p: &ProvisionalCredential,
    tenant: TenantId,
    property: &PropertyId,
) -> MirroredProvisional {
    MirroredProvisional {
        id: p.provisional_id.as_str().to_owned(),
        certificate_id: p.certificate_id.clone(),
        tenant_id: tenant.to_string(),
        property_id: property.as_str().to_owned(),
        kind: p.kind.clone(),
        reservation_id: p.reservation_id.clone(),
        rooms: p.room_ids.clone(),
        valid_from: p.valid_from,
        valid_until: p.valid_until,
        minted_at: p.minted_at,
        card_number: p.card_number.as_ref().map(|c| c.expose().to_owned()),
        signature: p.signature.as_str().to_owned(),
    }
}

/// The credential a mirror row holds, as it was signed.
fn from_mirror(m: &MirroredProvisional) -> anyhow::Result<ProvisionalCredential> {
    Ok(ProvisionalCredential {
        provisional_id: ProvisionalId::parse(&m.id)?,
        certificate_id: m.certificate_id.clone(),
        kind: m.kind.clone(),
        reservation_id: m.reservation_id.clone(),
        room_ids: m.rooms.clone(),
        valid_from: m.valid_from,
        valid_until: m.valid_until,
        minted_at: m.minted_at,
        card_number: m
            .card_number
            .as_deref()
            .map(CardNumber::parse)
            .transpose()?,
        signature: SignatureB64::try_from(m.signature.clone())?,
    })
}

async fn open_mirror(path: &Path) -> anyhow::Result<DeskMirror> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    DeskMirror::open(&path.to_string_lossy())
        .await
        .with_context(|| format!("opening the mirror {}", path.display()))
}

/// The certificate the desk holds now for `given`: the newest of `given`'s rotation chain
/// in the mirror whose key is `key` (a renewal recorded before its key was written is
/// skipped: the desk was stopped between the two, and the older certificate is still in
/// force). `None` when the mirror knows nothing of `given` (a certificate paired just now);
/// an error when none of the chain is `key`'s.
pub async fn current_certificate(
    mirror: &DeskMirror,
    given: &str,
    key: &AgentKey,
) -> anyhow::Result<Option<MirroredCertificate>> {
    let Some(first) = mirror.certificate_record(given).await? else {
        return Ok(None);
    };
    let mut chain = vec![first];
    while let Some(next) = mirror.successor(&chain[chain.len() - 1].id).await? {
        if chain.iter().any(|c| c.id == next.id) {
            break;
        }
        chain.push(next);
    }
    let public = key.public_key_base64();
    chain
        .into_iter()
        .rev()
        .find(|c| c.public_key_ed25519 == public)
        .map(Some)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--key-file: not the key of certificate {given} or of any renewal of it the mirror recorded (pair the desk again, or give its own key file)"
            )
        })
}

/// `lockstep agent keygen`: writes a fresh key (hex seed, mode 0600) and prints its public
/// half in base64, the `publicKeyEd25519` of the certificate request.
pub fn keygen(key_file: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !key_file.exists(),
        "{} exists: a desktop keeps its key (remove it to pair again)",
        key_file.display()
    );
    // 32 bytes from the OS CSPRNG, in hex, like Lockstep's own keys.
    let hex = lockstep_persistence::Cipher::generate_hex();
    write_private(key_file, &hex)?;
    println!(
        "{}",
        AgentKey::from_seed(read_seed(key_file)?).public_key_base64()
    );
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(value.as_bytes())?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value).with_context(|| format!("creating {}", path.display()))
}

/// Replaces the key file with a renewed key, atomically: the seed goes to a temporary file
/// beside it (mode 0600, as `keygen` writes), synced, then renamed over the key file, and
/// the directory synced. A crash leaves the old key or the new one, never a torn file.
pub fn replace_key_file(path: &Path, key: &AgentKey) -> anyhow::Result<()> {
    let hex: String = key
        .expose_seed()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{}: not a file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.renewing", name.to_string_lossy()));
    // A leftover of a desk stopped mid-write: its key was never in use.
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, &hex)?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} over {}", tmp.display(), path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    #[cfg(unix)]
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    Ok(())
}

fn read_seed(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    lockstep_persistence::audit::key_bytes(&text)
        .ok_or_else(|| anyhow::anyhow!("{}: expected 64 hex digits", path.display()))
}

/// The agent's record of encoded cards, in the mirror.
struct MirrorJobs {
    mirror: DeskMirror,
}

#[async_trait]
impl EncodedJobs for MirrorJobs {
    async fn get(&self, key: &IdempotencyKey) -> Option<StoredEncode> {
        match self.mirror.card(key.as_str()).await {
            Ok(Some((number, encoder, at))) => Some(StoredEncode {
                card_number: CardNumber::parse(&number).ok()?,
                encoder_id: EncoderId::parse(&encoder).ok()?,
                completed_at: at,
            }),
            Ok(None) => None,
            Err(e) => {
                warn!(error = %e, "reading the mirror failed");
                None
            }
        }
    }

    async fn put(&self, job: &EncodeJob, encode: StoredEncode) {
        let card = MirroredCard {
            idempotency_key: job.idempotency_key.as_str().to_owned(),
            credential_id: job.credential_id.clone(),
            rooms: job.rooms.clone(),
            valid_from: job.valid_from,
            valid_until: job.valid_until,
            card_number: encode.card_number.expose().to_owned(),
            encoder_id: encode.encoder_id.as_str().to_owned(),
            completed_at: encode.completed_at,
        };
        // The card exists: keep trying to write it down before its result is sent.
        let mut wait = Duration::from_millis(100);
        for attempt in 1..=10 {
            match self.mirror.record_card(&card).await {
                Ok(()) => {
                    info!(job_id = %job.job_id, credential = %job.credential_id, "card encoded");
                    return;
                }
                Err(e) => {
                    warn!(attempt, error = %e, "recording an encoded card failed");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Sessions into the mirror.
struct MirrorHost {
    mirror: DeskMirror,
    url: String,
    clock: Arc<dyn Clock>,
    key_file: PathBuf,
}

#[async_trait]
impl AgentHost for MirrorHost {
    async fn connected(&self, session_id: &str) {
        println!("agent connected: session {session_id}");
        if let Err(e) = self
            .mirror
            .session_opened(session_id, &self.url, self.clock.now())
            .await
        {
            warn!(error = %e, "recording the session failed");
        }
    }

    async fn disconnected(&self, reason: &'static str) {
        if let Err(e) = self.mirror.sessions_closed(reason, self.clock.now()).await {
            warn!(error = %e, "recording the session's end failed");
        }
    }

    /// What the desk minted while cut off and the server has not answered (I-7: the
    /// reconciler materializes or revokes each on this sync).
    async fn unsynced(&self) -> Vec<ProvisionalCredential> {
        let rows = match self.mirror.unsynced_provisionals().await {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %e, "reading unsynced provisional credentials failed");
                return Vec::new();
            }
        };
        rows.iter()
            .filter_map(|row| match from_mirror(row) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(provisional = %row.id, error = %e, "a provisional credential in the mirror is unreadable; not sent");
                    None
                }
            })
            .collect()
    }

    /// The successor first, then its key: a desk stopped in between runs on with the old
    /// pair ([`current_certificate`] skips a renewal whose key is not the key file's).
    async fn renewed(&self, renewal: &Renewal) -> Result<(), String> {
        let c = &renewal.certificate;
        let record = MirroredCertificate {
            id: c.id.as_str().to_owned(),
            tenant_id: c.tenant_id.to_string(),
            property_id: c.property_id.as_str().to_owned(),
            desktop_device_id: c.desktop_device_id.clone(),
            public_key_ed25519: c.public_key_ed25519.clone(),
            issued_at: Some(c.issued_at),
            expires_at: Some(c.expires_at),
            issuer_signature: Some(renewal.signature.as_str().to_owned()),
            replaces: c.replaces.as_ref().map(|r| r.as_str().to_owned()),
        };
        self.mirror
            .record_renewed_certificate(&record, self.clock.now())
            .await
            .map_err(|e| format!("recording the renewed certificate: {e}"))?;
        replace_key_file(&self.key_file, &renewal.key).map_err(|e| format!("{e:#}"))?;
        println!(
            "certificate renewed: {} replaces {} (expires {}); key file {} replaced",
            c.id,
            c.replaces.as_ref().map(|r| r.as_str()).unwrap_or("?"),
            c.expires_at.to_rfc3339(),
            self.key_file.display()
        );
        Ok(())
    }

    async fn certificate_expiry(
        &self,
        certificate_id: &OfflineIssuanceId,
        expires_at: lockstep_domain::Timestamp,
    ) {
        if let Err(e) = self
            .mirror
            .record_certificate_expiry(certificate_id.as_str(), expires_at)
            .await
        {
            warn!(error = %e, "recording the certificate's expiry failed");
        }
    }

    /// Keeps the server's verdicts; a deferred one stays unsynced and goes again on the
    /// next connection, and so does one whose verdict could not be written (the server
    /// answers it from the verdict it stored).
    async fn synced(&self, result: &SyncResult) {
        let now = self.clock.now();
        let (mut accepted, mut revoked, mut deferred) = (0usize, 0usize, 0usize);
        for item in &result.items {
            let outcome = match item.outcome {
                SyncOutcome::Accepted => LocalVerdict::Accepted,
                SyncOutcome::Revoked => LocalVerdict::Revoked,
                SyncOutcome::Deferred => {
                    deferred += 1;
                    continue;
                }
            };
            let sync = ProvisionalSync {
                outcome,
                reason: item.reason.clone(),
                server_credential_id: item.credential_id.clone(),
                synced_at: now,
            };
            if let Err(e) = self
                .mirror
                .record_provisional_sync(item.provisional_id.as_str(), &sync)
                .await
            {
                warn!(provisional = %item.provisional_id, error = %e, "recording a provisional credential's verdict failed");
                continue;
            }
            match outcome {
                LocalVerdict::Accepted => accepted += 1,
                LocalVerdict::Revoked => {
                    revoked += 1;
                    // The desk must know: the card it handed over opens nothing.
                    println!(
                        "provisional {} revoked by lockstep ({}): its card opens no door",
                        item.provisional_id,
                        item.reason.as_deref().unwrap_or("no reason given")
                    );
                }
            }
        }
        info!(
            batch = %result.batch_id,
            accepted,
            revoked,
            deferred,
            "provisional credentials answered"
        );
    }
}

/// `lockstep agent run`: serves the desk until SIGTERM or ctrl-c, or until the relay
/// refuses it for good (exit 1).
pub async fn run(a: AgentArgs) -> anyhow::Result<()> {
    let tenant = TenantId::parse(&a.tenant).map_err(|_| anyhow::anyhow!("--tenant: not a uuid"))?;
    let property = PropertyId::parse(&a.property)
        .map_err(|_| anyhow::anyhow!("--property: not a property id"))?;
    let certificate = OfflineIssuanceId::parse(&a.certificate_id)
        .map_err(|_| anyhow::anyhow!("--certificate-id: not an oki_ id"))?;
    anyhow::ensure!(
        (1..=16).contains(&a.encoders),
        "--encoders: 1 to 16 simulated encoders"
    );
    let key = AgentKey::from_seed(read_seed(&a.key_file)?);
    let mirror = open_mirror(&a.mirror).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let given_signature = a
        .certificate_signature
        .as_deref()
        .map(|s| SignatureB64::try_from(s.to_owned()))
        .transpose()
        .map_err(|_| anyhow::anyhow!("--certificate-signature: base64 of 64 bytes"))?;
    // The given certificate, or the renewal of it the desk holds now.
    let (certificate, signature, expires_at) = match current_certificate(
        &mirror,
        certificate.as_str(),
        &key,
    )
    .await?
    {
        None => {
            mirror
                .record_certificate(
                    certificate.as_str(),
                    &tenant.to_string(),
                    property.as_str(),
                    &a.desktop_id,
                    &key.public_key_base64(),
                    clock.now(),
                )
                .await?;
            (certificate, given_signature, None)
        }
        Some(c) => {
            anyhow::ensure!(
                    c.tenant_id == tenant.to_string()
                        && c.property_id == property.as_str()
                        && c.desktop_device_id == a.desktop_id,
                    "certificate {} is of tenant {}, property {}, desktop {}: not what --tenant, --property and --desktop-id say",
                    c.id,
                    c.tenant_id,
                    c.property_id,
                    c.desktop_device_id
                );
            let renewed = c.id != certificate.as_str();
            if renewed {
                println!(
                    "certificate {certificate} was renewed: running with {}",
                    c.id
                );
            }
            let signature = match c.issuer_signature {
                Some(s) => Some(SignatureB64::try_from(s).map_err(|_| {
                    anyhow::anyhow!(
                        "the mirror's signature of certificate {} is not base64 of 64 bytes",
                        c.id
                    )
                })?),
                None if renewed => None,
                None => given_signature,
            };
            let id = OfflineIssuanceId::parse(&c.id).map_err(|_| {
                anyhow::anyhow!("the mirror's certificate {} is not an oki_ id", c.id)
            })?;
            (id, signature, c.expires_at)
        }
    };
    let mut config = AgentConfig::new(
        a.url.clone(),
        certificate,
        tenant,
        property,
        a.desktop_id.clone(),
    );
    config.certificate_signature = signature;
    config.certificate_expires_at = expires_at;
    config.expected_audience = a.audience.clone();
    config.backoff_max = a.backoff_max.max(config.backoff_min);
    let encoders = (0..a.encoders)
        .map(|i| {
            Ok(AttachedEncoder {
                info: EncoderInfo {
                    encoder_id: EncoderId::parse(&format!("sim-{i}"))
                        .map_err(|_| anyhow::anyhow!("encoder id"))?,
                    model: "simulated".into(),
                    transport: Transport::UsbHid,
                },
                encoder: Arc::new(SimulatedEncoder::new(a.encode_time)),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let agent = Agent::spawn_hosted(
        config,
        key,
        encoders,
        Arc::new(MirrorJobs {
            mirror: mirror.clone(),
        }),
        clock.clone(),
        Arc::new(MirrorHost {
            mirror: mirror.clone(),
            url: a.url.clone(),
            clock: clock.clone(),
            key_file: a.key_file.clone(),
        }),
    );
    println!("agent {} connecting to {}", a.desktop_id, a.url);
    let refused = tokio::select! {
        r = stop_signal() => { r?; None }
        s = agent.wait_for(|s| matches!(s, AgentStatus::Refused(r) if r.is_permanent()), Duration::MAX) => s,
    };
    agent.stop().await;
    mirror.sessions_closed("agent_stopped", clock.now()).await?;
    mirror.close().await;
    match refused {
        Some(AgentStatus::Refused(reason)) => {
            anyhow::bail!(
                "the relay refused this desktop for good: {}",
                reason.as_str()
            )
        }
        _ => {
            println!("agent stopped");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrored_renewal(
        id: &str,
        key: &AgentKey,
        issued: lockstep_domain::Timestamp,
    ) -> MirroredCertificate {
        MirroredCertificate {
            id: id.into(),
            tenant_id: "t".into(),
            property_id: "ppt_a".into(),
            desktop_device_id: "desk-1".into(),
            public_key_ed25519: key.public_key_base64(),
            issued_at: Some(issued),
            expires_at: Some(issued + chrono::Duration::days(90)),
            issuer_signature: None,
            replaces: Some("oki_1".into()),
        }
    }

    #[tokio::test]
    async fn a_desk_stopped_between_keeping_the_certificate_and_the_key_runs_on_the_old_pair(
    ) -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("lockstep-rotation-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir)?;
        let key_file = dir.join("desk.key");
        let mirror = open_mirror(&dir.join("desk.sqlite")).await?;
        let now = SystemClock.now();
        let old = AgentKey::generate();
        write_private(
            &key_file,
            &old.expose_seed()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        )?;
        mirror
            .record_certificate(
                "oki_1",
                "t",
                "ppt_a",
                "desk-1",
                &old.public_key_base64(),
                now,
            )
            .await?;
        let current = |key: AgentKey| {
            let mirror = mirror.clone();
            async move { current_certificate(&mirror, "oki_1", &key).await }
        };
        assert_eq!(
            current(AgentKey::from_seed(read_seed(&key_file)?))
                .await?
                .map(|c| c.id),
            Some("oki_1".into())
        );

        // the successor kept, then the desk stopped before its key was written
        let lost = AgentKey::generate();
        mirror
            .record_renewed_certificate(&mirrored_renewal("oki_2", &lost, now), now)
            .await?;
        let on_disk = AgentKey::from_seed(read_seed(&key_file)?);
        assert_eq!(on_disk.public_key_base64(), old.public_key_base64());
        assert_eq!(
            current(on_disk).await?.map(|c| c.id),
            Some("oki_1".into()),
            "the old pair, in force"
        );

        // the next renewal goes through: certificate kept, then the key file replaced
        let new = AgentKey::generate();
        let later = now + chrono::Duration::minutes(5);
        mirror
            .record_renewed_certificate(&mirrored_renewal("oki_3", &new, later), later)
            .await?;
        replace_key_file(&key_file, &new)?;
        let on_disk = AgentKey::from_seed(read_seed(&key_file)?);
        assert_eq!(on_disk.public_key_base64(), new.public_key_base64());
        assert_eq!(current(on_disk).await?.map(|c| c.id), Some("oki_3".into()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key_file)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let left: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("renewing"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");

        // a key of no certificate of the chain is refused, with what to do
        let stranger = current(AgentKey::generate()).await.unwrap_err();
        assert!(stranger.to_string().contains("--key-file"), "{stranger}");
        // a certificate the mirror has never seen: the first run of a new pairing
        assert!(current_certificate(&mirror, "oki_9", &new).await?.is_none());
        mirror.close().await;
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }
}
