//! Regional buckets: records written in their home region, mirrored into every other one.
//!
//! Bucket `<name>_<region>` lives in that region's JetStream domain and is written only by
//! that region's hosts. Every other region holds a mirror of it under the same name, fed
//! through the leaf connections (`$JS.<region>.API`). A replica reads the local bucket and
//! the local mirrors, never across the WAN, so it keeps serving when a region is cut off;
//! what that region wrote after the cut arrives when it is back (the server retries a
//! broken mirror about every 5 s).

use std::fmt;

use std::sync::Arc;

use async_nats::jetstream::{self, kv, stream};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::client::HISTORY;
use crate::region::is_valid_region;
use crate::{Bucket, Record, Replica, StateClient, StateError, replica};

/// A region's view of a regional bucket: its own bucket (for writes) and its mirrors of every
/// other region's. Cheap to clone.
pub struct RegionalBucket<T> {
    name: String,
    home_region: String,
    home: Bucket<T>,
    /// The local mirror of every other region's bucket, with the region.
    mirrors: Vec<(String, kv::Store)>,
    /// Every other region's own bucket, read through its domain (`$JS.<region>.API`) by
    /// [`RegionalBucket::get`]; opened at the first read, since that crosses the WAN.
    origins: Arc<Vec<OnceCell<Bucket<T>>>>,
    client: async_nats::Client,
}

/// The name of region `region`'s bucket of regional bucket `name`.
pub fn regional_bucket_name(name: &str, region: &str) -> String {
    format!("{name}_{region}")
}

/// Opens (creating when missing) the home bucket and the mirror of every other region's.
pub(crate) async fn open<T: Record>(
    client: &StateClient,
    name: &str,
    home_region: &str,
    all_regions: &[&str],
) -> Result<RegionalBucket<T>, StateError> {
    for region in all_regions.iter().chain([&home_region]) {
        if !is_valid_region(region) {
            return Err(StateError::InvalidRegion {
                region: (*region).to_owned(),
            });
        }
    }
    let home = client
        .bucket::<T>(&regional_bucket_name(name, home_region))
        .await?;
    let mut others: Vec<&str> = all_regions
        .iter()
        .copied()
        .filter(|region| *region != home_region)
        .collect();
    others.sort_unstable();
    others.dedup();
    let mut mirrors = Vec::with_capacity(others.len());
    for region in others {
        let store = open_mirror(client.jetstream(), name, region).await?;
        mirrors.push((region.to_owned(), store));
    }
    let origins = Arc::new(mirrors.iter().map(|_| OnceCell::new()).collect());
    Ok(RegionalBucket {
        name: name.to_owned(),
        home_region: home_region.to_owned(),
        home,
        mirrors,
        origins,
        client: client.nats().clone(),
    })
}

/// Opens the local mirror of `region`'s bucket, creating it when missing.
#[tracing::instrument(skip(jetstream))]
async fn open_mirror(
    jetstream: &jetstream::Context,
    name: &str,
    region: &str,
) -> Result<kv::Store, StateError> {
    let bucket = regional_bucket_name(name, region);
    let mirror_error = |source: async_nats::Error| StateError::OpenMirror {
        bucket: bucket.clone(),
        region: region.to_owned(),
        source,
    };
    if let Ok(store) = jetstream.get_key_value(&bucket).await {
        if store.stream.cached_info().config.mirror.is_none() {
            warn!("a bucket of another region is not a mirror here: its updates will not arrive");
        }
        return Ok(store);
    }
    debug!("creating the mirror");
    let created = jetstream
        .create_stream(mirror_config(&bucket, region))
        .await;
    // Another process may have created it in between: opening decides.
    jetstream
        .get_key_value(&bucket)
        .await
        .map_err(|open_error| match created {
            Err(create_error) => mirror_error(create_error.into()),
            Ok(_) => mirror_error(open_error.into()),
        })
}

/// A local stream mirroring bucket `bucket` of `region`'s domain, under the same name, so
/// that the key-value API reads it as a bucket. As tried on nats-server 2.9.10
/// (building-blocks.md §2a).
fn mirror_config(bucket: &str, region: &str) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        mirror: Some(stream::Source {
            name: format!("KV_{bucket}"),
            external: Some(stream::External {
                api_prefix: format!("$JS.{region}.API"),
                delivery_prefix: None,
            }),
            ..Default::default()
        }),
        max_messages_per_subject: HISTORY,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        ..Default::default()
    }
}

impl<T: Record> RegionalBucket<T> {
    /// The regional bucket's name (without a region).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The region this view writes to.
    pub fn home_region(&self) -> &str {
        &self.home_region
    }

    /// Every region: the home region first, then the mirrored ones, sorted.
    pub fn regions(&self) -> Vec<&str> {
        std::iter::once(self.home_region.as_str())
            .chain(self.mirrors.iter().map(|(region, _)| region.as_str()))
            .collect()
    }

    /// The home region's bucket: where this region's hosts write their records. Its reads
    /// see only this region's records.
    pub fn home(&self) -> &Bucket<T> {
        &self.home
    }

    /// The current value of `key`, whichever region wrote it: this region's bucket and the
    /// local mirrors first, then every other region's own bucket through its domain, which
    /// holds what its writer had acknowledged before the mirror here has caught up. For a
    /// record that must be readable everywhere as soon as its put returns (an ACME
    /// challenge); a miss costs a WAN round trip to every other region, concurrently.
    /// Regions that cannot be reached count as not holding it, unless none answers.
    pub async fn get(&self, key: &str) -> Result<Option<T>, StateError> {
        if let Some(value) = self.home.get(key).await? {
            return Ok(Some(value));
        }
        for (region, store) in &self.mirrors {
            let bucket = Bucket::<T>::new(
                regional_bucket_name(&self.name, region),
                store.clone(),
                self.client.clone(),
            );
            if let Some(value) = bucket.get(key).await? {
                return Ok(Some(value));
            }
        }
        let reads = self
            .mirrors
            .iter()
            .zip(self.origins.iter())
            .map(|((region, _), origin)| self.get_at_origin(region, origin, key));
        let (mut answered, mut first_error) = (false, None);
        for read in futures::future::join_all(reads).await {
            match read {
                Ok(Some(value)) => return Ok(Some(value)),
                Ok(None) => answered = true,
                Err(error) => {
                    debug!(%error, key, "a region's own bucket could not be read");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if !answered => Err(error),
            _ => Ok(None),
        }
    }

    /// `key` read from `region`'s own bucket in its domain.
    async fn get_at_origin(
        &self,
        region: &str,
        origin: &OnceCell<Bucket<T>>,
        key: &str,
    ) -> Result<Option<T>, StateError> {
        let bucket = origin
            .get_or_try_init(|| async {
                let name = regional_bucket_name(&self.name, region);
                let context = jetstream::with_domain(self.client.clone(), region);
                let store = context.get_key_value(&name).await.map_err(|source| {
                    StateError::OpenBucket {
                        bucket: format!("{name} (domain {region})"),
                        source: source.into(),
                    }
                })?;
                Ok::<_, StateError>(Bucket::new(name, store, self.client.clone()))
            })
            .await?;
        bucket.get(key).await
    }

    /// Starts a replica of every region's records: the home bucket and the local mirror of
    /// every other region's, merged into one map (keys must be unique across regions, as
    /// machine ids are). It reads only the local server, so it keeps serving what it knows
    /// while other regions are unreachable. Revisions are per region and only comparable
    /// within one region. Same lifecycle as [`Bucket::replica`].
    pub async fn replica(&self) -> Result<Replica<T>, StateError> {
        self.replica_until(CancellationToken::new()).await
    }

    /// Like [`RegionalBucket::replica`], and the tasks also stop when `cancel` fires.
    pub async fn replica_until(&self, cancel: CancellationToken) -> Result<Replica<T>, StateError> {
        let sources = std::iter::once(self.home.store().clone())
            .chain(self.mirrors.iter().map(|(_, store)| store.clone()))
            .collect();
        replica::start(
            format!("{}_*", self.name),
            sources,
            self.client.clone(),
            cancel,
        )
        .await
    }
}

// === impl RegionalBucket (std traits) ===

impl<T> Clone for RegionalBucket<T> {
    fn clone(&self) -> Self {
        RegionalBucket {
            name: self.name.clone(),
            home_region: self.home_region.clone(),
            home: self.home.clone(),
            mirrors: self.mirrors.clone(),
            origins: Arc::clone(&self.origins),
            client: self.client.clone(),
        }
    }
}

impl<T> fmt::Debug for RegionalBucket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mirrored: Vec<&str> = self.mirrors.iter().map(|(r, _)| r.as_str()).collect();
        f.debug_struct("RegionalBucket")
            .field("name", &self.name)
            .field("home_region", &self.home_region)
            .field("mirrored", &mirrored)
            .field("record", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}
