//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Why resolving, fetching, unpacking or building an image failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("invalid digest {digest:?}")]
    InvalidDigest { digest: String },
    #[error("image {reference:?} not found: {reason}")]
    NotFound { reference: String, reason: String },
    #[error("unsupported image {reference:?}: {reason}")]
    Unsupported { reference: String, reason: String },
    #[error("{what} digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("layer {layer} entry {entry:?}: {reason}")]
    UnsafeEntry {
        layer: String,
        entry: String,
        reason: &'static str,
    },
    #[error("failed to read layer {layer}")]
    Layer {
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to write layer {layer} entry {entry:?}")]
    WriteEntry {
        layer: String,
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid {what} json")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("registry request for {reference:?} failed")]
    Registry {
        reference: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("background task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl ImageError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn json(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Self {
        let what = what.into();
        move |source| Self::Json { what, source }
    }
}
