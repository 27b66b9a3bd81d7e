//! Creating, running commands in, destroying and sweeping testbeds.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use godwit_testbed::{CreateError, NETNS_DIR, NodeSpec, Options, Testbed};

use crate::support::{
    connect_times, must_create, must_have_prerequisites, must_serve, unique_prefix, wait_until,
};

fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

#[tokio::test]
async fn exec_runs_inside_the_node_with_its_addresses() {
    let tb = must_create("exec", &[("h1", "ams"), ("h2", "iad")]).await;
    let h2 = tb.node("h2").unwrap();
    assert_eq!(h2.ipv4.to_string(), "198.18.0.2");
    assert_eq!(h2.ipv6.to_string(), "fd77::2");
    assert_eq!(h2.netns, format!("{}-h2", tb.prefix()));
    let out = tb
        .exec("h2", &["ip", "-o", "addr", "show", "dev", "wan0"])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("198.18.0.2/15") && text.contains("fd77::2/64"),
        "{text}"
    );
    let link = tb
        .exec("h2", &["ip", "-o", "link", "show", "dev", "wan0"])
        .await
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        link.contains("mtu 1500") && link.contains("qlen 10000"),
        "{link}"
    );
    assert!(tb.exec("nope", &["true"]).await.is_err());
}

#[tokio::test]
async fn destroy_kills_processes_and_removes_namespaces() {
    let tb = must_create("dest", &[("h1", "ams"), ("h2", "fra")]).await;
    let names: Vec<String> = tb.nodes().into_iter().map(|n| n.netns).collect();
    assert_eq!(names.len(), 2);
    assert!(names.iter().all(|n| netns_exists(n)));
    let mut child = tb
        .command("h1", "sleep")
        .unwrap()
        .arg("1000")
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    // `ip netns exec` execs sleep in place: wait until the pid is inside the netns.
    let target_ns = std::fs::metadata(Path::new(NETNS_DIR).join(&names[0])).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == target_ns.ino())
        })
        .await
    );

    tb.destroy().unwrap();
    assert!(
        names.iter().all(|n| !netns_exists(n)),
        "namespaces left: {names:?}"
    );
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !status.success(),
        "sleep should have been killed: {status:?}"
    );
}

#[tokio::test]
async fn drop_cleans_up_like_destroy() {
    let tb = must_create("drop", &[("h1", "ams")]).await;
    let netns = tb.node("h1").unwrap().netns;
    drop(tb);
    assert!(!netns_exists(&netns));
}

#[tokio::test]
async fn two_testbeds_run_side_by_side() {
    let (a, b) = tokio::join!(
        must_create("twoa", &[("x", "ams"), ("y", "fra")]),
        must_create("twob", &[("x", "ams"), ("y", "syd")]),
    );
    assert_ne!(a.prefix(), b.prefix());
    for (tb, far) in [(&a, "fra"), (&b, "syd")] {
        let y = tb.node("y").unwrap();
        let target = must_serve(tb, "y", IpAddr::V4(y.ipv4), 0, "y").await;
        let samples = connect_times(tb, "x", target, 5).await.unwrap();
        let rtt = tb.delays().rtt("ams", far).unwrap();
        // Physics is a hard floor; the median (not every sample) must sit near it, so one
        // handshake delayed by a busy CI core does not fail the test.
        assert!(
            samples.iter().all(|s| *s >= rtt),
            "{far}: {samples:?} vs {rtt:?}"
        );
        let med = crate::support::median(&samples);
        assert!(
            med <= rtt + Duration::from_millis(3),
            "{far}: median {med:?} vs {rtt:?}"
        );
    }
}

#[tokio::test]
async fn sweep_removes_debris_of_a_killed_run() {
    must_have_prerequisites();
    let prefix = unique_prefix("swp");
    let debris = format!("{prefix}-h1");
    // What a killed run leaves: a netns, with a process still in it.
    let added = std::process::Command::new("ip")
        .args(["netns", "add", &debris])
        .status()
        .unwrap();
    assert!(added.success());
    let mut orphan = tokio::process::Command::new("ip")
        .args(["netns", "exec", &debris, "sleep", "1000"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let err = Testbed::create(&prefix, &[NodeSpec::new("h1", "ams")], Options::default())
        .await
        .unwrap_err();
    assert!(matches!(err, CreateError::NetnsExists { .. }), "{err}");

    assert_eq!(godwit_testbed::sweep(&prefix).unwrap(), 1);
    assert!(!netns_exists(&debris));
    let status = tokio::time::timeout(Duration::from_secs(5), orphan.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
    assert_eq!(godwit_testbed::sweep(&prefix).unwrap(), 0);

    let tb = Testbed::create(&prefix, &[NodeSpec::new("h1", "ams")], Options::default())
        .await
        .unwrap();
    assert_eq!(tb.nodes().len(), 1);
}

#[tokio::test]
async fn bad_specs_are_rejected_and_leave_nothing() {
    must_have_prerequisites();
    let prefix = unique_prefix("bad");
    let create = |nodes: Vec<NodeSpec>| {
        let prefix = prefix.clone();
        async move {
            Testbed::create(&prefix, &nodes, Options::default())
                .await
                .unwrap_err()
        }
    };
    let err = create(vec![
        NodeSpec::new("h1", "ams"),
        NodeSpec::new("h2", "atlantis"),
    ])
    .await;
    assert!(matches!(err, CreateError::UnknownCity { .. }), "{err}");
    let err = create(vec![NodeSpec::new("h1", "ams"), NodeSpec::new("h1", "fra")]).await;
    assert!(matches!(err, CreateError::DuplicateNode { .. }), "{err}");
    let err = create(vec![NodeSpec::new("../x", "ams")]).await;
    assert!(matches!(err, CreateError::InvalidName { .. }), "{err}");
    assert!(
        !netns_exists(&format!("{prefix}-h1")),
        "a failed create must clean up"
    );
    assert!(
        Testbed::create("a/b", &[], Options::default())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn nodes_can_join_and_leave_a_running_testbed() {
    let tb = must_create("join", &[("h1", "ams")]).await;
    // The testbed is shared across tasks (`Arc<Testbed>`) and its futures can be spawned.
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    send_sync(&tb);
    send(&tb.add_node(&NodeSpec::new("unused", "ams")));
    let user = tb
        .add_node(&NodeSpec::new("user-syd", "Sydney"))
        .await
        .unwrap();
    assert_eq!(user.region, "syd");
    let h1 = tb.node("h1").unwrap();
    let target = must_serve(&tb, "h1", IpAddr::V6(h1.ipv6), 0, "h1").await;
    let samples = connect_times(&tb, "user-syd", target, 1).await.unwrap();
    assert!(samples[0] >= tb.delays().rtt("ams", "syd").unwrap());
    tb.remove_node("user-syd").unwrap();
    assert!(!netns_exists(&user.netns));
    assert!(tb.node("user-syd").is_none());
    assert!(tb.remove_node("user-syd").is_err());
}
