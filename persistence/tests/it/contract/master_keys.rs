//! `ReadOnlyMasterKeyTable`/`MasterKeyTable`: staff master keys (M-1, M-2).

use super::prelude::*;

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

/// M-1, M-2 on the tables: `insert_master` and `revoke_master` in one transaction with the
/// backing credential, read back by `master_by_id`, `master_by_credential` and
/// `active_masters_of_user`; a key of another tenant and an unknown revocation are refused.
pub async fn master_keys_are_written_and_read_in_one_tx(b: &Backend) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let reg = seed_registry(store, tenant).await?;
    let mc = master_credential(&reg, "staff-12", &["r101"], day(0), day(1))?;
    let mk = master_key(&mc, "floors");
    let mut tx = store.begin(tenant, None).await?;
    tx.insert_credential(&mc.snapshot()).await?;
    tx.insert_master(&mk).await?;
    assert_eq!(tx.master_by_id(&mk.id).await?, Some(mk.clone()));
    assert_eq!(tx.master_by_credential(mc.id()).await?, Some(mk.clone()));
    assert_eq!(
        tx.active_masters_of_user("staff-12").await?,
        vec![mk.clone()]
    );
    tx.revoke_master(&mk.id, at(30)).await?;
    tx.revoke_master(&mk.id, at(40)).await?;
    assert!(tx.active_masters_of_user("staff-12").await?.is_empty());
    let res = tx.revoke_master("mky_unknown", at(50)).await;
    ensure!(
        matches!(
            res,
            Err(StoreError::Conflict {
                entity: "master_keys"
            })
        ),
        "unknown key: {res:?}"
    );
    let mut foreign = mk.clone();
    foreign.tenant_id = TenantId::generate();
    let res = tx.insert_master(&foreign).await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "a key of another tenant: {res:?}"
    );
    tx.commit().await?;
    let mut rtx = store.read(tenant).await?;
    assert_eq!(
        rtx.master_by_id(&mk.id).await?.and_then(|k| k.revoked_at),
        Some(at(30)),
        "the first revocation is kept"
    );
    assert_eq!(rtx.master_by_id("mky_unknown").await?, None);
    rtx.commit().await?;
    Ok(())
}
