//! Bodies: request bodies buffered for retries and replays, response bodies that hold their
//! machine's load (and upstream connection) until they end, and the proxy's own small
//! answers. One enum, so no body is boxed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::balance::LoadGuard;
use crate::limit::AppGuard;
use crate::upstream::Pooled;

/// The error type of every body the proxy sends.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request bodies up to this size are kept, so a request can be retried and replayed.
pub(crate) const BUFFER_LIMIT: usize = 1024 * 1024;

/// The body of every request and response the proxy sends.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    /// A whole body in memory.
    Full(Option<Bytes>),
    /// A machine's response.
    Upstream(GuardedBody),
    /// A request body over the buffer limit: what was read, then the rest of the stream.
    Streaming(Option<Bytes>, Incoming),
    /// Any of these, counted for the access log (only when it is on).
    Logged(Box<crate::handler::LoggedBody>),
}

/// A request body: whole in memory (can be sent again), or too big and sent once.
#[derive(Debug)]
pub(crate) enum RequestBody {
    Buffered(Bytes),
    /// What was read so far, then the rest of the stream.
    Streaming(Option<Bytes>, Incoming),
    /// Already sent (streaming bodies go once).
    Spent,
}

/// A response body that counts against its machine until it ends or is dropped, and gives
/// its upstream connection back to the pool when it ends.
#[derive(Debug)]
pub(crate) struct GuardedBody {
    inner: Incoming,
    guard: Option<LoadGuard>,
    pooled: Option<Pooled>,
    app: Option<AppGuard>,
}

// === impl RequestBody ===

impl RequestBody {
    /// Reads `body` until it ends or exceeds [`BUFFER_LIMIT`].
    pub(crate) async fn read(mut body: Incoming) -> Result<Self, hyper::Error> {
        if body.is_end_stream() {
            return Ok(RequestBody::Buffered(Bytes::new()));
        }
        let mut buffer = BytesMut::new();
        while let Some(frame) = body.frame().await {
            // Trailers are dropped: backends get HTTP/1.1 without them.
            if let Ok(data) = frame?.into_data() {
                buffer.extend_from_slice(&data);
                if buffer.len() > BUFFER_LIMIT {
                    return Ok(RequestBody::Streaming(Some(buffer.freeze()), body));
                }
            }
        }
        Ok(RequestBody::Buffered(buffer.freeze()))
    }

    /// Whether the body can be sent more than once.
    pub(crate) fn is_buffered(&self) -> bool {
        matches!(self, RequestBody::Buffered(_))
    }

    /// A body to send: a copy when buffered, else the stream itself (once).
    pub(crate) fn take(&mut self) -> ProxyBody {
        match std::mem::replace(self, RequestBody::Spent) {
            RequestBody::Buffered(bytes) => {
                *self = RequestBody::Buffered(bytes.clone());
                ProxyBody::full(bytes)
            }
            RequestBody::Streaming(prefix, rest) => ProxyBody::Streaming(prefix, rest),
            RequestBody::Spent => ProxyBody::empty(),
        }
    }
}

// === impl ProxyBody ===

impl ProxyBody {
    /// A whole body.
    pub(crate) fn full(bytes: Bytes) -> Self {
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    pub(crate) fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Streaming(prefix, rest) => {
                if let Some(data) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Pin::new(rest).poll_frame(cx).map_err(BoxError::from)
            }
            ProxyBody::Logged(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(data) => data.is_none(),
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Streaming(prefix, rest) => prefix.is_none() && rest.is_end_stream(),
            ProxyBody::Logged(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Streaming(prefix, rest) => {
                let prefix = prefix.as_ref().map_or(0, |d| d.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + prefix);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + prefix);
                }
                hint
            }
            ProxyBody::Logged(body) => body.size_hint(),
        }
    }
}

// === impl GuardedBody ===

impl GuardedBody {
    pub(crate) fn new(inner: Incoming, guard: LoadGuard, pooled: Option<Pooled>) -> Self {
        GuardedBody {
            inner,
            guard: Some(guard),
            pooled,
            app: None,
        }
    }

    /// Counts the response against its app until it ends, too.
    pub(crate) fn hold(&mut self, app: AppGuard) {
        self.app = Some(app);
    }

    /// The machine is done with this request: release it now, not when hyper drops us.
    fn finish(&mut self, clean: bool) {
        self.guard = None;
        self.app = None;
        if let Some(pooled) = self.pooled.take()
            && clean
        {
            pooled.give_back();
        }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            _ => {}
        }
        polled.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for GuardedBody {
    fn drop(&mut self) {
        // An empty body (204, HEAD) is never polled: it still ended cleanly.
        let clean = self.inner.is_end_stream();
        self.finish(clean);
    }
}

/// The proxy's own error answer: `status`, a code in the body and in the
/// `fly-proxy-error`/`godwit-proxy-error` headers (none for plain 404s).
pub(crate) fn error_response(
    status: StatusCode,
    code: Option<&'static str>,
    message: &str,
) -> Response<ProxyBody> {
    let text = match code {
        Some(code) => format!("{code}: {message}\n"),
        None => format!("{message}\n"),
    };
    let mut response = Response::new(ProxyBody::full(Bytes::from(text)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(code) = code {
        headers.insert("fly-proxy-error", HeaderValue::from_static(code));
        headers.insert("godwit-proxy-error", HeaderValue::from_static(code));
    }
    response
}
