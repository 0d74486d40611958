//! `ReadOnlyVendorAccountTable`/`VendorAccountTable`: the shared rate-limit row of each
//! vendor account (DESIGN §6) and where adapters' secrets live (V-2).

use super::prelude::*;

/// DESIGN §6: the GCRA row of a vendor account. Slots are `interval` apart and never in the
/// past; a 429's hold pushes the next slot past it; accounts and tenants are independent.
pub async fn rate_slots_are_spaced_held_and_kept_per_tenant_account(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let (a, other) = (TenantId::generate(), TenantId::generate());
    let now = 1_800_000_000_000_000_i64;
    let every = 600_000; // 100 a minute
                         // three requests at once: the first goes now, the others one interval apart
    let mut slots = Vec::new();
    for _ in 0..3 {
        slots.push(
            store
                .reserve_rate_slot(a, "ttlock|x|app", now, every)
                .await?,
        );
    }
    assert_eq!(slots, vec![now, now + every, now + 2 * every]);
    // an idle account does not bank slots: after a long pause the next one is "now"
    let later = now + 3_600_000_000;
    assert_eq!(
        store
            .reserve_rate_slot(a, "ttlock|x|app", later, every)
            .await?,
        later
    );
    // Retry-After: nothing before the hold, then spacing again from it
    store
        .hold_rate_until(a, "ttlock|x|app", later + 30_000_000)
        .await?;
    assert_eq!(
        store
            .reserve_rate_slot(a, "ttlock|x|app", later + 1, every)
            .await?,
        later + 30_000_000
    );
    // a hold never pulls the account back
    store.hold_rate_until(a, "ttlock|x|app", later).await?;
    assert_eq!(
        store
            .reserve_rate_slot(a, "ttlock|x|app", later + 2, every)
            .await?,
        later + 30_000_000 + every
    );
    // another account, and the same account name of another tenant, start fresh
    assert_eq!(
        store.reserve_rate_slot(a, "kisi|y|key", now, every).await?,
        now
    );
    assert_eq!(
        store
            .reserve_rate_slot(other, "ttlock|x|app", now, every)
            .await?,
        now
    );
    Ok(())
}

/// Spec 003 §3 / 004 §3 (V-2, US-MEL-0081): one credential row per (tenant, property,
/// vendor, environment) with a pointer and a fingerprint; a new fingerprint is a rotation.
pub async fn vendor_credentials_record_pointers_and_detect_rotation(
    b: &Backend,
) -> anyhow::Result<()> {
    use lockstep_persistence::CredentialChange;
    let store = b.store();
    let tenant = TenantId::generate();
    let first = vendor_credential(tenant, "aa11", t0());
    assert_eq!(
        store.record_vendor_credential(&first).await?,
        CredentialChange::New
    );
    // the same secret again (another start, another check): nothing moves
    let again = vendor_credential(tenant, "aa11", day(1));
    assert_eq!(
        store.record_vendor_credential(&again).await?,
        CredentialChange::Unchanged
    );
    let read = |t| {
        let store = b.store();
        async move {
            store
                .vendor_credential(
                    t,
                    &property(),
                    lockstep_domain::VendorCode::Ttlock,
                    "sandbox",
                )
                .await
        }
    };
    let row = read(tenant).await?.expect("recorded");
    assert_eq!(row.id, first.id, "one row, its id kept");
    assert_eq!(row.updated_at, t0());
    // rotated
    let rotated = vendor_credential(tenant, "bb22", day(2));
    assert_eq!(
        store.record_vendor_credential(&rotated).await?,
        CredentialChange::Rotated
    );
    let row = read(tenant).await?.expect("recorded");
    assert_eq!((row.fingerprint.as_str(), row.updated_at), ("bb22", day(2)));
    assert_eq!(row.rotates_at, day(92));
    assert_eq!(row.id, first.id);
    assert_eq!(read(TenantId::generate()).await?, None, "tenant scoped");
    Ok(())
}

/// DESIGN §6, V-2 on the tables: `reserve_rate_slot` and `hold_rate_until` on one account
/// in one transaction; `record_vendor_credential` and `vendor_credential` (a record of
/// another tenant is refused).
pub async fn vendor_account_rows_are_written_and_read_in_one_tx(b: &Backend) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let now = 1_800_000_000_000_000_i64;
    let mut tx = store.begin(tenant, None).await?;
    assert_eq!(tx.reserve_rate_slot("salto|a|key", now, 1_000).await?, now);
    assert_eq!(
        tx.reserve_rate_slot("salto|a|key", now, 1_000).await?,
        now + 1_000
    );
    tx.hold_rate_until("salto|a|key", now + 60_000).await?;
    tx.hold_rate_until("salto|a|key", now).await?;
    assert_eq!(
        tx.reserve_rate_slot("salto|a|key", now + 1, 1_000).await?,
        now + 60_000
    );
    tx.hold_rate_until("salto|b|key", now + 5).await?;
    assert_eq!(
        tx.reserve_rate_slot("salto|b|key", now, 1_000).await?,
        now + 5,
        "a hold on a new account"
    );

    let rec = vendor_credential(tenant, "cc33", t0());
    assert_eq!(
        tx.record_vendor_credential(&rec).await?,
        lockstep_persistence::CredentialChange::New
    );
    let got = tx
        .vendor_credential(&property(), VendorCode::Ttlock, "sandbox")
        .await?;
    assert_eq!(got, Some(rec.clone()));
    assert_eq!(
        tx.vendor_credential(&property(), VendorCode::Ttlock, "production")
            .await?,
        None
    );
    let res = tx
        .record_vendor_credential(&vendor_credential(TenantId::generate(), "dd44", t0()))
        .await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "a record of another tenant: {res:?}"
    );
    tx.commit().await?;
    assert_eq!(
        store
            .read(tenant)
            .await?
            .vendor_credential(&property(), VendorCode::Ttlock, "sandbox")
            .await?,
        Some(rec)
    );
    Ok(())
}
