//! Access logs: one `tracing` INFO line per request (when `access_log` is on), written once
//! the response body has ended or was dropped, inside the request's span. Only the path is
//! logged, never the query string (it may carry secrets) nor any header.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};
use crate::routes::Target;

/// The machine that answered, as a response extension (read by the access log).
#[derive(Debug, Clone)]
pub(crate) struct ServedBy(pub(crate) Arc<Target>);

/// The app a request went to, as a response extension.
#[derive(Debug, Clone)]
pub(crate) struct AppName(pub(crate) String);

/// What the access log line says besides the body's size.
#[derive(Debug)]
pub(crate) struct AccessLine {
    span: tracing::Span,
    method: Method,
    path: String,
    started: Instant,
    status: StatusCode,
    app: Option<String>,
    machine: Option<Arc<Target>>,
}

/// A response body that counts its bytes and writes the access log line when it ends or
/// is dropped.
#[derive(Debug)]
pub(crate) struct LoggedBody {
    inner: ProxyBody,
    line: Option<AccessLine>,
    bytes: u64,
}

/// Marks `response` as answered by `target`.
pub(super) fn served(
    mut response: Response<ProxyBody>,
    target: &Arc<Target>,
) -> Response<ProxyBody> {
    response
        .extensions_mut()
        .insert(ServedBy(Arc::clone(target)));
    response
}

/// Wraps the body of `response` so the access line is written when it ends.
pub(super) fn log(
    response: Response<ProxyBody>,
    span: tracing::Span,
    method: Method,
    path: String,
    started: Instant,
) -> Response<ProxyBody> {
    let (mut parts, inner) = response.into_parts();
    let line = AccessLine {
        span,
        method,
        path,
        started,
        status: parts.status,
        app: parts.extensions.remove::<AppName>().map(|a| a.0),
        machine: parts.extensions.remove::<ServedBy>().map(|s| s.0),
    };
    let body = LoggedBody {
        inner,
        line: Some(line),
        bytes: 0,
    };
    Response::from_parts(parts, ProxyBody::Logged(Box::new(body)))
}

// === impl LoggedBody ===

impl LoggedBody {
    fn finish(&mut self) {
        let Some(line) = self.line.take() else {
            return;
        };
        let _entered = line.span.enter();
        write(
            line.app.as_deref(),
            line.machine.as_deref(),
            line.method.as_str(),
            &line.path,
            line.status.as_u16(),
            self.bytes,
            line.started,
        );
    }
}

/// Writes one access line, in the current span (the request's). The HTTP/1.1 fast path
/// writes its lines with this too.
pub(crate) fn write(
    app: Option<&str>,
    machine: Option<&Target>,
    method: &str,
    path: &str,
    status: u16,
    bytes: u64,
    started: Instant,
) {
    let (machine, region) = match machine {
        Some(target) => (target.machine_id.as_str(), target.region.as_str()),
        None => ("-", "-"),
    };
    tracing::info!(
        target: "godwit_proxy::access",
        app = app.unwrap_or("-"),
        machine,
        region,
        method = %method,
        path = %path,
        status,
        bytes,
        duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "access"
    );
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None | Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish();
    }
}
