//! The state-propagation probe: `godwit-bench state-probe` (hidden), one process per region,
//! run in that region's host netns against that region's nats-server.
//!
//! Each process is both a writer (as an agent writes: `StateClient::records` with the world's
//! topology, `Records::writer().put` into its home bucket) and a reader (as a proxy reads: a
//! replica of every region's records). Protocol on stdin/stdout: it opens its records, writes
//! `warm-<region>` and waits until its replica holds every region's warm key (the mirrors
//! flow), prints `ready`, waits for a `go` line, then writes `count` stamped records while
//! timing every region's records as its replica receives them, and prints one JSON line
//! ([`ProbeOutput`]). One clock for all: every process runs on this box.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use godwit_state::{Change, StateClient, Topology};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;
use tokio_util::sync::CancellationToken;

/// `godwit-bench state-probe` (run by `godwit-bench world` through nsenter).
#[derive(clap::Args, Debug, Clone)]
pub struct StateProbeArgs {
    /// This region's nats-server
    #[arg(long)]
    pub nats_url: String,
    /// The region this process writes as
    #[arg(long)]
    pub region: String,
    /// Every region of the world (each runs one probe), comma-separated
    #[arg(long, value_delimiter = ',', required = true)]
    pub regions: Vec<String>,
    /// The world keeps all state in one JetStream domain: one plain bucket for every region
    #[arg(long)]
    pub single_bucket: bool,
    /// Kind of record (bucket name) probed
    #[arg(long, default_value = "godwit_bench_probe")]
    pub bucket: String,
    /// Records written by this process
    #[arg(long, default_value_t = 40)]
    pub count: u32,
    /// Milliseconds between two writes
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Seconds to wait for the warm-up records of every region
    #[arg(long, default_value_t = 90)]
    pub warm_timeout: u64,
}

/// A probe record: who wrote it and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stamp {
    writer: String,
    seq: u32,
    /// Microseconds since the Unix epoch when `put` was called.
    sent_us: u64,
}

/// What a probe process prints when done.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ProbeOutput {
    /// The reader's region.
    pub(crate) region: String,
    /// Per writer region: the propagation delay of each record it received, microseconds.
    pub(crate) seen_us: BTreeMap<String, Vec<u64>>,
    /// Writes of this process that failed.
    pub(crate) write_errors: u32,
}

/// Runs the probe process (see the module doc).
pub async fn run_state_probe(args: StateProbeArgs) -> anyhow::Result<()> {
    let client = StateClient::connect_within(&args.nats_url, Duration::from_secs(30))
        .await
        .with_context(|| format!("connect to {}", args.nats_url))?;
    let topology = if args.single_bucket {
        Topology::new(&args.region, &[])
    } else {
        Topology::new(&args.region, &args.regions)
    };
    let regions = args.regions.clone();
    let records = client
        .records::<Stamp>(&args.bucket, &topology)
        .await
        .with_context(|| format!("open records {:?} as {topology:?}", args.bucket))?;
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let replica = records
        .replica_until(cancel.clone())
        .await
        .context("start a replica")?;
    replica
        .wait_ready(Duration::from_secs(30))
        .await
        .context("load the replica")?;
    let mut changes = replica.subscribe();

    // Warm-up: every region's warm key reaches this replica (mirrors created and flowing).
    let warm = Stamp {
        writer: args.region.clone(),
        seq: 0,
        sent_us: now_us(),
    };
    let writer = records.writer().clone();
    writer
        .put(&format!("warm-{}", args.region), &warm)
        .await
        .context("write the warm-up record")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.warm_timeout);
    loop {
        let missing: Vec<&String> = regions
            .iter()
            .filter(|r| replica.get(&format!("warm-{r}")).is_none())
            .collect();
        if missing.is_empty() {
            break;
        }
        let Ok(_) = tokio::time::timeout_at(deadline, changes.recv()).await else {
            anyhow::bail!(
                "region {}: no warm-up record from {missing:?} within {} s",
                args.region,
                args.warm_timeout
            );
        };
    }
    say("ready")?;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    match stdin.next_line().await.context("read the go line")? {
        Some(line) if line.trim() == "go" => {}
        other => anyhow::bail!("expected `go` on stdin, got {other:?}"),
    }

    let count = args.count;
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let region = args.region.clone();
    let writes = tokio::spawn(async move {
        let mut errors = 0;
        let mut ticks = tokio::time::interval(interval);
        for seq in 0..count {
            ticks.tick().await;
            let stamp = Stamp {
                writer: region.clone(),
                seq,
                sent_us: now_us(),
            };
            if let Err(error) = writer.put(&format!("p-{region}-{seq}"), &stamp).await {
                tracing::warn!(%error, seq, "probe write failed");
                errors += 1;
            }
        }
        errors
    });

    let expected = usize::try_from(count).unwrap_or(usize::MAX) * regions.len();
    let mut output = ProbeOutput {
        region: args.region.clone(),
        ..ProbeOutput::default()
    };
    let mut received = 0;
    let mut keys = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + interval * count + Duration::from_secs(30);
    while received < expected {
        let change = match tokio::time::timeout_at(deadline, changes.recv()).await {
            Err(_) => break,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                tracing::warn!(lagged = n, "the probe fell behind its replica");
                continue;
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
            Ok(Ok(change)) => change,
        };
        let at = now_us();
        if let Change::Put { key, value, .. } = change
            && key.starts_with("p-")
            && keys.insert(key)
        {
            output
                .seen_us
                .entry(value.writer)
                .or_default()
                .push(at.saturating_sub(value.sent_us));
            received += 1;
        }
    }
    output.write_errors = writes.await.context("the writer task")?;
    say(&serde_json::to_string(&output).context("encode the probe output")?)?;
    Ok(())
}

/// One line on stdout, flushed (the orchestrator reads it through a pipe).
fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush())?;
    Ok(())
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
