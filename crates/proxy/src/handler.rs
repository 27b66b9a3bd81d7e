//! One request: find the app, pick a machine, forward, retry refused connections, replay.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, request};
use hyper::body::Incoming;
use tracing::Instrument as _;

use crate::ProxyConfig;
use crate::backhaul::{self, BackhaulClient, Closeness};
use crate::balance::{Acquired, Loads};
use crate::body::{GuardedBody, ProxyBody, RequestBody, error_response};
use crate::limit::{AppGuard, AppLimits};
use crate::metrics::Metrics;
use crate::routes::{RouteTable, Target, app_from_host};
use crate::upstream::Upstream;
use crate::wake::Wakers;

mod access;
mod choose;
mod headers;
mod remote;
mod replay;
mod route;
mod upgrade;

use access::served;
pub(crate) use access::{LoggedBody, write as access_line};
use choose::{Miss, Unserved};
pub(crate) use headers::Conn;
pub(crate) use replay::{Ask, REPLAY_HEADERS, REPLAY_JSON_LIMIT, is_replay_json};
pub(crate) use route::{
    FLY_FORCE_INSTANCE, FLY_FORCE_REGION, FLY_PREFER_INSTANCE, FLY_PREFER_REGION, Route,
};

/// Everything a request needs, shared by every connection of one proxy.
#[derive(Debug)]
pub(crate) struct Proxy {
    pub(crate) cfg: ProxyConfig,
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) loads: Arc<Loads>,
    pub(crate) wakers: Arc<Wakers>,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) app_limits: Arc<AppLimits>,
    /// Open upgraded (WebSocket) connections per machine, closed before autostop.
    pub(crate) upgrades: Arc<upgrade::Upgrades>,
    /// Measured RTT per region: ranks regions for every choice.
    pub(crate) closeness: Arc<Closeness>,
    /// Connections to other hosts' worker proxies (edge role: `host_id` and a secret set).
    pub(crate) backhaul: Option<BackhaulClient>,
    /// Idle connections of the HTTP/1.1 fast path.
    pub(crate) h1_pool: crate::h1::Pool,
    /// The hashed cluster secret backhaul requests must carry.
    backhaul_token: Option<HeaderValue>,
    /// `cfg.region` as a header value.
    region: HeaderValue,
}

/// A forwarded response and the machine that gave it.
type Forwarded = (Response<ProxyBody>, Arc<Target>);

// === impl Proxy ===

impl Proxy {
    pub(crate) fn new(
        cfg: ProxyConfig,
        routes: Arc<RouteTable>,
        loads: Arc<Loads>,
        wakers: Arc<Wakers>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let region = HeaderValue::from_str(&cfg.region)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-region"));
        let upstream = Arc::new(Upstream::new(
            cfg.upstream_idle_timeout,
            Arc::clone(&routes),
        ));
        let backhaul_token = cfg.backhaul_secret.as_deref().map(backhaul::secret_token);
        let backhaul = backhaul_token
            .clone()
            .filter(|_| cfg.host_id.is_some())
            .map(BackhaulClient::new);
        let closeness = Arc::new(Closeness::new(&cfg.region));
        let h1_pool = crate::h1::Pool::new(cfg.upstream_idle_timeout);
        Proxy {
            cfg,
            routes,
            loads,
            wakers,
            upstream,
            metrics,
            app_limits: Arc::default(),
            upgrades: Arc::default(),
            closeness,
            backhaul,
            h1_pool,
            backhaul_token,
            region,
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
        let span = tracing::info_span!(
            "request",
            request_id = request_id.to_str().unwrap_or_default()
        );
        let logged = self
            .cfg
            .access_log
            .then(|| (request.method().clone(), request.uri().path().to_owned()));
        let started = Instant::now();
        let mut response = self
            .route(conn, request, &request_id)
            .instrument(span.clone())
            .await;
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::finish_response(response.headers_mut(), version, &request_id, switching);
        backhaul::strip(response.headers_mut());
        match logged {
            Some((method, path)) => access::log(response, span, method, path, started),
            None => response,
        }
    }

    async fn route(
        &self,
        conn: &Conn,
        mut request: Request<Incoming>,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        // Only proxies set backhaul headers, on the backhaul listener.
        backhaul::strip(request.headers_mut());
        let certs = self.cfg.certs.as_ref();
        if let Some(certs) = certs
            && let Some(answer) = certs.http01_response(request.uri().path()).await
        {
            return answer;
        }
        let host = headers::host_of(request.uri(), request.headers(), conn).unwrap_or_default();
        let app = app_from_host(host, &self.cfg.domain).map(str::to_ascii_lowercase);
        let Some(app) = app.or_else(|| certs?.app_for_host(host)) else {
            let message = format!(
                "no app at host {host:?}: use <app>.{} or a hostname with a certificate",
                self.cfg.domain
            );
            return error_response(StatusCode::NOT_FOUND, None, &message);
        };
        let Some(routes) = self.routes.app(&app) else {
            return error_response(StatusCode::NOT_FOUND, None, &format!("unknown app {app:?}"));
        };
        let started = Instant::now();
        let response = if !conn.tls && routes.forces_https(conn.public_port) {
            redirect_to_https(host, request.uri())
        } else {
            match self
                .app_limits
                .acquire(&app, self.cfg.max_connections_per_app)
            {
                Some(guard) => {
                    let mut guard = Some(guard);
                    let mut response = self
                        .route_app(conn, request, &app, request_id, &mut guard)
                        .await;
                    if let (ProxyBody::Upstream(body), Some(guard)) = (response.body_mut(), guard) {
                        body.hold(guard);
                    }
                    response
                }
                None => {
                    let message = format!(
                        "app {app} has {} requests in flight, the most one app may have",
                        self.cfg.max_connections_per_app
                    );
                    error_response(StatusCode::SERVICE_UNAVAILABLE, Some("PL02"), &message)
                }
            }
        };
        self.metrics
            .request(&app, response.status(), started.elapsed());
        let mut response = response;
        response.extensions_mut().insert(access::AppName(app));
        response
    }

    /// Forwards a request of `app`; an upgraded connection takes `app_guard` along.
    async fn route_app(
        &self,
        conn: &Conn,
        request: Request<Incoming>,
        app: &str,
        request_id: &HeaderValue,
        app_guard: &mut Option<AppGuard>,
    ) -> Response<ProxyBody> {
        let route = match Route::from_headers(request.headers()) {
            Ok(route) => route,
            Err(message) => return error_response(StatusCode::BAD_REQUEST, None, &message),
        };
        if request.version() == Version::HTTP_11 && headers::upgrade_of(request.headers()).is_some()
        {
            return self
                .upgrade(conn, request, app, request_id, &route, app_guard)
                .await;
        }
        let (mut parts, body) = request.into_parts();
        let mut body = match RequestBody::read(body).await {
            Ok(body) => body,
            Err(error) => {
                tracing::debug!(%error, "client request body failed");
                return error_response(StatusCode::BAD_REQUEST, None, "could not read the body");
            }
        };
        headers::prepare_request(&mut parts, conn, &self.region, request_id);
        let port = conn.public_port;
        let (response, served_by) =
            match self.forward(app, port, &mut parts, &mut body, &route).await {
                Ok(forwarded) => forwarded,
                Err(unserved) => return unserved.response,
            };
        let ask = match replay::ask_of(response).await {
            Ok(ask) => ask,
            Err(response) => return served(response, &served_by),
        };
        self.replay_as_asked(app, port, &mut parts, &mut body, ask, &served_by)
            .await
    }

    /// Sends the request to a machine that `route` allows, trying the next one when a
    /// connection is refused (the same one again when the route pins one).
    async fn forward(
        &self,
        app: &str,
        port: u16,
        parts: &mut request::Parts,
        body: &mut RequestBody,
        route: &Route,
    ) -> Result<Forwarded, Unserved> {
        let mut deadline = None;
        let mut tried = HashSet::new();
        let mut attempts = 0;
        loop {
            let Acquired { guard, target, .. } =
                self.choose(app, port, route, &tried, &mut deadline).await?;
            route.mark_chosen(&mut parts.headers, &target);
            match self.send_to(app, port, &target, parts, body.take()).await {
                Ok((response, pooled)) => {
                    let response =
                        response.map(|b| ProxyBody::Upstream(GuardedBody::new(b, guard, pooled)));
                    return Ok((response, target));
                }
                Err(remote::SendFailure::Retry(error)) => {
                    tracing::debug!(%error, machine_id = %target.machine_id, "connect failed");
                    attempts += 1;
                    self.metrics.retry(app);
                    if attempts >= self.cfg.max_attempts || !body.is_buffered() {
                        let message = format!("could not connect to machine {}", target.machine_id);
                        return Err(Unserved::new(
                            Miss::RetriesExhausted,
                            StatusCode::BAD_GATEWAY,
                            "PC01",
                            &message,
                        ));
                    }
                    drop(guard);
                    retry_pause(route, &mut tried, &target).await;
                }
                Err(remote::SendFailure::Fail(error)) => {
                    tracing::debug!(%error, machine_id = %target.machine_id, "upstream failed");
                    let message = format!("machine {} failed to answer", target.machine_id);
                    return Err(Unserved::new(
                        Miss::Failed,
                        StatusCode::BAD_GATEWAY,
                        "PU01",
                        &message,
                    ));
                }
            }
        }
    }
}

/// After a refused connection: the next machine, or (pinned) a short pause before the
/// same one again.
pub(crate) async fn retry_pause(route: &Route, tried: &mut HashSet<String>, target: &Target) {
    /// Between two tries of a pinned machine: a refused port may be a restart.
    const PINNED_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
    if route.pins() {
        tokio::time::sleep(PINNED_RETRY_PAUSE).await;
    } else {
        tried.insert(target.machine_id.clone());
    }
}

/// `301` to the same host (without its port) and path over HTTPS.
fn redirect_to_https(host: &str, uri: &Uri) -> Response<ProxyBody> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{name}{path}");
    let mut response = error_response(StatusCode::MOVED_PERMANENTLY, None, &location);
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            response.headers_mut().insert(http::header::LOCATION, value);
            response
        }
        Err(_) => error_response(StatusCode::BAD_REQUEST, None, "invalid host"),
    }
}

/// The request as the machine gets it: HTTP/1.1, origin-form, to the machine's address.
fn upstream_request(parts: &request::Parts, body: ProxyBody) -> Request<ProxyBody> {
    let uri = match parts.uri.path_and_query() {
        Some(path) => Uri::from(path.clone()),
        None => Uri::from_static("/"),
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = parts.headers.clone();
    request
}
