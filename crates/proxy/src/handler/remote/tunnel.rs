//! Byte streams to machines (WebSocket upgrades, raw TCP): a TCP connection of their own,
//! directly to a machine on this host, or for a machine on another host an HTTP/1.1
//! upgrade (`GET /_godwit/tunnel`, `Upgrade: godwit-tunnel`) on a connection of its own to
//! that host's worker, which joins it to the machine byte for byte. HTTP/2 extended
//! CONNECT over the shared backhaul connection would save the connection setup; hyper's
//! client does not offer it for h2c.

use std::net::{IpAddr, SocketAddr};

use http::header::{CONNECTION, HOST, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Duration;

use super::try_elsewhere;
use crate::backhaul;
use crate::balance::Acquired;
use crate::body::ProxyBody;
use crate::handler::Proxy;
use crate::routes::Target;
use crate::upstream::UpstreamError;

/// How long a connect (to a machine or a worker) may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A byte stream to a machine.
pub(crate) type MachineStream = Box<dyn MachineIo>;

/// What a [`MachineStream`] is.
pub(crate) trait MachineIo: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> MachineIo for T {}

/// Why no stream to a machine was opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    /// Nothing reached the machine (refused, gone, full): the next one may be tried.
    #[error("{0}")]
    Retry(String),
}

// === impl Proxy ===

impl Proxy {
    /// Opens a byte stream to `target` (a machine of `app` on public `port`) for a client at
    /// `client_ip`, directly or through its host's worker.
    pub(crate) async fn dial(
        &self,
        app: &str,
        port: u16,
        target: &Target,
        client_ip: Option<IpAddr>,
    ) -> Result<MachineStream, DialError> {
        match self.remote_worker(target) {
            None => Ok(Box::new(connect(target.addr).await?)),
            Some(Err(reason)) => Err(DialError::Retry(reason)),
            Some(Ok(worker)) => self.tunnel(worker, app, port, target, client_ip).await,
        }
    }

    /// An HTTP/1.1 connection to `target` that supports upgrades (WebSocket), directly or
    /// through its host's worker.
    pub(crate) async fn connect_upgradable(
        &self,
        app: &str,
        port: u16,
        target: &Target,
        client_ip: Option<IpAddr>,
    ) -> Result<SendRequest<ProxyBody>, UpstreamError> {
        let addr = target.addr;
        let stream =
            self.dial(app, port, target, client_ip)
                .await
                .map_err(|DialError::Retry(reason)| UpstreamError::Connect {
                    addr,
                    source: std::io::Error::other(reason),
                })?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, %addr, "upgradable connection failed");
            }
        });
        Ok(sender)
    }

    async fn tunnel(
        &self,
        worker: SocketAddr,
        app: &str,
        port: u16,
        target: &Target,
        client_ip: Option<IpAddr>,
    ) -> Result<MachineStream, DialError> {
        let Some(client) = self.backhaul.as_ref() else {
            return Err(DialError::Retry("backhaul is not configured".to_owned()));
        };
        let stream = connect(worker).await?;
        let retry = |what: &str, error: &dyn std::fmt::Display| {
            DialError::Retry(format!("tunnel to {worker}: {what}: {error}"))
        };
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| retry("handshake", &e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, %worker, "tunnel connection failed");
            }
        });
        let mut request = Request::new(ProxyBody::empty());
        *request.uri_mut() = http::Uri::from_static(backhaul::TUNNEL_PATH);
        let headers = request.headers_mut();
        headers.insert(HOST, HeaderValue::from_static("backhaul"));
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static(backhaul::TUNNEL_PROTOCOL));
        headers.insert(backhaul::SECRET, client.token().clone());
        headers.insert(backhaul::EDGE_REGION, self.region.clone());
        headers.insert(backhaul::PUBLIC_PORT, HeaderValue::from(port));
        let named = [
            (backhaul::MACHINE, &*target.machine_id),
            (backhaul::APP, app),
        ];
        for (name, value) in named {
            let value = HeaderValue::from_str(value).map_err(|e| retry("header", &e))?;
            headers.insert(name, value);
        }
        if let Some(ip) = client_ip
            && let Ok(ip) = HeaderValue::from_str(&ip.to_string())
        {
            headers.insert(backhaul::CLIENT_IP, ip);
        }
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| retry("request", &e))?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(DialError::Retry(format!(
                "the worker at {worker} refused a tunnel to machine {}: {}",
                target.machine_id,
                response.status()
            )));
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| retry("upgrade", &e))?;
        Ok(Box::new(TokioIo::new(upgraded)))
    }

    /// The worker's side of a tunnel: on `101`, joins the upgraded connection to the machine.
    pub(super) async fn open_tunnel(
        &self,
        mut request: Request<Incoming>,
        app: &str,
        port: u16,
        machine_id: &str,
    ) -> Response<ProxyBody> {
        let on_upgrade = hyper::upgrade::on(&mut request);
        let Acquired { guard, target, .. } = match self.accept_backhauled(app, port, machine_id) {
            Ok(acquired) => acquired,
            Err(reason) => return try_elsewhere(&reason),
        };
        let mut machine = match connect(target.addr).await {
            Ok(machine) => machine,
            Err(DialError::Retry(reason)) => return try_elsewhere(&reason),
        };
        let machine_id = machine_id.to_owned();
        tokio::spawn(async move {
            let _guard = guard;
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, %machine_id, "tunnel upgrade failed");
                    return;
                }
            };
            let mut upgraded = TokioIo::new(upgraded);
            let copied = tokio::io::copy_bidirectional(&mut upgraded, &mut machine).await;
            tracing::debug!(?copied, %machine_id, "tunnel closed");
        });
        let mut response = Response::new(ProxyBody::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static(backhaul::TUNNEL_PROTOCOL));
        response
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, DialError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(error)) => Err(DialError::Retry(format!("connect to {addr}: {error}"))),
        Err(_) => Err(DialError::Retry(format!("connect to {addr} timed out"))),
    }
}
