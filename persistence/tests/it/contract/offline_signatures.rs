//! `ReadOnlyOfflineCertSignatureTable`/`OfflineCertSignatureTable`: Lockstep's stored
//! signature of each offline-issuance certificate (issue 12).

use super::prelude::*;

/// A certificate's signature is stored beside it and read back with its key id; a
/// certificate without one (or unknown, or another tenant's) answers none.
pub async fn a_certificate_signature_is_stored_beside_it(b: &Backend) -> anyhow::Result<()> {
    use lockstep_domain::{KeyCredentialKind, OfflineIssuance};
    let store = b.store();
    let tenant = TenantId::generate();
    let cert = OfflineIssuance::issue(
        tenant,
        property(),
        "desk-sig",
        "MCowBQYDK2VwAyEA",
        vec![KeyCredentialKind::RfidCard],
        &[KeyCredentialKind::RfidCard],
        48,
        t0(),
    )?;
    let mut tx = store.begin(tenant, None).await?;
    tx.save_offline_cert(&cert).await?;
    assert_eq!(tx.offline_cert_signature(cert.id.as_str()).await?, None);
    ensure!(
        tx.set_offline_cert_signature(cert.id.as_str(), "c2lnbmF0dXJl", "offline-v1")
            .await?
    );
    ensure!(
        !tx.set_offline_cert_signature("oki_01J00000000000000000000099", "x", "k")
            .await?,
        "no such certificate"
    );
    tx.commit().await?;
    let mut r = store.read(tenant).await?;
    assert_eq!(
        r.offline_cert_signature(cert.id.as_str()).await?,
        Some(("c2lnbmF0dXJl".to_owned(), Some("offline-v1".to_owned())))
    );
    // the certificate itself reads as before
    assert_eq!(r.offline_cert(cert.id.as_str()).await?, Some(cert.clone()));
    r.commit().await?;
    let mut theirs = store.read(TenantId::generate()).await?;
    assert_eq!(theirs.offline_cert_signature(cert.id.as_str()).await?, None);
    Ok(())
}
