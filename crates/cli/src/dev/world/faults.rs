//! The daemon's answers: the world's status, user nodes per city, and faults, with the faults
//! in force remembered (the router knows them too, but cannot list them).

use std::collections::{BTreeMap, BTreeSet};

use godwit_testbed::DelayTable;
use godwit_testbed::world::{DOMAIN, World};

use super::control::{Fault, HostStatus, Request, Response, WorldStatus};

/// The daemon's view of its world.
#[derive(Debug)]
pub(super) struct Control<'w> {
    world: &'w World,
    api_url: String,
    /// Hosts taken down.
    down: BTreeSet<String>,
    /// Host → percent of packets dropped.
    loss: BTreeMap<String, f64>,
    /// Region pairs (sorted) cut from each other.
    partitions: BTreeSet<(String, String)>,
    /// Region code → the user node living there.
    users: BTreeMap<String, String>,
}

// === impl Control ===

impl<'w> Control<'w> {
    pub(super) fn new(world: &'w World, api_url: String) -> Self {
        Self {
            world,
            api_url,
            down: BTreeSet::new(),
            loss: BTreeMap::new(),
            partitions: BTreeSet::new(),
            users: BTreeMap::new(),
        }
    }

    pub(super) async fn answer(&mut self, request: Request) -> Response {
        let result = match request {
            Request::Status => Ok(Response::Status(self.status())),
            Request::User { city } => self.user(&city).await,
            Request::Fault { fault } => self.fault(&fault).map(|message| {
                tracing::info!(%message, "fault changed");
                Response::Done { message }
            }),
            Request::Down => Ok(Response::Done {
                message: "stopping the world".to_owned(),
            }),
        };
        result.unwrap_or_else(|message| Response::Error { message })
    }

    fn status(&self) -> WorldStatus {
        let spec = self.world.spec();
        let mut regions: Vec<String> = Vec::new();
        for host in self.world.hosts() {
            if !regions.contains(&host.region) {
                regions.push(host.region.clone());
            }
        }
        WorldStatus {
            prefix: spec.prefix.clone(),
            regions,
            api_url: self.api_url.clone(),
            anycast: spec.anycast_v4.to_string(),
            domain: DOMAIN.to_owned(),
            hosts: self
                .world
                .hosts()
                .iter()
                .map(|h| HostStatus {
                    node: h.node.clone(),
                    region: h.region.clone(),
                    ipv4: h.ipv4.to_string(),
                    name_prefix: h.name_prefix.clone(),
                    down: self.down.contains(&h.node),
                    loss_percent: self.loss.get(&h.node).copied().unwrap_or(0.0),
                })
                .collect(),
            partitions: self.partitions.iter().cloned().collect(),
            users: self
                .users
                .iter()
                .map(|(c, n)| (c.clone(), n.clone()))
                .collect(),
        }
    }

    /// The user node of `city`, made (and cut off as partitions in force say) on first use.
    async fn user(&mut self, city: &str) -> Result<Response, String> {
        let code = region_code(city)?;
        let node = match self.users.get(&code) {
            Some(node) => node.clone(),
            None => {
                let node = self
                    .world
                    .user(city)
                    .await
                    .map_err(|e| format!("failed to add a user in {city}: {}", chain(&e)))?;
                for (a, b) in self.partitions.clone() {
                    let other = match (&code, a, b) {
                        (code, a, b) if *code == a => b,
                        (code, a, b) if *code == b => a,
                        _ => continue,
                    };
                    let others = self.nodes_in(&other);
                    let others: Vec<&str> = others.iter().map(String::as_str).collect();
                    self.world
                        .testbed()
                        .partition(&[node.as_str()], &others, true)
                        .map_err(|e| chain(&e))?;
                }
                self.users.insert(code, node.clone());
                node
            }
        };
        let netns = self
            .world
            .testbed()
            .node(&node)
            .ok_or_else(|| format!("user node {node} is gone"))?
            .netns;
        Ok(Response::User { node, netns })
    }

    /// Applies `fault`; a line saying what changed.
    fn fault(&mut self, fault: &Fault) -> Result<String, String> {
        let testbed = self.world.testbed();
        match fault {
            Fault::Down { target } | Fault::Up { target } => {
                let down = matches!(fault, Fault::Down { .. });
                let hosts = self.hosts_of(target)?;
                for host in &hosts {
                    testbed.set_down(host, down).map_err(|e| chain(&e))?;
                    if down {
                        self.down.insert(host.clone());
                    } else {
                        self.down.remove(host);
                    }
                }
                let state = if down { "down" } else { "up" };
                Ok(format!("{} {state}", hosts.join(", ")))
            }
            Fault::Partition { a, b } => {
                let pair = self.region_pair(a, b)?;
                self.cut(&pair, true)?;
                let message = format!("{} and {} partitioned", pair.0, pair.1);
                self.partitions.insert(pair);
                Ok(message)
            }
            Fault::Heal {
                a: Some(a),
                b: Some(b),
            } => {
                let pair = self.region_pair(a, b)?;
                self.cut(&pair, false)?;
                self.partitions.remove(&pair);
                Ok(format!("{} and {} healed", pair.0, pair.1))
            }
            Fault::Heal { a: None, b: None } => {
                let pairs = std::mem::take(&mut self.partitions);
                for pair in &pairs {
                    self.cut(pair, false)?;
                }
                Ok(format!("{} partition(s) healed", pairs.len()))
            }
            Fault::Heal { .. } => Err("name two regions to heal, or none to heal all".to_owned()),
            Fault::Loss { target, percent } => {
                if !(0.0..=100.0).contains(percent) {
                    return Err(format!("loss must be 0 to 100 percent, not {percent}"));
                }
                let hosts = self.hosts_of(target)?;
                for host in &hosts {
                    testbed
                        .set_loss(host, percent / 100.0)
                        .map_err(|e| chain(&e))?;
                    if *percent > 0.0 {
                        self.loss.insert(host.clone(), *percent);
                    } else {
                        self.loss.remove(host);
                    }
                }
                Ok(format!("{} lose {percent}% of packets", hosts.join(", ")))
            }
        }
    }

    /// A host by node name, or every host of a region (code or city).
    fn hosts_of(&self, target: &str) -> Result<Vec<String>, String> {
        let hosts = self.world.hosts();
        if hosts.iter().any(|h| h.node == target) {
            return Ok(vec![target.to_owned()]);
        }
        let found: Vec<String> = region_code(target)
            .map(|code| {
                self.world
                    .region_hosts(&code)
                    .iter()
                    .map(|h| h.node.clone())
                    .collect()
            })
            .unwrap_or_default();
        if found.is_empty() {
            let names: Vec<&str> = hosts.iter().map(|h| h.node.as_str()).collect();
            return Err(format!(
                "no host or region {target:?} in this world (hosts: {})",
                names.join(", ")
            ));
        }
        Ok(found)
    }

    /// Two distinct region codes, sorted.
    fn region_pair(&self, a: &str, b: &str) -> Result<(String, String), String> {
        let (a, b) = (region_code(a)?, region_code(b)?);
        if a == b {
            return Err(format!("cannot partition {a} from itself"));
        }
        Ok(if a < b { (a, b) } else { (b, a) })
    }

    /// Cuts or heals every link between a node of one region and a node of the other.
    fn cut(&self, (a, b): &(String, String), cut: bool) -> Result<(), String> {
        let (a_nodes, b_nodes) = (self.nodes_in(a), self.nodes_in(b));
        let a_nodes: Vec<&str> = a_nodes.iter().map(String::as_str).collect();
        let b_nodes: Vec<&str> = b_nodes.iter().map(String::as_str).collect();
        self.world
            .testbed()
            .partition(&a_nodes, &b_nodes, cut)
            .map_err(|e| chain(&e))
    }

    /// Every node (host, user, control plane) in region `code`.
    fn nodes_in(&self, code: &str) -> Vec<String> {
        self.world
            .testbed()
            .nodes()
            .into_iter()
            .filter(|n| n.region == code)
            .map(|n| n.name)
            .collect()
    }
}

/// The region code of a code or city.
fn region_code(code_or_city: &str) -> Result<String, String> {
    DelayTable::embedded()
        .resolve(code_or_city)
        .map(|r| r.code.clone())
        .ok_or_else(|| format!("unknown region or city {code_or_city:?}"))
}

/// An error and its sources, one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
