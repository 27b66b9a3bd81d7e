//! A real godwit proxy following the buckets a test API writes (as `godwit proxy` does), an
//! app behind it, and curl to reach it over TLS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use godwit_proxy::{ApiStarter, CertKey, CertStore, Listeners, ProxyConfig, ProxyError};
use godwit_state::Topology;
use godwit_types::machine::MachinePort;
use godwit_types::{
    ACME_BUCKET, AcmeChallengeRecord, CERTS_BUCKET, CertRecord, MachineRecord, MachineService,
    MachineState,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::harness::TestApi;

/// What the app behind the proxy answers.
pub(crate) const BODY: &str = "hello from shop";

/// A proxy on its own listeners; stopped on drop.
pub(crate) struct TestProxy {
    /// The HTTPS listener's address (TLS-ALPN-01 and HTTPS), when it has one.
    pub(crate) https: Option<SocketAddr>,
    pub(crate) store: CertStore,
    cancel: CancellationToken,
    task: Option<JoinHandle<Result<(), ProxyError>>>,
}

impl TestProxy {
    /// Starts a proxy on `http` (HTTP-01) and `https` whose certificate store opens private
    /// keys with `cert_key`, opening the buckets as `godwit proxy` does (one region). The
    /// certificate replica has finished its first load before the store is built, so every
    /// certificate the bucket holds now is loaded (or left out) on return.
    pub(crate) async fn start(
        api: &TestApi,
        http: TcpListener,
        https: Option<TcpListener>,
        cert_key: Option<CertKey>,
    ) -> anyhow::Result<TestProxy> {
        let http_addr = http.local_addr()?;
        let https_addr = https.as_ref().map(TcpListener::local_addr).transpose()?;
        let cancel = CancellationToken::new();
        let topology = Topology::new("local", &[]);
        let certs = api
            .state
            .records::<CertRecord>(CERTS_BUCKET, &topology)
            .await?
            .replica_until(cancel.child_token())
            .await?;
        certs.wait_ready(Duration::from_secs(15)).await?;
        let challenges = api
            .state
            .records::<AcmeChallengeRecord>(ACME_BUCKET, &topology)
            .await?;
        let store = CertStore::follow(
            certs,
            challenges.replica_until(cancel.child_token()).await?,
            challenges,
            cert_key,
            cancel.child_token(),
        );
        let machines = api
            .state
            .bucket::<MachineRecord>("godwit_machines")
            .await?
            .replica_until(cancel.child_token())
            .await?;
        let mut cfg = ProxyConfig::new(http_addr, "apps.godwit.test", "ams");
        cfg.https_listen = https_addr;
        cfg.certs = Some(store.clone());
        cfg.shutdown_grace = Duration::from_secs(1);
        let task = tokio::spawn(godwit_proxy::serve_with(
            cfg,
            Listeners { http, https },
            machines,
            Arc::new(ApiStarter::new(&api.url, &api.admin_token)),
            cancel.clone(),
        ));
        Ok(TestProxy {
            https: https_addr,
            store,
            cancel,
            task: Some(task),
        })
    }

    /// Like [`TestProxy::start`], on fresh loopback ports.
    pub(crate) async fn start_anywhere(
        api: &TestApi,
        cert_key: Option<CertKey>,
    ) -> anyhow::Result<TestProxy> {
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let https = TcpListener::bind("127.0.0.1:0").await?;
        TestProxy::start(api, http, Some(https), cert_key).await
    }

    /// Stops the proxy and returns how it ended.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        let task = self.task.take().context("the proxy runs until stopped")?;
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .context("the proxy stops within 10 s")???;
        Ok(())
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Runs the app (answering [`BODY`]) and publishes its machine `m-shop` of app `shop`.
pub(crate) async fn must_run_shop(api: &TestApi) {
    let backend = start_backend().await.expect("start the app");
    let machines = api
        .state
        .bucket::<MachineRecord>("godwit_machines")
        .await
        .expect("machines bucket");
    machines
        .put("m-shop", &machine_record(backend))
        .await
        .expect("publish the machine");
}

/// Polls `cond` until it holds, failing after 15 s.
pub(crate) async fn wait_until(what: &str, cond: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `GET https://<hostname>/` through the proxy at `addr`, trusting only `root`.
pub(crate) async fn curl_https(
    hostname: &str,
    addr: SocketAddr,
    root: &std::path::Path,
) -> anyhow::Result<String> {
    curl_tls(hostname, addr, root, &["--fail"]).await
}

/// Runs curl with `extra` for `https://<hostname>/` at `addr`, trusting only `root`; its
/// stdout.
pub(crate) async fn curl_tls(
    hostname: &str,
    addr: SocketAddr,
    root: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<String> {
    let mut args: Vec<String> = ["-sS", "--max-time", "20"]
        .iter()
        .chain(extra)
        .map(|a| (*a).to_owned())
        .collect();
    args.extend([
        "--cacert".to_owned(),
        root.to_str().context("utf-8 path")?.to_owned(),
        "--resolve".to_owned(),
        format!("{hostname}:{}:{}", addr.port(), addr.ip()),
        format!("https://{hostname}:{}/", addr.port()),
    ]);
    let output = tokio::task::spawn_blocking(move || Command::new("curl").args(&args).output())
        .await?
        .context("run curl (apt-get install -y curl)")?;
    if !output.status.success() {
        bail!(
            "curl {hostname}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// A tiny HTTP app on 127.0.0.1.
async fn start_backend() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/", axum::routing::get(|| async { BODY }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

fn machine_record(addr: SocketAddr) -> MachineRecord {
    let port = |port: u16| MachinePort {
        port: Some(port),
        handlers: vec!["http".to_owned()],
        force_https: None,
        proxy_proto_options: None,
        http_options: None,
    };
    MachineRecord {
        id: "m-shop".to_owned(),
        app: "shop".to_owned(),
        org: "acme".to_owned(),
        name: "m-shop".to_owned(),
        state: MachineState::Started,
        version: 1,
        instance_id: "m-shop-1".to_owned(),
        private_ip: addr.ip().to_string(),
        region: "ams".to_owned(),
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
