//! Listeners: accepting connections, TLS, and serving HTTP/1.1 and HTTP/2 on them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ProxyError;
use crate::certs::tls_accept;
pub(crate) use crate::certs::tls_config;
use crate::h1::{self, Rewind};
use crate::handler::{Conn, Proxy};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr`.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Listen { addr, source })
}

/// Accepts connections until `cancel` fires, then lets open ones finish their requests for
/// the grace period, and cuts those still open after it.
pub(crate) async fn run(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    public_port: u16,
    cancel: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let local = listener.local_addr().ok();
    let mut connections = tokio::task::JoinSet::new();
    tracing::info!(addr = ?local, tls = tls.is_some(), "listening");
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Per-connection errors (reset before accept, out of descriptors): go on.
                tracing::debug!(%error, "accept failed");
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let proxy = Arc::clone(&proxy);
        let tls = tls.clone();
        let cancel = cancel.clone();
        connections.spawn(async move {
            let mut conn = Conn::new(peer, tls.is_some(), public_port);
            let Some(config) = tls else {
                // HTTP/1.1 takes the fast path; hyper gets what it leaves (h2c included).
                let Some(stream) = h1::serve(&proxy, &conn, stream, &cancel).await else {
                    return;
                };
                let service = service(proxy, conn);
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                if let Err(error) = watcher.watch(connection.into_owned()).await {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
                return;
            };
            let handshake = tls_accept(config, proxy.cfg.certs.as_ref(), stream);
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out");
                    return;
                }
            };
            conn.sni = stream.get_ref().1.server_name().map(str::to_owned);
            let stream = match stream.get_ref().1.alpn_protocol() {
                None | Some(b"http/1.1") => match h1::serve(&proxy, &conn, stream, &cancel).await {
                    Some(stream) => stream,
                    None => return,
                },
                Some(_) => Rewind::new(Vec::new(), stream),
            };
            let service = service(proxy, conn);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = proxy.cfg.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            open = connections.len(),
            "connections still open after the grace period, closing them"
        );
        connections.abort_all();
    }
}

/// The hyper service of one connection.
fn service(
    proxy: Arc<Proxy>,
    conn: Conn,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<crate::body::ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<crate::body::ProxyBody>, Infallible>> + Send,
> + Clone {
    let conn = Arc::new(conn);
    service_fn(move |request| {
        let proxy = Arc::clone(&proxy);
        let conn = Arc::clone(&conn);
        // Boxed: the request's future is several KiB, and hyper moves the one it gets into
        // a task per HTTP/2 stream; moving a pointer is cheaper than copying it each time.
        Box::pin(async move { Ok(proxy.handle(&conn, request).await) })
    })
}
