//! A thin agent binary for crash tests: `godwit-agent-test <config.json>` runs the agent on
//! 127.0.0.1 (a free port, written to `<data_dir>/listen.addr`) until SIGTERM/SIGINT;
//! `godwit-agent-test shim ...` runs the runtime shim.

use std::process::ExitCode;

use godwit_agent::AgentConfig;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("shim") {
        return godwit_runtime::shim_main(args[2..].to_vec());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let Some(config_path) = args.get(1) else {
        tracing::error!("usage: godwit-agent-test <config.json> | shim ...");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "failed to start tokio");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config_path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("agent failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config_path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(config_path)?;
    let mut cfg: AgentConfig = serde_json::from_str(&text)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    cfg.advertise_url = format!("http://{addr}");
    std::fs::create_dir_all(&cfg.data_dir)?;
    let tmp = cfg.data_dir.join("listen.addr.tmp");
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(&tmp, cfg.data_dir.join("listen.addr"))?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => None } } => {}
        }
        on_signal.cancel();
    });
    godwit_agent::run(cfg, listener, cancel).await?;
    Ok(())
}
