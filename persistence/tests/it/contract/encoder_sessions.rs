//! `ReadOnlyEncoderSessionTable`/`EncoderSessionTable`/`ReadOnlyEncoderSessionScanTable`:
//! desk encoder sessions (spec `003` §5, E-1).

use lockstep_domain::EncoderSessionId;

use super::prelude::*;

pub fn session(tenant: TenantId, node: &str, encoder: &str) -> EncoderSessionRecord {
    EncoderSessionRecord {
        id: EncoderSessionId::generate(),
        tenant_id: tenant,
        property_id: property(),
        desktop_device_id: "desk-1".into(),
        encoder_model: "hid_omnikey".into(),
        transport: "usb_hid".into(),
        connection_id: EncoderSessionId::generate().as_str().to_owned(),
        encoder_id: encoder.into(),
        certificate_id: "oki_01J00000000000000000000000".into(),
        node_id: node.into(),
        opened_at: t0(),
        closed_at: None,
        close_reason: None,
        close_detail: None,
    }
}

/// A session opens once, is read back in its transaction and after, lists among the
/// property's open sessions until it closes, closes once (the first close is kept), and
/// another tenant neither sees nor closes it.
pub async fn encoder_sessions_open_close_once_and_stay_in_their_tenant(
    b: &Backend,
) -> anyhow::Result<()> {
    let store = b.store();
    let tenant = TenantId::generate();
    let a = session(tenant, "node-a", "enc-0");
    let second = session(tenant, "node-a", "enc-1");
    let mut tx = store.begin(tenant, None).await?;
    ensure!(tx.open_encoder_session(&a).await?, "opened");
    ensure!(!tx.open_encoder_session(&a).await?, "opened once");
    ensure!(tx.open_encoder_session(&second).await?);
    assert_eq!(tx.encoder_session(&a.id).await?, Some(a.clone()));
    assert_eq!(tx.encoder_sessions(&property(), true).await?.len(), 2);
    tx.commit().await?;

    let mut theirs = store.begin(TenantId::generate(), None).await?;
    assert_eq!(theirs.encoder_session(&a.id).await?, None);
    ensure!(
        !theirs
            .close_encoder_session(&a.id, at(1), "error", "x")
            .await?,
        "another tenant closes nothing"
    );
    theirs.commit().await?;

    let mut tx = store.begin(tenant, None).await?;
    ensure!(
        tx.close_encoder_session(&a.id, at(5), "app_quit", "graceful")
            .await?
    );
    ensure!(
        !tx.close_encoder_session(&a.id, at(9), "error", "heartbeat_timeout")
            .await?,
        "closed once"
    );
    tx.commit().await?;
    let mut r = store.read(tenant).await?;
    let got = r.encoder_session(&a.id).await?.context("stored")?;
    assert_eq!(got.closed_at, Some(at(5)));
    assert_eq!(got.close_reason.as_deref(), Some("app_quit"));
    assert_eq!(got.close_detail.as_deref(), Some("graceful"));
    let open: Vec<_> = r
        .encoder_sessions(&property(), true)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(open, vec![second.id.clone()]);
    assert_eq!(r.encoder_sessions(&property(), false).await?.len(), 2);
    r.commit().await?;
    // spec 004's transport CHECK holds
    let mut bad = session(tenant, "node-a", "enc-9");
    bad.transport = "bluetooth".into();
    let mut tx = store.begin(tenant, None).await?;
    ensure!(
        tx.open_encoder_session(&bad).await.is_err(),
        "transport CHECK"
    );
    Ok(())
}

/// The worker path lists open sessions across tenants, of one node or of all, so a
/// restarted node closes what it left open.
pub async fn open_sessions_are_scanned_by_node_across_tenants(b: &Backend) -> anyhow::Result<()> {
    let b = b.isolated().await?;
    let store = b.store();
    let (t1, t2) = (TenantId::generate(), TenantId::generate());
    let a = session(t1, "node-a", "enc-0");
    let c = session(t2, "node-a", "enc-0");
    let other = session(t2, "node-b", "enc-0");
    for s in [&a, &c, &other] {
        let mut tx = store.begin(s.tenant_id, None).await?;
        tx.open_encoder_session(s).await?;
        tx.commit().await?;
    }
    let mut w = store.worker_read().await?;
    let mine = w.open_encoder_sessions(Some("node-a")).await?;
    assert_eq!(mine.len(), 2);
    ensure!(mine.contains(&(t1, a.id.clone())) && mine.contains(&(t2, c.id.clone())));
    assert_eq!(w.open_encoder_sessions(None).await?.len(), 3);
    w.commit().await?;
    let mut tx = store.begin(t1, None).await?;
    tx.close_encoder_session(&a.id, at(1), "error", "server_restart")
        .await?;
    tx.commit().await?;
    let mut w = store.worker_read().await?;
    assert_eq!(
        w.open_encoder_sessions(Some("node-a")).await?,
        vec![(t2, c.id.clone())]
    );
    Ok(())
}
