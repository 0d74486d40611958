//! `ReadOnlyUserTable`/`UserTable`: deactivated users.

use super::prelude::*;
use lockstep_domain::PropertyId;

/// A user's deactivation is kept, once, per tenant: a later shift start is refused by it.
pub async fn user_deactivation_is_recorded_once_per_tenant(b: &Backend) -> anyhow::Result<()> {
    let store = b.store();
    let (a, other) = (TenantId::generate(), TenantId::generate());
    assert_eq!(store.user_deactivated_at(a, "usr_1").await?, None);
    store.record_user_deactivated(a, "usr_1", t0()).await?;
    store.record_user_deactivated(a, "usr_1", day(1)).await?;
    assert_eq!(
        store.user_deactivated_at(a, "usr_1").await?,
        Some(t0()),
        "the first time is kept"
    );
    assert_eq!(
        store.user_deactivated_at(other, "usr_1").await?,
        None,
        "tenant scoped"
    );
    Ok(())
}

/// `record_user_deactivated` keeps the first time, read back by `user_deactivated_at` in
/// the writing transaction and after it.
pub async fn user_deactivation_is_written_and_read_in_one_tx(b: &Backend) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let mut tx = store.begin(tenant, None).await?;
    assert_eq!(tx.user_deactivated_at("usr_9").await?, None);
    tx.record_user_deactivated("usr_9", at(5)).await?;
    tx.record_user_deactivated("usr_9", at(9)).await?;
    assert_eq!(tx.user_deactivated_at("usr_9").await?, Some(at(5)));
    tx.commit().await?;
    assert_eq!(
        store
            .read(tenant)
            .await?
            .user_deactivated_at("usr_9")
            .await?,
        Some(at(5))
    );
    Ok(())
}

/// A property's deactivation is kept, once, per tenant and property, and is read back in
/// the writing transaction and after it: later confirmations there are refused by it.
pub async fn property_deactivation_is_recorded_once_per_tenant_and_property(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let (a, other) = (TenantId::generate(), TenantId::generate());
    let (p, q) = (
        PropertyId::parse("ppt_gone")?,
        PropertyId::parse("ppt_open")?,
    );
    assert_eq!(store.property_deactivated_at(a, &p).await?, None);
    store.record_property_deactivated(a, &p, t0()).await?;
    store.record_property_deactivated(a, &p, day(1)).await?;
    assert_eq!(
        store.property_deactivated_at(a, &p).await?,
        Some(t0()),
        "the first time is kept"
    );
    assert_eq!(
        store.property_deactivated_at(a, &q).await?,
        None,
        "per property"
    );
    assert_eq!(
        store.property_deactivated_at(other, &p).await?,
        None,
        "tenant scoped"
    );
    let mut tx = store.begin(other, None).await?;
    tx.record_property_deactivated(&q, at(5)).await?;
    assert_eq!(tx.property_deactivated_at(&q).await?, Some(at(5)));
    tx.commit().await?;
    assert_eq!(
        store.read(other).await?.property_deactivated_at(&q).await?,
        Some(at(5))
    );
    Ok(())
}
