//! Running this program's probe subcommands in the world's namespaces (`nsenter --net=`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use godwit_testbed::NETNS_DIR;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use super::http_probe::HttpOutput;
use super::state_probe::ProbeOutput;

/// `nsenter --net=<netns> <exe> <args>`.
fn in_netns(exe: &Path, netns: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("nsenter");
    command
        .arg(format!("--net={NETNS_DIR}/{netns}"))
        .arg("--")
        .arg(exe)
        .kill_on_drop(true);
    command
}

/// `count` GETs of `http://<addr><path>` with `Host: host` on one connection, from `netns`.
pub(super) async fn http_probe(
    exe: &Path,
    netns: &str,
    addr: SocketAddr,
    host: &str,
    path: &str,
    count: u32,
) -> anyhow::Result<HttpOutput> {
    let output = in_netns(exe, netns)
        .args(["http-probe", "--addr", &addr.to_string(), "--host", host])
        .args(["--path", path, "--count", &count.to_string()])
        .stdin(Stdio::null())
        .output()
        .await
        .context("run nsenter (util-linux) with http-probe")?;
    anyhow::ensure!(
        output.status.success(),
        "http-probe in {netns} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .with_context(|| format!("http-probe in {netns} printed {stdout:?}"))
}

/// One state probe per region: `(region, netns of its host, its nats url)`.
#[derive(Debug, Clone)]
pub(super) struct ProbeSite {
    pub(super) region: String,
    pub(super) netns: String,
    pub(super) nats_url: String,
}

/// Runs a state probe at every site: waits for all to be ready (warm-up records seen
/// everywhere), tells them all to go, and collects their outputs.
pub(super) async fn state_probes(
    exe: &Path,
    sites: &[ProbeSite],
    single_bucket: bool,
    count: u32,
    interval_ms: u64,
) -> anyhow::Result<Vec<ProbeOutput>> {
    let regions: Vec<&str> = sites.iter().map(|s| s.region.as_str()).collect();
    let regions = regions.join(",");
    let mut children = Vec::new();
    for site in sites {
        let mut command = in_netns(exe, &site.netns);
        command
            .args(["state-probe", "--nats-url", &site.nats_url])
            .args(["--region", &site.region, "--regions", &regions])
            .args(["--count", &count.to_string()])
            .args(["--interval-ms", &interval_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if single_bucket {
            command.arg("--single-bucket");
        }
        let mut child = command
            .spawn()
            .context("run nsenter (util-linux) with state-probe")?;
        let stdout = child.stdout.take().context("the probe's stdout is piped")?;
        children.push((site.region.clone(), child, BufReader::new(stdout).lines()));
    }
    for (region, child, lines) in &mut children {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .with_context(|| format!("the {region} state probe was not ready in 120 s"))?
            .with_context(|| format!("read the {region} state probe"))?;
        if line.as_deref() != Some("ready") {
            let status = child.wait().await.ok();
            anyhow::bail!("the {region} state probe failed ({status:?}): printed {line:?}");
        }
    }
    for (region, child, _) in &mut children {
        let stdin = child.stdin.as_mut().context("the probe's stdin is piped")?;
        stdin
            .write_all(b"go\n")
            .await
            .with_context(|| format!("tell the {region} state probe to go"))?;
    }
    let budget = Duration::from_millis(interval_ms) * count + Duration::from_secs(60);
    let mut outputs = Vec::new();
    for (region, mut child, mut lines) in children {
        let line = tokio::time::timeout(budget, lines.next_line())
            .await
            .with_context(|| format!("the {region} state probe did not finish"))?
            .with_context(|| format!("read the {region} state probe"))?
            .with_context(|| format!("the {region} state probe printed no result"))?;
        let output: ProbeOutput = serde_json::from_str(&line)
            .with_context(|| format!("the {region} state probe printed {line:?}"))?;
        let status = child.wait().await.context("wait for a state probe")?;
        anyhow::ensure!(status.success(), "the {region} state probe exited {status}");
        outputs.push(output);
    }
    Ok(outputs)
}
