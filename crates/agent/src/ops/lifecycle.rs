//! `start`: start → started (a suspended machine is resumed). `stop`: signal → wait → stopped.
//! `suspend`: freeze → suspended (cgroup freezer; memory, rootfs and network stay).
//! `destroy`: kill → destroy → delete.

use std::sync::Arc;
use std::time::Duration;

use godwit_runtime::Status;
use godwit_types::{EventRequest, ExitEvent, MachineState};
use tracing::{debug, warn};

use super::{OpError, OpKind, ensure_prepared, settle};
use crate::agent::Agent;
use crate::db::OpRow;

pub(super) const START_STEPS: &[&str] = &["start", "started"];
pub(super) const STOP_STEPS: &[&str] = &["signal", "wait", "stopped"];
pub(super) const DESTROY_STEPS: &[&str] = &["kill", "destroy", "delete"];
pub(super) const SUSPEND_STEPS: &[&str] = &["freeze", "suspended"];

/// How to start.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct StartPayload {
    /// The machine was suspended: this start resumes it (event `resume`, restart count kept).
    #[serde(default)]
    pub(crate) resume: bool,
}

/// How to stop.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct StopPayload {
    pub(crate) signal: i32,
    pub(crate) timeout_ms: u64,
}

pub(super) async fn step(agent: &Arc<Agent>, op: &OpRow) -> Result<(), OpError> {
    let id = &op.machine_id;
    match (op.kind, op.step.as_str()) {
        (OpKind::Start, "start") => {
            let payload: StartPayload = serde_json::from_value(op.payload.clone())?;
            crate::monitor::stop(agent, id);
            ensure_prepared(agent, id).await?;
            agent.set_state(id, MachineState::Starting)?;
            if !payload.resume {
                agent.db.set_restarts(id, 0, 0)?;
            }
            // Resumes a paused machine; starts it again if its process is gone.
            agent.runtime.start(id).await?;
        }
        (OpKind::Start, "started") => {
            let payload: StartPayload = serde_json::from_value(op.payload.clone())?;
            agent.set_state(id, MachineState::Started)?;
            let kind = if payload.resume { "resume" } else { "start" };
            agent.event(id, kind, "started", "user", None);
            crate::monitor::spawn(agent, id);
        }
        (OpKind::Suspend, "freeze") => {
            // A frozen machine neither exits nor answers checks: no monitor, no checks.
            crate::monitor::stop(agent, id);
            agent.set_state(id, MachineState::Suspending)?;
            agent.runtime.pause(id).await?;
        }
        (OpKind::Suspend, "suspended") => {
            agent.set_state(id, MachineState::Suspended)?;
            agent.event(id, "suspend", "suspended", "user", None);
        }
        (OpKind::Stop, "signal") => {
            let payload: StopPayload = serde_json::from_value(op.payload.clone())?;
            crate::monitor::stop(agent, id);
            agent.set_state(id, MachineState::Stopping)?;
            // A suspended machine is thawed first, so that it can act on the signal.
            if let Err(error) = agent.runtime.resume(id).await {
                debug!(machine_id = %id, %error, "nothing to resume before the stop signal");
            }
            if let Err(error) = agent.runtime.signal(id, payload.signal).await {
                debug!(machine_id = %id, %error, "stop signal not delivered");
            }
        }
        (OpKind::Stop, "wait") => {
            let payload: StopPayload = serde_json::from_value(op.payload.clone())?;
            stop_run(
                agent,
                id,
                payload.signal,
                Duration::from_millis(payload.timeout_ms),
            )
            .await?;
        }
        (OpKind::Stop, "stopped") => {
            agent.set_state(id, MachineState::Stopped)?;
            agent.event(id, "stop", "stopped", "user", None);
        }
        (OpKind::Destroy, "kill") => {
            crate::monitor::stop(agent, id);
            agent.set_state(id, MachineState::Destroying)?;
            if let Err(error) = agent.runtime.signal(id, nix::libc::SIGKILL).await {
                debug!(machine_id = %id, %error, "kill not delivered");
            }
        }
        (OpKind::Destroy, "destroy") => agent.runtime.destroy(id).await?,
        (OpKind::Destroy, "delete") => {
            super::kept_logs::discard(agent, id);
            agent.db.delete_machine(id)?;
            agent.changed(id);
            agent.publisher.mark_host();
        }
        (kind, step) => warn!(op = kind.as_str(), step, "unknown step skipped"),
    }
    Ok(())
}

/// Stops the current run if there is one and records its exit as a requested stop.
pub(super) async fn stop_run(
    agent: &Agent,
    id: &str,
    signal: i32,
    timeout: Duration,
) -> Result<(), OpError> {
    let exit = match agent.runtime.status(id).await? {
        // Also returns the exit of a run that ends while this runs.
        Status::Running { .. } | Status::Paused { .. } | Status::Exited(_) => {
            agent.runtime.stop(id, signal, timeout).await?
        }
        Status::Absent | Status::Prepared => return Ok(()),
    };
    let request = EventRequest {
        exit_event: Some(ExitEvent {
            exit_code: exit.exit_code,
            signal: exit.signal,
            oom_killed: exit.oom_killed,
            requested_stop: true,
            restarting: false,
            exited_at: exit.exited_at_ms,
        }),
        restart_count: None,
    };
    agent.event(id, "exit", "stopped", "user", Some(request));
    Ok(())
}

pub(super) async fn rollback(agent: &Arc<Agent>, op: &OpRow) {
    let otherwise = match op.kind {
        OpKind::Stop | OpKind::Suspend => MachineState::Stopped,
        _ => MachineState::Failed,
    };
    agent.event(&op.machine_id, op.kind.as_str(), "failed", "godwit", None);
    settle(agent, &op.machine_id, otherwise).await;
}
