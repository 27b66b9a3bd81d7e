//! godwit-bench: measurements of Godwit on one host, beside a bare-runc baseline measured in
//! the same run (`godwit-bench create`; figures in `docs/benchmarks.md`).
//!
//! It owns only measuring and reporting. It reaches the cluster through the public REST API
//! and runs the baseline with `godwit-runtime` + `runc` directly; it must not depend on the
//! daemon crates (api, agent) or on the CLI.

mod api;
mod baseline;
mod cluster;
mod create;
mod probe;
mod report;
mod stats;

pub use api::{CallError, Endpoint, EndpointError};
pub use baseline::{BareRunc, BaselineConfig, BaselineError, Prepared};
pub use cluster::ClusterError;
pub use create::{CreateArgs, run_create};
pub use probe::{ProbeError, wait_for_200};
pub use report::{Difference, Report, Samples, Throughput};
pub use stats::{Summary, ms};
