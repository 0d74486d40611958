//! The scenario infrastructure on its own: it must really crash, restart and partition.

use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use lockstep_chaos::pg::{PgCluster, StopMode};
use lockstep_chaos::proxy::Proxy;
use lockstep_chaos::rabbit::{RabbitNode, LOCKSTEP_USER, RESERVATION_USER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_postgres_keeps_committed_rows_across_a_crash_and_serves_the_three_roles(
) -> anyhow::Result<()> {
    let mut pg = PgCluster::start_new().await?;
    let urls = pg.urls();
    assert_eq!(pg.psql("SHOW fsync")?, "on");
    assert_eq!(pg.psql("SHOW max_connections")?, "300");
    pg.psql_url(
        &urls.owner,
        "CREATE TABLE t (v int); INSERT INTO t VALUES (42)",
    )?;
    pg.psql_url(&urls.owner, "GRANT SELECT ON t TO lockstep_app")?;
    pg.stop(StopMode::Kill).await?;
    assert!(
        pg.psql("SELECT 1").is_err(),
        "the cluster is down after the kill"
    );
    pg.start().await?;
    assert_eq!(pg.psql_url(&urls.app, "SELECT v FROM t")?, "42");
    assert_eq!(
        pg.psql_url(
            &urls.worker,
            "SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )?,
        "t"
    );
    assert_eq!(
        pg.psql_url(
            &urls.app,
            "SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )?,
        "f"
    );
    pg.stop(StopMode::Fast).await?;
    pg.start().await?;
    assert_eq!(pg.psql_url(&urls.app, "SELECT v FROM t")?, "42");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_rabbitmq_node_keeps_quorum_messages_across_a_kill() -> anyhow::Result<()> {
    let mut rabbit = RabbitNode::start_new().await?;
    assert_ne!(rabbit.port(), 5672, "never the system node's port");
    let conn =
        Connection::connect(&rabbit.url(LOCKSTEP_USER), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("survivor".into(), durable, args).await?;
    ch.basic_publish(
        "".into(),
        "survivor".into(),
        BasicPublishOptions::default(),
        b"still here",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await?
    .await?;
    drop(conn);
    rabbit.persist_metadata()?;
    rabbit.kill().await?;
    assert!(!rabbit.is_running());
    rabbit.start().await?;
    let conn =
        Connection::connect(&rabbit.url(LOCKSTEP_USER), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let got = ch
        .basic_get("survivor".into(), BasicGetOptions { no_ack: true })
        .await?
        .expect("the quorum queue kept its message");
    assert_eq!(got.delivery.data, b"still here");
    // the reservation system's user may publish, not declare
    let rs = Connection::connect(
        &rabbit.url(RESERVATION_USER),
        ConnectionProperties::default(),
    )
    .await?;
    let rch = rs.create_channel().await?;
    assert!(rch
        .queue_declare(
            "nope".into(),
            QueueDeclareOptions::default(),
            FieldTable::default()
        )
        .await
        .is_err());
    Ok(())
}

async fn echo_server() -> anyhow::Result<std::net::SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

async fn read_within(s: &mut TcpStream, ms: u64) -> Option<Vec<u8>> {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(ms), s.read(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_blackholes_on_cut_resumes_on_heal_and_closes_on_reset() -> anyhow::Result<()> {
    let proxy = Proxy::start(echo_server().await?).await?;
    let mut a = TcpStream::connect(proxy.addr()).await?;
    a.write_all(b"1").await?;
    assert_eq!(read_within(&mut a, 2000).await.as_deref(), Some(&b"1"[..]));

    proxy.cut();
    a.write_all(b"2").await?;
    assert_eq!(
        read_within(&mut a, 300).await,
        None,
        "nothing crosses a cut"
    );
    // a new connection is accepted but stalls
    let mut b = TcpStream::connect(proxy.addr()).await?;
    b.write_all(b"3").await?;
    assert_eq!(read_within(&mut b, 300).await, None);

    proxy.heal();
    assert_eq!(read_within(&mut a, 2000).await.as_deref(), Some(&b"2"[..]));
    assert_eq!(read_within(&mut b, 2000).await.as_deref(), Some(&b"3"[..]));

    proxy.reset();
    assert_eq!(
        read_within(&mut a, 2000).await.as_deref(),
        Some(&b""[..]),
        "a reset closes the connection (EOF)"
    );
    let mut c = TcpStream::connect(proxy.addr()).await?;
    c.write_all(b"4").await?;
    assert_eq!(read_within(&mut c, 2000).await.as_deref(), Some(&b"4"[..]));
    Ok(())
}
