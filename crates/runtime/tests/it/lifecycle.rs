//! A busybox httpd machine: reachable from the host, exec, restart, survives its runtime.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use godwit_runtime::{MachineRuntime, OciRuntime, Status};

use crate::support::{Host, http_get, new_id, wait_until};

#[tokio::test]
async fn httpd_machine_serves_execs_and_outlives_its_runtime() {
    let host = Host::new();
    let id = new_id();
    let spec = host.spec(&id, &["httpd", "-f", "-p", "8080", "-h", "/www"]);
    let guest = spec.network.guest_ip;

    host.rt.prepare(&spec).await.expect("prepare");
    host.rt
        .prepare(&spec)
        .await
        .expect("prepare again is a no-op");
    assert_eq!(host.rt.status(&id).await.expect("status"), Status::Prepared);

    host.rt.start(&id).await.expect("start");
    host.rt
        .start(&id)
        .await
        .expect("start again while running is Ok");
    let response = wait_until(Duration::from_secs(10), "httpd to answer", || {
        http_get(guest, 8080)
    })
    .await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("hello from the layer"), "{response}");

    let Status::Running { pid } = host.rt.status(&id).await.expect("status") else {
        panic!("machine is not running");
    };
    let netns = std::fs::metadata(format!("/var/run/netns/{}", host.container_id(&id)))
        .expect("netns file");
    let proc_netns = std::fs::metadata(format!("/proc/{pid}/ns/net")).expect("machine netns");
    assert_eq!(netns.ino(), proc_netns.ino(), "machine runs in its netns");
    let limit =
        std::fs::read_to_string(host.cgroup_dir("memory", &id).join("memory.limit_in_bytes"))
            .expect("memory limit");
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    let quota = std::fs::read_to_string(host.cgroup_dir("cpu", &id).join("cpu.cfs_quota_us"))
        .expect("cpu quota");
    assert_eq!(quota.trim(), "100000");

    let out = host
        .rt
        .exec(
            &id,
            &["echo".to_owned(), "hi".to_owned()],
            Duration::from_secs(10),
        )
        .await
        .expect("exec echo");
    assert_eq!((out.exit_code, out.stdout.as_str()), (0, "hi\n"));
    let sh = |script: &str| vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
    let out = host
        .rt
        .exec(
            &id,
            &sh("echo $GREETING; hostname; cat /etc/hosts >&2; exit 4"),
            Duration::from_secs(10),
        )
        .await
        .expect("exec sh");
    assert_eq!(out.exit_code, 4);
    assert_eq!(out.stdout, format!("hi\nm-{id}\n"));
    assert!(
        out.stderr.contains(&format!("{guest}\tm-{id}")),
        "{}",
        out.stderr
    );
    let timed_out = host
        .rt
        .exec(&id, &sh("sleep 30"), Duration::from_millis(300))
        .await;
    assert!(
        timed_out.is_err(),
        "exec past its timeout fails: {timed_out:?}"
    );

    // The shim is detached: not our child, leader of its own session.
    let shim_pid = std::fs::read_to_string(host.machine_dir(&id).join("shim.pid")).expect("pid");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", shim_pid.trim())).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split(' ')
        .collect();
    let (ppid, session) = (fields[2], fields[4]);
    assert_ne!(
        ppid,
        std::process::id().to_string(),
        "shim is not the test's child"
    );
    assert_eq!(session, shim_pid.trim(), "shim leads its own session");

    // A new runtime instance (as after an agent restart) sees the machine and stops it.
    let rt2 = OciRuntime::new(host.cfg.clone()).expect("second runtime");
    assert!(matches!(
        rt2.status(&id).await.expect("status"),
        Status::Running { .. }
    ));
    // httpd as PID 1 ignores SIGTERM: stop kills it after the timeout.
    let exit = rt2
        .stop(&id, libc::SIGTERM, Duration::from_millis(300))
        .await
        .expect("stop");
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)), "{exit:?}");
    assert_eq!(
        rt2.status(&id).await.expect("status"),
        Status::Exited(exit.clone())
    );
    assert_eq!(
        rt2.stop(&id, libc::SIGTERM, Duration::from_secs(1))
            .await
            .expect("stop again"),
        exit
    );

    // Start again after the exit: the old run is cleared and the machine serves again.
    rt2.start(&id).await.expect("restart");
    let response = wait_until(Duration::from_secs(10), "httpd to answer again", || {
        http_get(guest, 8080)
    })
    .await;
    assert!(response.contains("hello from the layer"), "{response}");
    rt2.destroy(&id).await.expect("destroy");
    assert_eq!(rt2.status(&id).await.expect("status"), Status::Absent);
}

#[tokio::test]
async fn start_requires_prepare_and_ids_are_checked() {
    let host = Host::new();
    let id = new_id();
    let err = host.rt.start(&id).await.expect_err("start without prepare");
    assert!(err.to_string().contains("not prepared"), "{err}");
    let err = host.rt.status("../etc").await.expect_err("bad id");
    assert!(err.to_string().contains("invalid machine id"), "{err}");
    assert_eq!(host.rt.status(&id).await.expect("status"), Status::Absent);
}
