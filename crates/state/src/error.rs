//! The error of every fallible call of this crate.

use std::time::Duration;

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("could not connect to nats at {url} within {timeout:?}")]
    Connect {
        url: String,
        timeout: Duration,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("invalid bucket name {name:?}: use letters, digits, '-' and '_'")]
    InvalidBucket { name: String },
    #[error("failed to open or create bucket {bucket}")]
    OpenBucket {
        bucket: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("invalid region {region:?}: use letters, digits, '-' and '_'")]
    InvalidRegion { region: String },
    #[error("failed to open or create the mirror of bucket {bucket} of region {region}")]
    OpenMirror {
        bucket: String,
        region: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("invalid key {key:?}: use letters, digits and '-/_=.' (escape ids with key_for)")]
    InvalidKey { key: String },
    #[error("failed to encode the value of {key} for bucket {bucket}")]
    Encode {
        bucket: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the value of {key} in bucket {bucket} is not a valid record")]
    Decode {
        bucket: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to put {key} in bucket {bucket}")]
    Put {
        bucket: String,
        key: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("failed to get {key} from bucket {bucket}")]
    Get {
        bucket: String,
        key: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("failed to delete {key} from bucket {bucket}")]
    Delete {
        bucket: String,
        key: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("failed to list the keys of bucket {bucket}")]
    Keys {
        bucket: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("failed to watch bucket {bucket}")]
    Watch {
        bucket: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("the replica of bucket {bucket} did not {what} within {timeout:?}")]
    Timeout {
        bucket: String,
        /// What was waited for: "finish its initial load" or "meet the condition".
        what: &'static str,
        timeout: Duration,
    },
}
