//! Integration tests for godwit-image: real files, real skopeo, real docker-registry, real
//! overlayfs mounts.

// Helpers outside `#[test]` fns panic on failure by design, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod archive;
mod hostile;
mod layout;
mod registry;
mod support;
mod whiteout;
