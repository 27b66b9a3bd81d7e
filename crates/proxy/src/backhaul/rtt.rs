//! Measured closeness: the RTT to every other region's workers, pinged every second over
//! the backhaul connections and kept as an EWMA per region. Regions rank: this proxy's own
//! region, then measured ones by RTT, then never measured ones by name. Every other host's
//! worker is pinged too: one that does not answer (or refuses a connection) is down, and
//! its machines are not chosen, until it answers again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::handler::Proxy;

/// How often every other region's workers are pinged.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Weight of a new sample in the moving average.
const ALPHA: f64 = 0.3;

/// The measured RTT per region.
#[derive(Debug)]
pub(crate) struct Closeness {
    own: String,
    /// Region → EWMA of the RTT in seconds.
    rtts: RwLock<HashMap<String, f64>>,
    /// Hosts whose worker did not answer its last ping or connect.
    down: RwLock<HashSet<String>>,
    /// Hosts with a ping in flight (never two at once).
    pinging: std::sync::Mutex<HashSet<String>>,
}

/// Where a region ranks for this proxy; lower is nearer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rank {
    /// A machine the request prefers (routing headers, a replay's region list or
    /// `prefer_instance`): its tier in the order asked, then its closeness.
    Preferred(usize, Box<Rank>),
    /// This proxy's region.
    Own,
    /// A region with a measured RTT (in microseconds, so it orders).
    Measured(u64),
    /// A region never measured (by name, so the order is deterministic).
    Unmeasured(String),
}

// === impl Rank ===

impl Rank {
    /// The RTT this rank stands for: zero for the own region, none when unmeasured or
    /// preferred (so latency shedding never leaves a preferred tier).
    pub(crate) fn rtt(&self) -> Option<Duration> {
        match self {
            Rank::Preferred(..) => None,
            Rank::Own => Some(Duration::ZERO),
            Rank::Measured(micros) => Some(Duration::from_micros(*micros)),
            Rank::Unmeasured(_) => None,
        }
    }
}

// === impl Closeness ===

impl Closeness {
    pub(crate) fn new(own: &str) -> Self {
        Closeness {
            own: own.to_owned(),
            rtts: RwLock::default(),
            down: RwLock::default(),
            pinging: std::sync::Mutex::default(),
        }
    }

    pub(crate) fn rank(&self, region: &str) -> Rank {
        if region == self.own {
            return Rank::Own;
        }
        let rtts = self.rtts.read().unwrap_or_else(PoisonError::into_inner);
        match rtts.get(region) {
            Some(secs) => {
                let micros = Duration::from_secs_f64(*secs).as_micros();
                Rank::Measured(u64::try_from(micros).unwrap_or(u64::MAX))
            }
            None => Rank::Unmeasured(region.to_owned()),
        }
    }

    /// Notes a ping to `host_id` starting; false if one is still in flight.
    fn start_ping(&self, host_id: &str) -> bool {
        let mut pinging = self.pinging.lock().unwrap_or_else(PoisonError::into_inner);
        pinging.insert(host_id.to_owned())
    }

    fn end_ping(&self, host_id: &str) {
        let mut pinging = self.pinging.lock().unwrap_or_else(PoisonError::into_inner);
        pinging.remove(host_id);
    }

    /// Adds one RTT sample of `region`.
    pub(crate) fn record(&self, region: &str, rtt: Duration) {
        let mut rtts = self.rtts.write().unwrap_or_else(PoisonError::into_inner);
        let sample = rtt.as_secs_f64();
        rtts.entry(region.to_owned())
            .and_modify(|avg| *avg = ALPHA * sample + (1.0 - ALPHA) * *avg)
            .or_insert(sample);
    }

    /// Whether the worker of `host_id` is down (its machines are not chosen).
    pub(crate) fn is_down(&self, host_id: &str) -> bool {
        let down = self.down.read().unwrap_or_else(PoisonError::into_inner);
        !down.is_empty() && down.contains(host_id)
    }

    /// The worker of `host_id` answered (`true`) or did not.
    pub(crate) fn host_answered(&self, host_id: &str, answered: bool) {
        let mut down = self.down.write().unwrap_or_else(PoisonError::into_inner);
        let changed = if answered {
            down.remove(host_id)
        } else {
            down.insert(host_id.to_owned())
        };
        if changed {
            tracing::info!(%host_id, up = answered, "backhaul worker changed state");
        }
    }

    /// Every measured region and its RTT in seconds.
    pub(crate) fn snapshot(&self) -> Vec<(String, f64)> {
        let rtts = self.rtts.read().unwrap_or_else(PoisonError::into_inner);
        rtts.iter().map(|(r, s)| (r.clone(), *s)).collect()
    }
}

/// Pings every worker host of another region once a second until `cancel` fires.
pub(crate) async fn measure(proxy: Arc<Proxy>, cancel: CancellationToken) {
    let Some(hosts) = proxy.cfg.hosts.clone() else {
        return;
    };
    if proxy.backhaul.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(PING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (_, host) in hosts.snapshot() {
            if proxy.cfg.host_id.as_deref() == Some(host.host_id.as_str()) {
                continue;
            }
            let Some(addr) = proxy.worker_of(&host.host_id) else {
                continue;
            };
            if !proxy.closeness.start_ping(&host.host_id) {
                continue;
            }
            let proxy = Arc::clone(&proxy);
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let Some(client) = proxy.backhaul.as_ref() else {
                    return;
                };
                let pinged = tokio::select! {
                    () = cancel.cancelled() => return,
                    pinged = client.ping(addr) => pinged,
                };
                proxy.closeness.end_ping(&host.host_id);
                match pinged {
                    Ok(rtt) => {
                        proxy.closeness.host_answered(&host.host_id, true);
                        if host.region != proxy.cfg.region {
                            proxy.closeness.record(&host.region, rtt);
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, host_id = %host.host_id, "backhaul ping failed");
                        proxy.closeness.host_answered(&host.host_id, false);
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_region_then_measured_by_rtt_then_unmeasured_by_name() {
        let closeness = Closeness::new("ams");
        closeness.record("syd", Duration::from_millis(250));
        closeness.record("iad", Duration::from_millis(80));
        let mut regions = ["zrh", "syd", "ams", "iad", "bog"];
        regions.sort_by_key(|r| closeness.rank(r));
        assert_eq!(regions, ["ams", "iad", "syd", "bog", "zrh"]);
        assert_eq!(closeness.rank("ams").rtt(), Some(Duration::ZERO));
        assert_eq!(closeness.rank("bog").rtt(), None);
    }

    #[test]
    fn the_average_follows_samples() {
        let closeness = Closeness::new("ams");
        closeness.record("syd", Duration::from_millis(100));
        for _ in 0..30 {
            closeness.record("syd", Duration::from_millis(10));
        }
        let rtt = closeness.rank("syd").rtt().expect("measured");
        assert!(rtt < Duration::from_millis(11), "{rtt:?}");
    }
}
