//! Headers the proxy adds, removes and passes on.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Version, request};

/// What the proxy knows about the client's connection.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub(crate) tls: bool,
    /// The public port this listener stands for (80 or 443).
    pub(crate) public_port: u16,
    /// The TLS server name the client asked for.
    pub(crate) sni: Option<String>,
    /// The peer's IP and the public port as header values, made once per connection.
    client_ip: HeaderValue,
    port: HeaderValue,
}

// === impl Conn ===

impl Conn {
    pub(crate) fn new(peer: SocketAddr, tls: bool, public_port: u16) -> Self {
        let client_ip = HeaderValue::from_str(&peer.ip().to_string())
            .expect("an ip address is a valid header value");
        Conn {
            tls,
            public_port,
            sni: None,
            client_ip,
            port: HeaderValue::from(public_port),
        }
    }

    /// The peer's IP address as a header value.
    pub(crate) fn client_ip(&self) -> &HeaderValue {
        &self.client_ip
    }

    /// The public port as a header value.
    pub(crate) fn port(&self) -> &HeaderValue {
        &self.port
    }
}

/// Headers that describe one hop and never travel past it (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

const FLY_CLIENT_IP: HeaderName = HeaderName::from_static("fly-client-ip");
const FLY_FORWARDED_PORT: HeaderName = HeaderName::from_static("fly-forwarded-port");
const FLY_REGION: HeaderName = HeaderName::from_static("fly-region");
const FLY_REPLAY_SRC: HeaderName = HeaderName::from_static("fly-replay-src");
const FLY_REQUEST_ID: HeaderName = HeaderName::from_static("fly-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_SSL: HeaderName = HeaderName::from_static("x-forwarded-ssl");

/// Headers only the proxy may set: whatever the client sent under these names is dropped.
const PROXY_OWNED: [HeaderName; 4] = [
    FLY_CLIENT_IP,
    FLY_FORWARDED_PORT,
    FLY_REGION,
    FLY_REPLAY_SRC,
];

/// The host the client asked for: the URI authority (HTTP/2, absolute form), the `Host`
/// header, else the TLS server name.
pub(crate) fn host_of<'a>(
    uri: &'a http::Uri,
    headers: &'a HeaderMap,
    conn: &'a Conn,
) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST)?.to_str().ok())
        .or(conn.sni.as_deref())
}

/// Rewrites the client's request headers into the ones the machine gets. `region` is the
/// proxy's region as a header value.
pub(crate) fn prepare_request(
    parts: &mut request::Parts,
    conn: &Conn,
    region: &HeaderValue,
    request_id: &HeaderValue,
) {
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    let upgrade = upgrade_of(&parts.headers);
    remove_hop_by_hop(&mut parts.headers);
    let headers = &mut parts.headers;
    if let Some(upgrade) = upgrade {
        // A protocol upgrade (WebSocket) goes on to the machine, which must agree to it.
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
    for name in &PROXY_OWNED {
        headers.remove(name);
    }
    headers.append(header::VIA, via(parts.version));

    let forwarded_for = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(earlier) if !earlier.trim_ascii().is_empty() => {
            let mut joined = Vec::with_capacity(earlier.len() + 2 + conn.client_ip.len());
            joined.extend_from_slice(earlier);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(conn.client_ip.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| conn.client_ip.clone())
        }
        _ => conn.client_ip.clone(),
    };
    headers.insert(FLY_CLIENT_IP, conn.client_ip.clone());
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    let (proto, ssl) = if conn.tls {
        ("https", "on")
    } else {
        ("http", "off")
    };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.insert(X_FORWARDED_SSL, HeaderValue::from_static(ssl));
    if !headers.contains_key(&X_FORWARDED_PORT) {
        headers.insert(X_FORWARDED_PORT, conn.port.clone());
    }
    headers.insert(FLY_FORWARDED_PORT, conn.port.clone());
    headers.insert(FLY_REGION, region.clone());
    headers.insert(FLY_REQUEST_ID, request_id.clone());
}

/// The protocol a client asks to upgrade to (`Connection: upgrade` + `Upgrade`), if any.
pub(crate) fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Rewrites the machine's response headers into the ones the client gets; a `101
/// Switching Protocols` keeps its `Connection` and `Upgrade`.
pub(crate) fn finish_response(
    headers: &mut HeaderMap,
    client_version: Version,
    request_id: &HeaderValue,
    switching: bool,
) {
    let upgrade = switching.then(|| upgrade_of(headers)).flatten();
    remove_hop_by_hop(headers);
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
    headers.append(header::VIA, via(client_version));
    headers.insert(FLY_REQUEST_ID, request_id.clone());
}

/// A fresh request id: 128 random bits in hex, then `-<region>` as the reference system does.
pub(crate) fn new_request_id(region: &str) -> HeaderValue {
    let random: u128 = rand::random();
    let mut id = vec![0_u8; 32];
    hex::encode_to_slice(random.to_be_bytes(), &mut id).expect("32 digits for 16 bytes");
    id.reserve(1 + region.len());
    id.push(b'-');
    id.extend_from_slice(region.as_bytes());
    let mut value = HeaderValue::from_maybe_shared(bytes::Bytes::from(id))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid-region"));
    // Unique per request: HPACK must not index it, or every HTTP/2 response would search
    // the dynamic table and evict an entry worth keeping (`never indexed` literal).
    value.set_sensitive(true);
    value
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_09 => "0.9 godwit",
        Version::HTTP_10 => "1.0 godwit",
        Version::HTTP_2 => "2 godwit",
        Version::HTTP_3 => "3 godwit",
        _ => "1.1 godwit",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_headers_are_rewritten() {
        let request = http::Request::builder()
            .uri("/x")
            .header("host", "hello.example.test")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("x-forwarded-for", "10.0.0.1")
            .header("fly-client-ip", "6.6.6.6")
            .body(())
            .expect("valid request");
        let (mut parts, ()) = request.into_parts();
        let conn = Conn::new("192.0.2.7:5000".parse().expect("literal"), true, 443);
        let region = HeaderValue::from_static("ams");
        prepare_request(&mut parts, &conn, &region, &new_request_id("ams"));
        let h = &parts.headers;
        assert_eq!(h["fly-client-ip"], "192.0.2.7");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-ssl"], "on");
        assert_eq!(h["x-forwarded-port"], "443");
        assert_eq!(h["fly-forwarded-port"], "443");
        assert_eq!(h["fly-region"], "ams");
        assert_eq!(h["via"], "1.1 godwit");
        assert!(
            h["fly-request-id"]
                .to_str()
                .expect("ascii")
                .ends_with("-ams")
        );
        assert_eq!(h["fly-request-id"].len(), 36);
        assert!(!h.contains_key("connection") && !h.contains_key("x-secret"));
    }
}
