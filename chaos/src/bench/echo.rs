//! The machine's own WebSocket rate, the baseline `lockstep-relay-bench` reads the relay
//! against: a plain tokio-tungstenite echo server and its clients in this process on
//! 127.0.0.1, on the same runtime, with the relay's socket settings (`TCP_NODELAY` on both
//! ends), sending the relay's own encode-job frame as the message, with as many round
//! trips in flight as the relay benchmark has jobs. Nothing of Lockstep runs here: no
//! authentication, no hub, no JSON; a round trip is one frame out and the same frame back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::sys;

/// How the echo baseline runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoPlan {
    /// Connections opened (the relay benchmark's agents, or its window when that is more).
    pub connections: usize,
    /// Round trips in flight at once (the relay benchmark's window): one closed-loop worker
    /// each, cycling over the connections it owns.
    pub window: usize,
    /// Round trips in all (the relay benchmark's jobs).
    pub round_trips: usize,
    /// Sent and echoed as is (an encode-job frame as the relay writes it).
    pub message: String,
}

/// What the echo baseline measured.
#[derive(Clone, Debug, PartialEq)]
pub struct EchoFigures {
    /// The plan it ran.
    pub plan: EchoPlan,
    /// Opening every connection.
    pub connected_in: Duration,
    /// This process's RSS before the connections opened and with all of them open (bytes).
    pub rss: (Option<u64>, Option<u64>),
    /// First send to last echo.
    pub took: Duration,
    /// Each round trip, milliseconds.
    pub latencies_ms: Vec<f64>,
    /// CPU seconds this process spent over the round trips.
    pub cpu_seconds: f64,
    /// CPU seconds other processes of the machine spent meanwhile (a busy machine makes
    /// the figures smaller).
    pub others_cpu_seconds: f64,
}

impl EchoFigures {
    /// Round trips per second.
    pub fn rate(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

type ClientWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Frame limits as the relay's defaults set them (64 KiB), far above the message.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// Echoes every text or binary frame of one connection until it closes.
async fn echo_connection(stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await
    else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if message.is_close() {
            return;
        }
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}

/// Runs the echo baseline: starts the server, opens the connections (64 at a time), runs
/// the round trips, closes everything.
pub async fn run(plan: &EchoPlan) -> anyhow::Result<EchoFigures> {
    if plan.connections == 0 || plan.window == 0 || plan.round_trips == 0 {
        bail!("the echo baseline needs connections, a window and round trips");
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the echo server")?;
    let url = format!("ws://{}/", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => { conns.spawn(echo_connection(stream)); }
                    // Out of descriptors for a moment: the client's connect fails and says so.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
            }
        }
    });

    let rss_before = sys::own_rss_bytes();
    let started = Instant::now();
    let mut clients: Vec<ClientWs> = Vec::with_capacity(plan.connections);
    let mut opening = JoinSet::new();
    let mut next = 0;
    while clients.len() < plan.connections {
        while next < plan.connections && opening.len() < 64 {
            let url = url.clone();
            opening.spawn(async move {
                tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config()), true)
                    .await
            });
            next += 1;
        }
        let Some(opened) = opening.join_next().await else {
            break;
        };
        let (ws, _) = opened
            .context("an echo client task")?
            .context("opening an echo connection")?;
        clients.push(ws);
    }
    let connected_in = started.elapsed();
    let rss = (rss_before, sys::own_rss_bytes());

    // Worker w owns connections w, w + window, w + 2 × window, …: each connection has one
    // worker, so a reply is always the answer to that worker's last message.
    let workers = plan.window.min(plan.connections);
    let mut owned: Vec<Vec<ClientWs>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, ws) in clients.into_iter().enumerate() {
        owned[i % workers].push(ws);
    }
    let message = Arc::<str>::from(plan.message.as_str());
    let claimed = Arc::new(AtomicUsize::new(0));
    let total = plan.round_trips;
    let ticks = sys::clock_ticks();
    let cpu_before = sys::own_cpu_seconds(ticks);
    let busy_before = sys::machine_busy_seconds(ticks).0;
    let started = Instant::now();
    let mut running = JoinSet::new();
    for mut conns in owned {
        let (message, claimed) = (message.clone(), claimed.clone());
        running.spawn(async move {
            let mut latencies = Vec::new();
            let mut turn = 0usize;
            while claimed.fetch_add(1, Ordering::Relaxed) < total {
                let n = conns.len();
                let ws = &mut conns[turn % n];
                turn += 1;
                let sent = Instant::now();
                ws.send(Message::text(message.as_ref()))
                    .await
                    .context("sending to the echo server")?;
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) if t.len() == message.len() => break,
                        Some(Ok(Message::Text(_))) => bail!("the echo came back changed"),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        other => bail!("the echo server closed a connection: {other:?}"),
                    }
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            let finished = Instant::now();
            for ws in &mut conns {
                let _ = ws.close(None).await;
            }
            anyhow::Ok((latencies, finished))
        });
    }
    let (mut latencies_ms, mut last) = (Vec::with_capacity(total), started);
    while let Some(done) = running.join_next().await {
        let (latencies, finished) = done.context("an echo worker task")??;
        latencies_ms.extend(latencies);
        last = last.max(finished);
    }
    let took = last - started;
    // Includes the closing handshakes (a few ms of the 1,000 connections).
    let cpu_seconds = sys::own_cpu_seconds(ticks) - cpu_before;
    let others_cpu_seconds =
        (sys::machine_busy_seconds(ticks).0 - busy_before - cpu_seconds).max(0.0);
    server.abort();
    Ok(EchoFigures {
        plan: plan.clone(),
        connected_in,
        rss,
        took,
        latencies_ms,
        cpu_seconds,
        others_cpu_seconds,
    })
}
