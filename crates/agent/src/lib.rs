//! godwit-agent: the host agent (`godwit agent`). Owns this host's machines as durable state
//! machines: every operation (create, start, stop, suspend, update, destroy) is a row in the
//! agent's own SQLite database whose current step is persisted before it runs, so an agent
//! killed at any step resumes or rolls back on restart and leaves nothing orphaned. A
//! suspended machine is frozen (cgroup freezer) with its memory, rootfs and network kept; it
//! has no exit monitor and no checks, and `start` resumes it. It also registers the
//! host with the API, serves the agent HTTP API (contracts.md), watches machine exits and
//! applies restart policies, runs the health checks of started machines, and publishes
//! machine and host records to NATS key-value.
//!
//! The host record's reserved capacity is the sum of the guest sizes of every machine the
//! agent has that is not destroyed, stopped ones included (a stopped machine can start
//! again at any time, so its room stays reserved); `schedulable` comes from
//! [`AgentConfig::schedulable`].
//!
//! Depends on godwit-types, godwit-runtime, godwit-image and godwit-state; must not depend on
//! godwit-api or godwit-cli.
//!
//! Failpoint (crash tests): if the environment variable `GODWIT_AGENT_CRASH_AT` is
//! `"<op>:<step>"` when [`run`] starts (read once), the agent SIGKILLs itself right after that
//! step of that operation kind has been persisted and performed, before recording the next
//! step. Operation kinds and steps are listed in [`OP_STEPS`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

mod agent;
mod checks;
mod db;
mod http;
mod ipam;
mod logs;
mod monitor;
mod ops;
mod publish;
mod register;
mod spec;

pub use ops::OP_STEPS;

/// Environment variable naming the failpoint, `"<op>:<step>"` (see the crate docs).
pub const CRASH_AT_ENV: &str = "GODWIT_AGENT_CRASH_AT";

/// Everything `godwit agent` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Holds `agent.db`, `agent.token`, `images/`, `machines/` and `runc/`.
    pub data_dir: PathBuf,
    /// The API to register with, e.g. `http://127.0.0.1:4280`.
    pub api_url: String,
    pub join_token: String,
    pub host_id: String,
    pub region: String,
    pub nats_url: String,
    /// How the API reaches this agent, `http://ip:port`.
    pub advertise_url: String,
    pub cpus: u32,
    pub memory_mb: u64,
    /// Machine /30s come from here, e.g. `"172.30.0.0/16"`.
    pub subnet: String,
    /// The `runc` program.
    pub runc: PathBuf,
    /// Prefix of netns, veth, cgroup and runc names (1 to 6 lowercase letters or digits).
    pub name_prefix: String,
    /// Program + leading args that run the runtime shim (production: `[current_exe, "shim"]`).
    pub shim: Vec<String>,
    /// Registries (`host:port`) spoken to over plain HTTP.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// Published as `HostRecord.schedulable`: false keeps the scheduler from placing new
    /// machines here (those already here keep running and can be updated). Default true.
    #[serde(default = "schedulable_by_default")]
    pub schedulable: bool,
    /// Every region of the cluster. With more than one, records go to this region's own
    /// bucket (`godwit_machines_<region>`), mirrored into the others; empty = one region.
    #[serde(default)]
    pub regions: Vec<String>,
}

fn schedulable_by_default() -> bool {
    true
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("failed to create data dir {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid agent configuration: {0}")]
    Config(String),
    #[error("failed to open the agent database")]
    Db(#[from] db::DbError),
    #[error("failed to read or create the agent token {}", path.display())]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to set up the machine runtime")]
    Runtime(#[from] godwit_runtime::RuntimeError),
    #[error("failed to open the image store")]
    Image(#[from] godwit_image::ImageError),
    #[error("failed to serve the agent http api")]
    Serve(#[source] std::io::Error),
}

/// Runs the agent until `cancel` fires: opens its database, resumes every interrupted
/// operation, removes orphaned runtime resources, then serves the agent HTTP API on
/// `listener`, registers with the API and publishes records. Machines keep running after it
/// returns.
pub async fn run(
    cfg: AgentConfig,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> Result<(), RunError> {
    let crash_at = std::env::var(CRASH_AT_ENV).ok().filter(|s| !s.is_empty());
    agent::run(cfg, crash_at, listener, cancel).await
}
