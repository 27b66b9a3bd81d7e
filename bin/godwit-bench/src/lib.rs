//! godwit-bench: measurements of Godwit on one host, beside a bare-runc baseline measured in
//! the same run (`godwit-bench create`), and issue 4's figures in a multi-region world of the
//! testbed (`godwit-bench world`); figures in `docs/benchmarks.md`.
//!
//! It owns only measuring and reporting. It reaches the cluster through the public REST API,
//! runs the baseline with `godwit-runtime` + `runc` directly, and starts the multi-region
//! world with `godwit-testbed` (writing and reading state with `godwit-state` as the daemons
//! do); it must not depend on the daemon crates (api, agent, proxy) or on the CLI.

mod api;
mod baseline;
mod cluster;
mod create;
mod probe;
mod report;
mod stats;
mod world;

pub use api::{CallError, Endpoint, EndpointError};
pub use baseline::{BareRunc, BaselineConfig, BaselineError, Prepared};
pub use cluster::ClusterError;
pub use create::{CreateArgs, run_create};
pub use probe::{ProbeError, wait_for_200};
pub use report::{Difference, Report, Samples, Throughput};
pub use stats::{Summary, ms};
pub use world::{
    ExtraRow, HttpProbeArgs, RequestRow, StateProbeArgs, StateRow, WorldArgs, WorldReport,
    run_http_probe, run_state_probe, run_world,
};
