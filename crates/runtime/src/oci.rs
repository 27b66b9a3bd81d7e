//! The `oci` driver: `runc` over a per-machine overlayfs in a pre-created network namespace.
//!
//! Layout of `<root>/<id>/` (also the runc bundle):
//! `config.json` (written last by prepare), `rootfs/` (overlay mount), `upper/`, `work/`,
//! `lower-empty/`, `logs/machine.log*`, `net.done`, `shim.json`, `shim.pid`, `shim.log`,
//! `container.pid.created` (between `runc create` and `runc start`),
//! `container.pid`, `exit.json`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{ExecOutput, ExitInfo, MachineRuntime, MachineSpec, RuntimeError, Status};

mod bundle;
mod cleanup;
mod freeze;
mod net;
mod prepare;
mod run;

/// Configuration of an [`OciRuntime`].
#[derive(Debug, Clone)]
pub struct OciConfig {
    /// Per-machine directories live here (`<data>/machines`).
    pub root: PathBuf,
    /// The `runc` program.
    pub runc: PathBuf,
    /// `runc --root`: runc's state directory (under the data dir so tests are isolated).
    pub runc_root: PathBuf,
    /// Prefixes netns names, veth names, runc ids and the cgroup parent: 1 to 6 lowercase
    /// letters or digits (veth names must fit in 15 characters).
    pub name_prefix: String,
    /// Program + leading args that run the shim (production: `[current_exe, "shim"]`).
    pub shim: Vec<String>,
    /// The current log file is rotated when it would grow past this size.
    pub log_max_bytes: u64,
    /// Rotated log files kept (`machine.log.1` is the newest).
    pub log_keep: usize,
}

/// Runs machines as runc containers. Holds no state of its own: every answer comes from the
/// host (files, pids, runc), so a new instance picks up machines started by an earlier one.
#[derive(Debug)]
pub struct OciRuntime {
    cfg: OciConfig,
}

/// Where one machine's files live.
#[derive(Debug)]
struct MachinePaths {
    dir: PathBuf,
    rootfs: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    empty_lower: PathBuf,
    config: PathBuf,
    logs: PathBuf,
    net_done: PathBuf,
    shim_json: PathBuf,
    shim_pid: PathBuf,
    shim_log: PathBuf,
    container_pid: PathBuf,
    exit: PathBuf,
}

// === impl OciConfig ===

impl OciConfig {
    /// Defaults under `data_dir`: machines in `machines/`, runc state in `runc/`, prefix `gw`,
    /// 10 MiB log files, 3 rotated ones kept.
    pub fn under(data_dir: &Path, shim: Vec<String>) -> Self {
        Self {
            root: data_dir.join("machines"),
            runc: PathBuf::from("runc"),
            runc_root: data_dir.join("runc"),
            name_prefix: "gw".to_owned(),
            shim,
            log_max_bytes: 10 << 20,
            log_keep: 3,
        }
    }
}

// === impl OciRuntime ===

impl OciRuntime {
    /// Checks the configuration and creates the root directories.
    pub fn new(mut cfg: OciConfig) -> Result<Self, RuntimeError> {
        let prefix_ok = !cfg.name_prefix.is_empty()
            && cfg.name_prefix.len() <= 6
            && cfg
                .name_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !prefix_ok {
            return Err(invalid_config(format!(
                "name prefix {:?} must be 1 to 6 lowercase letters or digits",
                cfg.name_prefix
            )));
        }
        if cfg.shim.is_empty() {
            return Err(invalid_config("shim command is empty".to_owned()));
        }
        for dir in [&mut cfg.root, &mut cfg.runc_root] {
            std::fs::create_dir_all(&*dir).map_err(crate::sys::io_err("create", dir))?;
            *dir = std::fs::canonicalize(&*dir).map_err(crate::sys::io_err("resolve", dir))?;
            let text = dir.to_string_lossy();
            if text.contains([':', ',', '\n']) {
                return Err(invalid_config(format!(
                    "path {text} contains ':', ',' or newline"
                )));
            }
        }
        Ok(Self { cfg })
    }

    /// The runtime's configuration (with canonical paths).
    pub fn config(&self) -> &OciConfig {
        &self.cfg
    }

    /// runc's id for the container, also the netns name.
    fn container_id(&self, id: &str) -> String {
        format!("{}-{id}", self.cfg.name_prefix)
    }

    /// The host end of the veth pair (the guest end is `eth0` in the netns).
    fn veth_host(&self, id: &str) -> String {
        let short = id.get(..8).unwrap_or(id);
        format!("{}{short}h", self.cfg.name_prefix)
    }

    /// runc `cgroupsPath` (relative to each v1 controller's root).
    fn cgroup_path(&self, id: &str) -> String {
        format!("/{}/{id}", self.cfg.name_prefix)
    }

    fn paths(&self, id: &str) -> MachinePaths {
        let dir = self.cfg.root.join(id);
        MachinePaths {
            rootfs: dir.join("rootfs"),
            upper: dir.join("upper"),
            work: dir.join("work"),
            empty_lower: dir.join("lower-empty"),
            config: dir.join("config.json"),
            logs: dir.join("logs"),
            net_done: dir.join("net.done"),
            shim_json: dir.join("shim.json"),
            shim_pid: dir.join("shim.pid"),
            shim_log: dir.join("shim.log"),
            container_pid: dir.join("container.pid"),
            exit: dir.join("exit.json"),
            dir,
        }
    }

    /// Runs `runc --root <runc_root> <args>` and fails unless it exits 0.
    async fn runc<I, S>(&self, args: I) -> Result<Vec<u8>, RuntimeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all = vec![
            OsStr::new("--root").to_owned(),
            self.cfg.runc_root.as_os_str().to_owned(),
        ];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        crate::sys::checked(self.cfg.runc.as_os_str(), all).await
    }
}

#[async_trait::async_trait]
impl MachineRuntime for OciRuntime {
    #[tracing::instrument(skip_all, fields(machine_id = %spec.id), err)]
    async fn prepare(&self, spec: &MachineSpec) -> Result<(), RuntimeError> {
        check_id(&spec.id)?;
        self.prepare_machine(spec).await
    }

    #[tracing::instrument(skip(self), err)]
    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        check_id(id)?;
        self.start_machine(id).await
    }

    #[tracing::instrument(skip(self), err)]
    async fn stop(
        &self,
        id: &str,
        signal: i32,
        timeout: Duration,
    ) -> Result<ExitInfo, RuntimeError> {
        check_id(id)?;
        self.stop_machine(id, signal, timeout).await
    }

    async fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        check_id(id)?;
        self.signal_machine(id, signal).await
    }

    #[tracing::instrument(skip(self), err)]
    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        check_id(id)?;
        self.pause_machine(id).await
    }

    #[tracing::instrument(skip(self), err)]
    async fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        check_id(id)?;
        self.resume_machine(id).await
    }

    async fn status(&self, id: &str) -> Result<Status, RuntimeError> {
        check_id(id)?;
        self.machine_status(id).await
    }

    async fn wait_exit(&self, id: &str) -> Result<ExitInfo, RuntimeError> {
        check_id(id)?;
        self.wait_machine_exit(id).await
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        check_id(id)?;
        self.exec_in_machine(id, cmd, timeout).await
    }

    #[tracing::instrument(skip(self), err)]
    async fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
        check_id(id)?;
        self.destroy_machine(id).await
    }

    async fn list(&self) -> Result<Vec<String>, RuntimeError> {
        self.list_machines()
    }

    fn log_files(&self, id: &str) -> Vec<PathBuf> {
        if check_id(id).is_err() {
            return Vec::new();
        }
        crate::shim::log_files(&self.paths(id).logs, self.cfg.log_keep)
    }
}

/// Machine ids become paths and interface names: 8 to 32 lowercase letters or digits.
fn check_id(id: &str) -> Result<(), RuntimeError> {
    let ok = (8..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidId { id: id.to_owned() })
    }
}

fn invalid_config(reason: String) -> RuntimeError {
    RuntimeError::InvalidConfig { reason }
}

fn is_valid_id(id: &str) -> bool {
    check_id(id).is_ok()
}
