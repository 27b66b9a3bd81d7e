//! Why a placement failed, worded for the person who asked.

use std::fmt;

/// Why [`place`](crate::place) found no placement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    #[error("cannot place 0 machines of app {app}: ask for at least one")]
    ZeroCount { app: String },
    #[error("no region given for app {app}: name at least one region")]
    NoRegions { app: String },
    #[error(
        "app {app} asks for {cpus} cpus and {memory_mb} MB memory per machine: \
         a machine needs at least 1 cpu and 1 MB"
    )]
    EmptyGuest {
        app: String,
        cpus: u32,
        memory_mb: u64,
    },
    #[error(
        "no host in {} for app {app}; {}",
        Regions(regions),
        KnownRegions(known)
    )]
    UnknownRegion {
        app: String,
        /// The regions asked for.
        regions: Vec<String>,
        /// The regions that have hosts, sorted.
        known: Vec<String>,
    },
    #[error(
        "no host in {} has {memory_mb} MB memory and {} free for app {app} \
         (placed {placed} of {wanted}; {}); add a host, pick another region or a smaller guest",
        Regions(regions),
        Cpus(u64::from(*cpus)),
        Best(best_free.as_deref())
    )]
    NoCapacity {
        app: String,
        regions: Vec<String>,
        /// Cpus per machine asked for.
        cpus: u32,
        /// Memory per machine asked for.
        memory_mb: u64,
        /// Machines that did fit before capacity ran out (none of them is placed).
        placed: u32,
        wanted: u32,
        /// The schedulable host in the asked regions closest to fitting one more machine,
        /// with what it has free after the `placed` machines; `None` when every host there
        /// is unschedulable.
        best_free: Option<Box<HostFree>>,
    },
}

/// What one host has free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFree {
    pub host_id: String,
    pub region: String,
    pub cpus_free: u64,
    pub memory_mb_free: u64,
}

struct Regions<'a>(&'a [String]);

impl fmt::Display for Regions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

struct KnownRegions<'a>(&'a [String]);

impl fmt::Display for KnownRegions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("the cluster has no hosts yet: add one")
        } else {
            write!(f, "regions with hosts: {}", self.0.join(", "))
        }
    }
}

struct Cpus(u64);

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => f.write_str("1 cpu"),
            n => write!(f, "{n} cpus"),
        }
    }
}

struct Best<'a>(Option<&'a HostFree>);

impl fmt::Display for Best<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(best) => write!(
                f,
                "best: host {} in {} with {} MB and {} free",
                best.host_id,
                best.region,
                best.memory_mb_free,
                Cpus(best.cpus_free)
            ),
            None => f.write_str("every host there is unschedulable"),
        }
    }
}
