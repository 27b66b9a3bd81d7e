//! `godwit proxy`: the edge proxy over the machines replica, starting machines through the API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use godwit_types::record::{ACME_BUCKET, CERTS_BUCKET};
use godwit_types::{HostRecord, MachineRecord};

/// The bucket agents publish their machines to (godwit-agent's `publish.rs`).
const MACHINES_BUCKET: &str = "godwit_machines";
/// The bucket agents publish their hosts to (godwit-agent's `publish.rs`).
const HOSTS_BUCKET: &str = "godwit_hosts";

/// `godwit proxy`.
#[derive(Args, Debug)]
pub(crate) struct ProxyArgs {
    /// NATS server URL (the state layer holding the machines bucket)
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The API, called to start and stop machines
    #[arg(long)]
    api_url: String,
    /// File holding the API token used to start and stop machines
    #[arg(long)]
    token_file: PathBuf,
    /// Apps are reached as `<app>.<domain>`
    #[arg(long)]
    domain: String,
    /// Region of this proxy (its machines come first)
    #[arg(long, default_value = "local")]
    region: String,
    /// Log one line per request (request id, app, machine, method, path, status, bytes)
    #[arg(long)]
    access_log: bool,
    /// Serve Prometheus metrics at `http://<ADDR>/metrics`
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Every region of the cluster (comma-separated); with more than one, machines, hosts,
    /// certificates and ACME challenges are read from each region's bucket, mirrored into
    /// this region's NATS server
    #[arg(long, value_delimiter = ',')]
    regions: Vec<String>,
    /// Plain HTTP (and h2c) listen address
    #[arg(long)]
    http_listen: SocketAddr,
    /// HTTPS listen address (needs --cert and --key)
    #[arg(long, requires_all = ["cert", "key"])]
    https_listen: Option<SocketAddr>,
    /// PEM certificate chain for `*.<domain>`
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// The public port the HTTP listener stands for: services are matched on it
    #[arg(long, default_value_t = 80)]
    http_port: u16,
    /// The public port the HTTPS listener stands for
    #[arg(long, default_value_t = 443)]
    https_port: u16,
    /// Stop a machine with autostop on after it had no request for this long
    #[arg(long, value_parser = humantime::parse_duration)]
    autostop_idle: Option<Duration>,
    /// Worker role: listen here for requests other proxies forward to this host's machines
    /// (h2c). Every proxy of a cluster must use the same port
    #[arg(long, value_name = "ADDR")]
    backhaul_listen: Option<SocketAddr>,
    /// The host this proxy runs on (its agent's host id): machines of other hosts are
    /// reached through their host's proxy (needs --backhaul-listen)
    #[arg(long, requires = "backhaul_listen")]
    host_id: Option<String>,
    /// File holding the cluster secret of backhaul requests (default: the --token-file token)
    #[arg(long)]
    backhaul_secret_file: Option<PathBuf>,
    /// The API's --cert-key-file: opens the private keys of custom-hostname certificates,
    /// which cross NATS sealed with it (without it, those certificates are left out)
    #[arg(long, value_name = "FILE")]
    cert_key_file: Option<PathBuf>,
    /// Latency shedding: when the nearest region's machines are all at their soft limit, a
    /// region at most this many milliseconds farther with room takes the request
    #[arg(long, value_name = "MS")]
    shed_budget_ms: Option<u64>,
}

pub(crate) fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("read {}", args.token_file.display()))?
        .trim()
        .to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "{} holds no token",
        args.token_file.display()
    );
    let backhaul_secret = match &args.backhaul_secret_file {
        Some(path) => {
            let secret = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?
                .trim()
                .to_owned();
            anyhow::ensure!(!secret.is_empty(), "{} holds no secret", path.display());
            secret
        }
        None => token.clone(),
    };
    let cert_key = match &args.cert_key_file {
        Some(path) => Some(godwit_proxy::CertKey::load(path).with_context(|| {
            format!(
                "read the certificate key {} (the file the API has as --cert-key-file)",
                path.display()
            )
        })?),
        None => None,
    };
    super::init_daemon_tracing();
    super::runtime()?.block_on(async move {
        let cancel = super::cancel_on_signals()?;
        let mut cfg = godwit_proxy::ProxyConfig::new(args.http_listen, &args.domain, &args.region);
        cfg.https_listen = args.https_listen;
        cfg.http_port = args.http_port;
        cfg.https_port = args.https_port;
        cfg.tls = args.cert.zip(args.key);
        cfg.metrics_listen = args.metrics_listen;
        cfg.access_log = args.access_log;
        if let Some(idle) = args.autostop_idle {
            cfg.autostop_idle = idle;
            cfg.autostop_interval = cfg.autostop_interval.min(idle);
        }
        cfg.backhaul_listen = args.backhaul_listen;
        cfg.host_id = args.host_id.clone();
        cfg.shed_budget = args.shed_budget_ms.map(Duration::from_millis);
        cfg.backhaul_secret = Some(backhaul_secret);
        let state = godwit_state::StateClient::connect(&args.nats_url)
            .await
            .with_context(|| format!("connect to NATS at {}", args.nats_url))?;
        let topology = godwit_state::Topology::new(&args.region, &args.regions);
        let machines = state
            .records::<MachineRecord>(MACHINES_BUCKET, &topology)
            .await
            .with_context(|| format!("open the {MACHINES_BUCKET} bucket"))?
            .replica_until(cancel.child_token())
            .await
            .with_context(|| format!("follow the {MACHINES_BUCKET} bucket"))?;
        if cfg.host_id.is_some() {
            // Where other hosts' worker proxies are, and their regions.
            cfg.hosts = Some(
                state
                    .records::<HostRecord>(HOSTS_BUCKET, &topology)
                    .await
                    .with_context(|| format!("open the {HOSTS_BUCKET} bucket"))?
                    .replica_until(cancel.child_token())
                    .await
                    .with_context(|| format!("follow the {HOSTS_BUCKET} bucket"))?,
            );
        }
        // Uploaded and ACME-issued certificates, and open ACME challenges, come from the API
        // through NATS (in every region, as machines do); the store reloads on every change
        // and opens private keys with the cluster certificate key.
        cfg.certs = Some(
            godwit_proxy::CertStore::open(&state, &topology, cert_key, cancel.child_token())
                .await
                .with_context(|| format!("follow the {CERTS_BUCKET} and {ACME_BUCKET} buckets"))?,
        );
        let starter = Arc::new(godwit_proxy::ApiStarter::new(&args.api_url, &token));
        godwit_proxy::serve(cfg, machines, starter, cancel)
            .await
            .context("run the proxy")
    })
}
