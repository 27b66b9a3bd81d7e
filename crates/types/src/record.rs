//! Records hosts publish to the state layer. Each record has one writer: the host that owns it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::machine::{CheckResult, MachineService, MachineState};

/// What every consumer (API, proxy) needs to know about a machine, published by its host's agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub id: String,
    pub app: String,
    pub org: String,
    pub name: String,
    pub state: MachineState,
    pub version: u64,
    pub instance_id: String,
    pub private_ip: String,
    pub region: String,
    pub host_id: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub services: Vec<MachineService>,
    pub checks: Vec<CheckResult>,
    pub cordoned: bool,
    pub metadata: BTreeMap<String, String>,
    pub updated_at: u64,
}

/// A host and its capacity, published by its agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub host_id: String,
    pub region: String,
    /// Where the API reaches the agent, `http://ip:port`.
    pub agent_url: String,
    pub cpus_total: u32,
    pub memory_mb_total: u64,
    pub cpus_reserved: u32,
    pub memory_mb_reserved: u64,
    pub schedulable: bool,
    pub updated_at: u64,
}
