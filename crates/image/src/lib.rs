//! godwit-image owns OCI images on a host: resolving a reference (registry, OCI image layout
//! directory, `docker save` or OCI tar archive), fetching manifests, configs and layers,
//! verifying every digest, unpacking each layer once (safely, whiteouts turned into overlayfs
//! whiteouts) into a content-addressed cache shared by all machines, and building an OCI image
//! layout from a static binary.
//!
//! It must not depend on any other godwit crate: the agent and the CLI depend on it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod build;
mod digest;
mod error;
mod local;
mod oci;
mod reference;
mod registry;
mod store;
mod unpack;

pub use build::{BuildOptions, build_from_binary, build_from_layers};
pub use error::ImageError;
pub use store::ImageStore;

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub username: Option<String>,
    pub password: Option<String>,
    /// Registries (`host:port`) spoken to over plain HTTP; loopback hosts are always allowed
    /// plain HTTP.
    pub insecure_registries: Vec<String>,
}

/// A resolved image whose layers are all unpacked in the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    /// The reference as given to [`ImageStore::pull`].
    pub reference: String,
    /// `sha256:...` of the image manifest.
    pub manifest_digest: String,
    pub config: ImageConfig,
    /// Unpacked layer directories, bottom first, ready to be overlayfs lower dirs (which are
    /// listed top first: reverse this).
    pub layers: Vec<PathBuf>,
}

/// The parts of an image's configuration that running it needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// As in the image config: `"8080/tcp"`.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
}
