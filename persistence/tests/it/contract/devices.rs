//! `ReadOnlyDeviceTable`/`DeviceTable`: adapters, devices and their rooms, device health
//! (D-1, D-2, D-4).

use super::prelude::*;

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

    let mut rtx = store.read(a.tenant).await?;
    let direct = rtx
        .devices_for_rooms(&property(), &[room("r101"), room("r103"), room("r999")])
        .await?;
    assert_eq!(
        direct
            .iter()
            .map(|d| (d.id.clone(), d.rooms.clone()))
            .collect::<Vec<_>>(),
        found
            .iter()
            .map(|d| (d.id.clone(), d.rooms.clone()))
            .collect::<Vec<_>>(),
        "the table reads what the store reads"
    );
    // more rooms than one SQLite statement binds: the chunks merge, rooms stay sorted
    let mut many: Vec<_> = (0..1_100).map(|i| room(&format!("rx{i:04}"))).collect();
    many.insert(0, room("r102"));
    many.push(room("r101"));
    let merged = rtx.devices_for_rooms(&property(), &many).await?;
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0].rooms, vec![room("r101"), room("r102")]);
    rtx.commit().await?;
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

/// Master-key area scopes (migration 0016): a door's area is stored with the device,
/// read back by `area_devices` (only doors with an area, of this tenant and property) and
/// by `devices_for_rooms` for a door that also serves rooms; an upsert can change it.
pub async fn area_devices_are_the_live_doors_with_an_area_of_the_property(
    b: &Backend,
) -> anyhow::Result<()> {
    use lockstep_domain::CommonArea;
    use lockstep_persistence::DeviceRecord;
    let store = b.store();
    let a = seed_registry(store, TenantId::generate()).await?;
    let other = seed_registry(store, TenantId::generate()).await?;
    let gym = lockstep_domain::LockDeviceId::generate();
    let boh = lockstep_domain::LockDeviceId::generate();
    store
        .upsert_device(&DeviceRecord {
            rooms: vec![],
            area: Some(CommonArea::Gym),
            ..device_record(&a, &gym, "prop-1", "lock-gym")
        })
        .await?;
    store
        .upsert_device(&DeviceRecord {
            area: Some(CommonArea::BackOfHouse),
            ..device_record(&a, &boh, "prop-1", "lock-boh")
        })
        .await?;
    // another tenant's area door with the same property id is not ours
    store
        .upsert_device(&DeviceRecord {
            area: Some(CommonArea::Gym),
            ..device_record(
                &other,
                &lockstep_domain::LockDeviceId::generate(),
                "prop-1",
                "lock-gym",
            )
        })
        .await?;
    let mut rtx = store.read(a.tenant).await?;
    let found = rtx.area_devices(&property()).await?;
    let mut got: Vec<_> = found.iter().map(|d| (d.id.clone(), d.area)).collect();
    got.sort();
    let mut want = vec![
        (gym.clone(), Some(CommonArea::Gym)),
        (boh.clone(), Some(CommonArea::BackOfHouse)),
    ];
    want.sort();
    assert_eq!(got, want);
    assert!(found
        .iter()
        .all(|d| d.rooms.is_empty() && d.tenant_id == a.tenant));
    assert_eq!(
        found
            .iter()
            .find(|d| d.id == gym)
            .map(|d| d.device_ref.expose().to_owned()),
        Some("lock-gym".to_owned()),
        "the ref is decrypted"
    );
    // a door of rooms and an area: its area comes with it by room too; room doors have none
    let by_room = rtx
        .devices_for_rooms(&property(), &[room("r190"), room("r101")])
        .await?;
    assert_eq!(
        by_room.iter().find(|d| d.id == boh).map(|d| d.area),
        Some(Some(CommonArea::BackOfHouse))
    );
    assert!(by_room
        .iter()
        .filter(|d| d.id != boh)
        .all(|d| d.area.is_none()));
    rtx.commit().await?;
    // an upsert moves the door out of its area
    store
        .upsert_device(&DeviceRecord {
            area: None,
            ..device_record(&a, &boh, "prop-1", "lock-boh")
        })
        .await?;
    let mut rtx = store.read(a.tenant).await?;
    let ids: Vec<_> = rtx
        .area_devices(&property())
        .await?
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, vec![gym]);
    assert!(rtx
        .area_devices(&lockstep_domain::PropertyId::parse("prop-2")?)
        .await?
        .is_empty());
    rtx.commit().await?;
    Ok(())
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

/// The registry through a `Tx`: `upsert_adapter` (an id of another tenant is refused),
/// `upsert_device` (true only when new), `property_rooms`, `device_property` (`None` once
/// decommissioned or unknown), `record_device_health` (an unknown device is refused) and
/// `device_health`.
pub async fn registry_writes_are_read_back_and_stay_in_their_tenant(
    b: &Backend,
) -> anyhow::Result<()> {
    use lockstep_domain::{DeviceHealth, LockDeviceId, VendorAdapterId};
    use lockstep_persistence::{AdapterRecord, DeviceHealthWrite};
    let store = b.store();
    let tenant = TenantId::generate();
    let adapter = AdapterRecord {
        id: VendorAdapterId::generate(),
        tenant_id: tenant,
        property_id: property(),
        vendor: VendorCode::Ttlock,
        environment: "sandbox".into(),
        capabilities: serde_json::json!({ "pin_code": true }),
        config: serde_json::json!({ "baseUrl": "http://127.0.0.1:1" }),
        enabled: true,
        precedence: 100,
        now: t0(),
    };
    let mut tx = store.begin(tenant, None).await?;
    tx.upsert_adapter(&adapter).await?;
    tx.upsert_adapter(&AdapterRecord {
        now: at(1),
        ..adapter.clone()
    })
    .await?;
    let reg = Registry {
        tenant,
        adapter: adapter.id.clone(),
        devices: [LockDeviceId::generate(), LockDeviceId::generate()],
    };
    let mut first = device_record(&reg, &reg.devices[0], "prop-1", "lock-a");
    first.rooms = vec![room("r202"), room("r201")];
    ensure!(tx.upsert_device(&first).await?, "new");
    ensure!(!tx.upsert_device(&first).await?, "known");
    ensure!(
        tx.upsert_device(&device_record(&reg, &reg.devices[1], "prop-1", "lock-b"))
            .await?
    );
    assert_eq!(
        tx.property_rooms(&property()).await?,
        vec![room("r190"), room("r201"), room("r202")]
    );
    assert_eq!(tx.device_property(&reg.devices[0]).await?, Some(property()));
    let reading = DeviceHealth::new(true, Some(80), Some("6.0".into()), Some(15))?;
    tx.record_device_health(
        &DeviceHealthWrite {
            device_id: reg.devices[0].clone(),
            health: reading.clone(),
        },
        day(1),
    )
    .await?;
    let health = tx.device_health(&reg.devices[0]).await?.context("known")?;
    assert_eq!(
        (health.last, health.last_seen_at, health.decommissioned),
        (Some(reading), Some(day(1)), false)
    );
    let res = tx
        .record_device_health(
            &DeviceHealthWrite {
                device_id: LockDeviceId::generate(),
                health: DeviceHealth::decommissioned(),
            },
            day(1),
        )
        .await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "unknown device: {res:?}"
    );
    tx.commit().await?;
    assert_eq!(
        b.count("outbox", tenant).await?,
        2,
        "one registered event each"
    );

    b.decommission(tenant, &reg.devices[1]).await?;
    let mut rtx = store.read(tenant).await?;
    assert_eq!(rtx.device_property(&reg.devices[1]).await?, None);
    assert_eq!(rtx.device_property(&LockDeviceId::generate()).await?, None);
    assert_eq!(
        rtx.property_rooms(&property()).await?,
        vec![room("r201"), room("r202")],
        "a decommissioned device serves no room"
    );
    ensure!(
        rtx.device_health(&reg.devices[1])
            .await?
            .context("known")?
            .decommissioned
    );
    rtx.commit().await?;

    // another tenant can neither take the adapter id nor see the devices
    let stranger = TenantId::generate();
    let mut theirs = store.begin(stranger, None).await?;
    assert_eq!(theirs.device_property(&reg.devices[0]).await?, None);
    assert_eq!(theirs.device_health(&reg.devices[0]).await?, None);
    let res = theirs
        .upsert_adapter(&AdapterRecord {
            tenant_id: stranger,
            ..adapter.clone()
        })
        .await;
    ensure!(res.is_err(), "another tenant's adapter id: {res:?}");
    let res = theirs.upsert_adapter(&adapter).await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "a record of another tenant: {res:?}"
    );
    Ok(())
}

/// Device lifecycle (issue 14) through a `Tx`: `list_devices` pages a property's live
/// doors (rooms and areas) by id; D-4 `set_battery_threshold` (25 % until set);
/// `record_probe_failure` counts refusals in a row until a reading resets them; D-2
/// `decommission_device` retires once (its event written once; a second call changes
/// nothing and writes nothing), after which the device is not listed, serves no room, takes
/// no threshold and counts no failure.
pub async fn devices_page_take_thresholds_and_retire_once(b: &Backend) -> anyhow::Result<()> {
    use lockstep_domain::{BatteryThreshold, CommonArea, DeviceHealth, LockDeviceId};
    use lockstep_persistence::{Decommission, DeviceHealthWrite, DeviceRecord};
    let store = b.store();
    let reg = seed_registry(store, TenantId::generate()).await?;
    let tenant = reg.tenant;
    let other = seed_registry(store, TenantId::generate()).await?;
    let gym = LockDeviceId::generate();
    let before = b.count("outbox", tenant).await?;
    let mut tx = store.begin(tenant, None).await?;
    tx.upsert_device(&DeviceRecord {
        rooms: vec![],
        area: Some(CommonArea::Gym),
        ..device_record(&reg, &gym, "prop-1", "lock-gym")
    })
    .await?;
    let mut all: Vec<LockDeviceId> = vec![reg.devices[0].clone(), reg.devices[1].clone(), gym];
    all.sort();
    // pages of two, by id; each device with every room it serves
    let first = tx.list_devices(&property(), None, 2).await?;
    let ids: Vec<_> = first.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids, all[..2].to_vec());
    let rest = tx.list_devices(&property(), ids.last(), 2).await?;
    assert_eq!(
        rest.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        all[2..].to_vec()
    );
    let whole = tx.list_devices(&property(), None, 10).await?;
    let d0 = whole
        .iter()
        .find(|d| d.id == reg.devices[0])
        .context("d0")?;
    assert_eq!(d0.rooms, vec![room("r101"), room("r102")]);
    assert_eq!(d0.device_ref.expose(), format!("ttlock-lock-{}", d0.id));
    let g = whole.iter().find(|d| d.area.is_some()).context("gym")?;
    assert!(g.rooms.is_empty());
    assert!(whole.iter().all(|d| !other.devices.contains(&d.id)));
    ensure!(tx
        .list_devices(&lockstep_domain::PropertyId::parse("prop-2")?, None, 10)
        .await?
        .is_empty());

    // D-4: the default is 25 %; a threshold of its own is kept by a later upsert
    let d1 = &reg.devices[1];
    assert_eq!(
        tx.device_health(d1).await?.context("known")?.threshold,
        BatteryThreshold::DEFAULT
    );
    assert_eq!(BatteryThreshold::DEFAULT.percent(), 25);
    ensure!(
        tx.set_battery_threshold(d1, BatteryThreshold::new(40)?)
            .await?
    );
    let mut again = device_record(&reg, d1, "prop-1", &format!("ttlock-lock-{d1}"));
    again.rooms = vec![room("r103")];
    tx.upsert_device(&again).await?;
    assert_eq!(
        tx.device_health(d1)
            .await?
            .context("known")?
            .threshold
            .percent(),
        40
    );
    ensure!(
        !tx.set_battery_threshold(&LockDeviceId::generate(), BatteryThreshold::DEFAULT)
            .await?,
        "unknown device"
    );

    // refused probes count in a row; a stored reading resets them
    assert_eq!(tx.record_probe_failure(d1).await?, Some(1));
    assert_eq!(tx.record_probe_failure(d1).await?, Some(2));
    tx.record_device_health(
        &DeviceHealthWrite {
            device_id: d1.clone(),
            health: DeviceHealth::new(true, Some(50), None, None)?,
        },
        day(1),
    )
    .await?;
    assert_eq!(tx.record_probe_failure(d1).await?, Some(1), "reset");
    assert_eq!(
        tx.record_probe_failure(&LockDeviceId::generate()).await?,
        None
    );

    // D-2: retired once, with its event; the second time nothing is written
    let event = outbox_row(tenant, d1.as_str(), day(2));
    assert_eq!(
        tx.decommission_device(d1, day(2), std::slice::from_ref(&event))
            .await?,
        Decommission::Done(day(2))
    );
    assert_eq!(
        tx.decommission_device(d1, day(3), std::slice::from_ref(&event))
            .await?,
        Decommission::Already(day(2))
    );
    assert_eq!(
        tx.decommission_device(&LockDeviceId::generate(), day(3), &[])
            .await?,
        Decommission::Unknown
    );
    tx.commit().await?;
    assert_eq!(
        b.count("outbox", tenant).await?,
        before + 2,
        "the gym door's registration and one decommission"
    );
    let mut rtx = store.read(tenant).await?;
    ensure!(rtx
        .list_devices(&property(), None, 10)
        .await?
        .iter()
        .all(|d| &d.id != d1));
    ensure!(rtx
        .devices_for_rooms(&property(), &[room("r103")])
        .await?
        .is_empty());
    ensure!(
        rtx.device_health(d1)
            .await?
            .context("known")?
            .decommissioned
    );
    rtx.commit().await?;
    let mut tx = store.begin(tenant, None).await?;
    ensure!(
        !tx.set_battery_threshold(d1, BatteryThreshold::DEFAULT)
            .await?
    );
    assert_eq!(tx.record_probe_failure(d1).await?, None);
    tx.commit().await?;
    // another tenant retires nothing of ours
    let mut theirs = store.begin(other.tenant, None).await?;
    assert_eq!(
        theirs
            .decommission_device(&reg.devices[0], day(4), &[])
            .await?,
        Decommission::Unknown
    );
    theirs.commit().await?;
    Ok(())
}
