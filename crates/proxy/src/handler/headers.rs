//! Headers the proxy adds, removes and passes on.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Version, request};

/// What the proxy knows about the client's connection.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
    /// The public port this listener stands for (80 or 443).
    pub(crate) public_port: u16,
    /// The TLS server name the client asked for.
    pub(crate) sni: Option<String>,
}

/// Headers that describe one hop and never travel past it (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Headers only the proxy may set: whatever the client sent under these names is dropped.
const PROXY_OWNED: [&str; 4] = [
    "fly-client-ip",
    "fly-forwarded-port",
    "fly-region",
    "fly-replay-src",
];

/// The host the client asked for: the URI authority (HTTP/2, absolute form), the `Host`
/// header, else the TLS server name.
pub(crate) fn host_of<'a>(parts: &'a request::Parts, conn: &'a Conn) -> Option<&'a str> {
    parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(header::HOST)?.to_str().ok())
        .or(conn.sni.as_deref())
}

/// Rewrites the client's request headers into the ones the machine gets.
pub(crate) fn prepare_request(
    parts: &mut request::Parts,
    conn: &Conn,
    region: &str,
    request_id: &HeaderValue,
) {
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    remove_hop_by_hop(&mut parts.headers);
    let headers = &mut parts.headers;
    for name in PROXY_OWNED {
        headers.remove(name);
    }
    append_via(headers, parts.version);

    let client_ip = conn.peer.ip().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").map(HeaderValue::to_str) {
        Some(Ok(earlier)) if !earlier.trim().is_empty() => format!("{earlier}, {client_ip}"),
        _ => client_ip.clone(),
    };
    let port = conn.public_port.to_string();
    set(headers, "fly-client-ip", &client_ip);
    set(headers, "x-forwarded-for", &forwarded_for);
    set(
        headers,
        "x-forwarded-proto",
        if conn.tls { "https" } else { "http" },
    );
    set(
        headers,
        "x-forwarded-ssl",
        if conn.tls { "on" } else { "off" },
    );
    if !headers.contains_key("x-forwarded-port") {
        set(headers, "x-forwarded-port", &port);
    }
    set(headers, "fly-forwarded-port", &port);
    set(headers, "fly-region", region);
    headers.insert("fly-request-id", request_id.clone());
}

/// Rewrites the machine's response headers into the ones the client gets.
pub(crate) fn finish_response(
    headers: &mut HeaderMap,
    client_version: Version,
    request_id: &HeaderValue,
) {
    remove_hop_by_hop(headers);
    append_via(headers, client_version);
    headers.insert("fly-request-id", request_id.clone());
}

/// A fresh request id: random, then `-<region>` as the reference system does.
pub(crate) fn new_request_id(region: &str) -> HeaderValue {
    let random: u128 = rand::random();
    let id = format!("{random:032x}-{region}");
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid-region"))
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
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn append_via(headers: &mut HeaderMap, version: Version) {
    let version = match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    headers.append(
        header::VIA,
        HeaderValue::from_str(&format!("{version} godwit")).expect("a valid header value"),
    );
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
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
        let conn = Conn {
            peer: "192.0.2.7:5000".parse().expect("literal"),
            tls: true,
            public_port: 443,
            sni: None,
        };
        prepare_request(&mut parts, &conn, "ams", &new_request_id("ams"));
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
        assert!(!h.contains_key("connection") && !h.contains_key("x-secret"));
    }
}
