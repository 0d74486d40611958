//! Certificate rotation (issue 12): a desktop whose certificate is in its last 7 days gets
//! a successor for a new key over its authenticated session, keeps it, and reconnects with
//! it; the old certificate is revoked for `rotation` only once the successor has
//! authenticated. A certificate not due, revoked or unproven gets no successor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lockstep_domain::{OfflineIssuanceId, OfflineRevokeReason, Timestamp};
use lockstep_relay::agent::{
    Agent, AgentHandle, AgentHost, AgentKey, AttachedEncoder, MemoryEncodedJobs, Renewal,
    SimulatedEncoder,
};
use lockstep_relay::protocol::{
    renewal_payload, Challenge, DesktopMessage, EncoderId, EncoderInfo, Heartbeat, PublicKeyB64,
    RenewCertificate, RenewalId, RenewalRefusalReason, ServerMessage, SignatureB64, Transport,
};
use lockstep_relay::SessionEvent;

use crate::support::*;

/// A host that keeps renewals in memory, or fails to while `fail` is set, and notes
/// whether the certificate renewed was still in force when it was asked to keep one: the
/// agent must not have used the new certificate before it was kept.
struct KeepingHost {
    directory: Arc<lockstep_relay::MemoryCertificateDirectory>,
    tenant: lockstep_domain::TenantId,
    fail: AtomicBool,
    kept: Mutex<Vec<Renewal>>,
    old_in_force_when_kept: Mutex<Vec<bool>>,
    expiries: Mutex<Vec<(OfflineIssuanceId, Timestamp)>>,
}

impl KeepingHost {
    fn new(rig: &Rig) -> Arc<Self> {
        Arc::new(Self {
            directory: rig.directory.clone(),
            tenant: rig.tenant,
            fail: AtomicBool::new(false),
            kept: Mutex::default(),
            old_in_force_when_kept: Mutex::default(),
            expiries: Mutex::default(),
        })
    }
}

#[async_trait]
impl AgentHost for KeepingHost {
    async fn renewed(&self, renewal: &Renewal) -> Result<(), String> {
        use lockstep_relay::CertificateDirectory as _;
        let old = renewal
            .certificate
            .replaces
            .clone()
            .expect("a renewal names the one it renews");
        let old = self
            .directory
            .certificate(self.tenant, &old)
            .await
            .expect("memory")
            .expect("the old certificate");
        self.old_in_force_when_kept
            .lock()
            .unwrap()
            .push(old.certificate.revoked_at.is_none());
        if self.fail.load(Ordering::SeqCst) {
            return Err("disk full".into());
        }
        self.kept.lock().unwrap().push(renewal.clone());
        Ok(())
    }

    async fn certificate_expiry(&self, certificate_id: &OfflineIssuanceId, expires_at: Timestamp) {
        self.expiries
            .lock()
            .unwrap()
            .push((certificate_id.clone(), expires_at));
    }
}

fn hosted_agent(rig: &Rig, desk: &Desk, host: Arc<KeepingHost>, knows_expiry: bool) -> AgentHandle {
    let mut config = rig.agent_config(desk);
    config.renewal_retry = Duration::from_millis(200);
    if !knows_expiry {
        config.certificate_expires_at = None;
    }
    Agent::spawn_hosted(
        config,
        desk.key(),
        vec![AttachedEncoder {
            info: EncoderInfo {
                encoder_id: EncoderId::parse("enc-0").unwrap(),
                model: "simulated".into(),
                transport: Transport::UsbHid,
            },
            encoder: Arc::new(SimulatedEncoder::new(Duration::from_millis(1))),
        }],
        Arc::new(MemoryEncodedJobs::default()),
        rig.clock.clone(),
        host,
    )
}

/// A desk whose certificate was issued `days` ago (due from day 83).
fn desk_aged(rig: &Rig, name: &str, days_ago: i64) -> Desk {
    rig.desk_at(
        rig.tenant,
        &rig.property.clone(),
        name,
        rig.clock.now() - days(days_ago),
    )
}

/// A `renew_certificate` for `new_key`, signed by `signer` (the new key, unless a test
/// forges it), over this session's challenge.
fn request(
    challenge: &Challenge,
    desk: &Desk,
    new_key: &AgentKey,
    signer: &AgentKey,
    id: &str,
    signed_at: Timestamp,
) -> DesktopMessage {
    let public_key = PublicKeyB64::try_from(new_key.public_key_base64()).unwrap();
    let request_id = RenewalId::parse(id).unwrap();
    let c = &desk.certificate;
    let payload = renewal_payload(
        &challenge.audience,
        &challenge.nonce,
        c.id.as_str(),
        &c.tenant_id.to_string(),
        c.property_id.as_str(),
        &c.desktop_device_id,
        &public_key,
        &request_id,
        signed_at,
    );
    DesktopMessage::RenewCertificate(RenewCertificate {
        request_id,
        public_key_ed25519: public_key,
        signed_at,
        signature: SignatureB64::from_signature(&signer.sign(payload.as_bytes())),
    })
}

/// An authenticated raw session of `desk`, with its challenge.
async fn session_with_challenge(rig: &Rig, desk: &Desk) -> (RawWs, Challenge) {
    let (mut ws, challenge) = raw_connect(rig).await;
    match handshake(
        &mut ws,
        &challenge,
        hello(desk),
        &desk.key(),
        rig.clock.now(),
    )
    .await
    {
        Some(ServerMessage::Welcome(_)) => (ws, challenge),
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// The next frame that is not a ping.
async fn answer(ws: &mut RawWs) -> ServerMessage {
    loop {
        match read(ws).await {
            Some(ServerMessage::Ping(_)) => continue,
            Some(m) => return m,
            None => panic!("the connection closed"),
        }
    }
}

async fn refused_with(
    ws: &mut RawWs,
    m: &DesktopMessage,
) -> lockstep_relay::protocol::RenewalRefused {
    send(ws, m).await;
    match answer(ws).await {
        ServerMessage::RenewalRefused(r) => r,
        other => panic!("expected renewal_refused, got {other:?}"),
    }
}

fn opened_certificates(rig: &mut Rig) -> Vec<OfflineIssuanceId> {
    let mut out = Vec::new();
    while let Ok(e) = rig.events.try_recv() {
        if let SessionEvent::Opened(o) = e {
            out.push(o.certificate_id);
        }
    }
    out
}

#[tokio::test]
async fn a_due_certificate_is_renewed_kept_and_the_agent_reconnects_with_it() {
    let mut rig = Rig::start().await;
    let desk = desk_aged(&rig, "desk-rot", 85);
    let old = desk.certificate.id.clone();
    let host = KeepingHost::new(&rig);
    let agent = hosted_agent(&rig, &desk, host.clone(), true);

    wait_until(
        "the agent to move to a new certificate",
        Duration::from_secs(10),
        || agent.certificate_id() != old,
    )
    .await;
    let new = agent.certificate_id();
    wait_until(
        "the relay to see the new certificate",
        Duration::from_secs(10),
        || {
            rig.hub
                .desktops(rig.tenant, &rig.property)
                .iter()
                .any(|d| d.certificate_id == new)
        },
    )
    .await;
    connected(&agent).await;

    // kept by the host before it was used: the old one was still in force then
    let kept = host.kept.lock().unwrap().clone();
    assert_eq!(kept.len(), 1);
    assert_eq!(*host.old_in_force_when_kept.lock().unwrap(), vec![true]);
    let renewal = &kept[0];
    assert_eq!(renewal.certificate.id, new);
    assert_eq!(renewal.certificate.replaces.as_ref(), Some(&old));
    let stored = rig.certificate(&new).await;
    assert_eq!(stored, renewal.certificate);
    assert_eq!(stored.public_key_ed25519, renewal.key.public_key_base64());
    assert_ne!(
        stored.public_key_ed25519,
        desk.certificate.public_key_ed25519
    );
    assert_eq!(
        (
            stored.tenant_id,
            &stored.property_id,
            stored.desktop_device_id.as_str(),
            &stored.allowed_kinds,
            stored.max_valid_window_hours
        ),
        (
            desk.certificate.tenant_id,
            &desk.certificate.property_id,
            desk.certificate.desktop_device_id.as_str(),
            &desk.certificate.allowed_kinds,
            desk.certificate.max_valid_window_hours
        )
    );
    assert_eq!(stored.expires_at - stored.issued_at, days(90));
    assert!((rig.clock.now() - stored.issued_at).num_seconds().abs() < 60);
    // Lockstep signed it, as the certificate endpoint signs
    rig.issuer
        .verifying_key()
        .verify_strict(
            stored.signed_payload().as_bytes(),
            &renewal.signature.to_signature(),
        )
        .expect("the issuer's signature");

    // the successor authenticated: the old certificate is revoked for rotation
    let mut retired = rig.certificate(&old).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while retired.revoked_at.is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        retired = rig.certificate(&old).await;
    }
    assert_eq!(retired.revoke_reason, Some(OfflineRevokeReason::Rotation));
    assert!(rig.certificate(&new).await.revoked_at.is_none());
    assert_eq!(opened_certificates(&mut rig), vec![old, new]);
    assert_eq!(
        rig.metric("lockstep_relay_certificate_renewals_total", Some("renewed")),
        1.0
    );
    // and it stays: a certificate in its first days is not due
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(host.kept.lock().unwrap().len(), 1);
    agent.stop().await;
}

#[tokio::test]
async fn an_agent_that_cannot_keep_the_renewal_stays_on_its_old_certificate() {
    let rig = Rig::start().await;
    let desk = desk_aged(&rig, "desk-keep", 86);
    let old = desk.certificate.id.clone();
    let host = KeepingHost::new(&rig);
    host.fail.store(true, Ordering::SeqCst);
    let agent = hosted_agent(&rig, &desk, host.clone(), true);
    wait_until(
        "a renewal the host could not keep",
        Duration::from_secs(10),
        || !host.old_in_force_when_kept.lock().unwrap().is_empty(),
    )
    .await;
    // nothing changed for the desk: same certificate, same key, still connected with it
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(agent.certificate_id(), old);
    assert!(rig
        .hub
        .desktops(rig.tenant, &rig.property)
        .iter()
        .all(|d| d.certificate_id == old));
    assert!(rig.certificate(&old).await.revoked_at.is_none());
    let orphans = rig.directory.all(rig.tenant);
    assert_eq!(orphans.len(), 2, "one successor issued and never used");

    // the host recovers: the agent asks again and moves over; the unused successor and
    // the old certificate are both retired
    host.fail.store(false, Ordering::SeqCst);
    wait_until(
        "the agent to move to a new certificate",
        Duration::from_secs(10),
        || agent.certificate_id() != old,
    )
    .await;
    let new = agent.certificate_id();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let all = rig.directory.all(rig.tenant);
        let live: Vec<_> = all.iter().filter(|c| c.revoked_at.is_none()).collect();
        if live.len() == 1 {
            assert_eq!(live[0].id, new);
            assert!(all
                .iter()
                .filter(|c| c.id != new)
                .all(|c| c.revoke_reason == Some(OfflineRevokeReason::Rotation)));
            assert_eq!(all.len(), 3);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still live: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.stop().await;
}

#[tokio::test]
async fn a_certificate_not_due_is_refused_and_the_agent_learns_when_it_is() {
    let rig = Rig::start().await;
    let desk = desk_aged(&rig, "desk-early", 80);
    let host = KeepingHost::new(&rig);
    // the agent does not know the expiry: it asks once, and is told
    let agent = hosted_agent(&rig, &desk, host.clone(), false);
    wait_until("the expiry", Duration::from_secs(10), || {
        !host.expiries.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        *host.expiries.lock().unwrap(),
        vec![(desk.certificate.id.clone(), desk.certificate.expires_at)]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(agent.certificate_id(), desk.certificate.id);
    assert!(host.kept.lock().unwrap().is_empty());
    assert_eq!(rig.directory.all(rig.tenant).len(), 1, "nothing issued");
    assert_eq!(
        rig.metric("lockstep_relay_certificate_renewals_total", Some("not_due")),
        1.0,
        "asked once, not again"
    );
    agent.stop().await;

    // by hand: the refusal says why and from when; the session goes on
    let (mut ws, challenge) = session_with_challenge(&rig, &desk).await;
    let new_key = AgentKey::generate();
    let r = refused_with(
        &mut ws,
        &request(
            &challenge,
            &desk,
            &new_key,
            &new_key,
            "early-1",
            rig.clock.now(),
        ),
    )
    .await;
    assert_eq!(r.reason, RenewalRefusalReason::NotDue);
    assert_eq!(r.certificate_expires_at, desk.certificate.expires_at);
    assert_eq!(
        r.renewable_from,
        Some(desk.certificate.expires_at - days(7))
    );
    send(&mut ws, &DesktopMessage::Ping(Heartbeat { seq: 41 })).await;
    assert_eq!(
        answer(&mut ws).await,
        ServerMessage::Pong(Heartbeat { seq: 41 })
    );
    assert_eq!(rig.directory.all(rig.tenant).len(), 1, "nothing issued");
}

#[tokio::test]
async fn a_renewal_needs_proof_of_the_new_key_an_unrevoked_certificate_and_one_per_session() {
    let rig = Rig::start().await;
    let desk = desk_aged(&rig, "desk-proof", 84);
    let (mut ws, challenge) = session_with_challenge(&rig, &desk).await;
    let now = rig.clock.now();
    let new_key = AgentKey::generate();

    // signed by the old key, not the new one: no proof of possession
    let forged = request(&challenge, &desk, &new_key, &desk.key(), "proof-1", now);
    let r = refused_with(&mut ws, &forged).await;
    assert_eq!(r.reason, RenewalRefusalReason::SignatureInvalid);
    // the certificate's own key again is no rotation
    let same = request(&challenge, &desk, &desk.key(), &desk.key(), "proof-2", now);
    let r = refused_with(&mut ws, &same).await;
    assert_eq!(r.reason, RenewalRefusalReason::SameKey);
    // signed ten minutes ago
    let stale = request(
        &challenge,
        &desk,
        &new_key,
        &new_key,
        "proof-3",
        now - chrono::TimeDelta::minutes(10),
    );
    let r = refused_with(&mut ws, &stale).await;
    assert_eq!(r.reason, RenewalRefusalReason::ClockSkew);
    // a proof made for another session's nonce
    let (_other_ws, other_challenge) = raw_connect(&rig).await;
    let elsewhere = request(&other_challenge, &desk, &new_key, &new_key, "proof-4", now);
    let r = refused_with(&mut ws, &elsewhere).await;
    assert_eq!(r.reason, RenewalRefusalReason::SignatureInvalid);
    assert_eq!(rig.directory.all(rig.tenant).len(), 1, "nothing issued");

    // the real thing, then a second one on the same session
    send(
        &mut ws,
        &request(&challenge, &desk, &new_key, &new_key, "proof-5", now),
    )
    .await;
    let renewed = match answer(&mut ws).await {
        ServerMessage::CertificateRenewed(r) => r,
        other => panic!("expected certificate_renewed, got {other:?}"),
    };
    assert_eq!(renewed.replaces, desk.certificate.id.as_str());
    assert_eq!(
        renewed.certificate.public_key_ed25519,
        new_key.public_key_base64()
    );
    let again_key = AgentKey::generate();
    let again = request(&challenge, &desk, &again_key, &again_key, "proof-6", now);
    let r = refused_with(&mut ws, &again).await;
    assert_eq!(r.reason, RenewalRefusalReason::AlreadyRenewed);
    assert_eq!(rig.directory.all(rig.tenant).len(), 2);

    // a certificate revoked after the session opened vouches for no new key
    let revoked = desk_aged(&rig, "desk-revoked", 84);
    let (mut ws, challenge) = session_with_challenge(&rig, &revoked).await;
    rig.directory.revoke(
        rig.tenant,
        &revoked.certificate.id,
        OfflineRevokeReason::TenantRequest,
        rig.clock.now(),
    );
    let r = refused_with(
        &mut ws,
        &request(&challenge, &revoked, &new_key, &new_key, "proof-7", now),
    )
    .await;
    assert_eq!(r.reason, RenewalRefusalReason::CertificateRevoked);
    assert!(r.reason.is_final());
    assert_eq!(
        rig.directory.all(rig.tenant).len(),
        3,
        "nothing more issued"
    );
}

#[tokio::test]
async fn a_relay_whose_host_does_not_renew_says_so() {
    let rig = Rig::without_renewal().await;
    let desk = desk_aged(&rig, "desk-plain", 88);
    let (mut ws, challenge) = session_with_challenge(&rig, &desk).await;
    let new_key = AgentKey::generate();
    let r = refused_with(
        &mut ws,
        &request(
            &challenge,
            &desk,
            &new_key,
            &new_key,
            "plain-1",
            rig.clock.now(),
        ),
    )
    .await;
    assert_eq!(r.reason, RenewalRefusalReason::NotOffered);
    assert!(r.reason.is_final());
}

#[tokio::test]
async fn the_old_certificate_is_retired_only_when_a_successor_authenticates() {
    let rig = Rig::start().await;
    let desk = desk_aged(&rig, "desk-retire", 87);
    let old = desk.certificate.id.clone();
    let renew = |ws_challenge: &Challenge, key: &AgentKey, id: &str| {
        request(ws_challenge, &desk, key, key, id, rig.clock.now())
    };
    // a successor issued whose answer the desk never kept (it crashed)
    let lost_key = AgentKey::generate();
    let (mut ws, challenge) = session_with_challenge(&rig, &desk).await;
    send(&mut ws, &renew(&challenge, &lost_key, "retire-1")).await;
    let lost = match answer(&mut ws).await {
        ServerMessage::CertificateRenewed(r) => r.certificate.id,
        other => panic!("expected certificate_renewed, got {other:?}"),
    };
    drop(ws);
    // the old certificate is in force: the desk comes back with it and renews again
    let kept_key = AgentKey::generate();
    let (mut ws, challenge) = session_with_challenge(&rig, &desk).await;
    send(&mut ws, &renew(&challenge, &kept_key, "retire-2")).await;
    let renewed = match answer(&mut ws).await {
        ServerMessage::CertificateRenewed(r) => r,
        other => panic!("expected certificate_renewed, got {other:?}"),
    };
    let kept = renewed
        .certificate
        .to_certificate(Some(&renewed.replaces))
        .unwrap();
    for id in [&old, &kept.id] {
        assert!(
            rig.certificate(id).await.revoked_at.is_none(),
            "{id} revoked before use"
        );
    }
    let lost = OfflineIssuanceId::parse(&lost).unwrap();
    assert!(rig.certificate(&lost).await.revoked_at.is_none());

    // the successor authenticates: the old one and the unused one are retired
    let successor = Desk {
        seed: kept_key.expose_seed(),
        certificate: kept.clone(),
    };
    let (_new_ws, _) = session_with_challenge(&rig, &successor).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rig.certificate(&old).await.revoked_at.is_none() && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in [&old, &lost] {
        assert_eq!(
            rig.certificate(id).await.revoke_reason,
            Some(OfflineRevokeReason::Rotation),
            "{id}"
        );
    }
    assert!(rig.certificate(&kept.id).await.revoked_at.is_none());
    // the old session is gone (superseded by the same desktop), and the old certificate
    // opens no new one
    loop {
        match read(&mut ws).await {
            None => break,
            Some(ServerMessage::Ping(_) | ServerMessage::Refused(_)) => continue,
            Some(other) => panic!("the superseded session got {other:?}"),
        }
    }
    let (mut ws, challenge) = raw_connect(&rig).await;
    let refused = handshake(
        &mut ws,
        &challenge,
        hello(&desk),
        &desk.key(),
        rig.clock.now(),
    )
    .await;
    let refused = expect_refused(&mut ws, refused).await;
    assert_eq!(
        refused.sub_code,
        lockstep_relay::protocol::RefusalReason::CertificateRevoked
    );
}
