//! `ReadOnlyDoorTruthTable`/`DoorTruthTable` (door truth per credential and device, DESIGN
//! §3.5) and the worker path's `ReadOnlyDoorBacklogTable`.

use super::prelude::*;

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
    let mut w = store.worker_read().await?;
    assert_eq!(
        w.door_backlog().await?,
        DoorBacklog {
            pending_removals: 2,
            oldest_pending_removal: Some(long_ago),
            pending_issues: 2,
        },
        "the table reads what the store reads"
    );
    w.commit().await?;
    Ok(())
}

/// DESIGN §3.5: `put_door_truth` keeps the stale-key window (a row that becomes absent and
/// pending starts it at `learned_at`, keeps it while absent, clears it once present
/// again); `credential_devices` and `device_credentials` read the rows in the writing
/// transaction, by device and by credential.
pub async fn door_truth_keeps_the_stale_key_window_and_reads_by_credential_and_device(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let [d1, d2] = &reg.devices;
    let c1 = stay(&reg, &reservation(), &["r101"], day(0), day(1))?;
    let c2 = stay(&reg, &reservation(), &["r101"], day(2), day(3))?;
    let mut tx = store.begin(tenant, None).await?;
    tx.insert_credential(&c1.snapshot()).await?;
    tx.insert_credential(&c2.snapshot()).await?;
    for (c, d) in [(&c1, d1), (&c1, d2), (&c2, d1)] {
        tx.put_door_truth(
            &door(c.id(), d, Desired::Present, SyncState::Pending),
            t0(),
            t0(),
        )
        .await?;
    }
    let mut devices: Vec<_> = [d1.clone(), d2.clone()].to_vec();
    devices.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    let rows = tx.credential_devices(c1.id()).await?;
    assert_eq!(
        rows.iter().map(|r| r.device_id.clone()).collect::<Vec<_>>(),
        devices,
        "by device"
    );
    assert!(rows.iter().all(|r| r.removal_requested_at.is_none()));
    let mut credentials = vec![c1.id().clone(), c2.id().clone()];
    credentials.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(
        tx.device_credentials(d1)
            .await?
            .iter()
            .map(|r| r.credential_id.clone())
            .collect::<Vec<_>>(),
        credentials,
        "by credential"
    );
    let window = |rows: Vec<lockstep_persistence::CredentialDevice>| {
        rows.into_iter()
            .find(|r| r.device_id == *d1)
            .map(|r| (r.desired, r.sync, r.removal_requested_at))
    };
    for (desired, sync, now, learned, want) in [
        (
            Desired::Absent,
            SyncState::Pending,
            at(10),
            at(5),
            Some(at(5)),
        ),
        (
            Desired::Absent,
            SyncState::Pending,
            at(20),
            at(15),
            Some(at(5)),
        ),
        (
            Desired::Absent,
            SyncState::Confirmed,
            at(30),
            at(25),
            Some(at(5)),
        ),
        (Desired::Present, SyncState::Pending, at(40), at(35), None),
    ] {
        tx.put_door_truth(&door(c1.id(), d1, desired, sync), now, learned)
            .await?;
        assert_eq!(
            window(tx.credential_devices(c1.id()).await?),
            Some((desired, sync, want)),
            "{desired:?}/{sync:?} at {now}"
        );
    }
    tx.commit().await?;
    let mut rtx = store.read(TenantId::generate()).await?;
    assert!(rtx.credential_devices(c1.id()).await?.is_empty());
    assert!(
        rtx.device_credentials(d1).await?.is_empty(),
        "tenant scoped"
    );
    Ok(())
}

/// DESIGN §7: `pending_removals` counts the rows still to be removed at the door (absent,
/// pending) on the devices of the adapters asked about, and nothing of another tenant.
pub async fn pending_removals_count_absent_pending_rows_of_the_adapters_asked(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let a = seed_registry(store, tenant).await?;
    // a second adapter of the tenant (another vendor) with a device of its own
    let other = Registry {
        tenant,
        adapter: lockstep_domain::VendorAdapterId::generate(),
        devices: [
            lockstep_domain::LockDeviceId::generate(),
            lockstep_domain::LockDeviceId::generate(),
        ],
    };
    let mut tx = store.begin(tenant, None).await?;
    tx.upsert_adapter(&lockstep_persistence::AdapterRecord {
        id: other.adapter.clone(),
        tenant_id: tenant,
        property_id: property(),
        vendor: VendorCode::Salto,
        environment: "sandbox".into(),
        capabilities: serde_json::json!({}),
        config: serde_json::json!({}),
        enabled: true,
        precedence: 100,
        now: t0(),
    })
    .await?;
    tx.upsert_device(&device_record(
        &other,
        &other.devices[0],
        "prop-1",
        "salto-1",
    ))
    .await?;
    for (i, (device, desired, sync)) in [
        (&a.devices[0], Desired::Absent, SyncState::Pending),
        (&a.devices[1], Desired::Absent, SyncState::Pending),
        (&a.devices[0], Desired::Absent, SyncState::Confirmed),
        (&a.devices[0], Desired::Present, SyncState::Pending),
        (&other.devices[0], Desired::Absent, SyncState::Pending),
    ]
    .into_iter()
    .enumerate()
    {
        let room = format!("r-rm-{i}");
        let c = stay(&a, &reservation(), &[room.as_str()], day(0), day(1))?;
        tx.insert_credential(&c.snapshot()).await?;
        tx.put_door_truth(&door(c.id(), device, desired, sync), t0(), t0())
            .await?;
    }
    assert_eq!(
        tx.pending_removals(std::slice::from_ref(&a.adapter))
            .await?,
        2
    );
    tx.commit().await?;
    let mut rtx = store.read(tenant).await?;
    assert_eq!(
        rtx.pending_removals(&[a.adapter.clone(), other.adapter.clone()])
            .await?,
        3
    );
    assert_eq!(rtx.pending_removals(&[]).await?, 0);
    let mut theirs = store.read(TenantId::generate()).await?;
    assert_eq!(
        theirs
            .pending_removals(std::slice::from_ref(&a.adapter))
            .await?,
        0
    );
    Ok(())
}
