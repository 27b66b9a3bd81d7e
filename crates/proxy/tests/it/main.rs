//! Integration tests of godwit-proxy: a real nats-server bucket, real HTTP backends on
//! loopback, the proxy on real sockets, reqwest and curl as clients.

mod autostart;
mod backend;
mod certs;
mod health;
mod limits;
mod metrics;
mod redirect;
mod replay;
mod retry;
mod routing;
mod shutdown;
mod support;
mod tcp;
mod tls;
mod upgrade;
