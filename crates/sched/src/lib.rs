//! Placement as a pure function: given what every host has free, which hosts get the
//! machines of one request, or why none can.
//!
//! Owns the capacity model (cpus overcommitted up to [`CPU_OVERCOMMIT`], memory never),
//! region fallback lists, spreading an app's machines over the hosts of a region, and the
//! explanation a user sees when nothing fits.
//!
//! Must not depend on any other godwit crate, and does no I/O: no tokio, no clock, no
//! randomness, no logging. The same input always gives the same output, whatever the order
//! of the hosts in the view.
#![forbid(unsafe_code)]

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

mod error;

pub use error::{HostFree, PlaceError};

/// How many guest cpus may share one host cpu. Memory is never overcommitted.
pub const CPU_OVERCOMMIT: u32 = 4;

/// What the scheduler knows about one host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostView {
    pub host_id: String,
    pub region: String,
    pub cpus_total: u32,
    pub memory_mb_total: u64,
    /// Sum of the cpus of the machines placed on this host.
    pub cpus_reserved: u32,
    /// Sum of the memory of the machines placed on this host.
    pub memory_mb_reserved: u64,
    /// Machines of each app on this host, by app name.
    pub app_machines: BTreeMap<String, u32>,
    /// False for a cordoned or draining host: it keeps its machines but gets no new ones.
    pub schedulable: bool,
}

/// Every host the scheduler may consider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub hosts: Vec<HostView>,
}

/// `count` machines of one size for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRequest {
    pub app: String,
    /// Region preference order: each machine goes to the first region with room
    /// (a fallback list such as `syd,sin`).
    pub regions: Vec<String>,
    pub cpus: u32,
    pub memory_mb: u64,
    pub count: u32,
}

/// Where the machines of a request go: exactly `count` slots, in placement order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub slots: Vec<Slot>,
}

/// One machine's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub host_id: String,
    pub region: String,
}

/// Places `req.count` machines, all or nothing.
///
/// A host fits when it is schedulable, has `req.cpus` free out of
/// `cpus_total * CPU_OVERCOMMIT` and `req.memory_mb` free out of `memory_mb_total`. Each
/// machine goes to the first region of `req.regions` that has a fitting host; inside that
/// region to the fitting host with the fewest machines of the app (spread), then the most
/// free memory, then the smallest `host_id`. Machines placed earlier in the same call count.
pub fn place(view: &ClusterView, req: &PlacementRequest) -> Result<Placement, PlaceError> {
    validate(view, req)?;
    let mut hosts: Vec<Room<'_>> = view
        .hosts
        .iter()
        .filter(|host| req.regions.contains(&host.region))
        .map(|host| Room::new(host, &req.app))
        .collect();
    let mut slots = Vec::with_capacity(usize::try_from(req.count.min(1024)).unwrap_or(1024));
    for placed in 0..req.count {
        let Some(idx) = pick(&hosts, req) else {
            return Err(no_capacity(&hosts, req, placed));
        };
        let room = &mut hosts[idx];
        room.cpus_free -= u64::from(req.cpus);
        room.memory_mb_free -= req.memory_mb;
        room.app_machines += 1;
        slots.push(Slot {
            host_id: room.host.host_id.clone(),
            region: room.host.region.clone(),
        });
    }
    Ok(Placement { slots })
}

// === impl HostView ===

impl HostView {
    /// Cpus still free, counting the overcommit; 0 when over-reserved.
    pub fn cpus_free(&self) -> u64 {
        (u64::from(self.cpus_total) * u64::from(CPU_OVERCOMMIT))
            .saturating_sub(u64::from(self.cpus_reserved))
    }

    /// Memory still free in MB; 0 when over-reserved.
    pub fn memory_mb_free(&self) -> u64 {
        self.memory_mb_total.saturating_sub(self.memory_mb_reserved)
    }
}

/// A host's room while one `place` call is running.
struct Room<'a> {
    host: &'a HostView,
    cpus_free: u64,
    memory_mb_free: u64,
    app_machines: u32,
}

impl<'a> Room<'a> {
    fn new(host: &'a HostView, app: &str) -> Self {
        Room {
            host,
            cpus_free: host.cpus_free(),
            memory_mb_free: host.memory_mb_free(),
            app_machines: host.app_machines.get(app).copied().unwrap_or(0),
        }
    }

    fn fits(&self, req: &PlacementRequest) -> bool {
        self.host.schedulable
            && self.cpus_free >= u64::from(req.cpus)
            && self.memory_mb_free >= req.memory_mb
    }

    /// Per mille of the requested guest this host could still take (capped at 1000).
    fn fraction_of_guest(&self, req: &PlacementRequest) -> u64 {
        let per_mille = |free: u64, want: u64| {
            if want == 0 {
                1000
            } else {
                u64::try_from((u128::from(free) * 1000 / u128::from(want)).min(1000))
                    .unwrap_or(1000)
            }
        };
        per_mille(self.cpus_free, u64::from(req.cpus))
            .min(per_mille(self.memory_mb_free, req.memory_mb))
    }
}

fn validate(view: &ClusterView, req: &PlacementRequest) -> Result<(), PlaceError> {
    if req.count == 0 {
        return Err(PlaceError::ZeroCount {
            app: req.app.clone(),
        });
    }
    if req.regions.is_empty() {
        return Err(PlaceError::NoRegions {
            app: req.app.clone(),
        });
    }
    if req.cpus == 0 || req.memory_mb == 0 {
        return Err(PlaceError::EmptyGuest {
            app: req.app.clone(),
            cpus: req.cpus,
            memory_mb: req.memory_mb,
        });
    }
    if !view
        .hosts
        .iter()
        .any(|host| req.regions.contains(&host.region))
    {
        let known: BTreeSet<&str> = view.hosts.iter().map(|h| h.region.as_str()).collect();
        return Err(PlaceError::UnknownRegion {
            app: req.app.clone(),
            regions: req.regions.clone(),
            known: known.into_iter().map(str::to_owned).collect(),
        });
    }
    Ok(())
}

/// The host for the next machine: first region with room, then spread, memory, host id.
fn pick(hosts: &[Room<'_>], req: &PlacementRequest) -> Option<usize> {
    req.regions.iter().find_map(|region| {
        hosts
            .iter()
            .enumerate()
            .filter(|(_, room)| room.host.region == *region && room.fits(req))
            .min_by(|(_, a), (_, b)| {
                a.app_machines
                    .cmp(&b.app_machines)
                    .then_with(|| b.memory_mb_free.cmp(&a.memory_mb_free))
                    .then_with(|| a.host.host_id.cmp(&b.host.host_id))
            })
            .map(|(idx, _)| idx)
    })
}

fn no_capacity(hosts: &[Room<'_>], req: &PlacementRequest, placed: u32) -> PlaceError {
    let best = hosts
        .iter()
        .filter(|room| room.host.schedulable)
        .max_by(|a, b| closest_first(a, b, req));
    PlaceError::NoCapacity {
        app: req.app.clone(),
        regions: req.regions.clone(),
        cpus: req.cpus,
        memory_mb: req.memory_mb,
        placed,
        wanted: req.count,
        best_free: best.map(|room| {
            Box::new(HostFree {
                host_id: room.host.host_id.clone(),
                region: room.host.region.clone(),
                cpus_free: room.cpus_free,
                memory_mb_free: room.memory_mb_free,
            })
        }),
    }
}

/// Orders hosts so that the one closest to fitting the guest is the greatest.
fn closest_first(a: &Room<'_>, b: &Room<'_>, req: &PlacementRequest) -> Ordering {
    a.fraction_of_guest(req)
        .cmp(&b.fraction_of_guest(req))
        .then_with(|| a.memory_mb_free.cmp(&b.memory_mb_free))
        .then_with(|| a.cpus_free.cmp(&b.cpus_free))
        .then_with(|| b.host.host_id.cmp(&a.host.host_id))
}

#[cfg(test)]
mod tests;
