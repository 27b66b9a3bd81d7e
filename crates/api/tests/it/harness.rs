//! The API under test and its helpers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use godwit_api::{ApiConfig, HostInfo, ServeError};
use godwit_state::StateClient;
use godwit_state::testing::NatsServer;
use godwit_types::HostRecord;
use reqwest::{Method, RequestBuilder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::agent::FakeAgent;

pub(crate) const DEFAULT_REGION: &str = "ams";
/// The certificate key's file name in the test API's data dir.
const CERT_KEY_FILE: &str = "cert.key";

/// A running API with its own data dir and nats-server; stopped on drop.
pub(crate) struct TestApi {
    pub(crate) url: String,
    pub(crate) admin_token: String,
    pub(crate) join_token: String,
    pub(crate) data_dir: tempfile::TempDir,
    pub(crate) state: StateClient,
    pub(crate) http: reqwest::Client,
    cancel: CancellationToken,
    server: Option<JoinHandle<Result<(), ServeError>>>,
    nats_server: NatsServer,
}

impl TestApi {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestApi::start`], with `tweak` applied to the config first.
    pub(crate) async fn start_with(tweak: impl FnOnce(&mut ApiConfig)) -> anyhow::Result<Self> {
        let nats =
            NatsServer::start().context("start nats-server (apt-get install nats-server)")?;
        let data_dir = tempfile::Builder::new().prefix("godwit-api-").tempdir()?;
        let init = godwit_api::init(data_dir.path(), "acme")?.context("fresh dir initialises")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let cancel = CancellationToken::new();
        let mut cfg = ApiConfig {
            state_topology: godwit_state::Topology::new("local", &[]),
            data_dir: data_dir.path().to_owned(),
            nats_url: nats.url.clone(),
            default_region: DEFAULT_REGION.into(),
            acme_directory: None,
            acme_ca_pem: None,
            acme_renew_before: godwit_api::RenewBefore::default(),
            acme_renew_every: godwit_api::DEFAULT_ACME_RENEW_EVERY,
            // Made by the API at start, as in production; proxies under test read it.
            cert_key_file: Some(data_dir.path().join(CERT_KEY_FILE)),
        };
        tweak(&mut cfg);
        let server = tokio::spawn(godwit_api::serve(cfg, listener, cancel.clone()));
        let state = StateClient::connect(&nats.url).await?;
        let api = Self {
            url,
            admin_token: init.admin_token,
            join_token: init.join_token,
            data_dir,
            state,
            http: reqwest::Client::new(),
            cancel,
            server: Some(server),
            nats_server: nats,
        };
        api.wait_until("api answers /v1/healthz", || async {
            Ok(api
                .http
                .get(api.path("/v1/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200))
        })
        .await?;
        Ok(api)
    }

    /// Cancels the server and waits for it to drain and return.
    pub(crate) async fn shutdown(mut self) -> Result<(), ServeError> {
        self.cancel.cancel();
        let server = self.server.take().expect("server runs until shutdown");
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops within 10 s")
            .expect("the server task did not panic")
    }

    pub(crate) fn path(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A request with the admin token.
    pub(crate) fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.path(path))
            .bearer_auth(&self.admin_token)
    }

    /// Sends a request with the admin token and no body; panics when it gets no answer.
    pub(crate) async fn send(&self, method: Method, path: &str) -> reqwest::Response {
        self.req(method.clone(), path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Like [`TestApi::send`], with `body` as JSON.
    pub(crate) async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &impl serde::Serialize,
    ) -> reqwest::Response {
        self.req(method.clone(), path)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `GET path` with the admin token, its body parsed as JSON; panics when either fails.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.send(Method::GET, path)
            .await
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: not the JSON expected: {e}"))
    }

    pub(crate) fn db_path(&self) -> PathBuf {
        self.data_dir.path().join(godwit_api::DB_FILE)
    }

    /// The cluster certificate key the API seals published private keys with.
    pub(crate) fn cert_key_file(&self) -> PathBuf {
        self.data_dir.path().join(CERT_KEY_FILE)
    }

    /// Where the nats-server keeps its JetStream files (the buckets, on disk).
    pub(crate) fn nats_store_dir(&self) -> PathBuf {
        self.nats_server.store_dir()
    }

    /// Polls `cond` until it is true, failing after 15 s.
    pub(crate) async fn wait_until<F, Fut>(&self, what: &str, cond: F) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if cond().await? {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out waiting until {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn must_create_app(&self, name: &str) {
        let res = self
            .req(Method::POST, "/v1/apps")
            .json(&serde_json::json!({ "app_name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }

    /// Registers `agent` as host `host_id` and publishes its record, then waits until the
    /// API's replica has it.
    pub(crate) async fn must_add_host(
        &self,
        agent: &FakeAgent,
        host_id: &str,
        region: &str,
        memory_mb: u64,
    ) {
        let res = self
            .http
            .post(self.path("/v1/hosts/register"))
            .json(&serde_json::json!({
                "join_token": self.join_token, "host_id": host_id, "region": region,
                "agent_url": agent.url, "agent_token": agent.token, "cpus": 2,
                "memory_mb": memory_mb,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        let record = HostRecord {
            host_id: host_id.into(),
            region: region.into(),
            agent_url: agent.url.clone(),
            cpus_total: 2,
            memory_mb_total: memory_mb,
            cpus_reserved: 0,
            memory_mb_reserved: 0,
            schedulable: true,
            updated_at: godwit_types::now_ms(),
        };
        let bucket = self
            .state
            .bucket::<HostRecord>("godwit_hosts")
            .await
            .unwrap();
        bucket
            .put(&godwit_state::key_for(host_id), &record)
            .await
            .unwrap();
        self.wait_until("the api sees the host record", || async {
            let hosts: Vec<HostInfo> = self
                .req(Method::GET, "/v1/hosts")
                .send()
                .await?
                .json()
                .await?;
            Ok(hosts
                .iter()
                .any(|h| h.host_id == host_id && h.status == "ok"))
        })
        .await
        .unwrap();
    }

    /// Adds another organisation straight into the database and returns its admin token.
    pub(crate) fn must_add_org(&self, slug: &str) -> String {
        use sha2::Digest as _;
        let token = format!("gw_test_{slug}_{:x}", rand::random::<u64>());
        let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        let conn = rusqlite::Connection::open(self.db_path()).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute("INSERT INTO orgs (slug, created_at) VALUES (?1, 0)", [slug])
            .unwrap();
        let org_id = conn.last_insert_rowid();
        conn.execute(
            "INSERT INTO tokens (org_id, kind, hash, prefix, created_at)
             VALUES (?1, 'admin', ?2, 'gw_test', 0)",
            rusqlite::params![org_id, hash],
        )
        .unwrap();
        token
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Reads a JSON error body and returns its message.
pub(crate) async fn error_of(res: reqwest::Response) -> String {
    let body: serde_json::Value = res.json().await.expect("error bodies are json");
    body["error"]
        .as_str()
        .expect("error bodies have `error`")
        .to_owned()
}
