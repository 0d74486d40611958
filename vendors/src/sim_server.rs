//! The HTTP plumbing every vendor simulator shares: an actix-web server on a thread of its
//! own with its own actix system (so a simulator starts the same from a plain test, a tokio
//! runtime or inside an actix system), returning once it listens.

use std::io;
use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

/// A started server.
pub(crate) struct Served {
    /// The bound address.
    pub(crate) addr: SocketAddr,
    /// Stops the server.
    pub(crate) server: ServerHandle,
    /// Resolves when the server ended.
    pub(crate) done: tokio::sync::oneshot::Receiver<io::Result<()>>,
}

/// Serves `routes` with `state` as app data on `bind` (port 0 picks a free port).
pub(crate) fn serve<T: Send + Sync + 'static>(
    thread: &str,
    bind: SocketAddr,
    state: T,
    routes: fn(&mut web::ServiceConfig),
) -> io::Result<Served> {
    let data = web::Data::new(state);
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
    Ok(Served {
        addr,
        server,
        done: done_rx,
    })
}
