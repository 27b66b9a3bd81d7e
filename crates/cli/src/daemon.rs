//! The daemons the one binary also is (`godwit api`, `godwit agent`, `godwit proxy`), and
//! `godwit image build`.
//! Each parses flags, sets up logging and SIGTERM/SIGINT, and calls one library function.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::output;

mod proxy;

pub(crate) use proxy::{ProxyArgs, proxy};

/// `godwit api [init]`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct ApiArgs {
    #[command(subcommand)]
    cmd: Option<ApiCmd>,
    /// Data directory (database, encryption key)
    #[arg(long, required = true)]
    data_dir: Option<PathBuf>,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:4280")]
    listen: String,
    /// NATS server URL
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Region of machines created without one
    #[arg(long, default_value = "local")]
    region: String,
    /// ACME directory URL for app certificates (none: ACME off)
    #[arg(long, value_name = "URL")]
    acme_directory: Option<String>,
    /// PEM file of root CAs to trust for the ACME server instead of the system's
    #[arg(long, value_name = "FILE")]
    acme_ca_pem: Option<PathBuf>,
    /// Renew ACME certificates this long before they expire: a share of their lifetime
    /// ("1/3", "0.25") or a duration ("30days")
    #[arg(long, value_name = "SHARE|DURATION", default_value = "1/3")]
    acme_renew_before: godwit_api::RenewBefore,
    /// How often to look for ACME certificates due for renewal (also the first retry delay
    /// after a failed renewal, doubling with each failure)
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    acme_renew_every: std::time::Duration,
    /// Cluster certificate key (32 random bytes, made if missing): certificate private keys
    /// go to the proxies sealed with it; give every proxy the same file. Needed for ACME and
    /// certificate uploads
    #[arg(long, value_name = "FILE")]
    cert_key_file: Option<PathBuf>,
    /// Every region of the cluster (comma-separated); with more than one, state is read from
    /// each region's bucket, mirrored into the NATS server of `--state-region`
    #[arg(long, value_delimiter = ',')]
    regions: Vec<String>,
    /// The region whose NATS server `--nats-url` is (default: `--region`)
    #[arg(long)]
    state_region: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ApiCmd {
    /// First-time setup; prints the admin and join tokens as JSON
    Init(ApiInitArgs),
}

#[derive(Args, Debug)]
struct ApiInitArgs {
    #[arg(long)]
    data_dir: PathBuf,
    /// Organisation to create
    #[arg(long, default_value = "personal")]
    org: String,
}

/// `godwit agent`.
#[derive(Args, Debug)]
pub(crate) struct AgentArgs {
    #[arg(long)]
    data_dir: PathBuf,
    /// The API to register with
    #[arg(long)]
    api_url: String,
    /// File holding the join token
    #[arg(long)]
    join_token_file: PathBuf,
    #[arg(long)]
    host_id: String,
    #[arg(long, default_value = "local")]
    region: String,
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:4281")]
    listen: String,
    /// How the API reaches this agent [default: http://<listen address>]
    #[arg(long)]
    advertise_url: Option<String>,
    /// CPUs machines may reserve
    #[arg(long, default_value_t = 4)]
    cpus: u32,
    /// Memory machines may reserve, in MB
    #[arg(long, default_value_t = 4096)]
    memory_mb: u64,
    /// Machine addresses come from here
    #[arg(long, default_value = "172.30.0.0/16")]
    subnet: String,
    /// The runc program
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
    /// Prefix of netns, veth, cgroup and runc names
    #[arg(long, default_value = "gw")]
    name_prefix: String,
    /// Registry (`host:port`) to reach over plain HTTP (repeatable)
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Keep the machines this host runs but place no new ones here
    #[arg(long)]
    unschedulable: bool,
    /// Every region of the cluster (comma-separated); with more than one, this host's records
    /// go to its region's own bucket, mirrored into the others
    #[arg(long, value_delimiter = ',')]
    regions: Vec<String>,
}

/// `godwit image …`.
#[derive(Subcommand, Debug)]
pub(crate) enum ImageCmd {
    /// Pack a static binary into an OCI image layout directory
    Build(ImageBuildArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ImageBuildArgs {
    /// The static binary
    #[arg(long)]
    binary: PathBuf,
    /// Output directory (OCI image layout)
    #[arg(long)]
    out: PathBuf,
    /// The binary's name in the image (`/<name>`, the entrypoint)
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "latest")]
    tag: String,
    /// Exposed port
    #[arg(long)]
    port: Option<u16>,
    /// Environment variable `NAME=VALUE` (repeatable)
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
}

/// Daemon logs: `RUST_LOG`, default info, on stderr.
pub(crate) fn init_daemon_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) fn api(args: ApiArgs) -> anyhow::Result<()> {
    if let Some(ApiCmd::Init(init)) = args.cmd {
        let out = godwit_api::init(&init.data_dir, &init.org)
            .with_context(|| format!("initialise {}", init.data_dir.display()))?;
        let Some(out) = out else {
            anyhow::bail!(
                "{} is already initialised: its tokens were shown when it was",
                init.data_dir.display()
            );
        };
        return output::json(&serde_json::json!({
            "org": out.org,
            "admin_token": out.admin_token,
            "join_token": out.join_token,
        }));
    }
    let data_dir = args.data_dir.context("--data-dir is required")?;
    anyhow::ensure!(
        !args.acme_renew_every.is_zero(),
        "--acme-renew-every 0s would check without pause: give a duration such as 1h"
    );
    init_daemon_tracing();
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listen on {}", args.listen))?;
        let cancel = cancel_on_signals()?;
        let cfg = godwit_api::ApiConfig {
            data_dir,
            nats_url: args.nats_url,
            state_topology: godwit_state::Topology::new(
                args.state_region.as_deref().unwrap_or(&args.region),
                &args.regions,
            ),
            default_region: args.region,
            acme_directory: args.acme_directory,
            acme_ca_pem: args.acme_ca_pem,
            acme_renew_before: args.acme_renew_before,
            acme_renew_every: args.acme_renew_every,
            cert_key_file: args.cert_key_file,
        };
        godwit_api::serve(cfg, listener, cancel)
            .await
            .context("serve the API")
    })
}

pub(crate) fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let join_token = std::fs::read_to_string(&args.join_token_file)
        .with_context(|| format!("read {}", args.join_token_file.display()))?
        .trim()
        .to_owned();
    let exe = std::env::current_exe().context("find the godwit binary")?;
    init_daemon_tracing();
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listen on {}", args.listen))?;
        let local = listener.local_addr().context("read the listen address")?;
        let cancel = cancel_on_signals()?;
        let cfg = godwit_agent::AgentConfig {
            data_dir: args.data_dir,
            api_url: args.api_url,
            join_token,
            host_id: args.host_id,
            region: args.region,
            nats_url: args.nats_url,
            advertise_url: args
                .advertise_url
                .unwrap_or_else(|| format!("http://{local}")),
            cpus: args.cpus,
            memory_mb: args.memory_mb,
            subnet: args.subnet,
            runc: args.runc,
            name_prefix: args.name_prefix,
            shim: vec![exe.display().to_string(), "shim".to_owned()],
            insecure_registries: args.insecure_registries,
            schedulable: !args.unschedulable,
            regions: args.regions,
        };
        godwit_agent::run(cfg, listener, cancel)
            .await
            .context("run the agent")
    })
}

pub(crate) fn image(cmd: ImageCmd) -> anyhow::Result<()> {
    let ImageCmd::Build(args) = cmd;
    let opts = godwit_image::BuildOptions {
        name: args.name,
        tag: args.tag,
        env: args.env,
        exposed_port: args.port,
    };
    let digest = godwit_image::build_from_binary(&args.binary, &args.out, &opts)
        .with_context(|| format!("build an image from {}", args.binary.display()))?;
    output::say(format!(
        "built {} ({digest}); deploy it with image = \"oci:{}\"",
        args.out.display(),
        args.out.display()
    ));
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// A token cancelled by the first SIGTERM or SIGINT.
fn cancel_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let cancel = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watch SIGINT")?;
    let token = cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        token.cancel();
    });
    Ok(cancel)
}
