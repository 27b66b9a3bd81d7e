//! In-memory replicas of a bucket: cheap reads, change notifications, waiting on a
//! condition.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use async_nats::jetstream::kv;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument as _;

use crate::{Record, StateError};

mod follow;
mod table;

use table::{Table, Update};

/// How many changes a slow subscriber may fall behind before it sees `Lagged`.
const CHANGES_CAPACITY: usize = 4096;

/// A local copy of a bucket, kept up to date by a background task. Cheap to clone; the task
/// stops when the last clone is dropped (or the token given to
/// [`Bucket::replica_until`](crate::Bucket::replica_until) fires).
///
/// It is a hint, never the last word: a value may be stale by the time it is used.
pub struct Replica<T> {
    shared: Arc<Shared<T>>,
    _stop: Arc<DropGuard>,
}

/// One change seen by a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<T> {
    Put {
        key: String,
        value: T,
        revision: u64,
    },
    Delete {
        key: String,
    },
}

/// Starts a replica over `sources` (one store, or several for a regional bucket): opens every watch, then runs one background task per source.
pub(crate) async fn start<T: Record>(
    name: String,
    sources: Vec<kv::Store>,
    client: async_nats::Client,
    cancel: CancellationToken,
) -> Result<Replica<T>, StateError> {
    let mut watches = Vec::with_capacity(sources.len());
    for store in &sources {
        watches.push(follow::open(&store.name, store, &client).await?);
    }
    let shared = Arc::new(Shared::new(name, sources.len()));
    let token = cancel.child_token();
    let stop = Arc::new(token.clone().drop_guard());
    for (source, (watch, store)) in watches.into_iter().zip(sources).enumerate() {
        let span = tracing::info_span!("replica", bucket = %store.name);
        let task = follow::run(
            watch,
            store,
            client.clone(),
            Arc::clone(&shared),
            source,
            token.clone(),
        );
        tokio::spawn(task.instrument(span));
    }
    Ok(Replica {
        shared,
        _stop: stop,
    })
}

impl<T: Record> Replica<T> {
    /// The value of `key`, if the replica has one.
    pub fn get(&self, key: &str) -> Option<T> {
        self.table().values.get(key).cloned()
    }

    /// Every value, sorted by key.
    pub fn snapshot(&self) -> Vec<(String, T)> {
        let mut all: Vec<(String, T)> = self
            .table()
            .values
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Changes from now on, in the order the replica applies them. A change is in the
    /// replica before it is sent, so subscribing first and then reading never misses one
    /// (it may show it twice). A receiver that falls behind by more than 4096 changes gets
    /// `Lagged` and should read a fresh [`Replica::snapshot`].
    pub fn subscribe(&self) -> broadcast::Receiver<Change<T>> {
        self.shared.changes.subscribe()
    }

    /// Whether the initial load is done. Before it, the replica is empty.
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// Waits for the initial load, at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), StateError> {
        let mut ready = self.shared.ready.subscribe();
        let loaded = tokio::time::timeout(timeout, ready.wait_for(|ready| *ready)).await;
        match loaded {
            Ok(Ok(_)) => Ok(()),
            // The sender lives in `shared`, which `self` keeps alive: only the timeout is left.
            Ok(Err(_)) | Err(_) => Err(self.timeout("finish its initial load", timeout)),
        }
    }

    /// Waits until the initial load is done and `pred` holds for the values, at most
    /// `timeout`. `pred` runs under the replica's read lock: keep it short.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&HashMap<String, T>) -> bool,
    ) -> Result<(), StateError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.subscribe();
        let mut ready = self.shared.ready.subscribe();
        if tokio::time::timeout_at(deadline, ready.wait_for(|ready| *ready))
            .await
            .is_err()
        {
            return Err(self.timeout("meet the condition", timeout));
        }
        loop {
            if pred(&self.table().values) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                    return Err(self.timeout("meet the condition", timeout));
                }
            }
        }
    }

    fn table(&self) -> RwLockReadGuard<'_, Table<T>> {
        self.shared
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn timeout(&self, what: &'static str, timeout: Duration) -> StateError {
        StateError::Timeout {
            bucket: self.shared.bucket.clone(),
            what,
            timeout,
        }
    }
}

// === impl Replica (std traits) ===

impl<T> Clone for Replica<T> {
    fn clone(&self) -> Self {
        Replica {
            shared: Arc::clone(&self.shared),
            _stop: Arc::clone(&self._stop),
        }
    }
}

impl<T> fmt::Debug for Replica<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replica")
            .field("bucket", &self.shared.bucket)
            .field("ready", &*self.shared.ready.borrow())
            .finish_non_exhaustive()
    }
}

/// What the replica's handles and its tasks share.
struct Shared<T> {
    bucket: String,
    table: RwLock<Table<T>>,
    changes: broadcast::Sender<Change<T>>,
    ready: watch::Sender<bool>,
}

// === impl Shared ===

impl<T: Record> Shared<T> {
    fn new(bucket: String, sources: usize) -> Self {
        Shared {
            bucket,
            table: RwLock::new(Table::new(sources)),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
            ready: watch::Sender::new(sources == 0),
        }
    }

    /// Applies one update from `source` and tells subscribers.
    fn apply(&self, source: usize, update: Update<T>) {
        let change = self.write().apply(source, update);
        if let Some(change) = change {
            // No subscriber is fine.
            let _ = self.changes.send(change);
        }
    }

    /// Replaces everything `source` holds with a freshly loaded table of it, tells
    /// subscribers what differs, and marks the replica ready once every source has loaded.
    fn replace(&self, source: usize, loaded: Table<T>) {
        let (changes, all_loaded) = {
            let mut table = self.write();
            let changes = table.replace(source, loaded);
            (changes, table.all_loaded())
        };
        tracing::debug!(changed = changes.len(), "replica loaded");
        for change in changes {
            let _ = self.changes.send(change);
        }
        if all_loaded {
            self.ready.send_replace(true);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table<T>> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }
}
