//! Errors of the world's operations.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::{AnycastError, CreateError, DestroyError, NodeError, SweepError};

/// Why [`super::World::start`] failed (everything it started is stopped again).
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("invalid world: {reason}")]
    Spec { reason: String },
    #[error("`{program}` is not installed (apt-get install -y {package})")]
    MissingProgram {
        program: &'static str,
        package: &'static str,
    },
    #[error("failed to create the testbed")]
    Testbed(#[from] CreateError),
    #[error("failed to add the anycast address")]
    Anycast(#[from] AnycastError),
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to start {label}")]
    Spawn {
        label: String,
        #[source]
        source: io::Error,
    },
    #[error("`godwit api init` failed: {output}")]
    Init { output: String },
    #[error("{label} exited while starting; last lines of {}:\n{tail}", log.display())]
    Exited {
        label: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{what} within {timeout:?}; last lines of {}:\n{tail}", log.display())]
    NotReady {
        what: String,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
}

/// Why a call to the world's API failed (an answer with any status is not an error).
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    #[error("the world is stopped")]
    Stopped,
    #[error("{method} {path} failed")]
    Request {
        method: String,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Why [`super::World::user`] failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("the world is stopped")]
    Stopped,
    #[error(transparent)]
    Node(#[from] CreateError),
}

/// What [`super::World::stop`] could not clean up (it carries on after each failure).
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("failed to destroy the machines of app {app}: {detail}")]
    Machines { app: String, detail: String },
    #[error("failed to heal the faults before cleaning up")]
    Heal(#[source] NodeError),
    #[error(transparent)]
    Leftover(#[from] crate::cleanup::LeftoverError),
    #[error("failed to sweep the namespaces of {prefix}")]
    Sweep {
        prefix: String,
        #[source]
        source: SweepError,
    },
    #[error("failed to destroy the testbed")]
    Testbed(#[source] DestroyError),
}
