//! Property tests: capacity, limits, spread, region order and determinism.

use std::collections::BTreeMap;

use godwit_sched::{ClusterView, HostView, PlaceError, Placement, PlacementRequest, place};
use proptest::prelude::*;

const REGIONS: [&str; 4] = ["syd", "sin", "ams", "mars"];
const APP: &str = "web";

fn arb_host(idx: usize) -> impl Strategy<Value = HostView> {
    (
        0..3usize,
        0u32..6,
        0u64..6000,
        0u32..30,
        0u64..8000,
        0u32..4,
        0u32..3,
        prop::bool::weighted(0.85),
    )
        .prop_map(
            move |(region, cpus, memory, cpus_res, mem_res, own, other, schedulable)| HostView {
                host_id: format!("h{idx:02}"),
                region: REGIONS[region].to_owned(),
                cpus_total: cpus,
                memory_mb_total: memory,
                cpus_reserved: cpus_res,
                memory_mb_reserved: mem_res,
                app_machines: BTreeMap::from([(APP.to_owned(), own), ("db".to_owned(), other)]),
                schedulable,
            },
        )
}

fn arb_view() -> impl Strategy<Value = ClusterView> {
    (0..10usize)
        .prop_flat_map(|n| (0..n).map(arb_host).collect::<Vec<_>>())
        .prop_map(|hosts| ClusterView { hosts })
}

fn arb_req() -> impl Strategy<Value = PlacementRequest> {
    (
        Just(REGIONS.to_vec()).prop_shuffle(),
        1..=4usize,
        1u32..4,
        1u64..2048,
        1u32..24,
    )
        .prop_map(
            |(regions, n_regions, cpus, memory_mb, count)| PlacementRequest {
                app: APP.to_owned(),
                regions: regions[..n_regions]
                    .iter()
                    .map(|r| (*r).to_owned())
                    .collect(),
                cpus,
                memory_mb,
                count,
            },
        )
}

/// How many more machines of `req`'s size fit on `host` after `taken` of them.
fn room_for(host: &HostView, req: &PlacementRequest, taken: u64) -> u64 {
    if !host.schedulable || !req.regions.contains(&host.region) {
        return 0;
    }
    let cpus_left = host.cpus_free().saturating_sub(taken * u64::from(req.cpus));
    let mem_left = host.memory_mb_free().saturating_sub(taken * req.memory_mb);
    (cpus_left / u64::from(req.cpus)).min(mem_left / req.memory_mb)
}

fn taken_on(placement: &Placement, host_id: &str) -> u64 {
    placement
        .slots
        .iter()
        .filter(|s| s.host_id == host_id)
        .count() as u64
}

fn region_rank(req: &PlacementRequest, region: &str) -> usize {
    req.regions
        .iter()
        .position(|r| r == region)
        .expect("slot in a region that was not asked for")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Machines of one size fill hosts independently, so placement must succeed exactly when
    /// the summed room is enough, and a failure must report all of that room as `placed`.
    #[test]
    fn succeeds_exactly_when_capacity_suffices(view in arb_view(), req in arb_req()) {
        let capacity: u64 = view.hosts.iter().map(|h| room_for(h, &req, 0)).sum();
        let known = view.hosts.iter().any(|h| req.regions.contains(&h.region));
        match place(&view, &req) {
            Ok(placement) => {
                prop_assert!(u64::from(req.count) <= capacity);
                prop_assert_eq!(placement.slots.len(), req.count as usize);
            }
            Err(PlaceError::NoCapacity { placed, wanted, .. }) => {
                prop_assert!(known);
                prop_assert!(u64::from(req.count) > capacity);
                prop_assert_eq!(u64::from(placed), capacity);
                prop_assert_eq!(wanted, req.count);
            }
            Err(PlaceError::UnknownRegion { .. }) => prop_assert!(!known),
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    /// No host goes over its memory or its overcommitted cpus, and only schedulable hosts
    /// of the asked regions are used.
    #[test]
    fn never_over_a_host_limit(view in arb_view(), req in arb_req()) {
        if let Ok(placement) = place(&view, &req) {
            for slot in &placement.slots {
                let host = view.hosts.iter().find(|h| h.host_id == slot.host_id)
                    .expect("slot on a host of the view");
                prop_assert_eq!(&slot.region, &host.region);
                prop_assert!(host.schedulable);
                let taken = taken_on(&placement, &host.host_id);
                prop_assert!(taken * req.memory_mb <= host.memory_mb_free());
                prop_assert!(taken * u64::from(req.cpus) <= host.cpus_free());
            }
        }
    }

    /// Slots come in region order, and a later region is used only when every earlier one
    /// is full (room only shrinks during a call, so "full at the end" is enough).
    #[test]
    fn respects_region_order(view in arb_view(), req in arb_req()) {
        if let Ok(placement) = place(&view, &req) {
            let ranks: Vec<usize> =
                placement.slots.iter().map(|s| region_rank(&req, &s.region)).collect();
            prop_assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "ranks {ranks:?}");
            let last = ranks.iter().copied().max().unwrap_or(0);
            for host in &view.hosts {
                if req.regions[..last].contains(&host.region) {
                    let left = room_for(host, &req, taken_on(&placement, &host.host_id));
                    prop_assert_eq!(left, 0, "{} still has room", host.host_id);
                }
            }
        }
    }

    /// Same input, same answer, whatever the order of the hosts.
    #[test]
    fn deterministic(
        (view, shuffled) in arb_view().prop_flat_map(|v| {
            let hosts = v.hosts.clone();
            (Just(v), Just(hosts).prop_shuffle())
        }),
        req in arb_req(),
    ) {
        let first = place(&view, &req);
        prop_assert_eq!(&first, &place(&view, &req));
        prop_assert_eq!(&first, &place(&ClusterView { hosts: shuffled }, &req));
    }

    /// On hosts of equal capacity, an app's machines differ by at most one per host.
    #[test]
    fn spreads_evenly_on_uniform_hosts(
        n_hosts in 1..8usize,
        cpus in 1u32..8,
        memory_mb in 512u64..8192,
        guest_mb in 128u64..1024,
        count in 1u32..40,
    ) {
        let hosts: Vec<HostView> = (0..n_hosts)
            .map(|idx| HostView {
                host_id: format!("h{idx}"),
                region: "syd".to_owned(),
                cpus_total: cpus,
                memory_mb_total: memory_mb,
                cpus_reserved: 0,
                memory_mb_reserved: 0,
                app_machines: BTreeMap::new(),
                schedulable: true,
            })
            .collect();
        let req = PlacementRequest {
            app: APP.to_owned(),
            regions: vec!["syd".to_owned()],
            cpus: 1,
            memory_mb: guest_mb,
            count,
        };
        let per_host = room_for(&hosts[0], &req, 0);
        prop_assume!(u64::from(count) <= per_host * n_hosts as u64);
        let placement = place(&ClusterView { hosts: hosts.clone() }, &req)
            .expect("enough room by construction");
        let counts: Vec<u64> = hosts.iter().map(|h| taken_on(&placement, &h.host_id)).collect();
        let spread = counts.iter().max().unwrap() - counts.iter().min().unwrap();
        prop_assert!(spread <= 1, "counts {counts:?}");
    }
}
