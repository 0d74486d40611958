//! The generic Wiegand adapter and TTLock's desk-read cards, against an in-memory desk (the
//! host's relay-backed desk runs the same adapter in `actors`' contract suite).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lockstep_domain::{DeviceRef, KeyCredentialKind, PropertyId, TenantId, VendorCode};
use lockstep_vendors::wiegand::{CardEntry, CardJob, DeskError, DeskScope};
use lockstep_vendors::{
    CardNumber, EncoderDispatch, GenericWiegandAdapter, IssueRequest, LockPort, VendorError,
    WiegandConfig,
};

use crate::support::{shifted, spawn_with, window, LOCK};

/// A desk in memory: one card per key, counted.
#[derive(Debug, Default)]
struct Desk {
    connected: Mutex<bool>,
    encodes: Mutex<u64>,
    cards: Mutex<HashMap<String, (CardJob, CardNumber, bool)>>,
}

impl Desk {
    fn online() -> Arc<Self> {
        let d = Self::default();
        *d.connected.lock().unwrap() = true;
        Arc::new(d)
    }
    fn encodes(&self) -> u64 {
        *self.encodes.lock().unwrap()
    }
}

#[async_trait]
impl EncoderDispatch for Desk {
    async fn encode(&self, job: &CardJob) -> Result<CardNumber, DeskError> {
        if let Some((_, n, live)) = self.cards.lock().unwrap().get_mut(&job.idempotency_key) {
            *live = true;
            return Ok(n.clone());
        }
        if !*self.connected.lock().unwrap() {
            return Err(DeskError::EncoderOffline);
        }
        let mut encodes = self.encodes.lock().unwrap();
        *encodes += 1;
        let n = CardNumber::parse(&format!("{}", 3_661_413_000u64 + *encodes)).unwrap();
        self.cards
            .lock()
            .unwrap()
            .insert(job.idempotency_key.clone(), (job.clone(), n.clone(), true));
        Ok(n)
    }
    async fn encoded(&self, _: &DeskScope, key: &str) -> Result<Option<CardNumber>, DeskError> {
        Ok(self.cards.lock().unwrap().get(key).map(|c| c.1.clone()))
    }
    async fn cards_at(
        &self,
        _: &DeskScope,
        vendor: VendorCode,
        _door: &DeviceRef,
    ) -> Result<Vec<CardEntry>, DeskError> {
        Ok(self
            .cards
            .lock()
            .unwrap()
            .values()
            .filter(|(j, _, live)| *live && j.vendor == vendor)
            .map(|(j, _, _)| CardEntry {
                credential_label: j.credential_label.clone(),
                valid_from: j.validity.from(),
                valid_until: j.validity.until(),
            })
            .collect())
    }
    async fn cancel(&self, _: &DeskScope, label: &str) -> Result<(), DeskError> {
        for (j, _, live) in self.cards.lock().unwrap().values_mut() {
            if j.credential_label == label {
                *live = false;
            }
        }
        Ok(())
    }
    async fn replace(&self, _: &DeskScope, label: &str, keep: &str) -> Result<(), DeskError> {
        for (j, _, live) in self.cards.lock().unwrap().values_mut() {
            if j.credential_label == label && j.idempotency_key != keep {
                *live = false;
            }
        }
        Ok(())
    }
    async fn ready(&self, _: &DeskScope) -> Result<(), DeskError> {
        if *self.connected.lock().unwrap() {
            Ok(())
        } else {
            Err(DeskError::EncoderOffline)
        }
    }
}

fn scope() -> DeskScope {
    DeskScope {
        tenant_id: TenantId::generate(),
        property_id: PropertyId::parse("ppt_desk").unwrap(),
    }
}

fn card(label: &str, door: &str) -> IssueRequest {
    IssueRequest {
        device: DeviceRef::new(door),
        kind: KeyCredentialKind::RfidCard,
        label: label.into(),
        pin: None,
        card_number: None,
        validity: window(),
    }
}

#[tokio::test]
async fn a_wiegand_credential_is_one_card_for_all_its_doors_named_without_its_number(
) -> anyhow::Result<()> {
    let desk = Desk::online();
    let adapter = GenericWiegandAdapter::new(
        WiegandConfig {
            scope: scope(),
            relay_ws_base_url: "wss://relay.test".into(),
            desktop_ack_timeout: WiegandConfig::DEFAULT_ACK_TIMEOUT,
        },
        desk.clone(),
    );
    let caps = adapter.capabilities();
    assert!(caps.card_encoding && caps.offline_issuance && !caps.remote_revoke && !caps.pin);
    let first = card("key_w1", "501");
    assert_eq!(adapter.find(&first).await?, None);
    let vref = adapter.issue(&first).await?;
    assert_eq!(vref.expose(), "wg:key_w1");
    assert_eq!(adapter.issue(&card("key_w1", "502")).await?, vref);
    assert_eq!(desk.encodes(), 1, "one card for both doors");
    assert_eq!(adapter.find(&first).await?, Some(vref.clone()));
    let listed = adapter.list(&DeviceRef::new("501")).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].label, "key_w1");
    // a moved window is a new card that replaces the old one
    let moved = IssueRequest {
        validity: shifted(&first.validity, 1),
        ..first.clone()
    };
    adapter.update(&moved, &vref).await?;
    assert_eq!(desk.encodes(), 2);
    let listed = adapter.list(&DeviceRef::new("501")).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].valid_until, moved.validity.until());
    // revoke voids it in the ledger; again is fine
    adapter.revoke(&DeviceRef::new("501"), &vref).await?;
    adapter.revoke(&DeviceRef::new("501"), &vref).await?;
    assert!(adapter.list(&DeviceRef::new("501")).await?.is_empty());
    // only cards
    let pin = IssueRequest {
        kind: KeyCredentialKind::PinCode,
        ..first.clone()
    };
    assert!(
        matches!(adapter.issue(&pin).await, Err(VendorError::Refused { code, .. }) if code == "unsupported_kind")
    );
    // no desktop: the vendor is down (the breaker counts it)
    *desk.connected.lock().unwrap() = false;
    let down = adapter.issue(&card("key_w2", "501")).await.unwrap_err();
    assert!(down.is_vendor_unwell(), "{down:?}");
    assert!(adapter.health().await.unwrap_err().is_vendor_unwell());
    assert!(matches!(
        adapter.probe(&DeviceRef::new("501")).await,
        Err(VendorError::Refused { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn a_ttlock_card_without_a_number_is_read_at_the_desk_once_per_credential(
) -> anyhow::Result<()> {
    let desk = Desk::online();
    let env = spawn_with(|_| {}, Arc::new(lockstep_domain::SystemClock));
    env.handle.add_lock(LOCK + 1);
    let adapter = lockstep_vendors::TtlockAdapter::new(
        env.sim.default_adapter_config(),
        Arc::new(lockstep_domain::SystemClock),
    )?
    .with_desk(desk.clone(), scope(), Duration::from_secs(8));
    let on = |lock: i64| IssueRequest {
        device: DeviceRef::new(lock.to_string()),
        ..card("key_tt1", "x")
    };
    let first = adapter.issue(&on(LOCK)).await?;
    assert!(first.expose().starts_with("card:"));
    adapter.issue(&on(LOCK + 1)).await?;
    assert_eq!(desk.encodes(), 1, "one card, registered on both locks");
    let (a, b) = (env.handle.cards(LOCK), env.handle.cards(LOCK + 1));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].card_number, b[0].card_number, "the same card");
    assert_eq!(a[0].card_name, "key_tt1");
    // no desktop: this card waits; TTLock is not unwell and nothing reached it
    *desk.connected.lock().unwrap() = false;
    let adds = env.handle.counters().adds;
    let err = adapter
        .issue(&on(LOCK).clone_with_label("key_tt2"))
        .await
        .unwrap_err();
    assert!(matches!(err, VendorError::Refused { ref code, .. } if code == "card_encoder_offline"));
    assert!(!err.is_vendor_unwell() && err.is_retryable());
    assert_eq!(env.handle.counters().adds, adds);
    Ok(())
}

trait WithLabel {
    fn clone_with_label(&self, label: &str) -> Self;
}

impl WithLabel for IssueRequest {
    fn clone_with_label(&self, label: &str) -> Self {
        IssueRequest {
            label: label.into(),
            ..self.clone()
        }
    }
}
