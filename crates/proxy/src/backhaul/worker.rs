//! The worker side's listener: h2c (prior knowledge) connections from other proxies, and
//! HTTP/1.1 ones for tunnels (upgrades and raw TCP, see `handler/remote/tunnel.rs`).

use std::convert::Infallible;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::handler::Proxy;

/// Requests one edge may have in flight on its backhaul connection.
const MAX_STREAMS: u32 = 10_000;

/// Accepts backhaul connections until `cancel` fires, then lets open requests finish for
/// the grace period.
pub(crate) async fn serve(proxy: Arc<Proxy>, listener: TcpListener, cancel: CancellationToken) {
    tracing::info!(addr = ?listener.local_addr().ok(), "listening for backhaul");
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // One connection carries every request of an edge: many streams, and windows that grow
    // with the bandwidth-delay product of long links.
    builder
        .http2()
        .max_concurrent_streams(MAX_STREAMS)
        .adaptive_window(true);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "backhaul accept failed");
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let proxy = Arc::clone(&proxy);
                async move { Ok::<_, Infallible>(proxy.handle_backhaul(request).await) }
            });
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%error, %peer, "backhaul connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = proxy.cfg.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        connections.abort_all();
    }
}
