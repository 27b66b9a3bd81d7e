//! Starting daemons and waiting, with deadlines, until they are ready.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::daemon::Daemon;
use super::{World, WorldError, http, nats};

/// How long each step may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A readiness check, run on a blocking thread.
pub(super) type Check = Arc<dyn Fn() -> bool + Send + Sync>;

// === impl World ===

impl World {
    pub(super) fn node_netns(&self, node: &str) -> String {
        self.testbed()
            .node(node)
            .map(|n| n.netns)
            .unwrap_or_else(|| format!("{}-{node}", self.spec.prefix))
    }

    /// Starts a daemon in `node`'s netns; returns its index in `daemons`.
    pub(super) fn spawn(
        &mut self,
        node: &str,
        netns: &str,
        name: &str,
        program: &Path,
        args: &[String],
    ) -> Result<usize, WorldError> {
        let label = format!("{node}-{name}");
        let log = self.logs_dir().join(format!("{label}.log"));
        let daemon = Daemon::spawn(label.clone(), &http::netns_path(netns), log, program, args)
            .map_err(|source| WorldError::Spawn { label, source })?;
        self.daemons.push(daemon);
        Ok(self.daemons.len() - 1)
    }

    /// Polls `check` until it holds; fails early, with the log's tail, if one of `watched`
    /// exits, and after [`READY_TIMEOUT`] with the first watched daemon's log.
    pub(super) async fn wait(
        &mut self,
        watched: &[usize],
        what: &str,
        check: Check,
    ) -> Result<(), WorldError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let attempt = check.clone();
            if tokio::task::spawn_blocking(move || attempt())
                .await
                .unwrap_or(false)
            {
                return Ok(());
            }
            for &idx in watched {
                let daemon = &mut self.daemons[idx];
                if !daemon.is_running() {
                    return Err(WorldError::Exited {
                        label: daemon.label.clone(),
                        log: daemon.log.clone(),
                        tail: daemon.log_tail(30),
                    });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let daemon = &self.daemons[watched[0]];
                return Err(WorldError::NotReady {
                    what: what.to_owned(),
                    timeout: READY_TIMEOUT,
                    log: daemon.log.clone(),
                    tail: daemon.log_tail(30),
                });
            }
            // Polling a condition with a deadline.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `GET <path>` on the nats-server monitor in `netns` answers 200 (with a body `accept`s).
pub(super) fn monitor_check(
    netns: &str,
    path: &'static str,
    accept: Option<fn(&str) -> bool>,
) -> Check {
    let netns = http::netns_path(netns);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, nats::MONITOR_PORT));
    Arc::new(move || {
        let req = http::Request {
            method: "GET",
            path,
            token: None,
            body: None,
            timeout: Duration::from_secs(2),
        };
        http::request_in(&netns, addr, &req)
            .is_ok_and(|r| r.status == 200 && accept.is_none_or(|accept| accept(&r.body)))
    })
}

/// Whether a `/varz` body counts at least one leaf connection.
pub(super) fn has_leaf_connection(varz: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(varz)
        .ok()
        .and_then(|v| v.get("leafnodes")?.as_u64())
        .is_some_and(|n| n >= 1)
}

/// `GET /v1/hosts` lists every one of `wanted` with status `ok` (its record published).
pub(super) fn hosts_check(world: &World, wanted: Vec<String>) -> Check {
    let netns = http::netns_path(&world.cp.netns);
    let addr = world.api_addr();
    let token = world.token.clone();
    Arc::new(move || {
        let req = http::Request {
            method: "GET",
            path: "/v1/hosts",
            token: Some(&token),
            body: None,
            timeout: Duration::from_secs(5),
        };
        let Ok(response) = http::request_in(&netns, addr, &req) else {
            return false;
        };
        let Ok(serde_json::Value::Array(hosts)) = serde_json::from_str(&response.body) else {
            return false;
        };
        wanted.iter().all(|id| {
            hosts.iter().any(|h| {
                h.get("host_id").and_then(|v| v.as_str()) == Some(id)
                    && h.get("status").and_then(|v| v.as_str()) == Some("ok")
            })
        })
    })
}
