//! Request heads on the fast path: parsed with `httparse`, checked for anything the fast
//! path leaves to hyper, and rewritten into the head the machine gets (the headers of
//! `handler/headers.rs`: hop-by-hop and backhaul (`godwit-*`) ones dropped, `Fly-*`,
//! `X-Forwarded-*` and `Via` set).

use std::ops::Range;

/// Headers a request head may have on the fast path.
pub(crate) const MAX_HEADERS: usize = 96;

/// What the rewrite needs to know about the connection, made once per connection.
#[derive(Debug)]
pub(crate) struct Rewrite {
    client_ip: Vec<u8>,
    port: Vec<u8>,
    /// The headers that are the same for every request of the connection, up to the value
    /// of `fly-request-id`.
    fixed: Vec<u8>,
}

/// A parsed request head, by offsets into the client buffer.
#[derive(Debug, Clone)]
pub(crate) struct RequestHead {
    pub(crate) head_len: usize,
    pub(crate) method: Range<usize>,
    /// The path without its query string (for the access log).
    pub(crate) path: Range<usize>,
    pub(crate) host: Range<usize>,
    pub(crate) body: RequestBody,
    /// The client asked to close the connection after this request.
    pub(crate) close: bool,
    pub(crate) is_head: bool,
    /// The path is an ACME HTTP-01 challenge.
    pub(crate) acme: bool,
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestBody {
    Empty,
    Length(u64),
    Chunked,
}

/// What [`parse`] found.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// Something the fast path does not handle: hyper takes the connection.
    Fallback,
    Ready(RequestHead),
}

// === impl Rewrite ===

impl Rewrite {
    /// For a client at `client_ip` on public `port` (TLS or not) of a proxy in `region`.
    pub(crate) fn new(client_ip: &[u8], tls: bool, port: &[u8], region: &[u8]) -> Self {
        let (proto, ssl): (&[u8], &[u8]) = if tls {
            (b"https", b"on")
        } else {
            (b"http", b"off")
        };
        let mut fixed = Vec::new();
        put(&mut fixed, b"via", b"1.1 godwit");
        put(&mut fixed, b"fly-client-ip", client_ip);
        put(&mut fixed, b"x-forwarded-proto", proto);
        put(&mut fixed, b"x-forwarded-ssl", ssl);
        put(&mut fixed, b"fly-forwarded-port", port);
        put(&mut fixed, b"fly-region", region);
        fixed.extend_from_slice(b"fly-request-id: ");
        Rewrite {
            client_ip: client_ip.to_vec(),
            port: port.to_vec(),
            fixed,
        }
    }
}

/// Parses the request head at the start of `buf` and, when the fast path can take it,
/// writes the machine's head into `out` without its final empty line.
pub(crate) fn parse(buf: &[u8], rewrite: &Rewrite, request_id: &[u8], out: &mut Vec<u8>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Fallback,
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::Fallback;
    };
    if !path.starts_with('/') {
        return Parsed::Fallback;
    }
    let headers = &*request.headers;
    let mut scan = Scan::default();
    for header in headers {
        if !scan.see(header) {
            return Parsed::Fallback;
        }
    }
    let (Some(host), Some(body)) = (scan.host, scan.body()) else {
        return Parsed::Fallback;
    };
    let host = offset_of(buf, host);
    let bare_path = path.split_once('?').map_or(path, |(bare, _)| bare);

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for header in headers {
        if passes(header.name, &scan) {
            put(out, header.name.as_bytes(), header.value);
        }
    }
    if !scan.forwarded_port {
        put(out, b"x-forwarded-port", &rewrite.port);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(earlier) = scan.forwarded_for.filter(|v| !v.trim_ascii().is_empty()) {
        out.extend_from_slice(earlier);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(&rewrite.client_ip);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&rewrite.fixed);
    out.extend_from_slice(request_id);
    out.extend_from_slice(b"\r\n");
    if body == RequestBody::Chunked {
        put(out, b"transfer-encoding", b"chunked");
    }
    Parsed::Ready(RequestHead {
        head_len,
        method: offset_of(buf, method.as_bytes()),
        path: offset_of(buf, bare_path.as_bytes()),
        host,
        body,
        close: scan.close,
        is_head: method == "HEAD",
        acme: path.starts_with(crate::ACME_HTTP_PREFIX),
    })
}

/// Writes one `name: value` line.
pub(crate) fn put(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Where `part` (a subslice of `buf`) lies in `buf`.
pub(crate) fn offset_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    start..start + part.len()
}

/// A `Content-Length` value: digits only (no sign, no list), as RFC 9110 §8.6 has it.
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), dropped in both directions.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "http2-settings",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// The names a `Connection` header lists, at most eight.
#[derive(Debug, Default)]
pub(crate) struct Listed<'a> {
    names: [&'a [u8]; 8],
    len: usize,
}

// === impl Listed ===

impl<'a> Listed<'a> {
    /// Adds the tokens of one `Connection` value; false when there are too many.
    pub(crate) fn add(&mut self, value: &'a [u8]) -> bool {
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.is_empty() {
                continue;
            }
            if self.len == self.names.len() {
                return false;
            }
            self.names[self.len] = token;
            self.len += 1;
        }
        true
    }

    pub(crate) fn has(&self, token: &str) -> bool {
        self.names[..self.len]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(token.as_bytes()))
    }
}

/// What one pass over the request headers found.
#[derive(Debug, Default)]
struct Scan<'a> {
    host: Option<&'a [u8]>,
    length: Option<u64>,
    chunked: bool,
    close: bool,
    forwarded_for: Option<&'a [u8]>,
    forwarded_port: bool,
    listed: Listed<'a>,
}

// === impl Scan ===

impl<'a> Scan<'a> {
    /// Notes one header; false when the fast path must leave the request to hyper.
    fn see(&mut self, header: &httparse::Header<'a>) -> bool {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("host") {
            if self.host.is_some() {
                return false;
            }
            self.host = Some(value.trim_ascii());
        } else if name.eq_ignore_ascii_case("content-length") {
            let Some(length) = content_length(value) else {
                return false;
            };
            if self.length.is_some_and(|l| l != length) {
                return false;
            }
            self.length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a lone `chunked`: anything else is hyper's to refuse or decode.
            if self.chunked || !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return false;
            }
            self.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            if !self.listed.add(value) || self.listed.has("upgrade") {
                return false;
            }
            self.close |= self.listed.has("close");
        } else if name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("http2-settings")
            || is_routing_header(name)
        {
            return false;
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            self.forwarded_for = self.forwarded_for.or(Some(value));
        } else if name.eq_ignore_ascii_case("x-forwarded-port") {
            self.forwarded_port = true;
        }
        true
    }

    /// The body's framing; `None` when it is ambiguous.
    fn body(&self) -> Option<RequestBody> {
        match (self.chunked, self.length) {
            (true, Some(_)) => None,
            (true, None) => Some(RequestBody::Chunked),
            (false, Some(0) | None) => Some(RequestBody::Empty),
            (false, Some(length)) => Some(RequestBody::Length(length)),
        }
    }
}

/// The client's routing headers (`fly-prefer-region` and the like): such a request is
/// the hyper path's, which honours them; plain requests never pay for them here.
fn is_routing_header(name: &str) -> bool {
    let name = name.as_bytes();
    name.len() > 10
        && name[..4].eq_ignore_ascii_case(b"fly-")
        && [
            crate::handler::FLY_PREFER_REGION,
            crate::handler::FLY_FORCE_REGION,
            crate::handler::FLY_PREFER_INSTANCE,
            crate::handler::FLY_FORCE_INSTANCE,
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
}

/// Whether a client header goes on to the machine as it is.
fn passes(name: &str, scan: &Scan<'_>) -> bool {
    const REPLACED: [&str; 8] = [
        "fly-client-ip",
        "fly-forwarded-port",
        "fly-region",
        "fly-replay-src",
        "fly-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-ssl",
    ];
    !is_hop_by_hop(name)
        && !REPLACED.iter().any(|r| name.eq_ignore_ascii_case(r))
        && !crate::backhaul::is_internal(name)
        && !scan.listed.has(name)
}

#[cfg(test)]
mod tests;
