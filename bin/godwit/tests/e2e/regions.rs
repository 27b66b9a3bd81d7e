//! Routing across regions (issue 4) in the testbed's world: real processes per host, regional
//! state, proxies joined by backhaul, real WAN delays, curl run as simulated users. Every
//! check asserts on what the app answers (which region's machine wrote the body), polling
//! with deadlines while state or failure detection propagate.
//!
//! - `syd_user_across_ams_and_syd`: one world (ams, syd) for the nearest region and its
//!   latency, `fly-replay` to the primary, backhaul to a region-less edge, spilling at the
//!   hard limit, autostart of the nearest stopped machine, and failover when syd's host dies.
//! - `partition_keeps_regions_serving_and_state_converges`: a world (iad, ams) cut in two.

use std::time::Duration;

use support::{Env, Req, curl, finish, send_curl, within};

mod support;

/// Fixed prefixes, so that a rerun sweeps whatever a killed run left behind.
const SYD_PREFIX: &str = "gwregsyd";
const SPLIT_PREFIX: &str = "gwregcut";

#[test]
#[allow(clippy::print_stderr)] // the measured figures are part of the point
fn syd_user_across_ams_and_syd() {
    let env = Env::start(SYD_PREFIX, &["ams", "syd"]);
    // `both` runs in both regions, one request at a time per machine (for the spill check).
    env.create_app("both");
    let limit = serde_json::json!({ "type": "requests", "soft_limit": 1, "hard_limit": 1 });
    let syd_machine = env.machine("both", "syd", Some(limit.clone()));
    let ams_machine = env.machine("both", "ams", Some(limit));
    // `amsonly` has no machine in syd.
    env.create_app("amsonly");
    env.machine("amsonly", "ams", None);
    let user = env.user("Sydney");
    let anycast = env.anycast();
    let rtt_user_syd = env.rtt("syd", "syd");
    let rtt_user_ams = env.rtt("syd", "ams");
    let rtt_syd_ams = env.rtt("syd", "ams");
    env.wait_served(&user, "both", "syd");

    // (a) Answered by syd, a kept-alive request in about one user<->syd round trip.
    let req = Req {
        times: 5,
        ..Req::get("both", "/")
    };
    let answers = curl(&user, &anycast, &req).expect("the syd edge answers");
    assert_eq!(answers.len(), 5, "{answers:?}");
    for answer in &answers {
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.region(), Some("syd"), "{answer:?}");
        assert!(answer.body.contains(&syd_machine), "{answer:?}");
    }
    let mut kept: Vec<Duration> = answers[1..].iter().map(|a| a.took).collect();
    assert!(answers[1..].iter().all(|a| a.connects == 0), "{answers:?}");
    kept.sort();
    let median = kept[kept.len() / 2];
    eprintln!(
        "syd user -> syd, kept-alive: median {median:?} (all {kept:?}); user<->syd rtt \
         {rtt_user_syd:?}, user<->ams rtt {rtt_user_ams:?}"
    );
    assert!(
        median < rtt_user_syd + Duration::from_millis(30),
        "a kept-alive request took {median:?}: more than one user<->syd rtt + 30 ms"
    );
    assert!(median < rtt_user_ams, "{median:?} is not below user<->ams");

    // (f) A write from syd is replayed to the primary, ams, with its body.
    let post = Req {
        post: true,
        ..Req::get("both", "/primary/ams")
    };
    let answer = first(curl(&user, &anycast, &post));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body.trim(), "written in ams", "{answer:?}");
    // Where the primary is local, no replay.
    let answer = first(curl(
        &user,
        &anycast,
        &Req {
            post: true,
            ..Req::get("both", "/primary/syd")
        },
    ));
    assert_eq!(answer.body.trim(), "written in syd", "{answer:?}");

    // (c) No machine in syd: the syd edge forwards over the backhaul to ams's worker.
    env.wait_served(&user, "amsonly", "ams");
    let req = Req {
        times: 3,
        ..Req::get("amsonly", "/headers")
    };
    let answers = curl(&user, &anycast, &req).expect("amsonly answers through syd");
    let user_ip = user_ipv4(&env, &user);
    for answer in &answers {
        assert_eq!(answer.status, 200, "{answer:?}");
        // What the machine got: the edge's region and the user's address.
        assert!(answer.body.contains("fly-region: syd\n"), "{answer:?}");
        assert!(
            answer.body.contains(&format!("fly-client-ip: {user_ip}\n")),
            "{answer:?}"
        );
        assert!(
            !answer.body.contains("godwit-"),
            "backhaul headers leaked: {answer:?}"
        );
        // What the user got: the edge's request id, no backhaul headers.
        let id = answer.header("fly-request-id").unwrap_or_default();
        assert!(id.ends_with("-syd"), "{answer:?}");
        assert!(!answer.head.contains("godwit-"), "{answer:?}");
    }
    let took = answers[answers.len() - 1].took;
    eprintln!(
        "syd user -> syd edge -> backhaul -> ams, kept-alive: {took:?}; syd<->ams rtt {rtt_syd_ams:?}"
    );
    assert!(
        took >= rtt_syd_ams,
        "{took:?} is below one syd<->ams rtt: the WAN delay is missing"
    );
    assert!(
        took < rtt_user_syd + rtt_syd_ams + Duration::from_millis(50),
        "{took:?}: more than user<->syd + syd<->ams rtt + 50 ms"
    );
    let answer = first(curl(&user, &anycast, &Req::get("amsonly", "/")));
    assert_eq!(answer.region(), Some("ams"), "{answer:?}");

    // (g) syd's machine busy at its hard limit: the next request spills to ams; once the
    // slow request is done, syd serves again.
    let slow = send_curl(
        &user,
        &anycast,
        &Req {
            max_time: Duration::from_secs(20),
            ..Req::get("both", "/sleep/4000")
        },
    );
    // Polled: a request racing ahead of the slow one may still find syd free.
    within(
        "a request to spill to ams while syd is busy",
        Duration::from_secs(3),
        || {
            curl(&user, &anycast, &Req::get("both", "/"))
                .is_ok_and(|a| a[0].status == 200 && a[0].region() == Some("ams"))
        },
    );
    let slept = first(finish(slow));
    assert_eq!(slept.body.trim(), "slept 4000 ms in syd", "{slept:?}");
    within("syd to serve again", Duration::from_secs(5), || {
        curl(&user, &anycast, &Req::get("both", "/")).is_ok_and(|a| a[0].region() == Some("syd"))
    });
    for _ in 0..3 {
        let answer = first(curl(&user, &anycast, &Req::get("both", "/")));
        assert_eq!(
            answer.region(),
            Some("syd"),
            "syd is free again: {answer:?}"
        );
    }

    // (b) syd's machine stopped, ams's running: syd's is started for the request.
    let (status, body) = env.api(
        "POST",
        &format!("/v1/apps/both/machines/{syd_machine}/stop"),
        None,
    );
    assert!((200..300).contains(&status), "stop: {status} {body}");
    env.wait_state("both", &syd_machine, "stopped");
    let started = first(curl(
        &user,
        &anycast,
        &Req {
            max_time: Duration::from_secs(60),
            ..Req::get("both", "/")
        },
    ));
    assert_eq!(started.status, 200, "{started:?}");
    assert!(
        started.body.contains(&syd_machine),
        "the stopped syd machine must be started, not ams's {ams_machine} used: {started:?}"
    );
    eprintln!(
        "autostart of the syd machine for a syd user: {:?}",
        started.took
    );
    env.wait_state("both", &syd_machine, "started");

    // (d) syd's host dies: its users are served by ams within seconds, then without failures.
    env.world
        .testbed()
        .set_down("syd-1", true)
        .expect("syd-1 exists");
    let failover = within("ams to serve the syd user", Duration::from_secs(10), || {
        curl(&user, &anycast, &Req::get("both", "/"))
            .is_ok_and(|a| a[0].status == 200 && a[0].region() == Some("ams"))
    });
    eprintln!("syd down -> served by ams after {failover:?}");
    for n in 0..20 {
        let answer = first(curl(&user, &anycast, &Req::get("both", "/")));
        assert_eq!(answer.status, 200, "request {n} after failover: {answer:?}");
        assert_eq!(answer.region(), Some("ams"), "request {n}: {answer:?}");
    }
    env.stop();
}

#[test]
fn partition_keeps_regions_serving_and_state_converges() {
    // The control plane (API and the NATS hub) is in iad, the first region: ams is cut off
    // from all of it.
    let env = Env::start(SPLIT_PREFIX, &["iad", "ams"]);
    env.create_app("both");
    env.machine("both", "ams", None);
    env.machine("both", "iad", None);
    let ams_user = env.user("ams");
    let iad_user = env.user("iad");
    let anycast = env.anycast();
    env.wait_served(&ams_user, "both", "ams");
    env.wait_served(&iad_user, "both", "iad");

    let nodes_of = |region: &str| -> Vec<String> {
        env.world
            .testbed()
            .nodes()
            .into_iter()
            .filter(|n| n.region == region)
            .map(|n| n.name)
            .collect()
    };
    let (ams_nodes, iad_nodes) = (nodes_of("ams"), nodes_of("iad"));
    let ams_nodes: Vec<&str> = ams_nodes.iter().map(String::as_str).collect();
    let iad_nodes: Vec<&str> = iad_nodes.iter().map(String::as_str).collect();
    assert!(iad_nodes.contains(&"cp"), "{iad_nodes:?}");
    env.world
        .testbed()
        .partition(&ams_nodes, &iad_nodes, true)
        .expect("partition");

    // Each side keeps serving its own users from its own machines.
    for (user, region) in [(&ams_user, "ams"), (&iad_user, "iad")] {
        let req = Req {
            times: 5,
            ..Req::get("both", "/")
        };
        let answers = curl(user, &anycast, &req)
            .unwrap_or_else(|e| panic!("{region} during the partition: {e}"));
        assert!(
            answers
                .iter()
                .all(|a| a.status == 200 && a.region() == Some(region)),
            "{region} during the partition: {answers:?}"
        );
    }
    // A machine created in iad during the partition: served in iad, unknown in ams.
    env.create_app("late");
    env.machine("late", "iad", None);
    env.wait_served(&iad_user, "late", "iad");
    let during = curl(&ams_user, &anycast, &Req::get("late", "/"));
    assert!(
        during.as_ref().map_or(true, |a| a[0].status != 200),
        "ams cannot know of late before the partition heals: {during:?}"
    );

    // Healed: ams's replica catches up, and ams's edge reaches late's machine in iad.
    env.world
        .testbed()
        .partition(&ams_nodes, &iad_nodes, false)
        .expect("heal");
    env.wait_served(&ams_user, "late", "iad");
    env.wait_served(&ams_user, "both", "ams");
    env.stop();
}

/// The first answer of a curl run that must have succeeded.
fn first(answers: Result<Vec<support::Answer>, String>) -> support::Answer {
    answers
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .next()
        .expect("curl answered at least once")
}

fn user_ipv4(env: &Env, netns: &str) -> String {
    env.world
        .testbed()
        .nodes()
        .into_iter()
        .find(|n| n.netns == netns)
        .map(|n| n.ipv4.to_string())
        .expect("the user exists")
}
