//! The HTTP plumbing every vendor simulator shares: an actix-web server on a thread of its
//! own with its own actix system (so a simulator starts the same from a plain test, a tokio
//! runtime or inside an actix system), returning once it listens.

use std::io;
use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

/// A simulator serving in the background, with `H` the control of its state; stopped
/// when dropped.
#[derive(Debug)]
pub struct Running<H> {
    addr: SocketAddr,
    handle: H,
    server: ServerHandle,
    done: Option<tokio::sync::oneshot::Receiver<io::Result<()>>>,
}

impl<H: Clone> Running<H> {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Control of the simulator's state.
    pub fn handle(&self) -> H {
        self.handle.clone()
    }

    /// Waits until the server ends.
    pub async fn wait(&mut self) -> io::Result<()> {
        match self.done.take() {
            Some(rx) => rx.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }

    /// Stops the server and waits for it to end.
    pub async fn stop(mut self) -> io::Result<()> {
        self.server.stop(true).await;
        self.wait().await
    }

    /// Serves until the server fails or the process receives Ctrl-C, then stops: a
    /// standalone simulator process (`lockstep simulate`, chaos tests).
    pub async fn serve_until_ctrl_c(mut self, vendor: &'static str) -> io::Result<()> {
        tokio::select! {
            r = self.wait() => r,
            r = tokio::signal::ctrl_c() => {
                r?;
                tracing::info!(vendor, "simulator stopping");
                self.stop().await
            }
        }
    }
}

impl<H> Drop for Running<H> {
    fn drop(&mut self) {
        // `stop` sends the command at once; the returned future only awaits completion.
        drop(self.server.stop(false));
    }
}

/// Serves `routes` with `state` as app data on `bind` (port 0 picks a free port).
pub(crate) fn serve<T: Clone + Send + Sync + 'static>(
    thread: &str,
    bind: SocketAddr,
    state: T,
    routes: fn(&mut web::ServiceConfig),
) -> io::Result<Running<T>> {
    let data = web::Data::new(state.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<(SocketAddr, ServerHandle)>>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<io::Result<()>>();
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            let system = actix_web::rt::System::new();
            let result = system.block_on(async move {
                let bound =
                    HttpServer::new(move || App::new().app_data(data.clone()).configure(routes))
                        .workers(1)
                        .disable_signals()
                        .shutdown_timeout(1)
                        .bind(bind);
                let server = match bound {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let Some(addr) = server.addrs().first().copied() else {
                    let _ = ready_tx.send(Err(io::Error::other("no address bound")));
                    return Ok(());
                };
                let running = server.run();
                let _ = ready_tx.send(Ok((addr, running.handle())));
                running.await
            });
            let _ = done_tx.send(result);
        })?;
    let (addr, server) = ready_rx
        .recv()
        .map_err(|_| io::Error::other("simulator thread ended before binding"))??;
    Ok(Running {
        addr,
        handle: state,
        server,
        done: Some(done_rx),
    })
}
