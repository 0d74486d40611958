//! `ReadOnlyDoorAttemptTable`/`DoorAttemptTable`: door attempts and webhook
//! deliveries.

use super::prelude::*;

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

/// A-2 on the tables: `insert_attempt` appends, `seen_vendor_events` finds which of many ids
/// (more than one SQLite statement takes) have an attempt, `insert_webhook` and
/// `webhook_seen` record and find a delivery once per vendor and external id.
pub async fn attempts_and_webhooks_are_appended_and_found_by_their_vendor_ids(
    b: &Backend,
) -> anyhow::Result<()> {
    use lockstep_domain::{AttemptReport, KeyCredentialAttempt, LockDeviceId};
    let store = b.store();
    let tenant = TenantId::generate();
    let report = |id: String| AttemptReport {
        vendor_event_id: id,
        attempted_at: t0(),
        granted: true,
        device_id: LockDeviceId::generate(),
        property_id: property(),
        vendor: VendorCode::Ttlock,
        method: "pin_code",
    };
    let webhook = lockstep_persistence::WebhookInboxRow {
        id: format!("whk_{}", ulid::Ulid::new()),
        vendor: VendorCode::Ttlock,
        external_event_id: "2002:abc".into(),
        kind: "lock_records".into(),
        payload: serde_json::json!({ "lockId": 2002 }),
        signature_ok: false,
        received_at: t0(),
        outcome: "processed".into(),
    };
    let mut tx = store.begin(tenant, None).await?;
    let stored: Vec<String> = (0..3).map(|i| format!("2002:{}", i * 400)).collect();
    for id in &stored {
        tx.insert_attempt(&KeyCredentialAttempt::record(
            tenant,
            report(id.clone()),
            None,
            t0(),
        )?)
        .await?;
    }
    tx.insert_webhook(&webhook, at(1)).await?;
    let asked: Vec<String> = (0..1_200).map(|i| format!("2002:{i}")).collect();
    let mut seen = tx.seen_vendor_events(VendorCode::Ttlock, &asked).await?;
    seen.sort();
    let mut want = stored.clone();
    want.sort();
    assert_eq!(seen, want);
    assert!(tx
        .seen_vendor_events(VendorCode::Salto, &asked)
        .await?
        .is_empty());
    assert!(tx
        .seen_vendor_events(VendorCode::Ttlock, &[])
        .await?
        .is_empty());
    ensure!(tx.webhook_seen(VendorCode::Ttlock, "2002:abc").await?);
    ensure!(!tx.webhook_seen(VendorCode::Kisi, "2002:abc").await?);
    tx.commit().await?;

    let mut rtx = store.read(TenantId::generate()).await?;
    assert!(rtx
        .seen_vendor_events(VendorCode::Ttlock, &stored)
        .await?
        .is_empty());
    ensure!(!rtx.webhook_seen(VendorCode::Ttlock, "2002:abc").await?);
    rtx.commit().await?;
    let mut tx = store.begin(tenant, None).await?;
    let res = tx
        .insert_attempt(&KeyCredentialAttempt::record(
            tenant,
            report(stored[0].clone()),
            None,
            t0(),
        )?)
        .await;
    ensure!(
        matches!(res, Err(StoreError::Constraint(_))),
        "A-2: {res:?}"
    );
    Ok(())
}
