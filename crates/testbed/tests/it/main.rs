//! Integration tests of the testbed: real network namespaces, real TUN devices, real sockets.
//! They need root, `/dev/net/tun` and `ip` (iproute2).

// The timing tests report what they measured.
#![allow(clippy::print_stderr)]

mod anycast;
mod faults;
mod lifecycle;
mod support;
mod timing;
