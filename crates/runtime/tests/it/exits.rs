//! Exit codes, signals and OOM kills are recorded.

use std::time::Duration;

use godwit_runtime::{MachineRuntime, Status};
use tokio::time::Instant;

use crate::support::{Host, new_id};

#[tokio::test]
async fn exit_code_is_recorded() {
    let host = Host::new();
    let id = new_id();
    host.rt
        .prepare(&host.spec(&id, &["sh", "-c", "exit 3"]))
        .await
        .expect("prepare");
    host.rt.start(&id).await.expect("start");
    let exit = tokio::time::timeout(Duration::from_secs(10), host.rt.wait_exit(&id))
        .await
        .expect("exit within 10s")
        .expect("wait_exit");
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (3, None, false),
        "{}",
        host.logs(&id)
    );
    assert_eq!(
        host.rt.status(&id).await.expect("status"),
        Status::Exited(exit)
    );
}

#[tokio::test]
async fn stop_kills_a_process_that_ignores_sigterm() {
    let host = Host::new();
    let id = new_id();
    let spec = host.spec(&id, &["sh", "-c", "trap '' TERM; echo ready; sleep 1000"]);
    host.rt.prepare(&spec).await.expect("prepare");
    host.rt.start(&id).await.expect("start");
    let started = Instant::now();
    let exit = host
        .rt
        .stop(&id, libc::SIGTERM, Duration::from_millis(500))
        .await
        .expect("stop");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "waited for the timeout"
    );
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (137, Some(9), false)
    );
}

#[tokio::test]
async fn stop_lets_a_process_exit_gracefully() {
    let host = Host::new();
    let id = new_id();
    let script = "trap 'exit 7' TERM; echo ready; sleep 1000 & wait";
    host.rt
        .prepare(&host.spec(&id, &["sh", "-c", script]))
        .await
        .expect("prepare");
    host.rt.start(&id).await.expect("start");
    let exit = host
        .rt
        .stop(&id, libc::SIGTERM, Duration::from_secs(10))
        .await
        .expect("stop");
    assert_eq!(
        (exit.exit_code, exit.signal),
        (7, None),
        "{}",
        host.logs(&id)
    );
}

#[tokio::test]
async fn memory_hog_is_oom_killed() {
    let host = Host::new();
    let id = new_id();
    let mut spec = host.spec(
        &id,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=2"],
    );
    spec.memory_mb = 32;
    host.rt.prepare(&spec).await.expect("prepare");
    host.rt.start(&id).await.expect("start");
    let exit = tokio::time::timeout(Duration::from_secs(20), host.rt.wait_exit(&id))
        .await
        .expect("exit within 20s")
        .expect("wait_exit");
    assert!(exit.oom_killed, "{exit:?} {}", host.logs(&id));
    assert_eq!(exit.signal, Some(9), "{exit:?}");
}

#[tokio::test]
async fn machine_outlives_a_killed_shim_and_the_lost_exit_is_recorded() {
    let host = Host::new();
    let id = new_id();
    host.rt
        .prepare(&host.spec(&id, &["sleep", "1000"]))
        .await
        .expect("prepare");
    host.rt.start(&id).await.expect("start");
    let shim_pid: i32 = std::fs::read_to_string(host.machine_dir(&id).join("shim.pid"))
        .expect("shim pid")
        .trim()
        .parse()
        .expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim_pid),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill shim");
    crate::support::wait_until(Duration::from_secs(5), "the shim to die", || async {
        let cmdline = std::fs::read(format!("/proc/{shim_pid}/cmdline")).unwrap_or_default();
        cmdline.is_empty().then_some(())
    })
    .await;
    assert!(
        matches!(
            host.rt.status(&id).await.expect("status"),
            Status::Running { .. }
        ),
        "runc still runs the container"
    );
    let exit = host
        .rt
        .stop(&id, libc::SIGKILL, Duration::from_secs(5))
        .await
        .expect("stop");
    assert_eq!(exit.exit_code, 255, "{exit:?}");
    assert_eq!(
        host.rt.status(&id).await.expect("status"),
        Status::Exited(exit)
    );
    host.rt
        .start(&id)
        .await
        .expect("start again after a lost run");
    assert!(matches!(
        host.rt.status(&id).await.expect("status"),
        Status::Running { .. }
    ));
}

/// Resumes a SIGSTOPped process when dropped (so a failed assertion leaves no frozen shim).
struct Frozen(nix::unistd::Pid);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::SIGCONT);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_right_after_the_process_died_returns_its_exit() {
    let host = Host::new();
    let id = new_id();
    host.rt
        .prepare(&host.spec(&id, &["sleep", "1000"]))
        .await
        .expect("prepare");
    host.rt.start(&id).await.expect("start");
    let Status::Running { pid } = host.rt.status(&id).await.expect("status") else {
        panic!("machine should run");
    };
    let read_pid = |name: &str| -> nix::unistd::Pid {
        let text = std::fs::read_to_string(host.machine_dir(&id).join(name)).expect(name);
        nix::unistd::Pid::from_raw(text.trim().parse().expect("pid"))
    };
    assert_eq!(read_pid("container.pid").as_raw().unsigned_abs(), pid);
    // Freeze the shim so the window between the process dying and the exit being recorded
    // (where runc no longer knows the container as running) stays open.
    let shim = read_pid("shim.pid");
    nix::sys::signal::kill(shim, nix::sys::signal::SIGSTOP).expect("stop the shim");
    let frozen = Frozen(shim);
    nix::sys::signal::kill(read_pid("container.pid"), nix::sys::signal::SIGKILL)
        .expect("kill the machine's process");
    crate::support::wait_until(Duration::from_secs(5), "the process to die", || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // A zombie (the frozen shim cannot reap it) or gone.
        let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
        matches!(state, None | Some('Z' | 'X')).then_some(())
    })
    .await;
    assert!(
        matches!(
            host.rt.status(&id).await.expect("status"),
            Status::Running { .. }
        ),
        "the shim is alive and has not recorded the exit"
    );
    let rt_cfg = host.cfg.clone();
    let stop_id = id.clone();
    let mut stop = tokio::spawn(async move {
        let rt = godwit_runtime::OciRuntime::new(rt_cfg).expect("runtime");
        rt.stop(&stop_id, libc::SIGTERM, Duration::from_secs(20))
            .await
    });
    // runc refuses to signal the dead container: stop must wait for the exit, not fail.
    let early = tokio::time::timeout(Duration::from_millis(500), &mut stop).await;
    assert!(
        early.is_err(),
        "stop returned before the exit was recorded: {early:?}"
    );
    drop(frozen);
    let exit = tokio::time::timeout(Duration::from_secs(20), stop)
        .await
        .expect("stop within 20s")
        .expect("stop task")
        .expect("stop");
    assert_eq!(
        (exit.exit_code, exit.signal),
        (137, Some(9)),
        "{}",
        host.logs(&id)
    );
    assert_eq!(
        host.rt.status(&id).await.expect("status"),
        Status::Exited(exit)
    );
}
