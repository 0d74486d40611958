//! `RetentionTable` and the retention job (spec `004` §8, issue 13). The cases run on a
//! database of their own: retention crosses tenants.

use chrono::Duration;
use lockstep_domain::{
    AttemptReport, KeyCredentialAttempt, KeyCredentialKind, LockDeviceId, OfflineIssuance,
    OfflineRevokeReason,
};
use lockstep_persistence::audit::{link_chain, seal_chains, verify_all};
use lockstep_persistence::retention::{run, RetentionPolicy, LOCK_AUDIT};

use super::prelude::*;

/// When the cases run the job.
fn now() -> lockstep_domain::Timestamp {
    day(400)
}

fn ago(days: i64) -> lockstep_domain::Timestamp {
    now() - Duration::days(days)
}

fn attempt(
    tenant: TenantId,
    event: &str,
    at: lockstep_domain::Timestamp,
) -> anyhow::Result<KeyCredentialAttempt> {
    Ok(KeyCredentialAttempt::record(
        tenant,
        AttemptReport {
            vendor_event_id: event.into(),
            attempted_at: at,
            granted: true,
            device_id: LockDeviceId::generate(),
            property_id: property(),
            vendor: VendorCode::Ttlock,
            method: "pin_code",
        },
        None,
        at,
    )?)
}

fn webhook(event: &str, at: lockstep_domain::Timestamp) -> lockstep_persistence::WebhookInboxRow {
    lockstep_persistence::WebhookInboxRow {
        id: format!("whk_{}", ulid::Ulid::new()),
        vendor: VendorCode::Ttlock,
        external_event_id: event.into(),
        kind: "lock_records".into(),
        payload: serde_json::json!({}),
        signature_ok: true,
        received_at: at,
        outcome: "processed".into(),
    }
}

fn certificate(
    tenant: TenantId,
    desk: &str,
    revoked: Option<lockstep_domain::Timestamp>,
) -> anyhow::Result<OfflineIssuance> {
    let mut cert = OfflineIssuance::issue(
        tenant,
        property(),
        desk,
        "MCowBQYDK2VwAyEA",
        vec![KeyCredentialKind::PinCode],
        &[KeyCredentialKind::PinCode],
        24,
        day(0),
    )?;
    if let Some(at) = revoked {
        cert.revoke(OfflineRevokeReason::Rotation, at);
    }
    Ok(cert)
}

/// Seeds one row past its window and one younger in every table retention prunes; the
/// audit chain: four old rows under one signed root, an old and a young row under a second,
/// and a young unsealed row.
async fn seed_old_and_young(
    b: &Backend,
    tenant: TenantId,
    key: &ed25519_dalek::SigningKey,
) -> anyhow::Result<()> {
    let store = b.store();
    let registry = seed_registry(store, tenant).await?;
    // a credential whose door truth is on d1
    let credential = new_credential(&registry, &reservation(), &["r101"], day(0))?;
    let mut uow = insert(credential.snapshot(), day(0));
    uow.devices.push(device_write(
        credential.id(),
        &registry.devices[0],
        Some("482913"),
        None,
    )?);
    store.commit(uow).await?;
    b.decommission_at(tenant, &registry.devices[0], ago(31))
        .await?;
    b.decommission_at(tenant, &registry.devices[1], ago(29))
        .await?;

    for (event, at) in [("old", ago(91)), ("young", ago(89))] {
        let mut uow = UnitOfWork::new(tenant, None, at);
        uow.attempts.push(attempt(tenant, event, at)?);
        store.commit(uow).await?;
    }
    for (event, at) in [("old", ago(31)), ("young", ago(29))] {
        let mut uow = UnitOfWork::new(tenant, None, at);
        uow.webhooks.push(webhook(event, at));
        store.commit(uow).await?;
    }
    // outbox: published 8 and 6 days ago, and one never published
    let rows: Vec<_> = [ago(30), ago(30), ago(30)]
        .into_iter()
        .map(|at| outbox_row(tenant, "key_retained", at))
        .collect();
    let mut uow = UnitOfWork::new(tenant, None, ago(30));
    uow.outbox = rows.clone();
    store.commit(uow).await?;
    let mut w = store.worker().await?;
    w.mark_published(&[rows[0].id.clone()], ago(8)).await?;
    w.mark_published(&[rows[1].id.clone()], ago(6)).await?;
    w.commit().await?;
    for at in [ago(31), ago(29)] {
        store
            .intake(&intake_msg(tenant, "reservation:rsv-retained", 7, at), None)
            .await?;
    }
    store
        .save_offline_cert(&certificate(tenant, "desk-old", Some(ago(91)))?)
        .await?;
    store
        .save_offline_cert(&certificate(tenant, "desk-young", Some(ago(89)))?)
        .await?;
    store
        .save_offline_cert(&certificate(tenant, "desk-live", None)?)
        .await?;

    let audit = |days: &[i64]| {
        let mut uow = UnitOfWork::new(tenant, None, ago(days[0]));
        for d in days {
            uow.audit.push(audit_row(tenant, credential.id(), ago(*d)));
        }
        uow
    };
    store.commit(audit(&[120, 110, 100, 95])).await?;
    link_chain(store, tenant, &property()).await?;
    seal_chains(store, key, ago(94)).await?;
    store.commit(audit(&[93, 10])).await?;
    link_chain(store, tenant, &property()).await?;
    seal_chains(store, key, ago(9)).await?;
    store.commit(audit(&[5])).await?;
    link_chain(store, tenant, &property()).await?;
    Ok(())
}

/// Spec `004` §8 (issue 13 item 4): one run of the retention job deletes every row past
/// its window in every table the spec names, leaves everything younger (and what the spec
/// keeps: credentials, unpublished outbox rows, live certificates, unsealed audit rows),
/// and `lockstep audit verify`'s check still finds the chain intact, from its anchor. A
/// second run finds nothing to do.
pub async fn retention_deletes_rows_past_their_window_and_the_audit_still_verifies(
    b: &Backend,
) -> anyhow::Result<()> {
    let b = b.isolated().await?;
    let store = b.store();
    let tenant = TenantId::generate();
    let key = ed25519_dalek::SigningKey::from_bytes(&[13u8; 32]);
    seed_old_and_young(&b, tenant, &key).await?;
    let before = |table: &'static str| b.count(table, tenant);
    assert_eq!(before("key_credential_attempts").await?, 2);
    assert_eq!(before("lock_audit").await?, 7);

    let pruned = run(store, &RetentionPolicy::default(), now()).await?;
    let expected: std::collections::BTreeMap<&str, u64> = [
        ("key_credential_attempts", 1),
        ("lock_devices", 1),
        ("webhook_inbox", 1),
        ("outbox", 1),
        ("inbox", 1),
        ("offline_issuance", 1),
        (LOCK_AUDIT, 4),
    ]
    .into_iter()
    .collect();
    assert_eq!(pruned, expected);

    // the younger rows (and what the spec keeps) are all there
    assert_eq!(b.count("key_credential_attempts", tenant).await?, 1);
    assert_eq!(b.count("lock_devices", tenant).await?, 1);
    assert_eq!(b.count("lock_device_rooms", tenant).await?, 1, "d2's room");
    assert_eq!(
        b.count("key_credential_devices", tenant).await?,
        0,
        "door truth at the removed lock went with it"
    );
    assert_eq!(b.count("key_credentials", tenant).await?, 1, "kept");
    assert_eq!(b.count("webhook_inbox", tenant).await?, 1);
    assert_eq!(b.count("outbox", tenant).await?, 2, "young and unpublished");
    assert_eq!(b.count("inbox", tenant).await?, 1);
    assert_eq!(
        b.count("offline_issuance", tenant).await?,
        2,
        "young and live"
    );
    assert_eq!(b.count("lock_audit", tenant).await?, 3);
    assert_eq!(
        b.count("lock_audit_roots", tenant).await?,
        2,
        "roots are kept"
    );
    let chain = store.audit_chain(tenant, &property()).await?;
    assert_eq!(
        chain.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );

    let reports = verify_all(store, &key.verifying_key()).await?;
    let report = reports
        .iter()
        .find(|r| r.tenant_id == tenant)
        .context("the tenant's chain")?;
    assert!(report.intact(), "{report:?}");
    assert_eq!(
        (
            report.rows,
            report.pruned_rows,
            report.sealed_rows,
            report.pending_rows
        ),
        (3, 4, 2, 0)
    );

    let again = run(store, &RetentionPolicy::default(), now()).await?;
    assert!(again.values().all(|n| *n == 0), "{again:?}");
    // a table the policy leaves alone is not touched
    let keep_outbox = RetentionPolicy {
        published_outbox: None,
        ..RetentionPolicy::default()
    };
    let later = run(store, &keep_outbox, now() + Duration::days(30)).await?;
    assert!(!later.contains_key("outbox"));
    assert_eq!(b.count("outbox", tenant).await?, 2);
    Ok(())
}

/// `prune_expired` deletes at most the rows asked for, oldest first, only of the table
/// named and only before the horizon; `key_credential_attempts` stays append-only above
/// it.
pub async fn prune_expired_deletes_bounded_batches_oldest_first(b: &Backend) -> anyhow::Result<()> {
    let b = b.isolated().await?;
    let store = b.store();
    let tenant = TenantId::generate();
    for (i, d) in [95, 93, 91, 10].into_iter().enumerate() {
        let mut uow = UnitOfWork::new(tenant, None, ago(d));
        uow.attempts
            .push(attempt(tenant, &format!("e{i}"), ago(d))?);
        uow.webhooks.push(webhook(&format!("w{i}"), ago(d)));
        store.commit(uow).await?;
    }
    let mut w = store.worker().await?;
    assert_eq!(w.prune_expired(Retained::Attempts, ago(90), 2).await?, 2);
    w.commit().await?;
    let mut w = store.worker().await?;
    assert_eq!(w.prune_expired(Retained::Attempts, ago(90), 2).await?, 1);
    assert_eq!(w.prune_expired(Retained::Attempts, ago(90), 2).await?, 0);
    w.commit().await?;
    assert_eq!(b.count("key_credential_attempts", tenant).await?, 1);
    assert_eq!(b.count("webhook_inbox", tenant).await?, 4, "another table");
    // the survivor is younger than the horizon: not even the table's owner path deletes it
    let refused = b
        .exec_as_tenant(tenant, "DELETE FROM key_credential_attempts")
        .await;
    ensure!(refused.is_err(), "{refused:?}");
    assert_eq!(b.count("key_credential_attempts", tenant).await?, 1);
    Ok(())
}
