//! Raw TCP services: every public port a machine offers with no handlers gets a listener
//! (opened and closed as the route table changes); each connection goes byte for byte to a
//! machine of the one app offering that port, chosen and counted like a request. A port with
//! the `tls` handler has its TLS terminated here first (with the certificate the client's
//! SNI names, no ALPN), and one with `proxy_proto` gets a PROXY protocol header first.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::handler::{Proxy, Route};
use crate::proxy_proto;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps one listener per raw TCP port on `ip` until `cancel` fires.
/// `tls` is the proxy's TLS configuration, for ports with the `tls` handler (without it
/// such ports refuse connections).
pub(crate) async fn run(
    proxy: Arc<Proxy>,
    ip: IpAddr,
    tls: Option<Arc<ServerConfig>>,
    cancel: CancellationToken,
) {
    // Raw TCP carries no HTTP: no ALPN protocol is offered.
    let tls = tls.map(|config| {
        let mut raw = (*config).clone();
        raw.alpn_protocols.clear();
        TlsAcceptor::from(Arc::new(raw))
    });
    let mut ports = proxy.routes.tcp_ports();
    let mut listening: HashMap<u16, CancellationToken> = HashMap::new();
    loop {
        let wanted = ports.borrow_and_update().clone();
        listening.retain(|port, token| {
            let keep = wanted.contains(port);
            if !keep {
                tracing::info!(port, "raw tcp port no longer offered, closing its listener");
                token.cancel();
            }
            keep
        });
        for port in wanted {
            if listening.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::new(ip, port);
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    tracing::info!(%addr, "listening for raw tcp");
                    let token = cancel.child_token();
                    tokio::spawn(accept(
                        Arc::clone(&proxy),
                        listener,
                        port,
                        tls.clone(),
                        token.clone(),
                    ));
                    listening.insert(port, token);
                }
                // Tried again at the next change of the route table.
                Err(error) => tracing::warn!(%error, %addr, "cannot listen for raw tcp"),
            }
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            changed = ports.changed() => if changed.is_err() { break },
        }
    }
}

async fn accept(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    port: u16,
    tls: Option<TlsAcceptor>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let proxy = Arc::clone(&proxy);
                let tls = tls.clone();
                tokio::spawn(async move {
                    if let Err(reason) = serve(&proxy, stream, port, tls).await {
                        tracing::debug!(%peer, port, %reason, "raw tcp connection refused");
                    }
                });
            }
            Err(error) => tracing::debug!(%error, port, "accept failed"),
        }
    }
}

/// Terminates TLS when the port asks for it, then forwards the connection.
async fn serve(
    proxy: &Proxy,
    client: TcpStream,
    port: u16,
    tls: Option<TlsAcceptor>,
) -> Result<(), String> {
    let addrs = client
        .peer_addr()
        .and_then(|peer| Ok((peer, client.local_addr()?)))
        .map_err(|error| format!("the client connection has no address: {error}"))?;
    let app = app_of(proxy, port)?;
    let wants_tls = proxy
        .routes
        .app(&app)
        .is_some_and(|routes| routes.terminates_tls(port));
    if !wants_tls {
        return forward(proxy, client, addrs, &app, port).await;
    }
    let Some(acceptor) = tls else {
        return Err(format!(
            "port {port} asks for TLS but the proxy has no certificate (run it with --cert and --key)"
        ));
    };
    let client = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(client))
        .await
        .map_err(|_| "the TLS handshake timed out".to_owned())?
        .map_err(|error| format!("TLS handshake failed: {error}"))?;
    forward(proxy, client, addrs, &app, port).await
}

/// The one app offering raw TCP `port`.
fn app_of(proxy: &Proxy, port: u16) -> Result<String, String> {
    let apps = proxy.routes.tcp_apps(port);
    match apps.as_slice() {
        [(app, _)] => Ok(app.clone()),
        [] => Err("no app offers this port".to_owned()),
        _ => Err("more than one app offers this port".to_owned()),
    }
}

/// Joins `client` (from `peer`, reaching us at `local`) to a machine of `app`.
async fn forward<S>(
    proxy: &Proxy,
    mut client: S,
    (peer, local): (SocketAddr, SocketAddr),
    app: &str,
    port: u16,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(_app_guard) = proxy
        .app_limits
        .acquire(app, proxy.cfg.max_connections_per_app)
    else {
        return Err(format!("app {app} is at its connection limit"));
    };
    let mut deadline = None;
    let mut tried = HashSet::new();
    loop {
        let acquired = proxy
            .choose(app, port, &Route::any(), &tried, &mut deadline)
            .await
            .map_err(|unserved| format!("no machine of {app}: {}", unserved.response.status()))?;
        let target = acquired.target;
        // Directly, or tunnelled through the worker of the machine's host.
        match proxy.dial(app, port, &target, Some(peer.ip())).await {
            Ok(mut machine) => {
                if let Some(version) = target.proxy_proto {
                    let header = proxy_proto::header(version, peer, local);
                    if let Err(error) = machine.write_all(&header).await {
                        return Err(format!("could not send the proxy protocol header: {error}"));
                    }
                }
                let _guard = acquired.guard;
                let copied = tokio::io::copy_bidirectional(&mut client, &mut machine).await;
                tracing::debug!(?copied, machine_id = %target.machine_id, "raw tcp connection closed");
                return Ok(());
            }
            Err(error) => {
                tracing::debug!(%error, machine_id = %target.machine_id, "connect failed")
            }
        }
        tried.insert(target.machine_id.clone());
        if tried.len() >= proxy.cfg.max_attempts {
            return Err(format!("no machine of {app} accepted a connection"));
        }
    }
}
