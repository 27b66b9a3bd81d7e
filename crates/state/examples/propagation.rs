//! State propagation on loopback: three real nats-servers as three regions (ams is the
//! leaf hub, iad and syd connect to it), one regional bucket, a replica in every region.
//! Puts go round-robin from each region's home bucket, one at a time; for each, the time
//! from just before `put` to the change reaching every other region's replica is recorded.
//!
//! `cargo run --release -p godwit-state --example propagation -- [PUTS]` (default 1000).
//! There is no WAN delay here: this is the floor that the testbed's delays add to.
#![allow(clippy::print_stdout, reason = "the figures are the output")]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use godwit_state::testing::NatsServer;
use godwit_state::{Change, RegionalBucket, Replica, StateClient};
use tokio::sync::mpsc;

const REGIONS: [&str; 3] = ["ams", "iad", "syd"];
/// How long one put may take to reach everywhere before the run is declared broken (the
/// first one also waits for mirrors to be set up, which the server retries every ~5 s).
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Probe {
    seq: u64,
    state: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let puts: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("PUTS must be a number")?,
        None => 1000,
    };
    let ams = NatsServer::start_region("ams", true, &[]).context("start ams")?;
    let hub = vec![ams.leaf_url().context("ams leaf url")?];
    let iad = NatsServer::start_region("iad", false, &hub).context("start iad")?;
    let syd = NatsServer::start_region("syd", false, &hub).context("start syd")?;
    let servers = [ams, iad, syd];

    let mut buckets: Vec<RegionalBucket<Probe>> = Vec::new();
    let mut replicas: Vec<Replica<Probe>> = Vec::new();
    for (server, region) in servers.iter().zip(REGIONS) {
        let client = StateClient::connect(&server.url).await?;
        let bucket = client
            .regional_bucket::<Probe>("bench", region, &REGIONS)
            .await?;
        let replica = bucket.replica().await?;
        replica.wait_ready(DEADLINE).await?;
        buckets.push(bucket);
        replicas.push(replica);
    }
    // Every replica reports when it sees a key, timestamped on arrival.
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<(usize, String, Instant)>();
    for (reader, replica) in replicas.iter().enumerate() {
        let mut changes = replica.subscribe();
        let seen_tx = seen_tx.clone();
        tokio::spawn(async move {
            while let Ok(change) = changes.recv().await {
                if let Change::Put { key, .. } = change
                    && seen_tx.send((reader, key, Instant::now())).is_err()
                {
                    break;
                }
            }
        });
    }

    // Warm-up: one put per region, seen everywhere (mirrors are set up by now).
    let started = Instant::now();
    for writer in 0..REGIONS.len() {
        put_and_wait(&buckets, &mut seen, writer, format!("warm-{writer}"), 0).await?;
    }
    println!(
        "mirrors ready after {:.1} s (warm-up)",
        started.elapsed().as_secs_f64()
    );

    let mut acks = Vec::with_capacity(puts);
    let mut everywhere = Vec::with_capacity(puts);
    let mut pairs: HashMap<(usize, usize), Vec<Duration>> = HashMap::new();
    for seq in 0..puts {
        let writer = seq % REGIONS.len();
        let key = format!("m{seq}");
        let timing = put_and_wait(&buckets, &mut seen, writer, key, seq as u64).await?;
        acks.push(timing.ack);
        everywhere.push(
            timing
                .readers
                .iter()
                .map(|(_, at)| *at)
                .max()
                .unwrap_or_default(),
        );
        for (reader, at) in timing.readers {
            pairs.entry((writer, reader)).or_default().push(at);
        }
    }

    println!("{puts} sequential puts, round-robin from {REGIONS:?}; loopback, no WAN delay");
    println!("{:<28} {:>8} {:>8} {:>8}", "", "p50 ms", "p99 ms", "max ms");
    print_row("put acknowledged (home)", &mut acks);
    print_row("seen in every other region", &mut everywhere);
    let mut pair_keys: Vec<(usize, usize)> = pairs.keys().copied().collect();
    pair_keys.sort_unstable();
    for (writer, reader) in pair_keys {
        let via = if writer != 0 && reader != 0 {
            " (via ams)"
        } else {
            ""
        };
        let label = format!("{} -> {}{via}", REGIONS[writer], REGIONS[reader]);
        if let Some(samples) = pairs.get_mut(&(writer, reader)) {
            print_row(&label, samples);
        }
    }
    drop(replicas);
    drop(buckets);
    drop(servers);
    Ok(())
}

/// How long one put took to be acknowledged, and to reach each other region's replica.
struct Timing {
    ack: Duration,
    readers: Vec<(usize, Duration)>,
}

async fn put_and_wait(
    buckets: &[RegionalBucket<Probe>],
    seen: &mut mpsc::UnboundedReceiver<(usize, String, Instant)>,
    writer: usize,
    key: String,
    seq: u64,
) -> anyhow::Result<Timing> {
    let probe = Probe {
        seq,
        state: "started".to_owned(),
    };
    let start = Instant::now();
    buckets[writer].home().put(&key, &probe).await?;
    let ack = start.elapsed();
    let mut readers = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while readers.len() < REGIONS.len() - 1 {
        let Ok(next) = tokio::time::timeout_at(deadline, seen.recv()).await else {
            bail!(
                "{key} from {} not seen everywhere within {DEADLINE:?}",
                REGIONS[writer]
            );
        };
        let (reader, seen_key, at) = next.context("every replica stopped")?;
        if seen_key == key && reader != writer {
            readers.push((reader, at.saturating_duration_since(start)));
        }
    }
    Ok(Timing { ack, readers })
}

fn print_row(label: &str, samples: &mut [Duration]) {
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{label:<28} {:>8.2} {:>8.2} {:>8.2}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
