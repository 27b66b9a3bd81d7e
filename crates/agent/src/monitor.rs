//! Exit monitors: one task per started machine awaits its exit, records an `exit` event and
//! applies the restart policy (under the machine's lock, so it never races an operation).
//! A machine's health checks run exactly while its monitor does (started with it, restarted
//! with the machine, stopped and cleared with it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use godwit_runtime::{ExitInfo, Status};
use godwit_types::{EventRequest, ExitEvent, MachineState, RestartPolicy};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::agent::Agent;
use crate::ops::OpError;

/// Restarts are counted within this window.
const RESTART_WINDOW: Duration = Duration::from_secs(300);
const DEFAULT_MAX_RETRIES: u32 = 10;

static GENERATION: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub(crate) struct MonitorHandle {
    generation: u64,
    cancel: CancellationToken,
    abort: tokio::task::AbortHandle,
}

enum Outcome {
    Restarted,
    Done { auto_destroy: bool },
}

/// Starts (or replaces) the machine's exit monitor.
pub(crate) fn spawn(agent: &Arc<Agent>, id: &str) {
    stop(agent, id);
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let cancel = agent.cancel.child_token();
    let span = info_span!(parent: None, "monitor", machine_id = %id);
    let task = agent
        .tasks
        .spawn(watch(agent.clone(), id.to_owned(), generation, cancel.clone()).instrument(span));
    let handle = MonitorHandle {
        generation,
        cancel,
        abort: task.abort_handle(),
    };
    agent
        .monitors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.to_owned(), handle);
    crate::checks::start(agent, id);
}

/// Stops the machine's exit monitor, if any. Call with the machine's lock held.
pub(crate) fn stop(agent: &Agent, id: &str) {
    let handle = agent
        .monitors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(id);
    if let Some(handle) = handle {
        handle.cancel.cancel();
        handle.abort.abort();
    }
    crate::checks::stop(agent, id);
}

pub(crate) fn stop_all(agent: &Agent) {
    let handles: Vec<_> = agent
        .monitors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .collect();
    for (_, handle) in handles {
        handle.cancel.cancel();
        handle.abort.abort();
    }
    crate::checks::stop_all(agent);
}

/// After startup recovery: watch every started machine, and bring started machines whose
/// process is gone back in line with their restart policy.
pub(crate) async fn recover(agent: &Arc<Agent>) {
    let rows = match agent.db.list_machines(None) {
        Ok(rows) => rows,
        Err(error) => {
            warn!(%error, "failed to list machines to monitor");
            return;
        }
    };
    for row in rows {
        let id = row.id.as_str();
        let status = agent.runtime.status(id).await;
        let running = matches!(status, Ok(Status::Running { .. }));
        let paused = matches!(status, Ok(Status::Paused { .. }));
        let result = match row.state {
            MachineState::Started => match status {
                Ok(Status::Running { .. } | Status::Exited(_)) => {
                    spawn(agent, id);
                    Ok(())
                }
                // Frozen by something other than a suspend: started means running.
                Ok(Status::Paused { .. }) => resume_again(agent, id).await,
                _ => start_again(agent, id).await,
            },
            // No operation is in flight (they were all resumed), so a transitional state is
            // left over from a failed write: settle it from what the runtime says. A
            // suspended machine whose process is gone (host reboot) is stopped.
            MachineState::Starting
            | MachineState::Stopping
            | MachineState::Updating
            | MachineState::Restarting
            | MachineState::Suspending
            | MachineState::Suspended => {
                let state = if running {
                    MachineState::Started
                } else if paused {
                    MachineState::Suspended
                } else {
                    MachineState::Stopped
                };
                let result = if state == row.state {
                    Ok(())
                } else {
                    agent.set_state(id, state).map_err(OpError::from)
                };
                if running {
                    spawn(agent, id);
                }
                result
            }
            MachineState::Creating | MachineState::Destroying => {
                crate::ops::destroy_in_background(agent, id);
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(error) = result {
            warn!(machine_id = %id, error = %crate::ops::error_chain(&error), "failed to recover machine");
        }
    }
}

async fn resume_again(agent: &Arc<Agent>, id: &str) -> Result<(), OpError> {
    info!(machine_id = %id, "machine should be started but is paused; resuming it");
    agent.runtime.resume(id).await?;
    spawn(agent, id);
    Ok(())
}

async fn start_again(agent: &Arc<Agent>, id: &str) -> Result<(), OpError> {
    info!(machine_id = %id, "machine should be started but is not running; starting it");
    crate::ops::ensure_prepared(agent, id).await?;
    agent.runtime.start(id).await?;
    spawn(agent, id);
    Ok(())
}

async fn watch(agent: Arc<Agent>, id: String, generation: u64, cancel: CancellationToken) {
    loop {
        let exit = match agent.runtime.status(&id).await {
            Ok(Status::Exited(exit)) => Ok(exit),
            _ => {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    exit = agent.runtime.wait_exit(&id) => exit,
                }
            }
        };
        let exit = match exit {
            Ok(exit) => exit,
            Err(error) => {
                warn!(%error, "failed to wait for the machine's exit");
                return;
            }
        };
        let guard = tokio::select! {
            () = cancel.cancelled() => return,
            guard = agent.lock_machine(&id, "restart", Duration::from_secs(3600)) => guard,
        };
        let Ok(_guard) = guard else { return };
        if cancel.is_cancelled() {
            return;
        }
        match handle_exit(&agent, &id, &exit).await {
            Ok(Outcome::Restarted) => {
                crate::checks::start(&agent, &id);
                continue;
            }
            Ok(Outcome::Done { auto_destroy }) => {
                forget(&agent, &id, generation);
                if auto_destroy {
                    crate::ops::destroy_in_background(&agent, &id);
                }
                return;
            }
            Err(error) => {
                warn!(error = %crate::ops::error_chain(&error), "failed to handle the machine's exit");
                if let Err(error) = agent.set_state(&id, MachineState::Failed) {
                    warn!(%error, "failed to mark the machine failed");
                }
                forget(&agent, &id, generation);
                return;
            }
        }
    }
}

/// Removes this monitor from the map (and stops the machine's checks) unless a newer one
/// replaced it.
fn forget(agent: &Agent, id: &str, generation: u64) {
    let current = {
        let mut monitors = agent
            .monitors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = monitors.get(id).is_some_and(|h| h.generation == generation);
        if current {
            monitors.remove(id);
        }
        current
    };
    if current {
        crate::checks::stop(agent, id);
    }
}

async fn handle_exit(agent: &Arc<Agent>, id: &str, exit: &ExitInfo) -> Result<Outcome, OpError> {
    let Some(row) = agent.db.get_machine(id)? else {
        return Ok(Outcome::Done {
            auto_destroy: false,
        });
    };
    if row.state != MachineState::Started {
        return Ok(Outcome::Done {
            auto_destroy: false,
        });
    }
    let restart = &row.config.restart;
    let max_retries = restart.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);
    let failed = exit.exit_code != 0 || exit.oom_killed;
    let now = godwit_types::now_ms();
    let window_ms = u64::try_from(RESTART_WINDOW.as_millis()).unwrap_or(u64::MAX);
    let (count, window_start) = if now.saturating_sub(row.restart_window_ms) > window_ms {
        (0, now)
    } else {
        (row.restart_count, row.restart_window_ms)
    };
    let restarting = match restart.policy {
        RestartPolicy::No => false,
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => failed && count < max_retries,
    };
    info!(exit_code = exit.exit_code, signal = ?exit.signal, oom = exit.oom_killed, restarting, "machine exited");
    let request = EventRequest {
        exit_event: Some(ExitEvent {
            exit_code: exit.exit_code,
            signal: exit.signal,
            oom_killed: exit.oom_killed,
            requested_stop: false,
            restarting,
            exited_at: exit.exited_at_ms,
        }),
        restart_count: Some(count),
    };
    let status = if restarting { "restarting" } else { "stopped" };
    agent.event(id, "exit", status, "godwit", Some(request));
    if exit.oom_killed {
        agent.event(id, "oom", "killed", "godwit", None);
    }
    if restarting {
        agent.db.set_restarts(id, count + 1, window_start)?;
        agent.runtime.start(id).await?;
        agent.event(
            id,
            "restart",
            "started",
            "godwit",
            Some(EventRequest {
                exit_event: None,
                restart_count: Some(count + 1),
            }),
        );
        agent.changed(id);
        return Ok(Outcome::Restarted);
    }
    let exhausted = restart.policy == RestartPolicy::OnFailure && failed;
    let state = if exhausted {
        MachineState::Failed
    } else {
        MachineState::Stopped
    };
    agent.set_state(id, state)?;
    Ok(Outcome::Done {
        auto_destroy: row.config.auto_destroy,
    })
}
