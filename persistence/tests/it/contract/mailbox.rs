//! `ReadOnlyMailboxTable`/`MailboxTable` (a subject's mailbox and durable timers, DESIGN
//! §3.2–3.3) and the worker path's `ReadOnlyTimerTable`/`TimerTable`.

use super::prelude::*;

/// The mailbox hands out the oldest due entry of a subject; entries due later wait.
pub async fn next_mailbox_entry_returns_oldest_due_entry_and_skips_later_ones(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let partition = random_partition();
    let subject = "reservation:rsv-order";
    let m1 = intake_msg(tenant, subject, partition, at(0));
    let m2 = intake_msg(tenant, subject, partition, at(1));
    let m3 = intake_msg(tenant, subject, partition, at(3_600));
    for m in [&m1, &m2, &m3] {
        store.intake(m, None).await?;
    }
    // Another subject of the same tenant does not interleave.
    store
        .intake(
            &intake_msg(tenant, "reservation:other", partition, at(0)),
            None,
        )
        .await?;

    let now = at(5);
    let e1 = store
        .next_mailbox_entry(tenant, subject, now)
        .await?
        .context("e1")?;
    ensure!(
        matches!(&e1.kind, MailboxKind::Event { message_id, .. } if *message_id == m1.message_id)
    );

    // Nothing is due before the first entry's time.
    assert!(store
        .next_mailbox_entry(tenant, subject, at(-1))
        .await?
        .is_none());

    let mut done = UnitOfWork::new(tenant, None, now);
    done.mailbox.push(MailboxUpdate::Done {
        id: e1.id,
        subject: e1.subject.clone(),
        outcome: "applied".into(),
    });
    store.commit(done).await?;
    let e2 = store
        .next_mailbox_entry(tenant, subject, now)
        .await?
        .context("e2")?;
    ensure!(
        matches!(&e2.kind, MailboxKind::Event { message_id, .. } if *message_id == m2.message_id)
    );
    assert!(e2.id > e1.id);

    // A retry moves e2 into the future: the due-later entries wait.
    let mut retry = UnitOfWork::new(tenant, None, now);
    retry.mailbox.push(MailboxUpdate::Retry {
        id: e2.id,
        subject: e2.subject.clone(),
        due_at: at(60),
        attempts: 1,
        last_error: "vendor timeout".into(),
    });
    store.commit(retry).await?;
    assert!(store
        .next_mailbox_entry(tenant, subject, now)
        .await?
        .is_none());
    let again = store
        .next_mailbox_entry(tenant, subject, at(60))
        .await?
        .context("retried")?;
    assert_eq!((again.id, again.attempts, again.due_at), (e2.id, 1, at(60)));
    let e3 = store
        .next_mailbox_entry(tenant, subject, at(7_200))
        .await?
        .context("e2 again")?;
    assert_eq!(e3.id, e2.id, "order is by id among due entries");

    // The scanner sees both subjects of the partition as due.
    let due = store.due_subjects(Some(partition), now, 100, &[]).await?;
    let mut subjects: Vec<_> = due.iter().map(|d| d.subject.subject.as_str()).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec!["reservation:other"],
        "rsv-order's open entries are due later"
    );
    let due_later = store
        .due_subjects(Some(partition), at(7_200), 100, &[])
        .await?;
    assert_eq!(due_later.len(), 2);
    assert!(due_later
        .iter()
        .all(|d| d.subject.tenant_id == tenant && d.subject.partition == partition && !d.removal));
    let (depth, oldest) = store.mailbox_depth().await?;
    assert!(depth >= 3);
    assert!(oldest.is_some());
    Ok(())
}

/// One open drive entry per credential: scheduling again brings it forward (never later)
/// instead of inserting another.
pub async fn schedule_drive_keeps_one_open_entry_and_brings_it_forward(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let rsv = reservation();
    let subject = subject_of(&rsv);
    let cred = new_credential(&reg, &rsv, &["r101"], t0())?;
    let drive = |due| ScheduleDrive {
        property_id: property(),
        partition: 7,
        subject: subject.clone(),
        credential_id: cred.id().clone(),
        due_at: due,
    };
    let mut uow = insert(cred.snapshot(), t0());
    uow.schedule.push(drive(at(600)));
    store.commit(uow).await?;
    assert_eq!(b.open_drives(tenant, cred.id()).await?, 1);

    for due in [at(60), at(1_800)] {
        let mut uow = UnitOfWork::new(tenant, None, t0());
        uow.schedule.push(drive(due));
        store.commit(uow).await?;
        assert_eq!(b.open_drives(tenant, cred.id()).await?, 1);
    }
    assert!(store
        .next_mailbox_entry(tenant, &subject, at(59))
        .await?
        .is_none());
    let e = store
        .next_mailbox_entry(tenant, &subject, at(60))
        .await?
        .context("drive")?;
    assert_eq!(e.due_at, at(60), "brought forward, not pushed back");
    assert_eq!(
        e.kind,
        MailboxKind::Drive {
            credential_id: cred.id().clone()
        }
    );

    // Once done, the next schedule opens a new entry.
    let mut uow = UnitOfWork::new(tenant, None, at(60));
    uow.mailbox.push(MailboxUpdate::Done {
        id: e.id,
        subject: e.subject.clone(),
        outcome: "driven".into(),
    });
    uow.schedule.push(drive(at(120)));
    store.commit(uow).await?;
    assert_eq!(b.open_drives(tenant, cred.id()).await?, 1);
    let next = store
        .next_mailbox_entry(tenant, &subject, at(120))
        .await?
        .context("new drive")?;
    assert_ne!(next.id, e.id);
    assert_eq!(b.count("mailbox", tenant).await?, 2);
    Ok(())
}

/// DESIGN §3.2–3.3: what `enqueue_event`, `enqueue_internal` and `schedule_drive` store comes
/// out of `next_mailbox_entry` when due, events before drives, inside the writing
/// transaction (reads in the step's own transaction) and, once committed, in a `ReadTx`.
pub async fn enqueued_entries_come_out_when_due_events_before_drives(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let p = random_partition();
    let subject = "reservation:rsv-mbx";
    let credential = lockstep_domain::KeyCredentialId::generate();
    let msg = intake_msg(tenant, subject, p, at(5));
    let internal = InternalEvent {
        property_id: property(),
        partition: p,
        subject: subject.into(),
        topic: "lockstep.internal.no_show".into(),
        payload: serde_json::json!({ "reservation": "rsv-mbx" }),
        due_at: at(60),
    };
    let mut tx = store.begin(tenant, None).await?;
    tx.schedule_drive(&drive(subject, p, &credential, at(0)), at(0))
        .await?;
    tx.enqueue_event(&msg).await?;
    tx.enqueue_internal(&internal, at(1)).await?;

    let first = tx
        .next_mailbox_entry(subject, at(4))
        .await?
        .context("due")?;
    assert_eq!(
        first.kind,
        MailboxKind::Drive {
            credential_id: credential.clone()
        },
        "only the drive is due at 4 s"
    );
    let e = tx
        .next_mailbox_entry(subject, at(5))
        .await?
        .context("due")?;
    assert_eq!(
        e.kind,
        MailboxKind::Event {
            message_id: msg.message_id.clone(),
            topic: msg.topic.clone()
        },
        "a due event before an older drive"
    );
    assert_eq!(
        (e.tenant_id, e.partition, e.due_at, e.created_at, e.attempts),
        (tenant, p, at(5), at(5), 0)
    );
    assert_eq!(e.payload, msg.payload);
    assert!(
        store
            .read(tenant)
            .await?
            .next_mailbox_entry(subject, at(100))
            .await?
            .is_none(),
        "nothing is visible before the commit"
    );
    tx.complete_entry(&e.subject, e.id, "applied", at(6))
        .await?;
    tx.complete_entry(&first.subject, first.id, "driven", at(6))
        .await?;
    tx.commit().await?;

    let mut rtx = store.read(tenant).await?;
    assert!(rtx.next_mailbox_entry(subject, at(59)).await?.is_none());
    let timer = rtx
        .next_mailbox_entry(subject, at(60))
        .await?
        .context("the internal event")?;
    let MailboxKind::Event { message_id, topic } = &timer.kind else {
        anyhow::bail!("an event: {:?}", timer.kind);
    };
    ensure!(!message_id.is_empty() && *message_id != msg.message_id);
    assert_eq!(topic, "lockstep.internal.no_show");
    assert_eq!(
        (timer.due_at, timer.created_at, &timer.payload),
        (at(60), at(1), &internal.payload)
    );
    rtx.commit().await?;
    Ok(())
}

/// `retry_entry` moves an open entry to a later time with its attempts; `complete_entry`
/// finishes it with an outcome, which `message_outcome` reports (unknown, waiting, done);
/// both refuse an entry that is not open or not the tenant's with `Conflict`.
pub async fn retry_and_complete_touch_only_open_entries_and_outcomes_follow(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let subject = "reservation:rsv-outcome";
    let msg = intake_msg(tenant, subject, random_partition(), t0());
    let second = intake_msg(tenant, subject, msg.partition, at(1));
    let mut tx = store.begin(tenant, None).await?;
    tx.enqueue_event(&msg).await?;
    tx.enqueue_event(&second).await?;
    tx.commit().await?;

    let mut rtx = store.read(tenant).await?;
    assert_eq!(rtx.message_outcome(&msg.message_id).await?, Some(None));
    assert_eq!(rtx.message_outcome("never-stored").await?, None);
    let e = rtx.next_mailbox_entry(subject, t0()).await?.context("e")?;
    rtx.commit().await?;

    let mut tx = store.begin(tenant, None).await?;
    tx.retry_entry(subject, e.id, at(30), 2, "vendor timeout")
        .await?;
    let later = tx
        .next_mailbox_entry(subject, at(29))
        .await?
        .context("2nd")?;
    assert_ne!(later.id, e.id, "the retried entry waits");
    let again = tx.next_mailbox_entry(subject, at(30)).await?.context("e")?;
    assert_eq!((again.id, again.attempts, again.due_at), (e.id, 2, at(30)));
    tx.complete_entry(subject, e.id, "applied", at(31)).await?;
    for res in [
        tx.complete_entry(subject, e.id, "again", at(32)).await,
        tx.retry_entry(subject, e.id, at(40), 3, "late").await,
    ] {
        ensure!(
            matches!(res, Err(StoreError::Conflict { entity: "mailbox" })),
            "a done entry: {res:?}"
        );
    }
    for res in [
        tx.complete_entry("reservation:rsv-other", later.id, "misnamed", at(32))
            .await,
        tx.retry_entry("reservation:rsv-other", later.id, at(40), 1, "misnamed")
            .await,
    ] {
        ensure!(
            matches!(res, Err(StoreError::Conflict { entity: "mailbox" })),
            "an open entry named with another subject: {res:?}"
        );
    }
    tx.commit().await?;
    assert_eq!(
        store
            .read(tenant)
            .await?
            .message_outcome(&msg.message_id)
            .await?,
        Some(Some("applied".to_owned()))
    );

    let mut theirs = store.begin(TenantId::generate(), None).await?;
    for res in [
        theirs
            .complete_entry(subject, later.id, "stolen", at(33))
            .await,
        theirs
            .retry_entry(subject, later.id, at(40), 1, "stolen")
            .await,
    ] {
        ensure!(
            matches!(res, Err(StoreError::Conflict { entity: "mailbox" })),
            "another tenant's entry: {res:?}"
        );
    }
    Ok(())
}

/// Issue 11, revocations first: `due_subjects` marks a subject whose due work may take a
/// key off a door (an open event of a removal topic; a drive of a credential with a door
/// row to remove) and lists those first, ahead of older issuances; without removal
/// topics only the door rows mark one.
pub async fn due_subjects_list_removals_first_and_mark_them(b: &Backend) -> anyhow::Result<()> {
    // The scan sees every tenant: a database of its own.
    let b = b.isolated().await?;
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let p = random_partition();
    for (subject, topic, due) in [
        ("s-issue", "reservation.confirmed", at(0)),
        ("s-cancel", "reservation.cancelled", at(10)),
    ] {
        let mut m = intake_msg(tenant, subject, p, due);
        m.topic = topic.into();
        let mut tx = store.begin(tenant, None).await?;
        tx.enqueue_event(&m).await?;
        tx.commit().await?;
    }
    for (subject, desired, due, day_n) in [
        ("s-drive-add", Desired::Present, at(5), 10),
        ("s-drive-remove", Desired::Absent, at(20), 20),
    ] {
        let c = stay(&reg, &reservation(), &["r101"], day(day_n), day(day_n + 1))?;
        let mut uow = insert(c.snapshot(), t0());
        let mut row = device_write(c.id(), &reg.devices[0], None, None)?;
        row.desired = desired;
        uow.devices.push(row);
        uow.schedule.push(ScheduleDrive {
            property_id: property(),
            partition: p,
            subject: subject.into(),
            credential_id: c.id().clone(),
            due_at: due,
        });
        store.commit(uow).await?;
    }
    let listed = |v: Vec<DueSubject>| -> Vec<(String, bool)> {
        v.into_iter()
            .map(|d| (d.subject.subject, d.removal))
            .collect()
    };
    let removals = ["reservation.cancelled", "reservation.checked_out"];
    assert_eq!(
        listed(store.due_subjects(Some(p), at(60), 10, &removals).await?),
        vec![
            ("s-cancel".to_owned(), true),
            ("s-drive-remove".to_owned(), true),
            ("s-issue".to_owned(), false),
            ("s-drive-add".to_owned(), false),
        ]
    );
    assert_eq!(
        listed(store.due_subjects(Some(p), at(60), 1, &removals).await?),
        vec![("s-cancel".to_owned(), true)],
        "the limit keeps the removals"
    );
    assert_eq!(
        listed(store.due_subjects(Some(p), at(60), 10, &[]).await?),
        vec![
            ("s-drive-remove".to_owned(), true),
            ("s-issue".to_owned(), false),
            ("s-drive-add".to_owned(), false),
            ("s-cancel".to_owned(), false),
        ]
    );
    Ok(())
}

/// DESIGN §5, the worker path: `due_subjects` lists subjects with due work of a partition
/// (or of all) across tenants, longest due first, up to a limit; `properties_in_partition`
/// and `mailbox_depth` see every tenant.
pub async fn timer_scans_see_due_subjects_properties_and_depth_across_tenants(
    b: &Backend,
) -> anyhow::Result<()> {
    // Totals are global: a database of its own.
    let b = b.isolated().await?;
    let store = b.store();
    let (a, c) = (TenantId::generate(), TenantId::generate());
    let (p1, p2) = (random_partition(), random_partition());
    let elsewhere = lockstep_domain::PropertyId::parse("prop-2")?;
    for (tenant, subject, partition, due, prop) in [
        (a, "s1", p1, at(10), property()),
        (a, "s2", p1, at(0), property()),
        (c, "s3", p2, at(5), property()),
        (c, "s4", p1, at(100), elsewhere.clone()),
    ] {
        let mut m = intake_msg(tenant, subject, partition, due);
        m.property_id = prop;
        let mut tx = store.begin(tenant, None).await?;
        tx.enqueue_event(&m).await?;
        tx.commit().await?;
    }
    let mut w = store.worker_read().await?;
    let subjects = |v: Vec<DueSubject>| -> Vec<(TenantId, String)> {
        v.into_iter()
            .map(|d| (d.subject.tenant_id, d.subject.subject))
            .collect()
    };
    assert_eq!(
        subjects(w.due_subjects(Some(p1), at(50), 10, &[]).await?),
        vec![(a, "s2".to_owned()), (a, "s1".to_owned())]
    );
    assert_eq!(
        subjects(w.due_subjects(Some(p1), at(50), 1, &[]).await?),
        vec![(a, "s2".to_owned())]
    );
    assert_eq!(
        subjects(w.due_subjects(None, at(50), 10, &[]).await?),
        vec![
            (a, "s2".to_owned()),
            (c, "s3".to_owned()),
            (a, "s1".to_owned())
        ]
    );
    let due = w.due_subjects(Some(p2), at(50), 10, &[]).await?;
    assert_eq!(
        (due[0].subject.partition, &due[0].subject.property_id),
        (p2, &property())
    );
    let mut props = w.properties_in_partition(p1).await?;
    props.sort_by(|x, y| (x.0.to_string(), x.1.as_str()).cmp(&(y.0.to_string(), y.1.as_str())));
    let mut want = vec![(a, property()), (c, elsewhere)];
    want.sort_by(|x, y| (x.0.to_string(), x.1.as_str()).cmp(&(y.0.to_string(), y.1.as_str())));
    assert_eq!(props, want);
    assert_eq!(w.mailbox_depth().await?, (4, Some(at(0))));
    w.commit().await?;
    Ok(())
}

/// DESIGN §7: when a vendor is healthy again, `resume_parked` makes its parked drives due
/// now, those with a removal pending a second earlier (revocations first), and leaves
/// other vendors' drives and drives already due alone.
pub async fn resume_parked_brings_a_vendors_drives_forward_removals_first(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let p = random_partition();
    let now = day(0);
    let mut tx = store.begin(tenant, None).await?;
    let mut subjects = Vec::new();
    for (i, (vendor, desired, parked_until)) in [
        (VendorCode::Ttlock, Desired::Absent, day(1)),
        (VendorCode::Ttlock, Desired::Present, day(1)),
        (VendorCode::Salto, Desired::Absent, day(1)),
        (
            VendorCode::Ttlock,
            Desired::Absent,
            now - chrono::Duration::hours(1),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let room = format!("r-park-{i}");
        let mut s = stay(&reg, &reservation(), &[room.as_str()], day(5), day(6))?.snapshot();
        s.vendor = vendor;
        tx.insert_credential(&s).await?;
        tx.put_door_truth(
            &door(&s.id, &reg.devices[0], desired, SyncState::Pending),
            now,
            now,
        )
        .await?;
        let subject = format!("reservation:park-{i}");
        tx.schedule_drive(&drive(&subject, p, &s.id, parked_until), now)
            .await?;
        subjects.push(subject);
    }
    tx.commit().await?;

    let mut w = store.worker().await?;
    assert_eq!(w.resume_parked(VendorCode::Ttlock, now).await?, 2);
    w.commit().await?;
    let mut rtx = store.read(tenant).await?;
    let mut due = Vec::new();
    for subject in &subjects {
        due.push(
            rtx.next_mailbox_entry(subject, day(2))
                .await?
                .context("drive")?
                .due_at,
        );
    }
    assert_eq!(
        due,
        vec![
            now - chrono::Duration::seconds(1),
            now,
            day(1),
            now - chrono::Duration::hours(1)
        ]
    );
    Ok(())
}

/// DESIGN §7, revocations first: `undecided_removals` counts the open, due event entries
/// of the removal topics asked at properties with a device of the adapters asked, and
/// nothing else: not a confirmation, not a removal due later or done, not another
/// adapter's property, not another tenant's.
pub async fn undecided_removals_count_due_open_removal_messages_at_the_adapters_properties(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let p = random_partition();
    let topics = ["reservation.cancelled", "lockstep.internal.expire"];
    let removal = |subject: &str, topic: &str, at_s: i64| lockstep_persistence::IntakeMessage {
        topic: topic.into(),
        ..intake_msg(tenant, subject, p, at(at_s))
    };
    let cancel = removal("reservation:rsv-u1", topics[0], 1);
    let done = removal("reservation:rsv-u2", topics[0], 2);
    let confirm = intake_msg(tenant, "reservation:rsv-u3", p, at(3));
    let elsewhere = lockstep_persistence::IntakeMessage {
        property_id: lockstep_domain::PropertyId::parse("prop-elsewhere")?,
        ..removal("reservation:rsv-u4", topics[0], 4)
    };
    let mut tx = store.begin(tenant, None).await?;
    for m in [&cancel, &done, &confirm, &elsewhere] {
        tx.enqueue_event(m).await?;
    }
    // a stay's end due later is no removal that waited yet
    tx.enqueue_internal(
        &InternalEvent {
            property_id: property(),
            partition: p,
            subject: "reservation:rsv-u5".into(),
            topic: topics[1].into(),
            payload: serde_json::json!({}),
            due_at: at(60),
        },
        at(5),
    )
    .await?;
    let done_id = tx
        .next_mailbox_entry("reservation:rsv-u2", at(10))
        .await?
        .context("due")?
        .id;
    tx.complete_entry("reservation:rsv-u2", done_id, "applied", at(10))
        .await?;
    let adapters = std::slice::from_ref(&reg.adapter);
    assert_eq!(
        tx.undecided_removals(adapters, &topics, at(10)).await?,
        1,
        "read in the writing transaction"
    );
    tx.commit().await?;

    let mut rtx = store.read(tenant).await?;
    assert_eq!(rtx.undecided_removals(adapters, &topics, at(10)).await?, 1);
    assert_eq!(
        rtx.undecided_removals(adapters, &topics, at(60)).await?,
        2,
        "the stay's end once due"
    );
    assert_eq!(
        rtx.undecided_removals(adapters, &topics, at(0)).await?,
        0,
        "nothing due yet"
    );
    assert_eq!(
        rtx.undecided_removals(adapters, &topics[1..], at(10))
            .await?,
        0
    );
    assert_eq!(
        rtx.undecided_removals(
            &[lockstep_domain::VendorAdapterId::generate()],
            &topics,
            at(10)
        )
        .await?,
        0,
        "another adapter's properties"
    );
    assert_eq!(rtx.undecided_removals(&[], &topics, at(10)).await?, 0);
    assert_eq!(rtx.undecided_removals(adapters, &[], at(10)).await?, 0);
    rtx.commit().await?;
    let mut theirs = store.read(TenantId::generate()).await?;
    assert_eq!(
        theirs.undecided_removals(adapters, &topics, at(60)).await?,
        0
    );
    Ok(())
}

/// `subject_partition`: the partition of a subject's newest entry, open or done; `None`
/// for a subject without entries or another tenant's.
pub async fn subject_partition_is_the_newest_entrys_open_or_done(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let subject = "reservation:rsv-part";
    let p = random_partition();
    let msg = intake_msg(tenant, subject, p, at(1));
    let mut tx = store.begin(tenant, None).await?;
    assert_eq!(tx.subject_partition(subject).await?, None);
    tx.enqueue_event(&msg).await?;
    assert_eq!(
        tx.subject_partition(subject).await?,
        Some(p),
        "in its transaction"
    );
    let id = tx
        .next_mailbox_entry(subject, at(2))
        .await?
        .context("due")?
        .id;
    tx.complete_entry(subject, id, "applied", at(2)).await?;
    tx.commit().await?;
    let mut rtx = store.read(tenant).await?;
    assert_eq!(
        rtx.subject_partition(subject).await?,
        Some(p),
        "done entries too"
    );
    assert_eq!(rtx.subject_partition("reservation:other").await?, None);
    rtx.commit().await?;
    let mut theirs = store.read(TenantId::generate()).await?;
    assert_eq!(theirs.subject_partition(subject).await?, None);
    Ok(())
}

/// Issue 11 (one statement per batch): `enqueue_events` stores each message as
/// `enqueue_event` would, with ids in the order given, so a subject's events come out in
/// delivery order; an empty batch is nothing; another tenant's message refuses the batch.
pub async fn enqueue_events_store_a_batch_in_its_order(b: &Backend) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let p = random_partition();
    let subject = "reservation:rsv-batch";
    let confirmed = intake_msg(tenant, subject, p, at(5));
    let mut cancelled = intake_msg(tenant, subject, p, at(5));
    cancelled.topic = "melmastoon.reservation.cancelled.v1".into();
    let elsewhere = intake_msg(tenant, "reservation:rsv-batch-2", p, at(5));
    let mut tx = store.begin(tenant, None).await?;
    tx.enqueue_events(&[]).await?;
    tx.enqueue_events(&[&confirmed, &elsewhere, &cancelled])
        .await?;
    let mut theirs = intake_msg(TenantId::generate(), subject, p, at(5));
    theirs.partition = p;
    let res = tx.enqueue_events(&[&theirs]).await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "another tenant's message: {res:?}"
    );
    let first = tx
        .next_mailbox_entry(subject, at(5))
        .await?
        .context("the first event")?;
    assert_eq!(
        (
            first.kind.clone(),
            first.partition,
            first.due_at,
            first.created_at,
            first.payload.clone()
        ),
        (
            MailboxKind::Event {
                message_id: confirmed.message_id.clone(),
                topic: confirmed.topic.clone()
            },
            p,
            at(5),
            at(5),
            confirmed.payload.clone()
        )
    );
    tx.complete_entry(subject, first.id, "applied", at(6))
        .await?;
    let second = tx
        .next_mailbox_entry(subject, at(6))
        .await?
        .context("the second event")?;
    assert!(second.id > first.id);
    assert_eq!(
        second.kind,
        MailboxKind::Event {
            message_id: cancelled.message_id.clone(),
            topic: cancelled.topic.clone()
        }
    );
    tx.commit().await?;
    assert_eq!(b.count("mailbox", tenant).await?, 3);
    Ok(())
}
