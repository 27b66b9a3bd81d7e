//! Real HTTP/1.1 backends on 127.x.y.z loopback addresses: they answer with their name and
//! the request they saw (JSON); `GET /hold` waits until the test releases it; a request
//! with `x-test-replay` or `x-test-replay-json` is answered with that replay.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How a backend answers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Behaviour {
    /// Answer with this `fly-replay` value (unless the request is itself a replay and
    /// `replay_always` is false).
    pub(crate) replay: Option<(&'static str, String)>,
    pub(crate) replay_always: bool,
}

impl Behaviour {
    /// Answers with `fly-replay: <value>`, except to a request that is itself a replay.
    pub(crate) fn replaying(value: &str) -> Behaviour {
        Behaviour {
            replay: Some(("fly-replay", value.to_owned())),
            replay_always: false,
        }
    }
}

/// A real HTTP/1.1 server that answers with its name and the request it saw (JSON).
/// `GET /hold` waits until the test releases it.
pub(crate) struct Backend {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) stats: Arc<Stats>,
    pub(crate) gate: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) in_flight: AtomicU32,
    pub(crate) max_in_flight: AtomicU32,
    pub(crate) served: AtomicU32,
}

// === impl Backend ===

impl Backend {
    /// Starts a backend on a fresh loopback address.
    pub(crate) async fn start(name: &str) -> Backend {
        Backend::start_with(name, Behaviour::default()).await
    }

    pub(crate) async fn start_with(name: &str, behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind(SocketAddr::new(random_loopback(), 0))
            .await
            .expect("bind a loopback address");
        Backend::serve(name, listener, behaviour)
    }

    /// Starts a backend on `addr` (e.g. again after a stop).
    pub(crate) async fn start_at(name: &str, addr: SocketAddr, behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the backend address again");
        Backend::serve(name, listener, behaviour)
    }

    fn serve(name: &str, listener: TcpListener, behaviour: Behaviour) -> Backend {
        let addr = listener.local_addr().expect("bound");
        let stats = Arc::new(Stats::default());
        let gate = Arc::new(Semaphore::new(0));
        let (name_c, stats_c, gate_c) = (name.to_owned(), Arc::clone(&stats), Arc::clone(&gate));
        let behaviour = Arc::new(behaviour);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (name, stats, gate, behaviour) = (
                    name_c.clone(),
                    Arc::clone(&stats_c),
                    Arc::clone(&gate_c),
                    Arc::clone(&behaviour),
                );
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        answer(
                            name.clone(),
                            Arc::clone(&stats),
                            Arc::clone(&gate),
                            Arc::clone(&behaviour),
                            request,
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Backend {
            name: name.to_owned(),
            addr,
            stats,
            gate,
            task,
        }
    }

    /// Lets `n` held requests finish.
    pub(crate) fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.stats.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn served(&self) -> u32 {
        self.stats.served.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    name: String,
    stats: Arc<Stats>,
    gate: Arc<Semaphore>,
    behaviour: Arc<Behaviour>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if parts.uri.path() == "/hold" {
        gate.acquire().await.expect("gate open").forget();
    }
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let echo = serde_json::json!({
        "name": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut response = hyper::Response::new(Full::new(Bytes::from(echo.to_string())));
    // A replayed request, or one sent back by a replay's fallback.
    let replayed = parts.headers.contains_key("fly-replay-src")
        || parts.headers.contains_key("fly-replay-failed");
    if let Some((header, value)) = &behaviour.replay
        && (!replayed || behaviour.replay_always)
    {
        response
            .headers_mut()
            .insert(*header, value.parse().expect("valid replay value"));
    }
    if !replayed {
        ask_as_told(&parts.headers, &mut response);
    }
    stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    stats.served.fetch_add(1, Ordering::SeqCst);
    Ok(response)
}

/// A TCP server on a fresh loopback address running `handle` on each connection (in a task
/// of its own) until the returned task is dropped or aborted.
pub(crate) async fn tcp_server<F, Fut>(handle: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(SocketAddr::new(random_loopback(), 0))
        .await
        .expect("bind a loopback address");
    let addr = listener.local_addr().expect("bound");
    let task = tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(handle(stream));
            }
        }
    });
    (addr, task)
}

/// The test's own replay for this request: `x-test-replay: <value>` is answered with
/// `fly-replay: <value>`, `x-test-replay-json: <json>` with that JSON as the body of a
/// `application/vnd.fly.replay+json` response.
fn ask_as_told(headers: &hyper::HeaderMap, response: &mut hyper::Response<Full<Bytes>>) {
    if let Some(value) = headers.get("x-test-replay") {
        response.headers_mut().insert("fly-replay", value.clone());
    }
    if let Some(json) = headers.get("x-test-replay-json") {
        *response.body_mut() = Full::new(Bytes::copy_from_slice(json.as_bytes()));
        response.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/vnd.fly.replay+json"),
        );
    }
}

/// A loopback address unlikely to be used by another test: 127.a.b.c.
pub(crate) fn random_loopback() -> IpAddr {
    let [a, b, c]: [u8; 3] = rand::random();
    IpAddr::V4(Ipv4Addr::new(127, a.max(1), b, c.clamp(2, 254)))
}

/// An address where nothing listens (bound, then closed).
pub(crate) async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::new(random_loopback(), 0))
        .await
        .expect("bind");
    listener.local_addr().expect("bound")
}
