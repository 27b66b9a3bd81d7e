//! godwit-testbed: many regions on one Linux box. It owns the measured city-to-city delay
//! table ([`DelayTable`]), the network namespaces of a test world (one per host or simulated
//! user), and the userspace WAN router that joins them through TUN devices, holding every
//! packet for the one-way delay between the two cities, delivering anycast addresses to the
//! nearest live owner, and injecting faults (down, partition, loss).
//!
//! It must not depend on other godwit crates: the `godwit dev` CLI and the e2e tests drive it.
//! Only [`world`] knows of Godwit's daemons, and only as the `godwit` binary and its flags: it
//! runs a whole multi-region Godwit (nats-servers, API, agents, proxies) in the testbed;
//! [`cleanup`] sweeps what Godwit's agents leave behind (mounts, cgroups), for the world and
//! for `godwit dev down`. Needs root, `/dev/net/tun` and `ip` (iproute2).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use godwit_testbed::{NodeSpec, Options, Testbed};
//! let tb = Testbed::create(
//!     "demo",
//!     &[NodeSpec::new("ams1", "ams"), NodeSpec::new("syd1", "syd")],
//!     Options::default(),
//! )
//! .await?;
//! let out = tb.exec("ams1", &["ip", "-o", "addr"]).await?;
//! tb.set_down("syd1", true)?;
//! tb.destroy()?;
//! # Ok(()) }
//! ```

pub mod cleanup;
pub mod latency;
mod netns;
mod router;
mod testbed;
mod tun;
pub mod world;

pub use latency::{DelayTable, ParseTableError, Region, SAME_CITY_ONE_WAY};
pub use netns::{IpError, NETNS_DIR, SweepError, connect_in, sweep};
pub use router::RouterStats;
pub use testbed::{
    AnycastError, CreateError, DEVICE, DestroyError, ExecError, NodeError, NodeInfo, NodeSpec,
    Options, Testbed,
};
