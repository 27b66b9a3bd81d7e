//! Choosing a machine for a request: a started one below its hard limit, else a stopped one
//! started on demand, else wait for a release or a route change until the deadline.

use std::collections::HashSet;
use std::sync::Arc;

use godwit_types::MachineState;
use http::{Response, StatusCode};
use tokio::time::Instant;

use super::Proxy;
use super::replay::Pick;
use crate::backhaul::Rank;
use crate::balance::Acquired;
use crate::body::{ProxyBody, error_response};
use crate::routes::{Health, Target};

// === impl Proxy ===

impl Proxy {
    /// Picks a machine of `app` on public `port` that `pick` allows and `tried` does not
    /// name, and counts the request against it.
    pub(crate) async fn choose(
        &self,
        app: &str,
        port: u16,
        pick: &Pick,
        tried: &HashSet<String>,
        deadline: &mut Option<Instant>,
    ) -> Result<Acquired, Response<ProxyBody>> {
        // The fast path: a started machine with room, without registering for wake-ups.
        if let Some(acquired) = self.try_ready(app, port, pick, tried) {
            return Ok(acquired);
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.cfg.queue_timeout);
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
                .filter(|t| self.allows(t, pick, tried))
                .collect();
            if targets.is_empty() && tried.is_empty() && *pick != Pick::Any {
                let message = format!("no machine matches the replay target {pick:?}");
                return Err(error_response(
                    StatusCode::BAD_GATEWAY,
                    Some("PA04"),
                    &message,
                ));
            }
            let (ready, rest): (Vec<&Arc<Target>>, Vec<&Arc<Target>>) =
                targets.into_iter().partition(|t| self.is_ready(t));
            let sleeping = self.nearest_sleeping(&rest, &failed_starts);
            let ready: Vec<Arc<Target>> = ready.into_iter().cloned().collect();
            let any_ready = ready.iter().any(|t| t.health != Health::Critical);
            let acquired =
                self.loads
                    .acquire(&ready, |_| true, &self.closeness, self.cfg.shed_budget);
            // A stopped machine in a nearer region is started rather than going farther.
            let acquired = acquired.filter(|a| !self.nearer_sleeping(sleeping, &a.target));
            if let Some(acquired) = acquired {
                if acquired.over_soft
                    && let Some(sleeping) = sleeping
                {
                    self.wakers.wake_in_background(app, sleeping);
                }
                return Ok(acquired);
            }
            if let Some(sleeping) = sleeping {
                match self.wakers.wake(app, sleeping).await {
                    Ok(()) => self.loads.undrain(&sleeping.machine_id),
                    Err(reason) => {
                        failed_starts.insert(sleeping.machine_id.clone());
                        if self.nearest_sleeping(&rest, &failed_starts).is_none() && !any_ready {
                            return Err(error_response(
                                StatusCode::SERVICE_UNAVAILABLE,
                                Some("PM03"),
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
                let (code, message) = if tried.is_empty() {
                    (
                        "PR01",
                        format!("app {app} has no started, healthy machine that can serve"),
                    )
                } else {
                    (
                        "PR03",
                        format!("no machine of app {app} accepted a connection"),
                    )
                };
                return Err(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(code),
                    &message,
                ));
            }
            tokio::select! {
                () = released => {}
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {
                    let message = format!(
                        "every machine of app {app} stayed at its hard limit for {:?}",
                        self.cfg.queue_timeout
                    );
                    return Err(error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        Some("PL01"),
                        &message,
                    ));
                }
            }
        }
    }

    /// A started machine with room right now, if there is one.
    fn try_ready(
        &self,
        app: &str,
        port: u16,
        pick: &Pick,
        tried: &HashSet<String>,
    ) -> Option<Acquired> {
        let routes = self.routes.app(app)?;
        let targets = routes.on_port(port);
        let acquired = self.loads.acquire(
            targets,
            |t| self.allows(t, pick, tried) && self.is_ready(t),
            &self.closeness,
            self.cfg.shed_budget,
        )?;
        if self.closeness.rank(&acquired.target.region) != Rank::Own {
            // Farther than home: the slow path starts a nearer stopped machine, if any.
            let rest: Vec<&Arc<Target>> = targets
                .iter()
                .filter(|t| self.allows(t, pick, tried) && !self.is_ready(t))
                .collect();
            let sleeping = self.nearest_sleeping(&rest, &HashSet::new());
            if self.nearer_sleeping(sleeping, &acquired.target) {
                return None;
            }
        }
        if acquired.over_soft {
            // Every machine is busy: start a stopped one for the next requests.
            let rest: Vec<&Arc<Target>> = targets
                .iter()
                .filter(|t| self.allows(t, pick, tried) && !self.is_ready(t))
                .collect();
            if let Some(sleeping) = self.nearest_sleeping(&rest, &HashSet::new()) {
                self.wakers.wake_in_background(app, sleeping);
            }
        }
        Some(acquired)
    }

    fn allows(&self, target: &Target, pick: &Pick, tried: &HashSet<String>) -> bool {
        !target.cordoned
            && !self.closeness.is_down(&target.host_id)
            && pick.allows(target)
            && (tried.is_empty() || !tried.contains(&target.machine_id))
    }

    /// Started, or started by this proxy before the replica caught up. Once the replica
    /// says started, the wake entry has done its job: forget it, so a later stop shows.
    pub(super) fn is_ready(&self, target: &Target) -> bool {
        if target.state == MachineState::Started {
            self.wakers.caught_up(&target.machine_id);
            return true;
        }
        self.wakers.is_awake(&target.machine_id)
    }

    /// A stopped (or suspended) machine with autostart on, in the nearest region that has one.
    fn nearest_sleeping<'t>(
        &self,
        targets: &[&'t Arc<Target>],
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
            .min_by_key(|t| (self.closeness.rank(&t.region), t.state != Suspended))
    }

    /// Whether `sleeping` is in a region nearer than `chosen`'s.
    fn nearer_sleeping(&self, sleeping: Option<&Arc<Target>>, chosen: &Target) -> bool {
        sleeping
            .is_some_and(|s| self.closeness.rank(&s.region) < self.closeness.rank(&chosen.region))
    }
}
