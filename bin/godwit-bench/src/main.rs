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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,godwit_bench=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "failed to start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let Cmd::Create(args) = cli.cmd;
    let json = args.json;
    match runtime.block_on(godwit_bench::run_create(args)) {
        Ok(report) => {
            let text = if json {
                serde_json::to_string_pretty(&report).unwrap_or_default()
            } else {
                report.table()
            };
            let _ = writeln!(std::io::stdout().lock(), "{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("benchmark failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}
