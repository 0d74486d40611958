//! Encode jobs: to the least busy desktop, re-routed on ack timeout or disconnect, encoded
//! once per idempotency key, CARD_ENCODER_OFFLINE when no desktop is left; no desktop,
//! slow or flooding, stalls the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use chrono::TimeDelta;
use lockstep_domain::{KeyCredentialId, KeyCredentialKind, PropertyId, RoomId, ValidityWindow};
use lockstep_relay::agent::SimulatedMode;
use lockstep_relay::protocol::{IdempotencyKey, JobId, ServerMessage};
use lockstep_relay::{
    CloseReason, EncodeRequest, JobOutcome, RelayConfig, RelayError, SessionEvent,
};

use crate::support::*;

fn job(rig: &Rig, n: usize) -> EncodeRequest {
    let now = rig.clock.now();
    EncodeRequest {
        job_id: JobId::parse(&format!("job-{n}")).unwrap(),
        tenant_id: rig.tenant,
        property_id: rig.property.clone(),
        credential_id: KeyCredentialId::generate(),
        kind: KeyCredentialKind::RfidCard,
        rooms: vec![RoomId::parse(&format!("rmu_{}", 100 + n % 50)).unwrap()],
        doors: vec![],
        validity: ValidityWindow::new(now, now + TimeDelta::hours(48)).unwrap(),
        idempotency_key: IdempotencyKey::parse(&format!("card-{n}")).unwrap(),
        prefer_desktop: None,
        only_desktops: None,
        ack_timeout: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test]
async fn a_property_without_a_desktop_gets_card_encoder_offline() {
    let rig = Rig::start().await;
    // A desktop of another property does not count.
    let elsewhere = rig.desk_at(
        rig.tenant,
        &PropertyId::parse("ppt_other").unwrap(),
        "desk-other",
        rig.clock.now(),
    );
    let (agent, sims, _) = rig.agent(&elsewhere, 1, Duration::from_millis(5));
    connected(&agent).await;
    let err = rig.hub.dispatch(job(&rig, 1)).await.unwrap_err();
    assert!(matches!(err, RelayError::EncoderOffline), "{err:?}");
    let domain = err.to_domain().unwrap();
    assert_eq!(domain.code(), "MELMASTOON.LOCK.CARD_ENCODER_OFFLINE");
    assert_eq!(domain.http_status(), 503);
    assert_eq!(
        rig.metric("lockstep_relay_jobs_total", Some("encoder_offline")),
        1.0
    );
    assert!(sims[0].encoded().is_empty());
}

#[tokio::test]
async fn three_agents_three_hundred_jobs_one_killed_mid_job_every_job_encoded_exactly_once() {
    let rig = Rig::with_config(RelayConfig {
        ack_timeout: Duration::from_secs(2),
        ..test_config()
    })
    .await;
    let rig = Arc::new(rig);
    let mut agents = Vec::new();
    let mut sims = Vec::new();
    for name in ["desk-a", "desk-b", "desk-c"] {
        let desk = rig.desk(name);
        let (agent, s, _) = rig.agent(&desk, 1, Duration::from_millis(3));
        connected(&agent).await;
        agents.push(agent);
        sims.push(s[0].clone());
    }
    let by_desktop: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..300 {
        let rig = rig.clone();
        let by_desktop = by_desktop.clone();
        tasks.push(tokio::spawn(async move {
            let out = rig.hub.dispatch(job(&rig, n)).await;
            if let Ok(JobOutcome::Encoded(card)) = &out {
                *by_desktop
                    .lock()
                    .unwrap()
                    .entry(card.desktop_device_id.clone())
                    .or_default() += 1;
            }
            (n, out)
        }));
    }
    // Mid-job: desk-c's encoder sticks on a card after some jobs...
    let victim = sims[2].clone();
    wait_until("desk-c to encode 20 cards", Duration::from_secs(20), || {
        victim.encoded().len() >= 20
    })
    .await;
    victim.set_mode(SimulatedMode::Hang);
    wait_until(
        "desk-c to be stuck mid-job",
        Duration::from_secs(20),
        || victim.hanging() == 1,
    )
    .await;
    // ...every card it did encode has been reported, and then the process dies.
    wait_until(
        "desk-c's finished cards reported",
        Duration::from_secs(20),
        || {
            by_desktop
                .lock()
                .unwrap()
                .get("desk-c")
                .copied()
                .unwrap_or(0)
                == victim.encoded().len()
        },
    )
    .await;
    let in_flight_at_kill = rig
        .hub
        .desktops(rig.tenant, &rig.property)
        .iter()
        .find(|d| d.desktop_device_id == "desk-c")
        .map(|d| d.jobs_in_flight)
        .unwrap_or(0);
    agents.pop().unwrap().kill();

    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let mut encoded: HashMap<String, usize> = HashMap::new();
    for s in &sims {
        for key in s.encoded() {
            *encoded.entry(key.as_str().to_owned()).or_default() += 1;
        }
    }
    for (n, out) in &outcomes {
        assert!(
            matches!(out, Ok(JobOutcome::Encoded(_))),
            "job {n}: {out:?}"
        );
        assert_eq!(
            encoded.get(&format!("card-{n}")),
            Some(&1),
            "card-{n} encoded once"
        );
    }
    assert_eq!(encoded.len(), 300);
    assert_eq!(
        encoded.values().sum::<usize>(),
        300,
        "no card encoded twice"
    );
    let reroutes = rig.metric("lockstep_relay_job_reroutes_total", None);
    assert!(reroutes >= in_flight_at_kill as f64 && in_flight_at_kill > 0);
    println!(
        "300 jobs in {elapsed:?}; per desktop {:?}; {in_flight_at_kill} in flight at desk-c when killed, {reroutes} re-routes",
        by_desktop.lock().unwrap()
    );
    assert_eq!(
        rig.metric("lockstep_relay_jobs_total", Some("encoded")),
        300.0
    );
}

#[tokio::test]
async fn a_job_sent_again_is_answered_with_the_earlier_card_not_encoded_twice() {
    let rig = Rig::start().await;
    let desk = rig.desk("desk-1");
    let (agent, sims, store) = rig.agent(&desk, 1, Duration::from_millis(5));
    connected(&agent).await;
    let first = rig.hub.dispatch(job(&rig, 7)).await.unwrap();
    let JobOutcome::Encoded(first) = first else {
        panic!("{first:?}")
    };

    // The agent restarts (its record kept, as the SQLite mirror will), and the host, after
    // its own restart, dispatches the same job again.
    agent.stop().await;
    let (again, sims_again) =
        rig.agent_with_store(&desk, 1, Duration::from_millis(5), store.clone());
    connected(&again).await;
    let mut request = job(&rig, 7);
    request.job_id = JobId::parse("job-7-redispatch").unwrap();
    request.prefer_desktop = Some("desk-1".into());
    let second = rig.hub.dispatch(request).await.unwrap();
    let JobOutcome::Encoded(second) = second else {
        panic!("{second:?}")
    };
    assert_eq!(second.card_number, first.card_number);
    assert_eq!(sims[0].encoded().len(), 1);
    assert!(sims_again[0].encoded().is_empty());
    // The card number never shows in Debug output.
    assert!(!format!("{second:?}").contains(second.card_number.expose()));
}

#[tokio::test]
async fn a_desktop_that_never_reads_is_disconnected_without_stalling_the_others() {
    let mut rig = Rig::with_config(RelayConfig {
        outbound_queue: 8,
        write_timeout: Duration::from_secs(1),
        ack_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(30),
        ..test_config()
    })
    .await;
    let good = rig.desk("desk-good");
    let (agent, sims, _) = rig.agent(&good, 1, Duration::from_millis(2));
    connected(&agent).await;
    let _ = rig.next_event(Duration::from_secs(2)).await;

    // The slow desktop: a tiny receive buffer, authenticated, then never reads again.
    let slow = rig.desk("desk-slow");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(rig.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(
        rig.url(),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    let challenge = match read(&mut ws).await {
        Some(ServerMessage::Challenge(c)) => c,
        other => panic!("{other:?}"),
    };
    let answer = handshake(
        &mut ws,
        &challenge,
        hello(&slow),
        &slow.key(),
        rig.clock.now(),
    )
    .await;
    assert!(matches!(answer, Some(ServerMessage::Welcome(_))));
    let _ = rig.next_event(Duration::from_secs(2)).await;
    assert_eq!(rig.hub.connected(), 2);

    let rig_hub = rig.hub.clone();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..200 {
        let hub = rig_hub.clone();
        let request = job(&rig, n);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let out = hub.dispatch(request).await;
            (out, t.elapsed())
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        let (out, took) = t.await.unwrap();
        assert!(
            matches!(&out, Ok(JobOutcome::Encoded(c)) if c.desktop_device_id == "desk-good"),
            "{out:?}"
        );
        latencies.push(took);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let Some(SessionEvent::Closed(closed)) = rig.next_event(Duration::from_secs(5)).await else {
        panic!("the slow desktop must be disconnected")
    };
    assert_eq!(closed.desktop_device_id, "desk-slow");
    assert!(
        matches!(
            closed.reason,
            CloseReason::SlowConsumer | CloseReason::AckTimeout
        ),
        "{:?}",
        closed.reason
    );
    assert_eq!(sims[0].encoded().len(), 200);
    assert_eq!(rig.hub.connected(), 1);
    println!(
        "200 jobs in {elapsed:?} with a desktop that never reads (closed: {}); p50 {:?}, p99 {:?}, max {:?}",
        closed.reason.as_str(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    // Nothing waited on the slow desktop for longer than one ack timeout plus the work.
    assert!(*latencies.last().unwrap() < Duration::from_secs(2) + Duration::from_secs(3));
    drop(ws);
}

#[tokio::test]
async fn a_flood_of_unauthenticated_connections_does_not_stop_an_authenticated_desktops_jobs() {
    let rig = Rig::with_config(RelayConfig {
        max_unauthenticated: 64,
        handshake_timeout: Duration::from_secs(3),
        ..test_config()
    })
    .await;
    let desk = rig.desk("desk-1");
    let (agent, sims, _) = rig.agent(&desk, 1, Duration::from_millis(2));
    connected(&agent).await;

    // 500 connections that never speak, held open.
    let mut flood = Vec::new();
    for _ in 0..500 {
        flood.push(tokio::net::TcpStream::connect(rig.addr).await.unwrap());
    }
    wait_until(
        "the server to see the flood",
        Duration::from_secs(5),
        || rig.metric("lockstep_relay_refused_total", Some("too_many_connections")) >= 436.0,
    )
    .await;
    assert!(rig.metric("lockstep_relay_unauthenticated_connections", None) <= 64.0);

    let started = Instant::now();
    let mut latencies = Vec::new();
    for n in 0..50 {
        let t = Instant::now();
        let out = rig.hub.dispatch(job(&rig, n)).await.unwrap();
        assert!(matches!(out, JobOutcome::Encoded(_)));
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    assert_eq!(sims[0].encoded().len(), 50);
    assert!(matches!(
        agent.status(),
        lockstep_relay::agent::AgentStatus::Connected { .. }
    ));
    println!(
        "50 jobs during a 500-connection flood in {elapsed:?}: p50 {:?}, max {:?}; refused {} connections, {} held",
        percentile(&latencies, 0.5),
        latencies.last().unwrap(),
        rig.metric("lockstep_relay_refused_total", Some("too_many_connections")),
        rig.metric("lockstep_relay_unauthenticated_connections", None),
    );
    drop(flood);
}

#[tokio::test]
async fn shutdown_closes_every_session_and_fails_new_jobs() {
    let mut rig = Rig::start().await;
    let desk = rig.desk("desk-1");
    let (agent, _, _) = rig.agent(&desk, 1, Duration::from_millis(2));
    connected(&agent).await;
    let _ = rig.next_event(Duration::from_secs(2)).await;
    let hub = rig.hub.clone();
    rig.server.take().unwrap().shutdown().await;
    let Some(SessionEvent::Closed(closed)) = rig.next_event(Duration::from_secs(2)).await else {
        panic!("expected the session closed at shutdown")
    };
    assert_eq!(closed.reason, CloseReason::ServerShutdown);
    let err = hub.dispatch(job(&rig, 1)).await.unwrap_err();
    assert!(err
        .to_domain()
        .is_some_and(|d| d.code() == "MELMASTOON.LOCK.CARD_ENCODER_OFFLINE"));
    agent.stop().await;
}

#[tokio::test]
async fn a_desktop_dropping_after_the_ack_gets_the_job_back_on_reconnect_and_encodes_it_once() {
    let rig = Rig::with_config(RelayConfig {
        reconnect_grace: Duration::from_secs(2),
        ..test_config()
    })
    .await;
    let desk = rig.desk("desk-1");
    let (agent, sims, _) = rig.agent(&desk, 1, Duration::from_millis(600));
    let first_session = connected(&agent).await;
    let other = rig.desk("desk-2");
    let (other_agent, other_sims, _) = rig.agent(&other, 1, Duration::from_millis(5));
    connected(&other_agent).await;

    let mut request = job(&rig, 1);
    request.prefer_desktop = Some("desk-1".into());
    let hub = rig.hub.clone();
    let dispatched = tokio::spawn(async move { hub.dispatch(request).await });
    // desk-1 acknowledged and is encoding; its connection drops (the agent lives on).
    wait_until("desk-1 to start encoding", Duration::from_secs(5), || {
        sims[0].started() == 1
    })
    .await;
    assert_eq!(
        rig.hub
            .disconnect_certificate(rig.tenant, &desk.certificate.id),
        1
    );
    let out = dispatched.await.unwrap().unwrap();
    let JobOutcome::Encoded(card) = out else {
        panic!("{out:?}")
    };
    // It came back within the grace and answered from the encode it had in progress.
    assert_eq!(card.desktop_device_id, "desk-1");
    assert_ne!(card.session_id.as_str(), first_session);
    assert_eq!(sims[0].encoded().len(), 1);
    assert!(other_sims[0].encoded().is_empty());
}
