//! [`World::start`]: the testbed, then nats-servers, the API, and per host an agent and a
//! proxy, each waited for with a deadline.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::daemon;
use super::ready::{Check, has_leaf_connection, hosts_check, monitor_check};
use super::{
    AGENT_PORT, API_PORT, BACKHAUL_PORT, CP_NODE, DOMAIN, MAX_HOSTS, World, WorldError, WorldHost,
    WorldSpec, cleanup, http, nats,
};
use crate::{DelayTable, NodeSpec, Options, Testbed};

/// The programs the world runs besides `godwit`.
#[derive(Debug)]
struct Programs {
    nats_server: PathBuf,
    runc: PathBuf,
}

// === impl World ===

impl World {
    /// Starts the world and waits until every daemon is ready and every host registered. On
    /// error everything started so far is stopped and removed.
    #[tracing::instrument(skip_all, fields(prefix = %spec.prefix))]
    pub async fn start(spec: WorldSpec) -> Result<World, WorldError> {
        let regions = check_spec(&spec)?;
        let programs = Programs::find()?;
        for dir in ["logs", "nats", "hosts"] {
            let path = spec.data_dir.join(dir);
            std::fs::create_dir_all(&path).map_err(|source| WorldError::Io {
                action: "create",
                path,
                source,
            })?;
        }
        let mut nodes = vec![NodeSpec::new(CP_NODE, &regions[0])];
        for region in &regions {
            for n in 1..=spec.hosts_per_region {
                nodes.push(NodeSpec::new(format!("{region}-{n}"), region));
            }
        }
        let testbed = Testbed::create(&spec.prefix, &nodes, Options::default()).await?;
        let cp = testbed.node(CP_NODE).expect("the testbed made every node");
        let hosts = nodes[1..]
            .iter()
            .zip(1..)
            .map(|(node, n)| {
                let info = testbed
                    .node(&node.name)
                    .expect("the testbed made every node");
                WorldHost {
                    node: info.name,
                    region: info.region,
                    ipv4: info.ipv4,
                    name_prefix: cleanup::host_tag(&spec.prefix, n),
                    subnet: format!("10.201.{n}.0/24"),
                }
            })
            .collect();
        // From here on, an error drops `world`, which stops and removes what was started.
        let mut world = World {
            spec,
            testbed: Some(testbed),
            cp,
            hosts,
            daemons: Vec::new(),
            api_daemon: None,
            token: String::new(),
            next_user: Mutex::new(0),
            regions: regions.clone(),
        };
        let edges: Vec<String> = regions
            .iter()
            .filter_map(|r| world.region_hosts(r).first().map(|h| h.node.clone()))
            .collect();
        let edges: Vec<&str> = edges.iter().map(String::as_str).collect();
        world
            .testbed()
            .add_anycast(IpAddr::V4(world.spec.anycast_v4), &edges)
            .await?;
        world.start_nats(&programs, &regions).await?;
        let join_token = world.init_api().await?;
        world.start_api().await?;
        world.start_hosts(&programs, &join_token).await?;
        tracing::info!(hosts = world.hosts.len(), "world up");
        Ok(world)
    }

    /// The hub in `cp`, then every region's server, each waited for (the regions' until
    /// their leaf connection is up).
    async fn start_nats(
        &mut self,
        programs: &Programs,
        regions: &[String],
    ) -> Result<(), WorldError> {
        let nats_dir = self.spec.data_dir.join("nats");
        let hub_conf = nats_dir.join("cp.conf");
        let hub_name = format!("{}-cp", self.spec.prefix);
        write_file(
            &hub_conf,
            &nats::hub_config(&hub_name, &nats_dir.join("cp-js")),
        )?;
        let cp = self.cp.clone();
        let idx = self.spawn(
            &cp.name,
            &cp.netns,
            "nats",
            &programs.nats_server,
            &["-c".into(), hub_conf.display().to_string()],
        )?;
        let check = monitor_check(&cp.netns, "/healthz", None);
        self.wait(&[idx], "the hub nats-server is not healthy", check)
            .await?;

        let mut waits = Vec::new();
        for region in regions {
            let edge = self.region_hosts(region)[0].clone();
            let conf = nats_dir.join(format!("{region}.conf"));
            let name = format!("{}-{region}", self.spec.prefix);
            let store = nats_dir.join(format!("{region}-js"));
            write_file(
                &conf,
                &nats::region_config(&name, region, self.cp.ipv4, &store),
            )?;
            let netns = self.node_netns(&edge.node);
            let idx = self.spawn(
                &edge.node,
                &netns,
                "nats",
                &programs.nats_server,
                &["-c".into(), conf.display().to_string()],
            )?;
            waits.push((idx, region.clone(), netns));
        }
        for (idx, region, netns) in waits {
            let check = monitor_check(&netns, "/varz", Some(has_leaf_connection));
            let what = format!("the {region} nats-server has no leaf connection to the hub");
            self.wait(&[idx], &what, check).await?;
        }
        Ok(())
    }

    /// `godwit api init`; keeps the admin token, returns the join token.
    async fn init_api(&mut self) -> Result<String, WorldError> {
        let api_dir = self.spec.data_dir.join("api");
        let output = tokio::process::Command::new(&self.spec.godwit_exe)
            .args(["api", "init", "--org", "personal", "--data-dir"])
            .arg(&api_dir)
            .output()
            .await
            .map_err(|source| WorldError::Spawn {
                label: "godwit api init".to_owned(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let init_err = || WorldError::Init {
            output: format!(
                "{}: {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
        };
        if !output.status.success() {
            return Err(init_err());
        }
        // The JSON object may follow a human-readable line.
        let json = stdout.find('{').map_or("", |start| &stdout[start..]);
        let tokens: serde_json::Value =
            serde_json::from_str(json.trim()).map_err(|_| init_err())?;
        let token = |name: &str| tokens.get(name).and_then(|t| t.as_str()).map(str::to_owned);
        let (Some(admin), Some(join)) = (token("admin_token"), token("join_token")) else {
            return Err(init_err());
        };
        self.token = admin;
        Ok(join)
    }

    /// `godwit api` in `cp`, on the control plane's address, with the hub as its NATS.
    async fn start_api(&mut self) -> Result<(), WorldError> {
        let cp = self.cp.clone();
        let args = vec![
            "api".to_owned(),
            "--data-dir".to_owned(),
            self.spec.data_dir.join("api").display().to_string(),
            "--listen".to_owned(),
            format!("{}:{API_PORT}", cp.ipv4),
            "--nats-url".to_owned(),
            format!("nats://{}:{}", cp.ipv4, nats::CLIENT_PORT),
            "--region".to_owned(),
            cp.region.clone(),
            "--regions".to_owned(),
            nats::state_regions(&self.regions),
            "--state-region".to_owned(),
            nats::HUB_DOMAIN.to_owned(),
            // The API makes the file; every proxy gets the same one (started after the API).
            "--cert-key-file".to_owned(),
            self.cert_key_file().display().to_string(),
        ];
        let exe = self.spec.godwit_exe.clone();
        let idx = self.spawn(&cp.name, &cp.netns, "api", &exe, &args)?;
        self.api_daemon = Some(idx);
        let netns = http::netns_path(&cp.netns);
        let addr = self.api_addr();
        let check: Check = Arc::new(move || {
            let req = http::Request {
                method: "GET",
                path: "/v1/healthz",
                token: None,
                body: None,
                timeout: Duration::from_secs(2),
            };
            http::request_in(&netns, addr, &req).is_ok_and(|r| r.status == 200)
        });
        self.wait(&[idx], "the API is not healthy", check).await
    }

    /// An agent and a proxy per host; waits until every host is registered with its record
    /// published and every proxy accepts connections.
    async fn start_hosts(
        &mut self,
        programs: &Programs,
        join_token: &str,
    ) -> Result<(), WorldError> {
        let join_file = self.spec.data_dir.join("join-token");
        let token_file = self.spec.data_dir.join("proxy-token");
        let secret_file = self.spec.data_dir.join("backhaul-secret");
        write_private(&join_file, join_token)?;
        write_private(&token_file, &self.token.clone())?;
        write_private(&secret_file, &backhaul_secret())?;
        let cert_key_file = self.cert_key_file();
        let state_regions = nats::state_regions(&self.regions);
        let exe = self.spec.godwit_exe.clone();
        let api_url = self.api_url();
        let mut started = Vec::new();
        for host in self.hosts.clone() {
            let edge = self.region_hosts(&host.region)[0].ipv4;
            let nats_url = format!("nats://{edge}:{}", nats::CLIENT_PORT);
            let agent_url = format!("http://{}:{AGENT_PORT}", host.ipv4);
            let data = self.spec.data_dir.join("hosts").join(&host.node);
            let agent_args: Vec<String> = [
                "agent",
                "--data-dir",
                &data.display().to_string(),
                "--api-url",
                &api_url,
                "--join-token-file",
                &join_file.display().to_string(),
                "--host-id",
                &host.node,
                "--region",
                &host.region,
                "--nats-url",
                &nats_url,
                "--listen",
                &format!("{}:{AGENT_PORT}", host.ipv4),
                "--advertise-url",
                &agent_url,
                "--cpus",
                "4",
                "--memory-mb",
                "4096",
                "--subnet",
                &host.subnet,
                "--runc",
                &programs.runc.display().to_string(),
                "--name-prefix",
                &host.name_prefix,
                "--regions",
                &state_regions,
            ]
            .map(str::to_owned)
            .to_vec();
            let proxy_args: Vec<String> = [
                "proxy",
                "--nats-url",
                &nats_url,
                "--api-url",
                &api_url,
                "--token-file",
                &token_file.display().to_string(),
                "--domain",
                DOMAIN,
                "--region",
                &host.region,
                "--http-listen",
                "0.0.0.0:80",
                "--regions",
                &state_regions,
                "--backhaul-listen",
                &format!("{}:{BACKHAUL_PORT}", host.ipv4),
                "--host-id",
                &host.node,
                "--backhaul-secret-file",
                &secret_file.display().to_string(),
                "--cert-key-file",
                &cert_key_file.display().to_string(),
            ]
            .map(str::to_owned)
            .to_vec();
            let netns = self.node_netns(&host.node);
            let agent = self.spawn(&host.node, &netns, "agent", &exe, &agent_args)?;
            let proxy = self.spawn(&host.node, &netns, "proxy", &exe, &proxy_args)?;
            started.push((host.node.clone(), host.ipv4, netns, agent, proxy));
        }
        let agents: Vec<usize> = started.iter().map(|(_, _, _, agent, _)| *agent).collect();
        let wanted: Vec<String> = self.hosts.iter().map(|h| h.node.clone()).collect();
        let check = hosts_check(self, wanted);
        self.wait(
            &agents,
            "not every host registered and published its record",
            check,
        )
        .await?;
        for (node, ipv4, netns, _, proxy) in started {
            let netns = http::netns_path(&netns);
            let http_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 80));
            let backhaul_addr = SocketAddr::from((ipv4, BACKHAUL_PORT));
            let check: Check = Arc::new(move || {
                http::accepts_in(&netns, http_addr) && http::accepts_in(&netns, backhaul_addr)
            });
            self.wait(
                &[proxy],
                &format!("the proxy of {node} does not accept connections"),
                check,
            )
            .await?;
        }
        Ok(())
    }
}

// === impl Programs ===

impl Programs {
    fn find() -> Result<Self, WorldError> {
        let find = |program: &'static str, package: &'static str| {
            daemon::find_program(program).ok_or(WorldError::MissingProgram { program, package })
        };
        find("nsenter", "util-linux")?;
        Ok(Self {
            nats_server: find("nats-server", "nats-server")?,
            runc: find("runc", "runc")?,
        })
    }
}

/// The spec's regions as codes, checked.
fn check_spec(spec: &WorldSpec) -> Result<Vec<String>, WorldError> {
    let spec_err = |reason: String| WorldError::Spec { reason };
    if spec.regions.is_empty() {
        return Err(spec_err("no regions".to_owned()));
    }
    let table = DelayTable::embedded();
    let mut codes: Vec<String> = Vec::new();
    for region in &spec.regions {
        let code = table
            .resolve(region)
            .ok_or_else(|| spec_err(format!("unknown region or city {region:?}")))?
            .code
            .clone();
        if codes.contains(&code) {
            return Err(spec_err(format!("region {code} is listed twice")));
        }
        codes.push(code);
    }
    hub_first(&mut codes, table);
    let hosts = u32::try_from(codes.len())
        .unwrap_or(u32::MAX)
        .saturating_mul(spec.hosts_per_region);
    if spec.hosts_per_region == 0 || hosts > MAX_HOSTS {
        return Err(spec_err(format!(
            "{} hosts per region in {} regions: want 1 to {MAX_HOSTS} hosts",
            spec.hosts_per_region,
            codes.len()
        )));
    }
    if spec.data_dir.join("api").exists() {
        return Err(spec_err(format!(
            "{} already holds an API: remove it first",
            spec.data_dir.display()
        )));
    }
    Ok(codes)
}

fn write_file(path: &Path, text: &str) -> Result<(), WorldError> {
    std::fs::write(path, text).map_err(|source| WorldError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// A fresh random backhaul secret: 32 hex digits.
fn backhaul_secret() -> String {
    let secret: u128 = rand::random();
    format!("{secret:032x}")
}

/// Writes a secret readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), WorldError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|source| WorldError::Io {
            action: "write",
            path: path.to_owned(),
            source,
        })
}

/// Moves the region that should hold the control plane (and the JetStream hub) to the front.
/// State between two other regions crosses the hub, so the hub goes where the worst detour
/// (`a→hub + hub→b − a→b`, over every pair) is smallest; ties keep the first listed. For ams,
/// iad, syd that is iad (ams→iad→syd is 5 ms longer than ams→syd), not ams (iad→ams→syd:
/// 79 ms longer than iad→syd).
fn hub_first(codes: &mut [String], table: &DelayTable) {
    let one_way = |a: &str, b: &str| table.one_way(a, b).unwrap_or_default();
    let worst_detour = |hub: &str| {
        let mut worst = std::time::Duration::ZERO;
        for a in codes.iter() {
            for b in codes.iter() {
                let via = one_way(a, hub) + one_way(hub, b);
                worst = worst.max(via.saturating_sub(one_way(a, b)));
            }
        }
        worst
    };
    let mut best = 0;
    let mut best_detour = worst_detour(&codes[0]);
    for (i, hub) in codes.iter().enumerate().skip(1) {
        let detour = worst_detour(hub);
        if detour < best_detour {
            (best, best_detour) = (i, detour);
        }
    }
    codes[..=best].rotate_right(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(regions: &[&str]) -> Vec<String> {
        let mut codes: Vec<String> = regions.iter().map(|r| (*r).to_owned()).collect();
        hub_first(&mut codes, DelayTable::embedded());
        codes
    }

    #[test]
    fn the_hub_goes_where_no_pair_detours_far() {
        assert_eq!(order(&["ams", "iad", "syd"]), ["iad", "ams", "syd"]);
        assert_eq!(order(&["syd", "ams", "iad"]), ["iad", "syd", "ams"]);
        // Two regions never detour: the first listed keeps the control plane.
        assert_eq!(order(&["ams", "syd"]), ["ams", "syd"]);
        assert_eq!(order(&["syd", "ams"]), ["syd", "ams"]);
        assert_eq!(order(&["fra"]), ["fra"]);
    }
}
