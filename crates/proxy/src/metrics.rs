//! Prometheus metrics of the proxy, served on their own listener at `/metrics`. Labels are
//! bounded: apps and machines the route table knows, and status classes (`2xx`...).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::handler::Proxy;

/// Every metric of one proxy.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    latency: Family<AppLabels, Histogram, fn() -> Histogram>,
    app_in_flight: Family<AppLabels, Gauge>,
    machine_in_flight: Family<MachineLabels, Gauge>,
    autostarts: Family<AppLabels, Counter>,
    replays: Family<AppLabels, Counter>,
    retries: Family<AppLabels, Counter>,
    region_rtt: Family<RegionLabels, Gauge<f64, AtomicU64>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabels {
    region: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    app: String,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    app: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MachineLabels {
    machine: String,
}

/// One app's latency histogram and `2xx` counter, held by a connection so that its answered
/// requests are counted without looking the app's labels up each time. Families never drop
/// these labels, so a held handle stays the one the registry exposes.
#[derive(Debug, Clone)]
pub(crate) struct AppRequests {
    latency: Histogram,
    ok: Counter,
}

impl AppRequests {
    /// Counts one `2xx` answer that took `elapsed`.
    pub(crate) fn ok(&self, elapsed: Duration) {
        self.latency.observe(elapsed.as_secs_f64());
        self.ok.inc();
    }
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

// === impl Metrics ===

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("godwit_proxy");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests answered, by app and status class",
            requests.clone(),
        );
        let latency: Family<AppLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        registry.register(
            "request_duration_seconds",
            "Time until the response headers, by app",
            latency.clone(),
        );
        let app_in_flight = Family::default();
        registry.register(
            "app_in_flight",
            "Requests and connections in flight, by app",
            app_in_flight.clone(),
        );
        let machine_in_flight = Family::default();
        registry.register(
            "machine_in_flight",
            "Requests and connections in flight, by machine",
            machine_in_flight.clone(),
        );
        let autostarts = Family::default();
        registry.register(
            "autostarts",
            "Machines started on demand, by app",
            autostarts.clone(),
        );
        let replays = Family::default();
        registry.register("replays", "Requests replayed, by app", replays.clone());
        let retries = Family::default();
        registry.register(
            "retries",
            "Requests sent to another machine after a refused connection, by app",
            retries.clone(),
        );
        let region_rtt = Family::default();
        registry.register(
            "region_rtt_seconds",
            "Measured round trip to the worker proxies of each other region (EWMA)",
            region_rtt.clone(),
        );
        Metrics {
            region_rtt,
            registry,
            requests,
            latency,
            app_in_flight,
            machine_in_flight,
            autostarts,
            replays,
            retries,
        }
    }
}

impl Metrics {
    /// A request of `app` was answered with `status` after `elapsed`.
    pub(crate) fn request(&self, app: &str, status: StatusCode, elapsed: Duration) {
        let status = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let app = app.to_owned();
        self.latency
            .get_or_create(&AppLabels { app: app.clone() })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&StatusLabels { app, status })
            .inc();
    }

    /// Handles for counting `app`'s `2xx` answers (see [`AppRequests`]).
    pub(crate) fn app_requests(&self, app: &str) -> AppRequests {
        AppRequests {
            latency: self
                .latency
                .get_or_create(&AppLabels {
                    app: app.to_owned(),
                })
                .clone(),
            ok: self
                .requests
                .get_or_create(&StatusLabels {
                    app: app.to_owned(),
                    status: "2xx",
                })
                .clone(),
        }
    }

    pub(crate) fn autostart(&self, app: &str) {
        self.app_counter(&self.autostarts, app);
    }

    pub(crate) fn replay(&self, app: &str) {
        self.app_counter(&self.replays, app);
    }

    pub(crate) fn retry(&self, app: &str) {
        self.app_counter(&self.retries, app);
    }

    fn app_counter(&self, family: &Family<AppLabels, Counter>, app: &str) {
        family
            .get_or_create(&AppLabels {
                app: app.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the in-flight gauges taken from `proxy` now.
    fn encode(&self, proxy: &Proxy) -> Result<String, std::fmt::Error> {
        self.app_in_flight.clear();
        for (app, n) in proxy.app_limits.snapshot() {
            self.app_in_flight
                .get_or_create(&AppLabels { app })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.machine_in_flight.clear();
        for (machine, n) in proxy.loads.snapshot() {
            self.machine_in_flight
                .get_or_create(&MachineLabels { machine })
                .set(i64::from(n));
        }
        self.region_rtt.clear();
        for (region, secs) in proxy.closeness.snapshot() {
            self.region_rtt
                .get_or_create(&RegionLabels { region })
                .set(secs);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Serves `GET /metrics` on `listener` until `cancel` fires.
pub(crate) async fn serve(proxy: Arc<Proxy>, listener: TcpListener, cancel: CancellationToken) {
    tracing::info!(addr = ?listener.local_addr().ok(), "serving metrics");
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let proxy = Arc::clone(&proxy);
                async move { Ok::<_, Infallible>(answer(&proxy, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "metrics connection failed");
            }
        });
    }
}

fn answer(proxy: &Proxy, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = if request.uri().path() != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            "not found: try /metrics\n".to_owned(),
        )
    } else {
        match proxy.metrics.encode(proxy) {
            Ok(text) => (StatusCode::OK, text),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not encode the metrics\n".to_owned(),
            ),
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if status == StatusCode::OK {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_TYPE),
        );
    }
    response
}
