//! What the region tests share: a started world with the hello image, machines made through
//! the world's API, and curl run as a simulated user (its answers parsed: status, headers,
//! body, time, one per URL of a kept-alive connection).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use godwit_testbed::world::{DOMAIN, World, WorldSpec};

use crate::harness::{GODWIT, wait_until};
use crate::{app, leftovers};

/// A world for one test, swept before and after; stopped (and checked clean) by [`Env::stop`].
pub(super) struct Env {
    pub(super) world: World,
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) image: String,
    data_dir: PathBuf,
    prefix: &'static str,
}

/// One answer curl got.
#[derive(Debug, Clone)]
pub(super) struct Answer {
    pub(super) status: u16,
    /// The response head, lower-cased.
    pub(super) head: String,
    pub(super) body: String,
    /// curl's `time_total` for this transfer.
    pub(super) took: Duration,
    /// Connections curl opened for this transfer (0 on a kept-alive one).
    pub(super) connects: u32,
}

/// A request curl makes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Req<'a> {
    pub(super) app: &'a str,
    pub(super) path: &'a str,
    /// `POST` with a small form body instead of `GET`.
    pub(super) post: bool,
    /// How many times, on one kept-alive connection.
    pub(super) times: usize,
    pub(super) max_time: Duration,
}

// === impl Env ===

impl Env {
    /// Sweeps what a killed run with `prefix` left, builds the hello image and starts a world
    /// of `regions`, one host each.
    pub(super) fn start(prefix: &'static str, regions: &[&str]) -> Env {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("start a tokio runtime");
        let data_dir = std::env::temp_dir().join(format!("godwit-e2e-{prefix}"));
        World::sweep(prefix, &data_dir);
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).expect("create the data dir");
        let image = build_image(&data_dir);
        let spec = WorldSpec::new(prefix, GODWIT, &data_dir, regions);
        let world = runtime
            .block_on(World::start(spec))
            .unwrap_or_else(|e| panic!("start the world {regions:?}: {}", chain(&e)));
        Env {
            world,
            runtime,
            image,
            data_dir,
            prefix,
        }
    }

    /// Adds a simulated user in `city`; its netns.
    pub(super) fn user(&self, city: &str) -> String {
        let node = self
            .runtime
            .block_on(self.world.user(city))
            .unwrap_or_else(|e| panic!("add a user in {city}: {}", chain(&e)));
        self.world
            .testbed()
            .node(&node)
            .expect("the user was just added")
            .netns
    }

    /// Round-trip time between two regions by the testbed's delay table.
    pub(super) fn rtt(&self, a: &str, b: &str) -> Duration {
        self.world
            .testbed()
            .delays()
            .rtt(a, b)
            .unwrap_or_else(|| panic!("{a} or {b} is not in the delay table"))
    }

    pub(super) fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.world
            .api(method, path, body)
            .unwrap_or_else(|e| panic!("{}{}", chain(&e), self.world.log_tails(20)))
    }

    pub(super) fn create_app(&self, app: &str) {
        let body = serde_json::json!({ "app_name": app }).to_string();
        let (status, text) = self.api("POST", "/v1/apps", Some(&body));
        assert!(
            (200..300).contains(&status),
            "create app {app}: {status} {text}"
        );
    }

    /// Creates a started hello machine of `app` in `region` serving HTTP on port 80, with
    /// `concurrency` (JSON) when given; returns its id once the API says it is started.
    pub(super) fn machine(
        &self,
        app: &str,
        region: &str,
        concurrency: Option<serde_json::Value>,
    ) -> String {
        let mut service = serde_json::json!({
            "protocol": "tcp",
            "internal_port": 8080,
            "autostart": true,
            "ports": [{ "port": 80, "handlers": ["http"] }],
        });
        if let Some(concurrency) = concurrency {
            service["concurrency"] = concurrency;
        }
        let request = serde_json::json!({
            "region": region,
            "config": { "image": self.image, "services": [service] },
        });
        let (status, body) = self.api(
            "POST",
            &format!("/v1/apps/{app}/machines"),
            Some(&request.to_string()),
        );
        assert!(
            (200..300).contains(&status),
            "create a machine of {app} in {region}: {status} {body}{}",
            self.world.log_tails(20)
        );
        let machine: serde_json::Value = serde_json::from_str(&body).expect("a machine as JSON");
        assert_eq!(machine["region"], region, "{body}");
        let id = machine["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no machine id in {body}"))
            .to_owned();
        self.wait_state(app, &id, "started");
        id
    }

    /// Waits until the API says machine `id` of `app` is in `state`.
    pub(super) fn wait_state(&self, app: &str, id: &str, state: &str) {
        wait_until(
            &format!("machine {id} of {app} to be {state}"),
            Duration::from_secs(90),
            || {
                let (status, body) =
                    self.api("GET", &format!("/v1/apps/{app}/machines/{id}"), None);
                let machine: serde_json::Value = serde_json::from_str(&body).ok()?;
                (status == 200 && machine["state"] == state).then_some(())
            },
        );
    }

    /// Polls until a GET `/` of `app` from `user` is answered 200 by a machine in `region`
    /// (the proxies learn about machines through the replicated state).
    pub(super) fn wait_served(&self, user: &str, app: &str, region: &str) -> Answer {
        wait_until(
            &format!("{app} to be answered from {region} for {user}"),
            Duration::from_secs(60),
            || {
                let answer = curl(user, &self.anycast(), &Req::get(app, "/")).ok()?;
                answer
                    .into_iter()
                    .next()
                    .filter(|a| a.status == 200 && a.region() == Some(region))
            },
        )
    }

    pub(super) fn anycast(&self) -> String {
        self.world.spec().anycast_v4.to_string()
    }

    /// Stops the world and checks nothing is left behind.
    pub(super) fn stop(self) {
        let tags: Vec<String> = self
            .world
            .hosts()
            .iter()
            .map(|h| h.name_prefix.clone())
            .collect();
        self.world
            .stop()
            .unwrap_or_else(|e| panic!("stop the world: {}", chain(&e)));
        leftovers::assert_nothing_left(&self.data_dir, self.prefix);
        for tag in &tags {
            leftovers::assert_nothing_left(&self.data_dir, tag);
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

// === impl Req ===

impl<'a> Req<'a> {
    pub(super) fn get(app: &'a str, path: &'a str) -> Self {
        Req {
            app,
            path,
            post: false,
            times: 1,
            max_time: Duration::from_secs(5),
        }
    }
}

// === impl Answer ===

impl Answer {
    /// The region hello names: `hello from machine <id> in <region> (…`, `written in
    /// <region>`, `slept <ms> ms in <region>`.
    pub(super) fn region(&self) -> Option<&str> {
        let (_, rest) = self.body.rsplit_once(" in ")?;
        rest.split_whitespace().next()
    }

    /// The value of response header `name` (lower-case).
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n.trim() == name).then(|| v.trim())
        })
    }
}

/// The curl command for `req` against `http://<host>` from the netns `netns`.
fn curl_command(netns: &str, host: &str, req: &Req<'_>) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns, "curl", "-sS", "-i", "--max-time"])
        .arg(req.max_time.as_secs_f64().to_string())
        .args([
            "-w",
            "\n@@ %{http_code} %{time_total} %{num_connects}\n",
            "-H",
        ])
        .arg(format!("Host: {}.{DOMAIN}", req.app));
    if req.post {
        command.args(["-d", "written=yes"]);
    }
    for _ in 0..req.times {
        command.arg(format!("http://{host}{}", req.path));
    }
    command
}

/// Runs curl for `req` in `netns`: one answer per request, or curl's error.
pub(super) fn curl(netns: &str, host: &str, req: &Req<'_>) -> Result<Vec<Answer>, String> {
    let output = curl_command(netns, host, req)
        .output()
        .expect("curl must be installed (Debian package curl)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "curl failed ({}): {}{text}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse_answers(&text).ok_or_else(|| format!("unexpected curl output: {text}"))
}

/// A curl running in the background whose request has been sent.
pub(super) struct Sent {
    child: Child,
    /// Drains curl's verbose stderr after the request line (a closed pipe would kill curl).
    drain: std::thread::JoinHandle<()>,
}

/// Starts curl for `req` in `netns` in the background and returns once curl has sent the
/// request (its verbose log shows the request line); finish it with [`finish`].
pub(super) fn send_curl(netns: &str, host: &str, req: &Req<'_>) -> Sent {
    use std::io::BufRead as _;
    let mut child = curl_command(netns, host, req)
        .arg("-v")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl must be installed (Debian package curl)");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let sent = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.starts_with("> GET ") || line.starts_with("> POST "));
    assert!(sent, "curl exited before sending its request");
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    Sent { child, drain }
}

/// Waits for a background curl; its answers.
pub(super) fn finish(sent: Sent) -> Result<Vec<Answer>, String> {
    let output = sent.child.wait_with_output().expect("wait for curl");
    let _ = sent.drain.join();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!("curl failed ({}): {text}", output.status));
    }
    parse_answers(&text).ok_or_else(|| format!("unexpected curl output: {text}"))
}

/// Splits curl's output into answers: each `<head>\r\n\r\n<body>\n@@ <code> <time> <n>\n`.
fn parse_answers(text: &str) -> Option<Vec<Answer>> {
    let mut answers = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("\n@@ ") {
        let response = &rest[..at];
        let after = &rest[at + 4..];
        let (stats, next) = after.split_once('\n').unwrap_or((after, ""));
        let mut stats = stats.split_whitespace();
        let status = stats.next()?.parse().ok()?;
        let took = Duration::from_secs_f64(stats.next()?.parse().ok()?);
        let connects = stats.next()?.parse().ok()?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
        answers.push(Answer {
            status,
            head: head.to_lowercase(),
            body: body.to_owned(),
            took,
            connects,
        });
        rest = next;
    }
    (!answers.is_empty()).then_some(answers)
}

/// Polls `f` until it holds or `timeout` passes; how long it took.
pub(super) fn within(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    wait_until(what, timeout, || f().then_some(()));
    started.elapsed()
}

/// `godwit image build` of the static hello binary; returns the image reference.
fn build_image(data_dir: &Path) -> String {
    let out = data_dir.join("image");
    let binary = app::static_hello();
    let output = Command::new(GODWIT)
        .args([
            "image", "build", "--name", "hello", "--tag", "latest", "--port", "8080",
        ])
        .arg("--binary")
        .arg(&binary)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run godwit image build");
    assert!(
        output.status.success(),
        "godwit image build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    format!("oci:{}", out.display())
}

/// An error and its sources, one line.
pub(super) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[test]
fn curl_output_parses_per_transfer() {
    let text = "HTTP/1.1 200 OK\r\nFly-Region: syd\r\n\r\nhello from machine m1 in syd (version 1)\n\
                \n@@ 200 0.012 1\nHTTP/1.1 409 Conflict\r\nfly-replay: region=ams\r\n\r\nno\n@@ 409 0.5 0\n";
    let answers = parse_answers(text).expect("two answers");
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0].region(), Some("syd"));
    assert_eq!(answers[0].header("fly-region"), Some("syd"));
    assert_eq!(answers[0].connects, 1);
    assert_eq!(answers[1].status, 409);
    assert_eq!(answers[1].header("fly-replay"), Some("region=ams"));
    assert_eq!(answers[1].took, Duration::from_millis(500));
    assert!(parse_answers("curl: (7) failed").is_none());
}
