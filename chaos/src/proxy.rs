//! A TCP fault proxy: listens on 127.0.0.1 (a port the OS picks) in front of one upstream
//! and relays bytes both ways, until told otherwise:
//!
//! - [`Proxy::cut`]: a network partition. Existing connections stay open but no byte
//!   crosses in either direction; new connections are accepted and then stall (no upstream
//!   connection is made). Heartbeats time out, as they would behind a dead switch.
//! - [`Proxy::reset`]: every current connection is closed at once (both sides); new ones
//!   work normally.
//! - [`Proxy::heal`]: bytes flow again; stalled connections are connected upstream.
//!
//! Give each Lockstep node its own proxies (AMQP, Postgres) to partition one node away.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with bytes now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pass,
    Cut,
}

#[derive(Debug)]
struct Control {
    mode: watch::Sender<Mode>,
    /// Bumped by every reset: connections opened before it close.
    generation: watch::Sender<u64>,
    connections: AtomicU64,
}

/// A running proxy; stops (and closes every connection) when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts relaying to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let control = Arc::new(Control {
            mode: watch::channel(Mode::Pass).0,
            generation: watch::channel(0).0,
            connections: AtomicU64::new(0),
        });
        let c = control.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                c.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(client, upstream, c.clone()));
            }
        });
        Ok(Self {
            addr,
            upstream,
            control,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The upstream it relays to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.control.connections.load(Ordering::Relaxed)
    }

    /// Blackholes every connection, open or new (a partition).
    pub fn cut(&self) {
        self.control.mode.send_replace(Mode::Cut);
    }

    /// Lets bytes flow again.
    pub fn heal(&self) {
        self.control.mode.send_replace(Mode::Pass);
    }

    /// Closes every current connection.
    pub fn reset(&self) {
        self.control.generation.send_modify(|g| *g += 1);
    }

    /// Whether the proxy is cut.
    pub fn is_cut(&self) -> bool {
        *self.control.mode.borrow() == Mode::Cut
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.reset();
    }
}

/// Waits until the proxy passes bytes; `false` if the connection was reset meanwhile.
async fn passing(mode: &mut watch::Receiver<Mode>, reset: &mut watch::Receiver<u64>) -> bool {
    loop {
        if *mode.borrow_and_update() == Mode::Pass {
            return true;
        }
        tokio::select! {
            r = mode.changed() => if r.is_err() { return false },
            _ = reset.changed() => return false,
        }
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, control: Arc<Control>) {
    let mut reset = control.generation.subscribe();
    reset.borrow_and_update();
    let mut mode = control.mode.subscribe();
    // a new connection during a cut stalls until the heal (or a reset)
    if !passing(&mut mode, &mut reset).await {
        return;
    }
    let upstream = tokio::select! {
        c = TcpStream::connect(upstream) => match c {
            Ok(s) => s,
            Err(_) => return,
        },
        _ = reset.changed() => return,
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let up = relay(cr, uw, control.clone());
    let down = relay(ur, cw, control.clone());
    tokio::select! {
        _ = up => {},
        _ = down => {},
        _ = reset.changed() => {},
    }
}

/// Copies one direction, holding every byte while the proxy is cut.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    control: Arc<Control>,
) {
    let mut mode = control.mode.subscribe();
    let mut reset = control.generation.subscribe();
    reset.borrow_and_update();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !passing(&mut mode, &mut reset).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // a cut while waiting for bytes: stop reading (the sender's window fills)
            _ = mode.changed() => continue,
        };
        // bytes read just before a cut are held until the heal
        if !passing(&mut mode, &mut reset).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
