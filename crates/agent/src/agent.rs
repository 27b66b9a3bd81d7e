//! The agent's shared state and its startup sequence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use godwit_image::{ImageStore, PullOptions};
use godwit_runtime::{MachineRuntime, OciConfig, OciRuntime};
use godwit_types::{EventRequest, MachineEvent, MachineState};
use tokio::sync::{OwnedMutexGuard, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::db::{Db, DbError};
use crate::ipam::Subnet;
use crate::ops::OpKind;
use crate::publish::Publisher;
use crate::{AgentConfig, RunError};

/// Everything the agent's tasks and handlers share.
#[derive(Debug)]
pub(crate) struct Agent {
    pub(crate) cfg: AgentConfig,
    pub(crate) db: Db,
    pub(crate) runtime: Arc<dyn MachineRuntime>,
    pub(crate) images: ImageStore,
    pub(crate) pull_opts: PullOptions,
    pub(crate) subnet: Subnet,
    /// Bearer token the API must present.
    pub(crate) token: String,
    pub(crate) publisher: Publisher,
    /// Long-lived tasks (operations, monitors, publisher, registration).
    pub(crate) tasks: TaskTracker,
    pub(crate) cancel: CancellationToken,
    /// Serialises address allocation with machine row inserts.
    pub(crate) ip_lock: Mutex<()>,
    /// Serialises lease check-and-set (no await while held).
    pub(crate) lease_lock: Mutex<()>,
    crash_at: Option<(OpKind, String)>,
    locks: Mutex<HashMap<String, LockEntry>>,
    pub(crate) monitors: Mutex<HashMap<String, crate::monitor::MonitorHandle>>,
    /// Health check results of started machines.
    pub(crate) checks: crate::checks::Checks,
    watchers: Mutex<HashMap<String, watch::Sender<Snapshot>>>,
}

/// What `wait` looks at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) state: MachineState,
    pub(crate) instance_id: String,
    pub(crate) version: u64,
}

/// Holding this means no other operation runs on the machine.
#[derive(Debug)]
pub(crate) struct MachineGuard {
    _guard: OwnedMutexGuard<()>,
}

/// The machine is busy with another operation.
#[derive(Debug)]
pub(crate) struct Busy {
    pub(crate) op: &'static str,
}

#[derive(Debug, Clone)]
struct LockEntry {
    mutex: Arc<tokio::sync::Mutex<()>>,
    busy_with: Arc<Mutex<&'static str>>,
}

/// Runs the agent (see [`crate::run`]).
pub(crate) async fn run(
    cfg: AgentConfig,
    crash_at: Option<String>,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> Result<(), RunError> {
    let agent = Arc::new(Agent::open(cfg, crash_at, cancel.clone())?);
    info!(host_id = %agent.cfg.host_id, "agent starting");
    agent.tasks.spawn(crate::publish::run(agent.clone()));

    crate::ops::recover(&agent).await;
    crate::monitor::recover(&agent).await;
    sweep_orphans(&agent).await;
    match agent.db.list_machines(None) {
        Ok(rows) => rows
            .iter()
            .for_each(|m| agent.publisher.mark_machine(&m.id)),
        Err(error) => warn!(%error, "failed to list machines to publish"),
    }
    agent.publisher.mark_host();
    agent.tasks.spawn(crate::register::run(agent.clone()));

    info!(addr = ?listener.local_addr().ok(), "agent serving");
    let router = crate::http::router(agent.clone());
    let shutdown = cancel.clone();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    cancel.cancel();
    crate::monitor::stop_all(&agent);
    agent.tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), agent.tasks.wait())
        .await
        .is_err()
    {
        warn!("agent tasks did not finish within 10s of shutdown");
    }
    info!("agent stopped");
    served.map_err(RunError::Serve)
}

/// Removes runtime resources of machines the database does not know.
async fn sweep_orphans(agent: &Agent) {
    let ids = match agent.runtime.list().await {
        Ok(ids) => ids,
        Err(error) => {
            warn!(%error, "failed to list runtime machines for the orphan sweep");
            return;
        }
    };
    for id in ids {
        match agent.db.get_machine(&id) {
            Ok(Some(_)) => {}
            Ok(None) => {
                info!(machine_id = %id, "destroying orphaned machine resources");
                if let Err(error) = agent.runtime.destroy(&id).await {
                    warn!(machine_id = %id, %error, "failed to destroy orphan");
                }
            }
            Err(error) => warn!(machine_id = %id, %error, "failed to read machine"),
        }
    }
}

// === impl Agent ===

impl Agent {
    fn open(
        cfg: AgentConfig,
        crash_at: Option<String>,
        cancel: CancellationToken,
    ) -> Result<Self, RunError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| RunError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let subnet: Subnet = cfg.subnet.parse().map_err(RunError::Config)?;
        let crash_at = crash_at.map(|s| parse_crash_at(&s)).transpose()?;
        let token = crate::register::load_or_create_token(&cfg.data_dir)?;
        let db = Db::open(&cfg.data_dir.join("agent.db"))?;
        let mut oci = OciConfig::under(&cfg.data_dir, cfg.shim.clone());
        oci.runc = cfg.runc.clone();
        oci.name_prefix = cfg.name_prefix.clone();
        let runtime = OciRuntime::new(oci)?;
        let images = ImageStore::open(cfg.data_dir.join("images"))?;
        let pull_opts = PullOptions {
            insecure_registries: cfg.insecure_registries.clone(),
            ..PullOptions::default()
        };
        Ok(Self {
            cfg,
            db,
            runtime: Arc::new(runtime),
            images,
            pull_opts,
            subnet,
            token,
            publisher: Publisher::default(),
            tasks: TaskTracker::new(),
            cancel,
            ip_lock: Mutex::new(()),
            lease_lock: Mutex::new(()),
            crash_at,
            locks: Mutex::new(HashMap::new()),
            monitors: Mutex::new(HashMap::new()),
            checks: crate::checks::Checks::default(),
            watchers: Mutex::new(HashMap::new()),
        })
    }

    /// Takes the machine's operation lock, waiting at most `wait`.
    pub(crate) async fn lock_machine(
        &self,
        id: &str,
        op: &'static str,
        wait: Duration,
    ) -> Result<MachineGuard, Busy> {
        let entry = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            locks
                .entry(id.to_owned())
                .or_insert_with(|| LockEntry {
                    mutex: Arc::new(tokio::sync::Mutex::new(())),
                    busy_with: Arc::new(Mutex::new("")),
                })
                .clone()
        };
        match tokio::time::timeout(wait, entry.mutex.lock_owned()).await {
            Ok(guard) => {
                *entry
                    .busy_with
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = op;
                Ok(MachineGuard { _guard: guard })
            }
            Err(_) => Err(Busy {
                op: *entry
                    .busy_with
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            }),
        }
    }

    /// Call after every change to a machine: wakes waiters and queues a publish.
    pub(crate) fn changed(&self, id: &str) {
        let snapshot = match self.db.get_machine(id) {
            Ok(Some(row)) => Snapshot {
                state: row.state,
                instance_id: row.instance_id,
                version: row.version,
            },
            Ok(None) => Snapshot {
                state: MachineState::Destroyed,
                instance_id: String::new(),
                version: 0,
            },
            Err(error) => {
                warn!(machine_id = %id, %error, "failed to read machine after a change");
                return;
            }
        };
        let destroyed = snapshot.state == MachineState::Destroyed;
        {
            let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(tx) = watchers.get(id) {
                tx.send_replace(snapshot);
            }
            if destroyed {
                watchers.remove(id);
            }
        }
        self.publisher.mark_machine(id);
    }

    /// A receiver of the machine's state; `None` if it does not exist.
    pub(crate) fn watch(&self, id: &str) -> Result<Option<watch::Receiver<Snapshot>>, DbError> {
        let Some(row) = self.db.get_machine(id)? else {
            return Ok(None);
        };
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = watchers.entry(id.to_owned()).or_insert_with(|| {
            watch::channel(Snapshot {
                state: row.state,
                instance_id: row.instance_id.clone(),
                version: row.version,
            })
            .0
        });
        Ok(Some(tx.subscribe()))
    }

    pub(crate) fn set_state(&self, id: &str, state: MachineState) -> Result<(), DbError> {
        self.db.set_state(id, state)?;
        info!(machine_id = %id, %state, "machine state");
        self.changed(id);
        Ok(())
    }

    /// Appends an event to the machine's log (failures are logged, not returned).
    pub(crate) fn event(
        &self,
        id: &str,
        kind: &str,
        status: &str,
        source: &str,
        request: Option<EventRequest>,
    ) {
        let event = MachineEvent {
            id: 0,
            kind: kind.to_owned(),
            status: status.to_owned(),
            source: source.to_owned(),
            timestamp: godwit_types::now_ms(),
            request,
        };
        if let Err(error) = self.db.insert_event(id, &event) {
            warn!(machine_id = %id, %error, "failed to record event");
        }
    }

    /// The failpoint: SIGKILLs this process after `kind`'s `step` when configured to.
    pub(crate) fn maybe_crash(&self, kind: OpKind, step: &str) {
        if self
            .crash_at
            .as_ref()
            .is_some_and(|(k, s)| *k == kind && s == step)
        {
            warn!(
                op = kind.as_str(),
                step, "failpoint: killing the agent with SIGKILL"
            );
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
            std::process::abort();
        }
    }
}

fn parse_crash_at(s: &str) -> Result<(OpKind, String), RunError> {
    let bad = || {
        RunError::Config(format!(
            "{} = {s:?} is not \"<op>:<step>\" naming a known step: {}",
            crate::CRASH_AT_ENV,
            crate::ops::OP_STEPS
                .iter()
                .map(|(op, steps)| format!("{op}: {}", steps.join(",")))
                .collect::<Vec<_>>()
                .join("; ")
        ))
    };
    let (op, step) = s.split_once(':').ok_or_else(bad)?;
    let kind: OpKind = op.parse().map_err(|_| bad())?;
    if !kind.steps().contains(&step) {
        return Err(bad());
    }
    Ok((kind, step.to_owned()))
}
