//! The proxy `godwit dev up` starts: `https://hello.<domain>` over HTTP/1.1 and HTTP/2 with
//! the dev CA, plain HTTP, default deny for unknown hosts, autostart of a machine stopped from
//! the CLI, and requests spread over two machines.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use godwit_types::MachineState;

use crate::harness::{APP, DevCluster, REGION, wait_until};

/// What curl got through the proxy.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `1.1` or `2`.
    version: String,
    body: String,
}

/// `curl https://<host>.<domain>:<port>/` through the proxy, trusting the dev CA; `extra` goes
/// before the URL (e.g. `--http2`).
fn must_curl_https(cluster: &DevCluster, host: &str, extra: &[&str]) -> Answer {
    let port = cluster.proxy.https_port;
    let name = format!("{host}.{}", cluster.proxy.domain);
    let mut command = Command::new("curl");
    command
        .args([
            "-sS",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .arg("--cacert")
        .arg(&cluster.proxy.ca_cert)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("https://{name}:{port}/"));
    run_curl(cluster, command)
}

/// `curl http://<host>.<domain>:<port>/` through the proxy's plain HTTP listener.
fn must_curl_http(cluster: &DevCluster, host: &str) -> Answer {
    let port = cluster.proxy.http_port;
    let name = format!("{host}.{}", cluster.proxy.domain);
    let mut command = Command::new("curl");
    command
        .args([
            "-sS",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(format!("http://{name}:{port}/"));
    run_curl(cluster, command)
}

fn run_curl(cluster: &DevCluster, mut command: Command) -> Answer {
    let output = command.output().expect("curl must be installed");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}{text}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        cluster.daemon_logs()
    );
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, version) = tail.split_once(' ').unwrap_or((tail, ""));
    Answer {
        status: status.trim().parse().unwrap_or(0),
        version: version.trim().to_owned(),
        body: body.to_owned(),
    }
}

#[test]
fn https_through_the_proxy_h1_h2_default_deny_and_autostart() {
    let mut cluster = DevCluster::start();
    assert!(
        cluster.up_output.contains(&format!(
            "https://<app>.{} on 127.0.0.1:{}",
            cluster.proxy.domain, cluster.proxy.https_port
        )),
        "dev up must name the proxy: {}",
        cluster.up_output
    );
    let token_file = cluster.data_dir.join("dev/proxy-token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file)
            .expect("the proxy's token file exists")
            .permissions(),
    );
    assert_eq!(
        mode & 0o077,
        0,
        "{} is readable by others",
        token_file.display()
    );

    let app_dir = cluster.app_dir(&[]);
    let deploy = cluster.must_godwit(&app_dir, &["deploy"]);
    let machine = cluster.only_machine();
    let host = format!("{APP}.{}", cluster.proxy.domain);
    let port = cluster.proxy.https_port;
    let curl_line = format!(
        "curl --cacert {} --resolve {host}:{port}:127.0.0.1 https://{host}:{port}/",
        cluster.proxy.ca_cert.display()
    );
    assert!(
        deploy.contains(&format!("https://{host}")) && deploy.contains(&curl_line),
        "deploy must print the public URL and `{curl_line}`:\n{deploy}"
    );
    assert!(
        deploy.contains(&format!("http://{}:8080", machine.private_ip)),
        "deploy keeps the private URL:\n{deploy}"
    );
    let hello = format!("hello from machine {} in {REGION}", machine.id);

    // HTTP/1.1 and HTTP/2 (ALPN) over TLS, with the dev CA, reach the machine.
    let h1 = must_curl_https(&cluster, APP, &["--http1.1"]);
    assert_eq!((h1.status, h1.version.as_str()), (200, "1.1"), "{h1:?}");
    assert!(h1.body.starts_with(&hello), "{h1:?}");
    let h2 = must_curl_https(&cluster, APP, &["--http2"]);
    assert_eq!((h2.status, h2.version.as_str()), (200, "2"), "{h2:?}");
    assert!(h2.body.starts_with(&hello), "{h2:?}");
    // Plain HTTP on the listener that stands for port 80.
    let plain = must_curl_http(&cluster, APP);
    assert_eq!(plain.status, 200, "{plain:?}");
    assert!(plain.body.starts_with(&hello), "{plain:?}");

    // Default deny: a host no app has gets a 404, not another app's answer.
    let unknown = must_curl_https(&cluster, "nope", &[]);
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(!unknown.body.contains("hello from"), "{unknown:?}");

    // `status` prints the public URL too.
    let status = cluster.must_godwit(&app_dir, &["status"]);
    assert!(status.contains(&curl_line), "{status}");

    // Scale to zero from the CLI; the next request starts the machine and succeeds.
    cluster.must_godwit(&app_dir, &["machine", "stop", &machine.id]);
    cluster.wait_state(&machine.id, MachineState::Stopped);
    let woken = must_curl_https(&cluster, APP, &[]);
    assert_eq!(
        woken.status, 200,
        "the first request after the stop: {woken:?}"
    );
    assert!(woken.body.starts_with(&hello), "{woken:?}");
    cluster.wait_state(&machine.id, MachineState::Started);

    cluster.down();
}

#[test]
fn requests_through_the_proxy_reach_both_machines() {
    let mut cluster = DevCluster::start();
    let app_dir = cluster.app_dir(&[]);
    cluster.must_godwit(&app_dir, &["deploy"]);
    cluster.must_godwit(&app_dir, &["scale", "count", "2"]);
    let machines = cluster.machines();
    assert_eq!(machines.len(), 2, "{machines:#?}");
    let ids: BTreeSet<String> = machines.iter().map(|m| m.id.clone()).collect();
    for machine in &machines {
        cluster.wait_state(&machine.id, MachineState::Started);
        cluster.wait_http(machine, "/healthz");
    }

    // Ties between idle machines are broken at random: both answer within a few dozen tries.
    let mut seen = BTreeSet::new();
    wait_until(
        "requests through the proxy to reach both machines",
        Duration::from_secs(60),
        || {
            let answer = must_curl_https(&cluster, APP, &[]);
            assert_eq!(answer.status, 200, "{answer:?}");
            let id = ids
                .iter()
                .find(|id| {
                    answer
                        .body
                        .starts_with(&format!("hello from machine {id} "))
                })
                .unwrap_or_else(|| panic!("an answer from neither machine: {answer:?}"));
            seen.insert(id.clone());
            (seen == ids).then_some(())
        },
    );

    cluster.down();
}
