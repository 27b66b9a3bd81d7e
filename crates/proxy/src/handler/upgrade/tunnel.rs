//! Joining an upgraded client connection to its machine's, byte for byte both ways, until
//! either side closes or the proxy closes the tunnel (autostop): then a WebSocket client
//! gets a close frame (1001 "going away") between two of the machine's frames, and the
//! machine's connection is closed.

use std::sync::atomic::{AtomicU64, Ordering};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::frames::{CLOSE_GOING_AWAY, Frames};
use crate::balance::LoadGuard;

type Io = TokioIo<Upgraded>;

/// How long a closing tunnel waits for the machine to finish the frame it is sending.
const BOUNDARY_WAIT: Duration = Duration::from_secs(2);
/// How long a closed tunnel reads what the client still sends (its close frame).
const DRAIN_WAIT: Duration = Duration::from_secs(1);
const BUFFER: usize = 16 * 1024;

/// One upgraded connection pair.
#[derive(Debug)]
pub(super) struct Tunnel {
    pub(super) client: Io,
    pub(super) machine: Io,
    /// The upgrade is a WebSocket: a close frame may be sent.
    pub(super) websocket: bool,
    /// Counts the tunnel against its machine until it has been quiet for `quiet`, so a
    /// quiet WebSocket does not keep its machine from autostop.
    pub(super) guard: LoadGuard,
    pub(super) quiet: Duration,
}

/// When a byte last went through, in milliseconds since the tunnel opened.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

// === impl Tunnel ===

impl Tunnel {
    /// Copies both ways until both sides are done, or `close` fires; returns the bytes
    /// sent (client → machine, machine → client).
    pub(super) async fn run(self, close: &CancellationToken) -> (u64, u64) {
        let activity = Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        };
        let (client_r, client_w) = tokio::io::split(self.client);
        let (machine_r, machine_w) = tokio::io::split(self.machine);
        let frames = self.websocket.then(Frames::default);
        let copied = async {
            tokio::join!(
                up(client_r, machine_w, &activity, close),
                down(machine_r, client_w, frames, &activity, close),
            )
        };
        let mut guard = Some(self.guard);
        let quiet_for = self.quiet;
        let quiet = async {
            loop {
                let last = activity.last();
                tokio::time::sleep_until(last + quiet_for).await;
                if activity.last() == last {
                    break;
                }
            }
            drop(guard.take());
            std::future::pending::<()>().await;
        };
        tokio::select! {
            copied = copied => copied,
            () = quiet => (0, 0),
        }
    }
}

/// Client → machine, until the client is done or `close` fires; then what the client still
/// sends is read and dropped, for a moment.
async fn up(
    mut client: ReadHalf<Io>,
    mut machine: WriteHalf<Io>,
    activity: &Activity,
    close: &CancellationToken,
) -> u64 {
    let mut buf = vec![0; BUFFER];
    let mut total = 0;
    loop {
        let read = tokio::select! {
            () = close.cancelled() => break,
            read = client.read(&mut buf) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = machine.shutdown().await;
                return total;
            }
            Ok(n) => n,
        };
        activity.touch();
        if machine.write_all(&buf[..n]).await.is_err() {
            return total;
        }
        total += n as u64;
    }
    let _ = machine.shutdown().await;
    drop(machine);
    let _ = tokio::time::timeout(DRAIN_WAIT, async {
        while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    total
}

/// Machine → client, until the machine is done or `close` fires; then, at a frame boundary,
/// a WebSocket client gets the close frame.
async fn down(
    mut machine: ReadHalf<Io>,
    mut client: WriteHalf<Io>,
    mut frames: Option<Frames>,
    activity: &Activity,
    close: &CancellationToken,
) -> u64 {
    let mut buf = vec![0; BUFFER];
    let mut total = 0;
    let mut closing: Option<Instant> = None;
    let at_boundary = |frames: &Option<Frames>| frames.as_ref().is_none_or(Frames::at_boundary);
    loop {
        let read = tokio::select! {
            () = close.cancelled(), if closing.is_none() => {
                closing = Some(Instant::now() + BOUNDARY_WAIT);
                if at_boundary(&frames) {
                    break;
                }
                continue;
            }
            () = sleep_until(closing), if closing.is_some() => {
                tracing::debug!("the machine did not finish its frame: closing without a close frame");
                let _ = client.shutdown().await;
                return total;
            }
            read = machine.read(&mut buf) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = client.shutdown().await;
                return total;
            }
            Ok(n) => n,
        };
        activity.touch();
        let taken = match &mut frames {
            Some(frames) => frames.advance(&buf[..n], closing.is_some()),
            None => n,
        };
        if client.write_all(&buf[..taken]).await.is_err() {
            return total;
        }
        total += taken as u64;
        if closing.is_some() && at_boundary(&frames) {
            break;
        }
    }
    if frames.is_some() {
        tracing::debug!("sending the client a websocket close frame (1001 going away)");
        let _ = client.write_all(CLOSE_GOING_AWAY).await;
    }
    let _ = client.shutdown().await;
    total
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

// === impl Activity ===

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}
