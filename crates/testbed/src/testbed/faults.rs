//! Faults on demand: hosts and regions down, partitions, packet loss.

use super::{NodeError, Testbed};

// === impl Testbed ===

impl Testbed {
    /// Takes a node down (every packet to or from it is dropped, including packets already in
    /// flight) or brings it back. Anycast traffic fails over to the next nearest owner.
    pub fn set_down(&self, node: &str, down: bool) -> Result<(), NodeError> {
        let (_, idx) = self.lookup(node)?;
        self.router.lock().topo.set_down(idx, down);
        tracing::info!(node, down, "node state changed");
        Ok(())
    }

    /// Takes every node of a region (code or city) down or up; returns how many it changed.
    pub fn set_region_down(&self, region: &str, down: bool) -> Result<usize, NodeError> {
        let code = self
            .delays
            .resolve(region)
            .ok_or_else(|| NodeError::UnknownRegion {
                region: region.to_owned(),
            })?
            .code
            .clone();
        let idxs: Vec<usize> = self
            .lock_nodes()
            .by_name
            .values()
            .filter(|e| e.info.region == code)
            .filter_map(|e| e.idx)
            .collect();
        let mut state = self.router.lock();
        for idx in &idxs {
            state.topo.set_down(*idx, down);
        }
        tracing::info!(region = %code, down, nodes = idxs.len(), "region state changed");
        Ok(idxs.len())
    }

    /// Cuts (`cut = true`) or heals every link between a node of `a` and a node of `b`, both
    /// ways. Anycast avoids owners the source is cut off from.
    pub fn partition(&self, a: &[&str], b: &[&str], cut: bool) -> Result<(), NodeError> {
        let idxs = |names: &[&str]| {
            names
                .iter()
                .map(|n| self.lookup(n).map(|(_, idx)| idx))
                .collect::<Result<Vec<_>, _>>()
        };
        let (a_idxs, b_idxs) = (idxs(a)?, idxs(b)?);
        let mut state = self.router.lock();
        for x in &a_idxs {
            for y in &b_idxs {
                state.topo.set_cut(*x, *y, cut);
            }
        }
        tracing::info!(?a, ?b, cut, "partition changed");
        Ok(())
    }

    /// Drops `fraction` (0.0..=1.0) of the packets sent or received by `node`.
    pub fn set_loss(&self, node: &str, fraction: f64) -> Result<(), NodeError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(NodeError::Loss { value: fraction });
        }
        let (_, idx) = self.lookup(node)?;
        self.router.lock().topo.set_loss(idx, fraction);
        tracing::info!(node, fraction, "packet loss changed");
        Ok(())
    }
}
