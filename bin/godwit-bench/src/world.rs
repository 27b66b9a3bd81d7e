//! `godwit-bench world`: issue 4's figures, measured in a multi-region world of the testbed
//! (`godwit_testbed::world::World`): state propagation between every pair of regions, the
//! request latency of a simulated user in each of the table's 18 cities against an app
//! running in every region of the world, and the extra latency of a cross-region request
//! and of an autostart, each beside a warm local request of the same run.
//!
//! The measuring runs in the world's network namespaces as helper processes of this binary
//! (`state-probe`, `http-probe`, hidden subcommands) started through `nsenter`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use godwit_testbed::DelayTable;
use godwit_testbed::world::{World, WorldSpec};

mod helpers;
mod http_probe;
mod measure;
mod report;
mod setup;
mod state_probe;

pub use http_probe::{HttpProbeArgs, run_http_probe};
pub use report::{ExtraRow, RequestRow, StateRow, WorldReport};
pub use state_probe::{StateProbeArgs, run_state_probe};

/// `godwit-bench world`.
#[derive(clap::Args, Debug, Clone)]
pub struct WorldArgs {
    /// Regions of the world (one host each); the app runs a machine in each, and the first
    /// one also hosts the control plane and the single-region app of the extra figures
    #[arg(long, value_delimiter = ',', default_value = "ams,iad,syd")]
    pub regions: Vec<String>,
    /// The `godwit` binary every daemon runs as
    #[arg(long, default_value = "target/release/godwit")]
    pub godwit: PathBuf,
    /// The static `hello` binary packed into the app's image
    #[arg(long, default_value = "target/x86_64-unknown-linux-gnu/release/hello")]
    pub hello: PathBuf,
    /// Where the world keeps its state and logs (emptied first)
    #[arg(long, default_value = "/var/tmp/godwit-bench-world")]
    pub data_dir: PathBuf,
    /// Testbed prefix of every namespace (a killed run's leftovers are swept first)
    #[arg(long, default_value = "gwbw")]
    pub prefix: String,
    /// Timed requests per user, after the warm-ups, on one kept-alive connection
    #[arg(long, default_value_t = 20)]
    pub requests: u32,
    /// Untimed requests per user before them
    #[arg(long, default_value_t = 2)]
    pub warmups: u32,
    /// Records each region writes for the state figure
    #[arg(long, default_value_t = 100)]
    pub state_count: u32,
    /// Milliseconds between two of a region's writes
    #[arg(long, default_value_t = 100)]
    pub state_interval_ms: u64,
    /// Autostart rounds (stop, then one cold request and warm ones)
    #[arg(long, default_value_t = 3)]
    pub autostart_rounds: u32,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark: starts the world, measures, stops the world (also on error).
pub fn run_world(
    args: &WorldArgs,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<WorldReport> {
    anyhow::ensure!(
        args.regions.len() >= 2,
        "--regions needs at least two regions"
    );
    anyhow::ensure!(args.requests > 0, "--requests must be at least 1");
    let table = DelayTable::embedded();
    let mut regions = Vec::new();
    for region in &args.regions {
        let code = table
            .resolve(region)
            .with_context(|| format!("unknown region {region:?}"))?
            .code
            .clone();
        regions.push(code);
    }
    let exe = std::env::current_exe().context("find this program")?;
    let godwit = std::fs::canonicalize(&args.godwit)
        .with_context(|| format!("no godwit binary at {}", args.godwit.display()))?;
    let hello = std::fs::canonicalize(&args.hello)
        .with_context(|| format!("no static hello binary at {}", args.hello.display()))?;

    let errors = World::sweep(&args.prefix, &args.data_dir);
    anyhow::ensure!(
        errors.is_empty(),
        "a killed run's leftovers could not be removed: {}",
        errors[0]
    );
    if args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("empty {}", args.data_dir.display()))?;
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    let image = setup::build_image(&godwit, &hello, &args.data_dir)?;

    let codes: Vec<&str> = regions.iter().map(String::as_str).collect();
    let spec = WorldSpec::new(&args.prefix, &godwit, &args.data_dir, &codes);
    let started = Instant::now();
    let world = runtime
        .block_on(World::start(spec))
        .map_err(|e| anyhow::Error::new(e).context("start the world"))?;
    tracing::info!(took = ?started.elapsed(), "world up");
    let result = measure::all(&world, args, &regions, &image, &exe, runtime);
    if let Err(error) = &result {
        tracing::error!("{error:#}\n{}", world.log_tails(15));
    }
    let stopped = world.stop();
    let report = result?;
    stopped.context("stop the world")?;
    Ok(report)
}
