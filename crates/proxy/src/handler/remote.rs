//! Sending a request to its machine: directly when the machine is on this proxy's host (or
//! hosts are not known), else over backhaul to its host's worker proxy; and the worker's
//! side of a backhauled request.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, request};
use hyper::body::Incoming;

use super::{Proxy, upstream_request};

mod tunnel;
use crate::backhaul::{self, SendError};
use crate::balance::Acquired;
use crate::body::{GuardedBody, ProxyBody, error_response};
use crate::routes::{Health, Target};
use crate::upstream::{Pooled, UpstreamError};

/// Why a request did not get a response from its machine.
#[derive(Debug)]
pub(super) enum SendFailure {
    /// The machine never got it (refused, gone, full): the next candidate may be tried.
    Retry(String),
    /// The machine may have got it: give up.
    Fail(String),
}

// === impl Proxy ===

impl Proxy {
    /// Sends the request to `target`, directly or through its host's worker proxy.
    pub(super) async fn send_to(
        &self,
        app: &str,
        port: u16,
        target: &Target,
        parts: &request::Parts,
        body: ProxyBody,
    ) -> Result<(Response<Incoming>, Option<Pooled>), SendFailure> {
        let Some(worker) = self.remote_worker(target) else {
            return match self
                .upstream
                .send(target.addr, upstream_request(parts, body))
                .await
            {
                Ok((response, pooled)) => Ok((response, Some(pooled))),
                Err(error @ UpstreamError::Connect { .. }) => {
                    Err(SendFailure::Retry(error.to_string()))
                }
                Err(error) => Err(SendFailure::Fail(error.to_string())),
            };
        };
        let addr = worker.map_err(SendFailure::Retry)?;
        let response = self
            .send_remote(addr, app, port, target, parts, body)
            .await?;
        Ok((response, None))
    }

    /// The worker proxy of `host_id`: the IP of its agent's URL and this proxy's backhaul
    /// port (every proxy of a cluster listens on the same one).
    pub(crate) fn worker_of(&self, host_id: &str) -> Option<SocketAddr> {
        let port = self.cfg.backhaul_listen?.port();
        let host = self
            .cfg
            .hosts
            .as_ref()?
            .get(&godwit_state::key_for(host_id))?;
        Some(SocketAddr::new(ip_of_url(&host.agent_url)?, port))
    }

    /// Whether `target` runs on this proxy's host (always, with hosts unknown).
    pub(crate) fn is_local(&self, target: &Target) -> bool {
        self.cfg
            .host_id
            .as_ref()
            .is_none_or(|own| target.host_id == *own || target.host_id.is_empty())
    }

    /// `None` for a machine on this host (or with hosts unknown); else its worker's address,
    /// or why there is none.
    pub(crate) fn remote_worker(&self, target: &Target) -> Option<Result<SocketAddr, String>> {
        let own = self.cfg.host_id.as_ref()?;
        if target.host_id == *own || target.host_id.is_empty() {
            return None;
        }
        Some(
            self.worker_of(&target.host_id)
                .ok_or_else(|| format!("no worker proxy known for host {}", target.host_id)),
        )
    }

    async fn send_remote(
        &self,
        addr: SocketAddr,
        app: &str,
        port: u16,
        target: &Target,
        parts: &request::Parts,
        body: ProxyBody,
    ) -> Result<Response<Incoming>, SendFailure> {
        let Some(client) = self.backhaul.as_ref() else {
            return Err(SendFailure::Retry("backhaul is not configured".to_owned()));
        };
        let authority = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("backhaul.invalid");
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| SendFailure::Fail(format!("cannot forward to {authority}: {e}")))?;
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = parts.headers.clone();
        let headers = request.headers_mut();
        let values = [
            (backhaul::MACHINE, HeaderValue::from_str(&target.machine_id)),
            (backhaul::APP, HeaderValue::from_str(app)),
            (backhaul::PUBLIC_PORT, Ok(HeaderValue::from(port))),
        ];
        for (name, value) in values {
            let value = value.map_err(|_| SendFailure::Fail(format!("invalid {name}")))?;
            headers.insert(name, value);
        }
        if let Some(client_ip) = parts.headers.get("fly-client-ip") {
            headers.insert(backhaul::CLIENT_IP, client_ip.clone());
        }
        headers.insert(backhaul::EDGE_REGION, self.region.clone());
        match client.send(addr, request).await {
            Ok(mut response) => {
                if let Some(load) = response.headers_mut().remove(backhaul::LOAD)
                    && let Some((in_flight, _)) = load.to_str().unwrap_or("").split_once('/')
                    && let Ok(in_flight) = in_flight.parse::<u32>()
                {
                    self.loads.hint(&target.machine_id, in_flight);
                }
                if response.status() == StatusCode::SERVICE_UNAVAILABLE
                    && response.headers().contains_key(backhaul::TRY_ELSEWHERE)
                {
                    return Err(SendFailure::Retry(format!(
                        "the worker at {addr} cannot serve machine {}",
                        target.machine_id
                    )));
                }
                Ok(response)
            }
            Err(error @ (SendError::Connect { .. } | SendError::Handshake { .. })) => {
                // Not chosen again until a ping gets through.
                self.closeness.host_answered(&target.host_id, false);
                Err(SendFailure::Retry(error.to_string()))
            }
            Err(error) => Err(SendFailure::Fail(error.to_string())),
        }
    }

    /// Answers a request another proxy sent over backhaul.
    pub(crate) async fn handle_backhaul(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let authenticated = self.backhaul_token.as_ref().is_some_and(|token| {
            backhaul::secret_matches(token, request.headers().get(backhaul::SECRET))
        });
        if !authenticated {
            let message = "backhaul requests must carry the cluster secret";
            return error_response(StatusCode::UNAUTHORIZED, None, message);
        }
        if request.uri().path() == backhaul::PING_PATH {
            let mut response = Response::new(ProxyBody::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            return response;
        }
        let text = |name| {
            let value = request.headers().get(&name)?.to_str().ok()?;
            Some(value.to_owned())
        };
        let (machine_id, app, port) = (
            text(backhaul::MACHINE),
            text(backhaul::APP),
            text(backhaul::PUBLIC_PORT).and_then(|p| p.parse::<u16>().ok()),
        );
        let (Some(machine_id), Some(app), Some(port)) = (machine_id, app, port) else {
            let message = "a backhaul request names its machine, app and public port";
            return error_response(StatusCode::BAD_REQUEST, None, message);
        };
        if request.uri().path() == backhaul::TUNNEL_PATH {
            return self.open_tunnel(request, &app, port, &machine_id).await;
        }
        let (mut parts, body) = request.into_parts();
        let client_ip = parts.headers.get(backhaul::CLIENT_IP).cloned();
        let edge_region = parts.headers.get(backhaul::EDGE_REGION).cloned();
        backhaul::strip(&mut parts.headers);
        parts.headers.remove("fly-client-ip");
        if let Some(ip) = client_ip {
            parts.headers.insert("fly-client-ip", ip);
        }
        if let Some(region) = edge_region {
            parts.headers.insert("fly-region", region);
        }
        let Acquired { guard, target, .. } = match self.accept_backhauled(&app, port, &machine_id) {
            Ok(acquired) => acquired,
            Err(reason) => return try_elsewhere(&reason),
        };
        let upstream = upstream_request(&parts, ProxyBody::Streaming(None, body));
        match self.upstream.send(target.addr, upstream).await {
            Ok((mut response, pooled)) => {
                // Others' requests: this one ends with its response.
                let others = self.loads.load_of(&machine_id).saturating_sub(1);
                let load = format!("{others}/{}", target.soft_limit);
                if let Ok(load) = HeaderValue::from_str(&load) {
                    response.headers_mut().insert(backhaul::LOAD, load);
                }
                response.map(|b| ProxyBody::Upstream(GuardedBody::new(b, guard, Some(pooled))))
            }
            Err(error @ UpstreamError::Connect { .. }) => try_elsewhere(&error.to_string()),
            Err(error) => {
                tracing::debug!(%error, %machine_id, "backhauled request failed");
                let message = format!("machine {machine_id} failed to answer");
                error_response(StatusCode::BAD_GATEWAY, Some("PU01"), &message)
            }
        }
    }

    /// The worker's own check of a backhauled request's machine: on this host, started,
    /// not cordoned, not critical, below its hard limit; counted against it.
    pub(super) fn accept_backhauled(
        &self,
        app: &str,
        port: u16,
        machine_id: &str,
    ) -> Result<Acquired, String> {
        let routes = self
            .routes
            .app(app)
            .ok_or_else(|| format!("no machine of app {app} here"))?;
        let target = routes
            .on_port(port)
            .iter()
            .find(|t| t.machine_id == machine_id)
            .ok_or_else(|| format!("no machine {machine_id} on port {port} here"))?;
        if let Some(own) = &self.cfg.host_id
            && target.host_id != *own
        {
            return Err(format!("machine {machine_id} is not on this host"));
        }
        if target.cordoned || target.health == Health::Critical || !self.is_ready(target) {
            return Err(format!("machine {machine_id} cannot take requests"));
        }
        self.loads
            .acquire(
                std::slice::from_ref(target),
                |_| true,
                &*self.closeness,
                None,
            )
            .ok_or_else(|| format!("machine {machine_id} is at its hard limit"))
    }
}

/// The worker's "try elsewhere": never shown to a client (the edge tries another machine).
pub(super) fn try_elsewhere(reason: &str) -> Response<ProxyBody> {
    tracing::debug!(%reason, "backhauled request refused");
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, None, reason);
    response
        .headers_mut()
        .insert(backhaul::TRY_ELSEWHERE, HeaderValue::from_static("1"));
    response
}

/// The IP of `http://ip:port/...` (IPv6 in brackets).
fn ip_of_url(url: &str) -> Option<IpAddr> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    authority
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_urls_give_their_ip() {
        let ip = |s: &str| ip_of_url(s).map(|ip| ip.to_string());
        assert_eq!(ip("http://10.0.0.7:7070"), Some("10.0.0.7".to_owned()));
        assert_eq!(ip("http://[fd00::7]:7070/x"), Some("fd00::7".to_owned()));
        assert_eq!(ip("http://10.0.0.8"), Some("10.0.0.8".to_owned()));
        assert_eq!(ip("http://agent.example:7070"), None);
    }
}
