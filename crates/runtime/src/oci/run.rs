//! Running machines: start (through the shim), stop, signal, status, wait_exit, exec.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::{MachinePaths, OciRuntime, net};
use crate::shim::ShimConfig;
use crate::sys::{
    command_failed, display_command, io_err, mount_points, now_ms, pid_alive_with_arg, read_pid,
    wait_pid_exit, write_atomic,
};
use crate::{ExecOutput, ExitInfo, RuntimeError, Status};

/// How long `start` waits for the shim to report the container's pid (or its exit).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits for the exit after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Exit code recorded when the shim died without recording the exit.
const LOST_EXIT_CODE: i32 = 255;
/// Fallback re-check interval while waiting on a pidfd.
const RECHECK: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(10);

impl OciRuntime {
    pub(super) async fn machine_status(&self, id: &str) -> Result<Status, RuntimeError> {
        let paths = self.paths(id);
        if let Some(info) = read_exit(&paths.exit)? {
            return Ok(Status::Exited(info));
        }
        let Some(shim_pid) = read_pid(&paths.shim_pid) else {
            return Ok(if paths.config.exists() {
                Status::Prepared
            } else {
                Status::Absent
            });
        };
        if pid_alive_with_arg(shim_pid, &paths.dir) {
            let pid = read_pid(&paths.container_pid).unwrap_or(shim_pid);
            return Ok(self.running_or_paused(id, pid));
        }
        // The shim writes exit.json before exiting: look again before calling it lost.
        if let Some(info) = read_exit(&paths.exit)? {
            return Ok(Status::Exited(info));
        }
        self.reconcile_lost_shim(id, &paths).await
    }

    /// The shim died without recording an exit (killed, host OOM). If runc still runs the
    /// container it is Running; otherwise the run is recorded as exited with code 255.
    async fn reconcile_lost_shim(
        &self,
        id: &str,
        paths: &MachinePaths,
    ) -> Result<Status, RuntimeError> {
        if let Some(pid) = self.runc_running_pid(id).await {
            return Ok(self.running_or_paused(id, pid));
        }
        tracing::warn!(machine_id = %id, "shim died without recording the exit");
        let info = ExitInfo {
            exit_code: LOST_EXIT_CODE,
            signal: None,
            oom_killed: false,
            exited_at_ms: now_ms(),
        };
        write_exit(&paths.exit, &info)?;
        Ok(Status::Exited(info))
    }

    fn running_or_paused(&self, id: &str, pid: u32) -> Status {
        if self.is_frozen(id) {
            Status::Paused { pid }
        } else {
            Status::Running { pid }
        }
    }

    /// The container's pid if runc says it is running (or created/paused).
    async fn runc_running_pid(&self, id: &str) -> Option<u32> {
        let cid = self.container_id(id);
        if !self.cfg.runc_root.join(&cid).exists() {
            return None;
        }
        let out = self.runc(["state", cid.as_str()]).await.ok()?;
        let state: serde_json::Value = serde_json::from_slice(&out).ok()?;
        let running = matches!(
            state["status"].as_str(),
            Some("running" | "created" | "paused")
        );
        let pid = state["pid"].as_u64().and_then(|p| u32::try_from(p).ok())?;
        running.then_some(pid).filter(|p| *p > 0)
    }

    pub(super) async fn start_machine(&self, id: &str) -> Result<(), RuntimeError> {
        match self.machine_status(id).await? {
            Status::Running { .. } => return Ok(()),
            Status::Paused { .. } => return self.resume_machine(id).await,
            Status::Absent => return Err(RuntimeError::NotPrepared { id: id.to_owned() }),
            Status::Prepared | Status::Exited(_) => {}
        }
        let paths = self.paths(id);
        let mounted = mount_points()
            .map_err(io_err("read mounts for", &paths.rootfs))?
            .contains(&paths.rootfs);
        if !mounted || !net::netns_exists(&self.container_id(id)) {
            return Err(RuntimeError::NotPrepared { id: id.to_owned() });
        }
        self.clear_run(id, &paths).await?;
        let shim_cfg = ShimConfig {
            shim: self.cfg.shim.clone(),
            runc: self.cfg.runc.clone(),
            runc_root: self.cfg.runc_root.clone(),
            container_id: self.container_id(id),
            log_max_bytes: self.cfg.log_max_bytes,
            log_keep: self.cfg.log_keep,
            memory_cgroup: Path::new("/sys/fs/cgroup/memory")
                .join(self.cgroup_path(id).trim_start_matches('/')),
        };
        let bytes = serde_json::to_vec_pretty(&shim_cfg).map_err(|source| RuntimeError::State {
            path: paths.shim_json.clone(),
            source,
        })?;
        write_atomic(&paths.shim_json, &bytes).map_err(io_err("write", &paths.shim_json))?;
        self.launch_shim(&paths).await?;
        self.await_started(id, &paths).await?;
        tracing::info!(machine_id = %id, "machine started");
        Ok(())
    }

    /// Forgets the previous run: runc's state of it and its pid and exit files.
    async fn clear_run(&self, id: &str, paths: &MachinePaths) -> Result<(), RuntimeError> {
        let cid = self.container_id(id);
        if self.cfg.runc_root.join(&cid).exists()
            && let Err(e) = self.runc(["delete", "--force", cid.as_str()]).await
            && self.cfg.runc_root.join(&cid).exists()
        {
            return Err(e);
        }
        let created_pid = paths.dir.join("container.pid.created");
        for file in [
            &paths.exit,
            &paths.container_pid,
            &created_pid,
            &paths.shim_pid,
        ] {
            match std::fs::remove_file(file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err("remove", file)(e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs `<shim> launch <dir>`, which double-forks the real shim and returns at once.
    async fn launch_shim(&self, paths: &MachinePaths) -> Result<(), RuntimeError> {
        let (program, lead) = self
            .cfg
            .shim
            .split_first()
            .expect("OciRuntime::new checked that shim is not empty");
        let mut args: Vec<std::ffi::OsString> = lead.iter().map(Into::into).collect();
        args.push("launch".into());
        args.push(paths.dir.clone().into());
        let out = tokio::process::Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| RuntimeError::Spawn {
                command: display_command(program.as_ref(), &args),
                source,
            })?;
        if !out.status.success() {
            return Err(command_failed(program.as_ref(), &args, &out));
        }
        Ok(())
    }

    /// Waits until the shim reports the container pid or an exit.
    async fn await_started(&self, id: &str, paths: &MachinePaths) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut shim_seen = false;
        loop {
            if paths.container_pid.exists() || paths.exit.exists() {
                return Ok(());
            }
            if let Some(shim) = read_pid(&paths.shim_pid) {
                shim_seen = true;
                if !pid_alive_with_arg(shim, &paths.dir) && !paths.exit.exists() {
                    return Err(self.shim_failed(id, paths));
                }
            }
            if Instant::now() >= deadline {
                if !shim_seen {
                    return Err(self.shim_failed(id, paths));
                }
                return Err(RuntimeError::Timeout {
                    id: id.to_owned(),
                    what: "start",
                    timeout: START_TIMEOUT,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn shim_failed(&self, id: &str, paths: &MachinePaths) -> RuntimeError {
        let log = std::fs::read_to_string(&paths.shim_log).unwrap_or_default();
        let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        RuntimeError::ShimFailed {
            id: id.to_owned(),
            log: tail,
        }
    }

    pub(super) async fn wait_machine_exit(&self, id: &str) -> Result<ExitInfo, RuntimeError> {
        loop {
            match self.machine_status(id).await? {
                Status::Exited(info) => return Ok(info),
                Status::Running { .. } | Status::Paused { .. } => {}
                Status::Absent | Status::Prepared => {
                    return Err(RuntimeError::NotRunning { id: id.to_owned() });
                }
            }
            let paths = self.paths(id);
            // Wait on the shim if alive, else on the orphaned container (see reconcile).
            let pid = match read_pid(&paths.shim_pid) {
                Some(shim) if pid_alive_with_arg(shim, &paths.dir) => Some(shim),
                _ => self.runc_running_pid(id).await,
            };
            if let Some(pid) = pid {
                // A timeout only means "look again".
                if let Ok(Err(e)) = tokio::time::timeout(RECHECK, wait_pid_exit(pid)).await {
                    return Err(io_err("wait for pid", Path::new(&pid.to_string()))(e));
                }
            }
        }
    }

    pub(super) async fn stop_machine(
        &self,
        id: &str,
        signal: i32,
        timeout: Duration,
    ) -> Result<ExitInfo, RuntimeError> {
        match self.machine_status(id).await? {
            Status::Exited(info) => return Ok(info),
            Status::Running { .. } => {}
            // A frozen process cannot act on the stop signal: thaw it first.
            Status::Paused { .. } => self.thaw(id).await?,
            Status::Absent | Status::Prepared => {
                return Err(RuntimeError::NotRunning { id: id.to_owned() });
            }
        }
        self.signal_for_stop(id, signal).await?;
        if let Ok(result) = tokio::time::timeout(timeout, self.wait_machine_exit(id)).await {
            return result;
        }
        tracing::info!(machine_id = %id, ?timeout, "machine ignored the stop signal, killing it");
        self.signal_for_stop(id, libc::SIGKILL).await?;
        tokio::time::timeout(KILL_TIMEOUT, self.wait_machine_exit(id))
            .await
            .map_err(|_| RuntimeError::Timeout {
                id: id.to_owned(),
                what: "exit after SIGKILL",
                timeout: KILL_TIMEOUT,
            })?
    }

    /// Sends `signal` for a stop. A container runc no longer runs is not an error: its
    /// process died after the status check and the shim is recording the exit (it deletes
    /// the container before writing `exit.json`), which the caller's wait picks up.
    async fn signal_for_stop(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        match self.signal_machine(id, signal).await {
            Ok(()) => Ok(()),
            Err(e) if self.runc_running_pid(id).await.is_some() => Err(e),
            Err(e) => {
                tracing::debug!(machine_id = %id, error = %e, "container already gone; waiting for its exit");
                Ok(())
            }
        }
    }

    pub(super) async fn signal_machine(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        if !matches!(
            self.machine_status(id).await?,
            Status::Running { .. } | Status::Paused { .. }
        ) {
            return Err(RuntimeError::NotRunning { id: id.to_owned() });
        }
        let cid = self.container_id(id);
        self.runc(["kill", cid.as_str(), signal.to_string().as_str()])
            .await
            .map(drop)
    }

    pub(super) async fn exec_in_machine(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        if !matches!(self.machine_status(id).await?, Status::Running { .. }) {
            return Err(RuntimeError::NotRunning { id: id.to_owned() });
        }
        static EXEC_SEQ: AtomicU64 = AtomicU64::new(0);
        let paths = self.paths(id);
        let seq = EXEC_SEQ.fetch_add(1, Ordering::Relaxed);
        let pid_file = paths
            .dir
            .join(format!("exec-{}-{seq}.pid", std::process::id()));
        let mut args: Vec<std::ffi::OsString> = vec![
            "--root".into(),
            self.cfg.runc_root.clone().into(),
            "exec".into(),
            "--pid-file".into(),
            pid_file.clone().into(),
            self.container_id(id).into(),
        ];
        args.extend(cmd.iter().map(Into::into));
        let child = tokio::process::Command::new(&self.cfg.runc)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                command: display_command(self.cfg.runc.as_os_str(), &args),
                source,
            })?;
        let result = tokio::time::timeout(timeout, child.wait_with_output()).await;
        let exec_pid = read_pid(&pid_file);
        let _ = std::fs::remove_file(&pid_file);
        match result {
            Ok(Ok(out)) => {
                use std::os::unix::process::ExitStatusExt;
                let exit_code = out
                    .status
                    .code()
                    .or_else(|| out.status.signal().map(|s| 128 + s))
                    .unwrap_or(-1);
                Ok(ExecOutput {
                    exit_code,
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                })
            }
            Ok(Err(source)) => Err(RuntimeError::Spawn {
                command: display_command(self.cfg.runc.as_os_str(), &args),
                source,
            }),
            Err(_) => {
                // runc exec was killed on drop; its child lives on in the container.
                if let Some(pid) = exec_pid.and_then(|p| i32::try_from(p).ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                Err(RuntimeError::Timeout {
                    id: id.to_owned(),
                    what: "exec",
                    timeout,
                })
            }
        }
    }
}

/// Reads `exit.json`; `None` if there is none.
pub(super) fn read_exit(path: &Path) -> Result<Option<ExitInfo>, RuntimeError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| RuntimeError::State {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

fn write_exit(path: &Path, info: &ExitInfo) -> Result<(), RuntimeError> {
    let bytes = serde_json::to_vec(info).map_err(|source| RuntimeError::State {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &bytes).map_err(io_err("write", path))
}
