//! `ReadOnlyAuditTable`/`AuditTable` (the hash chain per property and its signed roots,
//! DESIGN §12) and the worker path's `ReadOnlyAuditHeadTable`.

use super::prelude::*;

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

/// DESIGN §12: `append_audit` links rows into the property's chain across calls in one
/// transaction and across transactions (`audit_chain` reads it in the writing
/// transaction); `insert_audit_root` and `audit_roots` keep signed roots in chain order;
/// `audit_chains` lists the chains on the worker path; a root of another tenant is refused.
pub async fn appended_audit_rows_chain_across_calls_and_roots_come_back_in_order(
    b: &Backend,
) -> anyhow::Result<()> {
    use lockstep_persistence::audit::{verify_chain, SealedRoot, GENESIS};
    let store = b.store();
    let tenant = TenantId::generate();
    let credential = lockstep_domain::KeyCredentialId::generate();
    let mut tx = store.begin(tenant, None).await?;
    tx.append_audit(&[audit_row(tenant, &credential, t0())])
        .await?;
    tx.append_audit(&[
        audit_row(tenant, &credential, at(1)),
        audit_row(tenant, &credential, at(2)),
    ])
    .await?;
    let chain = tx.audit_chain(&property()).await?;
    assert_eq!(
        chain.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(chain[0].prev_hash, GENESIS);
    tx.commit().await?;
    let mut tx = store.begin(tenant, None).await?;
    tx.append_audit(&[audit_row(tenant, &credential, at(3))])
        .await?;
    let root = |from, to, sealed_at| SealedRoot {
        tenant_id: tenant,
        property_id: property(),
        from_seq: from,
        to_seq: to,
        merkle_root: GENESIS.into(),
        signature: "sig".into(),
        key_id: "key".into(),
        sealed_at,
    };
    tx.insert_audit_root(&root(4, 4, day(2))).await?;
    tx.insert_audit_root(&root(1, 3, day(1))).await?;
    let mut foreign = root(5, 5, day(3));
    foreign.tenant_id = TenantId::generate();
    let res = tx.insert_audit_root(&foreign).await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "a root of another tenant: {res:?}"
    );
    tx.commit().await?;

    let mut rtx = store.read(tenant).await?;
    let chain = rtx.audit_chain(&property()).await?;
    assert_eq!(chain.len(), 4);
    assert_eq!(
        verify_chain(&chain).0,
        vec![],
        "one chain across transactions"
    );
    assert_eq!(
        rtx.audit_roots(&property()).await?,
        vec![root(1, 3, day(1)), root(4, 4, day(2))]
    );
    rtx.commit().await?;
    let mut w = store.worker_read().await?;
    assert!(w.audit_chains().await?.contains(&(tenant, property())));
    w.commit().await?;
    Ok(())
}
