//! `InboxTable`: broker deliveries are stored once (DESIGN §3.1).

use super::prelude::*;

/// DESIGN §3.1: inbox dedupe on (message id, consumer); the mailbox gets the event once.
pub async fn intake_stores_once_and_rejects_duplicate_message_id(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let msg = intake_msg(tenant, "reservation:rsv-1", random_partition(), t0());
    assert_eq!(store.intake(&msg, None).await?, IntakeOutcome::Accepted);
    assert_eq!(store.intake(&msg, None).await?, IntakeOutcome::Duplicate);
    assert_eq!(b.count("inbox", tenant).await?, 1);
    assert_eq!(b.count("mailbox", tenant).await?, 1);

    // The same message for another consumer is a delivery of its own.
    let mut other = msg.clone();
    other.consumer = "lockstep.other".into();
    assert_eq!(store.intake(&other, None).await?, IntakeOutcome::Accepted);
    assert_eq!(b.count("mailbox", tenant).await?, 2);

    // The inbox key includes the tenant: another tenant's message with the same id is
    // not a duplicate (DESIGN §5: unique keys include tenant_id).
    let mut foreign = msg.clone();
    foreign.tenant_id = TenantId::generate();
    assert_eq!(store.intake(&foreign, None).await?, IntakeOutcome::Accepted);
    assert_eq!(b.count("mailbox", tenant).await?, 2);

    let entry = store
        .next_mailbox_entry(tenant, "reservation:rsv-1", t0())
        .await?
        .context("entry")?;
    assert_eq!(entry.tenant_id, tenant);
    assert_eq!(entry.property_id, property());
    assert_eq!(entry.partition, msg.partition);
    assert_eq!(entry.payload, msg.payload);
    assert_eq!(entry.due_at, t0());
    assert_eq!(entry.attempts, 0);
    assert_eq!(
        entry.kind,
        MailboxKind::Event {
            message_id: msg.message_id.clone(),
            topic: msg.topic.clone()
        }
    );
    Ok(())
}

/// DESIGN §3.1, §5: `insert_inbox` is true once per (tenant, message id, consumer), within
/// one transaction and across them; it enqueues nothing by itself; a transaction refuses a
/// message of another tenant.
pub async fn insert_inbox_is_true_once_per_tenant_message_and_consumer(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let msg = intake_msg(tenant, "reservation:rsv-inbox", random_partition(), t0());
    let mut tx = store.begin(tenant, None).await?;
    ensure!(tx.insert_inbox(&msg).await?, "first delivery");
    ensure!(
        !tx.insert_inbox(&msg).await?,
        "a redelivery in the same transaction"
    );
    let mut other = msg.clone();
    other.consumer = "lockstep.other".into();
    ensure!(tx.insert_inbox(&other).await?, "another consumer");
    tx.commit().await?;
    assert_eq!(b.count("inbox", tenant).await?, 2);
    assert_eq!(
        b.count("mailbox", tenant).await?,
        0,
        "the inbox enqueues nothing"
    );

    let mut tx = store.begin(tenant, None).await?;
    ensure!(
        !tx.insert_inbox(&msg).await?,
        "a redelivery after the commit"
    );
    tx.rollback().await?;

    let stranger = TenantId::generate();
    let mut theirs = msg.clone();
    theirs.tenant_id = stranger;
    let mut tx = store.begin(stranger, None).await?;
    ensure!(
        tx.insert_inbox(&theirs).await?,
        "another tenant's message with the same id is its own"
    );
    let res = tx.insert_inbox(&msg).await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "a message of another tenant: {res:?}"
    );
    Ok(())
}

/// Issue 11 (intake batching) with DESIGN §3.1: a batch is deduped message by message
/// (against the inbox and within itself), its outcomes come back in order, a fenced batch
/// stores nothing, and a batch of two tenants is refused whole.
pub async fn intake_batch_dedupes_each_message_in_one_transaction(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let p = random_partition();
    let stored = intake_msg(tenant, "reservation:rsv-b1", p, t0());
    assert_eq!(store.intake(&stored, None).await?, IntakeOutcome::Accepted);

    let fresh = intake_msg(tenant, "reservation:rsv-b2", p, t0());
    let other = intake_msg(tenant, "reservation:rsv-b3", p, t0());
    let batch = vec![fresh.clone(), stored.clone(), other.clone(), fresh.clone()];
    assert_eq!(
        store.intake_batch(&batch, None).await?,
        vec![
            IntakeOutcome::Accepted,
            IntakeOutcome::Duplicate,
            IntakeOutcome::Accepted,
            IntakeOutcome::Duplicate,
        ]
    );
    assert_eq!(b.count("inbox", tenant).await?, 3);
    assert_eq!(b.count("mailbox", tenant).await?, 3);
    for m in [&fresh, &other] {
        let entry = store
            .next_mailbox_entry(tenant, &m.subject, t0())
            .await?
            .context("entry")?;
        assert_eq!(
            entry.kind,
            MailboxKind::Event {
                message_id: m.message_id.clone(),
                topic: m.topic.clone()
            }
        );
    }
    assert!(store.intake_batch(&[], None).await?.is_empty());

    // an old fence: nothing of the batch is stored
    let f1 = store.take_partition(p, "node-a", t0()).await?;
    store.take_partition(p, "node-b", at(1)).await?;
    let late = intake_msg(tenant, "reservation:rsv-b4", p, at(2));
    let err = store
        .intake_batch(std::slice::from_ref(&late), Some(f1))
        .await
        .expect_err("old fence");
    ensure!(matches!(err, StoreError::Fenced), "got {err:?}");

    // two tenants in one batch: refused whole
    let mut foreign = intake_msg(TenantId::generate(), "reservation:rsv-b5", p, t0());
    foreign.partition = p;
    let err = store
        .intake_batch(&[late, foreign], None)
        .await
        .expect_err("two tenants");
    ensure!(matches!(err, StoreError::Conflict { .. }), "got {err:?}");
    assert_eq!(b.count("inbox", tenant).await?, 3);
    assert_eq!(b.count("mailbox", tenant).await?, 3);
    Ok(())
}

/// Issue 11 (one statement per batch): `insert_inbox_batch` answers in order, `true` once
/// per new (message id, consumer): a message the inbox had and a repeat within the batch
/// are `false`; another consumer's copy is its own; it enqueues nothing; an empty batch
/// is nothing; a message of another tenant refuses the whole batch.
pub async fn insert_inbox_batch_records_each_new_message_once_in_order(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let p = random_partition();
    let had = intake_msg(tenant, "reservation:rsv-ib1", p, t0());
    let mut tx = store.begin(tenant, None).await?;
    ensure!(tx.insert_inbox(&had).await?, "stored before the batch");
    let fresh = intake_msg(tenant, "reservation:rsv-ib2", p, t0());
    let mut copy = fresh.clone();
    copy.consumer = "lockstep.other".into();
    let batch = [fresh.clone(), had.clone(), fresh.clone(), copy];
    assert_eq!(
        tx.insert_inbox_batch(&batch).await?,
        vec![true, false, false, true]
    );
    assert!(tx.insert_inbox_batch(&[]).await?.is_empty());
    let mut theirs = intake_msg(TenantId::generate(), "reservation:rsv-ib3", p, t0());
    theirs.partition = p;
    let res = tx
        .insert_inbox_batch(&[intake_msg(tenant, "reservation:rsv-ib4", p, t0()), theirs])
        .await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "a batch with another tenant's message: {res:?}"
    );
    tx.commit().await?;
    assert_eq!(
        b.count("inbox", tenant).await?,
        3,
        "had, fresh and its copy"
    );
    assert_eq!(
        b.count("mailbox", tenant).await?,
        0,
        "the inbox enqueues nothing"
    );
    Ok(())
}

/// Issue 11 with DESIGN §3.1: a batch longer than one statement takes (100 inbox rows, 50
/// mailbox rows) is stored in several, one after the other: a message repeated across
/// them is still a duplicate, and the subject's entries keep the batch's order.
pub async fn intake_batch_longer_than_one_statement_keeps_order_and_dedupe(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let p = random_partition();
    let subject = "reservation:rsv-long";
    let mut batch: Vec<_> = (0..130)
        .map(|_| intake_msg(tenant, subject, p, t0()))
        .collect();
    batch[125] = batch[0].clone();
    let outcomes = store.intake_batch(&batch, None).await?;
    let duplicates: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| **o == IntakeOutcome::Duplicate)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(duplicates, vec![125], "only the repeat across statements");
    assert_eq!(b.count("inbox", tenant).await?, 129);
    assert_eq!(b.count("mailbox", tenant).await?, 129);

    let mut tx = store.begin(tenant, None).await?;
    let mut order = Vec::new();
    while let Some(e) = tx.next_mailbox_entry(subject, t0()).await? {
        let MailboxKind::Event { message_id, .. } = &e.kind else {
            anyhow::bail!("an event: {:?}", e.kind);
        };
        order.push(message_id.clone());
        tx.complete_entry(subject, e.id, "applied", t0()).await?;
    }
    tx.commit().await?;
    let expected: Vec<String> = batch
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 125)
        .map(|(_, m)| m.message_id.clone())
        .collect();
    assert_eq!(
        order, expected,
        "the subject's entries in the batch's order"
    );
    Ok(())
}
