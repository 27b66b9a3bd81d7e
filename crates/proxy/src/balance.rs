//! Load per machine (requests in flight) and the choice of a machine: nearest region first,
//! least loaded below the soft limit, above it only when every machine is, never above the
//! hard limit; ties are broken at random.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::Rng as _;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use crate::routes::{Health, Target};

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
}

// === impl Loads ===

impl Loads {
    /// Counts a request against the best of the `candidates` that `allow` accepts (all
    /// assumed able to serve), or returns `None` when every one is at its hard limit or
    /// draining. Machines whose service checks have not passed yet are used only when no
    /// passing machine is a candidate.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        candidates: &[Arc<Target>],
        allow: impl Fn(&Target) -> bool,
        local_region: &str,
    ) -> Option<Acquired> {
        let now = Instant::now();
        let mut machines = self.lock();
        let any_passing = candidates
            .iter()
            .any(|t| t.health == Health::Passing && allow(t));
        let mut best: Option<(&Arc<Target>, bool)> = None;
        let mut best_key = None;
        let mut ties = 0_u32;
        for target in candidates {
            if target.health == Health::Critical
                || (any_passing && target.health != Health::Passing)
                || !allow(target)
            {
                continue;
            }
            let load = machines.get(target.machine_id.as_str());
            if load.is_some_and(|l| l.draining(now)) {
                continue;
            }
            let in_flight = load.map_or(0, |l| l.in_flight);
            if target.hard_limit.is_some_and(|hard| in_flight >= hard) {
                continue;
            }
            let over_soft = in_flight >= target.soft_limit;
            let key = (*target.region != *local_region, over_soft, in_flight);
            match best_key {
                Some(current) if key > current => {}
                Some(current) if key == current => {
                    // Reservoir sampling: each tie ends up chosen with equal chance.
                    ties += 1;
                    if rand::rng().random_range(0..ties) == 0 {
                        best = Some((target, over_soft));
                    }
                }
                _ => {
                    best_key = Some(key);
                    ties = 1;
                    best = Some((target, over_soft));
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

    /// Requests in flight on `machine_id`.
    #[cfg(test)]
    pub(crate) fn in_flight(&self, machine_id: &str) -> u32 {
        self.lock().get(machine_id).map_or(0, |l| l.in_flight)
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
        }
    }

    fn draining(&self, now: Instant) -> bool {
        self.draining_until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use godwit_types::MachineState;

    use super::*;

    fn target(id: &str, region: &str, soft: u32, hard: Option<u32>) -> Arc<Target> {
        Arc::new(Target {
            machine_id: id.to_owned(),
            region: region.to_owned(),
            addr: "127.0.0.1:1".parse().expect("literal address"),
            state: MachineState::Started,
            cordoned: false,
            soft_limit: soft,
            hard_limit: hard,
            autostart: true,
            autostop: false,
            min_running: 0,
            health: Health::Passing,
            proxy_proto: None,
        })
    }

    fn take(loads: &Arc<Loads>, targets: &[Arc<Target>]) -> Option<Acquired> {
        loads.acquire(targets, |_| true, "ams")
    }

    #[test]
    fn least_loaded_below_soft_then_over_soft_then_none_above_hard() {
        let loads = Arc::new(Loads::default());
        let targets = [
            target("a", "ams", 3, Some(4)),
            target("b", "ams", 1, Some(1)),
        ];
        let mut held = Vec::new();
        for _ in 0..4 {
            let acquired = take(&loads, &targets).expect("room below the soft limits");
            assert!(!acquired.over_soft);
            held.push(acquired.guard);
        }
        assert_eq!((loads.in_flight("a"), loads.in_flight("b")), (3, 1));
        let over = take(&loads, &targets).expect("a is below its hard limit");
        assert!(over.over_soft);
        assert_eq!(over.target.machine_id, "a");
        assert!(take(&loads, &targets).is_none(), "both at hard limits");
        drop(over);
        assert_eq!(loads.in_flight("a"), 3);
        assert!(take(&loads, &targets).is_some());
    }

    #[test]
    fn local_region_first_and_ties_are_random() {
        let loads = Arc::new(Loads::default());
        let targets = [
            target("far", "syd", 10, None),
            target("a", "ams", 10, None),
            target("b", "ams", 10, None),
        ];
        let mut seen = BTreeMap::new();
        for _ in 0..200 {
            let acquired = take(&loads, &targets).expect("no hard limit");
            *seen.entry(acquired.target.machine_id.clone()).or_insert(0) += 1;
        }
        assert_eq!(seen.get("far"), None, "{seen:?}");
        assert!(seen.get("a").is_some_and(|n| *n > 20), "{seen:?}");
        assert!(seen.get("b").is_some_and(|n| *n > 20), "{seen:?}");
    }

    #[test]
    fn critical_machines_never_warning_ones_only_without_passing_ones() {
        let loads = Arc::new(Loads::default());
        let with_health = |id: &str, health| {
            let mut t = (*target(id, "ams", 10, None)).clone();
            t.health = health;
            Arc::new(t)
        };
        let targets = [
            with_health("critical", Health::Critical),
            with_health("warning", Health::Warning),
            with_health("passing", Health::Passing),
        ];
        for _ in 0..50 {
            let acquired = take(&loads, &targets).expect("a passing machine");
            assert_eq!(acquired.target.machine_id, "passing");
        }
        let acquired = take(&loads, &targets[..2]).expect("a warning machine");
        assert_eq!(acquired.target.machine_id, "warning");
        drop(acquired);
        assert!(take(&loads, &targets[..1]).is_none(), "critical only");
        // A passing machine excluded by the caller does not shut out the warning one.
        let acquired = loads
            .acquire(&targets, |t| t.machine_id != "passing", "ams")
            .expect("the warning machine");
        assert_eq!(acquired.target.machine_id, "warning");
    }

    #[test]
    fn draining_machines_take_nothing() {
        let loads = Arc::new(Loads::default());
        let targets = [target("a", "ams", 10, None)];
        assert!(loads.try_drain("a", Duration::from_secs(60)));
        assert!(take(&loads, &targets).is_none());
        loads.undrain("a");
        let held = take(&loads, &targets).expect("undrained");
        assert!(!loads.try_drain("a", Duration::from_secs(60)), "busy");
        drop(held);
    }
}
