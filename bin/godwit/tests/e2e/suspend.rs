//! Autostop `"suspend"` end to end: deploy with `auto_stop_machines = "suspend"`, a proxy with
//! a short idle time suspends the idle machine (cgroup freezer), `status` shows it, and the
//! next request through the proxy resumes it and gets a 200. Prints the resume latency: the
//! first request after the suspend against warm requests and against a cold start.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use godwit_types::MachineState;

use crate::harness::{APP, DevCluster, GODWIT, REGION, wait_until};

/// A `godwit proxy` of the test's own with `--autostop-idle`, killed on drop.
struct IdleProxy {
    child: Child,
    port: u16,
}

impl Drop for IdleProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl IdleProxy {
    fn start(cluster: &DevCluster, idle: &str) -> Self {
        let env: serde_json::Value = serde_json::from_slice(
            &std::fs::read(cluster.data_dir.join("dev/env.json")).expect("dev up writes env.json"),
        )
        .expect("env.json is JSON");
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address").port()
        };
        let log = std::fs::File::create(cluster.tmp_path().join("idle-proxy.log"))
            .expect("create the proxy log");
        let child = Command::new(GODWIT)
            .args(["proxy", "--nats-url"])
            .arg(env["nats_url"].as_str().expect("env.json nats_url"))
            .arg("--api-url")
            .arg(&cluster.api_url)
            .arg("--token-file")
            .arg(cluster.data_dir.join("dev/proxy-token"))
            .args(["--domain", &cluster.proxy.domain, "--region", REGION])
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--autostop-idle", idle])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .expect("start godwit proxy");
        let proxy = Self { child, port };
        wait_until("the idle proxy to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        proxy
    }

    /// `curl http://hello.<domain>/` through this proxy: (status, body, seconds).
    fn curl(&self, cluster: &DevCluster) -> (u16, String, f64) {
        let name = format!("{APP}.{}", cluster.proxy.domain);
        let output = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "-w",
                "\n%{http_code} %{time_total}",
            ])
            .arg("--resolve")
            .arg(format!("{name}:{}:127.0.0.1", self.port))
            .arg(format!("http://{name}:{}/", self.port))
            .output()
            .expect("curl must be installed");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "curl failed: {}{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
        let (status, seconds) = tail.split_once(' ').unwrap_or((tail, "0"));
        (
            status.trim().parse().unwrap_or(0),
            body.to_owned(),
            seconds.trim().parse().unwrap_or(0.0),
        )
    }
}

#[test]
fn autostop_suspends_and_the_next_request_resumes() {
    let mut cluster = DevCluster::start();
    let app_dir = cluster.app_dir(&[]);
    let config_path = app_dir.join("godwit.toml");
    let config = std::fs::read_to_string(&config_path).expect("read godwit.toml");
    let config = config.replacen(
        "internal_port = 8080\n",
        "internal_port = 8080\nauto_stop_machines = \"suspend\"\nmin_machines_running = 0\n",
        1,
    );
    assert!(
        config.contains("auto_stop_machines = \"suspend\""),
        "{config}"
    );
    std::fs::write(&config_path, config).expect("write godwit.toml");
    cluster.must_godwit(&app_dir, &["deploy"]);
    let machine = cluster.only_machine();
    cluster.wait_state(&machine.id, MachineState::Started);
    let hello = format!("hello from machine {} in {REGION}", machine.id);

    let proxy = IdleProxy::start(&cluster, "3s");
    let mut warm = Vec::new();
    for _ in 0..5 {
        let (status, body, seconds) = proxy.curl(&cluster);
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with(&hello), "{body}");
        warm.push(seconds);
    }

    // Idle for 3 s: suspended, not stopped; `status` says so.
    cluster.wait_state(&machine.id, MachineState::Suspended);
    let status = cluster.must_godwit(&app_dir, &["status"]);
    assert!(status.contains("suspended"), "{status}");

    let (code, body, resume_seconds) = proxy.curl(&cluster);
    assert_eq!(code, 200, "the first request after the suspend: {body}");
    assert!(body.starts_with(&hello), "{body}");
    let resumed = cluster.wait_state(&machine.id, MachineState::Started);
    assert!(
        resumed.events.iter().any(|e| e.kind == "resume"),
        "{:#?}",
        resumed.events
    );
    assert!(
        !resumed.events.iter().any(|e| e.kind == "exit"),
        "the process never exited: {:#?}",
        resumed.events
    );
    warm.sort_by(f64::total_cmp);
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "resume latency: first request after suspend {:.1} ms; warm requests median {:.1} ms",
            resume_seconds * 1000.0,
            warm[warm.len() / 2] * 1000.0
        );
    }

    // The CLI suspends too; start resumes.
    cluster.must_godwit(&app_dir, &["machine", "suspend", &machine.id]);
    cluster.wait_state(&machine.id, MachineState::Suspended);
    cluster.must_godwit(&app_dir, &["machine", "start", &machine.id]);
    cluster.wait_state(&machine.id, MachineState::Started);
    let (code, body, _) = proxy.curl(&cluster);
    assert_eq!(code, 200, "{body}");

    // For comparison: the first request after a stop (a cold start).
    cluster.must_godwit(&app_dir, &["machine", "stop", &machine.id]);
    cluster.wait_state(&machine.id, MachineState::Stopped);
    let (code, body, cold_seconds) = proxy.curl(&cluster);
    assert_eq!(code, 200, "the first request after a stop: {body}");
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "cold start: first request after stop {:.1} ms",
            cold_seconds * 1000.0
        );
    }

    drop(proxy);
    cluster.down();
}
