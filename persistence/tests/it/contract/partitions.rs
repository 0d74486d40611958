//! `ReadOnlyPartitionTable`/`PartitionTable`: partition epochs and the fence every write
//! of a partition carries (DESIGN §4).

use super::prelude::*;

/// DESIGN §4: once another node takes the partition, commits and intakes under the old
/// epoch fail with `Fenced` and change nothing.
pub async fn commit_with_old_fence_is_fenced_after_partition_is_taken(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let p = random_partition();
    let f1 = store.take_partition(p, "node-a", t0()).await?;
    assert_eq!(f1.partition, p);

    let mut ok = UnitOfWork::new(tenant, Some(f1), t0());
    ok.saga = Some(("s".into(), serde_json::json!(1)));
    store.commit(ok).await?;
    assert_eq!(
        store
            .intake(&intake_msg(tenant, "s", p, t0()), Some(f1))
            .await?,
        IntakeOutcome::Accepted
    );

    let f2 = store.take_partition(p, "node-b", at(1)).await?;
    assert_eq!(f2.epoch, f1.epoch + 1);

    let mut stale = UnitOfWork::new(tenant, Some(f1), at(2));
    stale.saga = Some(("s".into(), serde_json::json!(2)));
    let err = store.commit(stale).await.expect_err("old fence");
    ensure!(matches!(err, StoreError::Fenced), "got {err:?}");
    assert_eq!(
        store.load_saga(tenant, "s").await?,
        Some(serde_json::json!(1))
    );
    let err = store
        .intake(&intake_msg(tenant, "s", p, at(2)), Some(f1))
        .await
        .expect_err("old fence");
    ensure!(matches!(err, StoreError::Fenced), "got {err:?}");
    assert_eq!(b.count("mailbox", tenant).await?, 1);

    // A fence for a partition nobody took is fenced too.
    let never = lockstep_persistence::Fence {
        partition: random_partition(),
        epoch: 1,
    };
    let err = store
        .commit(UnitOfWork::new(tenant, Some(never), at(2)))
        .await
        .expect_err("untaken partition");
    ensure!(matches!(err, StoreError::Fenced), "got {err:?}");

    let mut fresh = UnitOfWork::new(tenant, Some(f2), at(3));
    fresh.saga = Some(("s".into(), serde_json::json!(3)));
    store.commit(fresh).await?;
    assert_eq!(
        store.load_saga(tenant, "s").await?,
        Some(serde_json::json!(3))
    );
    Ok(())
}

/// DESIGN §4 on the tables: `take_partition` bumps the epoch and `current_fence` reads it
/// (`None` for a partition nobody took); `Storage::begin` with the current fence opens,
/// with an older one it is `Fenced`.
pub async fn taking_a_partition_moves_its_fence_and_begin_checks_it(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let p = random_partition();
    let mut w = store.worker().await?;
    assert_eq!(w.current_fence(p).await?, None);
    let f1 = w.take_partition(p, "node-a", t0()).await?;
    assert_eq!(w.current_fence(p).await?, Some(f1));
    w.commit().await?;
    store.begin(tenant, Some(f1)).await?.commit().await?;

    let mut w = store.worker().await?;
    let f2 = w.take_partition(p, "node-b", at(1)).await?;
    assert_eq!((f2.partition, f2.epoch), (p, f1.epoch + 1));
    w.commit().await?;
    let mut r = store.worker_read().await?;
    assert_eq!(r.current_fence(p).await?, Some(f2));
    r.commit().await?;
    let res = store.begin(tenant, Some(f1)).await;
    ensure!(matches!(res, Err(StoreError::Fenced)), "old fence: {res:?}");
    store.begin(tenant, Some(f2)).await?.rollback().await?;
    Ok(())
}
