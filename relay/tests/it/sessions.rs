//! Sessions open on authentication and close with a reason; E-1: a killed desktop's
//! session is reported closed within 5 s.

use std::time::Duration;

use tokio::time::Instant;

use lockstep_relay::protocol::{DesktopMessage, ServerMessage};
use lockstep_relay::{CloseReason, SessionEvent};

use crate::support::*;

#[tokio::test]
async fn an_authenticated_desktop_opens_a_session_and_stopping_it_closes_it_gracefully() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-1");
    let (agent, _, _) = rig.agent(&desk, 2, Duration::from_millis(5));
    let session_id = connected(&agent).await;

    let Some(SessionEvent::Opened(opened)) = rig.next_event(Duration::from_secs(2)).await else {
        panic!("expected a session opened event")
    };
    assert_eq!(opened.session_id.as_str(), session_id);
    assert_eq!(opened.tenant_id, rig.tenant);
    assert_eq!(opened.property_id, rig.property);
    assert_eq!(opened.desktop_device_id, "desk-1");
    assert_eq!(opened.certificate_id, desk.certificate.id);
    assert_eq!(opened.encoders.len(), 2);
    assert_ne!(opened.encoders[0].session_id, opened.encoders[1].session_id);
    let listed = rig.hub.desktops(rig.tenant, &rig.property);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].encoders.len(), 2);
    assert_eq!(rig.metric("lockstep_relay_connected_desktops", None), 1.0);

    agent.stop().await;
    let Some(SessionEvent::Closed(closed)) = rig.next_event(Duration::from_secs(5)).await else {
        panic!("expected a session closed event")
    };
    assert_eq!(closed.session_id, opened.session_id);
    assert_eq!(closed.reason, CloseReason::Graceful);
    assert_eq!(closed.reason.spec_reason(), "app_quit");
    assert_eq!(closed.encoders, opened.encoders);
    assert!(closed.at >= opened.at);
    assert_eq!(rig.hub.connected(), 0);
    assert_eq!(rig.metric("lockstep_relay_connected_desktops", None), 0.0);
}

#[tokio::test]
async fn a_killed_agent_is_reported_closed_within_five_seconds() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-killed");
    let (agent, _, _) = rig.agent(&desk, 1, Duration::from_millis(5));
    connected(&agent).await;
    assert!(matches!(
        rig.next_event(Duration::from_secs(2)).await,
        Some(SessionEvent::Opened(_))
    ));

    let killed_at = Instant::now();
    agent.kill();
    let Some(SessionEvent::Closed(closed)) = rig.next_event(Duration::from_secs(5)).await else {
        panic!("E-1: no session closed event within 5 s of the kill")
    };
    let took = killed_at.elapsed();
    println!("session closed {took:?} after the agent was killed");
    assert!(took < Duration::from_secs(5), "E-1: took {took:?}");
    assert_eq!(closed.reason, CloseReason::ConnectionLost);
    assert_eq!(closed.reason.spec_reason(), "error");
    assert_eq!(rig.hub.connected(), 0);
}

#[tokio::test]
async fn a_desktop_that_stops_answering_heartbeats_is_closed_after_the_idle_timeout() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-silent");
    let (mut ws, welcome) = raw_session(&rig, &desk).await;
    assert_eq!(welcome.heartbeat_interval_ms, 200);
    assert!(matches!(
        rig.next_event(Duration::from_secs(2)).await,
        Some(SessionEvent::Opened(_))
    ));
    // It reads the pings but never answers: silence from its side.
    let started = Instant::now();
    let reader = tokio::spawn(async move { while read(&mut ws).await.is_some() {} });
    let Some(SessionEvent::Closed(closed)) = rig.next_event(Duration::from_secs(5)).await else {
        panic!("expected the silent desktop to be closed")
    };
    assert_eq!(closed.reason, CloseReason::HeartbeatTimeout);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "closed too early: {took:?}"
    );
    println!("silent desktop closed after {took:?} (idle timeout 2 s)");
    reader.await.unwrap();
}

#[tokio::test]
async fn a_desktop_answering_pings_stays_connected() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-pong");
    let (mut ws, _) = raw_session(&rig, &desk).await;
    let _ = rig.next_event(Duration::from_secs(2)).await;
    let until = Instant::now() + Duration::from_secs(3);
    let mut pings = 0;
    while Instant::now() < until {
        match read(&mut ws).await {
            Some(ServerMessage::Ping(h)) => {
                pings += 1;
                send(&mut ws, &DesktopMessage::Pong(h)).await;
            }
            Some(_) => {}
            None => panic!("the server closed a desktop that answers its pings"),
        }
    }
    assert!(pings >= 10, "only {pings} pings in 3 s at 200 ms");
    assert_eq!(rig.hub.connected(), 1);
    rig.assert_no_event();
}

#[tokio::test]
async fn revoking_a_certificate_closes_its_sessions() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-revoked-later");
    let (agent, _, _) = rig.agent(&desk, 1, Duration::from_millis(5));
    connected(&agent).await;
    let _ = rig.next_event(Duration::from_secs(2)).await;
    rig.directory.revoke(
        rig.tenant,
        &desk.certificate.id,
        lockstep_domain::OfflineRevokeReason::Compromise,
        rig.clock.now(),
    );
    assert_eq!(
        rig.hub
            .disconnect_certificate(rig.tenant, &desk.certificate.id),
        1
    );
    let Some(SessionEvent::Closed(closed)) = rig.next_event(Duration::from_secs(2)).await else {
        panic!("expected the session closed")
    };
    assert_eq!(closed.reason, CloseReason::CertificateRevoked);
    // The agent's reconnect is refused for good.
    let status = agent
        .wait_for(
            |s| matches!(s, lockstep_relay::agent::AgentStatus::Refused(_)),
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(
        status,
        Some(lockstep_relay::agent::AgentStatus::Refused(
            lockstep_relay::protocol::RefusalReason::CertificateRevoked
        ))
    );
    assert_eq!(rig.hub.connected(), 0);
    rig.assert_no_event();
}
