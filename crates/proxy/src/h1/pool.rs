//! Idle keep-alive connections to machines for the fast path: plain TCP streams with no
//! delay, reused per address (last in, first out), dropped after the idle timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

/// How long an upstream TCP connect may take before the next machine is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle connections kept per machine address.
const MAX_IDLE_PER_ADDR: usize = 1024;

/// The pool of idle fast-path connections to machines.
#[derive(Debug)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
    idle_timeout: Duration,
}

// === impl Pool ===

impl Pool {
    pub(crate) fn new(idle_timeout: Duration) -> Self {
        Pool {
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
        }
    }

    /// The most recently used idle connection to `addr` that has not timed out.
    pub(crate) fn checkout(&self, addr: SocketAddr) -> Option<TcpStream> {
        let now = Instant::now();
        let mut idle = self.lock();
        let conns = idle.get_mut(&addr)?;
        while let Some((stream, since)) = conns.pop() {
            if now.saturating_duration_since(since) <= self.idle_timeout {
                return Some(stream);
            }
        }
        None
    }

    /// A connection whose last response ended cleanly.
    pub(crate) fn put(&self, addr: SocketAddr, stream: TcpStream) {
        let mut idle = self.lock();
        let conns = idle.entry(addr).or_default();
        if conns.len() < MAX_IDLE_PER_ADDR {
            conns.push((stream, Instant::now()));
        }
    }

    /// Drops idle connections that timed out.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let timeout = self.idle_timeout;
        self.lock().retain(|_, conns| {
            conns.retain(|(_, since)| now.saturating_duration_since(*since) <= timeout);
            !conns.is_empty()
        });
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Vec<(TcpStream, Instant)>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A new connection to `addr`, with no delay.
pub(crate) async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
