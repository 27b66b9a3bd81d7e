//! The edge side: one h2c connection per worker address, shared by every request to that
//! host (HTTP/2 multiplexes them), opened on first use and again after it fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use crate::body::ProxyBody;

/// How long a connect to a worker may take before the next candidate is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a ping may take before it counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections to worker proxies.
#[derive(Debug)]
pub(crate) struct BackhaulClient {
    conns: Mutex<HashMap<SocketAddr, SendRequest<ProxyBody>>>,
    /// The hashed cluster secret, sent with every request.
    token: HeaderValue,
}

/// Why a request could not be sent to a worker.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The request never reached the worker: another candidate may be tried.
    #[error("could not reach the worker proxy at {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("h2 handshake with the worker proxy at {addr} failed")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The request may have reached the worker.
    #[error("request to the worker proxy at {addr} failed")]
    Request {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("the worker proxy at {addr} answered the ping with {status}")]
    Ping {
        addr: SocketAddr,
        status: StatusCode,
    },
    #[error("the worker proxy at {addr} did not answer the ping in time")]
    PingTimeout { addr: SocketAddr },
}

// === impl BackhaulClient ===

impl BackhaulClient {
    /// A client whose requests carry `token` (see [`super::secret_token`]).
    pub(crate) fn new(token: HeaderValue) -> Self {
        BackhaulClient {
            conns: Mutex::new(HashMap::new()),
            token,
        }
    }

    /// Sends `request` (absolute URI) to the worker at `addr`. A request that a reused
    /// connection could not even start is sent again on a new one.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, SendError> {
        request
            .headers_mut()
            .insert(super::SECRET, self.token.clone());
        loop {
            let (mut sender, reused) = match self.checkout(addr) {
                Some(sender) => (sender, true),
                None => (self.connect(addr).await?, false),
            };
            if sender.ready().await.is_err() {
                self.forget(addr, &sender);
                if reused {
                    continue;
                }
                return Err(SendError::Connect {
                    addr,
                    source: std::io::ErrorKind::ConnectionReset.into(),
                });
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut error) => {
                    self.forget(addr, &sender);
                    match error.take_message() {
                        Some(unsent) if reused => request = unsent,
                        Some(_) => {
                            return Err(SendError::Connect {
                                addr,
                                source: std::io::Error::other(error.into_error()),
                            });
                        }
                        None => {
                            return Err(SendError::Request {
                                addr,
                                source: error.into_error(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// The hashed cluster secret this client sends.
    pub(crate) fn token(&self) -> &HeaderValue {
        &self.token
    }

    /// One `GET /_godwit/ping` round trip to the worker at `addr` over its connection.
    pub(crate) async fn ping(&self, addr: SocketAddr) -> Result<Duration, SendError> {
        let uri = Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query(super::PING_PATH)
            .build()
            .expect("a socket address and a fixed path make a valid uri");
        let mut request = Request::new(ProxyBody::empty());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = uri;
        let started = Instant::now();
        let response = tokio::time::timeout(PING_TIMEOUT, self.send(addr, request))
            .await
            .map_err(|_| SendError::PingTimeout { addr })??;
        let elapsed = started.elapsed();
        if response.status() != StatusCode::NO_CONTENT {
            return Err(SendError::Ping {
                addr,
                status: response.status(),
            });
        }
        Ok(elapsed)
    }

    fn checkout(&self, addr: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        let mut conns = self.lock();
        match conns.get(&addr) {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                conns.remove(&addr);
                None
            }
            None => None,
        }
    }

    /// Drops the pooled connection to `addr` if it is still `failed` (not a newer one).
    fn forget(&self, addr: SocketAddr, failed: &SendRequest<ProxyBody>) {
        let mut conns = self.lock();
        if conns
            .get(&addr)
            .is_some_and(|c| c.is_closed() || failed.is_closed())
        {
            conns.remove(&addr);
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<ProxyBody>, SendError> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(SendError::Connect { addr, source }),
            Err(_) => {
                let source = std::io::ErrorKind::TimedOut.into();
                return Err(SendError::Connect { addr, source });
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .adaptive_window(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| SendError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %addr, "backhaul connection failed");
            }
        });
        tracing::debug!(%addr, "backhaul connection open");
        let mut conns = self.lock();
        // Two requests may have connected at once: keep the first, use ours once.
        match conns.get(&addr) {
            Some(existing) if !existing.is_closed() => {}
            _ => {
                conns.insert(addr, sender.clone());
            }
        }
        Ok(sender)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, SendRequest<ProxyBody>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
