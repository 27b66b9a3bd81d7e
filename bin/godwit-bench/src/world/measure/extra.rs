//! The extra-latency figures: a cross-region request, an autostart, a spill at the hard
//! limit, each beside a warm local request of the same run.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use godwit_testbed::world::DOMAIN;

use super::super::helpers;
use super::super::report::ExtraRow;
use super::super::setup;
use super::{BUSY, Ctx, HOLD_MS, SOLO, User, percentile, region_in};

impl Ctx<'_> {
    /// `far` asks `solo`, whose only machine is in `home`: through far's edge over the
    /// backhaul. Against far's own warm requests to the app running in its region.
    pub(super) fn cross_region(
        &self,
        far: &User,
        home: &str,
        local_ms: f64,
    ) -> anyhow::Result<ExtraRow> {
        let warmups = usize::try_from(self.args.warmups).unwrap_or(usize::MAX);
        let out = self.probe(far, SOLO, self.args.warmups + self.args.requests)?;
        let ok: Vec<f64> = out
            .exchanges
            .get(warmups..)
            .unwrap_or_default()
            .iter()
            .filter(|e| e.status == 200)
            .map(|e| e.micros as f64 / 1000.0)
            .collect();
        let median = percentile(&ok, 50);
        let rtt = 2.0 * self.one_way_ms(&far.code, home);
        Ok(ExtraRow {
            what: format!("cross-region ({} user, machine only in {home})", far.code),
            samples: ok.len(),
            median_ms: median,
            baseline: format!("the same user served in {}", far.code),
            baseline_ms: local_ms,
            extra_ms: median - local_ms,
            note: format!(
                "{} <-> {home} rtt {rtt:.1} ms: {:.1} ms above it",
                far.code,
                median - local_ms - rtt
            ),
        })
    }

    /// Rounds of: stop `solo`'s machine, wait until stopped, one cold request then warm ones
    /// on the same connection, from `near` (the machine's region).
    pub(super) fn autostart(&self, near: &User, machine: &str) -> anyhow::Result<ExtraRow> {
        let (mut colds, mut warms, mut extras) = (Vec::new(), Vec::new(), Vec::new());
        let mut failed = Vec::new();
        for round in 0..self.args.autostart_rounds {
            setup::stop_machine(self.world, SOLO, machine)?;
            setup::wait_state(self.world, SOLO, machine, "stopped")?;
            let out = self.probe(near, SOLO, 1 + self.args.requests.min(10))?;
            let Some((cold, rest)) = out.exchanges.split_first() else {
                anyhow::bail!("the autostart probe sent no request");
            };
            let warm: Vec<f64> = rest
                .iter()
                .filter(|e| e.status == 200)
                .map(|e| e.micros as f64 / 1000.0)
                .collect();
            if cold.status != 200 || warm.is_empty() {
                failed.push(format!(
                    "round {round}: {} {}",
                    cold.status,
                    cold.body.trim()
                ));
                continue;
            }
            let (cold, warm) = (cold.micros as f64 / 1000.0, percentile(&warm, 50));
            colds.push(cold);
            warms.push(warm);
            extras.push(cold - warm);
        }
        let mut note = format!("{} rounds", self.args.autostart_rounds);
        if !failed.is_empty() {
            note.push_str(&format!("; failed: {}", failed.join("; ")));
        }
        Ok(ExtraRow {
            what: format!("first request after an autostart ({} user)", near.code),
            samples: colds.len(),
            median_ms: percentile(&colds, 50),
            baseline: "warm requests right after it".to_owned(),
            baseline_ms: percentile(&warms, 50),
            extra_ms: percentile(&extras, 50),
            note,
        })
    }

    /// `far` holds its region's `busy` machine (hard limit 1) with a slow request, and
    /// meanwhile asks again: the edge spills to `home`, the other region with a machine.
    pub(super) fn spill(&self, far: &User, home: &str, local_ms: f64) -> anyhow::Result<ExtraRow> {
        let anycast = SocketAddr::new(IpAddr::V4(self.world.spec().anycast_v4), 80);
        let host = format!("{BUSY}.{DOMAIN}");
        let (exe, netns) = (self.exe.to_owned(), far.netns.clone());
        let hold = self.runtime.spawn(async move {
            let path = format!("/sleep/{HOLD_MS}");
            helpers::http_probe(&exe, &netns, anycast, &host, &path, 1).await
        });
        // Poll (one request per connection) until the hold occupies the slot and a request
        // spills, then time requests on one connection; each takes about one far<->home round
        // trip, so the hold outlasts them. Any answered locally still are counted apart.
        let deadline = Instant::now() + Duration::from_millis(HOLD_MS / 2);
        let spilling = format!(" in {home} ");
        let out = loop {
            let first = self.probe(far, BUSY, 1)?;
            if first
                .exchanges
                .iter()
                .any(|e| e.status == 200 && e.body.contains(&spilling))
            {
                break self.probe(far, BUSY, 1 + self.args.requests.min(8));
            }
            if Instant::now() >= deadline {
                break Err(anyhow::anyhow!(
                    "no request spilled to {home} within {} ms of the hold: {first:?}",
                    HOLD_MS / 2
                ));
            }
        };
        let held = self
            .runtime
            .block_on(hold)
            .context("the holding request's task")?;
        let (out, held) = (out?, held?);
        let mut spilled = Vec::new();
        let mut local = 0;
        for e in out.exchanges.iter().skip(1) {
            match (e.status, region_in(&e.body)) {
                (200, Some(region)) if region == home => spilled.push(e.micros as f64 / 1000.0),
                (200, Some(region)) if region == far.code => local += 1,
                _ => anyhow::bail!("a request while {} was busy failed: {e:?}", far.code),
            }
        }
        let hold_ok = held.exchanges.first().is_some_and(|e| e.status == 200);
        let median = percentile(&spilled, 50);
        let rtt = 2.0 * self.one_way_ms(&far.code, home);
        Ok(ExtraRow {
            what: format!(
                "spill at the hard limit ({} user, {} busy, spilled to {home})",
                far.code, far.code
            ),
            samples: spilled.len(),
            median_ms: median,
            baseline: format!("the same user served in {}", far.code),
            baseline_ms: local_ms,
            extra_ms: median - local_ms,
            note: format!(
                "{} <-> {home} rtt {rtt:.1} ms: {:.1} ms above it; {local} served locally \
                 before the hold took the slot; the hold answered {}",
                far.code,
                median - local_ms - rtt,
                if hold_ok { "200" } else { "not 200" }
            ),
        })
    }
}
