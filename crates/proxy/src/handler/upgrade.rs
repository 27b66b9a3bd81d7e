//! HTTP/1.1 protocol upgrades (WebSocket): the request goes to a machine on a connection of
//! its own; when the machine answers `101 Switching Protocols`, both upgraded connections
//! are joined byte for byte until either side closes. The tunnel counts against the
//! machine's load while it is open.

use std::collections::HashSet;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::replay::Pick;
use super::{Conn, Proxy, headers, upstream_request};
use crate::balance::Acquired;
use crate::body::{GuardedBody, ProxyBody, error_response};
use crate::limit::AppGuard;
use crate::upstream::{self, UpstreamError};

// === impl Proxy ===

impl Proxy {
    /// Forwards an upgrade request of `app` and, on `101`, joins the two connections.
    pub(super) async fn upgrade(
        &self,
        conn: &Conn,
        mut request: Request<Incoming>,
        app: &str,
        request_id: &HeaderValue,
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
                .choose(app, conn.public_port, &Pick::Any, &tried, &mut deadline)
                .await
            {
                Ok(acquired) => acquired,
                Err(response) => return response,
            };
            match upstream::connect(target.addr, true).await {
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
            return response.map(|b| ProxyBody::Upstream(GuardedBody::new(b, guard, None)));
        }
        let machine_upgrade = hyper::upgrade::on(&mut response);
        let machine_id = target.machine_id.clone();
        let app_guard = app_guard.take();
        tokio::spawn(async move {
            let _guards = (guard, app_guard);
            let (client, machine) = match tokio::try_join!(client_upgrade, machine_upgrade) {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, %machine_id, "upgrade failed");
                    return;
                }
            };
            let (mut client, mut machine) = (TokioIo::new(client), TokioIo::new(machine));
            match tokio::io::copy_bidirectional(&mut client, &mut machine).await {
                Ok((up, down)) => {
                    tracing::debug!(%machine_id, up, down, "upgraded connection closed")
                }
                Err(error) => tracing::debug!(%error, %machine_id, "upgraded connection failed"),
            }
        });
        response.map(|_| ProxyBody::empty())
    }
}
