//! Operations as persisted state machines.
//!
//! Each kind is a fixed list of idempotent steps ([`OP_STEPS`]). The current step is written
//! to the operation's row before it runs; after it ran the next step is written, and the row
//! is deleted when the last step is done. On startup every remaining row is resumed from its
//! step (a failed step rolls the operation back instead). One operation runs per machine at a
//! time: callers hold the machine's lock for the whole operation.

use std::sync::Arc;
use std::time::Duration;

use godwit_types::MachineState;
use tracing::{Instrument, info, info_span, warn};

use crate::agent::{Agent, MachineGuard};
use crate::db::{DbError, OpRow};

mod create;
mod kept_logs;
mod lifecycle;
mod update;

pub(crate) use create::CreatePayload;
pub(crate) use lifecycle::{StartPayload, StopPayload};
pub(crate) use update::UpdatePayload;

/// Every operation kind and its steps, in order.
pub const OP_STEPS: &[(&str, &[&str])] = &[
    ("create", create::STEPS),
    ("start", lifecycle::START_STEPS),
    ("stop", lifecycle::STOP_STEPS),
    ("suspend", lifecycle::SUSPEND_STEPS),
    ("update", update::STEPS),
    ("destroy", lifecycle::DESTROY_STEPS),
];

/// How long an operation waits for another one on the same machine before answering busy.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Create,
    Start,
    Stop,
    Suspend,
    Update,
    Destroy,
}

/// Why an operation failed (it has been rolled back when this is returned).
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpError {
    #[error("failed to pull image {image:?}")]
    Pull {
        image: String,
        #[source]
        source: godwit_image::ImageError,
    },
    #[error("no free address left in subnet {0}: use a larger subnet")]
    NoAddress(String),
    #[error("machine {0} does not exist")]
    Gone(String),
    #[error("machine runtime failed")]
    Runtime(#[from] godwit_runtime::RuntimeError),
    #[error("agent database failed")]
    Db(#[from] DbError),
    #[error("corrupt operation payload")]
    Payload(#[from] serde_json::Error),
    #[error("operation task failed")]
    Join(#[from] tokio::task::JoinError),
}

// === impl OpKind ===

impl OpKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Suspend => "suspend",
            Self::Update => "update",
            Self::Destroy => "destroy",
        }
    }

    pub(crate) fn steps(self) -> &'static [&'static str] {
        match self {
            Self::Create => create::STEPS,
            Self::Start => lifecycle::START_STEPS,
            Self::Stop => lifecycle::STOP_STEPS,
            Self::Suspend => lifecycle::SUSPEND_STEPS,
            Self::Update => update::STEPS,
            Self::Destroy => lifecycle::DESTROY_STEPS,
        }
    }

    fn next_step(self, step: &str) -> Option<&'static str> {
        let steps = self.steps();
        let idx = steps.iter().position(|s| *s == step)?;
        steps.get(idx + 1).copied()
    }
}

impl std::str::FromStr for OpKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Create,
            Self::Start,
            Self::Stop,
            Self::Suspend,
            Self::Update,
            Self::Destroy,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or(())
    }
}

/// Persists a new operation and runs it to completion in a tracked task (so a dropped HTTP
/// request does not cancel it), keeping `guard` until it ends.
pub(crate) async fn execute(
    agent: &Arc<Agent>,
    guard: MachineGuard,
    machine_id: &str,
    kind: OpKind,
    payload: serde_json::Value,
) -> Result<(), OpError> {
    let first = kind.steps().first().copied().unwrap_or_default();
    let op = agent.db.insert_op(machine_id, kind, first, &payload)?;
    let task_agent = agent.clone();
    let handle = agent.tasks.spawn(async move {
        let _guard = guard;
        drive(&task_agent, op).await
    });
    handle.await?
}

/// Runs `op` from its current step to the end (or rolls it back on failure).
async fn drive(agent: &Arc<Agent>, mut op: OpRow) -> Result<(), OpError> {
    let span = info_span!("op", op = op.kind.as_str(), machine_id = %op.machine_id);
    async move {
        loop {
            agent.db.set_op_step(op.id, &op.step)?;
            let result = match op.kind {
                OpKind::Create => create::step(agent, &op).await,
                OpKind::Update => update::step(agent, &mut op).await,
                OpKind::Start | OpKind::Stop | OpKind::Suspend | OpKind::Destroy => {
                    lifecycle::step(agent, &op).await
                }
            };
            if let Err(error) = result {
                warn!(step = %op.step, error = %error_chain(&error), "operation failed; rolling back");
                match op.kind {
                    OpKind::Create => create::rollback(agent, &op).await,
                    OpKind::Update => update::rollback(agent, &op).await,
                    _ => lifecycle::rollback(agent, &op).await,
                }
                agent.db.delete_op(op.id)?;
                return Err(error);
            }
            agent.maybe_crash(op.kind, &op.step);
            match op.kind.next_step(&op.step) {
                Some(next) => op.step = next.to_owned(),
                None => {
                    agent.db.delete_op(op.id)?;
                    info!("operation done");
                    return Ok(());
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Resumes every operation left by an earlier agent process, oldest first.
pub(crate) async fn recover(agent: &Arc<Agent>) {
    let ops = match agent.db.list_ops() {
        Ok(ops) => ops,
        Err(error) => {
            warn!(%error, "failed to list interrupted operations");
            return;
        }
    };
    for op in ops {
        info!(machine_id = %op.machine_id, op = op.kind.as_str(), step = %op.step, "resuming operation");
        let Ok(guard) = agent
            .lock_machine(&op.machine_id, op.kind.as_str(), LOCK_WAIT)
            .await
        else {
            continue;
        };
        let _guard = guard;
        if let Err(error) = drive(agent, op).await {
            warn!(error = %error_chain(&error), "resumed operation failed");
        }
    }
}

/// Destroys a machine in the background (auto_destroy).
pub(crate) fn destroy_in_background(agent: &Arc<Agent>, id: &str) {
    let agent_task = agent.clone();
    let id = id.to_owned();
    agent.tasks.spawn(async move {
        let Ok(guard) = agent_task.lock_machine(&id, "destroy", LOCK_WAIT).await else {
            warn!(machine_id = %id, "auto-destroy skipped: machine is busy");
            return;
        };
        if let Err(error) = execute(
            &agent_task,
            guard,
            &id,
            OpKind::Destroy,
            serde_json::json!({}),
        )
        .await
        {
            warn!(machine_id = %id, error = %error_chain(&error), "auto-destroy failed");
        }
    });
}

/// Marks the machine per what the runtime says after a failed operation: running machines are
/// `started` (and watched), paused ones `suspended`, others get `otherwise`.
async fn settle(agent: &Arc<Agent>, id: &str, otherwise: MachineState) {
    let status = agent.runtime.status(id).await;
    let running = matches!(status, Ok(godwit_runtime::Status::Running { .. }));
    let state = match status {
        Ok(godwit_runtime::Status::Running { .. }) => MachineState::Started,
        Ok(godwit_runtime::Status::Paused { .. }) => MachineState::Suspended,
        _ => otherwise,
    };
    if let Err(error) = agent.set_state(id, state) {
        warn!(machine_id = %id, %error, "failed to record state after a failed operation");
    }
    if running {
        crate::monitor::spawn(agent, id);
    }
}

/// `error: cause: cause` on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The machine's row, or [`OpError::Gone`].
fn machine(agent: &Agent, id: &str) -> Result<crate::db::MachineRow, OpError> {
    agent
        .db
        .get_machine(id)?
        .ok_or_else(|| OpError::Gone(id.to_owned()))
}

/// Pulls `reference` through the image cache.
async fn pull(agent: &Agent, reference: &str) -> Result<godwit_image::Image, OpError> {
    agent
        .images
        .pull(reference, &agent.pull_opts)
        .await
        .map_err(|source| OpError::Pull {
            image: reference.to_owned(),
            source,
        })
}

/// Prepares the machine's bundle if the runtime has nothing for it (e.g. after a host reboot).
pub(crate) async fn ensure_prepared(agent: &Agent, id: &str) -> Result<(), OpError> {
    if agent.runtime.status(id).await? != godwit_runtime::Status::Absent {
        return Ok(());
    }
    let mut row = machine(agent, id)?;
    let layers_ok = row
        .image
        .as_ref()
        .is_some_and(|img| img.layers.iter().all(|l| l.is_dir()));
    if !layers_ok {
        let image = pull(agent, &row.config.image).await?;
        agent.db.set_image(id, &image)?;
        row.image = Some(image);
    }
    let spec = crate::spec::machine_spec(&row, &agent.cfg.host_id)
        .ok_or_else(|| OpError::Gone(id.to_owned()))?;
    agent.runtime.prepare(&spec).await?;
    Ok(())
}

/// A fresh instance id (changes with every version).
pub(crate) fn new_instance_id() -> String {
    format!("{:016X}", rand::random::<u64>())
}
