//! `godwit dev` itself: idempotent `up`, `env`, `status`, `down` twice, `--purge`.

use crate::harness::DevCluster;
use crate::leftovers::assert_nothing_left;

#[test]
fn dev_up_is_idempotent_and_down_cleans_up() {
    let mut cluster = DevCluster::start();
    let dir = cluster.tmp_path().to_owned();
    let data_dir = cluster.data_dir.display().to_string();
    assert!(cluster.up_output.contains("is up"), "{}", cluster.up_output);

    // Files with tokens or keys are private.
    for file in ["env.json", "tokens.json", "join-token", "cert.key"] {
        let path = cluster.data_dir.join("dev").join(file);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path)
                .expect("dev file exists")
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{} is readable by others", path.display());
    }
    // One certificate key, given to the API and the proxy (their command lines name it).
    let cert_key = cluster.data_dir.join("dev").join("cert.key");
    assert_eq!(std::fs::read(&cert_key).expect("cert key").len(), 32);
    let flag = format!("--cert-key-file {}", cert_key.display());
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cluster.data_dir.join("dev").join("state.json")).expect("dev state"),
    )
    .expect("dev state is json");
    for daemon in ["api", "proxy"] {
        let pid = &state["pids"][daemon];
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("daemon runs");
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(cmdline.contains(&flag), "{daemon}: {cmdline}");
    }

    let again = cluster.must_godwit(&dir, &["dev", "up", "--data-dir", &data_dir]);
    assert!(again.contains("already up"), "{again}");

    let env = cluster.must_godwit(&dir, &["dev", "env", "--data-dir", &data_dir]);
    assert!(
        env.contains(&format!("export GODWIT_API_URL={}", cluster.api_url)),
        "{env}"
    );
    assert!(
        env.contains(&format!("export GODWIT_API_TOKEN={}", cluster.token)),
        "{env}"
    );

    let status = cluster.must_godwit(&dir, &["dev", "status", "--data-dir", &data_dir]);
    assert!(status.contains("the dev cluster is up"), "{status}");

    // The host is registered, and the CLI finds the cluster through GODWIT_HOME alone.
    let (code, hosts) = cluster.api("GET", "/v1/hosts", None);
    assert_eq!(code, 200, "{hosts}");
    assert!(
        hosts.contains(&format!("{}-local-1", cluster.prefix)),
        "{hosts}"
    );
    cluster.must_godwit(&dir, &["apps", "list"]);

    let prefix = cluster.prefix.clone();
    let data_path = cluster.data_dir.clone();
    cluster.down();

    // Down again: nothing to do, still fine; status says it is not running.
    let godwit = |args: &[&str]| {
        let output = std::process::Command::new(crate::harness::GODWIT)
            .args(args)
            .output()
            .expect("run godwit");
        assert!(output.status.success(), "godwit {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    godwit(&["dev", "down", "--data-dir", &data_dir]);
    let status = godwit(&["dev", "status", "--data-dir", &data_dir]);
    assert!(status.contains("no dev cluster"), "{status}");
    assert_nothing_left(&data_path, &prefix);

    godwit(&["dev", "down", "--data-dir", &data_dir, "--purge"]);
    assert!(!data_path.exists(), "--purge deletes the data dir");
}

/// The agent dies (SIGKILL) with a machine running: `down` cannot destroy it through the API,
/// so it sweeps the host itself, and still leaves nothing.
#[test]
fn down_after_the_agent_was_killed_leaves_nothing() {
    let mut cluster = DevCluster::start();
    let app_dir = cluster.app_dir(&[]);
    cluster.must_godwit(&app_dir, &["deploy"]);
    let machine = cluster.only_machine();
    cluster.wait_http(&machine, "/healthz");

    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cluster.data_dir.join("dev/state.json")).expect("read state.json"),
    )
    .expect("state.json is JSON");
    let agent_pid = state["pids"]["agent"]
        .as_u64()
        .expect("agent pid")
        .to_string();
    let status = std::process::Command::new("sh")
        .args(["-c", "kill -9 \"$1\"", "sh", &agent_pid])
        .status()
        .expect("run sh");
    assert!(status.success(), "kill the agent");
    crate::harness::wait_until(
        "the agent to die",
        std::time::Duration::from_secs(10),
        || {
            (!std::path::Path::new(&format!("/proc/{agent_pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{agent_pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z")))
            .then_some(())
        },
    );
    // The machine outlives its agent.
    assert!(
        crate::harness::http_get(&format!("http://{}:8080/healthz", machine.private_ip)).is_some()
    );

    let down = cluster.down_allowing_error_logs();
    assert!(
        down.contains(&format!("removed machine {}", machine.id)),
        "{down}"
    );
}
