//! Waiting for a machine to be started (and its checks to pass), failing at once when it exits.

use std::fmt::Write as _;
use std::time::Duration;

use godwit_types::{CheckStatus, Machine, MachineEvent, MachineState};
use tokio::time::Instant;

use crate::client::ApiClient;
use crate::output::{self, Progress};

/// How often the machine is looked at.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What "ready" means for one machine.
#[derive(Debug, Clone, Copy)]
pub(super) struct Goal {
    /// Also wait for every configured check to pass.
    pub(super) checks: bool,
    pub(super) timeout: Duration,
}

/// A machine whose events before this point are old news.
#[derive(Debug, Clone)]
pub(super) struct Watched {
    pub(super) id: String,
    /// Exit events with an id at most this happened before we acted.
    pub(super) last_event_id: u64,
    /// The instance the machine must be running (the one an update made); `None`: any.
    pub(super) instance_id: Option<String>,
}

/// The highest event id of a machine now (0 if it has none).
pub(super) async fn last_event_id(client: &ApiClient, app: &str, id: &str) -> u64 {
    client
        .events(app, id)
        .await
        .map(|events| events.iter().map(|e| e.id).max().unwrap_or(0))
        .unwrap_or(0)
}

/// Polls the machine (the API's `wait`, then `GET machine` and its events) until it is started
/// (and healthy, if asked), or fails at once with the exit event and the last log lines if it
/// exits, fails or is destroyed.
pub(super) async fn until_ready(
    client: &ApiClient,
    app: &str,
    watched: &Watched,
    goal: Goal,
    progress: &Progress,
) -> anyhow::Result<Machine> {
    let id = watched.id.as_str();
    let deadline = Instant::now() + goal.timeout;
    let mut started_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(POLL_EVERY);
    loop {
        tick.tick().await;
        // Blocks up to a second on the API; a 408 just means "not yet".
        let _ = client.wait_state(app, id, "started", 1).await;
        let machine = client.get_machine(app, id).await?;
        let events = client.events(app, id).await.unwrap_or_default();
        if let Some(exit) = new_exit(&events, watched.last_event_id) {
            return Err(failure(client, app, &machine, Some(exit)).await);
        }
        if matches!(
            machine.state,
            MachineState::Failed | MachineState::Destroying | MachineState::Destroyed
        ) {
            return Err(failure(client, app, &machine, None).await);
        }
        let current = watched
            .instance_id
            .as_ref()
            .is_none_or(|want| *want == machine.instance_id);
        if machine.state == MachineState::Started && current {
            let since = *started_at.get_or_insert_with(Instant::now);
            if !goal.checks {
                return Ok(machine);
            }
            match check_progress(&machine) {
                Checks::Passing => return Ok(machine),
                Checks::NoResults if since.elapsed() >= no_results_grace(&machine) => {
                    output::warn(format!(
                        "machine {id} reported no check results within {}: not waiting for checks",
                        humantime::format_duration(no_results_grace(&machine))
                    ));
                    return Ok(machine);
                }
                Checks::NoResults => {
                    progress.step(format!("machine {id} started, waiting for checks"))
                }
                Checks::Pending(summary) => {
                    progress.step(format!("machine {id} started, checks: {summary}"));
                }
            }
        } else {
            progress.step(format!(
                "waiting for machine {id} to start (now {})",
                machine.state
            ));
        }
        if Instant::now() >= deadline {
            let detail = match machine.state {
                MachineState::Started => {
                    format!("its checks did not pass: {}", check_details(&machine))
                }
                state => format!("it is still {state}"),
            };
            anyhow::bail!(
                "machine {id} was not ready within {}: {detail}",
                humantime::format_duration(goal.timeout)
            );
        }
    }
}

/// How long after start the first check results must have come: every check's grace period,
/// two intervals and a timeout (the reference system's defaults where unset).
fn no_results_grace(machine: &Machine) -> Duration {
    let services = machine.config.services.iter().flat_map(|s| s.checks.iter());
    services
        .chain(machine.config.checks.values())
        .map(|c| {
            let get = |d: Option<godwit_types::duration::Duration>, default: u64| {
                d.map_or(Duration::from_secs(default), |d| d.0)
            };
            get(c.grace_period, 0) + get(c.interval, 15) * 2 + get(c.timeout, 2)
        })
        .max()
        .unwrap_or_default()
}

enum Checks {
    Passing,
    NoResults,
    Pending(String),
}

fn check_progress(machine: &Machine) -> Checks {
    let configured = machine.config.checks.len()
        + machine
            .config
            .services
            .iter()
            .map(|s| s.checks.len())
            .sum::<usize>();
    if configured == 0 {
        return Checks::Passing;
    }
    if machine.checks.is_empty() {
        return Checks::NoResults;
    }
    let passing = machine
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Passing)
        .count();
    if passing == machine.checks.len() && machine.checks.len() >= configured {
        Checks::Passing
    } else {
        Checks::Pending(format!("{passing}/{configured} passing"))
    }
}

fn check_details(machine: &Machine) -> String {
    if machine.checks.is_empty() {
        return "no results".into();
    }
    let parts: Vec<String> = machine
        .checks
        .iter()
        .map(|c| {
            let status = serde_json::to_value(c.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("{} {status} {}", c.name, c.output.trim())
        })
        .collect();
    parts.join("; ")
}

/// The first exit the machine did not ask for since `after`.
fn new_exit(events: &[MachineEvent], after: u64) -> Option<&MachineEvent> {
    events.iter().filter(|e| e.id > after).find(|e| {
        let requested = e
            .request
            .as_ref()
            .and_then(|r| r.exit_event.as_ref())
            .is_some_and(|x| x.requested_stop);
        (e.kind == "exit" || e.kind == "oom") && !requested
    })
}

/// Describes the exit, with the machine's last 20 log lines.
async fn failure(
    client: &ApiClient,
    app: &str,
    machine: &Machine,
    exit: Option<&MachineEvent>,
) -> anyhow::Error {
    let mut text = match exit
        .and_then(|e| e.request.as_ref())
        .and_then(|r| r.exit_event.as_ref())
    {
        Some(x) => {
            let mut s = format!("machine {} exited with code {}", machine.id, x.exit_code);
            if let Some(sig) = x.signal {
                let _ = write!(s, " (signal {})", godwit_types::signal::name(sig));
            }
            if x.oom_killed {
                s.push_str(", killed for running out of memory");
            }
            let _ = write!(s, "; it is now {}", machine.state);
            s
        }
        None => format!("machine {} is {}", machine.id, machine.state),
    };
    if let Some(e) = exit {
        let _ = write!(
            text,
            "\nexit event: {} {} at {}",
            e.kind,
            e.status,
            output::timestamp(e.timestamp)
        );
    }
    let mut lines = Vec::new();
    let logs = client
        .logs(app, Some(&machine.id), false, Some(20), |l| lines.push(l))
        .await;
    match logs {
        Ok(()) if lines.is_empty() => text.push_str("\n(no log lines)"),
        Ok(()) => {
            text.push_str("\nlast log lines:");
            for l in lines {
                let _ = write!(text, "\n  {} {}", output::timestamp(l.timestamp), l.message);
            }
        }
        Err(e) => {
            let _ = write!(text, "\n(could not fetch logs: {e})");
        }
    }
    anyhow::anyhow!(text)
}
