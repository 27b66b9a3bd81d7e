//! The multi-region world from the command line (issue 4, "The testbed"): `godwit dev up
//! --regions ams,syd` (one host each), the example app deployed to both regions with `deploy`
//! and `scale count` through the world's env file, a Sydney user (`godwit dev user syd -- curl`)
//! answered by syd, by ams while syd is down, and by syd again once it is up; a partition
//! between ams and syd cuts the user off from ams's host until it heals; `dev down` leaves no
//! namespace, process, link, mount or cgroup behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::{GODWIT, wait_until};
use crate::{app, leftovers};

const ANYCAST: &str = "198.18.255.1";
const HOST_HEADER: &str = "Host: hello.godwit.test";

/// A world started through the CLI in a temp data dir; `dev down` on drop if the test failed.
#[derive(Debug)]
struct CliWorld {
    tmp: tempfile::TempDir,
    data_dir: PathBuf,
    prefix: String,
    down: bool,
}

#[test]
#[allow(clippy::print_stderr)] // how long each step took is worth seeing
fn dev_world_serves_users_by_region_and_takes_faults_from_the_cli() {
    for tool in ["runc", "nats-server", "ip", "curl", "nsenter"] {
        assert!(
            Command::new("sh")
                .args([
                    "-c",
                    &format!("command -v {tool} || test -x /usr/sbin/{tool}")
                ])
                .output()
                .is_ok_and(|o| o.status.success()),
            "this test needs `{tool}`: apt-get install -y runc nats-server iproute2 curl util-linux"
        );
    }
    let started = Instant::now();
    let mut world = CliWorld::new();
    let up = world.must(&["dev", "up", "--regions", "ams,syd", "--no-install"]);
    assert!(up.contains("the world is up"), "{up}");
    eprintln!("dev up --regions ams,syd: {:?}", started.elapsed());

    // Deploy through the env file, like on one host: syd first, then ams too.
    let app_dir = world.app_dir();
    world.must_in(&app_dir, &["deploy"]);
    world.must_in(&app_dir, &["scale", "count", "1", "--region", "ams,syd"]);
    let machines = world.must_in(&app_dir, &["machine", "list", "--json"]);
    let machines: Vec<godwit_types::Machine> =
        serde_json::from_str(&machines).unwrap_or_else(|e| panic!("{e}: {machines}"));
    let id_in = |region: &str| {
        let ids: Vec<&str> = machines
            .iter()
            .filter(|m| m.region == region)
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(ids.len(), 1, "one machine in {region}: {machines:#?}");
        ids[0].to_owned()
    };
    let (syd_machine, ams_machine) = (id_in("syd"), id_in("ams"));
    eprintln!("deployed to syd and ams: {:?}", started.elapsed());

    let status = world.must(&["dev", "status"]);
    assert!(status.contains("regions ams, syd"), "{status}");
    let ams_ip = host_ip(&status, "ams-1");
    assert!(host_line(&status, "syd-1").ends_with(" up"), "{status}");

    // A Sydney user reaches the anycast address: syd's edge answers with syd's machine.
    let answer = world.wait_answer("syd", ANYCAST, &syd_machine, "the syd machine");
    assert!(answer.contains("in syd"), "{answer}");

    // syd goes down: the same user is answered by ams.
    world.must(&["dev", "fault", "down", "syd"]);
    let status = world.must(&["dev", "status"]);
    assert!(host_line(&status, "syd-1").ends_with(" down"), "{status}");
    let answer = world.wait_answer("syd", ANYCAST, &ams_machine, "ams while syd is down");
    assert!(answer.contains("in ams"), "{answer}");
    world.must(&["dev", "fault", "up", "syd"]);
    world.wait_answer("syd", ANYCAST, &syd_machine, "syd once it is up again");

    // ams and syd partitioned: the Sydney user cannot reach ams's host, but syd still serves.
    world.must(&["dev", "fault", "partition", "ams", "syd"]);
    let status = world.must(&["dev", "status"]);
    assert!(status.contains("partitions: ams/syd"), "{status}");
    assert!(
        world.curl_as("syd", &ams_ip).is_none(),
        "the Sydney user reached ams-1 ({ams_ip}) through the partition"
    );
    let answer = world.curl_as("syd", ANYCAST).unwrap_or_default();
    assert!(
        answer.contains(&syd_machine),
        "syd must keep serving: {answer}"
    );
    world.must(&["dev", "fault", "heal", "ams", "syd"]);
    world.wait_answer("syd", &ams_ip, &ams_machine, "ams-1 once healed");
    let status = world.must(&["dev", "status"]);
    assert!(status.contains("partitions: none"), "{status}");

    // Loss shows in the status and goes away.
    world.must(&["dev", "fault", "loss", "ams", "5"]);
    let status = world.must(&["dev", "status"]);
    assert!(host_line(&status, "ams-1").ends_with("5% loss"), "{status}");
    world.must(&["dev", "fault", "loss", "ams", "0"]);
    let bad = world.run(&["dev", "fault", "down", "nowhere"]);
    assert!(!bad.status.success(), "an unknown target must fail");

    let down = world.must(&["dev", "down"]);
    world.down = true;
    assert!(down.contains("nothing is left running"), "{down}");
    leftovers::assert_nothing_left(&world.data_dir, &world.prefix);
    for n in 1..=2 {
        let tag = godwit_testbed::world::host_tag(&world.prefix, n);
        leftovers::assert_nothing_left(&world.data_dir, &tag);
    }
    let status = world.must(&["dev", "status"]);
    assert!(status.contains("no dev cluster"), "{status}");
    eprintln!("whole test: {:?}", started.elapsed());
}

/// The world daemon is SIGKILLed with a machine running (its router, and so the WAN, die with
/// it): `dev down` still removes every daemon, namespace, machine, mount and cgroup.
#[test]
fn dev_down_sweeps_a_world_whose_daemon_was_killed() {
    let mut world = CliWorld::new();
    world.must(&["dev", "up", "--regions", "ams", "--no-install"]);
    let app_dir = world.app_dir();
    let text = std::fs::read_to_string(app_dir.join("godwit.toml")).expect("read godwit.toml");
    std::fs::write(
        app_dir.join("godwit.toml"),
        text.replace("primary_region = \"syd\"", "primary_region = \"ams\""),
    )
    .expect("write godwit.toml");
    world.must_in(&app_dir, &["deploy"]);
    let tag = godwit_testbed::world::host_tag(&world.prefix, 1);
    let machine_netns = leftovers::command_lines("ip", &["netns", "list"])
        .into_iter()
        .filter(|name| name.starts_with(&format!("{tag}-")))
        .count();
    assert_eq!(machine_netns, 1, "the machine runs in a netns of its own");

    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(world.data_dir.join("dev/world.json")).expect("read world.json"),
    )
    .expect("world.json is JSON");
    let pid = state["pid"].as_u64().expect("the daemon's pid").to_string();
    let killed = Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -9 the world daemon");
    wait_until("the world daemon to die", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.contains(") Z"))
            .then_some(())
    });
    let status = world.must(&["dev", "status"]);
    assert!(status.contains("not running"), "{status}");
    let bad = world.run(&["dev", "fault", "down", "ams"]);
    assert!(!bad.status.success(), "faults need the daemon");

    let down = world.must(&["dev", "down"]);
    world.down = true;
    assert!(down.contains("nothing is left running"), "{down}");
    leftovers::assert_nothing_left(&world.data_dir, &world.prefix);
    leftovers::assert_nothing_left(&world.data_dir, &tag);
}

// === impl CliWorld ===

impl CliWorld {
    fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("godwit-e2e-")
            .tempdir()
            .expect("create a temp dir");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let prefix = format!("gc{:04x}", (nanos ^ std::process::id()) & 0xffff);
        Self {
            data_dir: tmp.path().join("data"),
            tmp,
            prefix,
            down: false,
        }
    }

    /// `godwit args…` in `cwd`, finding the world through `GODWIT_HOME`.
    fn run_in(&self, cwd: &Path, args: &[&str]) -> Output {
        let mut command = Command::new(GODWIT);
        command
            .args(args)
            .current_dir(cwd)
            .env("GODWIT_HOME", &self.data_dir)
            .env_remove("GODWIT_API_URL")
            .env_remove("GODWIT_API_TOKEN");
        if args.first() == Some(&"dev") && args.get(1) == Some(&"up") {
            command.args(["--name-prefix", &self.prefix]);
        }
        command.output().expect("run godwit")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_in(self.tmp.path(), args)
    }

    fn must_in(&self, cwd: &Path, args: &[&str]) -> String {
        let output = self.run_in(cwd, args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "`godwit {}` failed ({}):\nstdout:\n{stdout}\nstderr:\n{}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr),
            self.log_tail(),
        );
        stdout
    }

    fn must(&self, args: &[&str]) -> String {
        self.must_in(self.tmp.path(), args)
    }

    /// The world daemon's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = self.data_dir.join("dev/logs/world.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- last lines of {}:\n{}",
            log.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    /// The example app's directory: a fresh image of the static hello binary, primary region
    /// syd.
    fn app_dir(&self) -> PathBuf {
        let dir = self.tmp.path().join("app");
        std::fs::create_dir_all(&dir).expect("create the app dir");
        let image = dir.join("image");
        let binary = app::static_hello().display().to_string();
        let out = image.display().to_string();
        self.must(&[
            "image", "build", "--binary", &binary, "--out", &out, "--name", "hello", "--tag",
            "latest", "--port", "8080",
        ]);
        app::write_app_config(&dir, &format!("oci:{}", image.display()), &[]);
        let file = dir.join("godwit.toml");
        let text = std::fs::read_to_string(&file).expect("read godwit.toml");
        std::fs::write(
            &file,
            text.replace("primary_region = \"local\"", "primary_region = \"syd\""),
        )
        .expect("write godwit.toml");
        dir
    }

    /// `godwit dev user <city> -- curl http://<host>/` with the app's Host header: the body of
    /// a 200 answer, `None` on any failure.
    fn curl_as(&self, city: &str, host: &str) -> Option<String> {
        let url = format!("http://{host}/");
        let output = self.run(&[
            "dev",
            "user",
            city,
            "--",
            "curl",
            "-fsS",
            "--max-time",
            "3",
            "-H",
            HOST_HEADER,
            &url,
        ]);
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Polls until the user in `city` gets an answer from `machine` through `host`.
    fn wait_answer(&self, city: &str, host: &str, machine: &str, what: &str) -> String {
        wait_until(what, Duration::from_secs(60), || {
            self.curl_as(city, host)
                .filter(|body| body.contains(machine))
        })
    }
}

impl Drop for CliWorld {
    fn drop(&mut self) {
        if !self.down {
            let _ = self.run(&["dev", "down"]);
        }
    }
}

/// The line of `host` in `dev status`'s table.
fn host_line<'s>(status: &'s str, host: &str) -> &'s str {
    status
        .lines()
        .find(|line| line.starts_with(&format!("{host} ")))
        .unwrap_or_else(|| panic!("no line for {host} in:\n{status}"))
        .trim_end()
}

/// The address column of `host` in `dev status`'s table.
fn host_ip(status: &str, host: &str) -> String {
    host_line(status, host)
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no address for {host} in:\n{status}"))
        .to_owned()
}
