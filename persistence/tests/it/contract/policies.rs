//! `ReadOnlyPolicyTable`/`PolicyTable`: each property's KeyKindPolicy (K-1, K-2).

use super::prelude::*;

/// Key-kind policies: one per (tenant, property); an upsert replaces the fields and keeps
/// the stored id; K-1 (non-empty preferred order) and K-2 (≤ 720 hours) are enforced.
pub async fn policy_upsert_round_trips_keeps_id_and_enforces_k1_k2(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    assert_eq!(store.get_policy(tenant, &property()).await?, None);
    let p1 = policy(tenant);
    store.upsert_policy(&p1).await?;
    assert_eq!(
        store.get_policy(tenant, &property()).await?,
        Some(p1.clone())
    );

    let mut p2 = policy(tenant);
    p2.preferred_order = vec!["rfid_card".into()];
    p2.fallback_chain = vec![];
    p2.max_valid_until_extension_hours = 720;
    p2.id_verify_required_for = vec![];
    p2.no_show_suspend_after_hours = 6;
    p2.allow_offline_issuance_kinds = vec!["pin_code".into()];
    p2.updated_at = at(100);
    store.upsert_policy(&p2).await?;
    let mut want = p2.clone();
    want.id = p1.id.clone();
    assert_eq!(
        store.get_policy(tenant, &property()).await?,
        Some(want.clone())
    );

    for (what, bad) in [
        ("K-1 empty preferred order", {
            let mut p = p2.clone();
            p.preferred_order.clear();
            p
        }),
        ("K-2 over 720 hours", {
            let mut p = p2.clone();
            p.max_valid_until_extension_hours = 721;
            p
        }),
    ] {
        let res = store.upsert_policy(&bad).await;
        ensure!(
            matches!(res, Err(StoreError::Constraint(_))),
            "{what}: {res:?}"
        );
    }
    assert_eq!(store.get_policy(tenant, &property()).await?, Some(want));

    assert_eq!(
        store.get_policy(TenantId::generate(), &property()).await?,
        None
    );
    assert_eq!(
        store
            .get_policy(tenant, &lockstep_domain::PropertyId::parse("prop-2")?)
            .await?,
        None
    );
    Ok(())
}

/// K-1, K-2: `upsert_policy` and `get_policy` in one transaction; a policy of another tenant
/// is refused; the schema's refusal leaves the stored policy as it was.
pub async fn policy_is_upserted_and_read_in_one_tx(b: &Backend) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let mut tx = store.begin(tenant, None).await?;
    assert_eq!(tx.get_policy(&property()).await?, None);
    let p = policy(tenant);
    tx.upsert_policy(&p).await?;
    assert_eq!(tx.get_policy(&property()).await?, Some(p.clone()));
    let res = tx.upsert_policy(&policy(TenantId::generate())).await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "a policy of another tenant: {res:?}"
    );
    tx.commit().await?;
    assert_eq!(
        store.read(tenant).await?.get_policy(&property()).await?,
        Some(p.clone())
    );
    let mut tx = store.begin(tenant, None).await?;
    let mut bad = p.clone();
    bad.max_valid_until_extension_hours = 721;
    let res = tx.upsert_policy(&bad).await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "K-2: {res:?}"
    );
    drop(tx);
    assert_eq!(
        store.read(tenant).await?.get_policy(&property()).await?,
        Some(p)
    );
    Ok(())
}
