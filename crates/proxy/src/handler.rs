//! One request: find the app, pick a machine, forward, retry refused connections, replay.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, request};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Duration, Instant};

use crate::ProxyConfig;
use crate::balance::{Acquired, Loads};
use crate::body::{GuardedBody, ProxyBody, RequestBody, error_response};
use crate::routes::{RouteTable, Target, app_from_host};
use crate::wake::Wakers;

mod headers;
mod replay;

pub(crate) use headers::Conn;
use replay::Pick;

/// Everything a request needs, shared by every connection of one proxy.
#[derive(Debug)]
pub(crate) struct Proxy {
    pub(crate) cfg: ProxyConfig,
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) loads: Arc<Loads>,
    pub(crate) wakers: Arc<Wakers>,
    client: Client<HttpConnector, ProxyBody>,
}

/// A forwarded response and the machine that gave it.
type Forwarded = (Response<ProxyBody>, Target);

/// How long an upstream TCP connect may take before the next machine is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

// === impl Proxy ===

impl Proxy {
    pub(crate) fn new(
        cfg: ProxyConfig,
        routes: Arc<RouteTable>,
        loads: Arc<Loads>,
        wakers: Arc<Wakers>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Proxy {
            cfg,
            routes,
            loads,
            wakers,
            client,
        }
    }

    /// Answers one request from a client.
    pub(crate) async fn handle(
        &self,
        conn: &Conn,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let request_id = headers::new_request_id(&self.cfg.region);
        let version = request.version();
        let mut response = self.route(conn, request, &request_id).await;
        headers::finish_response(response.headers_mut(), version, &request_id);
        response
    }

    async fn route(
        &self,
        conn: &Conn,
        request: Request<Incoming>,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = request.into_parts();
        let host = headers::host_of(&parts, conn).unwrap_or_default();
        let Some(app) = app_from_host(host, &self.cfg.domain).map(str::to_ascii_lowercase) else {
            let message = format!("no app at host {host:?}: use <app>.{}", self.cfg.domain);
            return error_response(StatusCode::NOT_FOUND, None, &message);
        };
        if !self.routes.has_app(&app) {
            return error_response(StatusCode::NOT_FOUND, None, &format!("unknown app {app:?}"));
        }
        let mut body = match RequestBody::read(body).await {
            Ok(body) => body,
            Err(error) => {
                tracing::debug!(%error, "client request body failed");
                return error_response(StatusCode::BAD_REQUEST, None, "could not read the body");
            }
        };
        headers::prepare_request(&mut parts, conn, &self.cfg.region, request_id);
        let port = conn.public_port;
        let (response, served_by) = match self
            .forward(&app, port, &parts, &mut body, &Pick::Any)
            .await
        {
            Ok(forwarded) => forwarded,
            Err(response) => return response,
        };
        let Some(replay_header) = replay::header_of(response.headers()) else {
            return response;
        };
        let replay = match replay_header.to_str().map_err(|e| e.to_string()) {
            Ok(text) => replay::parse(text, &served_by.machine_id),
            Err(e) => Err(e),
        };
        let replay = match replay {
            Ok(replay) => replay,
            Err(reason) => return error_response(StatusCode::BAD_GATEWAY, Some("PA03"), &reason),
        };
        if !body.is_buffered() {
            let message = "the request body is over 1 MiB and cannot be replayed";
            return error_response(StatusCode::BAD_GATEWAY, Some("PA01"), message);
        }
        drop(response);
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let mut source = format!(
            "instance={};region={};t={micros}",
            served_by.machine_id, served_by.region
        );
        if let Some(state) = &replay.state {
            source.push_str(&format!(";state={state}"));
        }
        if let Ok(value) = HeaderValue::from_str(&source) {
            parts.headers.insert("fly-replay-src", value);
        }
        match self
            .forward(&app, port, &parts, &mut body, &replay.pick)
            .await
        {
            Ok((response, _)) if replay::header_of(response.headers()).is_some() => {
                let message = "the replayed request asked for another replay";
                error_response(StatusCode::BAD_GATEWAY, Some("PA02"), message)
            }
            Ok((response, _)) => response,
            Err(response) => response,
        }
    }

    /// Sends the request to a machine that `pick` allows, trying the next one when a
    /// connection is refused.
    async fn forward(
        &self,
        app: &str,
        port: u16,
        parts: &request::Parts,
        body: &mut RequestBody,
        pick: &Pick,
    ) -> Result<Forwarded, Response<ProxyBody>> {
        let deadline = Instant::now() + self.cfg.queue_timeout;
        let mut tried = HashSet::new();
        loop {
            let Acquired { guard, target, .. } =
                self.choose(app, port, pick, &tried, deadline).await?;
            let upstream = upstream_request(parts, &target, body.take());
            match self.client.request(upstream).await {
                Ok(response) => {
                    let response = response.map(|b| GuardedBody::new(b, guard).boxed_unsync());
                    return Ok((response, target));
                }
                Err(error) if error.is_connect() => {
                    tracing::debug!(%error, machine_id = %target.machine_id, "connect failed");
                    tried.insert(target.machine_id.clone());
                    if tried.len() >= self.cfg.max_attempts || !body.is_buffered() {
                        let message = format!("could not connect to machine {}", target.machine_id);
                        return Err(error_response(
                            StatusCode::BAD_GATEWAY,
                            Some("PC01"),
                            &message,
                        ));
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, machine_id = %target.machine_id, "upstream failed");
                    let message = format!("machine {} failed to answer", target.machine_id);
                    return Err(error_response(
                        StatusCode::BAD_GATEWAY,
                        Some("PU01"),
                        &message,
                    ));
                }
            }
        }
    }

    /// Picks a machine and counts the request against it: a started one below its hard
    /// limit, else a stopped one started on demand, else waits until `deadline`.
    async fn choose(
        &self,
        app: &str,
        port: u16,
        pick: &Pick,
        tried: &HashSet<String>,
        deadline: Instant,
    ) -> Result<Acquired, Response<ProxyBody>> {
        let mut failed_starts = HashSet::new();
        loop {
            // Listen before looking, so a release in between is not missed.
            let released = self.loads.released.notified();
            let changed = self.routes.changed.notified();
            tokio::pin!(released, changed);
            released.as_mut().enable();
            changed.as_mut().enable();

            let targets: Vec<Target> = self
                .routes
                .targets(app, port)
                .into_iter()
                .filter(|t| pick.allows(t) && !tried.contains(&t.machine_id) && !t.cordoned)
                .collect();
            if targets.is_empty() && tried.is_empty() && *pick != Pick::Any {
                let message = format!("no machine matches the replay target {pick:?}");
                return Err(error_response(
                    StatusCode::BAD_GATEWAY,
                    Some("PA04"),
                    &message,
                ));
            }
            let (ready, rest): (Vec<Target>, Vec<Target>) = targets.into_iter().partition(|t| {
                t.state == godwit_types::MachineState::Started
                    || self.wakers.is_awake(&t.machine_id)
            });
            let sleeping = self.nearest_sleeping(&rest, &failed_starts);
            let any_ready = !ready.is_empty();
            if let Some(acquired) = self.loads.acquire(ready, &self.cfg.region) {
                if acquired.over_soft
                    && let Some(sleeping) = sleeping
                {
                    self.wakers.wake_in_background(app, sleeping);
                }
                return Ok(acquired);
            }
            if let Some(sleeping) = sleeping {
                match self.wakers.wake(app, sleeping).await {
                    Ok(()) => self.loads.undrain(&sleeping.machine_id),
                    Err(reason) => {
                        failed_starts.insert(sleeping.machine_id.clone());
                        if self.nearest_sleeping(&rest, &failed_starts).is_none() && !any_ready {
                            return Err(error_response(
                                StatusCode::SERVICE_UNAVAILABLE,
                                Some("PM03"),
                                &reason,
                            ));
                        }
                    }
                }
                continue;
            }
            let starting = rest.iter().any(|t| {
                t.state == godwit_types::MachineState::Starting
                    || self.wakers.is_starting(&t.machine_id)
            });
            if !any_ready && !starting {
                let (code, message) = if tried.is_empty() {
                    (
                        "PR01",
                        format!("app {app} has no started machine that can serve"),
                    )
                } else {
                    (
                        "PR03",
                        format!("no machine of app {app} accepted a connection"),
                    )
                };
                return Err(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(code),
                    &message,
                ));
            }
            tokio::select! {
                () = released => {}
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {
                    let message = format!(
                        "every machine of app {app} stayed at its hard limit for {:?}",
                        self.cfg.queue_timeout
                    );
                    return Err(error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        Some("PL01"),
                        &message,
                    ));
                }
            }
        }
    }

    /// A stopped machine with autostart on, in this region if there is one.
    fn nearest_sleeping<'t>(
        &self,
        targets: &'t [Target],
        failed: &HashSet<String>,
    ) -> Option<&'t Target> {
        use godwit_types::MachineState::{Created, Stopped, Suspended};
        let mut sleeping = targets.iter().filter(|t| {
            matches!(t.state, Stopped | Suspended | Created)
                && t.autostart
                && !failed.contains(&t.machine_id)
        });
        let first = sleeping.next()?;
        Some(
            std::iter::once(first)
                .chain(sleeping)
                .find(|t| t.region == self.cfg.region)
                .unwrap_or(first),
        )
    }
}

/// The request as the machine gets it: HTTP/1.1 to `http://<private_ip>:<internal_port>`.
fn upstream_request(
    parts: &request::Parts,
    target: &Target,
    body: ProxyBody,
) -> Request<ProxyBody> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(target.addr.to_string())
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = parts.headers.clone();
    request
}
