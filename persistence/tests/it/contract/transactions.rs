//! `Storage` and its transactions: what a `Tx` makes visible and when, and the store's
//! lifecycle.

use super::prelude::*;

/// A `Tx`'s writes are its own until `commit`: other transactions see none of them before,
/// all of them after; `rollback` and dropping the transaction discard them all.
pub async fn uncommitted_writes_are_private_and_rollback_or_drop_discards_them(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let saga = |n: i64| serde_json::json!({ "n": n });
    let loaded = |subject: &'static str| async move {
        let mut rtx = store.read(tenant).await?;
        let v = rtx.load_saga(subject).await?;
        rtx.commit().await?;
        anyhow::Ok(v)
    };

    let mut tx = store.begin(tenant, None).await?;
    tx.put_saga("s-commit", &saga(1), t0()).await?;
    tx.append_outbox(&[outbox_row(tenant, "agg-tx", t0())])
        .await?;
    assert_eq!(tx.tenant(), tenant);
    assert_eq!(loaded("s-commit").await?, None, "private before the commit");
    tx.commit().await?;
    assert_eq!(loaded("s-commit").await?, Some(saga(1)));
    assert_eq!(b.count("outbox", tenant).await?, 1);

    let mut tx = store.begin(tenant, None).await?;
    tx.put_saga("s-rollback", &saga(2), t0()).await?;
    tx.rollback().await?;
    assert_eq!(loaded("s-rollback").await?, None);

    {
        let mut tx = store.begin(tenant, None).await?;
        tx.put_saga("s-drop", &saga(3), t0()).await?;
    }
    assert_eq!(loaded("s-drop").await?, None, "dropped without a commit");
    // the connection dropped with its transaction is usable again
    let mut tx = store.begin(tenant, None).await?;
    tx.put_saga("s-after", &saga(4), t0()).await?;
    tx.commit().await?;
    assert_eq!(loaded("s-after").await?, Some(saga(4)));
    Ok(())
}

/// `ping` answers while the store is open; after `close` every call fails.
pub async fn ping_answers_until_the_store_is_closed(b: &Backend) -> anyhow::Result<()> {
    let store = b.twin_stores().await?[0].clone();
    store.ping().await?;
    store.read(TenantId::generate()).await?.commit().await?;
    store.close().await;
    ensure!(store.ping().await.is_err(), "ping after close");
    ensure!(
        store.begin(TenantId::generate(), None).await.is_err(),
        "begin after close"
    );
    Ok(())
}

/// A saga step as the engine will write one: it names the tables it touches, reads and
/// writes in one transaction, and runs in a spawned task on a store held as
/// `Arc<dyn Store>` (the futures are `Send`).
pub async fn a_step_names_its_tables_and_runs_in_one_tx_in_a_spawned_task(
    b: &Backend,
) -> anyhow::Result<()> {
    /// `requested → pending` with the PIN committed before the vendor call (DESIGN §3.4).
    async fn mark_pending(
        tx: &mut (impl CredentialTable + DoorTruthTable),
        id: &lockstep_domain::KeyCredentialId,
        device: &lockstep_domain::LockDeviceId,
        now: lockstep_domain::Timestamp,
    ) -> Result<(), StoreError> {
        let Some(c) = tx.get_credential(id).await? else {
            return Err(StoreError::Conflict {
                entity: "key_credentials",
            });
        };
        let mut s = c.snapshot();
        s.state = KeyCredentialState::Pending;
        s.version += 1;
        s.updated_at = now;
        tx.update_credential(&s, c.version()).await?;
        let mut w = door(id, device, Desired::Present, SyncState::Pending);
        w.pin = Some(lockstep_domain::Pin::parse("271828")?);
        tx.put_door_truth(&w, now, now).await
    }

    let store = b.twin_stores().await?[0].clone();
    let tenant = TenantId::generate();
    let reg = seed_registry(store.as_ref(), tenant).await?;
    let c = stay(&reg, &reservation(), &["r101"], day(0), day(1))?;
    store.commit(insert(c.snapshot(), t0())).await?;
    let (id, device) = (c.id().clone(), reg.devices[0].clone());
    let task = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tx = store.begin(tenant, None).await?;
            mark_pending(&mut tx, &id, &device, at(1)).await?;
            tx.commit().await
        })
    };
    task.await??;
    let mut rtx = store.read(tenant).await?;
    let got = rtx.get_credential(c.id()).await?.context("stored")?;
    assert_eq!(
        (got.state(), got.version()),
        (KeyCredentialState::Pending, 2)
    );
    let doors = rtx.credential_devices(c.id()).await?;
    assert_eq!(doors[0].pin.as_ref().map(|p| p.expose()), Some("271828"));
    Ok(())
}
