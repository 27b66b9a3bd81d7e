//! The HTTP/1.1 fast path: plain and TLS HTTP/1.1 connections are served on their own task
//! without hyper. Each request head is parsed with `httparse`, routed as the hyper path
//! routes it (same route table, limits, health gating, retries, autostart, metrics, request
//! span, access log and headers, `godwit-*` ones stripped both ways), written with its body
//! to a pooled keep-alive connection to the machine in one write, and the machine's response
//! is copied back with its framing (Content-Length or chunked) unchanged. Pipelined requests
//! are answered in order.
//!
//! Anything unusual (upgrades, `Expect`, HTTP/1.0, h2c, bodies over the buffer limit,
//! absolute-form targets, ambiguous framing, unknown hosts, forced HTTPS, ACME challenges,
//! the client's routing headers (`fly-prefer-region` and the like), and a machine on another
//! host or one wanting h2c) hands the connection to hyper at the start of that request, with
//! the bytes read so far put back in front ([`Rewind`]). A `fly-replay` response (header, or
//! a JSON body of at most 64 KiB read here) is replayed by the hyper path's replay, with the
//! buffered request body, and its response written back here.

use std::sync::Arc;

use tracing::Instrument as _;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::balance::LoadGuard;
use crate::body::BUFFER_LIMIT;
use crate::handler::{Conn, Proxy, access_line};
use crate::metrics::AppRequests;
use crate::routes::{Target, app_from_host};

mod bridge;
mod chunked;
mod exchange;
mod pool;
mod request;
mod response;
mod rewind;

pub(crate) use pool::Pool;
pub(crate) use rewind::Rewind;

use chunked::{Chunked, ChunkedError};
use request::RequestHead;
use response::ResponseHead;

/// The largest request or response head the fast path reads.
const MAX_HEAD: usize = 64 * 1024;
/// How much is read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// Serves the HTTP/1.1 requests of one client connection until it closes (`None`), or
/// returns it, with what was read of it in front, for hyper to serve the rest.
pub(crate) async fn serve<S>(
    proxy: &Proxy,
    conn: &Conn,
    client: S,
    cancel: &CancellationToken,
) -> Option<Rewind<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = Session {
        proxy,
        conn,
        client,
        cbuf: Vec::with_capacity(READ_CHUNK),
        head: Vec::new(),
        send: Vec::new(),
        ubuf: Vec::new(),
        out: Vec::new(),
        request_id: Vec::new(),
        last_host: (Vec::new(), String::new()),
        served: Served::default(),
        counted: None,
    };
    match session.run(cancel).await {
        Next::Close => {
            let _ = session.client.shutdown().await;
            None
        }
        Next::Fallback => Some(Rewind::new(session.cbuf, session.client)),
    }
}

/// What becomes of the client connection.
#[derive(Debug)]
enum Next {
    Close,
    Fallback,
}

/// How reading a request body went.
#[derive(Debug)]
enum BodyRead {
    /// The request ends at this offset of the client buffer.
    Ready(usize),
    /// Over the buffer limit, or framing hyper should judge.
    Fallback,
    /// The client went away.
    Gone,
}

/// Why a request did not get a response head from a machine.
#[derive(Debug)]
enum Failure {
    /// No connection: the next machine may be tried.
    Connect(std::io::Error),
    Upstream(std::io::Error),
}

/// How one request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Answered; the connection can take the next request.
    Keep,
    /// Answered or not, the connection cannot go on.
    Close,
    /// Not sent anywhere: hyper takes the connection from this request on.
    HandOff,
}

/// What a request's access line says about its answer.
#[derive(Debug, Default)]
struct Served {
    status: u16,
    machine: Option<Arc<Target>>,
    /// Body bytes sent to the client (chunked framing not counted).
    bytes: u64,
}

/// A machine's response head, on its connection, with what it took to get it.
type Answered = (Arc<Target>, LoadGuard, TcpStream, ResponseHead);

/// One client connection and its reusable buffers.
struct Session<'a, S> {
    proxy: &'a Proxy,
    conn: &'a Conn,
    client: S,
    /// Bytes from the client not yet answered (pipelined requests included).
    cbuf: Vec<u8>,
    /// The machine's request head, without its final empty line.
    head: Vec<u8>,
    /// What is written to the machine.
    send: Vec<u8>,
    /// Bytes from the machine.
    ubuf: Vec<u8>,
    /// What is written to the client.
    out: Vec<u8>,
    request_id: Vec<u8>,
    /// The last host routed and its app.
    last_host: (Vec<u8>, String),
    /// The answer to the current request, for its access line.
    served: Served,
    /// The last app answered and its metric handles.
    counted: Option<(String, AppRequests)>,
}

// === impl Session ===

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    async fn run(&mut self, cancel: &CancellationToken) -> Next {
        let (proxy, conn) = (self.proxy, self.conn);
        // One registration for the whole connection, not one per request.
        let cancelled = cancel.cancelled();
        let rewrite = request::Rewrite::new(
            conn.client_ip().as_bytes(),
            conn.tls,
            conn.port().as_bytes(),
            proxy.cfg.region.as_bytes(),
        );
        tokio::pin!(cancelled);
        loop {
            new_request_id(&mut self.request_id, &proxy.cfg.region);

            let head = loop {
                if !self.cbuf.is_empty() {
                    match request::parse(&self.cbuf, &rewrite, &self.request_id, &mut self.head) {
                        request::Parsed::Ready(head) => break head,
                        request::Parsed::Fallback => return Next::Fallback,
                        request::Parsed::Partial if self.cbuf.len() >= MAX_HEAD => {
                            return Next::Fallback;
                        }
                        request::Parsed::Partial => {}
                    }
                }
                let more = if self.cbuf.is_empty() {
                    tokio::select! {
                        biased;
                        () = &mut cancelled => return Next::Close,
                        more = read_into(&mut self.client, &mut self.cbuf) => more,
                    }
                } else {
                    read_into(&mut self.client, &mut self.cbuf).await
                };
                if !matches!(more, Ok(true)) {
                    return Next::Close;
                }
            };
            if !self.routable(&head) {
                return Next::Fallback;
            }
            let body_end = match self.read_body(&head).await {
                BodyRead::Ready(end) => end,
                BodyRead::Fallback => return Next::Fallback,
                BodyRead::Gone => return Next::Close,
            };
            let close = head.close;
            let app = std::mem::take(&mut self.last_host.1);
            let started = std::time::Instant::now();
            let span = tracing::info_span!(
                "request",
                request_id = std::str::from_utf8(&self.request_id).unwrap_or_default()
            );
            let outcome = self
                .exchange(&app, &head, body_end, close)
                .instrument(span.clone())
                .await;
            if outcome == Outcome::HandOff {
                // The request is still whole at the start of the buffer.
                return Next::Fallback;
            }
            if proxy.cfg.access_log {
                let _entered = span.enter();
                self.log(&app, &head, started);
            }
            self.last_host.1 = app;
            self.cbuf.drain(..body_end);
            if outcome == Outcome::Close || close || cancel.is_cancelled() {
                return Next::Close;
            }
        }
    }

    /// Whether the fast path serves this request: its host names a known app (left in
    /// `last_host`), with no redirect or ACME answer due.
    fn routable(&mut self, head: &RequestHead) -> bool {
        let proxy = self.proxy;
        let host = &self.cbuf[head.host.clone()];
        if host != self.last_host.0.as_slice() || self.last_host.1.is_empty() {
            let Ok(text) = std::str::from_utf8(host) else {
                return false;
            };
            let app = app_from_host(text, &proxy.cfg.domain)
                .map(str::to_ascii_lowercase)
                .or_else(|| proxy.cfg.certs.as_ref()?.app_for_host(text));
            let Some(app) = app else { return false };
            self.last_host = (host.to_vec(), app);
        }
        let Some(routes) = proxy.routes.app(&self.last_host.1) else {
            return false;
        };
        let acme = head.acme && proxy.cfg.certs.is_some();
        !acme && (self.conn.tls || !routes.forces_https(self.conn.public_port))
    }

    /// Writes the access line of the request just answered (in its span).
    fn log(&mut self, app: &str, head: &RequestHead, started: std::time::Instant) {
        let served = std::mem::take(&mut self.served);
        let text = |range: std::ops::Range<usize>| {
            std::str::from_utf8(&self.cbuf[range]).unwrap_or_default()
        };
        access_line(
            Some(app),
            served.machine.as_deref(),
            text(head.method.clone()),
            text(head.path.clone()),
            served.status,
            served.bytes,
            started,
        );
    }

    /// Reads the whole request body into the client buffer.
    async fn read_body(&mut self, head: &RequestHead) -> BodyRead {
        let start = head.head_len;
        let limit = u64::try_from(BUFFER_LIMIT).unwrap_or(u64::MAX);
        match head.body {
            request::RequestBody::Empty => BodyRead::Ready(start),
            request::RequestBody::Length(length) if length > limit => BodyRead::Fallback,
            request::RequestBody::Length(length) => {
                let end = start + usize::try_from(length).expect("at most the buffer limit");
                while self.cbuf.len() < end {
                    if !matches!(read_into(&mut self.client, &mut self.cbuf).await, Ok(true)) {
                        return BodyRead::Gone;
                    }
                }
                BodyRead::Ready(end)
            }
            request::RequestBody::Chunked => {
                let mut chunked = Chunked::default();
                let mut seen = start;
                loop {
                    match chunked.feed(&self.cbuf[seen..]) {
                        Ok(Some(n)) => return BodyRead::Ready(seen + n),
                        Ok(None) => seen = self.cbuf.len(),
                        Err(ChunkedError) => return BodyRead::Fallback,
                    }
                    if seen - start > BUFFER_LIMIT {
                        return BodyRead::Fallback;
                    }
                    if !matches!(read_into(&mut self.client, &mut self.cbuf).await, Ok(true)) {
                        return BodyRead::Gone;
                    }
                }
            }
        }
    }
}

/// Reads what is there into the spare room of `buf`: `Ok(false)` at the end of the stream.
async fn read_into<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    buf.reserve(READ_CHUNK);
    Ok(stream.read_buf(buf).await? > 0)
}

/// Writes and flushes `bytes`; false when the peer is gone.
async fn write_all<W: AsyncWrite + Unpin>(stream: &mut W, bytes: &[u8]) -> bool {
    stream.write_all(bytes).await.is_ok() && stream.flush().await.is_ok()
}

/// A fresh request id in `id`: 128 random bits in hex, then `-<region>`.
fn new_request_id(id: &mut Vec<u8>, region: &str) {
    let random: u128 = rand::random();
    let mut hex = [0_u8; 32];
    hex::encode_to_slice(random.to_be_bytes(), &mut hex).expect("32 digits for 16 bytes");
    id.clear();
    id.extend_from_slice(&hex);
    id.push(b'-');
    id.extend_from_slice(region.as_bytes());
}
