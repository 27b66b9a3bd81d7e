//! The three figures, measured in a started world.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use godwit_testbed::DelayTable;
use godwit_testbed::world::{DOMAIN, World};

use super::helpers::{self, ProbeSite};
use super::http_probe::HttpOutput;
use super::report::{RequestRow, StateRow, WorldReport};
use super::{WorldArgs, setup};

mod extra;

/// The app running in every region, and the one running only in the first region.
const APP: &str = "hello";
const SOLO: &str = "solo";
/// Runs in the first and the last region, one request at a time per machine.
const BUSY: &str = "busy";
/// How long the request holding the far machine at its hard limit takes.
const HOLD_MS: u64 = 8000;
/// Port of every region's nats-server on its first host (`godwit_testbed::world`'s layout).
const NATS_PORT: u16 = 4222;
/// How long a user may wait for its first answer from a new machine.
const SERVED_TIMEOUT: Duration = Duration::from_secs(90);

/// What one measurement step needs.
struct Ctx<'a> {
    world: &'a World,
    args: &'a WorldArgs,
    regions: &'a [String],
    exe: &'a Path,
    runtime: &'a tokio::runtime::Runtime,
    table: &'static DelayTable,
}

/// A simulated user: its city's code and its node's netns.
struct User {
    code: String,
    city: String,
    netns: String,
}

pub(super) fn all(
    world: &World,
    args: &WorldArgs,
    regions: &[String],
    image: &str,
    exe: &Path,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<WorldReport> {
    let ctx = Ctx {
        world,
        args,
        regions,
        exe,
        runtime,
        table: DelayTable::embedded(),
    };
    let mut report = WorldReport {
        regions: regions.to_vec(),
        regional_state: is_regional(world, regions),
        ..WorldReport::default()
    };
    report.state = ctx.state(report.regional_state)?;

    setup::create_app(world, APP)?;
    let mut machines = Vec::new();
    for region in regions {
        machines.push(setup::create_machine(world, APP, image, region, None)?);
    }
    for id in &machines {
        setup::wait_state(world, APP, id, "started")?;
    }
    let mut users = Vec::new();
    for region in ctx.table.regions() {
        let node = runtime
            .block_on(world.user(&region.code))
            .with_context(|| format!("add a user in {}", region.city))?;
        let netns = world
            .testbed()
            .node(&node)
            .context("the user's node exists")?
            .netns;
        users.push(User {
            code: region.code.clone(),
            city: region.city.clone(),
            netns,
        });
    }
    for region in regions {
        let user = user_in(&users, region)?;
        ctx.wait_served(user, APP, &format!(" in {region} "))?;
    }
    for user in &users {
        report.requests.push(ctx.requests(user)?);
    }

    let near = user_in(&users, &regions[0])?;
    let far_region = regions.last().context("at least two regions")?;
    let far = user_in(&users, far_region)?;
    setup::create_app(world, SOLO)?;
    let solo = setup::create_machine(world, SOLO, image, &regions[0], None)?;
    setup::wait_state(world, SOLO, &solo, "started")?;
    ctx.wait_served(far, SOLO, &format!(" in {} ", regions[0]))?;
    let local = report
        .requests
        .iter()
        .find(|r| r.code == *far_region)
        .map_or(0.0, |r| r.median_ms);
    report
        .extras
        .push(ctx.cross_region(far, &regions[0], local)?);
    report.extras.push(ctx.autostart(near, &solo)?);

    setup::create_app(world, BUSY)?;
    let busy_far = setup::create_machine(world, BUSY, image, far_region, Some(1))?;
    let busy_home = setup::create_machine(world, BUSY, image, &regions[0], Some(1))?;
    for id in [&busy_far, &busy_home] {
        setup::wait_state(world, BUSY, id, "started")?;
    }
    ctx.wait_served(far, BUSY, &format!(" in {far_region} "))?;
    report.extras.push(ctx.spill(far, &regions[0], local)?);
    Ok(report)
}

/// Whether the world runs a JetStream domain per region (its region servers have JetStream),
/// so that records are regional; else every record lives in one bucket at the hub.
fn is_regional(world: &World, regions: &[String]) -> bool {
    let conf = world
        .spec()
        .data_dir
        .join("nats")
        .join(format!("{}.conf", regions[0]));
    std::fs::read_to_string(conf).is_ok_and(|text| text.contains("jetstream"))
}

fn user_in<'u>(users: &'u [User], code: &str) -> anyhow::Result<&'u User> {
    users
        .iter()
        .find(|u| u.code == code)
        .with_context(|| format!("no user in {code}"))
}

impl Ctx<'_> {
    fn state(&self, regional: bool) -> anyhow::Result<Vec<StateRow>> {
        let mut sites = Vec::new();
        for region in self.regions {
            let host = self
                .world
                .region_hosts(region)
                .first()
                .map(|h| (*h).clone())
                .with_context(|| format!("no host in {region}"))?;
            let netns = self
                .world
                .testbed()
                .node(&host.node)
                .context("every host is a node")?
                .netns;
            sites.push(ProbeSite {
                region: region.clone(),
                netns,
                nats_url: format!("nats://{}:{NATS_PORT}", host.ipv4),
            });
        }
        let (count, interval) = (self.args.state_count, self.args.state_interval_ms);
        let started = Instant::now();
        let outputs = self.runtime.block_on(helpers::state_probes(
            self.exe, &sites, !regional, count, interval,
        ))?;
        tracing::info!(took = ?started.elapsed(), "state propagation measured");
        let mut rows = Vec::new();
        for writer in self.regions {
            for output in &outputs {
                let seen: Vec<f64> = output
                    .seen_us
                    .get(writer)
                    .map(|v| v.iter().map(|us| *us as f64 / 1000.0).collect())
                    .unwrap_or_default();
                let one_way = self.one_way_ms(writer, &output.region);
                rows.push(StateRow {
                    writer: writer.clone(),
                    reader: output.region.clone(),
                    seen: seen.len(),
                    written: usize::try_from(count).unwrap_or(usize::MAX),
                    p50_ms: percentile(&seen, 50),
                    p99_ms: percentile(&seen, 99),
                    one_way_ms: one_way,
                    target_ms: one_way + 50.0,
                });
            }
        }
        Ok(rows)
    }

    /// Requests until `user` gets a 200 from `app` whose body contains `wanted`.
    fn wait_served(&self, user: &User, app: &str, wanted: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + SERVED_TIMEOUT;
        loop {
            let out = self.probe(user, app, 1)?;
            let last = out.exchanges.last();
            if last.is_some_and(|e| e.status == 200 && e.body.contains(wanted)) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the user in {} was not served by {app} ({wanted:?}) in {SERVED_TIMEOUT:?}: {last:?}",
                user.city
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn probe(&self, user: &User, app: &str, count: u32) -> anyhow::Result<HttpOutput> {
        let anycast = SocketAddr::new(IpAddr::V4(self.world.spec().anycast_v4), 80);
        let host = format!("{app}.{DOMAIN}");
        self.runtime.block_on(helpers::http_probe(
            self.exe,
            &user.netns,
            anycast,
            &host,
            "/",
            count,
        ))
    }

    fn requests(&self, user: &User) -> anyhow::Result<RequestRow> {
        let warmups = usize::try_from(self.args.warmups).unwrap_or(usize::MAX);
        let out = self.probe(user, APP, self.args.warmups + self.args.requests)?;
        let timed = out.exchanges.get(warmups..).unwrap_or_default();
        let ok: Vec<f64> = timed
            .iter()
            .filter(|e| e.status == 200)
            .map(|e| e.micros as f64 / 1000.0)
            .collect();
        let served_by = timed
            .iter()
            .rev()
            .find(|e| e.status == 200)
            .and_then(|e| region_in(&e.body))
            .unwrap_or_else(|| "-".to_owned());
        let candidates: Vec<&str> = self.regions.iter().map(String::as_str).collect();
        let nearest = self
            .table
            .nearest(&user.code, &candidates)
            .context("the user's city is in the table")?
            .to_owned();
        let rtt = 2.0 * self.one_way_ms(&user.code, &nearest);
        Ok(RequestRow {
            city: user.city.clone(),
            code: user.code.clone(),
            served_by,
            ok: ok.len(),
            sent: timed.len(),
            median_ms: percentile(&ok, 50),
            rtt_ms: rtt,
            fibre_ms: fibre_ms(self.table, &user.code, &nearest),
            target_ms: 1.1 * rtt + 3.0,
            nearest,
        })
    }

    fn one_way_ms(&self, a: &str, b: &str) -> f64 {
        self.table
            .one_way(a, b)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }
}

/// The round trip of light in fibre (2/3 c) along the great circle, as the data's
/// `fiber_limit_rtt_ms` (computed from the same coordinates).
fn fibre_ms(table: &DelayTable, a: &str, b: &str) -> f64 {
    let (Some(a), Some(b)) = (table.region(a), table.region(b)) else {
        return f64::NAN;
    };
    if a.code == b.code {
        return 0.0;
    }
    let (la, lb) = (a.latitude.to_radians(), b.latitude.to_radians());
    let dlat = lb - la;
    let dlon = (b.longitude - a.longitude).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la.cos() * lb.cos() * (dlon / 2.0).sin().powi(2);
    let km = 2.0 * 6371.0 * h.sqrt().asin();
    2.0 * km / (299_792.458 * 2.0 / 3.0) * 1000.0
}

/// The region hello names in its answer: `hello from machine <id> in <region> (version …)`.
fn region_in(body: &str) -> Option<String> {
    let rest = body.split(" in ").nth(1)?;
    rest.split_whitespace().next().map(str::to_owned)
}

/// Nearest-rank percentile; NaN when there are no samples.
fn percentile(values: &[f64], pct: usize) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_hello_regions() {
        let values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&values, 50), 50.0);
        assert_eq!(percentile(&values, 99), 99.0);
        assert!(percentile(&[], 50).is_nan());
        assert_eq!(
            region_in("hello from machine m-1 in syd (version 1)\n").as_deref(),
            Some("syd")
        );
        assert_eq!(region_in("not found"), None);
        // The data's fiber_limit_rtt_ms for ams-bom is 69.83, for ams-syd 166.7.
        let table = DelayTable::embedded();
        assert!((fibre_ms(table, "ams", "bom") - 69.83).abs() < 0.2);
        assert!((fibre_ms(table, "syd", "ams") - 166.7).abs() < 0.5);
        assert_eq!(fibre_ms(table, "syd", "syd"), 0.0);
    }
}
