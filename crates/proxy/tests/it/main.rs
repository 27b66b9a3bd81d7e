//! Integration tests of godwit-proxy: a real nats-server bucket, real HTTP backends on
//! loopback, the proxy on real sockets, reqwest and curl as clients.

mod access;
mod autostart;
mod backend;
mod backhaul;
mod certs;
mod fastpath;
mod grpc;
mod health;
mod limits;
mod metrics;
mod proxy_proto;
mod redirect;
mod replay;
mod retry;
mod routing;
mod shutdown;
mod steering;
mod support;
mod suspend;
mod tcp;
mod tls;
mod upgrade;
