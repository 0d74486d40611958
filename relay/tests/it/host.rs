//! What the host builds on: the dispatch journal (a job's desktops recorded before it is
//! sent), jobs bound to the desktops that may hold their card, and provisional batches
//! handed to the host's reconciler and answered to the agent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeDelta;
use lockstep_domain::{KeyCredentialId, KeyCredentialKind, RoomId, ValidityWindow};
use lockstep_relay::agent::{
    Agent, AgentConfig, AgentHost, AttachedEncoder, MemoryEncodedJobs, SimulatedEncoder,
};
use lockstep_relay::protocol::{
    EncoderId, EncoderInfo, IdempotencyKey, JobId, ProvisionalBatch, ProvisionalCredential,
    ProvisionalId, SignatureB64, SyncItem, SyncOutcome, SyncResult, Transport,
};
use lockstep_relay::{
    DesktopIdentity, DispatchJournal, EncodeRequest, JobOutcome, Reconciler, RelayError,
};

use crate::support::*;

fn job(rig: &Rig, n: usize, only: Option<Vec<String>>) -> EncodeRequest {
    let now = rig.clock.now();
    EncodeRequest {
        job_id: JobId::parse(&format!("hjob-{n}")).unwrap(),
        tenant_id: rig.tenant,
        property_id: rig.property.clone(),
        credential_id: KeyCredentialId::generate(),
        kind: KeyCredentialKind::RfidCard,
        rooms: vec![RoomId::parse("rmu_101").unwrap()],
        doors: vec![],
        validity: ValidityWindow::new(now, now + TimeDelta::hours(24)).unwrap(),
        idempotency_key: IdempotencyKey::parse(&format!("hcard-{n}")).unwrap(),
        prefer_desktop: None,
        only_desktops: only,
        ack_timeout: None,
    }
}

#[derive(Default)]
struct Journal {
    sent_to: Mutex<Vec<String>>,
    fail: bool,
}

#[async_trait]
impl DispatchJournal for Journal {
    async fn sending(&self, desktop: &str) -> Result<(), String> {
        if self.fail {
            return Err("store down".into());
        }
        self.sent_to.lock().unwrap().push(desktop.to_owned());
        Ok(())
    }
}

#[tokio::test]
async fn the_journal_hears_of_each_desktop_before_the_send_and_a_failing_one_sends_nothing() {
    let rig = Rig::start().await;
    let desk = rig.desk("desk-j");
    let (agent, sims, _) = rig.agent(&desk, 1, Duration::from_millis(5));
    connected(&agent).await;
    let journal = Journal::default();
    let out = rig
        .hub
        .dispatch_with(job(&rig, 1, None), Some(&journal))
        .await
        .unwrap();
    assert!(matches!(out, JobOutcome::Encoded(ref c) if c.desktop_device_id == "desk-j"));
    assert_eq!(*journal.sent_to.lock().unwrap(), vec!["desk-j".to_owned()]);
    let failing = Journal {
        fail: true,
        ..Journal::default()
    };
    let err = rig
        .hub
        .dispatch_with(job(&rig, 2, None), Some(&failing))
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::Journal(_)), "{err:?}");
    // a later job on the same connection is the barrier: had the refused one been sent,
    // its frame would have reached the desk first
    let later = rig
        .hub
        .dispatch_with(job(&rig, 3, None), Some(&journal))
        .await
        .unwrap();
    assert!(matches!(later, JobOutcome::Encoded(_)));
    assert_eq!(
        sims[0].started(),
        2,
        "the refused job never reached the desk"
    );
    assert_eq!(
        rig.hub.desktops(rig.tenant, &rig.property)[0].jobs_in_flight,
        0
    );
}

#[tokio::test]
async fn a_job_bound_to_its_holders_goes_to_no_other_desktop() {
    let rig = Rig::start().await;
    let (a, sims_a, _) = rig.agent(&rig.desk("desk-a"), 1, Duration::from_millis(5));
    let (b, sims_b, _) = rig.agent(&rig.desk("desk-b"), 1, Duration::from_millis(5));
    connected(&a).await;
    connected(&b).await;
    for n in 0..6 {
        let out = rig
            .hub
            .dispatch(job(&rig, n, Some(vec!["desk-b".into()])))
            .await
            .unwrap();
        assert!(matches!(out, JobOutcome::Encoded(ref c) if c.desktop_device_id == "desk-b"));
    }
    let err = rig
        .hub
        .dispatch(job(&rig, 9, Some(vec!["desk-gone".into()])))
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::EncoderOffline), "{err:?}");
    assert_eq!(sims_a[0].started(), 0);
    assert_eq!(sims_b[0].encoded().len(), 6);
}

/// Accepts every item whose window is at most 48 hours, revokes the others.
struct Judge {
    seen: Mutex<Vec<(String, usize)>>,
}

#[async_trait]
impl Reconciler for Judge {
    async fn reconcile(&self, who: &DesktopIdentity, batch: &ProvisionalBatch) -> Vec<SyncItem> {
        self.seen
            .lock()
            .unwrap()
            .push((who.desktop_device_id.clone(), batch.items.len()));
        batch
            .items
            .iter()
            .map(|i| {
                let ok = i.valid_until - i.valid_from <= TimeDelta::hours(48);
                SyncItem {
                    provisional_id: i.provisional_id.clone(),
                    outcome: if ok {
                        SyncOutcome::Accepted
                    } else {
                        SyncOutcome::Revoked
                    },
                    credential_id: ok.then(|| KeyCredentialId::generate().as_str().to_owned()),
                    reason: (!ok).then(|| "window_over_48h".into()),
                }
            })
            .collect()
    }
}

struct Desk {
    unsynced: Vec<ProvisionalCredential>,
    synced: Mutex<Vec<SyncResult>>,
}

#[async_trait]
impl AgentHost for Desk {
    async fn unsynced(&self) -> Vec<ProvisionalCredential> {
        self.unsynced.clone()
    }
    async fn synced(&self, result: &SyncResult) {
        self.synced.lock().unwrap().push(result.clone());
    }
}

#[tokio::test]
async fn provisional_credentials_are_sent_after_welcome_and_the_reconcilers_verdicts_come_back() {
    let judge = Arc::new(Judge {
        seen: Mutex::default(),
    });
    let rig = Rig::with_reconciler(test_config(), judge.clone()).await;
    let desk = rig.desk("desk-offline");
    let key = desk.key();
    let now = rig.clock.now();
    let item = |n: usize, hours: i64| {
        let mut p = ProvisionalCredential {
            provisional_id: ProvisionalId::parse(&format!("prov-{n}")).unwrap(),
            certificate_id: desk.certificate.id.as_str().to_owned(),
            kind: "rfid_card".into(),
            reservation_id: Some(format!("rsv_{n}")),
            room_ids: vec!["rmu_101".into()],
            valid_from: now,
            valid_until: now + TimeDelta::hours(hours),
            minted_at: now,
            card_number: None,
            signature: SignatureB64::from_signature(&key.sign(b"placeholder")),
        };
        p.signature = SignatureB64::from_signature(&key.sign(p.signed_payload().as_bytes()));
        p
    };
    // 30 items: two frames of at most 25
    let mut unsynced: Vec<_> = (0..29).map(|n| item(n, 24)).collect();
    unsynced.push(item(29, 72));
    let host = Arc::new(Desk {
        unsynced,
        synced: Mutex::default(),
    });
    let sim = Arc::new(SimulatedEncoder::new(Duration::from_millis(1)));
    let attached = vec![AttachedEncoder {
        info: EncoderInfo {
            encoder_id: EncoderId::parse("enc-0").unwrap(),
            model: "simulated".into(),
            transport: Transport::UsbHid,
        },
        encoder: sim,
    }];
    let mut config = AgentConfig::new(
        rig.url(),
        desk.certificate.id.clone(),
        rig.tenant,
        rig.property.clone(),
        "desk-offline",
    );
    config.expected_audience = Some(rig.config.audience.clone());
    let agent = Agent::spawn_hosted(
        config,
        desk.key(),
        attached,
        Arc::new(MemoryEncodedJobs::default()),
        rig.clock.clone(),
        host.clone(),
    );
    connected(&agent).await;
    wait_until("both sync results", Duration::from_secs(5), || {
        host.synced.lock().unwrap().len() == 2
    })
    .await;
    let results = host.synced.lock().unwrap().clone();
    let items: Vec<&SyncItem> = results.iter().flat_map(|r| r.items.iter()).collect();
    assert_eq!(items.len(), 30);
    assert_eq!(
        items
            .iter()
            .filter(|i| i.outcome == SyncOutcome::Accepted)
            .count(),
        29
    );
    let over = items
        .iter()
        .find(|i| i.provisional_id.as_str() == "prov-29")
        .unwrap();
    assert_eq!(over.outcome, SyncOutcome::Revoked);
    let seen = judge.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ("desk-offline".to_owned(), 25),
            ("desk-offline".to_owned(), 5)
        ]
    );
    agent.stop().await;
}
