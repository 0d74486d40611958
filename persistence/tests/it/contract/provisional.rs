//! `ReadOnlyProvisionalTable`/`ProvisionalTable`: the reconciler's verdicts on provisional
//! credentials minted offline (spec `003` §5, I-7, O-2).

use super::prelude::*;

pub fn provisional(
    tenant: TenantId,
    certificate: &str,
    id: &str,
    verdict: ProvisionalVerdict,
) -> ProvisionalRecord {
    ProvisionalRecord {
        id: format!("prv_{}", ulid::Ulid::new()),
        tenant_id: tenant,
        certificate_id: certificate.into(),
        provisional_id: id.into(),
        property_id: property(),
        desktop_device_id: "desk-1".into(),
        kind: "rfid_card".into(),
        reservation_id: Some("rsv_1".into()),
        room_ids: vec!["rmu_101".into()],
        valid_from: day(1),
        valid_until: day(2),
        minted_at: t0(),
        card_number: Some("2718281828".into()),
        signature: "c2ln".into(),
        verdict,
        reason: (verdict != ProvisionalVerdict::Valid).then(|| "window_over_48h".into()),
        credential_id: Some("key_01J00000000000000000000001".into()),
        handoff_message_id: None,
        verified_at: at(10),
        reissue_flagged_at: None,
        reissue_message_id: None,
    }
}

/// A verdict is stored once (a resent item keeps the first), read back with its card
/// number (encrypted at rest), its hand-off recorded; another tenant sees none of it.
pub async fn a_provisional_verdict_is_final_and_keeps_its_handoff(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let cert = "oki_01J00000000000000000000010";
    let p = provisional(tenant, cert, "p-1", ProvisionalVerdict::Valid);
    let mut tx = store.begin(tenant, None).await?;
    ensure!(tx.record_provisional(&p).await?);
    let mut resent = provisional(tenant, cert, "p-1", ProvisionalVerdict::Forged);
    resent.card_number = None;
    ensure!(
        !tx.record_provisional(&resent).await?,
        "the first verdict stays"
    );
    ensure!(tx.set_provisional_handoff(cert, "p-1", "prov-1").await?);
    ensure!(!tx.set_provisional_handoff(cert, "p-404", "x").await?);
    tx.commit().await?;
    let mut r = store.read(tenant).await?;
    let got = r.provisional(cert, "p-1").await?.context("stored")?;
    assert_eq!(got.verdict, ProvisionalVerdict::Valid);
    assert_eq!(got.card_number.as_deref(), Some("2718281828"));
    assert_eq!(got.handoff_message_id.as_deref(), Some("prov-1"));
    assert_eq!(got.room_ids, vec!["rmu_101".to_owned()]);
    ensure!(!format!("{got:?}").contains("2718281828"), "Debug redacts");
    r.commit().await?;
    assert_eq!(
        b.count_where(
            "provisional_credentials",
            tenant,
            "card_number_ciphertext IS NOT NULL"
        )
        .await?,
        1
    );
    let mut theirs = store.read(TenantId::generate()).await?;
    assert_eq!(theirs.provisional(cert, "p-1").await?, None);
    Ok(())
}

/// O-2: revoking a certificate flags each valid item minted under it once (invalid and
/// forged ones are being revoked already), and the re-issue hand-off is recorded.
pub async fn o2_a_revoked_certificate_flags_its_valid_items_once(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let cert = "oki_01J00000000000000000000011";
    let mut tx = store.begin(tenant, None).await?;
    for (id, v) in [
        ("v-1", ProvisionalVerdict::Valid),
        ("v-2", ProvisionalVerdict::Valid),
        ("i-1", ProvisionalVerdict::Invalid),
        ("f-1", ProvisionalVerdict::Forged),
    ] {
        tx.record_provisional(&provisional(tenant, cert, id, v))
            .await?;
    }
    tx.record_provisional(&provisional(
        tenant,
        "oki_01J00000000000000000000012",
        "v-9",
        ProvisionalVerdict::Valid,
    ))
    .await?;
    let flagged = tx.flag_provisionals_for_reissue(cert, at(100)).await?;
    let mut ids: Vec<_> = flagged.iter().map(|p| p.provisional_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, vec!["v-1".to_owned(), "v-2".to_owned()]);
    ensure!(flagged
        .iter()
        .all(|p| p.reissue_flagged_at == Some(at(100))));
    ensure!(
        tx.flag_provisionals_for_reissue(cert, at(200))
            .await?
            .is_empty(),
        "flagged once"
    );
    ensure!(
        tx.set_provisional_reissue_handoff(cert, "v-1", "reissue-1")
            .await?
    );
    tx.commit().await?;
    let mut r = store.read(tenant).await?;
    let all = r.provisionals_of_certificate(cert).await?;
    assert_eq!(all.len(), 4);
    let v1 = all
        .iter()
        .find(|p| p.provisional_id == "v-1")
        .context("v-1")?;
    assert_eq!(v1.reissue_flagged_at, Some(at(100)));
    assert_eq!(v1.reissue_message_id.as_deref(), Some("reissue-1"));
    ensure!(all
        .iter()
        .filter(|p| p.verdict != ProvisionalVerdict::Valid)
        .all(|p| p.reissue_flagged_at.is_none()));
    Ok(())
}
