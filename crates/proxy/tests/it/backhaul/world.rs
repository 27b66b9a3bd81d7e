//! Several proxies, one per "host", on one real nats-server: each proxy follows its own
//! machines bucket (its view, which a test may make stale), all share the hosts bucket, and
//! every worker listens on its own loopback IP and the one backhaul port of the cluster.
//! A delay relay (real TCP, held bytes) stands in for a long link.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use godwit_proxy::{Listeners, ProxyConfig, Starter};
use godwit_state::testing::NatsServer;
use godwit_state::{Bucket, StateClient};
use godwit_types::{HostRecord, MachineRecord};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::backend::random_loopback;
use crate::support::{DEADLINE, DOMAIN, RefusingStarter, Reply, host};

pub(crate) const SECRET: &str = "cluster-secret";

/// One nats-server, the hosts bucket, and the cluster's backhaul port.
pub(crate) struct World {
    _nats: NatsServer,
    state: StateClient,
    hosts: Bucket<HostRecord>,
    pub(crate) port: u16,
}

/// One proxy (edge and worker) of a host.
pub(crate) struct Node {
    pub(crate) http: SocketAddr,
    pub(crate) metrics: SocketAddr,
    /// Where its worker listens.
    pub(crate) backhaul: SocketAddr,
    client: reqwest::Client,
    /// The address requests come from (so Fly-Client-IP can be checked).
    pub(crate) client_ip: IpAddr,
    cancel: CancellationToken,
}

// === impl World ===

impl World {
    pub(crate) async fn start() -> anyhow::Result<World> {
        let nats =
            NatsServer::start().context("start nats-server (apt-get install -y nats-server)")?;
        let state = StateClient::connect(&nats.url).await?;
        let hosts = state.bucket::<HostRecord>("godwit_hosts").await?;
        // The port every worker listens on, each on its own loopback IP.
        let probe = TcpListener::bind(SocketAddr::new(random_loopback(), 0)).await?;
        let port = probe.local_addr()?.port();
        Ok(World {
            _nats: nats,
            state,
            hosts,
            port,
        })
    }

    /// Publishes `host_id` in `region` with its agent (and so its worker) at `ip`.
    pub(crate) async fn advertise(
        &self,
        host_id: &str,
        region: &str,
        ip: IpAddr,
    ) -> anyhow::Result<()> {
        let record = HostRecord {
            host_id: host_id.to_owned(),
            region: region.to_owned(),
            agent_url: format!("http://{}", SocketAddr::new(ip, 7070)),
            cpus_total: 4,
            memory_mb_total: 4096,
            cpus_reserved: 0,
            memory_mb_reserved: 0,
            schedulable: true,
            updated_at: 0,
        };
        self.hosts
            .put(&godwit_state::key_for(host_id), &record)
            .await?;
        Ok(())
    }

    /// Starts the proxy of `host_id` in `region`, seeing `machines`, its worker on a fresh
    /// loopback IP (advertised unless `advertise` is false: a relay may stand in).
    pub(crate) async fn node(
        &self,
        region: &str,
        host_id: &str,
        machines: &[MachineRecord],
        advertise: bool,
        tweak: impl FnOnce(&mut ProxyConfig),
    ) -> anyhow::Result<Node> {
        let starter = Arc::new(RefusingStarter);
        self.node_with(region, host_id, machines, advertise, starter, tweak)
            .await
    }

    /// [`World::node`] with machines started by `starter`.
    pub(crate) async fn node_with(
        &self,
        region: &str,
        host_id: &str,
        machines: &[MachineRecord],
        advertise: bool,
        starter: Arc<dyn Starter>,
        tweak: impl FnOnce(&mut ProxyConfig),
    ) -> anyhow::Result<Node> {
        let bucket = self
            .state
            .bucket::<MachineRecord>(&format!("machines_{host_id}"))
            .await?;
        for record in machines {
            bucket
                .put(&godwit_state::key_for(&record.id), record)
                .await?;
        }
        let replica = bucket.replica().await?;
        let backhaul = SocketAddr::new(random_loopback(), self.port);
        if advertise {
            self.advertise(host_id, region, backhaul.ip()).await?;
        }
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let http_addr = http.local_addr()?;
        let metrics = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        let mut cfg = ProxyConfig::new(http_addr, DOMAIN, region);
        cfg.shutdown_grace = Duration::from_secs(1);
        cfg.metrics_listen = Some(metrics);
        cfg.backhaul_listen = Some(backhaul);
        cfg.host_id = Some(host_id.to_owned());
        cfg.hosts = Some(self.hosts.replica().await?);
        cfg.backhaul_secret = Some(SECRET.to_owned());
        tweak(&mut cfg);
        let cancel = CancellationToken::new();
        let listeners = Listeners { http, https: None };
        let proxy = godwit_proxy::serve_with(cfg, listeners, replica, starter, cancel.clone());
        tokio::spawn(async move {
            if let Err(error) = proxy.await {
                panic!("proxy failed: {error:#}");
            }
        });
        let client_ip = random_loopback();
        let client = reqwest::Client::builder()
            .no_proxy()
            .local_address(client_ip)
            .timeout(DEADLINE)
            .build()?;
        let node = Node {
            http: http_addr,
            metrics,
            backhaul,
            client,
            client_ip,
            cancel,
        };
        wait_for_port(backhaul).await?;
        wait_for_port(metrics).await?;
        Ok(node)
    }
}

// === impl Node ===

impl Node {
    pub(crate) async fn get(&self, app: &str, path: &str) -> anyhow::Result<Reply> {
        self.send(app, path, &[]).await
    }

    pub(crate) async fn send(
        &self,
        app: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let mut request = self
            .client
            .get(format!("http://{}{path}", self.http))
            .header("host", host(app));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let body = response.text().await?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Starts `GET /hold` (held by the backend until released); resolves to its status.
    pub(crate) fn hold(&self, app: &str) -> tokio::task::JoinHandle<anyhow::Result<u16>> {
        let request = self
            .client
            .get(format!("http://{}/hold", self.http))
            .header("host", host(app));
        tokio::spawn(async move { Ok(request.send().await?.status().as_u16()) })
    }

    /// `/metrics` of this proxy.
    pub(crate) async fn metrics(&self) -> anyhow::Result<String> {
        let url = format!("http://{}/metrics", self.metrics);
        Ok(self.client.get(url).send().await?.text().await?)
    }

    /// The value of `godwit_proxy_region_rtt_seconds{region=...}`, if measured.
    pub(crate) async fn rtt(&self, region: &str) -> anyhow::Result<Option<f64>> {
        let prefix = format!("godwit_proxy_region_rtt_seconds{{region=\"{region}\"}} ");
        let text = self.metrics().await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A TCP relay from `listen` to `target` that holds every chunk for `one_way` in each
/// direction (a long link on loopback).
pub(crate) struct DelayRelay {
    task: tokio::task::JoinHandle<()>,
}

impl DelayRelay {
    pub(crate) async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        one_way: Duration,
    ) -> anyhow::Result<DelayRelay> {
        let listener = TcpListener::bind(listen).await?;
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(
                        delayed_copy(in_read, out_write, one_way),
                        delayed_copy(out_read, in_write, one_way),
                    );
                });
            }
        });
        Ok(DelayRelay { task })
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, each chunk delivered `delay` after it was read, in order.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = async move {
        let mut buffer = vec![0_u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            let due = tokio::time::Instant::now() + delay;
            if tx.send((due, buffer[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            // The link's delay itself, not synchronisation.
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Polls until something accepts connections at `addr`.
async fn wait_for_port(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "nothing listens at {addr}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
