//! Bodies: request bodies buffered for retries and replays, response bodies that hold their
//! machine's load until they end, and the proxy's own small answers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::balance::LoadGuard;

/// The error type of every body the proxy sends.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every request and response the proxy sends.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Request bodies up to this size are kept, so a request can be retried and replayed.
pub(crate) const BUFFER_LIMIT: usize = 1024 * 1024;

/// A request body: whole in memory (can be sent again), or too big and sent once.
#[derive(Debug)]
pub(crate) enum RequestBody {
    Buffered(Bytes),
    /// What was read so far, then the rest of the stream.
    Streaming(Option<Bytes>, Incoming),
    /// Already sent (streaming bodies go once).
    Spent,
}

/// A response body that counts against its machine until it ends or is dropped.
#[derive(Debug)]
pub(crate) struct GuardedBody {
    inner: Incoming,
    _guard: Option<LoadGuard>,
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
                full(bytes)
            }
            RequestBody::Streaming(prefix, rest) => {
                let head = StreamOnce(prefix);
                let rest = rest.map_err(BoxError::from);
                head.chain(rest).boxed_unsync()
            }
            RequestBody::Spent => full(Bytes::new()),
        }
    }
}

/// A body that yields one data frame.
#[derive(Debug)]
struct StreamOnce(Option<Bytes>);

impl Body for StreamOnce {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// Chains two bodies.
trait ChainExt: Body + Sized {
    fn chain<B: Body<Data = Self::Data, Error = Self::Error>>(self, next: B) -> Chain<Self, B> {
        Chain {
            first: Some(self),
            second: next,
        }
    }
}

impl<B: Body> ChainExt for B {}

#[derive(Debug)]
struct Chain<A, B> {
    first: Option<A>,
    second: B,
}

impl<A, B> Body for Chain<A, B>
where
    A: Body + Unpin,
    B: Body<Data = A::Data, Error = A::Error> + Unpin,
{
    type Data = A::Data;
    type Error = A::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<A::Data>, A::Error>>> {
        if let Some(first) = self.first.as_mut() {
            match Pin::new(first).poll_frame(cx) {
                Poll::Ready(None) => self.first = None,
                other => return other,
            }
        }
        Pin::new(&mut self.second).poll_frame(cx)
    }
}

// === impl GuardedBody ===

impl GuardedBody {
    pub(crate) fn new(inner: Incoming, guard: LoadGuard) -> Self {
        GuardedBody {
            inner,
            _guard: Some(guard),
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
        if let Poll::Ready(None | Some(Err(_))) = polled {
            // The machine is done with this request: release it now, not when hyper drops us.
            self._guard = None;
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

/// A whole body.
pub(crate) fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
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
    let mut response = Response::new(full(Bytes::from(text)));
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
