//! Unit tests of the machine choice.

use std::collections::BTreeMap;

use super::*;

fn target(id: &str, region: &str, soft: u32, hard: Option<u32>) -> Arc<Target> {
    Target::for_test(id, region, soft, hard)
}

fn take(loads: &Arc<Loads>, targets: &[Arc<Target>]) -> Option<Acquired> {
    loads.acquire(targets, |_| true, &Closeness::new("ams"), None)
}

/// ams is home, iad 80 ms away, syd 250 ms; bog never measured.
fn world() -> Closeness {
    let closeness = Closeness::new("ams");
    closeness.record("iad", Duration::from_millis(80));
    closeness.record("syd", Duration::from_millis(250));
    closeness
}

#[test]
fn least_loaded_below_soft_then_over_soft_then_none_above_hard() {
    let loads = Arc::new(Loads::default());
    let targets = [
        target("a", "ams", 3, Some(4)),
        target("b", "ams", 1, Some(1)),
    ];
    let mut held = Vec::new();
    for _ in 0..4 {
        let acquired = take(&loads, &targets).expect("room below the soft limits");
        assert!(!acquired.over_soft);
        held.push(acquired.guard);
    }
    assert_eq!((loads.in_flight("a"), loads.in_flight("b")), (3, 1));
    let over = take(&loads, &targets).expect("a is below its hard limit");
    assert!(over.over_soft);
    assert_eq!(over.target.machine_id, "a");
    assert!(take(&loads, &targets).is_none(), "both at hard limits");
    drop(over);
    assert_eq!(loads.in_flight("a"), 3);
    assert!(take(&loads, &targets).is_some());
}

#[test]
fn local_region_first_and_ties_are_random() {
    let loads = Arc::new(Loads::default());
    let targets = [
        target("far", "syd", 10, None),
        target("a", "ams", 10, None),
        target("b", "ams", 10, None),
    ];
    let mut seen = BTreeMap::new();
    for _ in 0..200 {
        let acquired = take(&loads, &targets).expect("no hard limit");
        *seen.entry(acquired.target.machine_id.clone()).or_insert(0) += 1;
    }
    assert_eq!(seen.get("far"), None, "{seen:?}");
    assert!(seen.get("a").is_some_and(|n| *n > 20), "{seen:?}");
    assert!(seen.get("b").is_some_and(|n| *n > 20), "{seen:?}");
}

#[test]
fn critical_machines_never_warning_ones_only_without_passing_ones() {
    let loads = Arc::new(Loads::default());
    let with_health = |id: &str, health| {
        let mut t = (*target(id, "ams", 10, None)).clone();
        t.health = health;
        Arc::new(t)
    };
    let targets = [
        with_health("critical", Health::Critical),
        with_health("warning", Health::Warning),
        with_health("passing", Health::Passing),
    ];
    for _ in 0..50 {
        let acquired = take(&loads, &targets).expect("a passing machine");
        assert_eq!(acquired.target.machine_id, "passing");
    }
    let acquired = take(&loads, &targets[..2]).expect("a warning machine");
    assert_eq!(acquired.target.machine_id, "warning");
    drop(acquired);
    assert!(take(&loads, &targets[..1]).is_none(), "critical only");
    // A passing machine excluded by the caller does not shut out the warning one.
    let acquired = loads
        .acquire(
            &targets,
            |t| t.machine_id != "passing",
            &Closeness::new("ams"),
            None,
        )
        .expect("the warning machine");
    assert_eq!(acquired.target.machine_id, "warning");
}

#[test]
fn draining_machines_take_nothing() {
    let loads = Arc::new(Loads::default());
    let targets = [target("a", "ams", 10, None)];
    assert!(loads.try_drain("a", Duration::from_secs(60)));
    assert!(take(&loads, &targets).is_none());
    loads.undrain("a");
    let held = take(&loads, &targets).expect("undrained");
    assert!(!loads.try_drain("a", Duration::from_secs(60)), "busy");
    drop(held);
}

#[test]
fn nearest_measured_region_first_unmeasured_last() {
    let loads = Arc::new(Loads::default());
    let closeness = world();
    let targets = [
        target("bog", "bog", 10, None),
        target("syd", "syd", 10, None),
        target("iad", "iad", 10, None),
    ];
    let pick = |targets: &[Arc<Target>]| {
        let acquired = loads
            .acquire(targets, |_| true, &closeness, None)
            .expect("room");
        acquired.target.machine_id.clone()
    };
    assert_eq!(pick(&targets), "iad");
    assert_eq!(pick(&targets[..2]), "syd");
    assert_eq!(pick(&targets[..1]), "bog");
}

#[test]
fn at_the_soft_limit_stay_unless_a_region_within_the_budget_has_room() {
    let loads = Arc::new(Loads::default());
    let closeness = world();
    let targets = [
        target("home", "ams", 1, Some(2)),
        target("iad", "iad", 10, None),
        target("syd", "syd", 10, None),
    ];
    let first = loads
        .acquire(&targets, |_| true, &closeness, None)
        .expect("room");
    assert_eq!(first.target.machine_id, "home");
    // Shedding off: stay home above the soft limit, until the hard limit.
    let second = loads
        .acquire(&targets, |_| true, &closeness, None)
        .expect("below hard");
    assert_eq!(second.target.machine_id, "home");
    assert!(second.over_soft);
    drop(second);
    // A budget that reaches iad (80 ms) spills there; one that does not stays home.
    let short = Some(Duration::from_millis(50));
    let stay = loads
        .acquire(&targets, |_| true, &closeness, short)
        .expect("below hard");
    assert_eq!(stay.target.machine_id, "home");
    drop(stay);
    let long = Some(Duration::from_millis(100));
    let spill = loads
        .acquire(&targets, |_| true, &closeness, long)
        .expect("room in iad");
    assert_eq!(spill.target.machine_id, "iad");
    assert!(!spill.over_soft);
    // At the hard limit, the next region takes it whatever the budget.
    let full = loads
        .acquire(&targets, |_| true, &closeness, None)
        .expect("below hard");
    assert_eq!(full.target.machine_id, "home");
    let over = loads
        .acquire(&targets, |_| true, &closeness, None)
        .expect("iad has room");
    assert_eq!(over.target.machine_id, "iad");
    drop((first, full, spill));
}

#[test]
fn worker_hints_count_as_load() {
    let loads = Arc::new(Loads::default());
    let targets = [target("a", "ams", 5, None), target("b", "ams", 5, None)];
    loads.hint("a", 3);
    for _ in 0..20 {
        let acquired = take(&loads, &targets).expect("room");
        assert_eq!(acquired.target.machine_id, "b");
    }
}
