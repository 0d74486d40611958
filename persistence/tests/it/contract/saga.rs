//! `ReadOnlySagaTable`/`SagaTable`: each saga subject's state.

use super::prelude::*;

/// `put_saga` creates then replaces a subject's state; `load_saga` reads it in the
/// writing transaction and after the commit, per tenant.
pub async fn saga_state_is_put_replaced_and_loaded_per_tenant(b: &Backend) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let subject = subject_of(&reservation());
    let mut tx = store.begin(tenant, None).await?;
    assert_eq!(tx.load_saga(&subject).await?, None);
    tx.put_saga(&subject, &serde_json::json!({ "revision": 1 }), t0())
        .await?;
    tx.put_saga(
        &subject,
        &serde_json::json!({ "revision": 2, "keys": ["k1"] }),
        at(1),
    )
    .await?;
    assert_eq!(
        tx.load_saga(&subject).await?,
        Some(serde_json::json!({ "revision": 2, "keys": ["k1"] }))
    );
    tx.commit().await?;
    assert_eq!(
        store.read(tenant).await?.load_saga(&subject).await?,
        Some(serde_json::json!({ "revision": 2, "keys": ["k1"] }))
    );
    assert_eq!(
        store
            .read(TenantId::generate())
            .await?
            .load_saga(&subject)
            .await?,
        None
    );
    Ok(())
}
