//! `ReadOnlyEncodeJobTable`/`EncodeJobTable`: the desk encoders' durable jobs and card
//! ledger (issue 12).

use lockstep_domain::DeviceRef;

use super::prelude::*;

pub fn job(tenant: TenantId, key: &str, credential: &str, doors: &[&str]) -> NewEncodeJob {
    NewEncodeJob {
        tenant_id: tenant,
        property_id: property(),
        idempotency_key: key.into(),
        vendor: VendorCode::GenericWiegand,
        credential_id: credential.into(),
        doors: doors.iter().map(|d| DeviceRef::new(*d)).collect(),
        valid_from: day(1),
        valid_until: day(2),
        now: t0(),
    }
}

fn encoded(card: &str, desk: &str) -> EncodeResult {
    EncodeResult::Encoded {
        card_number: card.into(),
        desktop_device_id: desk.into(),
        encoder_id: Some("enc-0".into()),
        session_id: Some("enc_01J00000000000000000000000".into()),
    }
}

/// One job per key: stored once, its holders recorded before each send, a failure clears
/// them, an encoded card is kept (encrypted at rest) and answered again, and another tenant
/// sees none of it.
pub async fn an_encode_job_is_stored_once_and_keeps_its_holders_and_card(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let j = job(tenant, "wg:key_a:1-2", "key_a", &["501", "502"]);
    let mut tx = store.begin(tenant, None).await?;
    let first = tx.start_encode_job(&j).await?;
    assert_eq!(first.state, EncodeJobState::Dispatched);
    assert_eq!(first.door_indexes.len(), 2);
    let again = tx.start_encode_job(&j).await?;
    assert_eq!(again.id, first.id, "one row per key");
    ensure!(
        tx.add_encode_job_holder(&j.idempotency_key, "desk-1", at(1))
            .await?
    );
    ensure!(
        tx.add_encode_job_holder(&j.idempotency_key, "desk-1", at(2))
            .await?
    );
    ensure!(!tx.add_encode_job_holder("nope", "desk-1", at(2)).await?);
    let got = tx.encode_job(&j.idempotency_key).await?.context("stored")?;
    assert_eq!(got.holders, vec!["desk-1".to_owned()]);
    assert_eq!(got.dispatches, 2);
    // a failure: no card, nobody holds one
    ensure!(
        tx.record_encode_result(
            &j.idempotency_key,
            &EncodeResult::Failed {
                failure: "no_card".into()
            },
            at(3)
        )
        .await?
    );
    let got = tx.encode_job(&j.idempotency_key).await?.context("stored")?;
    assert_eq!(got.state, EncodeJobState::Failed);
    ensure!(got.holders.is_empty());
    ensure!(
        tx.add_encode_job_holder(&j.idempotency_key, "desk-2", at(4))
            .await?
    );
    assert_eq!(
        tx.encode_job(&j.idempotency_key)
            .await?
            .context("stored")?
            .state,
        EncodeJobState::Dispatched
    );
    ensure!(
        tx.record_encode_result(&j.idempotency_key, &encoded("3141592653", "desk-2"), at(5))
            .await?
    );
    tx.commit().await?;
    let mut r = store.read(tenant).await?;
    let got = r.encode_job(&j.idempotency_key).await?.context("stored")?;
    assert_eq!(got.state, EncodeJobState::Encoded);
    assert_eq!(got.card_number.as_deref(), Some("3141592653"));
    assert_eq!(got.desktop_device_id.as_deref(), Some("desk-2"));
    assert_eq!(got.encoded_at, Some(at(5)));
    ensure!(!format!("{got:?}").contains("3141592653"), "Debug redacts");
    assert_eq!(r.encode_jobs_of_credential("key_a").await?.len(), 1);
    r.commit().await?;
    assert_eq!(
        b.count_where(
            "encode_jobs",
            tenant,
            "card_number_ciphertext IS NOT NULL AND card_number_kms_version IS NOT NULL"
        )
        .await?,
        1,
        "the card number is stored encrypted"
    );
    // a late failure does not undo the card
    let mut tx = store.begin(tenant, None).await?;
    tx.record_encode_result(
        &j.idempotency_key,
        &EncodeResult::Failed {
            failure: "encoder_error".into(),
        },
        at(6),
    )
    .await?;
    assert_eq!(
        tx.encode_job(&j.idempotency_key)
            .await?
            .context("stored")?
            .state,
        EncodeJobState::Encoded
    );
    tx.commit().await?;
    let mut theirs = store.read(TenantId::generate()).await?;
    assert_eq!(theirs.encode_job(&j.idempotency_key).await?, None);
    let mut foreign = job(TenantId::generate(), "k", "key_x", &["1"]);
    foreign.tenant_id = TenantId::generate();
    let mut tx = store.begin(tenant, None).await?;
    ensure!(
        matches!(
            tx.start_encode_job(&foreign).await,
            Err(StoreError::Constraint(_))
        ),
        "a job of another tenant is refused"
    );
    Ok(())
}

/// The ledger: a live card is listed at each door it opens; a moved window's new card
/// replaces the old one; a revoke cancels the credential's cards (and a card encoded after
/// the cancel stays void); an unsuspended credential's cancelled card is restored.
pub async fn the_card_ledger_lists_replaces_cancels_and_restores(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let old = job(tenant, "wg:key_b:1-2", "key_b", &["501", "502"]);
    let mut newer = job(tenant, "wg:key_b:1-3", "key_b", &["501", "502"]);
    newer.valid_until = day(3);
    let other = job(tenant, "wg:key_c:1-2", "key_c", &["503"]);
    let mut tx = store.begin(tenant, None).await?;
    for j in [&old, &other] {
        tx.start_encode_job(j).await?;
        tx.record_encode_result(&j.idempotency_key, &encoded("1000000001", "desk-1"), at(1))
            .await?;
    }
    let door = DeviceRef::new("501");
    let at_501 = tx
        .live_cards_at(&property(), VendorCode::GenericWiegand, &door)
        .await?;
    assert_eq!(at_501.len(), 1);
    assert_eq!(at_501[0].credential_id, "key_b");
    ensure!(tx
        .live_cards_at(&property(), VendorCode::Ttlock, &door)
        .await?
        .is_empty());
    tx.start_encode_job(&newer).await?;
    tx.record_encode_result(
        &newer.idempotency_key,
        &encoded("1000000002", "desk-1"),
        at(2),
    )
    .await?;
    assert_eq!(
        tx.replace_cards_of_credential("key_b", &newer.idempotency_key, at(2))
            .await?,
        1
    );
    let at_502 = tx
        .live_cards_at(
            &property(),
            VendorCode::GenericWiegand,
            &DeviceRef::new("502"),
        )
        .await?;
    assert_eq!(at_502.len(), 1);
    assert_eq!(
        at_502[0].valid_until,
        day(3),
        "the new window is the live card"
    );
    assert_eq!(
        tx.encode_job(&old.idempotency_key)
            .await?
            .context("old")?
            .state,
        EncodeJobState::Replaced
    );
    assert_eq!(tx.cancel_cards_of_credential("key_b", at(3)).await?, 1);
    ensure!(tx
        .live_cards_at(&property(), VendorCode::GenericWiegand, &door)
        .await?
        .is_empty());
    // a card encoded after the cancel stays void
    let late = job(tenant, "wg:key_d:1-2", "key_d", &["504"]);
    tx.start_encode_job(&late).await?;
    tx.cancel_cards_of_credential("key_d", at(4)).await?;
    tx.record_encode_result(
        &late.idempotency_key,
        &encoded("1000000004", "desk-1"),
        at(5),
    )
    .await?;
    assert_eq!(
        tx.encode_job(&late.idempotency_key)
            .await?
            .context("late")?
            .state,
        EncodeJobState::Cancelled
    );
    // restored when the credential is wanted at the door again
    ensure!(tx.restore_encode_job(&newer.idempotency_key, at(6)).await?);
    ensure!(
        !tx.restore_encode_job(&other.idempotency_key, at(6)).await?,
        "not cancelled"
    );
    assert_eq!(
        tx.live_cards_at(&property(), VendorCode::GenericWiegand, &door)
            .await?
            .len(),
        1
    );
    tx.commit().await?;
    Ok(())
}
