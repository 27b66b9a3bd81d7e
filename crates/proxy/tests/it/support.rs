//! Test harness: a real nats-server with the machines bucket, real HTTP backends on
//! 127.x.y.z loopback addresses, and the proxy on 127.0.0.1:0.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use godwit_proxy::{Listeners, ProxyConfig, Starter};
use godwit_state::testing::NatsServer;
use godwit_state::{Bucket, StateClient};
use godwit_types::machine::MachinePort;
use godwit_types::{Concurrency, MachineRecord, MachineService, MachineState};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) use crate::backend::{Backend, Behaviour, dead_addr};

pub(crate) const DOMAIN: &str = "apps.godwit.test";
pub(crate) const REGION: &str = "ams";
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A proxy in front of a real nats-server bucket.
pub(crate) struct Harness {
    _nats: NatsServer,
    pub(crate) bucket: Bucket<MachineRecord>,
    pub(crate) http: SocketAddr,
    pub(crate) https: Option<SocketAddr>,
    pub(crate) cancel: CancellationToken,
    client: reqwest::Client,
    pub(crate) proxy: tokio::task::JoinHandle<Result<(), godwit_proxy::ProxyError>>,
}

/// Builds a harness: records are published first, then the proxy starts.
pub(crate) struct HarnessBuilder {
    records: Vec<MachineRecord>,
    tweak: Box<dyn FnOnce(&mut ProxyConfig) + Send>,
    starter: Option<Arc<dyn Starter>>,
    https: bool,
}

// === impl HarnessBuilder ===

impl HarnessBuilder {
    pub(crate) fn new() -> Self {
        HarnessBuilder {
            records: Vec::new(),
            tweak: Box::new(|_| {}),
            starter: None,
            https: false,
        }
    }

    pub(crate) fn record(mut self, record: MachineRecord) -> Self {
        self.records.push(record);
        self
    }

    pub(crate) fn config(mut self, tweak: impl FnOnce(&mut ProxyConfig) + Send + 'static) -> Self {
        self.tweak = Box::new(tweak);
        self
    }

    pub(crate) fn starter(mut self, starter: Arc<dyn Starter>) -> Self {
        self.starter = Some(starter);
        self
    }

    pub(crate) fn https(mut self) -> Self {
        self.https = true;
        self
    }

    /// Starts nats-server, publishes the records, starts the proxy. `tls` gives the
    /// certificate and key files when `https()` was asked for.
    pub(crate) async fn start_with_tls(
        self,
        tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    ) -> anyhow::Result<Harness> {
        let nats =
            NatsServer::start().context("start nats-server (apt-get install -y nats-server)")?;
        let client = StateClient::connect(&nats.url).await?;
        let bucket = client.bucket::<MachineRecord>("godwit_machines").await?;
        for record in &self.records {
            bucket
                .put(&godwit_state::key_for(&record.id), record)
                .await?;
        }
        let replica = bucket.replica().await?;
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let https = if self.https {
            Some(TcpListener::bind("127.0.0.1:0").await?)
        } else {
            None
        };
        let http_addr = http.local_addr()?;
        let https_addr = https.as_ref().map(|l| l.local_addr()).transpose()?;
        let mut cfg = ProxyConfig::new(http_addr, DOMAIN, REGION);
        cfg.tls = tls;
        cfg.shutdown_grace = Duration::from_secs(1);
        (self.tweak)(&mut cfg);
        let starter = self
            .starter
            .unwrap_or_else(|| Arc::new(RefusingStarter) as Arc<dyn Starter>);
        let cancel = CancellationToken::new();
        let proxy = tokio::spawn(godwit_proxy::serve_with(
            cfg,
            Listeners { http, https },
            replica,
            starter,
            cancel.clone(),
        ));
        Ok(Harness {
            _nats: nats,
            bucket,
            http: http_addr,
            https: https_addr,
            cancel,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(DEADLINE)
                .build()?,
            proxy,
        })
    }

    pub(crate) async fn start(self) -> anyhow::Result<Harness> {
        self.start_with_tls(None).await
    }
}

// === impl Harness ===

impl Harness {
    /// An HTTP client (one per harness: building one is slow).
    pub(crate) fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// `http://<app>.<DOMAIN>:<port><path>` with the Host the proxy routes on.
    pub(crate) async fn get(&self, app: &str, path: &str) -> anyhow::Result<Reply> {
        self.send(self.client().get(self.url(path)).header("host", host(app)))
            .await
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Reply> {
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
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What a client got.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
}

impl Reply {
    /// The backend's JSON echo.
    pub(crate) fn echo(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {} {}", self.status, self.body))
    }

    /// Which backend answered.
    pub(crate) fn served_by(&self) -> String {
        self.echo()["name"].as_str().unwrap_or_default().to_owned()
    }
}

pub(crate) fn host(app: &str) -> String {
    format!("{app}.{DOMAIN}")
}

/// A machine record with one service on ports 80 and 443.
pub(crate) fn record(id: &str, app: &str, addr: SocketAddr, state: MachineState) -> MachineRecord {
    MachineRecord {
        id: id.to_owned(),
        app: app.to_owned(),
        org: "personal".to_owned(),
        name: id.to_owned(),
        state,
        version: 1,
        instance_id: format!("{id}-i1"),
        private_ip: addr.ip().to_string(),
        region: REGION.to_owned(),
        host_id: "host1".to_owned(),
        cpus: 1,
        memory_mb: 256,
        services: vec![MachineService {
            protocol: "tcp".to_owned(),
            internal_port: addr.port(),
            ports: vec![port(80), port(443)],
            concurrency: None,
            autostop: None,
            autostart: None,
            min_machines_running: None,
            checks: Vec::new(),
        }],
        checks: Vec::new(),
        cordoned: false,
        metadata: BTreeMap::new(),
        updated_at: 0,
    }
}

pub(crate) fn port(port: u16) -> MachinePort {
    MachinePort {
        port: Some(port),
        handlers: vec!["http".to_owned()],
        force_https: None,
        proxy_proto_options: None,
        http_options: None,
    }
}

pub(crate) fn limits(kind: &str, soft: u32, hard: Option<u32>) -> Option<Concurrency> {
    Some(Concurrency {
        kind: kind.to_owned(),
        soft_limit: soft,
        hard_limit: hard,
    })
}

/// Polls `cond` until it holds or the deadline passes.
pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A starter for tests that must not start anything.
#[derive(Debug)]
pub(crate) struct RefusingStarter;

#[async_trait::async_trait]
impl Starter for RefusingStarter {
    async fn start(&self, _app: &str, machine_id: &str) -> Result<(), String> {
        Err(format!("this test does not start machines ({machine_id})"))
    }
    async fn stop(&self, _app: &str, machine_id: &str) -> Result<(), String> {
        Err(format!("this test does not stop machines ({machine_id})"))
    }
}

/// Sets the state of `machine_id`'s record in `bucket`, as its agent would publish it.
pub(crate) async fn publish_state(
    bucket: Option<&Bucket<MachineRecord>>,
    machine_id: &str,
    state: MachineState,
) -> Result<(), String> {
    let bucket = bucket.ok_or("no bucket")?;
    let key = godwit_state::key_for(machine_id);
    let mut record = bucket
        .get(&key)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no record")?;
    record.state = state;
    // As the agent does on every change; strictly newer, even within one millisecond.
    record.updated_at = godwit_types::now_ms().max(record.updated_at + 1);
    bucket.put(&key, &record).await.map_err(|e| e.to_string())?;
    Ok(())
}
