//! State propagation: typed records in NATS JetStream key-value buckets, and in-memory
//! replicas of a bucket that follow its changes.
//!
//! Each host writes the records it owns ([`Bucket::put`]); every consumer (API, proxy,
//! agents) keeps a [`Replica`] built from a watch and is told about changes. A replica is a
//! hint, never the last word: whoever acts on it must re-check with the owner of the record.
//!
//! Across regions ([`StateClient::regional_bucket`]): one JetStream domain per region, the
//! servers joined by leaf connections ([`region_server_config`]); each region writes its own
//! bucket and mirrors every other region's, and a replica merges them, reading only the
//! local server.
//!
//! Owns the NATS connection handling, the key encoding ([`key_for`]) and the JSON encoding
//! of records. Must not depend on any other godwit crate: records are any serde type.
//! [`seal`] reads and creates key files and seals values with them (the certificate keys
//! in `godwit_certs` cross NATS sealed, never in clear).
//! The `testing` feature adds [`testing::NatsServer`], a real `nats-server` for tests.
#![forbid(unsafe_code)]

mod bucket;
mod client;
mod error;
mod key;
mod records;
mod region;
mod regional;
mod replica;
pub mod seal;
#[cfg(feature = "testing")]
pub mod testing;

pub use bucket::Bucket;
pub use client::{CONNECT_TIMEOUT, StateClient};
pub use error::StateError;
pub use key::{id_from_key, is_valid_key, key_for};
pub use records::{Records, Topology};
pub use region::{RegionServer, region_server_config};
pub use regional::{RegionalBucket, regional_bucket_name};
pub use replica::{Change, Replica};

/// A value that can be stored in a bucket (as JSON) and kept in a replica.
pub trait Record:
    serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + std::fmt::Debug + 'static
{
}

impl<T> Record for T where
    T: serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + Send
        + Sync
        + std::fmt::Debug
        + 'static
{
}
