//! HTTP/1.1 protocol upgrades (WebSocket): the request goes to a machine on a connection of
//! its own; when the machine answers `101 Switching Protocols`, both upgraded connections
//! are joined byte for byte until either side closes. The tunnel counts against the
//! machine's load while bytes flow (until it has been quiet for `autostop_idle`). Open
//! tunnels are kept per machine in [`Upgrades`], so autostop can close them first: a
//! WebSocket client then gets a close frame (1001 "going away").

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::route::Route;
use super::{Conn, Proxy, headers, served, upstream_request};
use crate::balance::Acquired;
use crate::body::{GuardedBody, ProxyBody, error_response};
use crate::limit::AppGuard;
use crate::upstream::UpstreamError;

mod frames;
mod tunnel;

/// How long [`Upgrades::close_for`] waits for the tunnels it closes.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The open upgraded connections, per machine.
#[derive(Debug, Default)]
pub(crate) struct Upgrades {
    next_id: AtomicU64,
    open: Mutex<HashMap<String, HashMap<u64, CancellationToken>>>,
    /// Fired whenever a tunnel ends.
    ended: Notify,
}

/// A tunnel's place in [`Upgrades`]; leaves it when dropped.
#[derive(Debug)]
struct Registration {
    upgrades: Arc<Upgrades>,
    machine_id: String,
    id: u64,
    close: CancellationToken,
}

// === impl Proxy ===

impl Proxy {
    /// Forwards an upgrade request of `app` and, on `101`, joins the two connections.
    pub(super) async fn upgrade(
        &self,
        conn: &Conn,
        mut request: Request<Incoming>,
        app: &str,
        request_id: &HeaderValue,
        route: &Route,
        app_guard: &mut Option<AppGuard>,
    ) -> Response<ProxyBody> {
        let client_upgrade = hyper::upgrade::on(&mut request);
        let (mut parts, body) = request.into_parts();
        headers::prepare_request(&mut parts, conn, &self.region, request_id);
        let mut body = Some(body);
        let mut deadline = None;
        let mut tried = HashSet::new();
        let (guard, target, mut sender) = loop {
            let Acquired { guard, target, .. } = match self
                .choose(app, conn.public_port, route, &tried, &mut deadline)
                .await
            {
                Ok(acquired) => acquired,
                Err(unserved) => return unserved.response,
            };
            route.mark_chosen(&mut parts.headers, &target);
            // Directly, or tunnelled through the worker of the machine's host.
            let client_ip = parts
                .headers
                .get("fly-client-ip")
                .and_then(|ip| ip.to_str().ok()?.parse().ok());
            let port = conn.public_port;
            match self.connect_upgradable(app, port, &target, client_ip).await {
                Ok(sender) => break (guard, target, sender),
                Err(error @ UpstreamError::Connect { .. })
                    if tried.len() + 1 < self.cfg.max_attempts =>
                {
                    tracing::debug!(%error, machine_id = %target.machine_id, "connect failed");
                    tried.insert(target.machine_id.clone());
                }
                Err(error) => {
                    tracing::debug!(%error, machine_id = %target.machine_id, "connect failed");
                    let message = format!("could not connect to machine {}", target.machine_id);
                    return error_response(StatusCode::BAD_GATEWAY, Some("PC01"), &message);
                }
            }
        };
        let body = body
            .take()
            .map_or_else(ProxyBody::empty, |b| ProxyBody::Streaming(None, b));
        let mut response = match sender.send_request(upstream_request(&parts, body)).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, machine_id = %target.machine_id, "upgrade request failed");
                let message = format!("machine {} failed to answer", target.machine_id);
                return error_response(StatusCode::BAD_GATEWAY, Some("PU01"), &message);
            }
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            // The machine declined: an ordinary response on a connection not reused.
            let response = response.map(|b| ProxyBody::Upstream(GuardedBody::new(b, guard, None)));
            return served(response, &target);
        }
        let machine_upgrade = hyper::upgrade::on(&mut response);
        let machine_id = target.machine_id.clone();
        let websocket = parts
            .headers
            .get(header::UPGRADE)
            .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let registration = Upgrades::register(&self.upgrades, &machine_id);
        let app_guard = app_guard.take();
        let quiet = self.cfg.autostop_idle;
        let joined = async move {
            let _app_guard = app_guard;
            let (client, machine) = match tokio::try_join!(client_upgrade, machine_upgrade) {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, %machine_id, "upgrade failed");
                    return;
                }
            };
            let tunnel = tunnel::Tunnel {
                client: TokioIo::new(client),
                machine: TokioIo::new(machine),
                websocket,
                guard,
                quiet,
            };
            let (up, down) = tunnel.run(&registration.close).await;
            tracing::debug!(%machine_id, up, down, "upgraded connection closed");
            drop(registration);
        };
        tokio::spawn(joined.instrument(tracing::Span::current()));
        served(response.map(|_| ProxyBody::empty()), &target)
    }
}

// === impl Upgrades ===

impl Upgrades {
    fn register(upgrades: &Arc<Upgrades>, machine_id: &str) -> Registration {
        let id = upgrades.next_id.fetch_add(1, Ordering::Relaxed);
        let close = CancellationToken::new();
        upgrades
            .lock()
            .entry(machine_id.to_owned())
            .or_default()
            .insert(id, close.clone());
        Registration {
            upgrades: Arc::clone(upgrades),
            machine_id: machine_id.to_owned(),
            id,
            close,
        }
    }

    /// Closes every open upgraded connection to `machine_id` (WebSocket clients get a close
    /// frame, 1001 "going away"; the machine's side is closed) and waits until they are
    /// closed, at most a few seconds. Call before stopping the machine.
    pub(crate) async fn close_for(&self, machine_id: &str) {
        let tokens: Vec<CancellationToken> = self
            .lock()
            .get(machine_id)
            .map(|open| open.values().cloned().collect())
            .unwrap_or_default();
        if tokens.is_empty() {
            return;
        }
        tracing::info!(%machine_id, connections = tokens.len(), "closing upgraded connections before stop");
        for token in &tokens {
            token.cancel();
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if !self.lock().contains_key(machine_id) {
                return;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                tracing::warn!(%machine_id, "upgraded connections still open after {CLOSE_WAIT:?}");
                return;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<u64, CancellationToken>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Registration ===

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.upgrades.lock();
        if let Some(tunnels) = open.get_mut(&self.machine_id) {
            tunnels.remove(&self.id);
            if tunnels.is_empty() {
                open.remove(&self.machine_id);
            }
        }
        drop(open);
        self.upgrades.ended.notify_waiters();
    }
}
