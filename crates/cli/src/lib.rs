//! godwit-cli: the `godwit` command line — `launch`, `deploy`, `status`, `machine …`, `logs`,
//! `scale`, `secrets`, `apps`, `certs`, `config validate`, `image build` — plus the daemon entry points
//! the one binary also is (`godwit api`, `godwit agent`, `godwit proxy`, `godwit shim`) and
//! `godwit dev`.
//!
//! It owns the `godwit.toml` / `fly.toml` parser ([`appconfig`]) and the REST client
//! ([`client`]). It talks to the control plane only over HTTP: it must not reach into the API's
//! database or an agent's state. Daemon crates are linked only to be started from here.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub mod appconfig;
mod cli;
pub mod client;
mod commands;
mod daemon;
pub mod dev;
mod output;
#[cfg(test)]
mod tests;

/// Runs the `godwit` binary: 0 on success, 1 on any error (printed as `Error: …`).
pub fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    // The runtime shim is started by agents as `godwit shim …`; it takes its own arguments.
    if argv.get(1).map(String::as_str) == Some("shim") {
        return godwit_runtime::shim_main(argv);
    }
    let cli = match cli::Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    use cli::Command;
    match cli.cmd {
        Command::Dev(args) => dev::run(args),
        Command::Api(args) => daemon::api(args),
        Command::Agent(args) => daemon::agent(args),
        Command::Proxy(args) => daemon::proxy(args),
        Command::Image(cmd) => daemon::image(cmd),
        cmd => {
            init_cli_tracing();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(commands::run(cli.global, cmd))
        }
    }
}

/// Client commands log warnings and errors only, unless `RUST_LOG` says otherwise.
fn init_cli_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
