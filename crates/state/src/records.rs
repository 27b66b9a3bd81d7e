//! One way for every daemon to open a kind of record, whether the cluster has one region or
//! several: a single bucket named `<name>` for one region (what a one-host dev cluster uses),
//! or the regional layout (`<name>_<region>` plus mirrors) when there are several.

use tokio_util::sync::CancellationToken;

use crate::{Bucket, Record, RegionalBucket, Replica, StateClient, StateError};

/// Where this process sits: the region whose NATS server it talks to, and every region of the
/// cluster. With at most one region, records live in one plain bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    pub home: String,
    pub regions: Vec<String>,
}

/// A kind of record opened through a [`Topology`]: the bucket this process writes its own
/// records to, and a replica of every region's records.
#[derive(Debug, Clone)]
pub struct Records<T> {
    layout: Layout<T>,
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per process and kind of record; never moved in a loop
enum Layout<T> {
    Single(Bucket<T>),
    Regional(RegionalBucket<T>),
}

/// One plain bucket as the records of a one-region cluster.
impl<T> From<Bucket<T>> for Records<T> {
    fn from(bucket: Bucket<T>) -> Self {
        Records {
            layout: Layout::Single(bucket),
        }
    }
}

// === impl Topology ===

impl Topology {
    /// A topology for `home`, with `regions` (the home region is added when missing).
    pub fn new(home: &str, regions: &[String]) -> Self {
        let mut all: Vec<String> = regions.iter().filter(|r| !r.is_empty()).cloned().collect();
        if !all.iter().any(|r| r == home) {
            all.push(home.to_owned());
        }
        all.sort();
        all.dedup();
        Self {
            home: home.to_owned(),
            regions: all,
        }
    }

    /// Whether records are split by region (more than one region).
    pub fn is_regional(&self) -> bool {
        self.regions.len() > 1
    }
}

// === impl Records ===

impl<T: Record> Records<T> {
    /// The bucket this process writes its own records to.
    pub fn writer(&self) -> &Bucket<T> {
        match &self.layout {
            Layout::Single(bucket) => bucket,
            Layout::Regional(regional) => regional.home(),
        }
    }

    /// The current value of `key` read from the servers, not a replica: the bucket, or with
    /// several regions [`RegionalBucket::get`] (what another region's writer acknowledged,
    /// even before this region's mirror has it).
    pub async fn get(&self, key: &str) -> Result<Option<T>, StateError> {
        match &self.layout {
            Layout::Single(bucket) => bucket.get(key).await,
            Layout::Regional(regional) => regional.get(key).await,
        }
    }

    /// A replica of every region's records, ending when `cancel` fires.
    pub async fn replica_until(&self, cancel: CancellationToken) -> Result<Replica<T>, StateError> {
        match &self.layout {
            Layout::Single(bucket) => bucket.replica_until(cancel).await,
            Layout::Regional(regional) => regional.replica_until(cancel).await,
        }
    }
}

impl StateClient {
    /// Opens records of kind `name` as `topology` lays them out.
    pub async fn records<T: Record>(
        &self,
        name: &str,
        topology: &Topology,
    ) -> Result<Records<T>, StateError> {
        let layout = if topology.is_regional() {
            Layout::Regional(
                self.regional_bucket(name, &topology.home, &topology.regions)
                    .await?,
            )
        } else {
            Layout::Single(self.bucket(name).await?)
        };
        Ok(Records { layout })
    }
}

#[cfg(test)]
mod tests {
    use super::Topology;

    #[test]
    fn topology_adds_home_and_sorts() {
        let topo = Topology::new("syd", &["ams".into(), "iad".into(), "ams".into()]);
        assert_eq!(topo.regions, ["ams", "iad", "syd"]);
        assert!(topo.is_regional());
        let single = Topology::new("local", &[]);
        assert_eq!(single.regions, ["local"]);
        assert!(!single.is_regional());
    }
}
