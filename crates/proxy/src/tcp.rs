//! Raw TCP services: every public port a machine offers with no handlers gets a listener
//! (opened and closed as the route table changes); each connection goes byte for byte to a
//! machine of the one app offering that port, chosen and counted like a request.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use tokio::io::AsyncWriteExt as _;

use crate::handler::{Proxy, Route};
use crate::proxy_proto;

/// Keeps one listener per raw TCP port on `ip` until `cancel` fires.
pub(crate) async fn run(proxy: Arc<Proxy>, ip: IpAddr, cancel: CancellationToken) {
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
                    tokio::spawn(accept(Arc::clone(&proxy), listener, port, token.clone()));
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

async fn accept(proxy: Arc<Proxy>, listener: TcpListener, port: u16, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let proxy = Arc::clone(&proxy);
                tokio::spawn(async move {
                    if let Err(reason) = forward(&proxy, stream, port).await {
                        tracing::debug!(%peer, port, %reason, "raw tcp connection refused");
                    }
                });
            }
            Err(error) => tracing::debug!(%error, port, "accept failed"),
        }
    }
}

/// Joins `client` to a machine of the app offering `port`.
async fn forward(proxy: &Proxy, mut client: TcpStream, port: u16) -> Result<(), String> {
    let apps = proxy.routes.tcp_apps(port);
    let app = match apps.as_slice() {
        [(app, _)] => app.clone(),
        [] => return Err("no app offers this port".to_owned()),
        _ => return Err("more than one app offers this port".to_owned()),
    };
    let Some(_app_guard) = proxy
        .app_limits
        .acquire(&app, proxy.cfg.max_connections_per_app)
    else {
        return Err(format!("app {app} is at its connection limit"));
    };
    let mut deadline = None;
    let mut tried = HashSet::new();
    loop {
        let acquired = proxy
            .choose(&app, port, &Route::any(), &tried, &mut deadline)
            .await
            .map_err(|unserved| format!("no machine of {app}: {}", unserved.response.status()))?;
        let target = acquired.target;
        // Directly, or tunnelled through the worker of the machine's host.
        let client_ip = client.peer_addr().ok().map(|peer| peer.ip());
        match proxy.dial(&app, port, &target, client_ip).await {
            Ok(mut machine) => {
                if let Some(version) = target.proxy_proto {
                    let (Ok(peer), Ok(local)) = (client.peer_addr(), client.local_addr()) else {
                        return Err("the client connection has no address".to_owned());
                    };
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
