//! Health checks of started machines. Every started machine has one checks task (started and
//! stopped with its exit monitor) probing its service checks (`config.services[].checks`, named
//! `servicecheck-<n>-<port>`, which gate routing) and its top-level checks (`config.checks`,
//! named by their key, informational). Results live in memory: `Machine.checks` and
//! `MachineRecord.checks`; a status change (not every probe) republishes the record. A stopped
//! machine has no checks.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use godwit_types::{CheckResult, CheckStatus, MachineConfig, ServiceCheck};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};

use crate::agent::Agent;

mod probe;

use probe::{Probe, ProbeKind};

/// What a check says before its first probe and while failing within its grace period.
pub(crate) const WAITING: &str = "waiting for first check";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Probes never run closer together than this.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Within the grace period a failing check is probed at least this often, so a machine that
/// comes up quickly passes quickly.
const GRACE_RETRY: Duration = Duration::from_secs(1);

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The check results of every started machine, and the tasks producing them.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    machines: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    /// Tells a stale task (of a replaced entry) from the current one.
    generation: u64,
    cancel: CancellationToken,
    abort: tokio::task::AbortHandle,
    results: Vec<CheckResult>,
}

// === impl Checks ===

impl Checks {
    /// The machine's current results (empty unless it is started and has checks).
    pub(crate) fn results(&self, id: &str) -> Vec<CheckResult> {
        self.lock()
            .get(id)
            .map(|e| e.results.clone())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.machines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a probe's outcome; true if the check's status changed.
    fn record(
        &self,
        id: &str,
        generation: u64,
        idx: usize,
        status: CheckStatus,
        output: String,
    ) -> bool {
        let mut machines = self.lock();
        let Some(result) = machines
            .get_mut(id)
            .filter(|e| e.generation == generation)
            .and_then(|e| e.results.get_mut(idx))
        else {
            return false;
        };
        let changed = result.status != status;
        result.status = status;
        result.output = output;
        result.updated_at = godwit_types::now_ms();
        changed
    }
}

/// Starts (or restarts, back to "waiting") the machine's checks. Call when it has started.
pub(crate) fn start(agent: &Arc<Agent>, id: &str) {
    stop(agent, id);
    let row = match agent.db.get_machine(id) {
        Ok(Some(row)) => row,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(machine_id = %id, %error, "failed to read machine to start its checks");
            return;
        }
    };
    let probes = probes(&row.config, IpAddr::V4(row.private_ip));
    if probes.is_empty() {
        return;
    }
    let now = godwit_types::now_ms();
    let results = probes
        .iter()
        .map(|p| CheckResult {
            name: p.name.clone(),
            status: CheckStatus::Warning,
            output: WAITING.to_owned(),
            updated_at: now,
        })
        .collect();
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let cancel = agent.cancel.child_token();
    let span = info_span!(parent: None, "checks", machine_id = %id);
    // Holding the map's lock across the spawn: the task's first record finds its entry.
    let mut machines = agent.checks.lock();
    let task = agent.tasks.spawn(
        run(
            agent.clone(),
            id.to_owned(),
            generation,
            probes,
            cancel.clone(),
        )
        .instrument(span),
    );
    machines.insert(
        id.to_owned(),
        Entry {
            generation,
            cancel,
            abort: task.abort_handle(),
            results,
        },
    );
    drop(machines);
    agent.publisher.mark_machine(id);
}

/// Stops the machine's checks and clears their results.
pub(crate) fn stop(agent: &Agent, id: &str) {
    let entry = agent.checks.lock().remove(id);
    if let Some(entry) = entry {
        entry.cancel.cancel();
        entry.abort.abort();
        agent.publisher.mark_machine(id);
    }
}

pub(crate) fn stop_all(agent: &Agent) {
    let entries: Vec<_> = agent.checks.lock().drain().collect();
    for (_, entry) in entries {
        entry.cancel.cancel();
        entry.abort.abort();
    }
}

/// The machine's checks: service checks in order, then top-level checks by name.
fn probes(config: &MachineConfig, ip: IpAddr) -> Vec<Probe> {
    let service_checks = config
        .services
        .iter()
        .flat_map(|svc| svc.checks.iter().map(|c| (c, Some(svc.internal_port))));
    let mut out: Vec<Probe> = service_checks
        .enumerate()
        .map(|(n, (check, internal_port))| {
            let port = check.port.or(internal_port);
            let name = format!("servicecheck-{n}-{}", port.unwrap_or_default());
            probe(name, check, port, ip)
        })
        .collect();
    out.extend(
        config
            .checks
            .iter()
            .map(|(name, check)| probe(name.clone(), check, check.port, ip)),
    );
    out
}

fn probe(name: String, check: &ServiceCheck, port: Option<u16>, ip: IpAddr) -> Probe {
    let kind = match (check.kind.as_str(), port) {
        (_, None | Some(0)) => ProbeKind::Invalid("the check has no port".to_owned()),
        ("tcp", _) => ProbeKind::Tcp,
        ("http", _) => {
            let method = check
                .method
                .as_deref()
                .unwrap_or("GET")
                .to_ascii_uppercase();
            match reqwest::Method::from_bytes(method.as_bytes()) {
                Ok(method) => ProbeKind::Http {
                    method,
                    path: check.path.clone().unwrap_or_else(|| "/".to_owned()),
                },
                Err(_) => ProbeKind::Invalid(format!("invalid http method {method:?}")),
            }
        }
        (other, _) => {
            ProbeKind::Invalid(format!("unsupported check type {other:?}: use tcp or http"))
        }
    };
    let duration =
        |d: Option<godwit_types::duration::Duration>, default: Duration| d.map_or(default, |d| d.0);
    Probe {
        name,
        kind,
        addr: SocketAddr::new(ip, port.unwrap_or_default()),
        interval: duration(check.interval, DEFAULT_INTERVAL).max(MIN_INTERVAL),
        timeout: duration(check.timeout, DEFAULT_TIMEOUT),
        grace: duration(check.grace_period, Duration::ZERO),
    }
}

/// The checks task: every check probed on its own schedule until cancelled.
async fn run(
    agent: Arc<Agent>,
    id: String,
    generation: u64,
    probes: Vec<Probe>,
    cancel: CancellationToken,
) {
    let http = match probe::http_client() {
        Ok(http) => Some(http),
        Err(error) => {
            tracing::warn!(%error, "failed to build the http client of health checks");
            None
        }
    };
    let started = Instant::now();
    let loops = probes.iter().enumerate().map(|(idx, probe)| {
        check_loop(&agent, &id, generation, idx, probe, http.as_ref(), started)
    });
    tokio::select! {
        () = cancel.cancelled() => {}
        _ = futures::future::join_all(loops) => {}
    }
    debug!("checks stopped");
}

async fn check_loop(
    agent: &Agent,
    id: &str,
    generation: u64,
    idx: usize,
    probe: &Probe,
    http: Option<&reqwest::Client>,
    started: Instant,
) {
    let grace_end = started + probe.grace;
    loop {
        let outcome = probe.run(http).await;
        let in_grace = Instant::now() < grace_end;
        let (status, output) = match outcome {
            Ok(output) => (CheckStatus::Passing, output),
            Err(_) if in_grace => (CheckStatus::Warning, WAITING.to_owned()),
            Err(output) => (CheckStatus::Critical, output),
        };
        if agent
            .checks
            .record(id, generation, idx, status, output.clone())
        {
            info!(check = %probe.name, ?status, %output, "check status changed");
            agent.publisher.mark_machine(id);
        }
        let pause = if in_grace && status != CheckStatus::Passing {
            probe.interval.min(GRACE_RETRY)
        } else {
            probe.interval
        };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests;
