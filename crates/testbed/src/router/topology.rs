//! The router's routing state, free of I/O: which node owns which address, the anycast owners,
//! the delay between nodes and the faults in force.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::latency::DelayTable;

#[derive(Debug)]
pub(crate) struct Topology {
    table: Arc<DelayTable>,
    nodes: Vec<TopoNode>,
    by_addr: HashMap<IpAddr, usize>,
    anycast: HashMap<IpAddr, Vec<usize>>,
    /// Partitioned node pairs, stored as `(min, max)`.
    cuts: HashSet<(usize, usize)>,
}

#[derive(Debug)]
struct TopoNode {
    region: usize,
    down: bool,
    removed: bool,
    loss: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Route {
    Deliver {
        dst: usize,
        delay: Duration,
    },
    /// No node (or anycast group) owns the destination address.
    Unknown,
    /// The destination exists but a fault (down, partition) stops the packet.
    Unreachable,
}

// === impl Topology ===

impl Topology {
    pub(crate) fn new(table: Arc<DelayTable>) -> Self {
        Self {
            table,
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            anycast: HashMap::new(),
            cuts: HashSet::new(),
        }
    }

    /// Adds a node in region index `region` owning `addrs`; returns its index (never reused).
    pub(crate) fn add_node(&mut self, region: usize, addrs: &[IpAddr]) -> usize {
        let idx = self.nodes.len();
        self.nodes.push(TopoNode {
            region,
            down: false,
            removed: false,
            loss: 0.0,
        });
        for addr in addrs {
            self.by_addr.insert(*addr, idx);
        }
        idx
    }

    pub(crate) fn remove_node(&mut self, idx: usize) {
        if let Some(node) = self.nodes.get_mut(idx) {
            node.removed = true;
        }
        self.by_addr.retain(|_, owner| *owner != idx);
        for owners in self.anycast.values_mut() {
            owners.retain(|owner| *owner != idx);
        }
    }

    pub(crate) fn set_down(&mut self, idx: usize, down: bool) {
        if let Some(node) = self.nodes.get_mut(idx) {
            node.down = down;
        }
    }

    pub(crate) fn set_loss(&mut self, idx: usize, loss: f64) {
        if let Some(node) = self.nodes.get_mut(idx) {
            node.loss = loss.clamp(0.0, 1.0);
        }
    }

    pub(crate) fn set_cut(&mut self, a: usize, b: usize, cut: bool) {
        let key = (a.min(b), a.max(b));
        if cut && a != b {
            self.cuts.insert(key);
        } else {
            self.cuts.remove(&key);
        }
    }

    /// Adds `owners` to the anycast group of `addr` (creating it).
    pub(crate) fn add_anycast(&mut self, addr: IpAddr, owners: &[usize]) {
        let group = self.anycast.entry(addr).or_default();
        for owner in owners {
            if !group.contains(owner) {
                group.push(*owner);
            }
        }
    }

    /// Whether a packet from `src` may reach `dst` now: both up and not partitioned.
    pub(crate) fn reachable(&self, src: usize, dst: usize) -> bool {
        let up = |i: usize| self.nodes.get(i).is_some_and(|n| !n.down && !n.removed);
        up(src) && up(dst) && !self.cuts.contains(&(src.min(dst), src.max(dst)))
    }

    pub(crate) fn delay(&self, src: usize, dst: usize) -> Duration {
        self.table
            .one_way_idx(self.nodes[src].region, self.nodes[dst].region)
    }

    /// Probability that a packet between `src` and `dst` is lost (each end's loss applies).
    pub(crate) fn loss(&self, src: usize, dst: usize) -> f64 {
        let keep = |i: usize| 1.0 - self.nodes.get(i).map_or(0.0, |n| n.loss);
        1.0 - keep(src) * keep(dst)
    }

    /// The anycast owner that serves `src`: the nearest one it can reach, ties to the owner
    /// added first. `None` if `addr` is not anycast or no owner is reachable.
    pub(crate) fn anycast_target(&self, src: usize, addr: IpAddr) -> Option<usize> {
        self.anycast
            .get(&addr)?
            .iter()
            .copied()
            .filter(|owner| self.reachable(src, *owner))
            .min_by_key(|owner| self.delay(src, *owner))
    }

    pub(crate) fn route(&self, src: usize, dst_addr: IpAddr) -> Route {
        let dst = if let Some(dst) = self.by_addr.get(&dst_addr) {
            *dst
        } else if self.anycast.contains_key(&dst_addr) {
            match self.anycast_target(src, dst_addr) {
                Some(dst) => dst,
                None => return Route::Unreachable,
            }
        } else {
            return Route::Unknown;
        };
        if !self.reachable(src, dst) {
            return Route::Unreachable;
        }
        Route::Deliver {
            dst,
            delay: self.delay(src, dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    /// Nodes 0..4 in ams, fra, iad, syd at 198.18.0.1..4; anycast .255 on fra, iad, syd.
    fn world() -> Topology {
        let table = Arc::new(DelayTable::embedded().clone());
        let mut topo = Topology::new(table.clone());
        for (i, code) in ["ams", "fra", "iad", "syd"].into_iter().enumerate() {
            let region = table.index(code).unwrap();
            topo.add_node(region, &[ip(u8::try_from(i).unwrap() + 1)]);
        }
        topo.add_anycast(ip(255), &[1, 2, 3]);
        topo
    }

    #[test]
    fn unicast_uses_city_delay() {
        let topo = world();
        let want = DelayTable::embedded().one_way("ams", "syd").unwrap();
        assert_eq!(
            topo.route(0, ip(4)),
            Route::Deliver {
                dst: 3,
                delay: want
            }
        );
        assert_eq!(topo.route(0, ip(99)), Route::Unknown);
    }

    #[test]
    fn anycast_picks_nearest_reachable_owner() {
        let mut topo = world();
        assert_eq!(topo.anycast_target(0, ip(255)), Some(1));
        assert_eq!(topo.anycast_target(3, ip(255)), Some(3));
        topo.set_down(1, true);
        assert_eq!(topo.anycast_target(0, ip(255)), Some(2));
        topo.set_cut(0, 2, true);
        assert_eq!(topo.anycast_target(0, ip(255)), Some(3));
        topo.set_down(3, true);
        assert_eq!(topo.route(0, ip(255)), Route::Unreachable);
        topo.set_down(1, false);
        assert!(matches!(
            topo.route(0, ip(255)),
            Route::Deliver { dst: 1, .. }
        ));
    }

    #[test]
    fn faults_block_both_directions_and_heal() {
        let mut topo = world();
        topo.set_cut(2, 0, true);
        assert_eq!(topo.route(0, ip(3)), Route::Unreachable);
        assert_eq!(topo.route(2, ip(1)), Route::Unreachable);
        assert!(matches!(topo.route(0, ip(2)), Route::Deliver { .. }));
        topo.set_cut(0, 2, false);
        assert!(matches!(topo.route(2, ip(1)), Route::Deliver { .. }));
        topo.remove_node(1);
        assert_eq!(topo.route(0, ip(2)), Route::Unknown);
        assert_eq!(topo.anycast_target(0, ip(255)), Some(2));
    }

    #[test]
    fn loss_combines_both_ends() {
        let mut topo = world();
        topo.set_loss(0, 0.5);
        topo.set_loss(1, 0.5);
        assert!((topo.loss(0, 1) - 0.75).abs() < 1e-9);
        assert!((topo.loss(2, 3)).abs() < 1e-9);
        topo.set_loss(2, 7.0);
        assert!((topo.loss(2, 3) - 1.0).abs() < 1e-9);
    }
}
