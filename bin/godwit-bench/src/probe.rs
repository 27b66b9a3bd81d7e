//! Waiting for a machine's first `HTTP 200`: a raw HTTP/1.1 `GET /` over a fresh TCP
//! connection, retried with a short connect timeout and a ~1 ms pause between attempts.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long one connection attempt may take (a machine whose netns is not wired yet drops SYNs).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the status line may take once connected.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(1);

/// The machine never answered 200 in time.
#[derive(Debug, thiserror::Error)]
#[error("http://{addr}/ gave no HTTP 200 within {timeout:?} ({attempts} attempts, last: {last})")]
pub struct ProbeError {
    pub addr: SocketAddr,
    pub timeout: Duration,
    pub attempts: u32,
    /// What the last attempt got instead.
    pub last: String,
}

/// Polls `http://addr/` until it answers `200`; returns the number of attempts made.
pub async fn wait_for_200(addr: SocketAddr, timeout: Duration) -> Result<u32, ProbeError> {
    let deadline = Instant::now() + timeout;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match get_status(addr).await {
            Ok(200) => return Ok(attempts),
            Ok(status) => format!("HTTP {status}"),
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            return Err(ProbeError {
                addr,
                timeout,
                attempts,
                last,
            });
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// One `GET /`: the status code, or why there was none.
async fn get_status(addr: SocketAddr) -> Result<u16, String> {
    let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Err(_) => return Err(format!("connect: no answer in {CONNECT_TIMEOUT:?}")),
    };
    let _ = stream.set_nodelay(true);
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        read_status_line(&mut stream).await
    };
    match tokio::time::timeout(RESPONSE_TIMEOUT, exchange).await {
        Ok(Ok(line)) => parse_status(&line).ok_or_else(|| format!("bad status line {line:?}")),
        Ok(Err(e)) => Err(format!("exchange: {e}")),
        Err(_) => Err(format!("no status line in {RESPONSE_TIMEOUT:?}")),
    }
}

/// Reads up to the first CRLF (at most 1 KiB).
async fn read_status_line(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return Ok(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
        if buf.len() > 1024 {
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the status line",
            ));
        }
        buf.extend_from_slice(&chunk[..read]);
    }
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status("HTTP/1.1"), None);
    }

    /// A server answering 503 to its first `failures` requests, then 200; counts requests.
    async fn flaky_server(failures: u32) -> (SocketAddr, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&served);
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 512];
                let _ = conn.read(&mut request).await;
                let seen = counter.fetch_add(1, Ordering::SeqCst);
                let status = if seen < failures {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nhi");
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        (addr, served)
    }

    #[tokio::test]
    async fn retries_until_200() {
        let (addr, served) = flaky_server(3).await;
        let attempts = wait_for_200(addr, Duration::from_secs(10)).await.unwrap();
        assert_eq!(attempts, 4);
        assert_eq!(served.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline_with_the_last_answer() {
        let (addr, _) = flaky_server(u32::MAX).await;
        let err = wait_for_200(addr, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(err.attempts >= 1);
        assert_eq!(err.last, "HTTP 503");
    }

    #[tokio::test]
    async fn refused_connections_are_retried_until_the_deadline() {
        // A port that was just free: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let started = Instant::now();
        let err = wait_for_200(addr, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(err.attempts > 1, "only {} attempts", err.attempts);
        assert!(err.last.starts_with("connect:"), "{}", err.last);
    }
}
