//! Machines: config (what the user asks for), state, events and the machine object the API returns.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::duration::Duration;

/// What a machine runs. Updates replace the whole config and make a new version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MachineConfig {
    /// Image reference: registry reference, OCI layout directory or image archive path.
    pub image: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "InitConfig::is_empty")]
    pub init: InitConfig,
    #[serde(default)]
    pub guest: GuestConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<MachineService>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, MachineCheck>,
    #[serde(default)]
    pub restart: RestartConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_config: Option<StopConfig>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_destroy: bool,
}

/// Overrides of the image's ENTRYPOINT/CMD; `exec` replaces both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InitConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GuestConfig {
    #[serde(default = "default_cpu_kind")]
    pub cpu_kind: String,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MachineService {
    #[serde(default = "default_protocol")]
    pub protocol: String,
    pub internal_port: u16,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<MachinePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_machines_running: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<ServiceCheck>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MachinePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handlers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_https: Option<bool>,
    /// With the `proxy_proto` handler: which PROXY protocol version the machine gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_proto_options: Option<ProxyProtoOptions>,
    /// With the `http` handler: how requests are forwarded to the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_options: Option<HttpOptions>,
}

/// `proxy_proto_options` of a port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProxyProtoOptions {
    /// `v1` (the text form, the default) or `v2` (the binary form).
    #[serde(default)]
    pub version: String,
}

/// `http_options` of a port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HttpOptions {
    /// Forward to the machine over HTTP/2 with prior knowledge (h2c), e.g. for gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_backend: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Concurrency {
    #[serde(default = "default_concurrency_type", rename = "type")]
    pub kind: String,
    #[serde(default = "default_soft_limit")]
    pub soft_limit: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<u32>,
}

/// A service check (gates routing) or a top-level check (informational).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceCheck {
    /// `tcp` or `http`.
    #[serde(rename = "type", default = "default_check_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Top-level checks have the same shape as service checks.
pub type MachineCheck = ServiceCheck;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RestartConfig {
    #[serde(default)]
    pub policy: RestartPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    Always,
    #[default]
    OnFailure,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StopConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Machine states, persistent and transient, as the reference system names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    Creating,
    Created,
    Starting,
    Started,
    Stopping,
    Stopped,
    Restarting,
    Updating,
    Replacing,
    Suspending,
    Suspended,
    Failed,
    Destroying,
    Destroyed,
}

/// One entry of a machine's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MachineEvent {
    pub id: u64,
    /// `launch`, `start`, `stop`, `exit`, `restart`, `update`, `destroy`, `oom`...
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    /// `user` (an API call) or `godwit` (the platform).
    pub source: String,
    pub timestamp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<EventRequest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_event: Option<ExitEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExitEvent {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub requested_stop: bool,
    pub restarting: bool,
    pub exited_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckResult {
    pub name: String,
    pub status: CheckStatus,
    #[serde(default)]
    pub output: String,
    pub updated_at: u64,
}

/// The machine object returned by the API; built by the host agent, which is its truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Machine {
    pub id: String,
    pub name: String,
    pub state: MachineState,
    pub region: String,
    /// Changes with every config version.
    pub instance_id: String,
    pub version: u64,
    pub private_ip: String,
    pub config: MachineConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<ImageRef>,
    #[serde(default)]
    pub events: Vec<MachineEvent>,
    #[serde(default)]
    pub checks: Vec<CheckResult>,
    pub host_status: String,
    #[serde(default)]
    pub cordoned: bool,
    pub host_id: String,
    pub app: String,
    pub created_at: u64,
    pub updated_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageRef {
    pub reference: String,
    pub digest: String,
}

// === impl MachineState ===

impl MachineState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Created => "created",
            Self::Starting => "starting",
            Self::Started => "started",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Restarting => "restarting",
            Self::Updating => "updating",
            Self::Replacing => "replacing",
            Self::Suspending => "suspending",
            Self::Suspended => "suspended",
            Self::Failed => "failed",
            Self::Destroying => "destroying",
            Self::Destroyed => "destroyed",
        }
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MachineState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("unknown machine state {s:?}"))
    }
}

// === impl InitConfig ===

impl InitConfig {
    pub fn is_empty(&self) -> bool {
        self.exec.is_empty() && self.entrypoint.is_empty() && self.cmd.is_empty()
    }
}

// === impl GuestConfig ===

impl Default for GuestConfig {
    fn default() -> Self {
        Self {
            cpu_kind: default_cpu_kind(),
            cpus: default_cpus(),
            memory_mb: default_memory_mb(),
        }
    }
}

impl GuestConfig {
    /// Checks the size against the limits of the reference system's presets.
    pub fn validate(&self) -> Result<(), String> {
        if self.cpu_kind != "shared" && self.cpu_kind != "performance" {
            return Err(format!(
                "guest.cpu_kind {:?} is not supported: use \"shared\" or \"performance\"",
                self.cpu_kind
            ));
        }
        if self.cpus == 0 || self.cpus > 64 {
            return Err(format!(
                "guest.cpus = {} is out of range: use 1 to 64",
                self.cpus
            ));
        }
        if self.memory_mb < 64 || self.memory_mb > 256 * 1024 {
            return Err(format!(
                "guest.memory_mb = {} is out of range: use 64 to 262144",
                self.memory_mb
            ));
        }
        Ok(())
    }
}

// === impl MachineConfig ===

impl MachineConfig {
    /// Validates what the API can check without touching a host.
    pub fn validate(&self) -> Result<(), String> {
        if self.image.trim().is_empty() {
            return Err(
                "config.image is required: name a registry reference or an image path".into(),
            );
        }
        self.guest.validate()?;
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(format!(
                    "env key {key:?} is invalid: names cannot be empty or contain '='"
                ));
            }
        }
        if let Some(stop) = &self.stop_config {
            if let Some(sig) = &stop.signal {
                crate::signal::parse(sig)?;
            }
            if let Some(t) = stop.timeout
                && t.0 > std::time::Duration::from_secs(300)
            {
                return Err("stop_config.timeout must be at most 300s".into());
            }
        }
        for svc in &self.services {
            if svc.internal_port == 0 {
                return Err("services[].internal_port must be 1-65535".into());
            }
        }
        Ok(())
    }

    /// The signal and grace period used to stop this machine.
    pub fn stop_signal_and_timeout(&self) -> (i32, std::time::Duration) {
        let stop = self.stop_config.as_ref();
        let signal = stop
            .and_then(|s| s.signal.as_deref())
            .and_then(|s| crate::signal::parse(s).ok())
            .unwrap_or(crate::signal::SIGINT);
        let timeout = stop
            .and_then(|s| s.timeout)
            .map_or(std::time::Duration::from_secs(5), |d| d.0);
        (signal, timeout)
    }
}

fn default_cpu_kind() -> String {
    "shared".into()
}
fn default_cpus() -> u32 {
    1
}
fn default_memory_mb() -> u64 {
    256
}
fn default_protocol() -> String {
    "tcp".into()
}
fn default_concurrency_type() -> String {
    "connections".into()
}
fn default_soft_limit() -> u32 {
    20
}
fn default_check_type() -> String {
    "tcp".into()
}
