//! The replica's background task: load the bucket through an ordered consumer, then follow
//! it; reload from scratch if the consumer ever ends.
//!
//! The ordered consumer of async-nats already survives reconnects (it recreates itself from
//! the last stream sequence it delivered), so a NATS restart costs no reload. A reload is the
//! fallback when the message stream ends for good.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Shared, Table, Update};
use crate::{Record, StateError};

/// Consecutive consumer errors after which the watch is dropped and reopened (an error
/// that repeats without a message in between would otherwise spin).
const MAX_ERRORS_IN_A_ROW: u32 = 10;

/// An open watch over every key of a bucket, starting with the last value of each.
pub(super) struct Watch {
    messages: push::Ordered,
    /// Messages the consumer had to deliver when it was created.
    initial_pending: u64,
    prefix: String,
}

/// Creates the consumer behind a watch.
pub(super) async fn open(
    bucket: &str,
    store: &kv::Store,
    client: &async_nats::Client,
) -> Result<Watch, StateError> {
    let watch_error = |source: async_nats::Error| StateError::Watch {
        bucket: bucket.to_owned(),
        source,
    };
    let consumer = store
        .stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("godwit replica".to_owned()),
            filter_subject: format!("{}>", store.prefix),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| watch_error(e.into()))?;
    let initial_pending = consumer.cached_info().num_pending;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| watch_error(e.into()))?;
    Ok(Watch {
        messages,
        initial_pending,
        prefix: store.prefix.clone(),
    })
}

/// Follows `watch` (the watch of source number `source`) until `cancel` fires, reopening it whenever it ends.
pub(super) async fn run<T: Record>(
    mut watch: Watch,
    store: kv::Store,
    client: async_nats::Client,
    shared: Arc<Shared<T>>,
    source: usize,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            followed = follow(watch, &shared, source) => {
                if matches!(followed, Followed::ClientGone) {
                    break;
                }
            }
        }
        warn!("replica watch ended, reloading");
        let reopen = reopen(&store.name, &store, &client);
        watch = tokio::select! {
            () = cancel.cancelled() => break,
            watch = reopen => watch,
        };
    }
    debug!("replica stopped");
}

/// Opens a new watch, retrying with a growing delay (up to 5 s) until it works.
async fn reopen(bucket: &str, store: &kv::Store, client: &async_nats::Client) -> Watch {
    let mut delay = Duration::from_millis(100);
    loop {
        tokio::time::sleep(delay).await;
        match open(bucket, store, client).await {
            Ok(watch) => return watch,
            Err(error) => warn!(error = %error, "failed to reopen the replica watch"),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Loads the bucket into a fresh table, swaps it in, then applies changes one by one until
/// the message stream ends.
async fn follow<T: Record>(watch: Watch, shared: &Shared<T>, source: usize) -> Followed {
    let Watch {
        mut messages,
        initial_pending,
        prefix,
    } = watch;
    let mut loading = Some(Table::default());
    if initial_pending == 0 {
        shared.replace(source, loading.take().unwrap_or_default());
    }
    let mut errors_in_a_row = 0;
    while let Some(next) = messages.next().await {
        let message = match next {
            Ok(message) => message,
            // The client's connection task is gone (runtime shutdown): the consumer cannot
            // be polled again (it panics), and there is nothing left to follow.
            Err(error) if is_client_gone(&error) => {
                debug!(%error, "replica watch ends with its client");
                return Followed::ClientGone;
            }
            Err(error) if errors_in_a_row < MAX_ERRORS_IN_A_ROW => {
                // The ordered consumer recreates itself after this (e.g. a NATS restart).
                warn!(%error, "replica watch interrupted, resuming");
                errors_in_a_row += 1;
                continue;
            }
            Err(error) => {
                warn!(%error, "replica watch keeps failing, reopening it");
                return Followed::Ended;
            }
        };
        errors_in_a_row = 0;
        let Some((update, pending)) = decode::<T>(&prefix, &message) else {
            continue;
        };
        match loading.as_mut() {
            Some(table) => {
                table.apply(source, update);
                if pending == 0 {
                    info!(records = table.values.len(), "replica loaded");
                    shared.replace(source, loading.take().unwrap_or_default());
                }
            }
            None => shared.apply(source, update),
        }
    }
    Followed::Ended
}

/// How a watch ended.
enum Followed {
    /// The message stream ended or kept failing: reopen it.
    Ended,
    /// The client was dropped: stop.
    ClientGone,
}

/// Whether the ordered consumer failed because its client's connection state is gone, after
/// which polling it again panics (async-nats 0.51).
fn is_client_gone(error: &push::OrderedError) -> bool {
    error.kind() == push::OrderedErrorKind::Other
        && error.to_string().contains("state watcher dropped")
}

/// The update carried by one stream message, and how many messages the consumer still has
/// to deliver after it.
fn decode<T: Record>(prefix: &str, message: &jetstream::Message) -> Option<(Update<T>, u64)> {
    let info = match message.info() {
        Ok(info) => info,
        Err(error) => {
            warn!(%error, subject = %message.subject, "skipping a message without metadata");
            return None;
        }
    };
    let pending = info.pending;
    let revision = info.stream_sequence;
    let Some(key) = message.subject.as_str().strip_prefix(prefix) else {
        warn!(subject = %message.subject, "skipping a message outside the bucket");
        return None;
    };
    let key = key.to_owned();
    if is_removal(message) {
        return Some((Update::Delete { key }, pending));
    }
    let update = match serde_json::from_slice::<T>(&message.payload) {
        Ok(value) => Update::Put {
            key,
            value,
            revision,
        },
        Err(error) => {
            warn!(%error, %key, revision, "record does not decode, leaving it out of the replica");
            Update::Delete { key }
        }
    };
    Some((update, pending))
}

/// Whether the message deletes or purges its key rather than putting a value.
fn is_removal(message: &jetstream::Message) -> bool {
    let Some(headers) = message.headers.as_ref() else {
        return false;
    };
    if let Some(operation) = headers.get("KV-Operation") {
        return matches!(operation.as_str(), "DEL" | "PURGE");
    }
    // Server-made markers (max age, purge, remove) carry only a reason.
    headers.get("Nats-Marker-Reason").is_some()
}
