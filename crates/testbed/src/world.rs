//! [`World`]: a whole multi-region Godwit on one box, on top of a [`Testbed`].
//!
//! A node `cp` (the control plane: the JetStream hub nats-server and `godwit api`) and a node
//! `<region>-<n>` per host (`godwit agent` and `godwit proxy`, and on each region's first host
//! that region's nats-server, a leaf of the hub), each in its own netns, joined by the WAN
//! router. The region's first host owns the anycast address (the region's edge). Simulated
//! users are more nodes ([`World::user`]); faults go through [`World::testbed`].
//!
//! State is regional (see `nats.rs`): a JetStream domain per region, each region's records
//! in its own buckets mirrored into every other region through the hub. Every proxy is also
//! a backhaul worker on `<host address>:`[`BACKHAUL_PORT`] with its agent's host id and a
//! shared secret, so an edge reaches machines on other hosts through their host's proxy.
//!
//! The world drives the `godwit` binary as subprocesses (it depends on no godwit crate), so
//! it knows their flags, not their code. Needs root, `nats-server`, `runc` and `nsenter`
//! (util-linux).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::{NodeInfo, NodeSpec, Testbed};

mod cleanup;
mod daemon;
mod errors;
mod http;
mod nats;
mod ready;
mod start;

pub use cleanup::host_tag;
pub use errors::{ApiCallError, StopError, UserError, WorldError};

use daemon::Daemon;

/// The anycast address of the regions' edges unless the spec says otherwise.
pub const DEFAULT_ANYCAST_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 1);
/// Apps are reached through the proxies as `<app>.<DOMAIN>` (plain HTTP on port 80).
pub const DOMAIN: &str = "godwit.test";
/// The control plane's node name.
pub const CP_NODE: &str = "cp";
/// Port of `godwit api` on the control plane's address.
pub const API_PORT: u16 = 4280;
/// Port of every `godwit agent` on its host's address.
const AGENT_PORT: u16 = 4281;
/// Port of every proxy's backhaul (worker) listener on its host's address.
pub const BACKHAUL_PORT: u16 = 4290;
/// Most hosts a world may have (agent name prefixes end in the host's number).
const MAX_HOSTS: u32 = 99;
/// How long API calls may take (creating a machine pulls its image).
const API_TIMEOUT: Duration = Duration::from_secs(90);

/// What [`World::start`] builds.
#[derive(Debug, Clone)]
pub struct WorldSpec {
    /// Testbed prefix: every netns is `<prefix>-<node>`. Unique per concurrent world.
    pub prefix: String,
    /// The `godwit` binary every daemon runs as.
    pub godwit_exe: PathBuf,
    /// Where the daemons keep their state, and `logs/<node>-<proc>.log`. Must not hold an
    /// earlier world's API (remove it first, after [`World::sweep`]).
    pub data_dir: PathBuf,
    /// Region codes (`ams`) or cities. The control plane (and the JetStream hub) goes to the
    /// region where state between the others detours least (the first listed on a tie).
    pub regions: Vec<String>,
    /// Hosts per region (at least 1).
    pub hosts_per_region: u32,
    /// Owned by each region's first host.
    pub anycast_v4: Ipv4Addr,
}

/// One host of the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldHost {
    /// Node name, `<region>-<n>`; also the agent's host id.
    pub node: String,
    /// Region code.
    pub region: String,
    pub ipv4: Ipv4Addr,
    /// The agent's `--name-prefix` (its machines' netns, veths, cgroups, runc ids).
    pub name_prefix: String,
    /// The agent's `--subnet`.
    pub subnet: String,
}

/// A running multi-region world. [`World::stop`] or dropping it destroys every machine
/// through the API, stops every daemon, destroys the testbed and sweeps what is left.
#[derive(Debug)]
pub struct World {
    spec: WorldSpec,
    /// `None` once torn down.
    testbed: Option<Testbed>,
    cp: NodeInfo,
    hosts: Vec<WorldHost>,
    /// In start order; stopped in reverse.
    daemons: Vec<Daemon>,
    /// Index of `godwit api` in `daemons`, once started.
    api_daemon: Option<usize>,
    token: String,
    next_user: Mutex<u32>,
    /// The spec's regions as codes.
    regions: Vec<String>,
}

// === impl WorldSpec ===

impl WorldSpec {
    /// One host per region, anycast at [`DEFAULT_ANYCAST_V4`].
    pub fn new(
        prefix: impl Into<String>,
        godwit_exe: impl Into<PathBuf>,
        data_dir: impl Into<PathBuf>,
        regions: &[&str],
    ) -> Self {
        Self {
            prefix: prefix.into(),
            godwit_exe: godwit_exe.into(),
            data_dir: data_dir.into(),
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            hosts_per_region: 1,
            anycast_v4: DEFAULT_ANYCAST_V4,
        }
    }
}

// === impl World ===

impl World {
    /// `http://<cp address>:4280`, reachable from the world's nodes (not from the root netns:
    /// use [`World::api`] there, or run a command in a node).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr())
    }

    /// The admin token `godwit api init` printed.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn spec(&self) -> &WorldSpec {
        &self.spec
    }

    /// The control plane's node.
    pub fn cp(&self) -> &NodeInfo {
        &self.cp
    }

    pub fn hosts(&self) -> &[WorldHost] {
        &self.hosts
    }

    /// The hosts of `region` (a code), in order.
    pub fn region_hosts(&self, region: &str) -> Vec<&WorldHost> {
        self.hosts.iter().filter(|h| h.region == region).collect()
    }

    /// The testbed, for faults ([`Testbed::set_down`], [`Testbed::partition`], ...) and for
    /// running commands in nodes ([`Testbed::command`]).
    pub fn testbed(&self) -> &Testbed {
        self.testbed
            .as_ref()
            .expect("the testbed lives until stop, which consumes the world")
    }

    /// Where the daemons' logs are: `<node>-<proc>.log`.
    pub fn logs_dir(&self) -> PathBuf {
        self.spec.data_dir.join("logs")
    }

    /// The last `lines` lines of every daemon's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut text = String::new();
        for daemon in &self.daemons {
            text.push_str(&format!(
                "\n--- last lines of {}:\n{}",
                daemon.log.display(),
                daemon.log_tail(lines)
            ));
        }
        text
    }

    /// Adds a simulated user in `city` (a region code or city name) and returns its node
    /// name, `user-<region>-<n>`; run commands there with [`Testbed::command`].
    pub async fn user(&self, city: &str) -> Result<String, UserError> {
        let testbed = self.testbed.as_ref().ok_or(UserError::Stopped)?;
        let code = testbed
            .delays()
            .resolve(city)
            .map_or_else(|| city.to_owned(), |r| r.code.clone());
        let n = {
            let mut next = self
                .next_user
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *next += 1;
            *next
        };
        let name = format!("user-{code}-{n}");
        testbed.add_node(&NodeSpec::new(&name, city)).await?;
        Ok(name)
    }

    /// Calls the world's API from the control plane's netns with the admin token (blocking,
    /// up to 90 s): `(status, body)`. `body` is JSON.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), ApiCallError> {
        let err = |source| ApiCallError::Request {
            method: method.to_owned(),
            path: path.to_owned(),
            source,
        };
        if self.testbed.is_none() {
            return Err(ApiCallError::Stopped);
        }
        let request = http::Request {
            method,
            path,
            token: Some(&self.token),
            body,
            timeout: API_TIMEOUT,
        };
        let response =
            http::request_in(&http::netns_path(&self.cp.netns), self.api_addr(), &request)
                .map_err(err)?;
        Ok((response.status, response.body))
    }

    /// Destroys every app's machines through the API (healing every fault first so every
    /// agent is reachable), stops the daemons, destroys the testbed and sweeps what is left.
    /// Blocks for a few seconds. Carries on after failures and returns the first.
    pub fn stop(mut self) -> Result<(), StopError> {
        let mut errors = self.teardown();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.swap_remove(0))
        }
    }

    /// Removes what a killed world with `prefix` and `data_dir` left: its namespaces and the
    /// processes in them, its machines' namespaces, cgroups and mounts. Returns (and logs)
    /// what it could not remove.
    pub fn sweep(prefix: &str, data_dir: &std::path::Path) -> Vec<StopError> {
        let mut errors = Vec::new();
        for n in 1..=MAX_HOSTS {
            cleanup::sweep_machine_netns(&cleanup::host_tag(prefix, n), &mut errors);
        }
        if let Err(source) = crate::sweep(prefix) {
            errors.push(StopError::Sweep {
                prefix: prefix.to_owned(),
                source,
            });
        }
        for n in 1..=MAX_HOSTS {
            cleanup::remove_cgroups(&cleanup::host_tag(prefix, n), &mut errors);
        }
        cleanup::unmount_under(data_dir, &mut errors);
        for error in &errors {
            tracing::warn!(error = %error, "sweep left something behind");
        }
        errors
    }

    fn api_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.cp.ipv4, API_PORT))
    }

    /// The cluster certificate key the API and every proxy share (`--cert-key-file`).
    pub fn cert_key_file(&self) -> std::path::PathBuf {
        self.spec.data_dir.join("cert.key")
    }

    fn teardown(&mut self) -> Vec<StopError> {
        let mut errors = Vec::new();
        if self.testbed.is_none() {
            return errors;
        }
        let api_running = self
            .api_daemon
            .is_some_and(|idx| self.daemons.get_mut(idx).is_some_and(Daemon::is_running));
        if api_running {
            match self.heal() {
                Ok(()) => self.destroy_machines(&mut errors),
                Err(source) => errors.push(StopError::Heal(source)),
            }
        }
        for daemon in self.daemons.iter_mut().rev() {
            daemon.stop();
        }
        for host in &self.hosts {
            cleanup::sweep_machine_netns(&host.name_prefix, &mut errors);
        }
        if let Some(testbed) = self.testbed.take()
            && let Err(source) = testbed.destroy()
        {
            errors.push(StopError::Testbed(source));
        }
        for host in &self.hosts {
            cleanup::remove_cgroups(&host.name_prefix, &mut errors);
        }
        cleanup::unmount_under(&self.spec.data_dir, &mut errors);
        if let Err(source) = crate::sweep(&self.spec.prefix) {
            errors.push(StopError::Sweep {
                prefix: self.spec.prefix.clone(),
                source,
            });
        }
        for error in &errors {
            tracing::warn!(error = %error, "world teardown");
        }
        tracing::info!(prefix = %self.spec.prefix, "world stopped");
        errors
    }

    /// Brings every node up, heals every partition and removes all loss.
    fn heal(&self) -> Result<(), crate::NodeError> {
        let testbed = self.testbed();
        let nodes = testbed.nodes();
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        for name in &names {
            testbed.set_down(name, false)?;
            testbed.set_loss(name, 0.0)?;
        }
        testbed.partition(&names, &names, false)
    }

    /// `DELETE /v1/apps/<app>?force=true` for every app: the agents destroy the machines.
    fn destroy_machines(&self, errors: &mut Vec<StopError>) {
        let apps = match self.api("GET", "/v1/apps", None) {
            Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("apps").and_then(|a| a.as_array()).cloned())
                .unwrap_or_default(),
            Ok((status, body)) => {
                errors.push(StopError::Machines {
                    app: "*".to_owned(),
                    detail: format!("listing apps answered {status}: {body}"),
                });
                return;
            }
            Err(e) => {
                errors.push(StopError::Machines {
                    app: "*".to_owned(),
                    detail: format!("listing apps failed: {e}"),
                });
                return;
            }
        };
        for app in apps.iter().filter_map(|a| a.get("name")?.as_str()) {
            match self.api("DELETE", &format!("/v1/apps/{app}?force=true"), None) {
                Ok((status, _)) if (200..300).contains(&status) => {}
                Ok((status, body)) => errors.push(StopError::Machines {
                    app: app.to_owned(),
                    detail: format!("answered {status}: {body}"),
                }),
                Err(e) => errors.push(StopError::Machines {
                    app: app.to_owned(),
                    detail: e.to_string(),
                }),
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.teardown();
    }
}
