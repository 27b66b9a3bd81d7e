//! What `godwit proxy` is told at start, and why it can fail.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How the proxy listens and behaves. Build it with [`ProxyConfig::new`] and change fields.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Plain HTTP/1.1 and h2c (prior knowledge).
    pub http_listen: SocketAddr,
    /// HTTP/1.1 and HTTP/2 over TLS (ALPN); needs `tls`.
    pub https_listen: Option<SocketAddr>,
    /// The public port the http listener stands for: services are matched on it (80).
    pub http_port: u16,
    /// The public port the https listener stands for (443).
    pub https_port: u16,
    /// Apps are reached as `<app>.<domain>`.
    pub domain: String,
    /// The region of this proxy: `Fly-Region`, request ids, and machines here come first.
    pub region: String,
    /// PEM certificate chain and private key (e.g. a wildcard for `*.<domain>`).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long to wait for the state replica's initial load before giving up.
    pub ready_timeout: Duration,
    /// How long a request may wait for a machine below its hard limit before a 503.
    pub queue_timeout: Duration,
    /// How long an autostarted machine may take to accept TCP connections.
    pub start_timeout: Duration,
    /// How many machines a request may try when connections are refused.
    pub max_attempts: usize,
    /// A machine with autostop on is stopped after this long without requests.
    pub autostop_idle: Duration,
    /// How often the autostop pass runs.
    pub autostop_interval: Duration,
    /// How long open connections may finish their requests after cancellation.
    pub shutdown_grace: Duration,
    /// How long an idle connection to a machine is kept for the next request (below the
    /// keep-alive timeout of common servers, 5 s for Node).
    pub upstream_idle_timeout: Duration,
    /// Raw TCP: every public port a machine offers with no handlers (other than the http
    /// and https ports) gets a listener on `<tcp_listen_ip>:<port>` whose connections are
    /// passed byte for byte to a machine of the app. `None` turns raw TCP off.
    pub tcp_listen_ip: Option<IpAddr>,
    /// Certificates of custom hostnames and open ACME challenges (see [`crate::CertStore`]);
    /// with `None`, TLS serves only the `tls` certificate.
    pub certs: Option<crate::CertStore>,
    /// Prometheus metrics at `/metrics` on this address; `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// Requests and connections one app may have in flight at once, so a busy app cannot
    /// take every connection; more get a 503 (`PL02`).
    pub max_connections_per_app: usize,
    /// One INFO line per request (target `godwit_proxy::access`): request id, app, machine,
    /// region, method, path without the query string, status, bytes, duration. Off by default.
    pub access_log: bool,
    /// Worker role: an h2c listener other proxies forward requests for this host's machines
    /// to. Every proxy of a cluster listens on the same port: an edge reaches a host's
    /// worker at the IP of its `agent_url` and this port.
    pub backhaul_listen: Option<SocketAddr>,
    /// The host this proxy runs on; machines of other hosts are reached through their
    /// host's worker proxy. `None`: every machine is reached directly (one host).
    pub host_id: Option<String>,
    /// The hosts replica (`godwit_hosts`): where other hosts' workers are, and their regions.
    pub hosts: Option<godwit_state::Replica<godwit_types::HostRecord>>,
    /// The cluster secret backhaul requests carry (hashed); required with `backhaul_listen`.
    pub backhaul_secret: Option<String>,
    /// Latency shedding: when every machine of the nearest region is at its soft limit, a
    /// region at most this much farther (measured RTT) with room takes the request. `None`
    /// stays in the nearest region until its hard limit (Fly's default).
    pub shed_budget: Option<Duration>,
}

/// Why the proxy could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the machines replica was not ready within {timeout:?}")]
    NotReady {
        timeout: Duration,
        #[source]
        source: godwit_state::StateError,
    },
    #[error("failed to listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("https_listen is set but neither tls files nor a certificate store are configured")]
    MissingTls,
    #[error("failed to load the tls certificate or key from {path}")]
    TlsFile {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate found in {path}")]
    NoCertificate { path: PathBuf },
    #[error("backhaul_listen is set but no backhaul secret is configured")]
    MissingBackhaulSecret,
    #[error("invalid tls configuration")]
    Tls(#[source] rustls::Error),
}

// === impl ProxyConfig ===

impl ProxyConfig {
    /// A config with the defaults: ports 80/443, queue 5 s, start 20 s, 10 attempts, autostop
    /// after 5 minutes idle (checked every 30 s), idle upstream connections kept 4 s, no
    /// https listener, raw TCP listeners on the http listener's IP, no metrics listener,
    /// 10 000 requests in flight per app, no backhaul (every machine local), no shedding.
    pub fn new(http_listen: SocketAddr, domain: &str, region: &str) -> Self {
        ProxyConfig {
            http_listen,
            https_listen: None,
            http_port: 80,
            https_port: 443,
            domain: domain.trim_matches('.').to_ascii_lowercase(),
            region: region.to_owned(),
            tls: None,
            ready_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(20),
            max_attempts: 10,
            autostop_idle: Duration::from_secs(300),
            autostop_interval: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            upstream_idle_timeout: Duration::from_secs(4),
            tcp_listen_ip: Some(http_listen.ip()),
            certs: None,
            metrics_listen: None,
            max_connections_per_app: 10_000,
            access_log: false,
            backhaul_listen: None,
            host_id: None,
            hosts: None,
            backhaul_secret: None,
            shed_budget: None,
        }
    }
}
