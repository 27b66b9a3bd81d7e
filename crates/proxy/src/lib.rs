//! The edge proxy: takes HTTP/1.1, h2c and TLS (HTTP/1.1 and HTTP/2 by ALPN) connections for
//! `<app>.<domain>` (WebSocket upgrades included) and raw TCP connections on the ports
//! services offer without handlers, picks a machine of the app from the machines replica (started, not
//! cordoned, no service check critical, least loaded below its soft limit, never above its
//! hard limit), forwards the request over pooled keep-alive connections, retries refused
//! connections on the next machine, starts stopped machines on demand, stops idle ones, and
//! replays requests named by a `fly-replay` response header or a JSON body of type
//! `application/vnd.fly.replay+json` (to a machine, region or another app; `prefer_instance`,
//! `timeout`, `fallback=force_self|prefer_self` with `fly-replay-failed`, region lists in
//! order of preference with the aliases `any`, `eu`, `na`, `us`/`usa`, `sa`, `apac`, and in
//! JSON a `transform` of path and headers; replay caching is not supported). The client's
//! routing headers steer the choice and go on to the machine unchanged: `fly-prefer-region`
//! and `fly-prefer-instance-id` rank those machines first (the machine chosen instead gets
//! `fly-preferred-instance-unavailable`), `fly-force-region` and `fly-force-instance-id`
//! allow only those (a forced machine's refused connections are retried on it). Ports with
//! `force_https` get a 301 to HTTPS on the http listener; raw TCP ports with the
//! `proxy_proto` handler get a PROXY protocol v1 (or v2) header first, and those with the
//! `tls` handler have TLS terminated by the proxy; ports with
//! `h2_backend` are forwarded over h2c, trailers included (gRPC); open WebSockets get a
//! close frame (1001) before autostop stops their machine; `access_log` writes one line per
//! request, and every line logged for a request carries its id; each app may have at most `max_connections_per_app`
//! requests and connections in flight; Prometheus metrics are served on `metrics_listen`;
//! on cancel, requests in flight get `shutdown_grace` to finish. With `host_id` set, a
//! machine on another host is reached through that host's worker proxy over backhaul
//! (h2c between proxies, `backhaul_listen`); regions rank by the RTT measured over it, and
//! `shed_budget` lets a nearby region take requests when the nearest is at its soft limit.
//! Plain and TLS HTTP/1.1 requests to machines on this host take a fast path without hyper
//! (`h1`); everything else, and the rest of a connection after anything unusual (routing
//! headers included), is hyper's.
//!
//! Owns routing, load balancing, autostart/autostop and replay. Reads machine state only
//! from a [`godwit_state::Replica`]; starts and stops machines only through a [`Starter`].
//! Must not depend on godwit-api, godwit-agent or godwit-cli.
#![forbid(unsafe_code)]

mod autostop;
mod backhaul;
mod balance;
mod body;
mod certs;
mod config;
mod h1;
mod handler;
mod limit;
mod listen;
mod metrics;
mod proxy_proto;
mod routes;
mod starter;
mod tcp;
mod upstream;
mod wake;

use std::sync::Arc;

use godwit_state::Replica;
use godwit_types::MachineRecord;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use certs::{ACME_HTTP_PREFIX, ACME_TLS_ALPN, CertKey, CertStore};
pub use config::{ProxyConfig, ProxyError};
pub use starter::{ApiStarter, Starter};

/// Listeners bound by the caller, for [`serve_with`].
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    pub https: Option<TcpListener>,
}

/// Runs the proxy until `cancel` fires: waits for the replica's initial load, then binds
/// `cfg.http_listen` (and `cfg.https_listen`) and serves. No connection is accepted before
/// the route table is loaded.
pub async fn serve(
    cfg: ProxyConfig,
    machines: Replica<MachineRecord>,
    starter: Arc<dyn Starter>,
    cancel: CancellationToken,
) -> Result<(), ProxyError> {
    let tls = listen::tls_config(&cfg, cfg.https_listen.is_some())?;
    wait_ready(&cfg, &machines).await?;
    let http = listen::bind(cfg.http_listen).await?;
    let https = match cfg.https_listen {
        Some(addr) => Some(listen::bind(addr).await?),
        None => None,
    };
    let metrics = bind_metrics(&cfg).await?;
    let backhaul = bind_backhaul(&cfg).await?;
    run(
        cfg,
        Listeners { http, https },
        [metrics, backhaul],
        tls,
        machines,
        starter,
        cancel,
    )
    .await;
    Ok(())
}

/// Like [`serve`], on listeners the caller bound (e.g. on port 0 in tests). Nothing is
/// accepted from them before the replica's initial load.
pub async fn serve_with(
    cfg: ProxyConfig,
    listeners: Listeners,
    machines: Replica<MachineRecord>,
    starter: Arc<dyn Starter>,
    cancel: CancellationToken,
) -> Result<(), ProxyError> {
    let tls = listen::tls_config(&cfg, listeners.https.is_some())?;
    wait_ready(&cfg, &machines).await?;
    let metrics = bind_metrics(&cfg).await?;
    let backhaul = bind_backhaul(&cfg).await?;
    run(
        cfg,
        listeners,
        [metrics, backhaul],
        tls,
        machines,
        starter,
        cancel,
    )
    .await;
    Ok(())
}

async fn wait_ready(
    cfg: &ProxyConfig,
    machines: &Replica<MachineRecord>,
) -> Result<(), ProxyError> {
    machines
        .wait_ready(cfg.ready_timeout)
        .await
        .map_err(|source| ProxyError::NotReady {
            timeout: cfg.ready_timeout,
            source,
        })
}

async fn bind_metrics(cfg: &ProxyConfig) -> Result<Option<TcpListener>, ProxyError> {
    match cfg.metrics_listen {
        Some(addr) => Ok(Some(listen::bind(addr).await?)),
        None => Ok(None),
    }
}

/// Binds the backhaul listener (worker role), which needs the cluster secret.
async fn bind_backhaul(cfg: &ProxyConfig) -> Result<Option<TcpListener>, ProxyError> {
    let Some(addr) = cfg.backhaul_listen else {
        return Ok(None);
    };
    if cfg
        .backhaul_secret
        .as_deref()
        .is_none_or(|s| s.trim().is_empty())
    {
        return Err(ProxyError::MissingBackhaulSecret);
    }
    Ok(Some(listen::bind(addr).await?))
}

async fn run(
    cfg: ProxyConfig,
    listeners: Listeners,
    [metrics_listener, backhaul_listener]: [Option<TcpListener>; 2],
    tls: Option<Arc<rustls::ServerConfig>>,
    machines: Replica<MachineRecord>,
    starter: Arc<dyn Starter>,
    cancel: CancellationToken,
) {
    let http_ports = [cfg.http_port, cfg.https_port];
    let routes = routes::RouteTable::follow(machines, http_ports, cancel.child_token());
    let loads = Arc::new(balance::Loads::default());
    let metrics = Arc::new(metrics::Metrics::default());
    let wakers = Arc::new(wake::Wakers::new(
        Arc::clone(&starter),
        cfg.start_timeout,
        Arc::clone(&metrics),
    ));
    let (http_port, https_port) = (cfg.http_port, cfg.https_port);
    let proxy = Arc::new(handler::Proxy::new(cfg, routes, loads, wakers, metrics));
    tracing::info!(region = %proxy.cfg.region, domain = %proxy.cfg.domain, "proxy ready");
    let autostop = tokio::spawn(autostop::run(
        Arc::clone(&proxy),
        starter,
        cancel.child_token(),
    ));
    let tcp = proxy.cfg.tcp_listen_ip.map(|ip| {
        tokio::spawn(tcp::run(
            Arc::clone(&proxy),
            ip,
            tls.clone(),
            cancel.child_token(),
        ))
    });
    let backhaul = backhaul_listener.map(|listener| {
        tokio::spawn(backhaul::serve(
            Arc::clone(&proxy),
            listener,
            cancel.child_token(),
        ))
    });
    let measure = tokio::spawn(backhaul::measure(Arc::clone(&proxy), cancel.child_token()));
    let metrics = metrics_listener.map(|listener| {
        tokio::spawn(metrics::serve(
            Arc::clone(&proxy),
            listener,
            cancel.child_token(),
        ))
    });
    let http = listen::run(
        Arc::clone(&proxy),
        listeners.http,
        None,
        http_port,
        cancel.clone(),
    );
    let https = async {
        if let (Some(listener), Some(tls)) = (listeners.https, tls) {
            listen::run(
                Arc::clone(&proxy),
                listener,
                Some(tls),
                https_port,
                cancel.clone(),
            )
            .await;
        }
    };
    tokio::join!(http, https);
    let _ = autostop.await;
    if let Some(tcp) = tcp {
        let _ = tcp.await;
    }
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    if let Some(backhaul) = backhaul {
        let _ = backhaul.await;
    }
    let _ = measure.await;
}
