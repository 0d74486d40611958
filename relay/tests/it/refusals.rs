//! Refused connections: each gets `refused` with its code, the connection closes, and
//! nothing changed (no session, no event); the refusal is counted under its reason.

use std::time::Duration;

use futures_util::SinkExt as _;
use lockstep_domain::{OfflineRevokeReason, PropertyId, TenantId};
use lockstep_relay::agent::AgentKey;
use lockstep_relay::protocol::{DesktopMessage, RefusalReason, ServerMessage};
use lockstep_relay::{IssuedCertificate, SessionEvent};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

async fn refused_for(
    rig: &mut Rig,
    desk: &Desk,
    key: &AgentKey,
) -> lockstep_relay::protocol::Refused {
    let (mut ws, challenge) = raw_connect(rig).await;
    let answer = handshake(&mut ws, &challenge, hello(desk), key, rig.clock.now()).await;
    expect_refused(&mut ws, answer).await
}

fn assert_counted(rig: &Rig, reason: RefusalReason) {
    assert_eq!(
        rig.metric("lockstep_relay_refused_total", Some(reason.as_str())),
        1.0,
        "{reason:?} counted once"
    );
}

#[tokio::test]
async fn a_signature_by_another_key_is_refused() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-1");
    let refused = refused_for(&mut rig, &desk, &AgentKey::generate()).await;
    assert_eq!(refused.sub_code, RefusalReason::SignatureInvalid);
    assert_eq!(refused.code, "MELMASTOON.GENERAL.UNAUTHENTICATED");
    assert_counted(&rig, RefusalReason::SignatureInvalid);
    rig.assert_untouched();
}

#[tokio::test]
async fn a_replayed_nonce_and_signature_are_refused() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-1");
    // A genuine handshake, captured.
    let (mut first, challenge) = raw_connect(&rig).await;
    let h = hello(&desk);
    let captured = auth(&challenge, &h, &desk.key(), rig.clock.now());
    send(&mut first, &DesktopMessage::Hello(h.clone())).await;
    send(&mut first, &DesktopMessage::Auth(captured.clone())).await;
    assert!(matches!(
        read(&mut first).await,
        Some(ServerMessage::Welcome(_))
    ));
    assert!(matches!(
        rig.next_event(Duration::from_secs(2)).await,
        Some(SessionEvent::Opened(_))
    ));
    let before = rig.hub.desktops(rig.tenant, &rig.property);

    // Replayed on a second connection: its own challenge is ignored.
    let (mut second, _fresh) = raw_connect(&rig).await;
    send(&mut second, &DesktopMessage::Hello(h)).await;
    send(&mut second, &DesktopMessage::Auth(captured)).await;
    let answer = read(&mut second).await;
    let refused = expect_refused(&mut second, answer).await;
    assert_eq!(refused.sub_code, RefusalReason::NonceReplayed);
    assert_counted(&rig, RefusalReason::NonceReplayed);
    // Nothing changed: the genuine session is the same one, no event.
    assert_eq!(rig.hub.desktops(rig.tenant, &rig.property), before);
    rig.assert_no_event();
}

#[tokio::test]
async fn an_expired_certificate_is_refused_with_offline_cert_expired() {
    let mut rig = Rig::start().await;
    let issued = rig.clock.now() - days(91);
    let desk = rig.desk_at(rig.tenant, &rig.property.clone(), "desk-old", issued);
    let refused = refused_for(&mut rig, &desk, &desk.key()).await;
    assert_eq!(refused.sub_code, RefusalReason::OfflineCertExpired);
    assert_eq!(refused.code, "MELMASTOON.LOCK.CREDENTIAL_EXPIRED");
    assert_counted(&rig, RefusalReason::OfflineCertExpired);
    rig.assert_untouched();
}

#[tokio::test]
async fn a_revoked_certificate_is_refused() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-1");
    rig.directory.revoke(
        rig.tenant,
        &desk.certificate.id,
        OfflineRevokeReason::Compromise,
        rig.clock.now(),
    );
    let refused = refused_for(&mut rig, &desk, &desk.key()).await;
    assert_eq!(refused.sub_code, RefusalReason::CertificateRevoked);
    assert_counted(&rig, RefusalReason::CertificateRevoked);
    rig.assert_untouched();
}

#[tokio::test]
async fn another_tenants_property_is_refused() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-1");
    let other_tenant = TenantId::generate();
    let other_property = PropertyId::parse("ppt_elsewhere").unwrap();
    rig.desk_at(other_tenant, &other_property, "desk-9", rig.clock.now());

    // Our certificate, the other tenant's property under our tenant id.
    let (mut ws, challenge) = raw_connect(&rig).await;
    let mut h = hello(&desk);
    h.property_id = other_property.as_str().into();
    let answer = handshake(&mut ws, &challenge, h, &desk.key(), rig.clock.now()).await;
    let refused = expect_refused(&mut ws, answer).await;
    assert_eq!(refused.sub_code, RefusalReason::PropertyMismatch);
    assert_eq!(refused.code, "MELMASTOON.GENERAL.CROSS_TENANT_REFERENCE");

    // Our certificate presented as the other tenant's.
    let (mut ws, challenge) = raw_connect(&rig).await;
    let mut h = hello(&desk);
    h.tenant_id = other_tenant.to_string();
    h.property_id = other_property.as_str().into();
    let answer = handshake(&mut ws, &challenge, h, &desk.key(), rig.clock.now()).await;
    let refused = expect_refused(&mut ws, answer).await;
    assert_eq!(refused.sub_code, RefusalReason::CertificateUnknown);

    assert!(rig.hub.desktops(other_tenant, &other_property).is_empty());
    rig.assert_untouched();
}

#[tokio::test]
async fn a_desktop_id_other_than_the_certificates_is_refused() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-1");
    let (mut ws, challenge) = raw_connect(&rig).await;
    let mut h = hello(&desk);
    h.desktop_device_id = "desk-2".into();
    let answer = handshake(&mut ws, &challenge, h, &desk.key(), rig.clock.now()).await;
    let refused = expect_refused(&mut ws, answer).await;
    assert_eq!(refused.sub_code, RefusalReason::DesktopMismatch);
    assert_counted(&rig, RefusalReason::DesktopMismatch);
    rig.assert_untouched();
}

#[tokio::test]
async fn a_signed_at_beyond_the_skew_is_refused_and_within_it_accepted() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-1");
    let (mut ws, challenge) = raw_connect(&rig).await;
    let late = rig.clock.now() - chrono::TimeDelta::minutes(6);
    let answer = handshake(&mut ws, &challenge, hello(&desk), &desk.key(), late).await;
    let refused = expect_refused(&mut ws, answer).await;
    assert_eq!(refused.sub_code, RefusalReason::ClockSkew);
    rig.assert_untouched();

    let (mut ws, challenge) = raw_connect(&rig).await;
    let skewed = rig.clock.now() + chrono::TimeDelta::minutes(4);
    let answer = handshake(&mut ws, &challenge, hello(&desk), &desk.key(), skewed).await;
    assert!(
        matches!(answer, Some(ServerMessage::Welcome(_))),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_certificate_whose_issuer_signature_does_not_verify_is_refused() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-1");
    // Someone edited the stored certificate's key: Lockstep's signature no longer covers it.
    let mut forged = desk.certificate.clone();
    let intruder = AgentKey::generate();
    forged.public_key_ed25519 = intruder.public_key_base64();
    let signature =
        ed25519_dalek::Signer::sign(&rig.issuer, desk.certificate.signed_payload().as_bytes());
    rig.directory.insert(IssuedCertificate {
        certificate: forged,
        issuer_signature: Some(signature),
    });
    let refused = refused_for(&mut rig, &desk, &intruder).await;
    assert_eq!(refused.sub_code, RefusalReason::CertificateInvalid);
    rig.assert_untouched();
}

#[tokio::test]
async fn a_malformed_frame_is_refused() {
    let mut rig = Rig::start().await;
    let (mut ws, _) = raw_connect(&rig).await;
    ws.send(Message::text(
        "{\"v\":1,\"type\":\"hello\",\"certificateId\":",
    ))
    .await
    .unwrap();
    let answer = read(&mut ws).await;
    let refused = expect_refused(&mut ws, answer).await;
    assert_eq!(refused.sub_code, RefusalReason::MalformedFrame);
    assert_eq!(refused.code, "MELMASTOON.GENERAL.VALIDATION_FAILED");
    assert_counted(&rig, RefusalReason::MalformedFrame);
    rig.assert_untouched();
}

#[tokio::test]
async fn an_oversized_frame_is_refused() {
    let mut rig = Rig::start().await;
    let (mut ws, _) = raw_connect(&rig).await;
    let big = format!(
        "{{\"v\":1,\"type\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(64 * 1024)
    );
    ws.send(Message::text(big)).await.unwrap();
    let answer = read(&mut ws).await;
    let refused = expect_refused(&mut ws, answer).await;
    assert_eq!(refused.sub_code, RefusalReason::FrameTooLarge);
    assert_eq!(refused.code, "MELMASTOON.GENERAL.PAYLOAD_TOO_LARGE");
    assert_counted(&rig, RefusalReason::FrameTooLarge);
    rig.assert_untouched();
}

#[tokio::test]
async fn no_auth_within_the_handshake_timeout_is_refused() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-1");
    let (mut ws, _) = raw_connect(&rig).await;
    // Hello, then nothing.
    send(&mut ws, &DesktopMessage::Hello(hello(&desk))).await;
    let started = tokio::time::Instant::now();
    let answer = read(&mut ws).await;
    let refused = expect_refused(&mut ws, answer).await;
    assert_eq!(refused.sub_code, RefusalReason::HandshakeTimeout);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_counted(&rig, RefusalReason::HandshakeTimeout);
    assert_eq!(
        rig.metric("lockstep_relay_unauthenticated_connections", None),
        0.0
    );
    rig.assert_untouched();
}

#[tokio::test]
async fn a_malformed_frame_after_authentication_closes_the_session() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-1");
    let (mut ws, _) = raw_session(&rig, &desk).await;
    assert!(matches!(
        rig.next_event(Duration::from_secs(2)).await,
        Some(SessionEvent::Opened(_))
    ));
    ws.send(Message::text("[]")).await.unwrap();
    let refused = loop {
        match read(&mut ws).await {
            Some(ServerMessage::Refused(r)) => break r,
            Some(_) => continue,
            None => panic!("closed without a refusal"),
        }
    };
    assert_eq!(refused.sub_code, RefusalReason::MalformedFrame);
    let Some(SessionEvent::Closed(closed)) = rig.next_event(Duration::from_secs(2)).await else {
        panic!("expected the session closed")
    };
    assert_eq!(
        closed.reason,
        lockstep_relay::CloseReason::ProtocolViolation
    );
    assert_eq!(rig.hub.connected(), 0);
}
