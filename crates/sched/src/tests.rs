use super::*;

fn host(host_id: &str, region: &str, cpus_total: u32, memory_mb_total: u64) -> HostView {
    HostView {
        host_id: host_id.to_owned(),
        region: region.to_owned(),
        cpus_total,
        memory_mb_total,
        cpus_reserved: 0,
        memory_mb_reserved: 0,
        app_machines: BTreeMap::new(),
        schedulable: true,
    }
}

fn req(regions: &[&str], cpus: u32, memory_mb: u64, count: u32) -> PlacementRequest {
    PlacementRequest {
        app: "web".to_owned(),
        regions: regions.iter().map(|r| (*r).to_owned()).collect(),
        cpus,
        memory_mb,
        count,
    }
}

fn hosts_of(placement: &Placement) -> Vec<&str> {
    placement.slots.iter().map(|s| s.host_id.as_str()).collect()
}

fn must_place(hosts: Vec<HostView>, req: &PlacementRequest) -> Placement {
    place(&ClusterView { hosts }, req).expect("placement should succeed")
}

#[test]
fn spreads_over_hosts_of_a_region() {
    let hosts = vec![host("a", "syd", 4, 4096), host("b", "syd", 4, 4096)];
    let placement = must_place(hosts, &req(&["syd"], 1, 256, 4));
    assert_eq!(hosts_of(&placement), ["a", "b", "a", "b"]);
    assert!(placement.slots.iter().all(|s| s.region == "syd"));
}

#[test]
fn counts_machines_the_app_already_has() {
    let mut busy = host("a", "syd", 4, 4096);
    busy.app_machines.insert("web".to_owned(), 2);
    busy.app_machines.insert("other".to_owned(), 9);
    let mut quiet = host("b", "syd", 4, 4096);
    quiet.app_machines.insert("other".to_owned(), 5);
    let placement = must_place(vec![busy, quiet], &req(&["syd"], 1, 256, 3));
    assert_eq!(hosts_of(&placement), ["b", "b", "a"]);
}

#[test]
fn ties_go_to_most_free_memory_then_smallest_host_id() {
    let mut small = host("a", "syd", 4, 4096);
    small.memory_mb_reserved = 1024;
    let hosts = vec![host("c", "syd", 4, 4096), small, host("b", "syd", 4, 4096)];
    let placement = must_place(hosts, &req(&["syd"], 1, 512, 3));
    // b and c tie on memory (b wins on id); then c (more memory than a); then a.
    assert_eq!(hosts_of(&placement), ["b", "c", "a"]);
}

#[test]
fn falls_back_to_next_region_per_machine() {
    let hosts = vec![host("s1", "syd", 1, 1024), host("g1", "sin", 8, 8192)];
    let placement = must_place(hosts, &req(&["syd", "sin"], 1, 512, 3));
    assert_eq!(hosts_of(&placement), ["s1", "s1", "g1"]);
    assert_eq!(placement.slots[2].region, "sin");
}

#[test]
fn skips_regions_without_hosts_and_unschedulable_hosts() {
    let mut cordoned = host("s1", "syd", 8, 8192);
    cordoned.schedulable = false;
    let hosts = vec![cordoned, host("g1", "sin", 8, 8192)];
    let placement = must_place(hosts, &req(&["mars", "syd", "sin"], 1, 512, 2));
    assert_eq!(hosts_of(&placement), ["g1", "g1"]);
}

#[test]
fn cpus_overcommit_by_four_memory_never() {
    let hosts = vec![host("a", "syd", 1, 100_000)];
    let view = ClusterView { hosts };
    assert_eq!(
        place(&view, &req(&["syd"], 1, 1, 4)).map(|p| p.slots.len()),
        Ok(4)
    );
    assert!(matches!(
        place(&view, &req(&["syd"], 1, 1, 5)),
        Err(PlaceError::NoCapacity { placed: 4, .. })
    ));
    let hosts = vec![host("a", "syd", 64, 1024)];
    let view = ClusterView { hosts };
    assert_eq!(
        place(&view, &req(&["syd"], 1, 512, 2)).map(|p| p.slots.len()),
        Ok(2)
    );
    assert!(matches!(
        place(&view, &req(&["syd"], 1, 512, 3)),
        Err(PlaceError::NoCapacity { placed: 2, .. })
    ));
}

#[test]
fn over_reserved_host_has_no_room() {
    let mut over = host("a", "syd", 1, 1024);
    over.cpus_reserved = 10;
    over.memory_mb_reserved = 4096;
    assert_eq!(over.cpus_free(), 0);
    assert_eq!(over.memory_mb_free(), 0);
    let err = place(&ClusterView { hosts: vec![over] }, &req(&["syd"], 1, 1, 1)).unwrap_err();
    assert!(
        matches!(err, PlaceError::NoCapacity { placed: 0, .. }),
        "{err}"
    );
}

#[test]
fn no_capacity_is_all_or_nothing_and_says_what_is_missing() {
    let mut s1 = host("s1", "syd", 2, 1024);
    s1.memory_mb_reserved = 256;
    let hosts = vec![s1, host("g1", "sin", 1, 300)];
    let err = place(&ClusterView { hosts }, &req(&["syd", "sin"], 1, 512, 2)).unwrap_err();
    assert_eq!(
        err,
        PlaceError::NoCapacity {
            app: "web".to_owned(),
            regions: vec!["syd".to_owned(), "sin".to_owned()],
            cpus: 1,
            memory_mb: 512,
            placed: 1,
            wanted: 2,
            best_free: Some(Box::new(HostFree {
                host_id: "g1".to_owned(),
                region: "sin".to_owned(),
                cpus_free: 4,
                memory_mb_free: 300,
            })),
        }
    );
    assert_eq!(
        err.to_string(),
        "no host in syd, sin has 512 MB memory and 1 cpu free for app web (placed 1 of 2; \
         best: host g1 in sin with 300 MB and 4 cpus free); add a host, pick another region \
         or a smaller guest"
    );
}

#[test]
fn no_capacity_when_every_host_is_cordoned() {
    let mut cordoned = host("s1", "syd", 8, 8192);
    cordoned.schedulable = false;
    let err = place(
        &ClusterView {
            hosts: vec![cordoned],
        },
        &req(&["syd"], 2, 512, 1),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        PlaceError::NoCapacity {
            best_free: None,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "no host in syd has 512 MB memory and 2 cpus free for app web (placed 0 of 1; every \
         host there is unschedulable); add a host, pick another region or a smaller guest"
    );
}

#[test]
fn unknown_region_lists_known_regions() {
    let hosts = vec![host("a", "syd", 1, 1024), host("b", "ams", 1, 1024)];
    let err = place(&ClusterView { hosts }, &req(&["mars", "moon"], 1, 256, 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no host in mars, moon for app web; regions with hosts: ams, syd"
    );
    let err = place(&ClusterView::default(), &req(&["syd"], 1, 256, 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no host in syd for app web; the cluster has no hosts yet: add one"
    );
}

#[test]
fn rejects_malformed_requests() {
    let view = ClusterView {
        hosts: vec![host("a", "syd", 1, 1024)],
    };
    assert_eq!(
        place(&view, &req(&["syd"], 1, 256, 0)),
        Err(PlaceError::ZeroCount {
            app: "web".to_owned()
        })
    );
    assert_eq!(
        place(&view, &req(&[], 1, 256, 1)),
        Err(PlaceError::NoRegions {
            app: "web".to_owned()
        })
    );
    assert!(matches!(
        place(&view, &req(&["syd"], 0, 256, 1)),
        Err(PlaceError::EmptyGuest { cpus: 0, .. })
    ));
    assert!(matches!(
        place(&view, &req(&["syd"], 1, 0, 1)),
        Err(PlaceError::EmptyGuest { memory_mb: 0, .. })
    ));
}

#[test]
fn host_order_does_not_matter() {
    let hosts = vec![
        host("c", "syd", 2, 2048),
        host("a", "syd", 4, 1024),
        host("b", "sin", 4, 4096),
    ];
    let request = req(&["syd", "sin"], 1, 512, 7);
    let forward = must_place(hosts.clone(), &request);
    let mut reversed = hosts;
    reversed.reverse();
    assert_eq!(forward, must_place(reversed, &request));
}

#[test]
fn host_view_round_trips_through_json() {
    let mut view = host("a", "syd", 4, 4096);
    view.app_machines.insert("web".to_owned(), 3);
    let json = serde_json::to_string(&view).expect("serialize");
    let back: HostView = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, view);
}
