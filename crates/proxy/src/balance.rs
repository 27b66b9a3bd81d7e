//! Load per machine (requests in flight, and the workers' hints) and the choice of a
//! machine: nearest region (measured) first, least loaded below the soft limit; at the soft
//! limit stay in that region unless latency shedding allows a region with room; never above
//! the hard limit; ties are broken at random.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::Rng as _;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use crate::backhaul::{Closeness, Rank};
use crate::routes::{Health, Target};

/// How near a machine is for one request: lower ranks are chosen first.
pub(crate) trait Ranks {
    fn rank_of(&self, target: &Target) -> Rank;
}

/// In-flight requests per machine, shared by every listener of one proxy.
#[derive(Debug, Default)]
pub(crate) struct Loads {
    machines: Mutex<HashMap<String, MachineLoad>>,
    /// Fired whenever a request ends while requests are queued, so they look again.
    pub(crate) released: Notify,
    /// Requests queued for a machine (only then is a release announced).
    waiting: AtomicUsize,
}

/// A request queued for a machine, counted until dropped.
#[derive(Debug)]
pub(crate) struct Waiting<'a>(&'a Loads);

/// A request counted against a machine until dropped.
#[derive(Debug)]
pub(crate) struct LoadGuard {
    loads: Arc<Loads>,
    target: Arc<Target>,
}

/// What [`Loads::acquire`] found.
#[derive(Debug)]
pub(crate) struct Acquired {
    pub(crate) guard: LoadGuard,
    pub(crate) target: Arc<Target>,
    /// Every candidate was at or above its soft limit.
    pub(crate) over_soft: bool,
}

#[derive(Debug)]
struct MachineLoad {
    in_flight: u32,
    last_active: Instant,
    /// Being stopped by autostop: takes no new requests until then.
    draining_until: Option<Instant>,
    /// The worker's last word on the machine's load (all edges), and when it came.
    hint: Option<(u32, Instant)>,
}

/// How long a worker's load hint counts.
const HINT_TTL: Duration = Duration::from_secs(1);

// === impl Loads ===

impl Loads {
    /// Counts a request against the best of the `candidates` that `allow` accepts (all
    /// assumed able to serve), or returns `None` when every one is at its hard limit or
    /// draining. Machines whose service checks have not passed yet are used only when no
    /// passing machine is a candidate.
    ///
    /// The nearest region (by `ranks`) with a machine below its hard limit takes the
    /// request, its least loaded machine below the soft limit; when all of them are at the
    /// soft limit, a region at most `shed_budget` farther with room takes it instead, else
    /// the nearest region's least loaded one does.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        candidates: &[Arc<Target>],
        allow: impl Fn(&Target) -> bool,
        ranks: &impl Ranks,
        shed_budget: Option<Duration>,
    ) -> Option<Acquired> {
        let now = Instant::now();
        let any_passing = candidates
            .iter()
            .any(|t| t.health == Health::Passing && allow(t));
        let ranked: Vec<(&Arc<Target>, Rank)> = candidates
            .iter()
            .filter(|t| {
                t.health != Health::Critical
                    && (!any_passing || t.health == Health::Passing)
                    && allow(t)
            })
            .map(|t| (t, ranks.rank_of(t)))
            .collect();
        let mut machines = self.lock();
        let mut eligible = Vec::with_capacity(ranked.len());
        for (target, rank) in ranked {
            let load = machines.get(target.machine_id.as_str());
            if load.is_some_and(|l| l.draining(now)) {
                continue;
            }
            let own = load.map_or(0, |l| l.in_flight);
            if target.hard_limit.is_some_and(|hard| own >= hard) {
                continue;
            }
            let load = load.map_or(0, |l| l.load(now));
            let over_soft = load >= target.soft_limit;
            eligible.push((target, rank, load, over_soft));
        }
        let nearest = eligible.iter().map(|(_, rank, ..)| rank).min()?.clone();
        let room_near = eligible
            .iter()
            .any(|(_, rank, _, over)| *rank == nearest && !over);
        let spill_limit = match (room_near, shed_budget, nearest.rtt()) {
            (false, Some(budget), Some(base)) => Some(base + budget),
            _ => None,
        }
        .filter(|limit| {
            eligible
                .iter()
                .any(|(_, rank, _, over)| !over && rank.rtt().is_some_and(|rtt| rtt <= *limit))
        });
        let wanted = |rank: &Rank, over: bool| match spill_limit {
            _ if room_near => *rank == nearest && !over,
            Some(limit) => !over && rank.rtt().is_some_and(|rtt| rtt <= limit),
            None => *rank == nearest,
        };
        let mut best: Option<(&Arc<Target>, bool)> = None;
        let mut best_key = None;
        let mut ties = 0_u32;
        for (target, rank, load, over_soft) in &eligible {
            if !wanted(rank, *over_soft) {
                continue;
            }
            let key = (rank, *load);
            match best_key {
                Some(current) if key > current => {}
                Some(current) if key == current => {
                    // Reservoir sampling: each tie ends up chosen with equal chance.
                    ties += 1;
                    if rand::rng().random_range(0..ties) == 0 {
                        best = Some((target, *over_soft));
                    }
                }
                _ => {
                    best_key = Some(key);
                    ties = 1;
                    best = Some((target, *over_soft));
                }
            }
        }
        let (target, over_soft) = best?;
        let target = Arc::clone(target);
        match machines.get_mut(target.machine_id.as_str()) {
            Some(entry) => {
                entry.in_flight += 1;
                entry.last_active = now;
            }
            None => {
                let mut entry = MachineLoad::new(now);
                entry.in_flight = 1;
                machines.insert(target.machine_id.clone(), entry);
            }
        }
        drop(machines);
        Some(Acquired {
            guard: LoadGuard {
                loads: Arc::clone(self),
                target: Arc::clone(&target),
            },
            target,
            over_soft,
        })
    }

    /// A worker said `machine_id` had `in_flight` requests (all edges together): counts as
    /// its load for [`HINT_TTL`] when above this proxy's own count.
    pub(crate) fn hint(&self, machine_id: &str, in_flight: u32) {
        let now = Instant::now();
        let mut machines = self.lock();
        let load = machines
            .entry(machine_id.to_owned())
            .or_insert_with(|| MachineLoad::new(now));
        load.hint = Some((in_flight, now));
    }

    /// Requests in flight on `machine_id` through this proxy.
    pub(crate) fn load_of(&self, machine_id: &str) -> u32 {
        self.lock().get(machine_id).map_or(0, |l| l.in_flight)
    }

    /// How long `machine_id` has had no request in flight; `None` while it has one. A
    /// machine never seen before counts as active now.
    pub(crate) fn idle_for(&self, machine_id: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut machines = self.lock();
        let load = machines
            .entry(machine_id.to_owned())
            .or_insert_with(|| MachineLoad::new(now));
        (load.in_flight == 0).then(|| now.saturating_duration_since(load.last_active))
    }

    /// Whether `machine_id` is draining: a stop or suspend was asked for and the replica may
    /// not show it yet.
    pub(crate) fn is_draining(&self, machine_id: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .get(machine_id)
            .is_some_and(|load| load.draining(now))
    }

    /// Marks an idle machine as draining for `hold` (no new requests); false if it has a
    /// request in flight.
    pub(crate) fn try_drain(&self, machine_id: &str, hold: Duration) -> bool {
        let now = Instant::now();
        let mut machines = self.lock();
        let load = machines
            .entry(machine_id.to_owned())
            .or_insert_with(|| MachineLoad::new(now));
        if load.in_flight > 0 {
            return false;
        }
        load.draining_until = Some(now + hold);
        true
    }

    /// Lets a machine take requests again (after a failed stop, or once it was started).
    pub(crate) fn undrain(&self, machine_id: &str) {
        if let Some(load) = self.lock().get_mut(machine_id) {
            load.draining_until = None;
            load.last_active = Instant::now();
        }
        self.released.notify_waiters();
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self, machine_id: &str) -> u32 {
        self.load_of(machine_id)
    }

    /// Counts a queued request until the returned value is dropped; register with
    /// [`Loads::released`] after this and before looking at the loads.
    pub(crate) fn wait(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(self)
    }

    /// Every machine with requests in flight, and how many.
    pub(crate) fn snapshot(&self) -> Vec<(String, u32)> {
        self.lock()
            .iter()
            .filter(|(_, load)| load.in_flight > 0)
            .map(|(id, load)| (id.clone(), load.in_flight))
            .collect()
    }

    fn release(&self, machine_id: &str) {
        if let Some(load) = self.lock().get_mut(machine_id) {
            load.in_flight = load.in_flight.saturating_sub(1);
            load.last_active = Instant::now();
        }
        // A request that starts waiting after this load sees the lower count under the lock.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.released.notify_waiters();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, MachineLoad>> {
        self.machines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Closeness ===

impl Ranks for Closeness {
    fn rank_of(&self, target: &Target) -> Rank {
        self.rank(&target.region)
    }
}

// === impl Waiting ===

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

// === impl LoadGuard ===

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.loads.release(&self.target.machine_id);
    }
}

// === impl MachineLoad ===

impl MachineLoad {
    fn new(now: Instant) -> Self {
        MachineLoad {
            in_flight: 0,
            last_active: now,
            draining_until: None,
            hint: None,
        }
    }

    /// The load to balance on: this proxy's own count, or the worker's fresh hint if higher.
    fn load(&self, now: Instant) -> u32 {
        match self.hint {
            Some((hint, at)) if now.saturating_duration_since(at) < HINT_TTL => {
                self.in_flight.max(hint)
            }
            _ => self.in_flight,
        }
    }

    fn draining(&self, now: Instant) -> bool {
        self.draining_until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests;
