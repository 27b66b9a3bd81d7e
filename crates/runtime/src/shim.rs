//! The shim: a small process per machine run, detached from the agent. It creates and starts
//! the container with runc, is the subreaper of its init, writes the output to the machine
//! log, reads the cgroup's OOM counter and records the exit in `exit.json`.
//!
//! `<shim> launch <dir>` double-forks `<shim> run <dir>` (in a new session) and returns at
//! once, so the supervising process is adopted by init and never becomes the agent's zombie.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::ExitInfo;
use crate::sys::{now_ms, write_atomic};

mod log;

use log::LogWriter;
pub(crate) use log::log_files;

/// Lines longer than this are split into several records.
const MAX_LINE: usize = 16 * 1024;
/// Exit code recorded when the container could not be created (runc's error is logged).
const NOT_STARTED_EXIT: i32 = 127;
/// Exit code recorded when the init's status could not be read.
const LOST_EXIT: i32 = 255;
/// Log stream of the shim's own messages (runc errors).
const RUNTIME_STREAM: &str = "runtime";
/// How long to wait for the output pipes to drain after runc exits.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What the runtime tells the shim, in `<dir>/shim.json`. The machine dir is the bundle.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ShimConfig {
    /// Program + leading args that run the shim again (for the double fork).
    pub(crate) shim: Vec<String>,
    pub(crate) runc: PathBuf,
    pub(crate) runc_root: PathBuf,
    pub(crate) container_id: String,
    pub(crate) log_max_bytes: u64,
    pub(crate) log_keep: usize,
    /// The container's cgroup v1 memory directory (for `memory.oom_control`).
    pub(crate) memory_cgroup: PathBuf,
}

/// Entry point of the shim process (the `godwit` binary exposes it as a hidden
/// `godwit shim ...` subcommand). `args` holds `launch <dir>` or `run <dir>`, possibly after
/// leading arguments (the program name, `shim`), which are skipped.
pub fn shim_main(args: Vec<String>) -> ExitCode {
    let Some(pos) = args.iter().position(|a| a == "launch" || a == "run") else {
        let _ = writeln!(io::stderr(), "usage: shim (launch|run) <machine dir>");
        return ExitCode::from(2);
    };
    let Some(dir) = args.get(pos + 1).map(PathBuf::from) else {
        let _ = writeln!(io::stderr(), "usage: shim (launch|run) <machine dir>");
        return ExitCode::from(2);
    };
    let result = if args[pos] == "launch" {
        launch(&dir)
    } else {
        run(&dir)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "godwit shim {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn read_config(dir: &Path) -> io::Result<ShimConfig> {
    let path = dir.join("shim.json");
    let bytes = std::fs::read(&path).map_err(|e| context(e, "read", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| context(e.into(), "parse", &path))
}

/// Starts `<shim> run <dir>` with stdio detached (stderr to `shim.log`) and returns.
fn launch(dir: &Path) -> io::Result<()> {
    let cfg = read_config(dir)?;
    let Some((program, lead)) = cfg.shim.split_first() else {
        return Err(io::Error::other("shim command in shim.json is empty"));
    };
    let log_path = dir.join("shim.log");
    let shim_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| context(e, "open", &log_path))?;
    // Not waited for on purpose: this process exits now and init adopts (and reaps) it.
    #[allow(clippy::zombie_processes)]
    std::process::Command::new(program)
        .args(lead)
        .arg("run")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(shim_log)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("spawn {program}: {e}")))?;
    Ok(())
}

/// Supervises one run of the container until it exits.
fn run(dir: &Path) -> io::Result<()> {
    // A new session: no controlling terminal, no signals aimed at the agent's group.
    let _ = nix::unistd::setsid();
    // The container's init is reparented to us when `runc create` exits, so we can reap it
    // and read its exact exit status.
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
    let cfg = read_config(dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(supervise(dir, cfg))
}

/// `runc create` (stdio pipes pass through to the container), `runc start`, reap the init,
/// read the cgroup's OOM counter while the cgroup still exists, `runc delete`, record the exit.
async fn supervise(dir: &Path, cfg: ShimConfig) -> io::Result<()> {
    let pid_path = dir.join("shim.pid");
    write_atomic(&pid_path, std::process::id().to_string().as_bytes())
        .map_err(|e| context(e, "write", &pid_path))?;
    let log = Arc::new(Mutex::new(LogWriter::open(
        &dir.join("logs"),
        cfg.log_max_bytes,
        cfg.log_keep,
    )?));
    let created_pid = dir.join("container.pid.created");
    let spawned = runc(&cfg)
        .arg("create")
        .arg("--bundle")
        .arg(dir)
        .arg("--pid-file")
        .arg(&created_pid)
        .arg(&cfg.container_id)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut create = match spawned {
        Ok(child) => child,
        Err(e) => {
            let message = format!("failed to run {}: {e}", cfg.runc.display());
            write_log(&log, RUNTIME_STREAM, message.as_bytes());
            return write_exit(dir, NOT_STARTED_EXIT, None, false);
        }
    };
    let mut pumps = Vec::new();
    if let Some(stdout) = create.stdout.take() {
        pumps.push(tokio::spawn(pump(stdout, "stdout", log.clone())));
    }
    if let Some(stderr) = create.stderr.take() {
        pumps.push(tokio::spawn(pump(stderr, "stderr", log.clone())));
    }
    let created = create.wait().await.map(|s| s.success()).unwrap_or(false);
    let pid = crate::sys::read_pid(&created_pid).and_then(|p| i32::try_from(p).ok());
    let (exit_code, signal, oom_killed) = match (created, pid) {
        (true, Some(pid)) => run_created(dir, &cfg, &log, pid, &created_pid).await,
        _ => (NOT_STARTED_EXIT, None, false),
    };
    for pump in pumps {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, pump).await;
    }
    runc_logged(&cfg, &log, &["delete", "--force", &cfg.container_id]).await;
    let _ = std::fs::remove_file(&created_pid);
    write_exit(dir, exit_code, signal, oom_killed)
}

/// Starts the created container and waits for its init; returns (exit code, signal, oom).
async fn run_created(
    dir: &Path,
    cfg: &ShimConfig,
    log: &Mutex<LogWriter>,
    pid: i32,
    created_pid: &Path,
) -> (i32, Option<i32>, bool) {
    let oom_control = cfg.memory_cgroup.join("memory.oom_control");
    let oom_before = oom_kill_count(&oom_control);
    if runc_logged(cfg, log, &["start", &cfg.container_id]).await {
        // container.pid appearing tells `start()` that the machine runs.
        let _ = std::fs::rename(created_pid, dir.join("container.pid"));
    } else {
        runc_logged(cfg, log, &["kill", &cfg.container_id, "KILL"]).await;
    }
    let waited = tokio::task::spawn_blocking(move || waitpid(Pid::from_raw(pid), None)).await;
    let (exit_code, signal) = match waited {
        Ok(Ok(WaitStatus::Exited(_, code))) => (code, None),
        Ok(Ok(WaitStatus::Signaled(_, sig, _))) => (128 + sig as i32, Some(sig as i32)),
        other => {
            let message = format!("could not reap the container's init {pid}: {other:?}");
            write_log(log, RUNTIME_STREAM, message.as_bytes());
            let _ = crate::sys::wait_pid_exit(pid.unsigned_abs()).await;
            (LOST_EXIT, None)
        }
    };
    let oom_killed = oom_kill_count(&oom_control) > oom_before;
    (exit_code, signal, oom_killed)
}

fn runc(cfg: &ShimConfig) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&cfg.runc);
    command
        .arg("--root")
        .arg(&cfg.runc_root)
        .stdin(Stdio::null());
    command
}

/// Runs a runc subcommand; on failure logs its stderr to the machine log. True on success.
async fn runc_logged(cfg: &ShimConfig, log: &Mutex<LogWriter>, args: &[&str]) -> bool {
    match runc(cfg).args(args).output().await {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            let message = format!(
                "runc {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            write_log(log, RUNTIME_STREAM, message.as_bytes());
            false
        }
        Err(e) => {
            let message = format!("failed to run {}: {e}", cfg.runc.display());
            write_log(log, RUNTIME_STREAM, message.as_bytes());
            false
        }
    }
}

fn write_exit(dir: &Path, exit_code: i32, signal: Option<i32>, oom_killed: bool) -> io::Result<()> {
    let info = ExitInfo {
        exit_code,
        signal,
        oom_killed,
        exited_at_ms: now_ms(),
    };
    let path = dir.join("exit.json");
    let bytes = serde_json::to_vec(&info)?;
    write_atomic(&path, &bytes).map_err(|e| context(e, "write", &path))
}

/// Copies one output pipe into the log, a record per line.
async fn pump(
    mut reader: impl AsyncRead + Unpin,
    stream: &'static str,
    log: Arc<Mutex<LogWriter>>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            write_log(&log, stream, &line[..line.len() - 1]);
        }
        while pending.len() >= MAX_LINE {
            let line: Vec<u8> = pending.drain(..MAX_LINE).collect();
            write_log(&log, stream, &line);
        }
    }
    if !pending.is_empty() {
        write_log(&log, stream, &pending);
    }
}

fn write_log(log: &Mutex<LogWriter>, stream: &str, line: &[u8]) {
    let mut writer = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Err(e) = writer.write_line(stream, line) {
        let _ = writeln!(io::stderr(), "failed to write machine log: {e}");
    }
}

/// The `oom_kill` counter of a cgroup v1 `memory.oom_control` file; 0 if unreadable.
fn oom_kill_count(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn context(e: io::Error, action: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{action} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counter_is_parsed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("memory.oom_control");
        assert_eq!(oom_kill_count(&path), 0, "missing file");
        std::fs::write(&path, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").expect("write");
        assert_eq!(oom_kill_count(&path), 2);
    }
}
