//! `ReadOnlyCredentialTable`/`CredentialTable`: credentials and their room links (I-9).

use super::prelude::*;

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
    let mut rtx = store.read(tenant).await?;
    assert_eq!(
        rtx.credentials_of_property(
            &property(),
            &["requested", "pending", "active", "suspended"]
        )
        .await?,
        live,
        "the table reads what the store reads"
    );
    rtx.commit().await?;
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

    // Steps between live states keep the links live: B2 pending, then active, still
    // holds r101 on Jan 1–2 ...
    let b2 = set_state(store, &b2, KeyCredentialState::Pending, at(3)).await?;
    let b2 = set_state(store, &b2, KeyCredentialState::Active, at(4)).await?;
    let b4 = stay(&reg, &reservation(), &["r101"], day(0), day(1))?;
    ensure!(is_overlap(&store.commit(insert(b4.snapshot(), t0())).await));
    // ... and lengthening it into B1's Jan 3–4 is refused by the update itself.
    let mut s = b2.snapshot();
    s.validity = ValidityWindow::new(day(0), day(3))?;
    let longer = update(store, &b2, s, at(5)).await;
    ensure!(
        longer
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<StoreError>())
            .is_some_and(|e| matches!(e, StoreError::Overlap)),
        "lengthening a stay over another's: {longer:?}"
    );
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

/// `insert_credential` and `update_credential` inside one transaction: the writer reads
/// its own writes (`get_credential`, `credentials_by_reservation`), other transactions see
/// nothing before the commit; a stale expected version is `Conflict`; I-9 refuses an
/// overlapping stay of another reservation with `Overlap`.
pub async fn credential_writes_are_read_in_their_tx_and_seen_by_others_after_commit(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let rsv = reservation();
    let c = stay(&reg, &rsv, &["r102", "r101"], day(0), day(2))?;
    let mut tx = store.begin(tenant, None).await?;
    tx.insert_credential(&c.snapshot()).await?;
    let got = tx.get_credential(c.id()).await?.context("own write")?;
    assert_eq!(snapshot_text(&got), snapshot_text(&c));
    assert_eq!(got.snapshot().rooms, vec![room("r101"), room("r102")]);
    assert!(
        store
            .read(tenant)
            .await?
            .get_credential(c.id())
            .await?
            .is_none(),
        "invisible before the commit"
    );

    let mut s = c.snapshot();
    s.state = KeyCredentialState::Pending;
    s.rooms = vec![room("r103")];
    s.version = 2;
    s.updated_at = at(5);
    tx.update_credential(&s, 1).await?;
    let res = tx.update_credential(&s, 1).await;
    ensure!(
        matches!(
            res,
            Err(StoreError::Conflict {
                entity: "key_credentials"
            })
        ),
        "stale version: {res:?}"
    );
    tx.commit().await?;

    let mut rtx = store.read(tenant).await?;
    let got = rtx.get_credential(c.id()).await?.context("committed")?;
    assert_eq!(
        (got.version(), got.state(), got.snapshot().rooms),
        (2, KeyCredentialState::Pending, vec![room("r103")])
    );
    let ids: Vec<_> = rtx
        .credentials_by_reservation(&rsv)
        .await?
        .iter()
        .map(|c| c.id().clone())
        .collect();
    assert_eq!(ids, vec![c.id().clone()]);
    rtx.commit().await?;
    assert!(store
        .read(TenantId::generate())
        .await?
        .get_credential(c.id())
        .await?
        .is_none());

    // I-9 on the tables: another reservation's overlapping stay on r103.
    let mut tx = store.begin(tenant, None).await?;
    let other = stay(&reg, &reservation(), &["r103"], day(1), day(3))?;
    let res = tx.insert_credential(&other.snapshot()).await;
    ensure!(is_overlap(&res), "I-9: {res:?}");
    Ok(())
}

/// The credential list (`GET /api/v1/key-credentials`): every filter (property,
/// reservation, guest, staff user, state, room, doors it opens at an instant), the id
/// cursor and the limit; rooms come with each credential.
pub async fn list_credentials_filters_pages_and_finds_what_opens_a_door(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let (rsv1, rsv2) = (reservation(), reservation());
    let g1 = stay(&reg, &rsv1, &["r101"], day(0), day(2))?;
    let mut g2 = stay(&reg, &rsv2, &["r103", "r102"], day(1), day(3))?.snapshot();
    g2.state = KeyCredentialState::Active;
    g2.issued_at = Some(at(10));
    let m = master_credential(&reg, "staff-3", &["r101"], day(0), day(1))?;
    let mut e = stay(&reg, &reservation(), &["r101"], day(0), day(2))?.snapshot();
    e.property_id = lockstep_domain::PropertyId::parse("prop-2")?;
    let mut tx = store.begin(tenant, None).await?;
    for s in [g1.snapshot(), g2.clone(), m.snapshot(), e.clone()] {
        tx.insert_credential(&s).await?;
    }
    tx.commit().await?;

    let mut rtx = store.read(tenant).await?;
    // Ids are ULIDs, in creation order only across milliseconds: the list is by id.
    let sorted = |mut v: Vec<lockstep_domain::KeyCredentialId>| {
        v.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        v
    };
    let all = sorted(vec![
        g1.id().clone(),
        g2.id.clone(),
        m.id().clone(),
        e.id.clone(),
    ]);
    let ids = |v: Vec<lockstep_domain::KeyCredential>| -> Vec<lockstep_domain::KeyCredentialId> {
        v.into_iter().map(|c| c.id().clone()).collect()
    };
    let after_g2: Vec<_> = all
        .iter()
        .filter(|i| i.as_str() > g2.id.as_str())
        .cloned()
        .collect();
    assert_eq!(
        ids(rtx
            .list_credentials(&CredentialFilter::default(), 100)
            .await?),
        all
    );
    let cases: Vec<(CredentialFilter, Vec<lockstep_domain::KeyCredentialId>)> = vec![
        (
            CredentialFilter {
                property_id: Some("prop-1".into()),
                ..Default::default()
            },
            sorted(vec![g1.id().clone(), g2.id.clone(), m.id().clone()]),
        ),
        (
            CredentialFilter {
                reservation_id: Some(rsv2.as_str().into()),
                ..Default::default()
            },
            vec![g2.id.clone()],
        ),
        (
            CredentialFilter {
                guest_id: Some("guest-1".into()),
                ..Default::default()
            },
            sorted(vec![g1.id().clone(), g2.id.clone(), e.id.clone()]),
        ),
        (
            CredentialFilter {
                staff_user_id: Some("staff-3".into()),
                ..Default::default()
            },
            vec![m.id().clone()],
        ),
        (
            CredentialFilter {
                state: Some("active".into()),
                ..Default::default()
            },
            vec![g2.id.clone()],
        ),
        (
            CredentialFilter {
                room_id: Some("r103".into()),
                ..Default::default()
            },
            vec![g2.id.clone()],
        ),
        (
            // requested keys do not open doors yet; the active one does, within its window
            CredentialFilter {
                opens_at: Some(day(1) + chrono::Duration::hours(1)),
                ..Default::default()
            },
            vec![g2.id.clone()],
        ),
        (
            CredentialFilter {
                opens_at: Some(day(3)),
                ..Default::default()
            },
            vec![],
        ),
        (
            CredentialFilter {
                after: Some(g2.id.as_str().into()),
                ..Default::default()
            },
            after_g2,
        ),
    ];
    for (filter, want) in cases {
        assert_eq!(
            ids(rtx.list_credentials(&filter, 100).await?),
            want,
            "{filter:?}"
        );
    }
    assert_eq!(
        ids(rtx
            .list_credentials(&CredentialFilter::default(), 2)
            .await?),
        all[..2].to_vec(),
        "limit"
    );
    let listed = rtx
        .list_credentials(
            &CredentialFilter {
                reservation_id: Some(rsv2.as_str().into()),
                ..Default::default()
            },
            10,
        )
        .await?;
    assert_eq!(listed[0].snapshot().rooms, vec![room("r102"), room("r103")]);
    rtx.commit().await?;
    Ok(())
}
