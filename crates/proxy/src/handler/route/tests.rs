//! Unit tests of routing headers, region lists and the preference ranking.

use std::sync::Arc;

use super::*;
use crate::balance::Loads;

fn target(id: &str, region: &str) -> Arc<Target> {
    Target::for_test(id, region, 5, Some(1))
}

fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert((*name).clone(), value.parse().expect("valid header value"));
    }
    headers
}

fn regions(codes: &[&str]) -> Pick {
    Pick::Regions {
        regions: codes.iter().map(|c| (*c).to_owned()).collect(),
        except: None,
    }
}

#[test]
fn region_lists_keep_their_order_and_expand_aliases() {
    let parsed = parse_regions(" IAD, ord ,sa", "region").expect("valid");
    assert_eq!(parsed.tiers.len(), 3);
    assert_eq!(parsed.tiers[0], ["iad"]);
    assert_eq!(parsed.tiers[1], ["ord"]);
    assert!(parsed.tiers[2].contains(&"gru".to_owned()));
    assert!(!parsed.any);
    let eu = parse_regions("eu", "region").expect("valid");
    assert!(eu.tiers[0].contains(&"ams".to_owned()) && !eu.tiers[0].contains(&"iad".to_owned()));
    let us = parse_regions("us", "region").expect("valid");
    assert!(us.tiers[0].contains(&"iad".to_owned()) && !us.tiers[0].contains(&"yyz".to_owned()));
    let na = parse_regions("na", "region").expect("valid");
    assert!(na.tiers[0].contains(&"yyz".to_owned()));
    let apac = parse_regions("apac", "region").expect("valid");
    assert!(apac.tiers[0].contains(&"syd".to_owned()));
    let any = parse_regions("sjc,any,ord", "region").expect("valid");
    assert_eq!((any.tiers.len(), any.any), (1, true));
    let error = parse_regions(" , ", "fly-force-region").expect_err("empty");
    assert!(
        error.starts_with("fly-force-region names no region"),
        "{error}"
    );
    let error = parse_regions("iad;x", "region").expect_err("bad code");
    assert!(error.contains("\"iad;x\" is not a region code"), "{error}");
}

#[test]
fn routing_headers_give_picks_and_preferences() {
    assert_eq!(Route::from_headers(&HeaderMap::new()), Ok(Route::any()));
    let route = Route::from_headers(&headers(&[(&FLY_PREFER_REGION, "iad,ord")])).expect("ok");
    assert_eq!(route.pick, Pick::Any);
    assert_eq!(route.prefer, [regions(&["iad"]), regions(&["ord"])]);
    let route = Route::from_headers(&headers(&[(&FLY_FORCE_REGION, "iad")])).expect("ok");
    assert_eq!(route.pick, regions(&["iad"]));
    assert!(route.prefer.is_empty());
    let route = Route::from_headers(&headers(&[(&FLY_FORCE_REGION, "iad,ord")])).expect("ok");
    assert_eq!(route.pick, regions(&["iad", "ord"]));
    assert_eq!(route.prefer.len(), 2);
    let route = Route::from_headers(&headers(&[
        (&FLY_PREFER_INSTANCE, "m1"),
        (&FLY_PREFER_REGION, "iad"),
    ]))
    .expect("ok");
    assert_eq!(route.prefer[0], Pick::Instance("m1".into()));
    assert_eq!(route.preferred_instance(), Some("m1"));
    let route = Route::from_headers(&headers(&[(&FLY_FORCE_INSTANCE, "m9")])).expect("ok");
    assert!(route.pins());
    assert_eq!(route.by, By::Client);

    let both = headers(&[(&FLY_FORCE_INSTANCE, "m9"), (&FLY_FORCE_REGION, "iad")]);
    let error = Route::from_headers(&both).expect_err("both forced");
    assert!(error.contains("send one of them"), "{error}");
    let error = Route::from_headers(&headers(&[(&FLY_PREFER_INSTANCE, " ")])).expect_err("empty");
    assert_eq!(error, "fly-prefer-instance-id is empty: send a machine id");
}

#[test]
fn preferred_tiers_rank_before_the_nearest_region() {
    let closeness = Closeness::new("ams");
    let route = Route::from_headers(&headers(&[(&FLY_PREFER_REGION, "iad,syd")])).expect("ok");
    let ranking = route.ranking(&closeness);
    let (ams, iad, syd) = (target("a", "ams"), target("i", "iad"), target("s", "syd"));
    assert!(ranking.rank_of(&iad) < ranking.rank_of(&syd));
    assert!(ranking.rank_of(&syd) < ranking.rank_of(&ams));

    // Hard limit 1: once iad is full, syd takes the next, then the nearest (ams).
    let loads = Arc::new(Loads::default());
    let targets = [ams, iad, syd];
    let mut chosen = Vec::new();
    let mut held = Vec::new();
    for _ in 0..3 {
        let acquired = loads
            .acquire(&targets, |_| true, &ranking, None)
            .expect("a machine below its hard limit");
        chosen.push(acquired.target.machine_id.clone());
        held.push(acquired.guard);
    }
    assert_eq!(chosen, ["i", "s", "a"]);
}

#[test]
fn the_chosen_machine_hears_of_an_unavailable_preferred_one() {
    let route = Route::from_headers(&headers(&[(&FLY_PREFER_INSTANCE, "m1")])).expect("ok");
    let mut seen = HeaderMap::new();
    route.mark_chosen(&mut seen, &target("m2", "ams"));
    assert_eq!(seen[&FLY_PREFERRED_UNAVAILABLE], "m1");
    route.mark_chosen(&mut seen, &target("m1", "ams"));
    assert!(!seen.contains_key(&FLY_PREFERRED_UNAVAILABLE));
}
