//! godwit-api: the control plane behind `godwit api`.
//!
//! Owns organisations, bearer tokens, apps, encrypted app secrets, certificates of custom
//! hostnames (uploaded, or issued and renewed by ACME; published to the proxies through the
//! `godwit_certs` bucket), the host registry and the routing table (machine id → host) in an
//! embedded SQLite database, and serves the Machines
//! REST API under `/v1`, shaped like Fly's. Machine calls are placed with `godwit_sched` and
//! forwarded to the agent that owns the machine: the agent is the truth about its machines,
//! this crate never keeps a second copy of machine state.
//!
//! Must not depend on godwit-agent, godwit-runtime, godwit-image or godwit-cli; it talks to
//! agents only over their HTTP API and reads host and machine records from `godwit_state`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

mod agent;
mod auth;
mod certs;
mod crypto;
mod db;
mod error;
mod openapi;
mod routes;
mod server;

pub use certs::{RenewBefore, RenewBeforeError};
pub use error::{ApiError, InitError, ServeError};
pub use openapi::ApiDoc;
pub use routes::hosts::HostInfo;

/// File names inside the data directory.
pub const DB_FILE: &str = "api.db";
pub const KEY_FILE: &str = "secret.key";

/// How often the API looks for ACME certificates due for renewal, unless configured.
pub const DEFAULT_ACME_RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// How `godwit api` runs.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Holds `api.db` and `secret.key`, made by [`init`].
    pub data_dir: PathBuf,
    /// The NATS server holding the `godwit_hosts` and `godwit_machines` buckets.
    pub nats_url: String,
    /// Region of machines created without one.
    pub default_region: String,
    /// ACME directory URL for `POST /v1/apps/{app}/certificates/acme`; `None` turns ACME off.
    pub acme_directory: Option<String>,
    /// A PEM file of root CAs to trust for the ACME server (a test CA such as pebble's),
    /// instead of the system roots.
    pub acme_ca_pem: Option<std::path::PathBuf>,
    /// When an ACME certificate is renewed: by default in the last third of its lifetime.
    pub acme_renew_before: RenewBefore,
    /// How often renewal looks for due certificates; also the first backoff after a failed
    /// renewal, which doubles with each failure in a row.
    pub acme_renew_every: std::time::Duration,
    /// The cluster certificate key (32 random bytes, mode 0600; created when missing): the
    /// private keys of certificates cross NATS sealed with it, and every proxy opens them
    /// with the same file. Needed when ACME is on or certificates are stored; without it,
    /// uploads are refused.
    pub cert_key_file: Option<PathBuf>,
    /// The region whose NATS server `nats_url` is, and every region of the cluster: with more
    /// than one, hosts and machines are read from every region's bucket (local mirrors).
    pub state_topology: godwit_state::Topology,
}

/// What [`init`] made; the tokens are shown only here (they are stored hashed).
#[derive(Debug, Clone)]
pub struct InitOutput {
    pub org: String,
    /// Bearer token for every `/v1` call of organisation `org`.
    pub admin_token: String,
    /// Lets an agent call `POST /v1/hosts/register` and nothing else.
    pub join_token: String,
}

/// First-time setup of `data_dir`: database, encryption key, organisation `org`, an admin token
/// and a join token. Returns `None` (and changes nothing) if already initialised.
pub fn init(data_dir: &Path, org: &str) -> Result<Option<InitOutput>, InitError> {
    server::init(data_dir, org)
}

/// Serves the API on `listener` until `cancel` fires, then drains in-flight requests.
pub async fn serve(
    cfg: ApiConfig,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServeError> {
    server::serve(cfg, listener, cancel).await
}
