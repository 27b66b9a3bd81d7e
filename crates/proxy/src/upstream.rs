//! Connections to machines: HTTP/1.1 over TCP with no delay, kept alive and reused per
//! address (last in, first out), each driven by its own task. A request that a reused
//! connection could not even start is sent again on another one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use crate::body::ProxyBody;

/// How long an upstream TCP connect may take before the next machine is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle connections kept per machine address.
const MAX_IDLE_PER_ADDR: usize = 1024;

/// The pool of idle connections to machines.
#[derive(Debug)]
pub(crate) struct Upstream {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    idle_timeout: Duration,
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
    sender: SendRequest<ProxyBody>,
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
    #[error("http/1.1 handshake with {addr} failed")]
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
    pub(crate) fn new(idle_timeout: Duration) -> Self {
        Upstream {
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
        }
    }

    /// Sends `request` (origin-form URI) to `addr` on an idle connection, or a new one.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut request: http::Request<ProxyBody>,
    ) -> Result<(http::Response<Incoming>, Pooled), UpstreamError> {
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
                        sender,
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
        self.upstream.put(self.addr, self.sender);
    }
}

/// Opens an HTTP/1.1 connection to `addr`, driven by a task of its own (which supports
/// protocol upgrades when `upgrades`).
pub(crate) async fn connect(
    addr: SocketAddr,
    upgrades: bool,
) -> Result<SendRequest<ProxyBody>, UpstreamError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
        Err(_) => {
            let source = std::io::ErrorKind::TimedOut.into();
            return Err(UpstreamError::Connect { addr, source });
        }
    };
    let _ = stream.set_nodelay(true);
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
