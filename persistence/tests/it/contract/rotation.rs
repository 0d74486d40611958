//! `KeyRotationTable`: re-encryption under a new key (spec `004` §5).

use super::prelude::*;

/// Issue 6, spec `004` §5: key rotation. A ring with the new key current and the old one
/// still listed reads what the old key wrote; `reencrypt` moves every PIN, vendor ref,
/// vendor device ref and adapter config to the new key; afterwards a ring without the old
/// key reads everything and the old ring reads nothing.
pub async fn key_rotation_reencrypts_every_secret_column(b: &Backend) -> anyhow::Result<()> {
    use lockstep_persistence::{Cipher, LocalKms};
    let store = b.store();
    let tenant = TenantId::generate();
    let seeded = seed_everything(store, tenant).await?;
    let kms = LocalKms::default()
        .with_hex("test-v1", &"07".repeat(32))?
        .with_hex("test-v2", &"08".repeat(32))?;
    let rotated = b
        .with_cipher(Cipher::from_kms(
            &kms,
            "test-v2",
            &["test-v1", "test-v2"],
            "test-v1",
        )?)
        .await?;
    let before = rotated
        .credential_devices(tenant, seeded.credential.id())
        .await?;
    ensure!(
        before.iter().any(|d| d.pin.is_some()),
        "the seed stored a PIN"
    );
    let old_rows = |table: &'static str, cond: &'static str| async move {
        b.count_where(table, tenant, cond).await
    };
    ensure!(old_rows("key_credential_devices", "pin_kms_version = 'test-v1'").await? > 0);
    let mut total = 0;
    loop {
        let n = rotated.reencrypt(tenant, 2).await?;
        if n == 0 {
            break;
        }
        total += n;
    }
    ensure!(
        total >= 3,
        "devices, device refs and adapter configs moved: {total}"
    );
    for (table, cond) in [
        (
            "key_credential_devices",
            "pin_kms_version = 'test-v1' OR vendor_ref_kms_version = 'test-v1'",
        ),
        ("lock_devices", "vendor_device_ref_kms_version = 'test-v1'"),
        ("vendor_adapters", "config_kms_version = 'test-v1'"),
    ] {
        assert_eq!(
            old_rows(table, cond).await?,
            0,
            "{table} still under the old key"
        );
    }
    // the old key can go
    let new_only = b
        .with_cipher(Cipher::from_kms(&kms, "test-v2", &["test-v2"], "test-v1")?)
        .await?;
    let after = new_only
        .credential_devices(tenant, seeded.credential.id())
        .await?;
    assert_eq!(
        after
            .iter()
            .map(|d| d.pin.as_ref().map(|p| p.expose().to_owned()))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|d| d.pin.as_ref().map(|p| p.expose().to_owned()))
            .collect::<Vec<_>>(),
        "the same PINs"
    );
    assert!(
        store
            .credential_devices(tenant, seeded.credential.id())
            .await
            .is_err(),
        "the old ring cannot read the new values"
    );
    assert_eq!(rotated.reencrypt(tenant, 100).await?, 0, "nothing left");
    Ok(())
}

/// Spec `004` §5 on the tables: `reencrypt` in a transaction of a store whose ring has a
/// new current key moves the tenant's rows in batches of `limit` and leaves other tenants'
/// rows alone.
pub async fn reencrypt_moves_a_tenants_rows_in_batches_and_no_other_tenants(
    b: &Backend,
) -> anyhow::Result<()> {
    use lockstep_persistence::{Cipher, LocalKms};
    let store = b.store();
    let (tenant, other) = (TenantId::generate(), TenantId::generate());
    seed_everything(store, tenant).await?;
    seed_everything(store, other).await?;
    let kms = LocalKms::default()
        .with_hex("test-v1", &"07".repeat(32))?
        .with_hex("test-v2", &"08".repeat(32))?;
    let rotated = b
        .with_cipher(Cipher::from_kms(
            &kms,
            "test-v2",
            &["test-v1", "test-v2"],
            "test-v1",
        )?)
        .await?;
    let mut batches = Vec::new();
    loop {
        let mut tx = rotated.begin(tenant, None).await?;
        let n = tx.reencrypt(1).await?;
        tx.commit().await?;
        if n == 0 {
            break;
        }
        batches.push(n);
    }
    // the device rows (PINs and vendor refs) and each table with one secret column
    let tables = 1 + lockstep_persistence::context::single_secret_columns().len() as u64;
    ensure!(
        batches.iter().all(|n| *n <= tables),
        "at most `limit` rows of each of the {tables} tables: {batches:?}"
    );
    ensure!(
        batches.iter().sum::<u64>() >= 4,
        "device row, two device refs, adapter: {batches:?}"
    );
    assert_eq!(
        b.count_where(
            "lock_devices",
            tenant,
            "vendor_device_ref_kms_version = 'test-v1'"
        )
        .await?,
        0
    );
    assert_eq!(
        b.count_where(
            "lock_devices",
            other,
            "vendor_device_ref_kms_version = 'test-v1'"
        )
        .await?,
        2,
        "another tenant's rows stay"
    );
    Ok(())
}
