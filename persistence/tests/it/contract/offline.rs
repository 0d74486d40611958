//! `ReadOnlyOfflineCertTable`/`OfflineCertTable`: offline-issuance certificates (O-1, O-3).

use super::prelude::*;

/// Spec `003` §5 / `004` §3: an offline-issuance certificate round-trips, its revocation
/// is stored, O-1 and O-3 hold in the schema too, and another tenant sees none of it.
pub async fn offline_certificates_round_trip_and_stay_in_their_tenant(
    b: &Backend,
) -> anyhow::Result<()> {
    use lockstep_domain::{KeyCredentialKind, OfflineIssuance, OfflineRevokeReason};
    let store = b.store();
    let tenant = TenantId::generate();
    let mut cert = OfflineIssuance::issue(
        tenant,
        property(),
        "desk-1",
        "MCowBQYDK2VwAyEA",
        vec![KeyCredentialKind::PinCode, KeyCredentialKind::RfidCard],
        &[KeyCredentialKind::PinCode, KeyCredentialKind::RfidCard],
        24,
        t0(),
    )?;
    store.save_offline_cert(&cert).await?;
    assert_eq!(
        store.offline_cert(tenant, cert.id.as_str()).await?,
        Some(cert.clone())
    );
    cert.revoke(OfflineRevokeReason::Rotation, at(3600));
    store.save_offline_cert(&cert).await?;
    let got = store
        .offline_cert(tenant, cert.id.as_str())
        .await?
        .context("stored")?;
    assert_eq!(got.revoke_reason, Some(OfflineRevokeReason::Rotation));
    assert_eq!(got.revoked_at, Some(at(3600)));
    assert_eq!(
        store
            .offline_cert(TenantId::generate(), cert.id.as_str())
            .await?,
        None
    );
    // the schema refuses a window over 48 hours (O-3) and a lifetime other than 90 days
    let mut long = OfflineIssuance::issue(
        tenant,
        property(),
        "desk-2",
        "k",
        vec![KeyCredentialKind::PinCode],
        &[KeyCredentialKind::PinCode],
        48,
        t0(),
    )?;
    long.max_valid_window_hours = 72;
    assert!(
        store.save_offline_cert(&long).await.is_err(),
        "O-3 in the schema"
    );
    let mut short = OfflineIssuance::issue(
        tenant,
        property(),
        "desk-3",
        "k",
        vec![KeyCredentialKind::PinCode],
        &[KeyCredentialKind::PinCode],
        48,
        t0(),
    )?;
    short.expires_at = short.issued_at + chrono::Duration::days(30);
    assert!(
        store.save_offline_cert(&short).await.is_err(),
        "O-1 in the schema"
    );
    Ok(())
}

/// O-1 on the tables: `save_offline_cert` stores a certificate and then its revocation,
/// `offline_cert` reads it back in the writing transaction, `offline_certs_expiring`
/// counts the unrevoked ones expiring before an instant; a certificate of another tenant
/// is refused.
pub async fn offline_certificates_are_saved_read_and_counted_by_expiry(
    b: &Backend,
) -> anyhow::Result<()> {
    use lockstep_domain::{KeyCredentialKind, OfflineIssuance, OfflineRevokeReason};
    let store = b.store();
    let tenant = TenantId::generate();
    let issue = |desk: &str, at_: lockstep_domain::Timestamp| {
        OfflineIssuance::issue(
            tenant,
            property(),
            desk,
            "MCowBQYDK2VwAyEA",
            vec![KeyCredentialKind::PinCode],
            &[KeyCredentialKind::PinCode],
            24,
            at_,
        )
    };
    let early = issue("desk-a", t0())?;
    let late = issue("desk-b", day(10))?;
    let mut tx = store.begin(tenant, None).await?;
    tx.save_offline_cert(&early).await?;
    tx.save_offline_cert(&late).await?;
    assert_eq!(
        tx.offline_cert(early.id.as_str()).await?,
        Some(early.clone())
    );
    let between = early.expires_at + chrono::Duration::days(1);
    assert_eq!(tx.offline_certs_expiring(between).await?, 1);
    assert_eq!(
        tx.offline_certs_expiring(late.expires_at + chrono::Duration::days(1))
            .await?,
        2
    );
    assert_eq!(tx.offline_certs_expiring(t0()).await?, 0);
    let mut revoked = early.clone();
    revoked.revoke(OfflineRevokeReason::Rotation, at(60));
    tx.save_offline_cert(&revoked).await?;
    assert_eq!(
        tx.offline_certs_expiring(between).await?,
        0,
        "revoked ones are not due"
    );
    let mut foreign = issue("desk-c", t0())?;
    foreign.tenant_id = TenantId::generate();
    let res = tx.save_offline_cert(&foreign).await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "a certificate of another tenant: {res:?}"
    );
    tx.commit().await?;
    assert_eq!(
        store
            .read(tenant)
            .await?
            .offline_cert(early.id.as_str())
            .await?,
        Some(revoked)
    );
    Ok(())
}

/// Rotation on the tables: a renewed certificate is stored with the one it renews, and
/// `offline_cert_successors` finds every renewal of a certificate, oldest first, in its
/// tenant only.
pub async fn a_renewed_certificate_names_the_one_it_renews(b: &Backend) -> anyhow::Result<()> {
    use lockstep_domain::{KeyCredentialKind, OfflineIssuance, OfflineRevokeReason};
    let store = b.store();
    let tenant = TenantId::generate();
    let old = OfflineIssuance::issue(
        tenant,
        property(),
        "desk-rot",
        "MCowBQYDK2VwAyEA",
        vec![KeyCredentialKind::RfidCard],
        &[KeyCredentialKind::RfidCard],
        48,
        t0(),
    )?;
    let due = old.rotation_due_at();
    let first = old
        .renew("Zmlyc3Qta2V5", due)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let second = old
        .renew("c2Vjb25kLWtleQ==", due + chrono::Duration::hours(1))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut tx = store.begin(tenant, None).await?;
    tx.save_offline_cert(&old).await?;
    tx.save_offline_cert(&second).await?;
    tx.save_offline_cert(&first).await?;
    assert_eq!(
        tx.offline_cert_successors(old.id.as_str()).await?,
        vec![first.clone(), second.clone()]
    );
    assert_eq!(tx.offline_cert_successors(first.id.as_str()).await?, vec![]);
    let mut rotated = old.clone();
    rotated.revoke(
        OfflineRevokeReason::Rotation,
        due + chrono::Duration::hours(2),
    );
    tx.save_offline_cert(&rotated).await?;
    tx.commit().await?;
    let mut r = store.read(tenant).await?;
    let got = r.offline_cert(first.id.as_str()).await?.context("stored")?;
    assert_eq!(got.replaces.as_ref(), Some(&old.id));
    assert_eq!(r.offline_cert(old.id.as_str()).await?, Some(rotated));
    r.commit().await?;
    let mut theirs = store.read(TenantId::generate()).await?;
    assert_eq!(
        theirs.offline_cert_successors(old.id.as_str()).await?,
        vec![]
    );
    Ok(())
}
