//! The connection to NATS and the buckets opened through it.

use std::time::Duration;

use async_nats::jetstream;
use tracing::{debug, info};

use crate::{Bucket, Record, RegionalBucket, StateError, regional};

/// How long [`StateClient::connect`] keeps trying.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// History kept per key in buckets this crate creates (the current value and 4 before it).
pub(crate) const HISTORY: i64 = 5;

/// A NATS connection with JetStream. Cheap to clone; clones share the connection, which
/// reconnects by itself (forever) when the server goes away.
#[derive(Debug, Clone)]
pub struct StateClient {
    client: async_nats::Client,
    jetstream: jetstream::Context,
}

impl StateClient {
    /// Connects to `url` (e.g. `nats://127.0.0.1:4222`), retrying for [`CONNECT_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<Self, StateError> {
        Self::connect_within(url, CONNECT_TIMEOUT).await
    }

    /// Connects to `url`, retrying until connected or `timeout` has passed.
    #[tracing::instrument(skip_all, fields(url = %url))]
    pub async fn connect_within(url: &str, timeout: Duration) -> Result<Self, StateError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let options = async_nats::ConnectOptions::new()
                .name("godwit")
                .connection_timeout(left.clamp(Duration::from_millis(10), Duration::from_secs(2)))
                .reconnect_delay_callback(reconnect_delay);
            match options.connect(url).await {
                Ok(client) => {
                    info!("connected to nats");
                    let jetstream = jetstream::new(client.clone());
                    return Ok(StateClient { client, jetstream });
                }
                Err(source)
                    if is_permanent(&source)
                        || tokio::time::Instant::now() + backoff >= deadline =>
                {
                    return Err(StateError::Connect {
                        url: url.to_owned(),
                        timeout,
                        source,
                    });
                }
                Err(error) => {
                    debug!(%error, "nats not reachable yet, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// Opens bucket `name` (letters, digits, `-`, `_`; e.g. `godwit_machines`), creating it
    /// with file storage and a history of 5 when it does not exist. An existing bucket is
    /// opened as it is.
    #[tracing::instrument(skip_all, fields(bucket = %name))]
    pub async fn bucket<T: Record>(&self, name: &str) -> Result<Bucket<T>, StateError> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(StateError::InvalidBucket {
                name: name.to_owned(),
            });
        }
        let store = match self.jetstream.get_key_value(name).await {
            Ok(store) => store,
            Err(get_error) => {
                debug!(error = %get_error, "bucket not opened, creating it");
                let created = self.jetstream.create_stream(kv_stream_config(name)).await;
                // Another process may have created it in between: opening decides.
                self.jetstream
                    .get_key_value(name)
                    .await
                    .map_err(|open_error| StateError::OpenBucket {
                        bucket: name.to_owned(),
                        source: match created {
                            Err(create_error) => create_error.into(),
                            Ok(_) => open_error.into(),
                        },
                    })?
            }
        };
        Ok(Bucket::new(name.to_owned(), store, self.client.clone()))
    }

    /// Opens regional bucket `name` as seen from `home_region`, for a client of that region's
    /// server (its JetStream domain is the region code): bucket `<name>_<home_region>`, which
    /// only this region writes, created when missing, and for every other region R in
    /// `all_regions` a local mirror of R's bucket `<name>_R` (through `$JS.R.API`), created
    /// when missing. Safe to call from every host of every region, in any order: a mirror
    /// whose source does not exist or cannot be reached yet starts following it later.
    #[tracing::instrument(skip_all, fields(bucket = %name, region = %home_region))]
    pub async fn regional_bucket<T: Record>(
        &self,
        name: &str,
        home_region: &str,
        all_regions: &[impl AsRef<str>],
    ) -> Result<RegionalBucket<T>, StateError> {
        let all_regions: Vec<&str> = all_regions.iter().map(AsRef::as_ref).collect();
        regional::open(self, name, home_region, &all_regions).await
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The underlying NATS client, for plain subjects (high-rate figures that do not belong
    /// in a bucket).
    pub fn nats(&self) -> &async_nats::Client {
        &self.client
    }
}

/// The stream behind a KV bucket, as `async_nats`'s `create_key_value` would make it.
///
/// That call is not used: it first asks for the account's JetStream info, and the reply of
/// nats-server 2.9 (Debian 12) lacks fields async-nats 0.51 requires, so it always fails.
fn kv_stream_config(bucket: &str) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: HISTORY,
        storage: jetstream::stream::StorageType::File,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        ..Default::default()
    }
}

/// Errors that retrying cannot fix.
fn is_permanent(error: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    matches!(
        error.kind(),
        Kind::ServerParse | Kind::Authentication | Kind::AuthorizationViolation | Kind::Tls
    )
}

/// Reconnect quickly at first, then every 2 s at most (the default waits up to 4 s).
fn reconnect_delay(attempts: usize) -> Duration {
    let exponent = u32::try_from(attempts.min(8)).unwrap_or(8);
    Duration::from_millis(10 * 2u64.pow(exponent)).min(Duration::from_secs(2))
}
