//! The fast path's way into the hyper path for what it does not do itself (replays): the
//! client's request as `http` parts with its body decoded, and the hyper path's response
//! written back as HTTP/1.1 (Content-Length when its size is known, else chunked).

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Response, StatusCode, Version};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};

use super::request::{MAX_HEADERS, RequestBody, put};
use super::{Outcome, Session, chunked, write_all};
use crate::body::ProxyBody;

/// The client's request (`head`, then its `body` as framed by `framing`) as the hyper path
/// would have it: origin-form URI, HTTP/1.1, the client's headers, the body decoded.
pub(super) fn request_of(
    head: &[u8],
    framing: RequestBody,
    body: &[u8],
) -> Option<http::Request<Bytes>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(head) else {
        return None;
    };
    let mut builder = http::Request::builder()
        .method(parsed.method?)
        .uri(parsed.path?)
        .version(Version::HTTP_11);
    for header in parsed.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    let body = match framing {
        RequestBody::Empty => Bytes::new(),
        RequestBody::Length(_) => Bytes::copy_from_slice(body),
        RequestBody::Chunked => Bytes::from(chunked::decode(body).ok()?),
    };
    builder.body(body).ok()
}

// === impl Session ===

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    /// Writes a response of the hyper path (its headers already the client's) to the
    /// client: no body for `HEAD` (`to_head`), 204 and 304.
    pub(super) async fn write_response(
        &mut self,
        response: Response<ProxyBody>,
        to_head: bool,
        close: bool,
    ) -> Outcome {
        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        self.served.status = status.as_u16();
        let bodiless = to_head
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status.is_informational();
        let length = body.size_hint().exact();
        let chunked = !bodiless && length.is_none();

        self.out.clear();
        self.out.extend_from_slice(b"HTTP/1.1 ");
        self.out.extend_from_slice(status.as_str().as_bytes());
        self.out.push(b' ');
        let reason = status.canonical_reason().unwrap_or("");
        self.out.extend_from_slice(reason.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            // A HEAD answer keeps the length the machine gave; a body is framed here.
            if bodiless || *name != CONTENT_LENGTH {
                put(&mut self.out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        match length {
            _ if bodiless => {}
            Some(length) => put(
                &mut self.out,
                b"content-length",
                length.to_string().as_bytes(),
            ),
            None => put(&mut self.out, b"transfer-encoding", b"chunked"),
        }
        if close {
            put(&mut self.out, b"connection", b"close");
        }
        self.out.extend_from_slice(b"\r\n");
        if !write_all(&mut self.client, &self.out).await {
            return Outcome::Close;
        }
        if bodiless {
            return Outcome::Keep;
        }
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                // Cut short: the client must not take it for whole.
                tracing::debug!("response body failed mid-way");
                return Outcome::Close;
            };
            // Trailers are dropped, as hyper's HTTP/1.1 server drops them unasked.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            self.served.bytes += u64::try_from(data.len()).unwrap_or(u64::MAX);
            let written = if chunked {
                self.out.clear();
                self.out
                    .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                self.out.extend_from_slice(&data);
                self.out.extend_from_slice(b"\r\n");
                write_all(&mut self.client, &self.out).await
            } else {
                write_all(&mut self.client, &data).await
            };
            if !written {
                return Outcome::Close;
            }
        }
        if chunked && !write_all(&mut self.client, b"0\r\n\r\n").await {
            return Outcome::Close;
        }
        Outcome::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_come_back_as_parts_with_their_body_decoded() {
        let head = b"POST /x?y=1 HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n";
        let request = request_of(head, RequestBody::Chunked, b"3\r\nabc\r\n0\r\n\r\n")
            .expect("a valid request");
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(request.uri(), "/x?y=1");
        assert_eq!(request.headers()["host"], "a");
        assert_eq!(request.body(), "abc");
        let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        let request = request_of(head, RequestBody::Empty, b"").expect("a valid request");
        assert!(request.body().is_empty());
        assert!(request_of(head, RequestBody::Chunked, b"zz").is_none());
    }
}
