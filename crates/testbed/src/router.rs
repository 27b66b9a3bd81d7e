//! The userspace WAN router: one thread with epoll reads packets from every node's TUN, holds
//! each one for the one-way delay between the two nodes' cities and then writes it to the
//! destination's TUN.
//!
//! Packets wait in one heap keyed by (due time, arrival sequence). A pair's delay is constant,
//! so packets of one pair leave in the order they came (per-pair FIFO). A `timerfd` armed at the
//! earliest due time gives nanosecond wake-ups (epoll's own timeout is in milliseconds).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::latency::DelayTable;

mod topology;

pub(crate) use topology::{Route, Topology};

const TOKEN_STOP: u64 = 0;
const TOKEN_TIMER: u64 = 1;
const TOKEN_FIRST_NODE: u64 = 2;
/// Packets read from one TUN before looking at the others.
const READ_BATCH: usize = 64;

/// Packet counters since the testbed started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Packets written to their destination.
    pub delivered: u64,
    /// Packets to an address no node owns (multicast, router solicitations, strays).
    pub no_route: u64,
    /// Packets stopped by a node being down or a partition (at send or at delivery).
    pub faulted: u64,
    /// Packets dropped by configured loss.
    pub lost: u64,
    /// Packets the destination TUN refused.
    pub write_errors: u64,
}

pub(crate) struct Router {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    epoll: Epoll,
    stop: EventFd,
    state: Mutex<State>,
    stats: Counters,
}

pub(crate) struct State {
    pub(crate) topo: Topology,
    tuns: Vec<Option<File>>,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    no_route: AtomicU64,
    faulted: AtomicU64,
    lost: AtomicU64,
    write_errors: AtomicU64,
}

struct Pending {
    due: Duration,
    seq: u64,
    src: usize,
    dst: usize,
    data: Vec<u8>,
}

// === impl Router ===

impl Router {
    pub(crate) fn start(table: Arc<DelayTable>) -> io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        epoll.add(&stop, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_STOP))?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK,
        )?;
        epoll.add(&timer, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_TIMER))?;
        let state = State {
            topo: Topology::new(table),
            tuns: Vec::new(),
        };
        let shared = Arc::new(Shared {
            epoll,
            stop,
            state: Mutex::new(state),
            stats: Counters::default(),
        });
        let thread = std::thread::Builder::new()
            .name("wan-router".into())
            .spawn({
                let shared = shared.clone();
                move || run(&shared, &timer)
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Registers a node's TUN (opened in the root netns) and its addresses; returns its index.
    pub(crate) fn add_node(&self, region: usize, addrs: &[IpAddr], tun: File) -> io::Result<usize> {
        let mut state = self.lock();
        let idx = state.topo.add_node(region, addrs);
        let token = TOKEN_FIRST_NODE + idx as u64;
        let registered = self
            .shared
            .epoll
            .add(&tun, EpollEvent::new(EpollFlags::EPOLLIN, token));
        state.tuns.push(Some(tun));
        if let Err(e) = registered {
            state.topo.remove_node(idx);
            state.tuns[idx] = None;
            return Err(e.into());
        }
        Ok(idx)
    }

    /// Stops routing to and from a node and closes its TUN (which destroys the device).
    pub(crate) fn remove_node(&self, idx: usize) {
        let mut state = self.lock();
        state.topo.remove_node(idx);
        if let Some(tun) = state.tuns.get_mut(idx).and_then(Option::take) {
            // Closing the fd removes it from the epoll set anyway.
            let _ = self.shared.epoll.delete(&tun);
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    pub(crate) fn stats(&self) -> RouterStats {
        let c = &self.shared.stats;
        RouterStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            no_route: c.no_route.load(Ordering::Relaxed),
            faulted: c.faulted.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            write_errors: c.write_errors.load(Ordering::Relaxed),
        }
    }

    /// Stops the thread and closes every TUN. Idempotent.
    pub(crate) fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if let Err(error) = self.shared.stop.write(1) {
                tracing::error!(%error, "failed to signal the wan router to stop");
            } else if thread.join().is_err() {
                tracing::error!("wan router thread panicked");
            }
        }
        self.lock().tuns.clear();
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves the topology consistent enough to keep routing.
    shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// === router thread ===

fn run(shared: &Shared, timer: &TimerFd) {
    // The default 50 µs timer slack would be added to every delivery.
    if let Err(error) = nix::sys::prctl::set_timerslack(1) {
        tracing::warn!(%error, "failed to lower the wan router's timer slack");
    }
    let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut events = [EpollEvent::empty(); 64];
    let mut buf = vec![0u8; 65536];
    let mut rng = SmallRng::from_os_rng();
    loop {
        deliver_due(shared, &mut heap);
        let armed = match heap.peek() {
            Some(Reverse(next)) => timer.set(
                Expiration::OneShot(TimeSpec::from_duration(next.due)),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            ),
            None => timer.unset(),
        };
        if let Err(error) = armed {
            tracing::error!(%error, "wan router cannot arm its timer; stopping");
            return;
        }
        let n = match shared.epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(error) => {
                tracing::error!(%error, "wan router epoll failed; stopping");
                return;
            }
        };
        for event in &events[..n] {
            match event.data() {
                TOKEN_STOP => return,
                // Re-arming the timer at the top of the loop clears its readiness.
                TOKEN_TIMER => {}
                token => {
                    let Ok(src) = usize::try_from(token - TOKEN_FIRST_NODE) else {
                        continue;
                    };
                    let now = monotonic_now();
                    let mut state = lock(shared);
                    read_node(
                        shared,
                        &mut state,
                        src,
                        &mut buf,
                        &mut rng,
                        |dst, delay, data| {
                            seq += 1;
                            heap.push(Reverse(Pending {
                                due: now + delay,
                                seq,
                                src,
                                dst,
                                data,
                            }));
                        },
                    );
                }
            }
        }
    }
}

/// Reads up to [`READ_BATCH`] packets from node `src` and hands each routable one to `push`.
fn read_node(
    shared: &Shared,
    state: &mut State,
    src: usize,
    buf: &mut [u8],
    rng: &mut SmallRng,
    mut push: impl FnMut(usize, Duration, Vec<u8>),
) {
    let mut broken = None;
    if let Some(tun) = state.tuns.get(src).and_then(Option::as_ref) {
        for _ in 0..READ_BATCH {
            let len = match (&*tun).read(buf) {
                Ok(0) => break,
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            };
            let packet = &buf[..len];
            let route = match destination(packet) {
                Some(addr) => state.topo.route(src, addr),
                None => Route::Unknown,
            };
            match route {
                Route::Deliver { dst, delay } => {
                    let loss = state.topo.loss(src, dst);
                    if loss > 0.0 && rng.random::<f64>() < loss {
                        shared.stats.lost.fetch_add(1, Ordering::Relaxed);
                    } else {
                        push(dst, delay, packet.to_vec());
                    }
                }
                Route::Unknown => {
                    shared.stats.no_route.fetch_add(1, Ordering::Relaxed);
                }
                Route::Unreachable => {
                    tracing::trace!(src, dst = ?destination(packet), "unreachable");
                    shared.stats.faulted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    if let Some(error) = broken {
        // EBADFD: someone deleted the node's netns, which destroyed the TUN under us.
        tracing::warn!(%error, node = src, "wan router lost a tun device; dropping the node");
        if let Some(tun) = state.tuns.get_mut(src).and_then(Option::take) {
            let _ = shared.epoll.delete(&tun);
        }
        state.topo.remove_node(src);
    }
}

fn deliver_due(shared: &Shared, heap: &mut BinaryHeap<Reverse<Pending>>) {
    let now = monotonic_now();
    if heap.peek().is_none_or(|Reverse(p)| p.due > now) {
        return;
    }
    let state = lock(shared);
    while let Some(Reverse(next)) = heap.peek() {
        if next.due > now {
            break;
        }
        let Some(Reverse(packet)) = heap.pop() else {
            break;
        };
        if !state.topo.reachable(packet.src, packet.dst) {
            shared.stats.faulted.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Some(tun) = state.tuns.get(packet.dst).and_then(Option::as_ref) else {
            shared.stats.faulted.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match (&*tun).write(&packet.data) {
            Ok(n) if n == packet.data.len() => {
                shared.stats.delivered.fetch_add(1, Ordering::Relaxed)
            }
            Ok(_) | Err(_) => shared.stats.write_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Destination address of an IPv4 or IPv6 packet.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let bytes: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(bytes)))
        }
        6 => {
            let bytes: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

fn monotonic_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(Duration::from)
        .expect("CLOCK_MONOTONIC is always readable")
}

// === impl Pending ===

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

#[cfg(test)]
mod tests;
