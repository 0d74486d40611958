//! The host's reconciler of provisional credentials (issue 12 must-show 3; spec `003` §5,
//! I-7, O-2, O-3), driven through the relay's `Reconciler` trait with real Ed25519
//! signatures, on the embedded (SQLite) store and on Postgres.
//!
//! The provisional records are built here by hand with the agent's own key type
//! (`AgentKey::sign`) over the protocol's canonical payload
//! (`ProvisionalCredential::signed_payload`), which is what the agent's minting signs, so
//! each judgement can be reached directly. The desk's own minting (`lockstep agent mint`)
//! and sync through the real binary are in `reconcile_desk`.

use std::sync::Arc;
use std::time::Duration;

use lockstep_domain::{
    Clock, DeviceRef, EncoderSessionId, GuestId, KeyCredentialId, KeyCredentialKind,
    KeyCredentialState, LockDeviceId, OfflineIssuance, OfflineIssuanceId, OfflineRevokeReason,
    PropertyId, ReservationId, RoomId, SystemClock, TenantId, VendorAdapterId, VendorCode,
};
use lockstep_orchestrator::reconcile::{cascade_certificate_revocation, HostReconciler};
use lockstep_orchestrator::schema::EventSchemas;
use lockstep_persistence::testing::{fresh_pg_database, test_cipher, TempSqlite};
use lockstep_persistence::{
    DeviceRecord, MailboxTable as _, PolicyRecord, ReadOnlyMailboxTable as _, Store, UnitOfWork,
};
use lockstep_relay::agent::{
    Agent, AgentConfig, AgentHost, AgentKey, AttachedEncoder, MemoryEncodedJobs, SimulatedEncoder,
};
use lockstep_relay::protocol::{
    BatchId, EncoderId, EncoderInfo, ProvisionalBatch, ProvisionalCredential, ProvisionalId,
    SignatureB64, SyncItem, SyncOutcome, SyncResult, Transport,
};
use lockstep_relay::reconcile::{DesktopIdentity, Reconciler};
use lockstep_relay::{
    ChannelSessionEvents, IssuedCertificate, MemoryCertificateDirectory, RelayConfig, RelayDeps,
    RelayServer,
};
use serde_json::json;

const TENANT: &str = "0c5a3a52-8f0e-4c61-9d2b-5b7e1f3a9c11";
const PROPERTY: &str = "ppt_recon";
const ROOMS: i64 = 60;
const VALID: usize = 50;
/// The partition stay 1's saga lives on (the broker's hash ring chose it).
const SAGA_PARTITION: i32 = 5;
const REVOKED: &str = "melmastoon.lock.credential.revoked.v1";
const ISSUED: &str = "melmastoon.lock.credential.issued.v1";

struct Fixture {
    tenant: TenantId,
    property: PropertyId,
    cert: OfflineIssuance,
    key: AgentKey,
    seed: [u8; 32],
    desktop: DesktopIdentity,
}

async fn setup(store: &Arc<dyn Store>, clock: &dyn Clock) -> anyhow::Result<Fixture> {
    let tenant = TenantId::parse(TENANT)?;
    let property = PropertyId::parse(PROPERTY)?;
    let now = clock.now();
    let adapter = VendorAdapterId::from_ulid(ulid::Ulid::new());
    store
        .upsert_adapter(&lockstep_persistence::AdapterRecord {
            id: adapter.clone(),
            tenant_id: tenant,
            property_id: property.clone(),
            vendor: VendorCode::GenericWiegand,
            environment: "sandbox".into(),
            capabilities: json!({}),
            config: json!({}),
            enabled: true,
            precedence: 100,
            now,
        })
        .await?;
    for l in 1..=ROOMS {
        store
            .upsert_device(&DeviceRecord {
                id: LockDeviceId::from_ulid(ulid::Ulid::from_parts(l as u64, 7)),
                tenant_id: tenant,
                property_id: property.clone(),
                vendor: VendorCode::GenericWiegand,
                vendor_adapter_id: adapter.clone(),
                device_ref: DeviceRef::new(format!("w{l}")),
                label: format!("door {l}"),
                capabilities: json!({}),
                rooms: vec![RoomId::parse(&format!("rmu_{l}"))?],
                area: None,
                now,
                on_register: Vec::new(),
            })
            .await?;
    }
    store
        .upsert_policy(&PolicyRecord {
            id: format!("kkp_{}", ulid::Ulid::new()),
            tenant_id: tenant,
            property_id: property.clone(),
            preferred_order: vec!["mobile_app".into(), "pin_code".into()],
            fallback_chain: vec!["rfid_card".into()],
            max_valid_until_extension_hours: 168,
            id_verify_required_for: Vec::new(),
            no_show_suspend_after_hours: 2,
            allow_offline_issuance_kinds: vec!["rfid_card".into()],
            updated_at: now,
        })
        .await?;
    // The stays the desk minted keys for: confirmed sagas with their guests.
    for i in 1..=ROOMS {
        let saga = lockstep_domain::saga::ReservationSaga {
            guest_id: Some(GuestId::parse(&format!("gst_{i}"))?),
            confirmed: true,
            ..Default::default()
        };
        let mut uow = UnitOfWork::new(tenant, None, now);
        uow.saga = Some((
            format!("reservation:rsv_{i}"),
            lockstep_actors::saga_codec::reservation_to_json(&saga),
        ));
        store.commit(uow).await?;
    }
    // stay 1's confirm came through partition SAGA_PARTITION, and was handled
    let mut tx = store.begin(tenant, None).await?;
    tx.enqueue_internal(
        &lockstep_persistence::InternalEvent {
            property_id: property.clone(),
            partition: SAGA_PARTITION,
            subject: "reservation:rsv_1".into(),
            topic: "melmastoon.reservation.confirmed.v1".into(),
            payload: json!({}),
            due_at: now,
        },
        now,
    )
    .await?;
    let confirm = tx
        .next_mailbox_entry("reservation:rsv_1", now)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the confirm's entry"))?;
    tx.complete_entry(&confirm.subject, confirm.id, "applied", now)
        .await?;
    tx.commit().await?;
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&ulid::Ulid::new().0.to_le_bytes());
    seed[16..].copy_from_slice(&ulid::Ulid::new().0.to_le_bytes());
    let key = AgentKey::from_seed(seed);
    let cert = OfflineIssuance::issue(
        tenant,
        property.clone(),
        "desk-1",
        &key.public_key_base64(),
        vec![KeyCredentialKind::RfidCard],
        &[KeyCredentialKind::RfidCard],
        48,
        now - chrono::Duration::hours(1),
    )?;
    store.save_offline_cert(&cert).await?;
    let desktop = DesktopIdentity {
        tenant_id: tenant,
        property_id: property.clone(),
        desktop_device_id: "desk-1".into(),
        certificate_id: cert.id.clone(),
        session_id: EncoderSessionId::generate(),
    };
    Ok(Fixture {
        tenant,
        property,
        cert,
        key,
        seed,
        desktop,
    })
}

/// A provisional card for stay `i`, `hours` long, signed by `key` as the agent would.
fn minted(
    cert: &OfflineIssuanceId,
    key: &AgentKey,
    i: i64,
    hours: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<ProvisionalCredential> {
    let mut p = ProvisionalCredential {
        provisional_id: ProvisionalId::parse(&format!("prov-{i:04}"))?,
        certificate_id: cert.as_str().to_owned(),
        kind: "rfid_card".into(),
        reservation_id: Some(format!("rsv_{i}")),
        room_ids: vec![format!("rmu_{i}")],
        valid_from: now,
        valid_until: now + chrono::Duration::hours(hours),
        minted_at: now,
        card_number: None,
        signature: SignatureB64::from_signature(&key.sign(b"placeholder")),
    };
    p.signature = SignatureB64::from_signature(&key.sign(p.signed_payload().as_bytes()));
    Ok(p)
}

fn outbox_of(rows: &[lockstep_persistence::OutboxRow], topic: &str) -> usize {
    rows.iter().filter(|r| r.topic == topic).count()
}

async fn offline_batch_reconciles(store: Arc<dyn Store>, backend: &str) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let f = setup(&store, clock.as_ref()).await?;
    let now = chrono::DurationRound::duration_trunc(clock.now(), chrono::Duration::seconds(1))?;
    let mut items = Vec::new();
    for i in 1..=VALID as i64 {
        items.push(minted(&f.cert.id, &f.key, i, 24, now)?);
    }
    // forged: signed by a key the certificate does not bind
    let forger = AgentKey::generate();
    items.push(minted(&f.cert.id, &forger, 51, 24, now)?);
    // over 48 h (I-7, O-3), signed by the desktop
    items.push(minted(&f.cert.id, &f.key, 52, 49, now)?);
    let batch = ProvisionalBatch {
        batch_id: BatchId::parse("batch-0001")?,
        items,
    };
    let reconciler = HostReconciler::new(store.clone(), clock.clone());
    let first = reconciler.reconcile(&f.desktop, &batch).await;
    assert_eq!(first.len(), VALID + 2);
    let accepted: Vec<&SyncItem> = first
        .iter()
        .filter(|i| i.outcome == SyncOutcome::Accepted)
        .collect();
    assert_eq!(accepted.len(), VALID, "{backend}: {first:?}");
    let forged = &first[VALID];
    assert_eq!(forged.outcome, SyncOutcome::Revoked);
    assert_eq!(forged.reason.as_deref(), Some("bad_signature"));
    assert!(forged.credential_id.is_none());
    let long = &first[VALID + 1];
    assert_eq!(long.outcome, SyncOutcome::Revoked);
    assert_eq!(long.reason.as_deref(), Some("window_exceeded"));

    // 50 provisional credentials, active, of their stays and rooms
    let mut ids = Vec::new();
    for (i, a) in accepted.iter().enumerate() {
        let id = KeyCredentialId::parse(a.credential_id.as_deref().unwrap_or_default())?;
        let c = store
            .get_credential(f.tenant, &id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{backend}: credential {id} missing"))?;
        assert_eq!(c.state(), KeyCredentialState::Active);
        assert!(c.provisional());
        assert_eq!(c.property_id(), &f.property);
        assert_eq!(
            c.reservation_id(),
            Some(&ReservationId::parse(&format!("rsv_{}", i + 1))?)
        );
        assert_eq!(c.rooms(), &[RoomId::parse(&format!("rmu_{}", i + 1))?]);
        ids.push(id);
    }
    // I-7: stay 1's saga revokes its provisional key at the key's end (an `expire` timer
    // on the stay's partition); a stay without a mailbox gets none and a warning
    let first_id = &ids[0];
    let until = store
        .get_credential(f.tenant, first_id)
        .await?
        .map(|c| c.validity().until())
        .ok_or_else(|| anyhow::anyhow!("credential"))?;
    let mut rtx = store.read(f.tenant).await?;
    assert!(
        rtx.next_mailbox_entry("reservation:rsv_1", until - chrono::Duration::seconds(1))
            .await?
            .is_none(),
        "{backend}: nothing due before the key's end"
    );
    let timer = rtx
        .next_mailbox_entry("reservation:rsv_1", until)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{backend}: no expiry timer"))?;
    let lockstep_persistence::MailboxKind::Event { topic, .. } = &timer.kind else {
        anyhow::bail!("{backend}: an event: {:?}", timer.kind);
    };
    assert_eq!(
        (
            topic.as_str(),
            timer.partition,
            timer.due_at,
            timer.payload["credentialId"].as_str()
        ),
        (
            lockstep_actors::events_in::INTERNAL_EXPIRE,
            SAGA_PARTITION,
            until,
            Some(first_id.as_str())
        ),
        "{backend}"
    );
    rtx.commit().await?;
    // the refused ones are no credential at any door
    for r in 51..=52 {
        let of_stay = store
            .credentials_by_reservation(f.tenant, &ReservationId::parse(&format!("rsv_{r}"))?)
            .await?;
        assert!(of_stay.is_empty(), "{backend}: rsv_{r} has {of_stay:?}");
    }
    let schemas = EventSchemas::new();
    let outbox = store.unpublished(clock.now(), 10_000).await?;
    for row in &outbox {
        schemas
            .check_produced(&row.envelope)
            .map_err(|e| anyhow::anyhow!("{backend}: {} invalid: {e}", row.topic))?;
    }
    assert_eq!(outbox_of(&outbox, ISSUED), VALID, "{backend}");
    let refused: Vec<_> = outbox.iter().filter(|r| r.topic == REVOKED).collect();
    assert_eq!(refused.len(), 2, "{backend}");
    assert!(refused
        .iter()
        .all(|r| r.payload["metadata"]["wasProvisional"] == json!(true)));

    // the same batch again (its sync_result lost): the same verdicts, nothing new
    let again = reconciler.reconcile(&f.desktop, &batch).await;
    assert_eq!(again, first, "{backend}: a re-sync changed a verdict");
    let outbox_again = store.unpublished(clock.now(), 10_000).await?;
    assert_eq!(
        outbox_again.len(),
        outbox.len(),
        "{backend}: a re-sync added events"
    );

    // I-9: a card for another stay on a room a materialized one holds is refused
    let mut overlap = minted(&f.cert.id, &f.key, 54, 12, now)?;
    overlap.room_ids = vec!["rmu_1".into()];
    overlap.signature =
        SignatureB64::from_signature(&f.key.sign(overlap.signed_payload().as_bytes()));
    let overlap = ProvisionalBatch {
        batch_id: BatchId::parse("batch-0003")?,
        items: vec![overlap],
    };
    let overlap = reconciler.reconcile(&f.desktop, &overlap).await;
    assert_eq!(overlap[0].outcome, SyncOutcome::Revoked, "{backend}");
    assert_eq!(overlap[0].reason.as_deref(), Some("room_overlap"));

    // O-2: revoking the certificate revokes what it minted, each with its event
    let mut cert = f.cert.clone();
    cert.revoke(OfflineRevokeReason::Compromise, clock.now());
    store.save_offline_cert(&cert).await?;
    let cascaded =
        cascade_certificate_revocation(store.as_ref(), f.tenant, cert.id.as_str(), clock.now())
            .await?;
    assert_eq!(cascaded, VALID, "{backend}");
    for id in &ids {
        let c = store
            .get_credential(f.tenant, id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{backend}: credential {id} missing"))?;
        assert_eq!(c.state(), KeyCredentialState::Revoked, "{backend}: {id}");
    }
    let outbox_cascade = store.unpublished(clock.now(), 10_000).await?;
    let revoked: Vec<_> = outbox_cascade
        .iter()
        .filter(|r| r.topic == REVOKED)
        .collect();
    assert_eq!(revoked.len(), 3 + VALID, "{backend}");
    for row in &revoked {
        assert_eq!(row.payload["metadata"]["wasProvisional"], json!(true));
        schemas
            .check_produced(&row.envelope)
            .map_err(|e| anyhow::anyhow!("{backend}: revoked invalid: {e}"))?;
    }
    // a second revoke finds nothing left
    let twice =
        cascade_certificate_revocation(store.as_ref(), f.tenant, cert.id.as_str(), clock.now())
            .await?;
    assert_eq!(twice, 0, "{backend}");
    // the verdicts already given stand; a new item under the revoked certificate is refused
    let after = reconciler.reconcile(&f.desktop, &batch).await;
    assert_eq!(
        after, first,
        "{backend}: a verdict changed after the revoke"
    );
    let late = ProvisionalBatch {
        batch_id: BatchId::parse("batch-0002")?,
        items: vec![minted(&f.cert.id, &f.key, 53, 24, now)?],
    };
    let late = reconciler.reconcile(&f.desktop, &late).await;
    assert_eq!(late[0].outcome, SyncOutcome::Revoked);
    assert_eq!(late[0].reason.as_deref(), Some("certificate_revoked"));
    println!(
        "{backend}: {VALID} provisional credentials reconciled, a forged one and one over 48 h revoked, {cascaded} revoked by the certificate's revocation"
    );
    Ok(())
}

#[tokio::test]
async fn offline_batch_reconciles_on_sqlite() -> anyhow::Result<()> {
    let db = TempSqlite::new();
    let store: Arc<dyn Store> = Arc::new(db.open(test_cipher()).await?);
    offline_batch_reconciles(store, "sqlite").await
}

#[tokio::test]
async fn offline_batch_reconciles_on_postgres() -> anyhow::Result<()> {
    let db = fresh_pg_database().await?;
    let store: Arc<dyn Store> = Arc::new(db.connect_store(test_cipher(), 4).await?);
    offline_batch_reconciles(store.clone(), "postgres").await?;
    store.close().await;
    Ok(())
}

/// A desktop that minted `items` while cut off and keeps what the server answered.
struct OfflineDesk {
    items: Vec<ProvisionalCredential>,
    answered: std::sync::Mutex<std::collections::BTreeMap<String, SyncItem>>,
    resend_all: bool,
    progress: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl AgentHost for OfflineDesk {
    async fn unsynced(&self) -> Vec<ProvisionalCredential> {
        let answered = self.answered.lock().expect("not poisoned");
        self.items
            .iter()
            .filter(|i| self.resend_all || !answered.contains_key(i.provisional_id.as_str()))
            .cloned()
            .collect()
    }

    async fn synced(&self, result: &SyncResult) {
        let mut answered = self.answered.lock().expect("not poisoned");
        for i in &result.items {
            answered.insert(i.provisional_id.as_str().to_owned(), i.clone());
        }
        self.progress.notify_one();
    }
}

/// The agent's path over a real WebSocket: an agent cut off reconnects and syncs its
/// provisional credentials in `provisional_batch` frames; the relay hands them to the
/// host's reconciler and the agent gets the verdicts. A second agent session sending the
/// same items again gets the same verdicts and changes nothing.
#[tokio::test]
async fn an_agent_cut_off_syncs_its_provisional_keys_through_the_relay() -> anyhow::Result<()> {
    let db = TempSqlite::new();
    let store: Arc<dyn Store> = Arc::new(db.open(test_cipher()).await?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let f = setup(&store, clock.as_ref()).await?;
    let now = chrono::DurationRound::duration_trunc(clock.now(), chrono::Duration::seconds(1))?;
    let mut items = Vec::new();
    for i in 1..=VALID as i64 {
        items.push(minted(&f.cert.id, &f.key, i, 24, now)?);
    }
    items.push(minted(&f.cert.id, &AgentKey::generate(), 51, 24, now)?);
    items.push(minted(&f.cert.id, &f.key, 52, 49, now)?);

    let issuer = ed25519_dalek::SigningKey::from_bytes(&[11u8; 32]);
    let directory = Arc::new(MemoryCertificateDirectory::default());
    directory.insert(IssuedCertificate {
        certificate: f.cert.clone(),
        issuer_signature: Some(ed25519_dalek::Signer::sign(
            &issuer,
            f.cert.signed_payload().as_bytes(),
        )),
    });
    let (events, _session_events) = ChannelSessionEvents::new();
    let config = RelayConfig {
        audience: "relay-reconcile".into(),
        issuer_key: Some(issuer.verifying_key()),
        ..RelayConfig::default()
    };
    let server = RelayServer::bind(
        "127.0.0.1:0",
        config,
        RelayDeps {
            certificates: directory,
            events: Arc::new(events),
            clock: clock.clone(),
            registry: prometheus::Registry::new(),
            reconciler: Arc::new(HostReconciler::new(store.clone(), clock.clone())),
        },
    )
    .await?;
    let url = format!("ws://{}/relay/v1", server.local_addr());

    let run = |host: Arc<OfflineDesk>| {
        let mut config = AgentConfig::new(
            url.clone(),
            f.cert.id.clone(),
            f.tenant,
            f.property.clone(),
            "desk-1",
        );
        config.expected_audience = Some("relay-reconcile".into());
        config.backoff_min = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        Agent::spawn_hosted(
            config,
            AgentKey::from_seed(f.seed),
            vec![AttachedEncoder {
                info: EncoderInfo {
                    encoder_id: EncoderId::parse("enc-0").expect("an encoder id"),
                    model: "simulated".into(),
                    transport: Transport::UsbHid,
                },
                encoder: Arc::new(SimulatedEncoder::new(Duration::from_millis(1))),
            }],
            Arc::new(MemoryEncodedJobs::default()),
            clock.clone(),
            host,
        )
    };
    let wait_all = |host: Arc<OfflineDesk>| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if host.answered.lock().expect("not poisoned").len() == VALID + 2 {
                return Ok::<_, anyhow::Error>(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the agent got {} verdicts of {}",
                host.answered.lock().expect("not poisoned").len(),
                VALID + 2
            );
            let _ =
                tokio::time::timeout(Duration::from_millis(200), host.progress.notified()).await;
        }
    };

    let desk = Arc::new(OfflineDesk {
        items: items.clone(),
        answered: Default::default(),
        resend_all: false,
        progress: tokio::sync::Notify::new(),
    });
    let agent = run(desk.clone());
    wait_all(desk.clone()).await?;
    agent.stop().await;
    let first = desk.answered.lock().expect("not poisoned").clone();
    let accepted = first
        .values()
        .filter(|i| i.outcome == SyncOutcome::Accepted && i.credential_id.is_some())
        .count();
    assert_eq!(accepted, VALID, "{first:?}");
    assert_eq!(first["prov-0051"].reason.as_deref(), Some("bad_signature"));
    assert_eq!(
        first["prov-0052"].reason.as_deref(),
        Some("window_exceeded")
    );
    assert_eq!(first["prov-0051"].outcome, SyncOutcome::Revoked);
    assert_eq!(first["prov-0052"].outcome, SyncOutcome::Revoked);
    let outbox = store.unpublished(clock.now(), 10_000).await?;
    assert_eq!(outbox_of(&outbox, ISSUED), VALID);
    assert_eq!(outbox_of(&outbox, REVOKED), 2);

    // its sync_result lost, the desktop sends everything again on its next session
    let again = Arc::new(OfflineDesk {
        items,
        answered: Default::default(),
        resend_all: true,
        progress: tokio::sync::Notify::new(),
    });
    let agent = run(again.clone());
    wait_all(again.clone()).await?;
    agent.stop().await;
    assert_eq!(
        *again.answered.lock().expect("not poisoned"),
        first,
        "a re-sync changed a verdict"
    );
    assert_eq!(
        store.unpublished(clock.now(), 10_000).await?.len(),
        outbox.len(),
        "a re-sync added events"
    );
    server.shutdown().await;
    println!("relay: {VALID} accepted, 2 revoked, a re-sync changed nothing");
    Ok(())
}

/// A card minted under `cert` at `minted_at`, valid from then for `hours`, for stay `i`.
fn minted_at(
    cert: &OfflineIssuanceId,
    key: &AgentKey,
    i: i64,
    minted_at: chrono::DateTime<chrono::Utc>,
    hours: i64,
) -> anyhow::Result<ProvisionalCredential> {
    let mut p = minted(cert, key, i, hours, minted_at)?;
    p.signature = SignatureB64::from_signature(&key.sign(p.signed_payload().as_bytes()));
    Ok(p)
}

fn batch(id: &str, items: Vec<ProvisionalCredential>) -> anyhow::Result<ProvisionalBatch> {
    Ok(ProvisionalBatch {
        batch_id: BatchId::parse(id)?,
        items,
    })
}

/// Certificate rotation through the relay's host (`desk::StoreCertificates`): a due
/// certificate is renewed for a new key, signed and stored with the one it replaces; it is
/// revoked for `rotation` only when the successor is in use, and that revoke runs no O-2
/// cascade: what it minted while in force stays active, and a key it minted before the
/// rotation but synced after it is still accepted. A key signed with the old key after
/// the rotation is refused. Found compromised later, the rotated certificate cascades.
async fn a_rotation_keeps_what_the_old_certificate_minted(
    store: Arc<dyn Store>,
    backend: &str,
) -> anyhow::Result<()> {
    use lockstep_orchestrator::admin::OfflineSigner;
    use lockstep_orchestrator::desk::StoreCertificates;
    use lockstep_persistence::{
        ReadOnlyOfflineCertSignatureTable as _, ReadOnlyProvisionalTable as _,
    };
    use lockstep_relay::protocol::RenewalRefusalReason;
    use lockstep_relay::CertificateDirectory as _;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let f = setup(&store, clock.as_ref()).await?;
    let now = chrono::DurationRound::duration_trunc(clock.now(), chrono::Duration::seconds(1))?;
    // the desk's certificate, in its last days
    let old = OfflineIssuance::issue(
        f.tenant,
        f.property.clone(),
        "desk-1",
        &f.key.public_key_base64(),
        vec![KeyCredentialKind::RfidCard],
        &[KeyCredentialKind::RfidCard],
        48,
        now - chrono::Duration::days(84),
    )?;
    store.save_offline_cert(&old).await?;
    let desktop = DesktopIdentity {
        certificate_id: old.id.clone(),
        ..f.desktop.clone()
    };
    let reconciler = HostReconciler::new(store.clone(), clock.clone());
    let two_hours_ago = now - chrono::Duration::hours(2);
    let synced_before = minted_at(&old.id, &f.key, 1, two_hours_ago, 24)?;
    let synced_after = minted_at(&old.id, &f.key, 2, two_hours_ago, 24)?;
    let first = reconciler
        .reconcile(&desktop, &batch("rot-1", vec![synced_before])?)
        .await;
    assert_eq!(
        first[0].outcome,
        SyncOutcome::Accepted,
        "{backend}: {first:?}"
    );
    let materialized =
        KeyCredentialId::parse(first[0].credential_id.as_deref().unwrap_or_default())?;

    let signer = OfflineSigner::new([0x33; 32], "it-rotation".into());
    let certificates = StoreCertificates::new(store.clone(), Some(signer.clone()));
    let new_key = AgentKey::generate();
    // one not due yet is refused: the fixture's, issued an hour ago
    let early = certificates
        .renew(
            f.tenant,
            &f.cert.id,
            &new_key.public_key_base64(),
            clock.now(),
        )
        .await;
    assert_eq!(early.err(), Some(RenewalRefusalReason::NotDue), "{backend}");
    let renewed = certificates
        .renew(f.tenant, &old.id, &new_key.public_key_base64(), clock.now())
        .await
        .map_err(|r| anyhow::anyhow!("{backend}: renewal refused: {r:?}"))?;
    let next = renewed.certificate.clone();
    assert_eq!(next.replaces.as_ref(), Some(&old.id));
    assert_eq!(next.public_key_ed25519, new_key.public_key_base64());
    assert_eq!(
        store.offline_cert(f.tenant, next.id.as_str()).await?,
        Some(next.clone())
    );
    signer
        .verifying_key()
        .verify_strict(next.signed_payload().as_bytes(), &renewed.issuer_signature)?;
    let mut rtx = store.read(f.tenant).await?;
    let stored_signature = rtx.offline_cert_signature(next.id.as_str()).await?;
    rtx.commit().await?;
    assert_eq!(
        stored_signature.and_then(|(_, key)| key).as_deref(),
        Some("it-rotation")
    );
    // issued, not yet used: the old certificate is in force
    let still = store.offline_cert(f.tenant, old.id.as_str()).await?;
    assert_eq!(still.and_then(|c| c.revoked_at), None, "{backend}");

    // the successor authenticates: the old certificate is revoked for rotation, and only it
    let retired = certificates.in_use(&next, clock.now()).await?;
    assert_eq!(retired, vec![old.id.clone()], "{backend}");
    assert!(certificates.in_use(&next, clock.now()).await?.is_empty());
    let rotated = store
        .offline_cert(f.tenant, old.id.as_str())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the old certificate"))?;
    assert_eq!(rotated.revoke_reason, Some(OfflineRevokeReason::Rotation));
    // no O-2: its key stays active, unflagged, and no revoked.v1 was written
    let cred = store
        .get_credential(f.tenant, &materialized)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{backend}: credential"))?;
    assert_eq!(cred.state(), KeyCredentialState::Active, "{backend}");
    let mut rtx = store.read(f.tenant).await?;
    let record = rtx
        .provisional(old.id.as_str(), "prov-0001")
        .await?
        .ok_or_else(|| anyhow::anyhow!("the verdict"))?;
    rtx.commit().await?;
    assert_eq!(
        record.reissue_flagged_at, None,
        "{backend}: flagged by a rotation"
    );
    let outbox = store.unpublished(clock.now(), 10_000).await?;
    assert_eq!(outbox_of(&outbox, REVOKED), 0, "{backend}");

    // minted while in force, synced after the rotation (over the new certificate's session)
    let on_new = DesktopIdentity {
        certificate_id: next.id.clone(),
        ..desktop.clone()
    };
    let second = reconciler
        .reconcile(&on_new, &batch("rot-2", vec![synced_after])?)
        .await;
    assert_eq!(
        second[0].outcome,
        SyncOutcome::Accepted,
        "{backend}: {second:?}"
    );
    // signed with the old key after the rotation: refused
    let later = minted_at(
        &old.id,
        &f.key,
        3,
        clock.now() + chrono::Duration::minutes(1),
        24,
    )?;
    let third = reconciler
        .reconcile(&on_new, &batch("rot-3", vec![later])?)
        .await;
    assert_eq!(third[0].outcome, SyncOutcome::Revoked, "{backend}");
    assert_eq!(third[0].reason.as_deref(), Some("certificate_revoked"));
    // a rotated certificate vouches for no further renewal
    let again = certificates
        .renew(
            f.tenant,
            &old.id,
            &AgentKey::generate().public_key_base64(),
            clock.now(),
        )
        .await;
    assert_eq!(again.err(), Some(RenewalRefusalReason::CertificateRevoked));

    // found compromised after all: O-2 applies now, to both keys it minted
    let mut compromised = rotated.clone();
    assert!(compromised.revoke(OfflineRevokeReason::Compromise, clock.now()));
    store.save_offline_cert(&compromised).await?;
    let cascaded =
        cascade_certificate_revocation(store.as_ref(), f.tenant, old.id.as_str(), clock.now())
            .await?;
    assert_eq!(cascaded, 2, "{backend}");
    println!("{backend}: rotated without a cascade; 2 keys of the old certificate kept, then revoked by a compromise");
    Ok(())
}

#[tokio::test]
async fn a_rotation_keeps_what_the_old_certificate_minted_on_sqlite() -> anyhow::Result<()> {
    let db = TempSqlite::new();
    let store: Arc<dyn Store> = Arc::new(db.open(test_cipher()).await?);
    a_rotation_keeps_what_the_old_certificate_minted(store, "sqlite").await
}

#[tokio::test]
async fn a_rotation_keeps_what_the_old_certificate_minted_on_postgres() -> anyhow::Result<()> {
    let db = fresh_pg_database().await?;
    let store: Arc<dyn Store> = Arc::new(db.connect_store(test_cipher(), 4).await?);
    a_rotation_keeps_what_the_old_certificate_minted(store.clone(), "postgres").await?;
    store.close().await;
    Ok(())
}
