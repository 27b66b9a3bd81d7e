//! Errors of the testbed's operations.

use std::io;

use crate::netns::IpError;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("invalid testbed prefix {prefix:?} (use letters, digits, '-', '_', '.')")]
    InvalidPrefix { prefix: String },
    #[error("invalid node name {name:?} (use letters, digits, '-', '_', '.')")]
    InvalidName { name: String },
    #[error("node {name} already exists")]
    DuplicateNode { name: String },
    #[error("unknown region or city {city:?}")]
    UnknownCity { city: String },
    #[error("netns {netns} already exists (sweep the prefix to remove debris)")]
    NetnsExists { netns: String },
    #[error("no node addresses left")]
    TooManyNodes,
    #[error("failed to start the wan router")]
    Router(#[source] io::Error),
    #[error("failed to configure node {node}")]
    Ip {
        node: String,
        #[source]
        source: IpError,
    },
    #[error("failed to open a tun device for node {node}")]
    Tun {
        node: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to attach node {node} to the wan router")]
    Register {
        node: String,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no node named {name}")]
    Unknown { name: String },
    #[error("unknown region or city {region:?}")]
    UnknownRegion { region: String },
    #[error("loss must be a fraction within 0..=1, got {value}")]
    Loss { value: f64 },
    #[error("failed to delete netns {netns}")]
    Delete {
        netns: String,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AnycastError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("failed to add the anycast address on node {node}")]
    Ip {
        node: String,
        #[source]
        source: IpError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("empty command")]
    Empty,
    #[error("failed to run in node {node}")]
    Spawn {
        node: String,
        #[source]
        source: io::Error,
    },
    #[error("the task run in node {node} panicked")]
    Panicked { node: String },
}

#[derive(Debug, thiserror::Error)]
pub enum DestroyError {
    #[error("failed to delete netns {netns}")]
    Netns {
        netns: String,
        #[source]
        source: io::Error,
    },
}
