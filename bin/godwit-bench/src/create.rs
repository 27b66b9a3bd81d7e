//! `godwit-bench create`: Godwit's create → first 200 beside a bare `runc run` of the same
//! image, measured in the same run, plus machines created per second.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::api::{Api, Endpoint};
use crate::baseline::{BareRunc, BaselineConfig};
use crate::cluster::Cluster;
use crate::probe::wait_for_200;
use crate::report::{Difference, Report, Samples, Throughput};
use crate::stats::{Summary, ms};

/// `godwit-bench create`.
#[derive(clap::Args, Debug, Clone)]
pub struct CreateArgs {
    /// Machines timed one at a time on each side (Godwit and bare runc, interleaved)
    #[arg(long, default_value_t = 50)]
    pub count: usize,
    /// Image both sides run: an OCI layout (`oci:DIR`), an archive or a registry reference
    #[arg(long, default_value = "oci:target/hello-image")]
    pub image: String,
    /// Data directory of the dev cluster, for `<dir>/dev/env.json` [default: $GODWIT_HOME,
    /// else $HOME/.godwit]
    #[arg(long, value_name = "DIR", env = "GODWIT_HOME")]
    pub data_dir: Option<PathBuf>,
    /// API URL (else from the dev cluster's env.json)
    #[arg(long, env = "GODWIT_API_URL")]
    pub api_url: Option<String>,
    /// API token (else from the dev cluster's env.json)
    #[arg(long, env = "GODWIT_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// App the machines are created in (created if missing; its machines are destroyed)
    #[arg(long, default_value = "godwit-bench")]
    pub app: String,
    /// Port the image's server listens on
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Machines created for the throughput figure
    #[arg(long, default_value_t = 20)]
    pub throughput: usize,
    /// How many of those are created at a time
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Most machines alive at once in the throughput run (rounds of this many, destroyed
    /// between rounds, untimed): the dev cluster on a 2-CPU host has room for 8 (1 CPU each,
    /// 4x CPU overcommit)
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Seconds one machine may take to answer 200
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// The runc program of the baseline
    #[arg(long, default_value = "runc")]
    pub runc: PathBuf,
    /// Baseline work directory [default: <data dir>/bench]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Name prefix of baseline netns, veths, cgroups and containers (not the cluster's)
    #[arg(long, default_value = "gwbn")]
    pub baseline_prefix: String,
    /// Subnet baseline containers get their /30s from (not the cluster's)
    #[arg(long, default_value = "172.31.0.0/16")]
    pub baseline_subnet: String,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark. Destroys every machine and container it made, also when it fails or
/// gets SIGINT/SIGTERM.
pub async fn run_create(args: CreateArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.count > 0, "--count must be at least 1");
    anyhow::ensure!(args.throughput > 0, "--throughput must be at least 1");
    anyhow::ensure!(
        args.concurrency > 0 && args.batch > 0,
        "--concurrency and --batch must be at least 1"
    );
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set: pass --data-dir")?;
            PathBuf::from(home).join(".godwit")
        }
    };
    let image = absolute_reference(&args.image)?;
    let endpoint = Endpoint::resolve(args.api_url.clone(), args.token.clone(), &data_dir)?;
    let cluster = Cluster {
        api: Api::new(&endpoint),
        app: args.app.clone(),
        image: image.clone(),
        port: args.port,
        timeout: Duration::from_secs(args.timeout),
    };
    cluster
        .api
        .ensure_app(&args.app)
        .await
        .with_context(|| format!("create app {}", args.app))?;
    let leftovers = cluster.destroy_all(args.concurrency).await?;
    if leftovers > 0 {
        tracing::info!(leftovers, app = %args.app, "destroyed machines of an earlier run");
    }
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("bench"));
    let baseline_cfg = BaselineConfig {
        work_dir,
        runc: args.runc.clone(),
        name_prefix: args.baseline_prefix.clone(),
        subnet: args.baseline_subnet.clone(),
        cpus: 1,
        memory_mb: 256,
    };
    let mut bare = BareRunc::open(baseline_cfg, &image).await?;

    let outcome = tokio::select! {
        outcome = measure(&args, &image, &cluster, &mut bare) => outcome,
        signal = shutdown_signal() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    // Cleanup runs whatever happened above.
    let godwit_cleanup = cluster.destroy_all(args.concurrency).await;
    let bare_cleanup = bare.destroy_all().await;
    if let Err(error) = cluster.api.delete_app(&args.app).await {
        tracing::warn!(%error, app = %args.app, "could not delete the benchmark app");
    }
    let report = outcome?;
    godwit_cleanup.context("destroy the benchmark's machines")?;
    bare_cleanup.context("destroy the baseline's containers")?;
    Ok(report)
}

/// Warm-up, the interleaved series, then throughput.
async fn measure(
    args: &CreateArgs,
    image: &str,
    cluster: &Cluster,
    bare: &mut BareRunc,
) -> anyhow::Result<Report> {
    let timeout = Duration::from_secs(args.timeout);
    tracing::info!("warming up: one create and one bare run, then destroy");
    let warm = cluster.create_and_wait().await.context("warm-up create")?;
    tracing::info!(ms = ms(warm.to_200), "warm-up machine answered");
    cluster.destroy_all(args.concurrency).await?;
    bare_sample(bare, args.port, timeout)
        .await
        .context("warm-up bare run")?;
    bare.destroy_all().await?;

    let mut samples = Samples::default();
    let (mut godwit_to_200, mut godwit_call, mut bare_to_200, mut bare_prepare) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 1..=args.count {
        let created = cluster
            .create_and_wait()
            .await
            .with_context(|| format!("godwit machine {i}"))?;
        // Each side destroys its machine before the next create (untimed), so every
        // sample starts from the same host state.
        cluster.destroy(&created.id).await?;
        let (bare_id, prepare, to_200) = bare_sample(bare, args.port, timeout)
            .await
            .with_context(|| format!("bare container {i}"))?;
        bare.destroy(&bare_id).await?;
        tracing::info!(
            i,
            machine_id = %created.id,
            godwit_ms = ms(created.to_200),
            bare_ms = ms(to_200),
            "sample"
        );
        godwit_to_200.push(created.to_200);
        godwit_call.push(created.create_call);
        bare_to_200.push(to_200);
        bare_prepare.push(prepare);
    }
    samples.godwit_create_to_200_ms = godwit_to_200.iter().copied().map(ms).collect();
    samples.godwit_create_call_ms = godwit_call.iter().copied().map(ms).collect();
    samples.bare_runc_to_200_ms = bare_to_200.iter().copied().map(ms).collect();
    samples.bare_prepare_ms = bare_prepare.iter().copied().map(ms).collect();

    tracing::info!(
        machines = args.throughput,
        concurrency = args.concurrency,
        batch = args.batch,
        "throughput"
    );
    let elapsed = cluster
        .throughput(args.throughput, args.concurrency, args.batch)
        .await
        .context("throughput run")?;
    let seconds = elapsed.as_secs_f64();
    let throughput = Throughput {
        machines: args.throughput,
        concurrency: args.concurrency,
        batch: args.batch,
        seconds,
        machines_per_s: args.throughput as f64 / seconds,
    };

    let summary = |v: &[Duration]| Summary::of(v).context("no samples");
    let godwit_create_to_200 = summary(&godwit_to_200)?;
    let bare_runc_to_200 = summary(&bare_to_200)?;
    Ok(Report {
        image: image.to_owned(),
        count: args.count,
        godwit_create_to_200,
        godwit_create_call: summary(&godwit_call)?,
        bare_runc_to_200,
        bare_prepare: summary(&bare_prepare)?,
        difference: Difference::between(&godwit_create_to_200, &bare_runc_to_200),
        throughput,
        samples,
    })
}

/// Prepares a bundle (timed apart), then times `runc run -d` → first 200. Returns the
/// container's id and both times.
async fn bare_sample(
    bare: &mut BareRunc,
    port: u16,
    timeout: Duration,
) -> anyhow::Result<(String, Duration, Duration)> {
    let prepared = bare.prepare().await?;
    let started = tokio::time::Instant::now();
    bare.run(&prepared.id).await?;
    wait_for_200((prepared.guest_ip, port).into(), timeout)
        .await
        .with_context(|| format!("bare container {}", prepared.id))?;
    let to_200 = started.elapsed();
    Ok((prepared.id, prepared.prepare_time, to_200))
}

/// Resolves when SIGINT or SIGTERM arrives; names it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without handlers the default action (exit) applies; never resolve.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Makes a local image path absolute, since the agent resolves it from its own directory.
fn absolute_reference(reference: &str) -> anyhow::Result<String> {
    let cwd = std::env::current_dir().context("find the current directory")?;
    Ok(absolute_reference_in(reference, &cwd))
}

fn absolute_reference_in(reference: &str, cwd: &Path) -> String {
    for prefix in ["oci:", "docker-archive:", "oci-archive:"] {
        if let Some(rest) = reference.strip_prefix(prefix) {
            return if rest.starts_with('/') {
                reference.to_owned()
            } else {
                format!("{prefix}{}", cwd.join(rest).display())
            };
        }
    }
    if reference.starts_with("./") || reference.starts_with("../") {
        return cwd.join(reference).display().to_string();
    }
    reference.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_references_become_absolute() {
        let cwd = Path::new("/src/godwit");
        assert_eq!(
            absolute_reference_in("oci:target/hello-image", cwd),
            "oci:/src/godwit/target/hello-image"
        );
        assert_eq!(absolute_reference_in("oci:/abs:tag", cwd), "oci:/abs:tag");
        assert_eq!(
            absolute_reference_in("./img.tar", cwd),
            "/src/godwit/./img.tar"
        );
        assert_eq!(
            absolute_reference_in("docker.io/library/nginx:1", cwd),
            "docker.io/library/nginx:1"
        );
    }
}
