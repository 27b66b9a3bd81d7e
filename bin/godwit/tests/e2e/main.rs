//! Real-process end-to-end tests: each test starts a whole dev cluster (`godwit dev up`:
//! nats-server, `godwit api`, `godwit agent`, `godwit proxy`, runc machines) in its own temp
//! data dir, with its own ports, name prefix and subnet, drives it with the `godwit` CLI and
//! curl as a user would, and tears it down with `godwit dev down` (in a drop guard if the test fails).
//!
//! Needs root and the Debian packages runc, nats-server, iproute2 and curl. Set
//! `GODWIT_KEEP_TMP=1` to keep the data dirs of failed runs.

mod api;
mod app;
mod certs;
mod config;
mod deploy;
mod dev;
mod harness;
mod leftovers;
mod proxy;
mod regions;
mod suspend;
mod update;
mod world;
mod world_cli;
