//! The e2e harness: a dev cluster per test, the CLI, curl, and the "nothing left" check.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use godwit_types::{Machine, MachineState};

use crate::{app, leftovers};

/// The binary under test.
pub(crate) const GODWIT: &str = env!("CARGO_BIN_EXE_godwit");
/// The app every test deploys (`examples/hello/godwit.toml`).
pub(crate) const APP: &str = "hello";
pub(crate) const REGION: &str = "local";

/// Polls `check` until it returns `Some`, panicking with `what` after `timeout`.
pub(crate) fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A random 64-bit number (std's hasher keys are random per process and per call).
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}

/// `GET url` with curl; the body of a 2xx answer.
pub(crate) fn http_get(url: &str) -> Option<String> {
    let output = Command::new("curl")
        .args(["-fsS", "--max-time", "3", url])
        .output()
        .expect("curl must be installed (Debian package curl)");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The cluster's proxy, from `env.json`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyInfo {
    pub(crate) domain: String,
    pub(crate) http_port: u16,
    pub(crate) https_port: u16,
    pub(crate) ca_cert: PathBuf,
}

/// A whole dev cluster in a temp data dir, torn down on drop.
#[derive(Debug)]
pub(crate) struct DevCluster {
    tmp: Option<tempfile::TempDir>,
    pub(crate) data_dir: PathBuf,
    pub(crate) prefix: String,
    pub(crate) api_url: String,
    pub(crate) token: String,
    pub(crate) proxy: ProxyInfo,
    /// `dev up`'s output.
    pub(crate) up_output: String,
    down: bool,
}

impl DevCluster {
    /// `godwit dev up` with a unique data dir, name prefix and subnet; waits for nothing more
    /// (`up` returns once everything is ready).
    pub(crate) fn start() -> Self {
        for tool in ["runc", "nats-server", "ip", "curl"] {
            assert!(
                find_program(tool).is_some(),
                "the e2e tests need `{tool}`: apt-get install -y runc nats-server iproute2 curl"
            );
        }
        let tmp = tempfile::Builder::new()
            .prefix("godwit-e2e-")
            .tempdir()
            .expect("create a temp dir");
        let data_dir = tmp.path().join("data");
        let prefix = format!("e{:05x}", random_u64() & 0xf_ffff);
        let subnet = free_subnet();
        let mut cluster = Self {
            tmp: Some(tmp),
            data_dir,
            prefix,
            api_url: String::new(),
            token: String::new(),
            proxy: ProxyInfo::default(),
            up_output: String::new(),
            down: false,
        };
        let data_dir = cluster.data_dir.display().to_string();
        cluster.up_output = cluster.must_godwit(
            cluster.tmp_path(),
            &[
                "dev",
                "up",
                "--data-dir",
                &data_dir,
                "--name-prefix",
                &cluster.prefix.clone(),
                "--subnet",
                &subnet,
                "--region",
                REGION,
                "--no-install",
                // Ports of its own, so clusters of tests running at once do not clash.
                "--proxy-http-port",
                "0",
                "--proxy-https-port",
                "0",
            ],
        );
        let env: serde_json::Value = serde_json::from_slice(
            &std::fs::read(cluster.data_dir.join("dev/env.json")).expect("dev up writes env.json"),
        )
        .expect("env.json is JSON");
        cluster.api_url = env["api_url"]
            .as_str()
            .expect("env.json api_url")
            .to_owned();
        cluster.token = env["token"].as_str().expect("env.json token").to_owned();
        let proxy = &env["proxy"];
        let port = |name: &str| {
            proxy[name]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_else(|| panic!("env.json proxy.{name}: {env}"))
        };
        cluster.proxy = ProxyInfo {
            domain: proxy["domain"]
                .as_str()
                .expect("env.json proxy.domain")
                .to_owned(),
            http_port: port("http_port"),
            https_port: port("https_port"),
            ca_cert: proxy["ca_cert"]
                .as_str()
                .expect("env.json proxy.ca_cert")
                .into(),
        };
        cluster
    }

    pub(crate) fn tmp_path(&self) -> &Path {
        self.tmp.as_ref().expect("temp dir lives until drop").path()
    }

    /// Runs the CLI in `cwd` as a user of this cluster would (its env file via GODWIT_HOME).
    pub(crate) fn godwit(&self, cwd: &Path, args: &[&str]) -> Output {
        Command::new(GODWIT)
            .args(args)
            .current_dir(cwd)
            .env("GODWIT_HOME", &self.data_dir)
            .env_remove("GODWIT_API_URL")
            .env_remove("GODWIT_API_TOKEN")
            .output()
            .expect("run godwit")
    }

    /// Runs the CLI and returns its stdout, panicking with both streams if it fails.
    pub(crate) fn must_godwit(&self, cwd: &Path, args: &[&str]) -> String {
        let output = self.godwit(cwd, args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "`godwit {}` failed ({}):\nstdout:\n{stdout}\nstderr:\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr),
            self.daemon_logs(),
        );
        stdout
    }

    /// The tails of the daemons' logs, for failure messages.
    pub(crate) fn daemon_logs(&self) -> String {
        let mut text = String::new();
        for name in ["agent", "api", "proxy"] {
            let log = self.data_dir.join(format!("dev/logs/{name}.log"));
            let content = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            text.push_str(&format!("\n--- last lines of {}:\n{tail}", log.display()));
        }
        text
    }

    /// A REST call with the cluster's token: status and body.
    pub(crate) fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.api_with(method, path, body, &[])
    }

    /// A REST call with extra headers (`("name", "value")`).
    pub(crate) fn api_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut command = Command::new("curl");
        command.args([
            "-sS",
            "--max-time",
            "70",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ]);
        command
            .arg("-H")
            .arg(format!("authorization: Bearer {}", self.token));
        for (name, value) in headers {
            command.arg("-H").arg(format!("{name}: {value}"));
        }
        if let Some(body) = body {
            command.args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                body,
            ]);
        }
        command.arg(format!("{}{path}", self.api_url));
        let output = command.output().expect("curl must be installed");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = status.trim().parse().unwrap_or(0);
        (status, body.to_owned())
    }

    /// `GET /v1/apps/hello/machines`.
    pub(crate) fn machines(&self) -> Vec<Machine> {
        let (status, body) = self.api("GET", &format!("/v1/apps/{APP}/machines"), None);
        assert_eq!(status, 200, "list machines: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("machine list {body}: {e}"))
    }

    /// The one machine of the app.
    pub(crate) fn only_machine(&self) -> Machine {
        let machines = self.machines();
        assert_eq!(machines.len(), 1, "one machine expected: {machines:#?}");
        machines.into_iter().next().expect("checked above")
    }

    pub(crate) fn machine(&self, id: &str) -> Machine {
        let (status, body) = self.api("GET", &format!("/v1/apps/{APP}/machines/{id}"), None);
        assert_eq!(status, 200, "get machine {id}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("machine {body}: {e}"))
    }

    /// Polls until machine `id` is in `state`.
    pub(crate) fn wait_state(&self, id: &str, state: MachineState) -> Machine {
        wait_until(
            &format!("machine {id} to be {state}"),
            Duration::from_secs(60),
            || {
                let machine = self.machine(id);
                (machine.state == state).then_some(machine)
            },
        )
    }

    /// Polls until the machine's `/` answers; returns the answer.
    pub(crate) fn wait_http(&self, machine: &Machine, path: &str) -> String {
        let url = format!("http://{}:8080{path}", machine.private_ip);
        wait_until(&format!("{url} to answer"), Duration::from_secs(30), || {
            http_get(&url)
        })
    }

    /// A directory holding the example app's `godwit.toml`, pointing at a freshly built image of
    /// the static `hello` binary, with `env` added to its `[env]`.
    pub(crate) fn app_dir(&self, env: &[(&str, &str)]) -> PathBuf {
        let dir = self.tmp_path().join("app");
        std::fs::create_dir_all(&dir).expect("create the app dir");
        let image = dir.join("image");
        if !image.join("index.json").exists() {
            let binary = app::static_hello().display().to_string();
            let out = image.display().to_string();
            self.must_godwit(
                &dir,
                &[
                    "image", "build", "--binary", &binary, "--out", &out, "--name", "hello",
                    "--tag", "latest", "--port", "8080",
                ],
            );
        }
        app::write_app_config(&dir, &format!("oci:{}", image.display()), env);
        dir
    }

    /// `godwit dev down`, then checks that nothing of the cluster is left on the host and that
    /// the daemons logged no ERROR line. Returns `down`'s output.
    pub(crate) fn down(&mut self) -> String {
        let output = self.down_allowing_error_logs();
        let errors = self.error_log_lines();
        assert!(
            errors.is_empty(),
            "the daemons logged errors:\n{}",
            errors.join("\n")
        );
        output
    }

    /// `godwit dev down` and the "nothing left" check, for tests that break the cluster on
    /// purpose (and so expect its daemons to log errors).
    pub(crate) fn down_allowing_error_logs(&mut self) -> String {
        let data_dir = self.data_dir.display().to_string();
        let output = self.must_godwit(self.tmp_path(), &["dev", "down", "--data-dir", &data_dir]);
        self.down = true;
        leftovers::assert_nothing_left(&self.data_dir, &self.prefix);
        output
    }

    /// ERROR lines in the API's and the agent's logs.
    pub(crate) fn error_log_lines(&self) -> Vec<String> {
        ["api", "agent"]
            .iter()
            .flat_map(|name| {
                let log = self.data_dir.join(format!("dev/logs/{name}.log"));
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| line.contains("ERROR"))
                    .map(|line| format!("{name}: {line}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for DevCluster {
    #[allow(clippy::print_stderr)] // tells the person running the tests where the data is
    fn drop(&mut self) {
        if !self.down {
            let data_dir = self.data_dir.display().to_string();
            let _ = Command::new(GODWIT)
                .args([
                    "dev",
                    "down",
                    "--data-dir",
                    &data_dir,
                    "--name-prefix",
                    &self.prefix,
                ])
                .output();
        }
        if std::thread::panicking()
            && std::env::var_os("GODWIT_KEEP_TMP").is_some()
            && let Some(tmp) = self.tmp.take()
        {
            eprintln!("keeping {}", tmp.keep().display());
        }
    }
}

/// A 10.x.y.0/24 no interface or route on this host uses.
fn free_subnet() -> String {
    let used = leftovers::command_lines("ip", &["-4", "-o", "addr", "show"]).join("\n")
        + &leftovers::command_lines("ip", &["-4", "route", "show", "table", "all"]).join("\n");
    loop {
        let n = random_u64();
        let (a, b) = (100 + (n % 150), (n >> 8) % 256);
        if !used.contains(&format!("10.{a}.{b}.")) {
            return format!("10.{a}.{b}.0/24");
        }
    }
}

fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
