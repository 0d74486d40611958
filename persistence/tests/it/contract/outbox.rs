//! `OutboxTable` (rows written with a step) and the publisher's
//! `ReadOnlyOutboxPublisherTable`/`OutboxPublisherTable` on the worker path (DESIGN §3.6).

use super::prelude::*;

/// DESIGN §3.6: a row stays unpublished until `mark_published`.
pub async fn mark_published_removes_row_from_unpublished(b: &Backend) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let o1 = outbox_row(tenant, "agg-1", t0());
    let o2 = outbox_row(tenant, "agg-1", at(1));
    let mut uow = UnitOfWork::new(tenant, None, t0());
    uow.outbox.extend([o1.clone(), o2.clone()]);
    store.commit(uow).await?;

    let mine = |rows: Vec<lockstep_persistence::OutboxRow>| -> Vec<String> {
        rows.into_iter()
            .filter(|r| r.tenant_id == tenant)
            .map(|r| r.id)
            .collect()
    };
    // Not due before it was created.
    assert!(!mine(store.unpublished(at(-1), 100_000).await?).contains(&o1.id));
    assert_eq!(
        mine(store.unpublished(at(2), 100_000).await?),
        vec![o1.id.clone(), o2.id.clone()]
    );
    let (lag, oldest) = store.outbox_lag().await?;
    assert!(lag >= 2 && oldest.is_some());

    store
        .mark_published(std::slice::from_ref(&o1.id), at(3))
        .await?;
    assert_eq!(
        mine(store.unpublished(at(4), 100_000).await?),
        vec![o2.id.clone()]
    );
    // Publishing again is harmless.
    store
        .mark_published(&[o1.id.clone(), o2.id.clone()], at(5))
        .await?;
    store.mark_published(&[], at(5)).await?;
    assert!(mine(store.unpublished(at(6), 100_000).await?).is_empty());
    Ok(())
}

/// A failed publish counts the attempt and defers the row to its next attempt time.
pub async fn mark_publish_failed_defers_the_row(b: &Backend) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let o = outbox_row(tenant, "agg-2", t0());
    let mut uow = UnitOfWork::new(tenant, None, t0());
    uow.outbox.push(o.clone());
    store.commit(uow).await?;

    store
        .mark_publish_failed(&o.id, "broker nack", at(60))
        .await?;
    let find = |rows: Vec<lockstep_persistence::OutboxRow>| rows.into_iter().find(|r| r.id == o.id);
    assert!(
        find(store.unpublished(at(59), 100_000).await?).is_none(),
        "deferred"
    );
    let row = find(store.unpublished(at(60), 100_000).await?).context("due again")?;
    assert_eq!(row.publish_attempts, 1);
    Ok(())
}

/// DESIGN §3.6: `append_outbox` writes rows under the transaction's tenant, due at their
/// creation; on the worker path `unpublished` hands them out in due order up to a limit,
/// `outbox_lag` counts them with the oldest creation time, `mark_published` takes them out.
pub async fn appended_rows_are_handed_out_in_due_order_under_their_tenant(
    b: &Backend,
) -> anyhow::Result<()> {
    // Totals are global: a database of its own.
    let b = b.isolated().await?;
    let store = b.store();
    let tenant = TenantId::generate();
    let o1 = outbox_row(tenant, "agg-1", t0());
    let mut o2 = outbox_row(tenant, "agg-1", at(1));
    o2.tenant_id = TenantId::generate();
    let mut tx = store.begin(tenant, None).await?;
    tx.append_outbox(&[o2.clone(), o1.clone()]).await?;
    tx.commit().await?;

    let mut w = store.worker_read().await?;
    let rows = w.unpublished(at(5), 10).await?;
    assert_eq!(
        rows.iter()
            .map(|r| (r.id.clone(), r.tenant_id))
            .collect::<Vec<_>>(),
        vec![(o1.id.clone(), tenant), (o2.id.clone(), tenant)],
        "due order, the transaction's tenant"
    );
    assert_eq!(
        (
            &rows[0].payload,
            &rows[0].envelope,
            rows[0].created_at,
            rows[0].publish_attempts
        ),
        (&o1.payload, &o1.envelope, t0(), 0)
    );
    assert_eq!(w.unpublished(at(5), 1).await?.len(), 1);
    assert!(w.unpublished(at(-1), 10).await?.is_empty(), "not due yet");
    assert_eq!(w.outbox_lag().await?, (2, Some(t0())));
    w.commit().await?;

    let mut w = store.worker().await?;
    w.mark_published(std::slice::from_ref(&o1.id), at(6))
        .await?;
    assert_eq!(w.outbox_lag().await?, (1, Some(at(1))));
    w.commit().await?;
    Ok(())
}

/// A row the broker returned as unroutable is kept with no attempt due
/// (`mark_publish_failed`); `unroutable_topics` lists such rows by topic and
/// `release_unroutable` makes a topic's rows due again, oldest first, up to a limit.
pub async fn unroutable_rows_are_listed_by_topic_and_released_oldest_first(
    b: &Backend,
) -> anyhow::Result<()> {
    let b = b.isolated().await?;
    let store = b.store();
    let tenant = TenantId::generate();
    let mut rows = Vec::new();
    for (i, topic) in ["x.v1", "x.v1", "y.v1"].into_iter().enumerate() {
        let mut o = outbox_row(tenant, "agg-u", at(i as i64));
        o.topic = topic.into();
        rows.push(o);
    }
    let mut tx = store.begin(tenant, None).await?;
    tx.append_outbox(&rows).await?;
    tx.commit().await?;
    let never = day(3650);
    let mut w = store.worker().await?;
    for o in &rows {
        w.mark_publish_failed(&o.id, "unroutable", never).await?;
    }
    assert_eq!(
        w.unroutable_topics().await?,
        vec![("x.v1".to_owned(), 2), ("y.v1".to_owned(), 1)]
    );
    assert!(w.unpublished(day(1), 10).await?.is_empty(), "none due");
    assert_eq!(w.release_unroutable("x.v1", at(10), Some(1)).await?, 1);
    let due = w.unpublished(at(10), 10).await?;
    assert_eq!(
        due.iter()
            .map(|r| (r.id.clone(), r.publish_attempts))
            .collect::<Vec<_>>(),
        vec![(rows[0].id.clone(), 1)],
        "the oldest first, its failed attempt counted"
    );
    assert_eq!(w.release_unroutable("x.v1", at(11), None).await?, 2);
    assert_eq!(w.release_unroutable("z.v1", at(11), None).await?, 0);
    w.commit().await?;
    Ok(())
}

/// DESIGN §3.6 with several nodes: a claim hands out due rows in due order and leases them
/// (not due again until the lease ends); a second publisher claiming at the same time gets
/// none of the first one's rows (Postgres: it skips the rows the open claim locks;
/// SQLite: its single writer makes the second claim wait, and it finds them leased).
pub async fn claimed_rows_go_to_one_publisher_until_their_lease_ends(
    b: &Backend,
) -> anyhow::Result<()> {
    let b = b.isolated().await?;
    let store = b.store();
    let tenant = TenantId::generate();
    let rows: Vec<_> = (0..4).map(|i| outbox_row(tenant, "agg-c", at(i))).collect();
    let mut tx = store.begin(tenant, None).await?;
    tx.append_outbox(&rows).await?;
    tx.commit().await?;
    let ids = |rs: &[lockstep_persistence::OutboxRow]| -> Vec<String> {
        rs.iter().map(|r| r.id.clone()).collect()
    };

    let lease = at(100);
    let mut first = store.worker().await?;
    let claimed = first.claim_unpublished(at(10), lease, 3).await?;
    assert_eq!(
        ids(&claimed),
        ids(&rows[..3]),
        "due order, at most the limit"
    );
    if matches!(b, Backend::Pg(_)) {
        // while the first claim is open, a second one skips its rows
        let mut second = store.worker().await?;
        let other = second.claim_unpublished(at(10), lease, 10).await?;
        assert_eq!(ids(&other), ids(&rows[3..]), "only the row nobody holds");
        second.rollback().await?;
    }
    first.commit().await?;

    let mut w = store.worker().await?;
    let again = w.claim_unpublished(at(10), lease, 10).await?;
    assert_eq!(ids(&again), ids(&rows[3..]), "leased rows are not due");
    w.commit().await?;
    let mut r = store.worker_read().await?;
    assert!(r.unpublished(at(99), 10).await?.is_empty(), "all leased");
    let mut due = ids(&r.unpublished(lease, 10).await?);
    let mut all = ids(&rows);
    due.sort();
    all.sort();
    assert_eq!(due, all, "due again when the lease ends");
    r.commit().await?;
    // a published row is never claimed again: marked in the transaction of the next
    // claim, it is not among the rows that claim takes
    let mut left = ids(&store
        .mark_published_then_claim(&ids(&rows[..1]), at(200), at(300), 10)
        .await?);
    let mut rest = ids(&rows[1..]);
    left.sort();
    rest.sort();
    assert_eq!(left, rest);
    Ok(())
}
