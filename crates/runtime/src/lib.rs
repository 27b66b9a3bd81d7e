//! godwit-runtime: runs machines on one host.
//!
//! Owns the [`MachineRuntime`] trait (what the agent codes against) and its `oci` driver,
//! [`OciRuntime`], which drives `runc` in a pre-created network namespace over a per-machine
//! overlayfs, supervised by a detached shim process ([`shim_main`]) that survives the agent.
//! A running machine can be paused (every process frozen through its freezer cgroup, memory,
//! rootfs and network kept) and resumed in milliseconds.
//!
//! Must not depend on any other godwit crate: the agent maps its own types into
//! [`MachineSpec`].

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

mod oci;
mod shim;
mod sys;

pub use oci::{OciConfig, OciRuntime};
pub use shim::shim_main;

/// Runs machines on this host. Every method is keyed by the machine id of a [`MachineSpec`].
#[async_trait::async_trait]
pub trait MachineRuntime: Send + Sync + std::fmt::Debug {
    /// Prepares everything short of running: bundle dir, overlay rootfs (lowerdirs = spec.layers,
    /// upper/work per machine), network namespace + veth pair + addresses + routes, config.json
    /// with cgroup limits. Idempotent: calling it again after a partial earlier call (crash)
    /// completes the job.
    async fn prepare(&self, spec: &MachineSpec) -> Result<(), RuntimeError>;
    /// Starts the machine's process, detached from the caller (it survives the agent being
    /// SIGKILLed). Idempotent: if already running, Ok. Requires `prepare()`. A previous run's
    /// exit record is cleared first.
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Sends `signal`, waits up to `timeout` for exit, then SIGKILL; returns the exit.
    /// Ok with the recorded exit if the machine had already exited, including when its
    /// process died just before (runc no longer has the container): then it waits for the
    /// shim to record the exit and returns that.
    async fn stop(
        &self,
        id: &str,
        signal: i32,
        timeout: Duration,
    ) -> Result<ExitInfo, RuntimeError>;
    /// Sends `signal` to the machine's main process. A paused machine gets it when resumed
    /// (SIGKILL excepted: runc thaws the container for it).
    async fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError>;
    /// Freezes every process of the running machine (cgroup freezer), keeping its memory,
    /// rootfs and network as they are; [`Status::Paused`] until [`MachineRuntime::resume`].
    /// Idempotent: Ok if already paused; [`RuntimeError::NotRunning`] if it is not running.
    async fn pause(&self, id: &str) -> Result<(), RuntimeError>;
    /// Thaws a paused machine. Idempotent: Ok if it is running (not paused);
    /// [`RuntimeError::NotRunning`] if it is neither. `start` on a paused machine resumes it,
    /// and `stop` and `destroy` thaw it first.
    async fn resume(&self, id: &str) -> Result<(), RuntimeError>;
    /// Where the machine is in its life.
    async fn status(&self, id: &str) -> Result<Status, RuntimeError>;
    /// Resolves when the machine's current run exits (works for a run started by an earlier
    /// agent process too). Cancel-safe.
    async fn wait_exit(&self, id: &str) -> Result<ExitInfo, RuntimeError>;
    /// Runs `cmd` inside the running machine, capturing its output; killed after `timeout`.
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError>;
    /// Removes everything for this id: process (SIGKILL), runc container state, mount, netns,
    /// veth, cgroup, files. Idempotent and safe on any partial state; Ok if nothing exists.
    async fn destroy(&self, id: &str) -> Result<(), RuntimeError>;
    /// Ids of every machine this runtime has any resource for on the host (dirs, runc state,
    /// netns, cgroups), so the agent can remove orphans after a crash. Sorted, no duplicates.
    async fn list(&self) -> Result<Vec<String>, RuntimeError>;
    /// The machine's log files, oldest first: rotated ones, then the current one (last, always
    /// present in the list even before it exists) which is the one to follow for streaming.
    /// Each line is JSON: `{"ts":<unix ms>,"stream":"stdout"|"stderr"|"runtime","line":"..."}`.
    fn log_files(&self, id: &str) -> Vec<PathBuf>;
}

/// Everything needed to run one machine.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct MachineSpec {
    /// 8 to 32 lowercase letters or digits (godwit uses 14 hex characters).
    pub id: String,
    /// Unpacked image layers, bottom first.
    pub layers: Vec<PathBuf>,
    /// `argv[0]` is the program: absolute, or looked up in `PATH` from `env`.
    pub args: Vec<String>,
    /// `KEY=VALUE`, final (image + config + secrets already merged).
    pub env: Vec<String>,
    /// Absolute working directory (created if missing).
    pub cwd: String,
    /// Numeric `uid[:gid]`; `None` is root.
    pub user: Option<String>,
    pub hostname: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub network: NetworkSpec,
}

/// Addresses of the machine's point-to-point link with the host.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct NetworkSpec {
    /// The host end of the veth pair; the guest's default gateway.
    pub host_ip: Ipv4Addr,
    /// `eth0` inside the machine.
    pub guest_ip: Ipv4Addr,
    /// e.g. 30 for one /30 per machine.
    pub prefix_len: u8,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub enum Status {
    /// No bundle for this id.
    Absent,
    /// Prepared and never started since.
    Prepared,
    /// `pid` is the machine's main process (host pid namespace).
    Running { pid: u32 },
    /// Running but frozen by [`MachineRuntime::pause`]; `pid` as for `Running`.
    Paused { pid: u32 },
    /// The last run ended; `start()` runs it again.
    Exited(ExitInfo),
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ExitInfo {
    /// The process's exit code, or 128 + signal when killed by a signal; 127 when the
    /// container could not be created (runc's error is in the log, stream `runtime`), 255
    /// when the exit was lost (the shim died).
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// The kernel's OOM killer fired in the machine's memory cgroup during the run.
    pub oom_killed: bool,
    /// Unix time in milliseconds.
    pub exited_at_ms: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("invalid machine id {id:?}: want 8 to 32 lowercase letters or digits")]
    InvalidId { id: String },
    #[error("invalid runtime configuration: {reason}")]
    InvalidConfig { reason: String },
    #[error("invalid spec for machine {id}: {reason}")]
    InvalidSpec { id: String, reason: String },
    #[error("machine {id} is not prepared")]
    NotPrepared { id: String },
    #[error("machine {id} is not running")]
    NotRunning { id: String },
    #[error("shim for machine {id} exited without starting it: {log}")]
    ShimFailed { id: String, log: String },
    #[error("failed to run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt state file {}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("timed out after {timeout:?} waiting for {what} of machine {id}")]
    Timeout {
        id: String,
        what: &'static str,
        timeout: Duration,
    },
}
