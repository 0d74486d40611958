//! `Store::commit`, the compatibility layer's unit of work: one saga step's writes across
//! the tables, all or nothing, in its tenant.

use super::prelude::*;

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
        subject: entry.subject.clone(),
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
        subject: entry.subject.clone(),
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
        subject: entry.subject.clone(),
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
        subject: entry.subject.clone(),
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
