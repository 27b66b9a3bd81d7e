//! `godwit-bench`: benchmarks of a running Godwit cluster. All logic lives in the library.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "godwit-bench",
    about = "Benchmarks of a running Godwit cluster"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Create (cached image) -> first HTTP 200, beside bare `runc run`; machines/s
    Create(godwit_bench::CreateArgs),
    /// Issue 4's figures in a multi-region testbed world: state propagation, request latency
    /// from 18 cities, cross-region and autostart extra latency
    World(godwit_bench::WorldArgs),
    /// Helper of `world`: writes and reads probe records in one region
    #[command(hide = true)]
    StateProbe(godwit_bench::StateProbeArgs),
    /// Helper of `world`: a simulated user's kept-alive HTTP requests
    #[command(hide = true)]
    HttpProbe(godwit_bench::HttpProbeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,godwit_bench=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // The state probe runs on one thread: shutting that runtime down drops the replica's
    // tasks without polling them again, while a worker of a multi-threaded one may poll a
    // watch whose connection is already gone (async-nats 0.51 then panics in its ordered
    // consumer).
    let mut builder = if matches!(cli.cmd, Cmd::StateProbe(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "failed to start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let text = match cli.cmd {
        Cmd::Create(args) => {
            let json = args.json;
            match runtime.block_on(godwit_bench::run_create(args)) {
                Ok(report) => render(&report, json, godwit_bench::Report::table),
                Err(error) => return failed(&error),
            }
        }
        Cmd::World(args) => match godwit_bench::run_world(&args, &runtime) {
            Ok(report) => render(&report, args.json, godwit_bench::WorldReport::table),
            Err(error) => return failed(&error),
        },
        Cmd::StateProbe(args) => {
            return match runtime.block_on(godwit_bench::run_state_probe(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => failed(&error),
            };
        }
        Cmd::HttpProbe(args) => {
            return match godwit_bench::run_http_probe(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => failed(&error),
            };
        }
    };
    let _ = writeln!(std::io::stdout().lock(), "{}", text.trim_end());
    ExitCode::SUCCESS
}

fn render<R: serde::Serialize>(report: &R, json: bool, table: fn(&R) -> String) -> String {
    if json {
        serde_json::to_string_pretty(report).unwrap_or_default()
    } else {
        table(report)
    }
}

fn failed(error: &anyhow::Error) -> ExitCode {
    tracing::error!("benchmark failed: {error:#}");
    ExitCode::FAILURE
}
