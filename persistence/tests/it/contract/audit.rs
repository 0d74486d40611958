//! `ReadOnlyAuditTable`/`AuditTable` (the hash chain per property and its signed roots,
//! DESIGN §12), and the worker path's `ReadOnlyAuditHeadTable`/`AuditLinkTable` (the
//! linker and the chain's retention, issues 11 and 13).

use lockstep_persistence::audit::{
    link_chain, verify_chain, verify_chain_from, ChainHead, GENESIS,
};

use super::prelude::*;

/// DESIGN §12: audit rows form one gap-free hash chain per (tenant, property) once linked,
/// across units of work; until then they wait unlinked, in the order the linker takes
/// them; the chains are listed for the verifier.
pub async fn audit_rows_form_one_gap_free_hash_chain_per_property(
    b: &Backend,
) -> anyhow::Result<()> {
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
    // written, not linked: nothing in the chain yet, six rows waiting in (created_at, id)
    assert!(store.audit_chain(tenant, &property()).await?.is_empty());
    let pending = store.pending_audit(tenant, &property()).await?;
    assert_eq!(pending.len(), 6);
    assert!(pending
        .windows(2)
        .all(|w| (w[0].created_at, &w[0].id) < (w[1].created_at, &w[1].id)));
    assert!(store.audit_chains().await?.contains(&(tenant, property())));

    assert_eq!(link_chain(store, tenant, &property()).await?, 6);
    assert_eq!(link_chain(store, tenant, &other).await?, 3);
    assert!(store.pending_audit(tenant, &property()).await?.is_empty());
    let chain = store.audit_chain(tenant, &property()).await?;
    assert_eq!(
        chain.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        chain.iter().map(|r| r.row.id.clone()).collect::<Vec<_>>(),
        pending.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        "linked in the order they waited"
    );
    assert_eq!(chain[0].prev_hash, GENESIS);
    let (faults, head) = verify_chain(&chain);
    assert_eq!(faults, vec![]);
    assert_eq!(head, chain[5].row_hash);
    assert_eq!(
        store.audit_head(tenant, &property()).await?,
        Some(ChainHead {
            seq: 6,
            head_hash: head,
            pruned_through_seq: 0,
            pruned_through_hash: GENESIS.into(),
        })
    );
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

/// Issue 11: `append_audit` writes rows unlinked (`pending_audit` reads them in the
/// writing transaction, in (created_at, id) order; no head exists before the linker);
/// `link_pending` links at most the rows asked for, in that order, and continues the chain
/// on its next call; `insert_audit_root` and `audit_roots` keep signed roots in chain
/// order; a root of another tenant is refused.
pub async fn appended_audit_rows_wait_unlinked_until_the_linker_links_them_in_order(
    b: &Backend,
) -> anyhow::Result<()> {
    use lockstep_persistence::audit::SealedRoot;
    let store = b.store();
    let tenant = TenantId::generate();
    let credential = lockstep_domain::KeyCredentialId::generate();
    let mut tx = store.begin(tenant, None).await?;
    tx.append_audit(&[audit_row(tenant, &credential, at(5))])
        .await?;
    tx.append_audit(&[
        audit_row(tenant, &credential, at(1)),
        audit_row(tenant, &credential, at(2)),
    ])
    .await?;
    let pending = tx.pending_audit(&property()).await?;
    assert_eq!(
        pending.iter().map(|r| r.created_at).collect::<Vec<_>>(),
        vec![at(1), at(2), at(5)]
    );
    assert!(tx.audit_chain(&property()).await?.is_empty());
    assert_eq!(
        tx.audit_head(&property()).await?,
        None,
        "writers make no head"
    );
    tx.commit().await?;

    let mut w = store.worker().await?;
    assert!(w
        .pending_audit_chains(1_000_000)
        .await?
        .contains(&(tenant, property())));
    assert_eq!(w.link_pending(tenant, &property(), 2).await?, 2);
    assert_eq!(w.link_pending(tenant, &property(), 2).await?, 1);
    assert_eq!(w.link_pending(tenant, &property(), 2).await?, 0);
    w.commit().await?;

    let mut tx = store.begin(tenant, None).await?;
    let chain = tx.audit_chain(&property()).await?;
    assert_eq!(
        chain
            .iter()
            .map(|r| (r.seq, r.row.created_at))
            .collect::<Vec<_>>(),
        vec![(1, at(1)), (2, at(2)), (3, at(5))]
    );
    assert_eq!(verify_chain(&chain).0, vec![]);
    assert!(tx.pending_audit(&property()).await?.is_empty());
    // a late row with an earlier time links after the chain's head: the order is the
    // linker's, the sequence has no gap
    tx.append_audit(&[audit_row(tenant, &credential, at(0))])
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
    assert_eq!(link_chain(store, tenant, &property()).await?, 1);

    let mut rtx = store.read(tenant).await?;
    let chain = rtx.audit_chain(&property()).await?;
    assert_eq!(chain.len(), 4);
    assert_eq!((chain[3].seq, chain[3].row.created_at), (4, at(0)));
    assert_eq!(
        verify_chain(&chain).0,
        vec![],
        "one chain across transactions"
    );
    assert_eq!(rtx.audit_head(&property()).await?.map(|h| h.seq), Some(4));
    assert_eq!(
        rtx.audit_roots(&property()).await?,
        vec![root(1, 3, day(1)), root(4, 4, day(2))]
    );
    rtx.commit().await?;
    let mut w = store.worker_read().await?;
    assert!(w.audit_chains().await?.contains(&(tenant, property())));
    assert!(!w
        .pending_audit_chains(1_000_000)
        .await?
        .contains(&(tenant, property())));
    w.commit().await?;
    Ok(())
}

/// Issue 11: two linkers on two stores (two nodes) racing over one chain's pending rows
/// link every row once, gap-free.
pub async fn racing_linkers_link_every_row_once_without_gaps(b: &Backend) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let credential = lockstep_domain::KeyCredentialId::generate();
    for i in 0..40 {
        let mut uow = UnitOfWork::new(tenant, None, at(i));
        uow.audit.push(audit_row(tenant, &credential, at(i)));
        uow.audit.push(audit_row(tenant, &credential, at(i)));
        store.commit(uow).await?;
    }
    let [one, two] = b.twin_stores().await?;
    let link = |s: std::sync::Arc<dyn Store>| {
        tokio::spawn(async move {
            let mut linked = 0;
            loop {
                let mut w = s.worker().await?;
                let n = w.link_pending(tenant, &property(), 7).await?;
                w.commit().await?;
                linked += n;
                if n == 0 {
                    return anyhow::Ok(linked);
                }
            }
        })
    };
    let (a, b2) = (link(one), link(two));
    let total = a.await?? + b2.await??;
    assert_eq!(total, 80, "every row linked once");
    let chain = store.audit_chain(tenant, &property()).await?;
    assert_eq!(chain.len(), 80);
    assert_eq!(chain.last().map(|r| r.seq), Some(80));
    assert_eq!(verify_chain(&chain).0, vec![]);
    Ok(())
}

/// Spec `004` §8, issue 13: `prune_sealed_audit` deletes only rows under a signed root
/// whose whole stretch is older than the window, oldest first and at most the rows asked
/// for, and moves the retention anchor with them; what is left verifies from the anchor.
/// Unsealed and pending rows stay however old they are.
pub async fn pruning_deletes_old_sealed_stretches_and_keeps_the_chain_verifiable_from_its_anchor(
    b: &Backend,
) -> anyhow::Result<()> {
    use lockstep_persistence::audit::SealedRoot;
    let store = b.store();
    let tenant = TenantId::generate();
    let credential = lockstep_domain::KeyCredentialId::generate();
    for i in 0..6 {
        let mut uow = UnitOfWork::new(tenant, None, day(i));
        uow.audit.push(audit_row(tenant, &credential, day(i)));
        store.commit(uow).await?;
    }
    link_chain(store, tenant, &property()).await?;
    let chain = store.audit_chain(tenant, &property()).await?;
    for (from, to) in [(1, 2), (3, 4)] {
        store
            .insert_audit_root(&SealedRoot {
                tenant_id: tenant,
                property_id: property(),
                from_seq: from,
                to_seq: to,
                merkle_root: GENESIS.into(),
                signature: "sig".into(),
                key_id: "key".into(),
                sealed_at: day(6),
            })
            .await?;
    }
    // a pending row, far older than any window
    let mut uow = UnitOfWork::new(tenant, None, day(7));
    uow.audit.push(audit_row(tenant, &credential, day(-100)));
    store.commit(uow).await?;

    // rows of day 3 on are young: only the stretch 1..=2 may go, one row per call
    let mut w = store.worker().await?;
    assert_eq!(
        w.prune_sealed_audit(tenant, &property(), day(3), 1).await?,
        1
    );
    assert_eq!(
        w.prune_sealed_audit(tenant, &property(), day(3), 1).await?,
        1
    );
    assert_eq!(
        w.prune_sealed_audit(tenant, &property(), day(3), 1).await?,
        0
    );
    w.commit().await?;
    let head = store
        .audit_head(tenant, &property())
        .await?
        .context("the chain's head")?;
    assert_eq!(
        (head.pruned_through_seq, head.pruned_through_hash.as_str()),
        (2, chain[1].row_hash.as_str())
    );
    let left = store.audit_chain(tenant, &property()).await?;
    assert_eq!(
        left.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    assert_eq!(
        verify_chain_from(head.pruned_through_seq, &head.pruned_through_hash, &left).0,
        vec![]
    );
    // everything old: the sealed 3..=4 goes, the unsealed 5 and 6 and the pending row stay
    let mut w = store.worker().await?;
    assert_eq!(
        w.prune_sealed_audit(tenant, &property(), day(100), 500)
            .await?,
        2
    );
    assert_eq!(
        w.prune_sealed_audit(tenant, &property(), day(100), 500)
            .await?,
        0
    );
    assert_eq!(
        w.prune_sealed_audit(TenantId::generate(), &property(), day(100), 500)
            .await?,
        0,
        "no chain, nothing to prune"
    );
    w.commit().await?;
    let left = store.audit_chain(tenant, &property()).await?;
    assert_eq!(left.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 6]);
    assert_eq!(store.pending_audit(tenant, &property()).await?.len(), 1);
    assert_eq!(
        store.audit_roots(tenant, &property()).await?.len(),
        2,
        "roots are kept"
    );
    let head = store
        .audit_head(tenant, &property())
        .await?
        .context("the chain's head")?;
    assert_eq!(head.pruned_through_seq, 4);
    assert_eq!(
        verify_chain_from(4, &head.pruned_through_hash, &left).0,
        vec![]
    );
    // the linker continues the chain after pruning
    assert_eq!(link_chain(store, tenant, &property()).await?, 1);
    let left = store.audit_chain(tenant, &property()).await?;
    assert_eq!(left.last().map(|r| r.seq), Some(7));
    assert_eq!(
        verify_chain_from(4, &head.pruned_through_hash, &left).0,
        vec![]
    );
    Ok(())
}
