//! [`Testbed`]: a set of network namespaces joined by the WAN router.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::latency::DelayTable;
use crate::netns::{self, IpError};
use crate::router::{Router, RouterStats};
use crate::tun;

mod errors;
mod exec;
mod faults;

pub use errors::{AnycastError, CreateError, DestroyError, ExecError, NodeError};

/// Name of the WAN interface inside every node's netns.
pub const DEVICE: &str = "wan0";
/// Highest node number: node `n` is `198.18.{n / 256}.{n % 256}`, so 198.18.255.0/24 stays
/// free for anycast addresses.
const MAX_NODE_NUMBER: u32 = 0xfeff;

/// A node to create: a host or a simulated user, and the region it sits in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Short name, unique in the testbed; the netns is `<prefix>-<name>`.
    pub name: String,
    /// Region code (`ams`) or city name (`Amsterdam`) from the delay table.
    pub city: String,
}

/// Testbed settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The delays between regions. Defaults to the embedded measured table.
    pub delays: Arc<DelayTable>,
}

/// A created node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// Region code, e.g. `ams`.
    pub region: String,
    /// Netns name (`<prefix>-<name>`), usable with `ip netns exec`.
    pub netns: String,
    /// Address on [`DEVICE`], in 198.18.0.0/15.
    pub ipv4: Ipv4Addr,
    /// Address on [`DEVICE`], in fd77::/64.
    pub ipv6: Ipv6Addr,
}

/// Many regions on one box: one netns per node, each with a TUN device whose packets the
/// WAN router delays by the one-way latency between the two nodes' cities.
///
/// Dropping it (or [`Testbed::destroy`]) stops the router, kills every process left in its
/// namespaces and deletes them, which also destroys the TUN devices.
#[derive(Debug)]
pub struct Testbed {
    prefix: String,
    delays: Arc<DelayTable>,
    router: Router,
    nodes: Mutex<Nodes>,
}

#[derive(Debug, Default)]
struct Nodes {
    by_name: BTreeMap<String, Entry>,
    next_number: u32,
}

#[derive(Debug)]
struct Entry {
    info: NodeInfo,
    /// Router index; `None` while the node is being set up.
    idx: Option<usize>,
}

// === impl NodeSpec ===

impl NodeSpec {
    pub fn new(name: impl Into<String>, city: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            city: city.into(),
        }
    }
}

// === impl Options ===

impl Default for Options {
    fn default() -> Self {
        Self {
            delays: Arc::new(DelayTable::embedded().clone()),
        }
    }
}

// === impl Testbed ===

impl Testbed {
    /// Creates a netns per node, named `<prefix>-<name>`, and starts the router.
    ///
    /// A netns that already exists under one of these names is an error: call
    /// [`crate::sweep`] with the prefix first to clear debris of a killed run.
    #[tracing::instrument(skip_all, fields(prefix = %prefix, nodes = nodes.len()))]
    pub async fn create(
        prefix: &str,
        nodes: &[NodeSpec],
        opts: Options,
    ) -> Result<Testbed, CreateError> {
        if prefix.is_empty() || !valid_name(prefix) {
            return Err(CreateError::InvalidPrefix {
                prefix: prefix.to_owned(),
            });
        }
        let router = Router::start(opts.delays.clone()).map_err(CreateError::Router)?;
        let testbed = Testbed {
            prefix: prefix.to_owned(),
            delays: opts.delays,
            router,
            nodes: Mutex::new(Nodes {
                by_name: BTreeMap::new(),
                next_number: 1,
            }),
        };
        // On error `testbed` is dropped, which removes the nodes made so far.
        for spec in nodes {
            testbed.add_node(spec).await?;
        }
        tracing::info!("testbed up");
        Ok(testbed)
    }

    /// Adds a node to a running testbed (e.g. a simulated user).
    pub async fn add_node(&self, spec: &NodeSpec) -> Result<NodeInfo, CreateError> {
        let info = self.reserve(spec)?;
        match self.set_up(&info).await {
            Ok(idx) => {
                if let Some(entry) = self.lock_nodes().by_name.get_mut(&info.name) {
                    entry.idx = Some(idx);
                }
                tracing::debug!(node = %info.name, region = %info.region, ipv4 = %info.ipv4, "node up");
                Ok(info)
            }
            Err(e) => {
                self.lock_nodes().by_name.remove(&info.name);
                if let Err(error) = netns::delete(&info.netns) {
                    tracing::warn!(%error, netns = %info.netns, "failed to clean up netns");
                }
                Err(e)
            }
        }
    }

    /// Removes a node: its traffic stops, its processes are killed, its netns deleted.
    pub fn remove_node(&self, name: &str) -> Result<(), NodeError> {
        let entry = self
            .lock_nodes()
            .by_name
            .remove(name)
            .ok_or_else(|| NodeError::Unknown {
                name: name.to_owned(),
            })?;
        if let Some(idx) = entry.idx {
            self.router.remove_node(idx);
        }
        netns::delete(&entry.info.netns).map_err(|source| NodeError::Delete {
            netns: entry.info.netns.clone(),
            source,
        })?;
        Ok(())
    }

    /// Makes `addr` an anycast address owned by `owners` (added to any earlier owners): each
    /// owner gets it on `lo`, and the router delivers it from each source to the nearest
    /// reachable owner by the delay table.
    pub async fn add_anycast(&self, addr: IpAddr, owners: &[&str]) -> Result<(), AnycastError> {
        let nodes = owners
            .iter()
            .map(|name| self.lookup(name))
            .collect::<Result<Vec<_>, _>>()?;
        let cidr = match addr {
            IpAddr::V4(_) => format!("{addr}/32"),
            IpAddr::V6(_) => format!("{addr}/128"),
        };
        for (info, _) in &nodes {
            netns::ip(
                &["-n", &info.netns, "addr", "replace", &cidr, "dev", "lo"],
                None,
            )
            .await
            .map_err(|source| AnycastError::Ip {
                node: info.name.clone(),
                source,
            })?;
        }
        let idxs: Vec<usize> = nodes.iter().map(|(_, idx)| *idx).collect();
        self.router.lock().topo.add_anycast(addr, &idxs);
        Ok(())
    }

    /// The owner that a packet from `from` to anycast `addr` reaches now, if any.
    pub fn anycast_target(&self, from: &str, addr: IpAddr) -> Result<Option<String>, NodeError> {
        let (_, src) = self.lookup(from)?;
        let Some(dst) = self.router.lock().topo.anycast_target(src, addr) else {
            return Ok(None);
        };
        Ok(self
            .lock_nodes()
            .by_name
            .values()
            .find(|e| e.idx == Some(dst))
            .map(|e| e.info.name.clone()))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn delays(&self) -> &DelayTable {
        &self.delays
    }

    /// Every node that is up, by name.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let nodes = self.lock_nodes();
        nodes
            .by_name
            .values()
            .filter(|e| e.idx.is_some())
            .map(|e| e.info.clone())
            .collect()
    }

    pub fn node(&self, name: &str) -> Option<NodeInfo> {
        self.lookup(name).ok().map(|(info, _)| info)
    }

    /// The router's packet counters.
    pub fn stats(&self) -> RouterStats {
        self.router.stats()
    }

    /// Stops the router, kills every process in the testbed's namespaces and deletes them.
    pub fn destroy(mut self) -> Result<(), DestroyError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), DestroyError> {
        self.router.stop();
        let entries = std::mem::take(&mut self.lock_nodes().by_name);
        let mut first_error = None;
        for entry in entries.into_values() {
            if let Err(source) = netns::delete(&entry.info.netns) {
                let netns = entry.info.netns;
                tracing::warn!(error = %source, %netns, "failed to delete netns");
                first_error.get_or_insert(DestroyError::Netns { netns, source });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn reserve(&self, spec: &NodeSpec) -> Result<NodeInfo, CreateError> {
        if spec.name.is_empty() || !valid_name(&spec.name) {
            return Err(CreateError::InvalidName {
                name: spec.name.clone(),
            });
        }
        let region = self
            .delays
            .resolve(&spec.city)
            .ok_or_else(|| CreateError::UnknownCity {
                city: spec.city.clone(),
            })?
            .code
            .clone();
        let netns = format!("{}-{}", self.prefix, spec.name);
        let mut nodes = self.lock_nodes();
        if nodes.by_name.contains_key(&spec.name) {
            return Err(CreateError::DuplicateNode {
                name: spec.name.clone(),
            });
        }
        if netns::path(&netns).exists() {
            return Err(CreateError::NetnsExists { netns });
        }
        let number = nodes.next_number;
        if number > MAX_NODE_NUMBER {
            return Err(CreateError::TooManyNodes);
        }
        nodes.next_number += 1;
        let [_, _, hi, lo] = number.to_be_bytes();
        let info = NodeInfo {
            name: spec.name.clone(),
            region,
            netns,
            ipv4: Ipv4Addr::new(198, 18, hi, lo),
            ipv6: Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, u16::from_be_bytes([hi, lo])),
        };
        nodes.by_name.insert(
            spec.name.clone(),
            Entry {
                info: info.clone(),
                idx: None,
            },
        );
        Ok(info)
    }

    /// Makes the netns and its TUN, configures them and registers the TUN with the router.
    async fn set_up(&self, info: &NodeInfo) -> Result<usize, CreateError> {
        let ip_err = |source: IpError| CreateError::Ip {
            node: info.name.clone(),
            source,
        };
        netns::ip(&["netns", "add", &info.netns], None)
            .await
            .map_err(ip_err)?;
        let tun_name = format!("gwt{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let tun = tun::open(&tun_name).map_err(|source| CreateError::Tun {
            node: info.name.clone(),
            source,
        })?;
        netns::ip(
            &[
                "link",
                "set",
                "dev",
                &tun_name,
                "netns",
                &info.netns,
                "name",
                DEVICE,
            ],
            None,
        )
        .await
        .map_err(ip_err)?;
        let script = format!(
            "link set lo up\n\
             link set {DEVICE} mtu 1500 txqueuelen 10000 up\n\
             addr add {v4}/15 dev {DEVICE}\n\
             addr add {v6}/64 dev {DEVICE} nodad\n\
             route add default dev {DEVICE}\n\
             route add ::/0 dev {DEVICE}\n",
            v4 = info.ipv4,
            v6 = info.ipv6,
        );
        netns::ip(&["-n", &info.netns, "-batch", "-"], Some(&script))
            .await
            .map_err(ip_err)?;
        let region = self
            .delays
            .index(&info.region)
            .expect("region was resolved by reserve");
        self.router
            .add_node(region, &[IpAddr::V4(info.ipv4), IpAddr::V6(info.ipv6)], tun)
            .map_err(|source| CreateError::Register {
                node: info.name.clone(),
                source,
            })
    }

    /// The node's info and router index; unknown or still-starting nodes are an error.
    fn lookup(&self, name: &str) -> Result<(NodeInfo, usize), NodeError> {
        let nodes = self.lock_nodes();
        match nodes.by_name.get(name) {
            Some(Entry {
                info,
                idx: Some(idx),
            }) => Ok((info.clone(), *idx)),
            _ => Err(NodeError::Unknown {
                name: name.to_owned(),
            }),
        }
    }

    fn lock_nodes(&self) -> MutexGuard<'_, Nodes> {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Err(error) = self.teardown() {
            tracing::error!(error = %error, prefix = %self.prefix, "failed to tear down testbed");
        }
    }
}

/// Names that are safe in a netns path and an `ip` argument.
fn valid_name(name: &str) -> bool {
    name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}
