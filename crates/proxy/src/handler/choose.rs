//! Choosing a machine for a request: a started one below its hard limit, else a stopped one
//! started on demand, else wait for a release or a route change until the deadline. The
//! request's [`Route`] says which machines may serve it and which rank first.

use std::collections::HashSet;
use std::sync::Arc;

use godwit_types::MachineState;
use http::{Response, StatusCode};
use tokio::time::Instant;

use super::Proxy;
use super::route::{Ranking, Route};
use crate::backhaul::Rank;
use crate::balance::{Acquired, Ranks as _};
use crate::body::{ProxyBody, error_response};
use crate::routes::{Health, Target};

/// Why no machine took a request (what a replay's fallback reports), with the answer the
/// client gets for it.
#[derive(Debug)]
pub(crate) struct Unserved {
    pub(crate) miss: Miss,
    pub(crate) response: Response<ProxyBody>,
}

/// The kind of [`Unserved`]: retries and fallbacks key off it, never off the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No machine matches, or none can be started.
    NoCandidate,
    /// Every candidate stayed busy (or starting) until the deadline.
    Timeout,
    /// Connections were refused until the attempts ran out.
    RetriesExhausted,
    /// A machine took the connection and then failed: never a reason to go elsewhere.
    Failed,
}

// === impl Unserved ===

impl Unserved {
    pub(crate) fn new(miss: Miss, status: StatusCode, code: &'static str, message: &str) -> Self {
        Unserved {
            miss,
            response: error_response(status, Some(code), message),
        }
    }
}

impl From<Unserved> for Response<ProxyBody> {
    fn from(unserved: Unserved) -> Self {
        unserved.response
    }
}

// === impl Proxy ===

impl Proxy {
    /// Picks a machine of `app` on public `port` that `route` allows and `tried` does not
    /// name, and counts the request against it. The wait ends at `deadline`, set here on
    /// the first call to the route's timeout (else the queue timeout) from now.
    pub(crate) async fn choose(
        &self,
        app: &str,
        port: u16,
        route: &Route,
        tried: &HashSet<String>,
        deadline: &mut Option<Instant>,
    ) -> Result<Acquired, Unserved> {
        let ranking = route.ranking(&self.closeness);
        // The fast path: a started machine with room, without registering for wake-ups.
        if let Some(acquired) = self.try_ready(app, port, route, &ranking, tried) {
            return Ok(acquired);
        }
        let wait = route.timeout.unwrap_or(self.cfg.queue_timeout);
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + wait);
        let _waiting = self.loads.wait();
        let mut failed_starts = HashSet::new();
        loop {
            // Listen before looking, so a release in between is not missed.
            let released = self.loads.released.notified();
            let changed = self.routes.changed.notified();
            tokio::pin!(released, changed);
            released.as_mut().enable();
            changed.as_mut().enable();

            let routes = self.routes.app(app);
            let targets: Vec<&Arc<Target>> = routes
                .as_deref()
                .map(|r| r.on_port(port))
                .unwrap_or_default()
                .iter()
                .filter(|t| self.allows(t, route, tried))
                .collect();
            if targets.is_empty() && tried.is_empty() && *route != Route::any() {
                let (status, code, message) = route.no_match(app);
                return Err(Unserved::new(Miss::NoCandidate, status, code, &message));
            }
            let (ready, rest): (Vec<&Arc<Target>>, Vec<&Arc<Target>>) =
                targets.into_iter().partition(|t| self.is_ready(t));
            let sleeping = self.nearest_sleeping(&rest, &ranking, &failed_starts);
            let ready: Vec<Arc<Target>> = ready.into_iter().cloned().collect();
            let any_ready = ready.iter().any(|t| t.health != Health::Critical);
            let acquired = self
                .loads
                .acquire(&ready, |_| true, &ranking, self.cfg.shed_budget);
            // A stopped machine in a nearer region is started rather than going farther.
            let acquired =
                acquired.filter(|a| !self.nearer_sleeping(sleeping, &a.target, &ranking));
            if let Some(acquired) = acquired {
                if acquired.over_soft
                    && let Some(sleeping) = sleeping
                {
                    self.wakers.wake_in_background(app, sleeping);
                }
                return Ok(acquired);
            }
            if let Some(sleeping) = sleeping {
                let woken = match route.timeout {
                    // A replay's own timeout bounds the start too (the start goes on).
                    Some(_) => tokio::time::timeout_at(deadline, self.wakers.wake(app, sleeping))
                        .await
                        .map_err(|_| timed_out(app, wait))?,
                    None => self.wakers.wake(app, sleeping).await,
                };
                match woken {
                    Ok(()) => self.loads.undrain(&sleeping.machine_id),
                    Err(reason) => {
                        failed_starts.insert(sleeping.machine_id.clone());
                        let more = self.nearest_sleeping(&rest, &ranking, &failed_starts);
                        if more.is_none() && !any_ready {
                            return Err(Unserved::new(
                                Miss::NoCandidate,
                                StatusCode::SERVICE_UNAVAILABLE,
                                "PM03",
                                &reason,
                            ));
                        }
                    }
                }
                continue;
            }
            let starting = rest.iter().any(|t| {
                matches!(t.state, MachineState::Starting | MachineState::Suspending)
                    || self.wakers.is_starting(&t.machine_id)
            });
            if !any_ready && !starting {
                let (miss, code, message) = if tried.is_empty() {
                    (
                        Miss::NoCandidate,
                        "PR01",
                        format!("app {app} has no started, healthy machine that can serve"),
                    )
                } else {
                    (
                        Miss::RetriesExhausted,
                        "PR03",
                        format!("no machine of app {app} accepted a connection"),
                    )
                };
                return Err(Unserved::new(
                    miss,
                    StatusCode::SERVICE_UNAVAILABLE,
                    code,
                    &message,
                ));
            }
            tokio::select! {
                () = released => {}
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => return Err(timed_out(app, wait)),
            }
        }
    }

    /// A started machine with room right now, if there is one.
    fn try_ready(
        &self,
        app: &str,
        port: u16,
        route: &Route,
        ranking: &Ranking<'_>,
        tried: &HashSet<String>,
    ) -> Option<Acquired> {
        let routes = self.routes.app(app)?;
        let targets = routes.on_port(port);
        let acquired = self.loads.acquire(
            targets,
            |t| self.allows(t, route, tried) && self.is_ready(t),
            ranking,
            self.cfg.shed_budget,
        )?;
        if ranking.rank_of(&acquired.target) != Rank::Own {
            // Farther than home: the slow path starts a nearer stopped machine, if any.
            let rest: Vec<&Arc<Target>> = targets
                .iter()
                .filter(|t| self.allows(t, route, tried) && !self.is_ready(t))
                .collect();
            let sleeping = self.nearest_sleeping(&rest, ranking, &HashSet::new());
            if self.nearer_sleeping(sleeping, &acquired.target, ranking) {
                return None;
            }
        }
        if acquired.over_soft {
            // Every machine is busy: start a stopped one for the next requests.
            let rest: Vec<&Arc<Target>> = targets
                .iter()
                .filter(|t| self.allows(t, route, tried) && !self.is_ready(t))
                .collect();
            if let Some(sleeping) = self.nearest_sleeping(&rest, ranking, &HashSet::new()) {
                self.wakers.wake_in_background(app, sleeping);
            }
        }
        Some(acquired)
    }

    fn allows(&self, target: &Target, route: &Route, tried: &HashSet<String>) -> bool {
        !target.cordoned
            && !self.closeness.is_down(&target.host_id)
            && route.allows(target)
            && (tried.is_empty() || !tried.contains(&target.machine_id))
    }

    /// Started, or started by this proxy before the replica caught up. Once the replica
    /// says started, the wake entry has done its job: forget it, so a later stop shows.
    pub(super) fn is_ready(&self, target: &Target) -> bool {
        if target.state == MachineState::Started {
            self.wakers.caught_up(&target.machine_id);
            return true;
        }
        self.wakers.is_awake(target)
    }

    /// A stopped (or suspended) machine with autostart on, in the nearest region that has one.
    fn nearest_sleeping<'t>(
        &self,
        targets: &[&'t Arc<Target>],
        ranking: &Ranking<'_>,
        failed: &HashSet<String>,
    ) -> Option<&'t Arc<Target>> {
        use MachineState::{Created, Stopped, Suspended};
        targets
            .iter()
            .copied()
            .filter(|t| {
                matches!(t.state, Stopped | Suspended | Created)
                    && t.autostart
                    && !failed.contains(&t.machine_id)
            })
            // Nearest first; in one region a suspended machine (resumes in ms) first.
            .min_by_key(|t| (ranking.rank_of(t), t.state != Suspended))
    }

    /// Whether `sleeping` ranks nearer than `chosen`.
    fn nearer_sleeping(
        &self,
        sleeping: Option<&Arc<Target>>,
        chosen: &Target,
        ranking: &Ranking<'_>,
    ) -> bool {
        sleeping.is_some_and(|s| ranking.rank_of(s) < ranking.rank_of(chosen))
    }
}

/// Every candidate stayed busy for `wait`.
fn timed_out(app: &str, wait: std::time::Duration) -> Unserved {
    let message = format!("every machine of app {app} that may serve stayed busy for {wait:?}");
    Unserved::new(
        Miss::Timeout,
        StatusCode::SERVICE_UNAVAILABLE,
        "PL01",
        &message,
    )
}
