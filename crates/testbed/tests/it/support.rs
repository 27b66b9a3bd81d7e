//! Shared helpers: unique prefixes, servers and clients inside a node's netns.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context;
use godwit_testbed::{NodeSpec, Options, Testbed};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// Fails with a clear message when the machine cannot run these tests.
pub(crate) fn must_have_prerequisites() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "godwit_testbed=info".into()),
        )
        .with_test_writer()
        .try_init();
    assert!(
        nix::unistd::geteuid().is_root(),
        "godwit-testbed tests must run as root"
    );
    assert!(
        std::path::Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing: the testbed needs the tun driver"
    );
    let ip = std::process::Command::new("ip").arg("-V").output();
    assert!(
        ip.is_ok_and(|o| o.status.success()),
        "`ip` (Debian package iproute2) is missing: the testbed needs it"
    );
}

/// A prefix no other test or run uses: `gtb-<pid>-<random>-<tag>`. Namespaces of earlier test
/// processes that were killed (their pid is gone) are swept first.
pub(crate) fn unique_prefix(tag: &str) -> String {
    sweep_dead_runs();
    format!(
        "gtb-{}-{:06x}-{tag}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

fn sweep_dead_runs() {
    let Ok(entries) = std::fs::read_dir(godwit_testbed::NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("gtb-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
            // Another test process may sweep the same debris at the same moment.
            let _ = godwit_testbed::sweep(&format!("gtb-{pid}"));
        }
    }
}

/// Creates a testbed of `(name, city)` nodes under a unique prefix.
pub(crate) async fn must_create(tag: &str, nodes: &[(&str, &str)]) -> Testbed {
    must_have_prerequisites();
    let specs: Vec<NodeSpec> = nodes.iter().map(|(n, c)| NodeSpec::new(*n, *c)).collect();
    Testbed::create(&unique_prefix(tag), &specs, Options::default())
        .await
        .expect("create testbed")
}

/// Serves `payload` to every TCP connection on `addr:port` inside `node` (port 0: any).
pub(crate) async fn must_serve(
    tb: &Testbed,
    node: &str,
    addr: IpAddr,
    port: u16,
    payload: &str,
) -> SocketAddr {
    let listener = tb
        .run_in(node, move || std::net::TcpListener::bind((addr, port)))
        .await
        .expect("enter netns")
        .expect("bind listener");
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let local = listener.local_addr().expect("listener address");
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let payload = payload.to_owned();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let payload = payload.clone();
            tokio::spawn(async move {
                let _ = stream.write_all(payload.as_bytes()).await;
            });
        }
    });
    local
}

/// Times `samples` TCP handshakes from `node` to `target` (connect = one round trip).
pub(crate) async fn connect_times(
    tb: &Testbed,
    node: &str,
    target: SocketAddr,
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    tb.run_in(node, move || {
        (0..samples)
            .map(|_| {
                let start = Instant::now();
                let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
                    .with_context(|| format!("connect to {target}"))?;
                let elapsed = start.elapsed();
                drop(stream);
                Ok(elapsed)
            })
            .collect()
    })
    .await?
}

/// Connects from `node` to `target` and reads until the server closes.
pub(crate) async fn fetch(
    tb: &Testbed,
    node: &str,
    target: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<String> {
    tb.run_in(node, move || {
        let mut stream = TcpStream::connect_timeout(&target, timeout)
            .with_context(|| format!("connect to {target}"))?;
        stream.set_read_timeout(Some(timeout))?;
        let mut body = String::new();
        stream.read_to_string(&mut body)?;
        stream.flush()?;
        Ok(body)
    })
    .await?
}

/// Median of some durations.
pub(crate) fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// Polls `cond` until it holds or `timeout` passes.
pub(crate) async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}
