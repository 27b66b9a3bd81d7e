//! The world's long-running processes: each runs in one node's netns and logs to
//! `<data dir>/logs/<node>-<name>.log`.
//!
//! They enter the netns with `nsenter --net` rather than `ip netns exec`: the latter also
//! unshares the mount namespace, so the machine namespaces and overlay mounts an agent makes
//! would be invisible outside it and could not be cleaned up from here.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a daemon gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running daemon, killed on drop.
#[derive(Debug)]
pub(super) struct Daemon {
    /// `<node>-<name>`, e.g. `syd-1-agent`.
    pub(super) label: String,
    pub(super) log: PathBuf,
    child: Option<Child>,
}

// === impl Daemon ===

impl Daemon {
    /// Starts `program args` in the netns at `netns_path`, stdout and stderr to `log`.
    pub(super) fn spawn(
        label: String,
        netns_path: &Path,
        log: PathBuf,
        program: &Path,
        args: &[impl AsRef<OsStr>],
    ) -> io::Result<Daemon> {
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let mut net_arg = std::ffi::OsString::from("--net=");
        net_arg.push(netns_path);
        let child = Command::new("nsenter")
            .arg(net_arg)
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        tracing::info!(daemon = %label, pid = child.id(), "started");
        Ok(Daemon {
            label,
            log,
            child: Some(child),
        })
    }

    /// Whether the process still runs.
    pub(super) fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// The last `n` lines of its log.
    pub(super) fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    /// SIGTERM, then SIGKILL if it has not exited within [`STOP_GRACE`]; reaps it.
    pub(super) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            // Already gone is fine: `wait` below reaps it either way.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => break,
                // Polling the exit with a deadline.
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        tracing::warn!(daemon = %self.label, "did not stop on SIGTERM, killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last `n` lines of a log file.
pub(super) fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `name` found on `PATH` (or in /usr/sbin, /sbin).
pub(super) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
