//! A minimal blocking HTTP/1.0 client whose sockets live in a node's netns: the world's
//! daemons listen on addresses only their namespaces reach, and the world must also call them
//! from `Drop`, where nothing can be awaited.

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

/// One request.
#[derive(Debug, Clone)]
pub(super) struct Request<'a> {
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) token: Option<&'a str>,
    pub(super) body: Option<&'a str>,
    /// Connect, read and write timeout.
    pub(super) timeout: Duration,
}

/// An answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) body: String,
}

/// Runs `f` on a fresh thread that entered the netns at `netns_path` and waits for it.
pub(super) fn in_netns<F, T>(netns_path: &Path, f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let ns_file = File::open(netns_path)?;
    let thread = std::thread::Builder::new()
        .name("world-netns".to_owned())
        .spawn(move || {
            setns(&ns_file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            drop(ns_file);
            f()
        })?;
    thread
        .join()
        .map_err(|_| io::Error::other("the thread running in the netns panicked"))?
}

/// Sends `req` to `addr` from inside the netns at `netns_path`.
pub(super) fn request_in(
    netns_path: &Path,
    addr: SocketAddr,
    req: &Request<'_>,
) -> io::Result<Response> {
    let raw = encode(addr, req);
    let timeout = req.timeout;
    in_netns(netns_path, move || exchange(addr, &raw, timeout))
}

/// Whether something accepts TCP connections on `addr` inside the netns.
pub(super) fn accepts_in(netns_path: &Path, addr: SocketAddr) -> bool {
    in_netns(netns_path, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map(drop)
    })
    .is_ok()
}

/// The netns path of a node's namespace name.
pub(super) fn netns_path(netns: &str) -> PathBuf {
    Path::new(crate::NETNS_DIR).join(netns)
}

fn encode(addr: SocketAddr, req: &Request<'_>) -> Vec<u8> {
    let mut head = format!(
        "{} {} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n",
        req.method, req.path
    );
    if let Some(token) = req.token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = req.body.unwrap_or_default();
    if req.body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body.as_bytes());
    raw
}

/// Writes the request and reads the answer to EOF (an HTTP/1.0 server closes the connection
/// after the body).
fn exchange(addr: SocketAddr, raw: &[u8], timeout: Duration) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(raw)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    parse(&answer)
}

fn parse(answer: &[u8]) -> io::Result<Response> {
    let text = String::from_utf8_lossy(answer);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("not HTTP: {text:.200}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status_line = head.lines().next().ok_or_else(bad)?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next().ok_or_else(bad)?;
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(bad)?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_token_and_body() {
        let addr: SocketAddr = "198.18.0.1:4280".parse().expect("literal address");
        let raw = encode(
            addr,
            &Request {
                method: "POST",
                path: "/v1/apps",
                token: Some("t0k"),
                body: Some("{\"a\":1}"),
                timeout: Duration::from_secs(1),
            },
        );
        let text = String::from_utf8(raw).expect("ascii");
        assert!(text.starts_with("POST /v1/apps HTTP/1.0\r\nHost: 198.18.0.1:4280\r\n"));
        assert!(text.contains("Authorization: Bearer t0k\r\n"), "{text}");
        assert!(
            text.ends_with("Content-Length: 7\r\n\r\n{\"a\":1}"),
            "{text}"
        );
    }

    #[test]
    fn answers_parse_status_and_body() {
        let response = parse(b"HTTP/1.0 201 Created\r\ncontent-type: x\r\n\r\n{\"ok\":true}")
            .expect("valid answer");
        assert_eq!(response.status, 201);
        assert_eq!(response.body, "{\"ok\":true}");
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
