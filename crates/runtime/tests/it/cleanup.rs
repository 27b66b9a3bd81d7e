//! destroy removes every resource, from any partial state; list finds leftovers.

use std::path::Path;
use std::time::Duration;

use godwit_runtime::{MachineRuntime, Status};

use crate::support::{Host, http_get, mount_points, new_id, wait_until};

fn assert_nothing_left(host: &Host, id: &str) {
    let dir = host.machine_dir(id);
    assert!(!dir.exists(), "machine dir is left: {}", dir.display());
    let netns = format!("/var/run/netns/{}", host.container_id(id));
    assert!(!Path::new(&netns).exists(), "netns is left: {netns}");
    let veth = format!("/sys/class/net/{}", host.veth(id));
    assert!(!Path::new(&veth).exists(), "veth is left: {veth}");
    let dir_text = dir.to_string_lossy().into_owned();
    let mounts: Vec<String> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(&dir_text))
        .collect();
    assert!(mounts.is_empty(), "mounts are left: {mounts:?}");
    for controller in std::fs::read_dir("/sys/fs/cgroup").expect("cgroup root") {
        let controller = controller.expect("entry").file_name();
        let cgroup = host.cgroup_dir(&controller.to_string_lossy(), id);
        assert!(!cgroup.exists(), "cgroup is left: {}", cgroup.display());
    }
    let state = host.cfg.runc_root.join(host.container_id(id));
    assert!(!state.exists(), "runc state is left: {}", state.display());
}

#[tokio::test]
async fn destroy_removes_a_running_machine_completely() {
    let host = Host::new();
    let id = new_id();
    let spec = host.spec(&id, &["httpd", "-f", "-p", "8080", "-h", "/www"]);
    host.rt.prepare(&spec).await.expect("prepare");
    host.rt.start(&id).await.expect("start");
    wait_until(Duration::from_secs(10), "httpd", || {
        http_get(spec.network.guest_ip, 8080)
    })
    .await;
    assert!(
        host.cgroup_dir("memory", &id).exists(),
        "cgroup exists while running"
    );
    assert_eq!(host.rt.list().await.expect("list"), vec![id.clone()]);

    host.rt.destroy(&id).await.expect("destroy");
    assert_nothing_left(&host, &id);
    assert!(host.rt.list().await.expect("list").is_empty());
    host.rt.destroy(&id).await.expect("destroy again is Ok");
    assert_eq!(host.rt.status(&id).await.expect("status"), Status::Absent);
}

#[tokio::test]
async fn half_done_prepare_is_completed_or_destroyed() {
    let host = Host::new();
    // A crash after the netns and the machine dir were made, before anything else.
    let resumed = new_id();
    let status = std::process::Command::new("ip")
        .args(["netns", "add", &host.container_id(&resumed)])
        .status()
        .expect("ip netns add");
    assert!(status.success());
    std::fs::create_dir_all(host.machine_dir(&resumed).join("upper")).expect("dir");
    // Leftovers of another machine: a cgroup and an empty runc state dir only.
    let orphan = new_id();
    std::fs::create_dir_all(host.cgroup_dir("memory", &orphan)).expect("cgroup");
    std::fs::create_dir_all(host.cfg.runc_root.join(host.container_id(&orphan))).expect("state");

    let mut listed = host.rt.list().await.expect("list");
    listed.sort();
    let mut expected = vec![resumed.clone(), orphan.clone()];
    expected.sort();
    assert_eq!(listed, expected);

    let spec = host.spec(&resumed, &["sh", "-c", "echo up; sleep 1000"]);
    host.rt
        .prepare(&spec)
        .await
        .expect("prepare completes the partial one");
    host.rt.start(&resumed).await.expect("start");
    let out = host
        .rt
        .exec(
            &resumed,
            &["echo".to_owned(), "ok".to_owned()],
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_eq!(out.stdout, "ok\n");

    for id in [&resumed, &orphan] {
        host.rt.destroy(id).await.expect("destroy");
        assert_nothing_left(&host, id);
    }
    assert!(host.rt.list().await.expect("list").is_empty());
}

#[tokio::test]
async fn destroy_after_prepare_only() {
    let host = Host::new();
    let id = new_id();
    host.rt
        .prepare(&host.spec(&id, &["true"]))
        .await
        .expect("prepare");
    assert!(
        mount_points()
            .iter()
            .any(|m| m.ends_with(&format!("{id}/rootfs"))),
        "rootfs is mounted after prepare"
    );
    host.rt.destroy(&id).await.expect("destroy");
    assert_nothing_left(&host, &id);
    assert!(
        host.layer.join("bin/busybox").exists(),
        "the image layer is untouched"
    );
}

#[tokio::test]
async fn a_subnet_already_in_use_is_refused_by_name() {
    let host = Host::new();
    let (first, second) = (new_id(), new_id());
    let spec = host.spec(&first, &["true"]);
    host.rt.prepare(&spec).await.expect("prepare");
    let mut clash = host.spec(&second, &["true"]);
    clash.network = spec.network.clone();
    let error = host
        .rt
        .prepare(&clash)
        .await
        .expect_err("same subnet twice");
    let text = error.to_string();
    assert!(
        text.contains("already in use") && text.contains(&host.veth(&first)),
        "{text}"
    );
    // Preparing the first machine again is still fine (its own address does not count).
    host.rt.prepare(&spec).await.expect("prepare again");
    for id in [&first, &second] {
        host.rt.destroy(id).await.expect("destroy");
        assert_nothing_left(&host, id);
    }
}
