//! Request and response bodies of the Machines REST API (`/v1`) and of the API ↔ agent protocol.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::duration::Duration;
use crate::machine::{MachineConfig, MachineState};

/// Every 4xx/5xx body. 4xx say what was wrong and how to fix it; 5xx say "internal error".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateAppRequest {
    pub app_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Organization {
    pub slug: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct App {
    pub id: String,
    pub name: String,
    pub organization: Organization,
    pub status: String,
    pub machine_count: u32,
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ListAppsResponse {
    pub total_apps: u32,
    pub apps: Vec<App>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateMachineRequest {
    pub config: MachineConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A region, or a fallback list `syd,sin`: the first with room wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Seconds: take a lease atomically with the create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<u64>,
    #[serde(default)]
    pub skip_launch: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UpdateMachineRequest {
    pub config: MachineConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    #[serde(default)]
    pub skip_launch: bool,
    /// Name and region cannot change; accepted only when equal to the current ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StopRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SignalRequest {
    pub signal: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StateChangeResponse {
    pub ok: bool,
    pub previous_state: MachineState,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeaseRequest {
    /// Seconds; default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    pub status: String,
    pub data: LeaseData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeaseData {
    pub nonce: String,
    /// Unix seconds.
    pub expires_at: u64,
    pub owner: String,
    pub description: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecRequest {
    #[serde(default)]
    pub command: Vec<String>,
    /// Deprecated single-string form, split on whitespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Seconds; default 30, at most 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecResponse {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetadataValue {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SetSecretsRequest {
    pub values: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SecretInfo {
    pub name: String,
    /// A short SHA-256 digest of the value, so changes are visible without showing it.
    pub digest: String,
    pub version: u64,
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SecretsResponse {
    /// The app's secrets version; every set or unset makes a new one.
    pub version: u64,
    pub secrets: Vec<SecretInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub timestamp: u64,
    pub machine_id: String,
    pub region: String,
    pub stream: String,
    pub message: String,
}

/// A host agent asks to join the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegisterHostRequest {
    pub join_token: String,
    pub host_id: String,
    pub region: String,
    pub agent_url: String,
    /// The bearer token the API must send on every call to this agent.
    pub agent_token: String,
    pub cpus: u32,
    pub memory_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegisterHostResponse {
    pub host_id: String,
}

/// API → agent: create a machine. The API has already placed it on this host and resolved secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCreateMachine {
    pub machine_id: String,
    pub app: String,
    pub org: String,
    pub name: String,
    pub region: String,
    pub config: MachineConfig,
    pub secrets: BTreeMap<String, String>,
    pub skip_launch: bool,
    pub lease_ttl: Option<u64>,
}

/// API → agent: replace a machine's config (a new version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentUpdateMachine {
    pub config: MachineConfig,
    pub secrets: BTreeMap<String, String>,
    pub skip_launch: bool,
    pub current_version: Option<String>,
}

/// `POST /v1/apps/{app}/certificates/custom`: a certificate the app's owner got elsewhere.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CustomCertificateRequest {
    pub hostname: String,
    /// PEM: the leaf certificate first, then the intermediates.
    pub fullchain: String,
    /// PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub private_key: String,
}

impl std::fmt::Debug for CustomCertificateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomCertificateRequest")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/apps/{app}/certificates/acme`: issue a certificate for `hostname` by ACME.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AcmeCertificateRequest {
    pub hostname: String,
    /// `http-01` (the default) or `tls-alpn-01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
}

/// A certificate of an app (never its private key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Certificate {
    pub hostname: String,
    pub app: String,
    /// `custom` or `acme`.
    pub source: String,
    /// `pending` (ACME order in progress), `ready` or `failed`.
    pub status: String,
    /// Why issuance failed, when `status` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The leaf's issuer, once there is a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Unix milliseconds: end of the leaf's validity, once there is a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<u64>,
    pub created_at: u64,
    pub updated_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ListCertificatesResponse {
    pub certificates: Vec<Certificate>,
}
