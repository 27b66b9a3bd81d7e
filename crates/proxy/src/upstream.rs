//! Connections to machines: HTTP/1.1 over TCP with no delay, kept alive and reused per
//! address (last in, first out), each driven by its own task. A request that a reused
//! connection could not even start is sent again on another one. Services that ask for
//! `h2_backend` get HTTP/2 with prior knowledge (h2c) instead, one shared connection per
//! address, trailers included (gRPC).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::{Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use crate::body::ProxyBody;
use crate::routes::RouteTable;

/// How long an upstream TCP connect may take before the next machine is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle connections kept per machine address.
const MAX_IDLE_PER_ADDR: usize = 1024;

/// The pool of idle connections to machines.
#[derive(Debug)]
pub(crate) struct Upstream {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    idle_timeout: Duration,
    /// Says which machine addresses want h2c.
    routes: Arc<RouteTable>,
    /// The shared h2c connection per machine address.
    h2: Mutex<HashMap<SocketAddr, http2::SendRequest<ProxyBody>>>,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

/// A connection lent to one request; it goes back to the pool through
/// [`Pooled::give_back`] once the response has ended.
#[derive(Debug)]
pub(crate) struct Pooled {
    upstream: Arc<Upstream>,
    addr: SocketAddr,
    /// `None` for h2c: the connection is shared, never lent.
    sender: Option<SendRequest<ProxyBody>>,
}

/// Why a request could not be sent to a machine.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection: the next machine may be tried.
    #[error("could not connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("http/1.1 or http/2 handshake with {addr} failed")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("request to {addr} failed")]
    Request {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

// === impl Upstream ===

impl Upstream {
    /// A pool that drops connections idle for longer than `idle_timeout`.
    pub(crate) fn new(idle_timeout: Duration, routes: Arc<RouteTable>) -> Self {
        Upstream {
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
            routes,
            h2: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `request` (origin-form URI) to `addr` on an idle connection, or a new one.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut request: http::Request<ProxyBody>,
    ) -> Result<(http::Response<Incoming>, Pooled), UpstreamError> {
        if self.routes.h2_backend(addr) {
            return self.send_h2(addr, request).await;
        }
        loop {
            let (mut sender, reused) = match self.checkout(addr) {
                Some(sender) => (sender, true),
                None => (connect(addr, false).await?, false),
            };
            if !sender.is_ready() && sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(UpstreamError::Connect {
                    addr,
                    source: std::io::ErrorKind::ConnectionReset.into(),
                });
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let pooled = Pooled {
                        upstream: Arc::clone(self),
                        addr,
                        sender: Some(sender),
                    };
                    return Ok((response, pooled));
                }
                Err(mut error) => match error.take_message() {
                    // The request never left: a reused connection closed under us.
                    Some(unsent) if reused => request = unsent,
                    _ => {
                        return Err(UpstreamError::Request {
                            addr,
                            source: error.into_error(),
                        });
                    }
                },
            }
        }
    }

    /// Sends `request` over the shared h2c connection to `addr` (a new one if there is none
    /// or it closed).
    async fn send_h2(
        self: &Arc<Self>,
        addr: SocketAddr,
        request: http::Request<ProxyBody>,
    ) -> Result<(http::Response<Incoming>, Pooled), UpstreamError> {
        let mut request = into_h2(request, addr);
        loop {
            let cached = self
                .h2
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&addr)
                .filter(|s| !s.is_closed())
                .cloned();
            let reused = cached.is_some();
            let mut sender = match cached {
                Some(sender) => sender,
                None => {
                    let sender = connect_h2(addr).await?;
                    self.h2
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(addr, sender.clone());
                    sender
                }
            };
            if sender.ready().await.is_err() {
                self.forget_h2(addr, &sender);
                if reused {
                    continue;
                }
                let source = std::io::ErrorKind::ConnectionReset.into();
                return Err(UpstreamError::Connect { addr, source });
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let pooled = Pooled {
                        upstream: Arc::clone(self),
                        addr,
                        sender: None,
                    };
                    return Ok((response, pooled));
                }
                Err(mut error) => {
                    self.forget_h2(addr, &sender);
                    match error.take_message() {
                        Some(unsent) if reused => request = unsent,
                        _ => {
                            let source = error.into_error();
                            return Err(UpstreamError::Request { addr, source });
                        }
                    }
                }
            }
        }
    }

    /// Drops the cached h2c connection to `addr` if it is still `failed`.
    fn forget_h2(&self, addr: SocketAddr, failed: &http2::SendRequest<ProxyBody>) {
        let mut h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        if h2
            .get(&addr)
            .is_some_and(|s| s.is_closed() || failed.is_closed())
        {
            h2.remove(&addr);
        }
    }

    /// Drops idle connections that timed out or closed.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.lock();
        idle.retain(|_, conns| {
            conns.retain(|c| !self.expired(c, now));
            !conns.is_empty()
        });
    }

    fn checkout(&self, addr: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        let now = Instant::now();
        let mut idle = self.lock();
        let conns = idle.get_mut(&addr)?;
        while let Some(conn) = conns.pop() {
            if !self.expired(&conn, now) {
                return Some(conn.sender);
            }
        }
        None
    }

    fn put(&self, addr: SocketAddr, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        let conns = idle.entry(addr).or_default();
        if conns.len() < MAX_IDLE_PER_ADDR {
            conns.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn expired(&self, conn: &Idle, now: Instant) -> bool {
        conn.sender.is_closed() || now.saturating_duration_since(conn.since) > self.idle_timeout
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Pooled ===

impl Pooled {
    /// The response ended cleanly: the connection can take the next request.
    pub(crate) fn give_back(self) {
        if let Some(sender) = self.sender {
            self.upstream.put(self.addr, sender);
        }
    }
}

/// The request as HTTP/2 wants it: an absolute URI (authority from `Host`) instead of the
/// `Host` header, and `te: trailers` (gRPC servers ask for it; trailers are passed back).
fn into_h2(request: http::Request<ProxyBody>, addr: SocketAddr) -> http::Request<ProxyBody> {
    let (mut parts, body) = request.into_parts();
    let authority = parts
        .headers
        .remove(header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| addr.to_string());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    if let Ok(uri) = Uri::builder()
        .scheme("http")
        .authority(authority.as_str())
        .path_and_query(path)
        .build()
    {
        parts.uri = uri;
    }
    parts.version = Version::HTTP_2;
    parts
        .headers
        .insert(header::TE, http::HeaderValue::from_static("trailers"));
    http::Request::from_parts(parts, body)
}

/// Opens an h2c (prior knowledge) connection to `addr`, driven by a task of its own.
async fn connect_h2(addr: SocketAddr) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
    let stream = tcp_connect(addr).await?;
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|source| UpstreamError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, %addr, "upstream h2c connection failed");
        }
    });
    Ok(sender)
}

async fn tcp_connect(addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
        Err(_) => {
            let source = std::io::ErrorKind::TimedOut.into();
            return Err(UpstreamError::Connect { addr, source });
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens an HTTP/1.1 connection to `addr`, driven by a task of its own (which supports
/// protocol upgrades when `upgrades`).
pub(crate) async fn connect(
    addr: SocketAddr,
    upgrades: bool,
) -> Result<SendRequest<ProxyBody>, UpstreamError> {
    let stream = tcp_connect(addr).await?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| UpstreamError::Handshake { addr, source })?;
    if upgrades {
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, %addr, "upstream connection failed");
            }
        });
    } else {
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %addr, "upstream connection failed");
            }
        });
    }
    Ok(sender)
}
