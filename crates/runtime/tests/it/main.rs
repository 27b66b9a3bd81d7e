//! Integration tests of the `oci` driver against real runc, netns and overlayfs (run as root).

mod cleanup;
mod exits;
mod lifecycle;
mod logs;
mod support;
mod suspend;
