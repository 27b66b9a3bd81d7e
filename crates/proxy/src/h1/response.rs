//! Response heads on the fast path: the machine's head parsed with `httparse` and rewritten
//! into the client's (hop-by-hop and backhaul (`godwit-*`) headers dropped, `Via` and
//! `Fly-Request-Id` set, the body's framing kept as it came), and the proxy's own answers
//! written as HTTP/1.1.

use std::ops::Range;

use http::Response;

use super::chunked::Chunked;
use super::request::{Listed, content_length, is_hop_by_hop, offset_of, put};
use crate::body::ProxyBody;
use crate::handler::{REPLAY_HEADERS, is_replay_json};

/// Headers a response head may have.
const MAX_HEADERS: usize = 128;

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked(Chunked),
    /// Until the machine closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub(crate) struct ResponseHead {
    pub(crate) head_len: usize,
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    /// The machine keeps the connection open after this response.
    pub(crate) keep_alive: bool,
    /// The value of a `fly-replay`/`godwit-replay` header, by offsets into the buffer.
    pub(crate) replay: Option<Range<usize>>,
    /// The body is a replay's JSON form (`application/vnd.fly.replay+json`).
    pub(crate) replay_json: bool,
}

/// What [`parse`] found.
#[derive(Debug)]
pub(crate) enum Parsed {
    Partial,
    /// A `1xx` head of this length, dropped as hyper's client drops it.
    Informational(usize),
    Ready(ResponseHead),
    Invalid,
}

/// Parses the response head at the start of `buf` (the answer to a `HEAD` request when
/// `to_head`) and writes the client's head into `out`, ending it with `Connection: close`
/// when `close`.
pub(crate) fn parse(
    buf: &[u8],
    to_head: bool,
    close: bool,
    request_id: &[u8],
    out: &mut Vec<u8>,
) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Parsed::Invalid;
    };
    match status {
        101 | 0..=99 => return Parsed::Invalid,
        100..=199 => return Parsed::Informational(head_len),
        _ => {}
    }
    let headers = &*response.headers;
    let mut listed = Listed::default();
    let mut length = None;
    let mut chunked = None;
    let mut replay = None;
    let mut replay_json = false;
    for header in headers {
        let (name, value) = (header.name, header.value);
        if name.eq_ignore_ascii_case("connection") {
            if !listed.add(value) {
                return Parsed::Invalid;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = content_length(value) else {
                return Parsed::Invalid;
            };
            if length.is_some_and(|l| l != n) {
                return Parsed::Invalid;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides: chunked, or the body runs until the close.
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if replay.is_none() && REPLAY_HEADERS.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            replay = Some(offset_of(buf, value));
        } else if name.eq_ignore_ascii_case("content-type") {
            replay_json = is_replay_json(value);
        }
    }
    let framing = if to_head || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked(Chunked::default()),
            (Some(false), _) => Framing::Close,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    let keep_alive = version == 1 && !listed.has("close") && framing != Framing::Close;
    let close = close || framing == Framing::Close;

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&itoa_3(status));
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    for header in headers {
        let name = header.name;
        let framing_header = name.eq_ignore_ascii_case("transfer-encoding")
            && matches!(framing, Framing::Chunked(_));
        // With both, chunked framing wins (RFC 9112 §6.3) and the length must not go on.
        let stale_length =
            name.eq_ignore_ascii_case("content-length") && matches!(framing, Framing::Chunked(_));
        let dropped = is_hop_by_hop(name)
            || name.eq_ignore_ascii_case("fly-request-id")
            || stale_length
            || crate::backhaul::is_internal(name);
        if (framing_header || !dropped) && !listed.has(name) {
            put(out, name.as_bytes(), header.value);
        }
    }
    finish(out, request_id, close);
    Parsed::Ready(ResponseHead {
        head_len,
        status,
        framing,
        keep_alive,
        replay,
        replay_json,
    })
}

/// The proxy's own answer (from [`crate::body::error_response`] or the chooser) as bytes.
pub(crate) fn write_own(
    response: &Response<ProxyBody>,
    to_head: bool,
    close: bool,
    request_id: &[u8],
    out: &mut Vec<u8>,
) {
    let status = response.status();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        put(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let body: &[u8] = match response.body() {
        ProxyBody::Full(Some(bytes)) => bytes,
        _ => b"",
    };
    put(out, b"content-length", body.len().to_string().as_bytes());
    // Machines' answers carry their own Date; the proxy's own ones get it here, as hyper
    // gives it to the answers of the hyper path.
    put(
        out,
        b"date",
        httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes(),
    );
    finish(out, request_id, close);
    if !to_head {
        out.extend_from_slice(body);
    }
}

fn finish(out: &mut Vec<u8>, request_id: &[u8], close: bool) {
    put(out, b"via", b"1.1 godwit");
    put(out, b"fly-request-id", request_id);
    if close {
        put(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

fn itoa_3(status: u16) -> [u8; 3] {
    let digit = |n: u16| b'0' + u8::try_from(n % 10).expect("a digit fits in u8");
    [digit(status / 100), digit(status / 10), digit(status)]
}

#[cfg(test)]
mod tests;
