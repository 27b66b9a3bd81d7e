//! Integration tests of `godwit api`: the real server on 127.0.0.1:0 with a temp data dir and
//! a real nats-server, driven over HTTP; a small in-test HTTP server plays the host agent.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on unexpected failures"
)]

mod acme;
mod agent;
mod apps;
mod auth;
mod certs;
mod harness;
mod machines;
mod openapi;
mod pebble;
mod proxy;
mod renew;
mod secrets;
mod suspend;
