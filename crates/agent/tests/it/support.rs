//! Test harness: a busybox image, a fake API to register with, the agent in-process or as a
//! real process, an HTTP client and host leftover checks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use godwit_agent::AgentConfig;
use godwit_types::api::RegisterHostRequest;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod agents;
mod host;
mod net;

pub(crate) use agents::{InProcAgent, ProcAgent};
pub(crate) use host::assert_no_leftovers;
pub(crate) use net::{MachineSubnet, route_to};

pub(crate) const AGENT_BIN: &str = env!("CARGO_BIN_EXE_godwit-agent-test");

/// Polls `cond` every 100 ms until it returns `Some`, failing after `timeout`.
pub(crate) async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut cond: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A unique lowercase name of `n` characters starting with a letter.
pub(crate) fn unique(n: usize) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::from("t");
    while s.len() < n {
        let idx = usize::try_from(rand::random::<u32>()).unwrap() % alphabet.len();
        s.push(char::from(alphabet[idx]));
    }
    s
}

pub(crate) fn machine_id() -> String {
    format!("{:014x}", rand::random::<u64>() & 0x00ff_ffff_ffff_ffff)
}

/// Builds the busybox image (Debian busybox-static) into `dir` and returns its reference.
pub(crate) fn busybox_image(dir: &Path) -> anyhow::Result<String> {
    let busybox = Path::new("/bin/busybox");
    ensure!(
        busybox.is_file(),
        "/bin/busybox is missing: apt-get install -y busybox-static"
    );
    let out = dir.join("busybox-oci");
    godwit_image::build_from_binary(
        busybox,
        &out,
        &godwit_image::BuildOptions {
            name: "busybox".into(),
            tag: "latest".into(),
            env: vec!["GREETING=from-image".into()],
            exposed_port: Some(8080),
        },
    )
    .context("build busybox image")?;
    Ok(format!("oci:{}:latest", out.display()))
}

/// A stand-in for the API's `/v1/hosts/register`.
pub(crate) struct FakeApi {
    pub(crate) url: String,
    pub(crate) registrations: Arc<Mutex<Vec<RegisterHostRequest>>>,
    cancel: CancellationToken,
}

impl FakeApi {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let registrations: Arc<Mutex<Vec<RegisterHostRequest>>> = Arc::default();
        let seen = registrations.clone();
        let app = axum::Router::new().route(
            "/v1/hosts/register",
            axum::routing::post(move |axum::Json(req): axum::Json<RegisterHostRequest>| {
                let seen = seen.clone();
                async move {
                    let host_id = req.host_id.clone();
                    seen.lock().unwrap().push(req);
                    axum::Json(json!({ "host_id": host_id }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Ok(Self {
            url,
            registrations,
            cancel,
        })
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Everything one test's agent needs: data dir, image, NATS, fake API.
pub(crate) struct Env {
    pub(crate) tmp: tempfile::TempDir,
    /// The machine subnet of every agent of this test (see [`MachineSubnet`]).
    pub(crate) subnet: MachineSubnet,
    pub(crate) data_dir: PathBuf,
    pub(crate) image: String,
    pub(crate) prefix: String,
    pub(crate) nats: godwit_state::testing::NatsServer,
    pub(crate) api: FakeApi,
    pub(crate) host_id: String,
}

#[allow(clippy::print_stderr)] // test-only: say where the kept files are
impl Drop for Env {
    fn drop(&mut self) {
        if std::env::var_os("GODWIT_KEEP_TMP").is_some() {
            eprintln!("GODWIT_KEEP_TMP: keeping {}", self.tmp.path().display());
            self.tmp.disable_cleanup(true);
        }
    }
}

impl Env {
    /// The agent logs (`agent-<n>.log`), the machine's log, `exit.json` and `shim.log`, for a
    /// failure message.
    pub(crate) fn diagnostics(&self, id: &str) -> String {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.tmp.path())
            .map(|dir| {
                dir.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|ext| ext == "log"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let machine = self.data_dir.join("machines").join(id);
        files.extend([
            machine.join("logs").join("machine.log"),
            machine.join("exit.json"),
            machine.join("shim.log"),
        ]);
        let mut text = String::new();
        for file in files {
            let body = std::fs::read_to_string(&file).unwrap_or_else(|e| format!("({e})"));
            let tail: Vec<&str> = body.lines().rev().take(60).collect();
            text.push_str(&format!("\n--- {} ---\n", file.display()));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    pub(crate) async fn new() -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let image = busybox_image(tmp.path())?;
        let nats = godwit_state::testing::NatsServer::start().context("start nats-server")?;
        let api = FakeApi::start().await?;
        Ok(Self {
            data_dir: tmp.path().join("agent"),
            image,
            prefix: unique(6),
            subnet: MachineSubnet::reserve()?,
            nats,
            api,
            host_id: unique(10),
            tmp,
        })
    }

    pub(crate) fn config(&self) -> AgentConfig {
        AgentConfig {
            regions: Vec::new(),
            data_dir: self.data_dir.clone(),
            api_url: self.api.url.clone(),
            join_token: "join-secret".into(),
            host_id: self.host_id.clone(),
            region: "syd".into(),
            nats_url: self.nats.url.clone(),
            advertise_url: String::new(),
            cpus: 8,
            memory_mb: 8192,
            subnet: self.subnet.cidr.clone(),
            runc: PathBuf::from("runc"),
            name_prefix: self.prefix.clone(),
            shim: vec![AGENT_BIN.into(), "shim".into()],
            insecure_registries: vec![],
            schedulable: true,
        }
    }

    /// A machine config running `script` under busybox sh.
    pub(crate) fn sh_config(&self, script: &str) -> Value {
        json!({
            "image": self.image,
            "init": { "cmd": ["sh", "-c", script] },
            "guest": { "cpus": 1, "memory_mb": 128 },
        })
    }

    /// A config serving `$GREETING` over HTTP on 8080.
    pub(crate) fn httpd_config(&self, greeting: &str) -> Value {
        let script = "/busybox mkdir -p /www; echo \"$GREETING\" > /www/index.html; \
                      echo serving; trap 'exit 0' TERM; /busybox httpd -f -p 8080 -h /www & wait";
        let mut config = self.sh_config(script);
        config["env"] = json!({ "GREETING": greeting });
        config["stop_config"] = json!({ "signal": "SIGTERM", "timeout": "3s" });
        config
    }

    pub(crate) fn create_body(&self, id: &str, config: Value) -> Value {
        json!({
            "machine_id": id,
            "app": "hello",
            "org": "personal",
            "name": format!("m-{id}"),
            "region": "syd",
            "config": config,
            "secrets": { "SECRET_TOKEN": "s3cret" },
            "skip_launch": false,
            "lease_ttl": null,
        })
    }
}

/// An HTTP client for one agent.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) base: String,
    pub(crate) token: String,
    http: reqwest::Client,
}

impl Client {
    pub(crate) fn new(base: String, token: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        Self { base, token, http }
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::GET, path, None, &[]).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::POST, path, Some(body), &[])
            .await
    }

    pub(crate) async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::DELETE, path, None, &[]).await
    }

    /// POST expecting 2xx.
    pub(crate) async fn must_post(&self, path: &str, body: Value) -> Value {
        let (status, value) = self.post(path, body).await.unwrap();
        assert!(
            (200..300).contains(&status),
            "POST {path}: {status} {value}"
        );
        value
    }

    pub(crate) async fn must_reach_state(&self, id: &str, state: &str) -> Value {
        wait_until(
            &format!("machine {id} {state}"),
            Duration::from_secs(60),
            || async {
                let (status, value) = self.get(&format!("/v1/machines/{id}")).await.ok()?;
                (status == 200 && value["state"] == state).then_some(value)
            },
        )
        .await
        .unwrap()
    }

    pub(crate) async fn must_be_gone(&self, id: &str) {
        wait_until(
            &format!("machine {id} gone"),
            Duration::from_secs(60),
            || async {
                let (status, _) = self.get(&format!("/v1/machines/{id}")).await.ok()?;
                (status == 404).then_some(())
            },
        )
        .await
        .unwrap();
    }
}

/// GETs http://ip:8080/ until it answers 200, returning the body.
pub(crate) async fn must_http_get(ip: &str) -> String {
    http_get(ip).await.unwrap()
}

/// GETs http://ip:8080/ until it answers 200 (30 s at most), returning the body.
pub(crate) async fn http_get(ip: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .unwrap();
    let url = format!("http://{ip}:8080/");
    wait_until(
        &format!("HTTP 200 from {url}"),
        Duration::from_secs(30),
        || async {
            let resp = http.get(&url).send().await.ok()?;
            if resp.status() != 200 {
                return None;
            }
            resp.text().await.ok()
        },
    )
    .await
}
