//! ACME end to end against Debian's pebble: the API orders, a real godwit proxy answers the
//! HTTP-01 or TLS-ALPN-01 challenge from the `godwit_acme` bucket, pebble validates, and the
//! proxy then serves the issued certificate (chaining to pebble's root) and routes the
//! hostname to the app.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use godwit_proxy::{ApiStarter, CertStore, Listeners, ProxyConfig};
use godwit_state::Topology;
use godwit_types::machine::MachinePort;
use godwit_types::{ACME_BUCKET, AcmeChallengeRecord, MachineRecord, MachineService, MachineState};
use reqwest::Method;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::harness::TestApi;
use crate::pebble::Pebble;

const BODY: &str = "hello from shop";

#[tokio::test]
async fn acme_issues_by_http01_and_tls_alpn01_and_the_proxy_serves_it() -> anyhow::Result<()> {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (http_addr, https_addr) = (http.local_addr()?, https.local_addr()?);
    let pebble = Pebble::start(http_addr.port(), https_addr.port())?;
    let (directory, ca) = (pebble.directory.clone(), pebble.ca_pem.clone());
    let api = TestApi::start_with(move |cfg| {
        cfg.acme_directory = Some(directory);
        cfg.acme_ca_pem = Some(ca);
    })
    .await?;
    api.must_create_app("shop").await;

    let proxy = AcmeProxy::start(&api, http, Some(https)).await?;
    let store = proxy.store.clone();
    let challenges = api.state.bucket::<AcmeChallengeRecord>(ACME_BUCKET).await?;

    for (hostname, challenge) in [
        ("shop.godwit-acme.test", "http-01"),
        ("alpn.godwit-acme.test", "tls-alpn-01"),
    ] {
        let res = api
            .req(Method::POST, "/v1/apps/shop/certificates/acme")
            .json(&json!({ "hostname": hostname, "challenge": challenge }))
            .send()
            .await?;
        assert_eq!(res.status(), 202, "{}", res.text().await?);
        let started: serde_json::Value = res.json().await?;
        assert_eq!(started["status"], "pending");
        assert_eq!(started["source"], "acme");
        let res = api
            .req(Method::POST, "/v1/apps/shop/certificates/acme")
            .json(&json!({ "hostname": hostname }))
            .send()
            .await?;
        assert_eq!(res.status(), 409, "one order at a time per hostname");

        let cert = wait_issued(&api, hostname, &pebble).await?;
        assert!(
            cert["issuer"]
                .as_str()
                .unwrap_or_default()
                .contains("Pebble Intermediate"),
            "{cert}"
        );
        let store = store.clone();
        let loaded = hostname.to_owned();
        wait_until("the proxy loads the certificate", move || {
            store.has_host(&loaded)
        })
        .await?;

        // curl trusts only pebble's root: the chain served must lead there, for this SNI,
        // and the hostname routes to the app.
        let root = api.data_dir.path().join("pebble-root.pem");
        std::fs::write(&root, pebble.root_pem()?)?;
        let body = curl_https(hostname, https_addr, &root).await?;
        assert_eq!(body, BODY, "{challenge}");
    }
    let open: Vec<String> = challenges.keys().await?;
    assert!(
        open.is_empty(),
        "challenges are removed when done: {open:?}"
    );
    let listed: serde_json::Value = api
        .req(Method::GET, "/v1/apps/shop/certificates")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["certificates"].as_array().map(Vec::len), Some(2));
    proxy.stop().await
}

#[tokio::test]
async fn a_failed_validation_is_reported_with_the_reason() -> anyhow::Result<()> {
    // Nothing listens where pebble validates: no proxy runs.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let pebble = Pebble::start(unused, unused)?;
    let (directory, ca) = (pebble.directory.clone(), pebble.ca_pem.clone());
    let api = TestApi::start_with(move |cfg| {
        cfg.acme_directory = Some(directory);
        cfg.acme_ca_pem = Some(ca);
    })
    .await?;
    api.must_create_app("shop").await;
    let res = api
        .req(Method::POST, "/v1/apps/shop/certificates/acme")
        .json(&json!({ "hostname": "down.godwit-acme.test" }))
        .send()
        .await?;
    assert_eq!(res.status(), 202);
    let error = match wait_issued(&api, "down.godwit-acme.test", &pebble).await {
        Ok(cert) => bail!("issued without a challenge answered: {cert}"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("\"failed\""), "{error}");
    assert!(
        error.to_ascii_lowercase().contains("connection refused"),
        "{error}"
    );
    Ok(())
}

/// A godwit proxy for app `shop` (its machine put in the machines bucket), following the
/// certificates and challenges the API publishes as `godwit proxy` does
/// ([`CertStore::open`]); it answers HTTP-01 on `http` and TLS-ALPN-01 and HTTPS on `https`.
pub(crate) struct AcmeProxy {
    pub(crate) store: CertStore,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), godwit_proxy::ProxyError>>,
}

impl AcmeProxy {
    pub(crate) async fn start(
        api: &TestApi,
        http: tokio::net::TcpListener,
        https: Option<tokio::net::TcpListener>,
    ) -> anyhow::Result<AcmeProxy> {
        let backend = start_backend().await?;
        let machines = api.state.bucket::<MachineRecord>("godwit_machines").await?;
        machines.put("m-shop", &machine_record(backend)).await?;
        let cancel = CancellationToken::new();
        let topology = Topology::new("local", &[]);
        let store = CertStore::open(&api.state, &topology, cancel.child_token()).await?;
        let mut cfg = ProxyConfig::new(http.local_addr()?, "apps.godwit.test", "ams");
        cfg.https_listen = https.as_ref().map(|l| l.local_addr()).transpose()?;
        cfg.certs = Some(store.clone());
        cfg.shutdown_grace = Duration::from_secs(1);
        let task = tokio::spawn(godwit_proxy::serve_with(
            cfg,
            Listeners { http, https },
            machines.replica().await?,
            Arc::new(ApiStarter::new(&api.url, &api.admin_token)),
            cancel.clone(),
        ));
        Ok(AcmeProxy {
            store,
            cancel,
            task,
        })
    }

    /// Stops the proxy and waits until its listeners are closed.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Polls the certificate until it leaves `pending`; fails with the reason when it failed.
pub(crate) async fn wait_issued(
    api: &TestApi,
    hostname: &str,
    pebble: &Pebble,
) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let cert: serde_json::Value = api
            .req(
                Method::GET,
                &format!("/v1/apps/shop/certificates/{hostname}"),
            )
            .send()
            .await?
            .json()
            .await?;
        match cert["status"].as_str() {
            Some("ready") => return Ok(cert),
            Some("pending") => {}
            _ => bail!(
                "issuance of {hostname} failed: {cert}\npebble:\n{}",
                pebble.log()
            ),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{hostname} still pending after 90 s\npebble:\n{}",
                pebble.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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

pub(crate) async fn curl_https(
    hostname: &str,
    addr: SocketAddr,
    root: &std::path::Path,
) -> anyhow::Result<String> {
    let args = vec![
        "-sS".to_owned(),
        "--fail".to_owned(),
        "--max-time".to_owned(),
        "20".to_owned(),
        "--cacert".to_owned(),
        root.to_str().context("utf-8 path")?.to_owned(),
        "--resolve".to_owned(),
        format!("{hostname}:{}:{}", addr.port(), addr.ip()),
        format!("https://{hostname}:{}/", addr.port()),
    ];
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
