//! The dev cluster's processes: detached spawning, liveness and termination, all by pid.
//!
//! A pid is only ever signalled after checking that its command line names the data
//! directory, so a recycled pid of an unrelated process is never touched.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How a process ended when we asked it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// It exited within the grace period after SIGTERM.
    Terminated,
    /// It had to be SIGKILLed.
    Killed,
    /// It was not running.
    NotRunning,
}

/// Starts `program args` in its own session (setsid), stdin from /dev/null and stdout/stderr
/// appended to `log`, so it outlives this process and its terminal. Returns its pid.
pub(super) fn spawn_detached(program: &Path, args: &[&OsStr], log: &Path) -> anyhow::Result<u32> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open log file {}", log.display()))?;
    let stderr = log_file
        .try_clone()
        .with_context(|| format!("duplicate log file {}", log.display()))?;
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(stderr);
    new_session(&mut command);
    let child = command
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    // The child is deliberately not waited for: it is a daemon, reparented to init when we exit.
    Ok(child.id())
}

#[allow(unsafe_code)]
fn new_session(command: &mut std::process::Command) {
    // SAFETY: the closure runs between fork and exec and calls only setsid(2), which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

/// Whether `pid` is a live (not zombie) process.
pub(super) fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: `pid (comm) S ...`; comm may contain spaces and parentheses, the state follows
    // the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Whether `pid` is alive and its command line mentions `marker` (the data directory).
pub(super) fn is_ours(pid: u32, marker: &Path) -> bool {
    is_alive(pid) && cmdline(pid).is_some_and(|line| line.contains(&*marker.to_string_lossy()))
}

/// Every live process (but this one) whose command line mentions `marker`: pid and command line.
pub(super) fn mentioning(marker: &Path) -> Vec<(u32, String)> {
    let marker = marker.to_string_lossy();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<(u32, String)> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && is_alive(pid))
        .filter_map(|pid| Some((pid, cmdline(pid)?)))
        .filter(|(_, line)| line.contains(&*marker))
        .collect();
    found.sort();
    found
}

/// Whether `pid` runs this very binary (a daemon or shim of ours) or a program named one of
/// `names`.
pub(super) fn runs_one_of(pid: u32, names: &[&str]) -> bool {
    let Some(exe) = exe_of(&pid.to_string()) else {
        return false;
    };
    exe_of("self").is_some_and(|me| me == exe)
        || exe
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| names.contains(&n))
}

/// The program `/proc/<pid>/exe` points at; a binary replaced on disk (rebuilt) shows as
/// "<path> (deleted)", which is stripped.
fn exe_of(pid: &str) -> Option<std::path::PathBuf> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = exe.to_string_lossy();
    Some(text.strip_suffix(" (deleted)").unwrap_or(&text).into())
}

/// The command line of `pid`, arguments joined by spaces.
pub(super) fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let line = raw
        .split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    Some(line)
}

/// Sends SIGTERM to `pid` (if it is ours), waits up to `grace` for it to exit, then SIGKILLs it.
pub(super) async fn terminate(pid: u32, marker: &Path, grace: Duration) -> Ended {
    if !is_ours(pid, marker) {
        return Ended::NotRunning;
    }
    send(pid, Signal::SIGTERM);
    if wait_gone(pid, grace).await {
        return Ended::Terminated;
    }
    send(pid, Signal::SIGKILL);
    wait_gone(pid, Duration::from_secs(5)).await;
    Ended::Killed
}

/// Waits up to `timeout` for `pid` (if ours) to exit by itself (it was asked to), then
/// [`terminate`]s it.
pub(super) async fn terminate_after(pid: u32, marker: &Path, timeout: Duration) -> Ended {
    if !is_ours(pid, marker) {
        return Ended::NotRunning;
    }
    if wait_gone(pid, timeout).await {
        return Ended::Terminated;
    }
    terminate(pid, marker, Duration::from_secs(10)).await
}

/// SIGKILLs `pid` and waits briefly for it to disappear.
pub(super) async fn kill_now(pid: u32) {
    send(pid, Signal::SIGKILL);
    wait_gone(pid, Duration::from_secs(5)).await;
}

fn send(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if let Err(error) = kill(Pid::from_raw(raw), signal) {
        tracing::debug!(pid, %error, ?signal, "signal failed");
    }
}

/// Polls until `pid` is gone or `timeout` passes; true when gone.
async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !is_alive(pid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
