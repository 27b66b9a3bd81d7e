//! The multi-region world of issue 4 (`godwit_testbed::world`): regions ams and syd, one host
//! each, joined by the emulated WAN, and a user in Sydney reaching the app through the anycast
//! address. The user is answered by syd in about one user↔syd round trip, and by ams once
//! syd's host goes down.

use std::process::Command;
use std::time::{Duration, Instant};

use godwit_testbed::world::{DOMAIN, World, WorldSpec};

use crate::harness::{GODWIT, wait_until};
use crate::{app, leftovers};

/// Fixed, so that a rerun sweeps whatever a killed run left behind.
const PREFIX: &str = "gwworld";
const APP: &str = "hello";

/// What curl got from the user's node.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
    /// curl's `time_total`.
    took: Duration,
}

#[test]
#[allow(clippy::print_stderr)] // the measured figures are the point of this test
fn sydney_user_is_served_by_syd_then_by_ams_when_syd_is_down() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start a tokio runtime");
    let data_dir = std::env::temp_dir().join(format!("godwit-e2e-{PREFIX}"));
    World::sweep(PREFIX, &data_dir);
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir).expect("create the data dir");
    let image = build_image(&data_dir);

    let spec = WorldSpec::new(PREFIX, GODWIT, &data_dir, &["ams", "syd"]);
    let started_at = Instant::now();
    let world = runtime
        .block_on(World::start(spec))
        .unwrap_or_else(|e| panic!("start the world: {}", chain(&e)));
    eprintln!("world ams,syd up in {:?}", started_at.elapsed());
    let tags: Vec<String> = world
        .hosts()
        .iter()
        .map(|h| h.name_prefix.clone())
        .collect();

    let (status, body) = must_api(&world, "POST", "/v1/apps", Some(r#"{"app_name":"hello"}"#));
    assert!(
        (200..300).contains(&status),
        "create the app: {status} {body}"
    );
    let syd_machine = create_machine(&world, &image, "syd");
    let ams_machine = create_machine(&world, &image, "ams");
    for id in [&syd_machine, &ams_machine] {
        wait_started(&world, id);
    }

    let user = runtime
        .block_on(world.user("Sydney"))
        .unwrap_or_else(|e| panic!("add a user in Sydney: {}", chain(&e)));
    let testbed = world.testbed();
    let anycast = std::net::IpAddr::V4(world.spec().anycast_v4);
    assert_eq!(
        testbed
            .anycast_target(&user, anycast)
            .expect("the user exists"),
        Some("syd-1".to_owned()),
        "the router must deliver the Sydney user's anycast packets to syd's edge"
    );
    let rtt_syd = testbed
        .delays()
        .rtt("syd", "syd")
        .expect("syd is in the table");
    let rtt_ams = testbed
        .delays()
        .rtt("syd", "ams")
        .expect("ams is in the table");

    // The syd proxy sees the syd machine once the machines bucket reached it.
    wait_until(
        "the syd machine to answer the user",
        Duration::from_secs(60),
        || {
            let answer = curl_from(&world, &user)?;
            (answer.status == 200 && answer.body.contains(&syd_machine)).then_some(())
        },
    );
    let mut times = Vec::new();
    for _ in 0..7 {
        let answer = curl_from(&world, &user).expect("the syd edge answers");
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(
            answer.body.contains(&syd_machine),
            "the Sydney user must be served by syd's machine {syd_machine}: {answer:?}"
        );
        times.push(answer.took);
    }
    times.sort();
    let median = times[times.len() / 2];
    // The same request on syd's host itself, without the WAN: the proxy's and app's own time.
    let syd_netns = testbed.node("syd-1").expect("syd-1 exists").netns;
    let mut local: Vec<Duration> = (0..7)
        .filter_map(|_| curl_in(&syd_netns, "127.0.0.1").map(|a| a.took))
        .collect();
    assert_eq!(local.len(), 7, "curl through syd-1's own proxy failed");
    local.sort();
    let local_median = local.get(local.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "syd user -> anycast -> syd: median {median:?} over {} requests (min {:?}, max {:?}); \
         on syd-1 itself without the WAN: median {local_median:?}; \
         user<->syd rtt {rtt_syd:?}, user<->ams rtt {rtt_ams:?}",
        times.len(),
        times[0],
        times[times.len() - 1]
    );
    // What the WAN adds must be about one user<->syd round trip (two: connect, then the
    // request), whatever the proxy and the app take on their own.
    let wan_part = median.saturating_sub(local_median);
    assert!(
        wan_part < rtt_syd * 2 + Duration::from_millis(20),
        "served by syd in {median:?}, {wan_part:?} more than on syd-1 itself ({local_median:?}): \
         more than two user<->syd round trips ({rtt_syd:?}) + 20 ms"
    );
    // And in absolute terms: a fresh connection costs two user<->syd round trips (connect,
    // then request and answer); the proxy and the app must add little on top.
    assert!(
        median < rtt_syd * 2 + Duration::from_millis(40),
        "served by syd in {median:?}: more than two user<->syd round trips ({rtt_syd:?}) + 40 ms"
    );
    assert!(
        median < rtt_ams,
        "served by syd in {median:?}: not below one user<->ams round trip ({rtt_ams:?})"
    );

    // syd's only host goes down: anycast delivers to ams, whose proxy serves its own machine.
    testbed.set_down("syd-1", true).expect("syd-1 exists");
    let down_at = Instant::now();
    let answer = wait_until(
        "ams to serve the Sydney user",
        Duration::from_secs(30),
        || curl_from(&world, &user).filter(|a| a.status == 200 && a.body.contains(&ams_machine)),
    );
    let failover = down_at.elapsed();
    eprintln!(
        "syd down -> served by ams after {failover:?}; that request took {:?}",
        answer.took
    );
    assert!(
        failover < Duration::from_secs(10),
        "failing over to ams took {failover:?}"
    );
    assert!(
        answer.took >= rtt_ams,
        "an answer from ams took {:?}, less than one user<->ams round trip ({rtt_ams:?}): \
         the WAN delay is missing",
        answer.took
    );

    let stopping_at = Instant::now();
    world
        .stop()
        .unwrap_or_else(|e| panic!("stop the world: {}", chain(&e)));
    eprintln!("world stopped in {:?}", stopping_at.elapsed());
    leftovers::assert_nothing_left(&data_dir, PREFIX);
    for tag in &tags {
        leftovers::assert_nothing_left(&data_dir, tag);
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// `godwit image build` of the static hello binary; returns the image reference.
fn build_image(data_dir: &std::path::Path) -> String {
    let out = data_dir.join("image");
    let binary = app::static_hello();
    let output = Command::new(GODWIT)
        .args([
            "image", "build", "--name", "hello", "--tag", "latest", "--port", "8080",
        ])
        .arg("--binary")
        .arg(&binary)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run godwit image build");
    assert!(
        output.status.success(),
        "godwit image build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    format!("oci:{}", out.display())
}

/// Creates a hello machine in `region` serving port 80 (HTTP) from 8080; returns its id.
fn create_machine(world: &World, image: &str, region: &str) -> String {
    let request = serde_json::json!({
        "region": region,
        "config": {
            "image": image,
            "services": [{
                "protocol": "tcp",
                "internal_port": 8080,
                "ports": [{ "port": 80, "handlers": ["http"] }],
            }],
        },
    });
    let (status, body) = must_api(
        world,
        "POST",
        &format!("/v1/apps/{APP}/machines"),
        Some(&request.to_string()),
    );
    assert!(
        (200..300).contains(&status),
        "create a machine in {region}: {status} {body}{}",
        world.log_tails(20)
    );
    let machine: serde_json::Value = serde_json::from_str(&body).expect("a machine as JSON");
    assert_eq!(machine["region"], region, "{body}");
    machine["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no machine id in {body}"))
        .to_owned()
}

fn wait_started(world: &World, id: &str) {
    wait_until(
        &format!("machine {id} to be started"),
        Duration::from_secs(90),
        || {
            let (status, body) =
                must_api(world, "GET", &format!("/v1/apps/{APP}/machines/{id}"), None);
            let machine: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status == 200 && machine["state"] == "started").then_some(())
        },
    );
}

fn must_api(world: &World, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    world
        .api(method, path, body)
        .unwrap_or_else(|e| panic!("{}{}", chain(&e), world.log_tails(20)))
}

/// `curl -H 'Host: hello.godwit.test' http://<anycast>/` from the user's node; `None` when
/// curl fails (no connection, timeout), as for [`curl_in`].
fn curl_from(world: &World, user: &str) -> Option<Answer> {
    let netns = world.testbed().node(user).expect("the user exists").netns;
    curl_in(&netns, &world.spec().anycast_v4.to_string())
}

/// `curl -H 'Host: hello.godwit.test' http://<host>/` in netns `netns`.
fn curl_in(netns: &str, host: &str) -> Option<Answer> {
    let output = Command::new("ip")
        .args(["netns", "exec", netns, "curl", "-sS", "--max-time", "5"])
        .args(["-w", "\n%{http_code} %{time_total}", "-H"])
        .arg(format!("Host: {APP}.{DOMAIN}"))
        .arg(format!("http://{host}/"))
        .output()
        .expect("curl must be installed (Debian package curl)");
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n')?;
    let (status, took) = tail.split_once(' ')?;
    Some(Answer {
        status: status.trim().parse().ok()?,
        body: body.to_owned(),
        took: Duration::from_secs_f64(took.trim().parse().ok()?),
    })
}

/// An error and its sources, one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
