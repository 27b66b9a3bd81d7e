//! Integration tests of godwit-agent with real runc, nats-server and a busybox image.
//! Needs root and the Debian packages runc, iproute2, busybox-static and nats-server.
// Test helpers panic on failure by design (clippy's allow-unwrap-in-tests covers only #[test] fns).
#![allow(clippy::unwrap_used)]

mod api;
mod checks;
mod crash;
mod lifecycle;
mod logs;
mod publish;
mod support;
mod suspend;
