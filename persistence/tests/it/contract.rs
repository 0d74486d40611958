//! The store contract: what every backend must do, one `async fn` per behaviour, run
//! against each backend by `store_contract_tests!`.

use anyhow::{ensure, Context};
use lockstep_domain::{
    FailureReason, KeyCredentialScope, KeyCredentialState, RevokeReason, SuspendReason, TenantId,
    ValidityWindow, VendorRef,
};
use lockstep_persistence::{
    CredentialFilter, CredentialWrite, Desired, DoorBacklog, IntakeOutcome, MailboxKind,
    MailboxUpdate, MasterKeyWrite, PropertyCredential, ScheduleDrive, StoreError, SyncState,
    UnitOfWork,
};

use crate::support::*;

fn snapshot_text(c: &lockstep_domain::KeyCredential) -> String {
    format!("{:?}", c.snapshot())
}

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
    let due = store.due_subjects(Some(partition), now, 100).await?;
    let mut subjects: Vec<_> = due.iter().map(|s| s.subject.as_str()).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec!["reservation:other"],
        "rsv-order's open entries are due later"
    );
    let due_later = store.due_subjects(Some(partition), at(7_200), 100).await?;
    assert_eq!(due_later.len(), 2);
    assert!(due_later
        .iter()
        .all(|s| s.tenant_id == tenant && s.partition == partition));
    let (depth, oldest) = store.mailbox_depth().await?;
    assert!(depth >= 3);
    assert!(oldest.is_some());
    Ok(())
}

/// A saga step's writes (credential, door truth, saga, outbox, audit, mailbox progress,
/// drive) are all visible after `commit`.
pub async fn commit_of_new_credential_makes_all_its_rows_visible(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let rsv = reservation();
    let subject = subject_of(&rsv);
    let partition = random_partition();
    store
        .intake(&intake_msg(tenant, &subject, partition, t0()), None)
        .await?;
    let entry = store
        .next_mailbox_entry(tenant, &subject, t0())
        .await?
        .context("entry")?;

    let cred = new_credential(&reg, &rsv, &["r102", "r101"], t0())?;
    let mut uow = insert(cred.snapshot(), t0());
    uow.devices.push(device_write(
        cred.id(),
        &reg.devices[0],
        Some("4829"),
        None,
    )?);
    let saga = serde_json::json!({ "credentials": [cred.id().as_str()], "revision": 1 });
    uow.saga = Some((subject.clone(), saga.clone()));
    let outbox = outbox_row(tenant, cred.id().as_str(), t0());
    uow.outbox.push(outbox.clone());
    uow.audit.push(audit_row(tenant, cred.id(), t0()));
    uow.mailbox.push(MailboxUpdate::Done {
        id: entry.id,
        outcome: "applied".into(),
    });
    uow.schedule.push(ScheduleDrive {
        property_id: property(),
        partition,
        subject: subject.clone(),
        credential_id: cred.id().clone(),
        due_at: t0(),
    });
    store.commit(uow).await?;

    let got = store
        .get_credential(tenant, cred.id())
        .await?
        .context("credential")?;
    assert_eq!(snapshot_text(&got), snapshot_text(&cred));
    let by_rsv = store.credentials_by_reservation(tenant, &rsv).await?;
    assert_eq!(by_rsv.len(), 1);
    assert_eq!(by_rsv[0].id(), cred.id());

    // the list's filters and cursor
    let list = |f: CredentialFilter| async move { store.list_credentials(tenant, &f, 10).await };
    let room = cred.rooms()[0].as_str().to_owned();
    let mid = cred.validity().from() + (cred.validity().until() - cred.validity().from()) / 2;
    for (what, f, want) in [
        (
            "by reservation",
            CredentialFilter {
                reservation_id: Some(rsv.as_str().into()),
                ..Default::default()
            },
            1,
        ),
        (
            "by property and state",
            CredentialFilter {
                property_id: Some(property().as_str().into()),
                state: Some(cred.state().as_str().into()),
                ..Default::default()
            },
            1,
        ),
        (
            "another state",
            CredentialFilter {
                state: Some("failed".into()),
                ..Default::default()
            },
            0,
        ),
        (
            "by room",
            CredentialFilter {
                room_id: Some(room.clone()),
                ..Default::default()
            },
            1,
        ),
        (
            "another room",
            CredentialFilter {
                room_id: Some("rmu_elsewhere".into()),
                ..Default::default()
            },
            0,
        ),
        (
            "after the last id",
            CredentialFilter {
                after: Some(cred.id().as_str().into()),
                ..Default::default()
            },
            0,
        ),
        (
            "opens after the stay",
            CredentialFilter {
                room_id: Some(room.clone()),
                opens_at: Some(cred.validity().until() + chrono::Duration::hours(1)),
                ..Default::default()
            },
            0,
        ),
    ] {
        assert_eq!(list(f).await?.len(), want, "{what}");
    }
    // a requested key is not yet at the door; `opensAt` counts pending and active ones
    let opens = list(CredentialFilter {
        room_id: Some(room),
        opens_at: Some(mid),
        ..Default::default()
    })
    .await?;
    assert_eq!(
        opens.len(),
        usize::from(matches!(
            cred.state(),
            KeyCredentialState::Pending | KeyCredentialState::Active
        ))
    );

    let devices = store.credential_devices(tenant, cred.id()).await?;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device_id, reg.devices[0]);
    assert_eq!(
        (devices[0].desired, devices[0].sync),
        (Desired::Present, SyncState::Pending)
    );

    assert_eq!(store.load_saga(tenant, &subject).await?, Some(saga));

    let rows: Vec<_> = store
        .unpublished(at(1), 100_000)
        .await?
        .into_iter()
        .filter(|r| r.tenant_id == tenant)
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, outbox.id);
    assert_eq!(rows[0].aggregate_id, outbox.aggregate_id);
    assert_eq!(rows[0].topic, outbox.topic);
    assert_eq!(rows[0].payload, outbox.payload);
    assert_eq!(rows[0].envelope, outbox.envelope);
    assert_eq!(rows[0].created_at, outbox.created_at);

    assert_eq!(b.count("lock_audit", tenant).await?, 1);

    // The event entry is done; what is left is the drive.
    let next = store
        .next_mailbox_entry(tenant, &subject, t0())
        .await?
        .context("drive")?;
    assert_eq!(
        next.kind,
        MailboxKind::Drive {
            credential_id: cred.id().clone()
        }
    );
    assert_eq!(
        b.count_where(
            "mailbox",
            tenant,
            "done_at IS NOT NULL AND outcome = 'applied'"
        )
        .await?,
        1
    );
    Ok(())
}

/// Every field of the aggregate survives storage, including lineage, reasons, timestamps,
/// scope and an update that replaces the rooms.
pub async fn get_credential_round_trips_every_field(b: &Backend) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let rsv = reservation();

    let first = new_credential(&reg, &rsv, &["r101"], at(0))?;
    store.commit(insert(first.snapshot(), at(0))).await?;

    // A replacement with every optional field set.
    let mut s = new_credential(&reg, &rsv, &["r103", "r102"], at(10))?.snapshot();
    s.scope = KeyCredentialScope {
        floors: vec!["3".into(), "4".into()],
        areas: vec!["gym".into()],
    };
    s.validity = ValidityWindow::new(at(100), at(100 + 47 * 3_600))?;
    s.provisional = true;
    s.state = KeyCredentialState::Suspended;
    s.issued_at = Some(at(20));
    s.suspended_at = Some(at(30));
    s.revoked_at = Some(at(40));
    s.failure_reason = Some(FailureReason::VendorRefused);
    s.suspend_reason = Some(SuspendReason::FraudReview);
    s.revoke_reason = Some(RevokeReason::Security);
    s.replaces_id = Some(first.id().clone());
    s.version = 7;
    s.updated_at = at(50);
    let second = lockstep_domain::KeyCredential::restore(s)?;
    store.commit(insert(second.snapshot(), at(50))).await?;

    // Update the first: lineage, state, window, rooms, scope.
    let mut u = first.snapshot();
    u.replaced_by_id = Some(second.id().clone());
    u.state = KeyCredentialState::Revoked;
    u.revoked_at = Some(at(60));
    u.revoke_reason = Some(RevokeReason::Replaced);
    u.validity = ValidityWindow::new(at(3_600), at(86_400))?;
    u.rooms = vec![room("r102"), room("r103")];
    u.scope = KeyCredentialScope {
        floors: vec![],
        areas: vec!["lobby".into()],
    };
    u.version = 2;
    u.updated_at = at(60);
    let first_updated = lockstep_domain::KeyCredential::restore(u.clone())?;
    let mut uow = UnitOfWork::new(tenant, None, at(60));
    uow.credentials.push(CredentialWrite {
        snapshot: u,
        expected_version: Some(1),
    });
    store.commit(uow).await?;

    let got1 = store
        .get_credential(tenant, first.id())
        .await?
        .context("first")?;
    let got2 = store
        .get_credential(tenant, second.id())
        .await?
        .context("second")?;
    assert_eq!(snapshot_text(&got1), snapshot_text(&first_updated));
    assert_eq!(snapshot_text(&got2), snapshot_text(&second));

    let by_rsv = store.credentials_by_reservation(tenant, &rsv).await?;
    let ids: Vec<_> = by_rsv.iter().map(|c| c.id().clone()).collect();
    assert_eq!(
        ids,
        vec![first.id().clone(), second.id().clone()],
        "oldest first"
    );
    Ok(())
}

/// Optimistic concurrency: a stale `expected_version` is a `Conflict` and the step's
/// other writes do not land.
pub async fn commit_with_stale_version_conflicts_and_changes_nothing(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let rsv = reservation();
    let subject = subject_of(&rsv);
    let cred = new_credential(&reg, &rsv, &["r101"], t0())?;
    store.commit(insert(cred.snapshot(), t0())).await?;

    let mut s = cred.snapshot();
    s.state = KeyCredentialState::Pending;
    s.version = 3;
    let mut uow = UnitOfWork::new(tenant, None, at(1));
    uow.credentials.push(CredentialWrite {
        snapshot: s,
        expected_version: Some(2),
    });
    uow.devices.push(device_write(
        cred.id(),
        &reg.devices[0],
        Some("1234"),
        None,
    )?);
    uow.saga = Some((subject.clone(), serde_json::json!({ "x": 1 })));
    let outbox = outbox_row(tenant, cred.id().as_str(), at(1));
    uow.outbox.push(outbox.clone());
    uow.audit.push(audit_row(tenant, cred.id(), at(1)));
    let err = store
        .commit(uow)
        .await
        .expect_err("stale version must fail");
    ensure!(
        matches!(
            err,
            StoreError::Conflict {
                entity: "key_credentials"
            }
        ),
        "got {err:?}"
    );

    let got = store
        .get_credential(tenant, cred.id())
        .await?
        .context("credential")?;
    assert_eq!(
        (got.version(), got.state()),
        (1, KeyCredentialState::Requested)
    );
    assert!(store
        .credential_devices(tenant, cred.id())
        .await?
        .is_empty());
    assert_eq!(store.load_saga(tenant, &subject).await?, None);
    assert!(
        !store
            .unpublished(at(2), 100_000)
            .await?
            .iter()
            .any(|r| r.id == outbox.id),
        "outbox row of the failed commit is absent"
    );
    assert_eq!(b.count("lock_audit", tenant).await?, 0);
    Ok(())
}

/// Atomicity: a step whose last write fails (a mailbox entry already done) leaves no trace
/// of its earlier writes.
pub async fn failed_commit_rolls_back_every_write_of_the_step(b: &Backend) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let rsv = reservation();
    let subject = subject_of(&rsv);
    store
        .intake(
            &intake_msg(tenant, &subject, random_partition(), t0()),
            None,
        )
        .await?;
    let entry = store
        .next_mailbox_entry(tenant, &subject, t0())
        .await?
        .context("entry")?;
    let cred = new_credential(&reg, &rsv, &["r101"], t0())?;
    let mut first = insert(cred.snapshot(), t0());
    first.mailbox.push(MailboxUpdate::Done {
        id: entry.id,
        outcome: "applied".into(),
    });
    store.commit(first).await?;

    // A second step finishing the same entry: everything before the mailbox write runs,
    // then the entry is found done.
    let mut s = cred.snapshot();
    s.state = KeyCredentialState::Pending;
    s.version = 2;
    let mut uow = UnitOfWork::new(tenant, None, at(1));
    uow.credentials.push(CredentialWrite {
        snapshot: s,
        expected_version: Some(1),
    });
    uow.devices.push(device_write(
        cred.id(),
        &reg.devices[0],
        Some("1234"),
        None,
    )?);
    uow.saga = Some((subject.clone(), serde_json::json!({ "x": 1 })));
    let outbox = outbox_row(tenant, cred.id().as_str(), at(1));
    uow.outbox.push(outbox.clone());
    uow.audit.push(audit_row(tenant, cred.id(), at(1)));
    uow.mailbox.push(MailboxUpdate::Done {
        id: entry.id,
        outcome: "again".into(),
    });
    let err = store
        .commit(uow)
        .await
        .expect_err("mailbox entry is already done");
    ensure!(
        matches!(err, StoreError::Conflict { entity: "mailbox" }),
        "got {err:?}"
    );

    let got = store
        .get_credential(tenant, cred.id())
        .await?
        .context("credential")?;
    assert_eq!(
        (got.version(), got.state()),
        (1, KeyCredentialState::Requested)
    );
    assert!(store
        .credential_devices(tenant, cred.id())
        .await?
        .is_empty());
    assert_eq!(store.load_saga(tenant, &subject).await?, None);
    assert!(!store
        .unpublished(at(2), 100_000)
        .await?
        .iter()
        .any(|r| r.id == outbox.id));
    assert_eq!(b.count("lock_audit", tenant).await?, 0);
    Ok(())
}

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

/// PINs and vendor refs are stored encrypted, come back decrypted, and a write without
/// them keeps the stored ones (spec 004 §5).
pub async fn pin_and_vendor_ref_round_trip_and_are_encrypted_at_rest(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let cred = new_credential(&reg, &reservation(), &["r101"], t0())?;
    let mut uow = insert(cred.snapshot(), t0());
    uow.devices.push(device_write(
        cred.id(),
        &reg.devices[0],
        Some("48291375"),
        Some("ttlock-kbpwd-99887766"),
    )?);
    uow.devices
        .push(device_write(cred.id(), &reg.devices[1], None, None)?);
    store.commit(uow).await?;

    let devices = store.credential_devices(tenant, cred.id()).await?;
    assert_eq!(devices.len(), 2);
    let d0 = devices
        .iter()
        .find(|d| d.device_id == reg.devices[0])
        .context("d0")?;
    assert_eq!(d0.pin.as_ref().map(|p| p.expose()), Some("48291375"));
    assert_eq!(
        d0.vendor_ref.as_ref().map(VendorRef::expose),
        Some("ttlock-kbpwd-99887766")
    );
    assert_eq!(
        d0.device_ref.expose(),
        format!("ttlock-lock-{}", reg.devices[0])
    );
    assert_eq!(d0.vendor_adapter_id, reg.adapter);
    let d1 = devices
        .iter()
        .find(|d| d.device_id == reg.devices[1])
        .context("d1")?;
    assert!(d1.pin.is_none() && d1.vendor_ref.is_none());

    let raw = b.raw_secret_columns(tenant, cred.id()).await?;
    assert_eq!(raw.len(), 2, "one PIN and one vendor ref ciphertext");
    for blob in &raw {
        assert!(
            !blob.windows(8).any(|w| w == b"48291375"),
            "PIN digits in the clear"
        );
        assert!(
            !blob.windows(8).any(|w| w == b"99887766"),
            "vendor ref in the clear"
        );
    }

    // Confirm without re-sending secrets: they are kept.
    let mut w = lockstep_persistence::DeviceSyncWrite::from_current(d0);
    w.sync = SyncState::Confirmed;
    w.attempts = 1;
    w.last_error = Some("earlier timeout".into());
    let mut uow = UnitOfWork::new(tenant, None, at(1));
    uow.devices.push(w);
    store.commit(uow).await?;
    let devices = store.credential_devices(tenant, cred.id()).await?;
    let d0 = devices
        .iter()
        .find(|d| d.device_id == reg.devices[0])
        .context("d0")?;
    assert_eq!(d0.pin.as_ref().map(|p| p.expose()), Some("48291375"));
    assert_eq!(
        d0.vendor_ref.as_ref().map(VendorRef::expose),
        Some("ttlock-kbpwd-99887766")
    );
    assert_eq!(
        (d0.sync, d0.attempts, d0.last_error.as_deref()),
        (SyncState::Confirmed, 1, Some("earlier timeout"))
    );

    // A new PIN (collision) replaces the old one.
    let mut w = lockstep_persistence::DeviceSyncWrite::from_current(d0);
    w.pin = Some(lockstep_domain::Pin::parse("5551234")?);
    w.pin_collisions = 1;
    let mut uow = UnitOfWork::new(tenant, None, at(2));
    uow.devices.push(w);
    store.commit(uow).await?;
    let devices = store.credential_devices(tenant, cred.id()).await?;
    let d0 = devices
        .iter()
        .find(|d| d.device_id == reg.devices[0])
        .context("d0")?;
    assert_eq!(
        (d0.pin.as_ref().map(|p| p.expose()), d0.pin_collisions),
        (Some("5551234"), 1)
    );
    Ok(())
}

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

/// Device lookup by room is scoped to the tenant and to the rooms asked for.
pub async fn devices_for_rooms_returns_only_own_devices_of_asked_rooms(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let a = seed_registry(store, TenantId::generate()).await?;
    // Tenant B has a device for a room with the same id.
    let bb = seed_registry(store, TenantId::generate()).await?;

    let found = store
        .devices_for_rooms(
            a.tenant,
            &property(),
            &[room("r101"), room("r103"), room("r999")],
        )
        .await?;
    let mut expected = vec![
        (a.devices[0].clone(), vec![room("r101")]),
        (a.devices[1].clone(), vec![room("r103")]),
    ];
    expected.sort();
    let mut got: Vec<_> = found
        .iter()
        .map(|d| (d.id.clone(), d.rooms.clone()))
        .collect();
    got.sort();
    assert_eq!(got, expected);
    for d in &found {
        assert_eq!(d.tenant_id, a.tenant);
        assert_eq!(d.vendor_adapter_id, a.adapter);
        assert_eq!(d.device_ref.expose(), format!("ttlock-lock-{}", d.id));
        assert!(!bb.devices.contains(&d.id));
    }

    let both = store
        .devices_for_rooms(a.tenant, &property(), &[room("r101"), room("r102")])
        .await?;
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].rooms, vec![room("r101"), room("r102")]);

    assert!(store
        .devices_for_rooms(a.tenant, &property(), &[])
        .await?
        .is_empty());
    let other_property = lockstep_domain::PropertyId::parse("prop-2")?;
    assert!(store
        .devices_for_rooms(a.tenant, &other_property, &[room("r101")])
        .await?
        .is_empty());
    Ok(())
}

/// Tenant scoping: what tenant A wrote is invisible to reads for tenant B, and B cannot
/// progress A's mailbox.
pub async fn tenant_b_cannot_see_or_touch_tenant_a_data(b: &Backend) -> anyhow::Result<()> {
    let store = b.store();
    let a = TenantId::generate();
    let other = TenantId::generate();
    let seeded = seed_everything(store, a).await?;
    let id = seeded.credential.id();

    // A sees its data.
    assert!(store.get_credential(a, id).await?.is_some());
    let entry = store
        .next_mailbox_entry(a, &seeded.subject, t0())
        .await?
        .context("a's entry")?;

    assert!(store.get_credential(other, id).await?.is_none());
    assert!(store
        .credentials_by_reservation(other, &seeded.reservation)
        .await?
        .is_empty());
    assert!(store
        .list_credentials(
            other,
            &lockstep_persistence::CredentialFilter::default(),
            100
        )
        .await?
        .is_empty());
    assert!(store
        .next_mailbox_entry(other, &seeded.subject, at(86_400))
        .await?
        .is_none());
    assert_eq!(store.load_saga(other, &seeded.subject).await?, None);
    assert!(store.credential_devices(other, id).await?.is_empty());
    assert!(store
        .devices_for_rooms(other, &property(), &[room("r101")])
        .await?
        .is_empty());

    let mut uow = UnitOfWork::new(other, None, at(1));
    uow.mailbox.push(MailboxUpdate::Done {
        id: entry.id,
        outcome: "stolen".into(),
    });
    let err = store
        .commit(uow)
        .await
        .expect_err("another tenant's mailbox entry");
    ensure!(
        matches!(err, StoreError::Conflict { entity: "mailbox" }),
        "got {err:?}"
    );

    let mut s = seeded.credential.snapshot();
    s.version = 2;
    let mut uow = UnitOfWork::new(other, None, at(1));
    uow.credentials.push(CredentialWrite {
        snapshot: s,
        expected_version: Some(1),
    });
    let err = store
        .commit(uow)
        .await
        .expect_err("another tenant's credential");
    ensure!(
        matches!(
            err,
            StoreError::Conflict {
                entity: "key_credentials"
            }
        ),
        "got {err:?}"
    );
    assert_eq!(
        store
            .get_credential(a, id)
            .await?
            .context("still there")?
            .version(),
        1
    );
    assert!(store
        .next_mailbox_entry(a, &seeded.subject, t0())
        .await?
        .is_some());
    Ok(())
}

fn is_overlap(r: &Result<(), StoreError>) -> bool {
    matches!(r, Err(StoreError::Overlap))
}

/// I-9 (DESIGN §12): a Jan 3–4 stay inside another reservation's Jan 1–5 on the same
/// room is refused with `Overlap`, whole step and all, on insert and when an update
/// widens a window or adds a room.
pub async fn i9_refuses_an_overlapping_stay_of_another_reservation(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let a = stay(&reg, &reservation(), &["r101"], day(0), day(4))?;
    store.commit(insert(a.snapshot(), t0())).await?;

    let rsv_b = reservation();
    let inside = stay(&reg, &rsv_b, &["r101"], day(2), day(3))?;
    let mut uow = insert(inside.snapshot(), t0());
    uow.saga = Some((subject_of(&rsv_b), serde_json::json!({ "x": 1 })));
    uow.outbox
        .push(outbox_row(tenant, inside.id().as_str(), t0()));
    let res = store.commit(uow).await;
    ensure!(is_overlap(&res), "Jan 3–4 inside Jan 1–5: {res:?}");
    assert!(store.get_credential(tenant, inside.id()).await?.is_none());
    assert_eq!(store.load_saga(tenant, &subject_of(&rsv_b)).await?, None);

    // Partial overlaps at either end, and a multi-room credential touching the room.
    for (from, until, rooms) in [
        (day(-1), day(1), vec!["r101"]),
        (day(3), day(6), vec!["r101"]),
        (day(-5), day(10), vec!["r101"]),
        (day(1), day(2), vec!["r101", "r102"]),
    ] {
        let c = stay(&reg, &reservation(), &rooms, from, until)?;
        let res = store.commit(insert(c.snapshot(), t0())).await;
        ensure!(is_overlap(&res), "{from}..{until} {rooms:?}: {res:?}");
    }
    // Suspended and pending credentials hold the room too.
    let a = set_state(store, &a, KeyCredentialState::Pending, at(1)).await?;
    let c = stay(&reg, &reservation(), &["r101"], day(1), day(2))?;
    ensure!(is_overlap(&store.commit(insert(c.snapshot(), t0())).await));
    let a = set_state(store, &a, KeyCredentialState::Suspended, at(2)).await?;
    ensure!(is_overlap(&store.commit(insert(c.snapshot(), t0())).await));
    let _ = a;

    // Updates: a later stay on r102 cannot widen into A's window, nor add r101.
    let later = stay(&reg, &reservation(), &["r102"], day(4), day(6))?;
    store.commit(insert(later.snapshot(), t0())).await?;
    let mut wider = later.snapshot();
    wider.validity = ValidityWindow::new(day(3), day(6))?;
    wider.rooms = vec![room("r101"), room("r102")];
    let res = update(store, &later, wider, at(3)).await;
    ensure!(
        matches!(
            res.as_ref().map_err(|e| e.downcast_ref::<StoreError>()),
            Err(Some(StoreError::Overlap))
        ),
        "widening into A's stay: {res:?}"
    );
    let got = store
        .get_credential(tenant, later.id())
        .await?
        .context("later")?;
    assert_eq!(
        snapshot_text(&got),
        snapshot_text(&later),
        "update rolled back"
    );
    Ok(())
}

/// I-9 allows: a second credential of the same stay on the room (two cards, a PIN and a
/// mobile key), an adjacent stay (until == next from), a master key over a guest room,
/// a revoked or failed credential's window, the same room of another tenant.
pub async fn i9_allows_same_stay_adjacent_stay_master_and_terminal_windows(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let rsv_a = reservation();
    let a = stay(&reg, &rsv_a, &["r101"], day(0), day(4))?;
    store.commit(insert(a.snapshot(), t0())).await?;

    let second_card = stay(&reg, &rsv_a, &["r101", "r102"], day(0), day(4))?;
    store.commit(insert(second_card.snapshot(), t0())).await?;
    let mobile = stay(&reg, &rsv_a, &["r101"], day(1), day(5))?;
    store.commit(insert(mobile.snapshot(), t0())).await?;

    let before = stay(&reg, &reservation(), &["r101"], day(-2), day(0))?;
    store.commit(insert(before.snapshot(), t0())).await?;
    let after = stay(&reg, &reservation(), &["r101"], day(5), day(7))?;
    store.commit(insert(after.snapshot(), t0())).await?;

    let master = master_credential(&reg, "staff-1", &["r101", "r102"], day(-10), day(10))?;
    store.commit(insert(master.snapshot(), t0())).await?;
    let master = set_state(store, &master, KeyCredentialState::Active, at(1)).await?;
    let _ = master;

    // A failed credential of another reservation: inserted failed, it holds nothing.
    let mut failed = stay(&reg, &reservation(), &["r101"], day(1), day(2))?.snapshot();
    failed.state = KeyCredentialState::Failed;
    failed.failure_reason = Some(FailureReason::VendorRefused);
    store.commit(insert(failed, t0())).await?;

    // Another tenant's room of the same name and property.
    let reg2 = seed_registry(store, TenantId::generate()).await?;
    let foreign = stay(&reg2, &reservation(), &["r101"], day(0), day(4))?;
    store.commit(insert(foreign.snapshot(), t0())).await?;

    // A later stay is refused while A lives and admitted once A and its siblings are
    // revoked (the room links follow the state).
    let newcomer = stay(&reg, &reservation(), &["r101"], day(2), day(3))?;
    ensure!(is_overlap(
        &store.commit(insert(newcomer.snapshot(), t0())).await
    ));
    for c in [&a, &second_card, &mobile] {
        set_state(store, c, KeyCredentialState::Revoked, at(5)).await?;
    }
    store.commit(insert(newcomer.snapshot(), t0())).await?;
    Ok(())
}

/// The room links follow every update of the credential: moving a stay to another room or
/// shortening its window frees what it left.
pub async fn i9_room_links_follow_rooms_and_window_of_the_credential(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let a = stay(&reg, &reservation(), &["r101"], day(0), day(4))?;
    store.commit(insert(a.snapshot(), t0())).await?;

    // Shorten A to Jan 1–2: Jan 3–4 is free.
    let mut s = a.snapshot();
    s.validity = ValidityWindow::new(day(0), day(1))?;
    let a = update(store, &a, s, at(1)).await?;
    let b1 = stay(&reg, &reservation(), &["r101"], day(2), day(3))?;
    store.commit(insert(b1.snapshot(), t0())).await?;

    // Move A to r103: r101 on Jan 1–2 is free.
    let mut s = a.snapshot();
    s.rooms = vec![room("r103")];
    let a = update(store, &a, s, at(2)).await?;
    let b2 = stay(&reg, &reservation(), &["r101"], day(0), day(1))?;
    store.commit(insert(b2.snapshot(), t0())).await?;
    // ... and r103 is taken.
    let b3 = stay(&reg, &reservation(), &["r103"], day(0), day(1))?;
    ensure!(is_overlap(&store.commit(insert(b3.snapshot(), t0())).await));
    let _ = a;
    Ok(())
}

/// Two store instances (two pools, as two processes) race to commit overlapping
/// credentials of different reservations for the same rooms: each round exactly one
/// wins and the loser gets `Overlap` (not a deadlock, not a busy error).
pub async fn i9_racing_stores_admit_exactly_one_overlapping_credential(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let [s1, s2] = b.twin_stores().await?;
    const ROUNDS: usize = 30;
    let mut wins = [0usize; 2];
    for round in 0..ROUNDS {
        let (ra, rb) = (format!("ra{round}"), format!("rb{round}"));
        let rooms = [ra.as_str(), rb.as_str()];
        let c1 = stay(&reg, &reservation(), &rooms, day(0), day(4))?;
        let c2 = stay(&reg, &reservation(), &rooms, day(3), day(8))?;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let spawn = |s: std::sync::Arc<dyn lockstep_persistence::Store>,
                     c: lockstep_domain::KeyCredential| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                s.commit(insert(c.snapshot(), t0())).await
            })
        };
        let h1 = spawn(s1.clone(), c1.clone());
        let h2 = spawn(s2.clone(), c2.clone());
        let (r1, r2) = (h1.await?, h2.await?);
        match (&r1, &r2) {
            (Ok(()), Err(StoreError::Overlap)) => wins[0] += 1,
            (Err(StoreError::Overlap), Ok(())) => wins[1] += 1,
            _ => anyhow::bail!("round {round}: want exactly one winner, got {r1:?} / {r2:?}"),
        }
        let stored = [
            store.get_credential(tenant, c1.id()).await?.is_some(),
            store.get_credential(tenant, c2.id()).await?.is_some(),
        ];
        assert_eq!(stored, [r1.is_ok(), r2.is_ok()], "round {round}");
        let cond = format!("room_id IN ('{ra}', '{rb}')");
        assert_eq!(
            b.count_where("key_credential_rooms", tenant, &cond).await?,
            2,
            "round {round}: the winner's two room links only"
        );
    }
    assert_eq!(wins[0] + wins[1], ROUNDS);
    Ok(())
}

/// Master keys (spec 004, M-1, M-2): written inside the unit of work, read back by staff
/// user and by credential; one active key per (property, staff user, scope kind); a
/// revoke frees the slot; the credential must be a staff master credential.
pub async fn master_keys_insert_revoke_and_one_active_per_scope_kind(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let mc1 = master_credential(&reg, "staff-7", &["r101"], day(0), day(1))?;
    let mk1 = master_key(&mc1, "floors");
    let mut uow = insert(mc1.snapshot(), t0());
    uow.master = Some(MasterKeyWrite::Insert(mk1.clone()));
    store.commit(uow).await?;
    assert_eq!(
        store.active_masters_of_user(tenant, "staff-7").await?,
        vec![mk1.clone()]
    );
    assert_eq!(
        store.master_by_credential(tenant, mc1.id()).await?,
        Some(mk1.clone())
    );

    // M-2: a second active "floors" key of the same staff user is refused, step and all.
    let mc2 = master_credential(&reg, "staff-7", &["r102"], day(0), day(1))?;
    let mut mk2 = master_key(&mc2, "floors");
    mk2.issued_at = at(10);
    let mut uow = insert(mc2.snapshot(), at(10));
    uow.master = Some(MasterKeyWrite::Insert(mk2.clone()));
    let res = store.commit(uow).await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "M-2: {res:?}"
    );
    assert!(store.get_credential(tenant, mc2.id()).await?.is_none());

    // Another scope kind is fine.
    let mc3 = master_credential(&reg, "staff-7", &["r103"], day(0), day(1))?;
    let mut mk3 = master_key(&mc3, "areas");
    mk3.issued_at = at(20);
    let mut uow = insert(mc3.snapshot(), at(20));
    uow.master = Some(MasterKeyWrite::Insert(mk3.clone()));
    store.commit(uow).await?;
    assert_eq!(
        store.active_masters_of_user(tenant, "staff-7").await?,
        vec![mk1.clone(), mk3.clone()]
    );

    // Revoke mk1; revoking again keeps the first time; the renewal then goes in.
    for when in [at(30), at(40)] {
        let mut uow = UnitOfWork::new(tenant, None, when);
        uow.master = Some(MasterKeyWrite::Revoke {
            id: mk1.id.clone(),
            revoked_at: when,
        });
        store.commit(uow).await?;
    }
    let got = store
        .master_by_credential(tenant, mc1.id())
        .await?
        .context("mk1")?;
    assert_eq!(got.revoked_at, Some(at(30)));
    assert_eq!(
        store.active_masters_of_user(tenant, "staff-7").await?,
        vec![mk3.clone()]
    );
    let mut uow = insert(mc2.snapshot(), at(50));
    uow.master = Some(MasterKeyWrite::Insert(mk2.clone()));
    store.commit(uow).await?;
    assert_eq!(
        store.active_masters_of_user(tenant, "staff-7").await?,
        vec![mk2.clone(), mk3.clone()]
    );

    // Unknown key: Conflict.
    let mut uow = UnitOfWork::new(tenant, None, at(60));
    uow.master = Some(MasterKeyWrite::Revoke {
        id: "mky_unknown".into(),
        revoked_at: at(60),
    });
    let res = store.commit(uow).await;
    ensure!(
        matches!(
            res,
            Err(StoreError::Conflict {
                entity: "master_keys"
            })
        ),
        "{res:?}"
    );

    // M-1: a guest credential cannot back a master key; one key per credential.
    let guest = stay(&reg, &reservation(), &["r101"], day(20), day(21))?;
    store.commit(insert(guest.snapshot(), t0())).await?;
    let mut on_guest = master_key(&mc1, "doors");
    on_guest.key_credential_id = guest.id().clone();
    on_guest.staff_user_id = "staff-8".into();
    let mut uow = UnitOfWork::new(tenant, None, at(70));
    uow.master = Some(MasterKeyWrite::Insert(on_guest));
    let res = store.commit(uow).await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "M-1: {res:?}"
    );
    let mut twice = master_key(&mc3, "doors");
    twice.staff_user_id = "staff-8".into();
    let mut uow = UnitOfWork::new(tenant, None, at(70));
    uow.master = Some(MasterKeyWrite::Insert(twice));
    let res = store.commit(uow).await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "second key on one credential: {res:?}"
    );

    // Tenant scoping.
    let other = TenantId::generate();
    assert!(store
        .active_masters_of_user(other, "staff-7")
        .await?
        .is_empty());
    assert_eq!(store.master_by_credential(other, mc1.id()).await?, None);
    let mut foreign = master_key(&mc1, "elsewhere");
    foreign.tenant_id = other;
    let mut uow = UnitOfWork::new(tenant, None, at(80));
    uow.master = Some(MasterKeyWrite::Insert(foreign));
    ensure!(matches!(
        store.commit(uow).await,
        Err(StoreError::Constraint(_))
    ));
    Ok(())
}

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

/// Bulk revoke support: a property's credentials in the asked states, oldest first, each
/// with what routes it to its saga (reservation; staff user and shift).
pub async fn credentials_of_property_filters_states_and_routes_to_subjects(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let rsv = reservation();
    let guest = stay(&reg, &rsv, &["r101"], day(0), day(2))?;
    store.commit(insert(guest.snapshot(), at(1))).await?;
    let gone = stay(&reg, &reservation(), &["r102"], day(0), day(2))?;
    store.commit(insert(gone.snapshot(), at(2))).await?;
    set_state(store, &gone, KeyCredentialState::Revoked, at(3)).await?;
    let master = master_credential(&reg, "staff-9", &[], day(0), day(1))?;
    let mut uow = insert(master.snapshot(), at(4));
    uow.master = Some(MasterKeyWrite::Insert(master_key(&master, "floors")));
    store.commit(uow).await?;
    let mut elsewhere = stay(&reg, &reservation(), &["r101"], day(0), day(2))?.snapshot();
    elsewhere.property_id = lockstep_domain::PropertyId::parse("prop-2")?;
    store.commit(insert(elsewhere, at(5))).await?;

    let live = store
        .credentials_of_property(
            tenant,
            &property(),
            &["requested", "pending", "active", "suspended"],
        )
        .await?;
    assert_eq!(
        live,
        vec![
            PropertyCredential {
                id: guest.id().clone(),
                state: "requested".into(),
                holder_kind: "guest".into(),
                reservation_id: Some(rsv.as_str().to_owned()),
                staff_user_id: None,
                shift_id: None,
            },
            PropertyCredential {
                id: master.id().clone(),
                state: "requested".into(),
                holder_kind: "staff_master".into(),
                reservation_id: None,
                staff_user_id: Some("staff-9".into()),
                shift_id: Some("shift-1".into()),
            },
        ]
    );
    let all: Vec<_> = store
        .credentials_of_property(tenant, &property(), &[])
        .await?
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    assert_eq!(
        all,
        vec![
            (guest.id().clone(), "requested".to_owned()),
            (gone.id().clone(), "revoked".to_owned()),
            (master.id().clone(), "requested".to_owned()),
        ]
    );
    let revoked = store
        .credentials_of_property(tenant, &property(), &["revoked"])
        .await?;
    assert_eq!(revoked.len(), 1);
    assert_eq!(&revoked[0].id, gone.id());
    assert!(store
        .credentials_of_property(TenantId::generate(), &property(), &[])
        .await?
        .is_empty());
    Ok(())
}

/// The "revocations not yet confirmed at the door" gauge (DESIGN §3.5), across tenants on
/// the worker path: pending removals and their oldest `updated_at`, pending issues.
pub async fn door_backlog_counts_unconfirmed_removals_and_issues(
    b: &Backend,
) -> anyhow::Result<()> {
    // Totals are global: a database of its own.
    let b = b.isolated().await?;
    let store = b.store();
    assert_eq!(store.door_backlog().await?, DoorBacklog::default());

    let long_ago = t0() - chrono::Duration::days(400);
    let mut rows = Vec::new(); // (tenant, desired, sync, now)
    for (i, tenant) in [TenantId::generate(), TenantId::generate()]
        .into_iter()
        .enumerate()
    {
        let reg = seed_registry(store, tenant).await?;
        let specs = [
            (Desired::Absent, SyncState::Pending),
            (Desired::Absent, SyncState::Confirmed),
            (Desired::Absent, SyncState::Failed),
            (Desired::Present, SyncState::Pending),
            (Desired::Present, SyncState::Confirmed),
        ];
        for (j, (desired, sync)) in specs.into_iter().enumerate() {
            let room = format!("r{j}");
            let c = stay(&reg, &reservation(), &[room.as_str()], day(0), day(1))?;
            let now = long_ago + chrono::Duration::days((10 * i + j) as i64);
            let mut uow = insert(c.snapshot(), now);
            let mut w = device_write(c.id(), &reg.devices[0], None, None)?;
            w.desired = desired;
            w.sync = sync;
            uow.devices.push(w);
            store.commit(uow).await?;
            rows.push((tenant, desired, sync, now));
        }
    }
    assert_eq!(
        store.door_backlog().await?,
        DoorBacklog {
            pending_removals: 2,
            oldest_pending_removal: Some(long_ago),
            pending_issues: 2,
        }
    );
    Ok(())
}

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

fn device_record(
    registry: &Registry,
    id: &lockstep_domain::LockDeviceId,
    property_id: &str,
    vendor_ref: &str,
) -> lockstep_persistence::DeviceRecord {
    lockstep_persistence::DeviceRecord {
        id: id.clone(),
        tenant_id: registry.tenant,
        property_id: lockstep_domain::PropertyId::parse(property_id).expect("a property id"),
        vendor: lockstep_domain::VendorCode::Ttlock,
        vendor_adapter_id: registry.adapter.clone(),
        device_ref: lockstep_domain::DeviceRef::new(vendor_ref),
        label: "door".into(),
        capabilities: serde_json::json!({}),
        rooms: vec![room("r190")],
        now: t0(),
        on_register: vec![outbox_row(registry.tenant, id.as_str(), t0())],
    }
}

/// Spec 003 D-1: `vendorDeviceRef` is unique within (tenant, property, vendor), enforced on
/// the encrypted ref's blind index; the same ref in another property is another lock.
pub async fn d1_a_vendor_device_ref_registers_once_per_property_and_vendor(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let registry = seed_registry(store, TenantId::generate()).await?;
    let first = lockstep_domain::LockDeviceId::generate();
    assert!(
        store
            .upsert_device(&device_record(&registry, &first, "ppt_test", "lock-777"))
            .await?
    );
    let twin = lockstep_domain::LockDeviceId::generate();
    let refused = store
        .upsert_device(&device_record(&registry, &twin, "ppt_test", "lock-777"))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Constraint(_))),
        "D-1: {refused:?}"
    );
    // re-registering the same device is an update, not a duplicate
    assert!(
        !store
            .upsert_device(&device_record(&registry, &first, "ppt_test", "lock-777"))
            .await?
    );
    assert!(
        store
            .upsert_device(&device_record(&registry, &twin, "ppt_other", "lock-777"))
            .await?
    );
    Ok(())
}

/// The registry keeps the last health reading (none before the first probe), moves
/// `last_seen_at` only while online, and writes a device's `registered` event only when
/// the device is new.
pub async fn device_health_round_trips_and_registration_writes_its_event_once(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let registry = seed_registry(store, tenant).await?;
    let before = b.count("outbox", tenant).await?;
    let id = lockstep_domain::LockDeviceId::generate();
    store
        .upsert_device(&device_record(&registry, &id, "ppt_test", "lock-1"))
        .await?;
    store
        .upsert_device(&device_record(&registry, &id, "ppt_test", "lock-1"))
        .await?;
    assert_eq!(
        b.count("outbox", tenant).await?,
        before + 1,
        "one registered event"
    );

    let fresh = store.device_health(tenant, &id).await?.expect("known");
    assert_eq!(fresh.last, None, "not probed yet");
    assert_eq!(fresh.threshold, lockstep_domain::BatteryThreshold::DEFAULT);
    assert!(!fresh.decommissioned);
    assert_eq!(
        store.device_health(TenantId::generate(), &id).await?,
        None,
        "tenant scoped"
    );

    let reading =
        lockstep_domain::DeviceHealth::new(true, Some(64), Some("5.1".into()), Some(-1200))?;
    let mut uow = UnitOfWork::new(tenant, None, day(1));
    uow.device_health
        .push(lockstep_persistence::DeviceHealthWrite {
            device_id: id.clone(),
            health: reading.clone(),
        });
    store.commit(uow).await?;
    let seen = store.device_health(tenant, &id).await?.expect("known");
    assert_eq!(seen.last, Some(reading));
    assert_eq!(seen.last_seen_at, Some(day(1)));

    let offline = lockstep_domain::DeviceHealth::new(false, Some(10), None, None)?;
    let mut uow = UnitOfWork::new(tenant, None, day(2));
    uow.device_health
        .push(lockstep_persistence::DeviceHealthWrite {
            device_id: id.clone(),
            health: offline.clone(),
        });
    store.commit(uow).await?;
    let seen = store.device_health(tenant, &id).await?.expect("known");
    assert_eq!(seen.last, Some(offline));
    assert_eq!(seen.last_seen_at, Some(day(1)), "last seen while online");

    // a reading for an unknown device fails the whole unit of work
    let mut uow = UnitOfWork::new(tenant, None, day(3));
    uow.device_health
        .push(lockstep_persistence::DeviceHealthWrite {
            device_id: lockstep_domain::LockDeviceId::generate(),
            health: lockstep_domain::DeviceHealth::decommissioned(),
        });
    assert!(store.commit(uow).await.is_err());
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

/// DESIGN §12: audit rows form one gap-free hash chain per (tenant, property), in commit
/// order, across units of work; the chains are listed for the verifier.
pub async fn audit_rows_form_one_gap_free_hash_chain_per_property(
    b: &Backend,
) -> anyhow::Result<()> {
    use lockstep_persistence::audit::{verify_chain, GENESIS};
    let store = b.store();
    let tenant = TenantId::generate();
    let credential = lockstep_domain::KeyCredentialId::generate();
    let other = lockstep_domain::PropertyId::parse("ppt_chain_other")?;
    for i in 0..3 {
        let mut uow = UnitOfWork::new(tenant, None, day(i));
        uow.audit.push(audit_row(tenant, &credential, day(i)));
        let mut elsewhere = audit_row(tenant, &credential, day(i));
        elsewhere.property_id = other.clone();
        uow.audit.push(elsewhere);
        uow.audit.push(audit_row(tenant, &credential, day(i)));
        store.commit(uow).await?;
    }
    let chain = store.audit_chain(tenant, &property()).await?;
    assert_eq!(
        chain.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(chain[0].prev_hash, GENESIS);
    let (faults, head) = verify_chain(&chain);
    assert_eq!(faults, vec![]);
    assert_eq!(head, chain[5].row_hash);
    let theirs = store.audit_chain(tenant, &other).await?;
    assert_eq!(theirs.len(), 3);
    assert_eq!(verify_chain(&theirs).0, vec![]);
    assert!(store
        .audit_chain(TenantId::generate(), &property())
        .await?
        .is_empty());
    let chains = store.audit_chains().await?;
    assert!(chains.contains(&(tenant, property())) && chains.contains(&(tenant, other)));
    Ok(())
}

/// Spec `003` §1.5: A-2, one attempt per (tenant, vendor, vendor event id), checked by the
/// store (a second one refuses the whole commit); A-1, the schema refuses UPDATE and
/// DELETE of an attempt. Webhook deliveries are recorded once per tenant.
pub async fn attempts_are_append_only_and_unique_per_vendor_event(
    b: &Backend,
) -> anyhow::Result<()> {
    use lockstep_domain::{AttemptReport, KeyCredentialAttempt, LockDeviceId, VendorCode};
    let store = b.store();
    let tenant = TenantId::generate();
    let report = |id: &str| AttemptReport {
        vendor_event_id: id.into(),
        attempted_at: t0(),
        granted: false,
        device_id: LockDeviceId::generate(),
        property_id: property(),
        vendor: VendorCode::Ttlock,
        method: "pin_code",
    };
    let attempt = KeyCredentialAttempt::record(tenant, report("1001:1"), None, t0())?;
    let mut uow = UnitOfWork::new(tenant, None, t0());
    uow.attempts.push(attempt.clone());
    uow.webhooks.push(lockstep_persistence::WebhookInboxRow {
        id: format!("whk_{}", ulid::Ulid::new()),
        vendor: VendorCode::Ttlock,
        external_event_id: "1001:abc".into(),
        kind: "lock_records".into(),
        payload: serde_json::json!({ "lockId": 1001, "records": 1 }),
        signature_ok: true,
        received_at: t0(),
        outcome: "processed".into(),
    });
    store.commit(uow).await?;
    assert_eq!(b.count("key_credential_attempts", tenant).await?, 1);
    assert!(
        store
            .webhook_seen(tenant, VendorCode::Ttlock, "1001:abc")
            .await?
    );
    assert!(
        !store
            .webhook_seen(TenantId::generate(), VendorCode::Ttlock, "1001:abc")
            .await?
    );
    assert_eq!(
        store
            .seen_vendor_events(
                tenant,
                VendorCode::Ttlock,
                &["1001:1".into(), "1001:2".into()]
            )
            .await?,
        vec!["1001:1".to_owned()]
    );

    // the same vendor event again refuses the commit, and nothing of it is written
    let mut again = UnitOfWork::new(tenant, None, t0());
    again.attempts.push(KeyCredentialAttempt::record(
        tenant,
        report("1001:1"),
        None,
        t0(),
    )?);
    again.audit.push(audit_row_for_property(tenant, t0()));
    assert!(store.commit(again).await.is_err());
    assert_eq!(b.count("key_credential_attempts", tenant).await?, 1);
    assert_eq!(b.count("lock_audit", tenant).await?, 0);
    // another tenant's event with the same id is its own
    let other = TenantId::generate();
    let mut theirs = UnitOfWork::new(other, None, t0());
    theirs.attempts.push(KeyCredentialAttempt::record(
        other,
        report("1001:1"),
        None,
        t0(),
    )?);
    store.commit(theirs).await?;

    // no UPDATE, no DELETE
    let id = attempt.id.as_str();
    let update = b
        .exec_as_tenant(
            tenant,
            &format!("UPDATE key_credential_attempts SET outcome = 'granted' WHERE id = '{id}'"),
        )
        .await;
    // Postgres: the service role has no UPDATE or DELETE grant, and the trigger refuses
    // them for any role; SQLite: the trigger
    let refused = |r: &Result<u64, String>| {
        r.as_ref()
            .is_err_and(|e| e.contains("append-only") || e.contains("permission denied"))
    };
    assert!(refused(&update), "{update:?}");
    let delete = b
        .exec_as_tenant(
            tenant,
            &format!("DELETE FROM key_credential_attempts WHERE id = '{id}'"),
        )
        .await;
    assert!(refused(&delete), "{delete:?}");
    assert_eq!(
        b.count_where("key_credential_attempts", tenant, "outcome = 'denied'")
            .await?,
        1
    );
    Ok(())
}

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

/// Spec `003` §5 / `004` §3: an offline-issuance certificate round-trips, its revocation
/// is stored, O-1 and O-3 hold in the schema too, and another tenant sees none of it.
pub async fn offline_certificates_round_trip_and_stay_in_their_tenant(
    b: &Backend,
) -> anyhow::Result<()> {
    use lockstep_domain::{KeyCredentialKind, OfflineIssuance, OfflineRevokeReason};
    let store = b.store();
    let tenant = TenantId::generate();
    let mut cert = OfflineIssuance::issue(
        tenant,
        property(),
        "desk-1",
        "MCowBQYDK2VwAyEA",
        vec![KeyCredentialKind::PinCode, KeyCredentialKind::RfidCard],
        &[KeyCredentialKind::PinCode, KeyCredentialKind::RfidCard],
        24,
        t0(),
    )?;
    store.save_offline_cert(&cert).await?;
    assert_eq!(
        store.offline_cert(tenant, cert.id.as_str()).await?,
        Some(cert.clone())
    );
    cert.revoke(OfflineRevokeReason::Rotation, at(3600));
    store.save_offline_cert(&cert).await?;
    let got = store
        .offline_cert(tenant, cert.id.as_str())
        .await?
        .context("stored")?;
    assert_eq!(got.revoke_reason, Some(OfflineRevokeReason::Rotation));
    assert_eq!(got.revoked_at, Some(at(3600)));
    assert_eq!(
        store
            .offline_cert(TenantId::generate(), cert.id.as_str())
            .await?,
        None
    );
    // the schema refuses a window over 48 hours (O-3) and a lifetime other than 90 days
    let mut long = OfflineIssuance::issue(
        tenant,
        property(),
        "desk-2",
        "k",
        vec![KeyCredentialKind::PinCode],
        &[KeyCredentialKind::PinCode],
        48,
        t0(),
    )?;
    long.max_valid_window_hours = 72;
    assert!(
        store.save_offline_cert(&long).await.is_err(),
        "O-3 in the schema"
    );
    let mut short = OfflineIssuance::issue(
        tenant,
        property(),
        "desk-3",
        "k",
        vec![KeyCredentialKind::PinCode],
        &[KeyCredentialKind::PinCode],
        48,
        t0(),
    )?;
    short.expires_at = short.issued_at + chrono::Duration::days(30);
    assert!(
        store.save_offline_cert(&short).await.is_err(),
        "O-1 in the schema"
    );
    Ok(())
}
