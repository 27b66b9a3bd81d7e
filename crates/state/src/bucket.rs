//! Typed reads and writes of one key-value bucket.

use std::fmt;
use std::marker::PhantomData;

use async_nats::jetstream::kv;
use futures::TryStreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::{Record, Replica, StateError, is_valid_key, replica};

/// One bucket of records of type `T`, stored as JSON. Cheap to clone.
pub struct Bucket<T> {
    name: String,
    store: kv::Store,
    client: async_nats::Client,
    _records: PhantomData<fn() -> T>,
}

impl<T: Record> Bucket<T> {
    pub(crate) fn new(name: String, store: kv::Store, client: async_nats::Client) -> Self {
        Bucket {
            name,
            store,
            client,
            _records: PhantomData,
        }
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn store(&self) -> &kv::Store {
        &self.store
    }

    /// Writes `value` under `key` and returns its revision (grows with every write to the
    /// bucket).
    pub async fn put(&self, key: &str, value: &T) -> Result<u64, StateError> {
        self.check_key(key)?;
        let json = serde_json::to_vec(value).map_err(|source| StateError::Encode {
            bucket: self.name.clone(),
            key: key.to_owned(),
            source,
        })?;
        self.store
            .put(key, json.into())
            .await
            .map_err(|source| StateError::Put {
                bucket: self.name.clone(),
                key: key.to_owned(),
                source: source.into(),
            })
    }

    /// Deletes `key` (a delete marker, seen by replicas). Deleting a missing key is not an
    /// error.
    pub async fn delete(&self, key: &str) -> Result<(), StateError> {
        self.check_key(key)?;
        self.store
            .delete(key)
            .await
            .map_err(|source| StateError::Delete {
                bucket: self.name.clone(),
                key: key.to_owned(),
                source: source.into(),
            })
    }

    /// The current value of `key`, read from the server; `None` when missing or deleted.
    pub async fn get(&self, key: &str) -> Result<Option<T>, StateError> {
        self.check_key(key)?;
        let bytes = self
            .store
            .get(key)
            .await
            .map_err(|source| StateError::Get {
                bucket: self.name.clone(),
                key: key.to_owned(),
                source: source.into(),
            })?;
        bytes
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|source| StateError::Decode {
                    bucket: self.name.clone(),
                    key: key.to_owned(),
                    source,
                })
            })
            .transpose()
    }

    /// Every key that has a value, sorted.
    pub async fn keys(&self) -> Result<Vec<String>, StateError> {
        let keys_error = |source: async_nats::Error| StateError::Keys {
            bucket: self.name.clone(),
            source,
        };
        let keys = self.store.keys().await.map_err(|e| keys_error(e.into()))?;
        let mut keys: Vec<String> = keys.try_collect().await.map_err(|e| keys_error(e.into()))?;
        keys.sort_unstable();
        Ok(keys)
    }

    /// Starts a replica of the bucket: a background task loads every current value, then
    /// follows the changes, and resumes by itself after NATS restarts. It stops when the last
    /// clone of the returned [`Replica`] is dropped. Returns once the watch is set up; see
    /// [`Replica::is_ready`] and [`Replica::wait_ready`] for the initial load.
    pub async fn replica(&self) -> Result<Replica<T>, StateError> {
        self.replica_until(CancellationToken::new()).await
    }

    /// Like [`Bucket::replica`], and the task also stops when `cancel` fires.
    pub async fn replica_until(&self, cancel: CancellationToken) -> Result<Replica<T>, StateError> {
        replica::start(
            self.name.clone(),
            vec![self.store.clone()],
            self.client.clone(),
            cancel,
        )
        .await
    }

    fn check_key(&self, key: &str) -> Result<(), StateError> {
        if is_valid_key(key) {
            Ok(())
        } else {
            Err(StateError::InvalidKey {
                key: key.to_owned(),
            })
        }
    }
}

// === impl Bucket (std traits) ===

impl<T> Clone for Bucket<T> {
    fn clone(&self) -> Self {
        Bucket {
            name: self.name.clone(),
            store: self.store.clone(),
            client: self.client.clone(),
            _records: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Bucket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .field("record", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}
