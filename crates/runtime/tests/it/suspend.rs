//! Pause/resume (cgroup freezer): a paused machine stops counting and answering, a resumed
//! one carries on where it was; stop and destroy of a paused machine work.

use std::net::Ipv4Addr;
use std::time::Duration;

use godwit_runtime::{MachineRuntime, RuntimeError, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::support::{Host, http_get, new_id, wait_until};

/// Counts into `/count` every 50 ms, serves `/www` on 8080, exits 7 on SIGTERM.
const COUNTER_AND_HTTPD: &str = "trap 'exit 7' TERM; \
     (i=0; while true; do i=$((i+1)); echo $i > /count.tmp; cat /count.tmp > /count; sleep 0.05; done) & \
     httpd -f -p 8080 -h /www & \
     while true; do sleep 1 & wait $!; done";

#[tokio::test]
async fn suspend_freezes_the_machine_and_resume_thaws_it() {
    let host = Host::new();
    let id = new_id();
    let spec = host.spec(&id, &["sh", "-c", COUNTER_AND_HTTPD]);
    let guest = spec.network.guest_ip;
    let count_file = host.machine_dir(&id).join("rootfs/count");
    let count = || {
        let file = count_file.clone();
        async move {
            std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        }
    };
    host.rt.prepare(&spec).await.expect("prepare");
    host.rt.start(&id).await.expect("start");
    wait_until(Duration::from_secs(10), "httpd to answer", || {
        http_get(guest, 8080)
    })
    .await;
    wait_until(Duration::from_secs(10), "the counter to count", || async {
        count().await.filter(|n| *n > 1)
    })
    .await;

    host.rt.pause(&id).await.expect("pause");
    host.rt.pause(&id).await.expect("pause again is Ok");
    let Status::Paused { pid } = host.rt.status(&id).await.expect("status") else {
        panic!("a paused machine reports Paused");
    };
    let frozen_at = count().await.expect("count while frozen");
    // The kernel accepts the connection (listen backlog) but nothing answers: the wait for a
    // reply is also the window in which a running counter would have moved 20 times.
    let reply = reply_within(guest, 8080, Duration::from_secs(1)).await;
    assert_eq!(reply, Err("no reply"), "a frozen machine must not answer");
    assert_eq!(
        count().await,
        Some(frozen_at),
        "the counter moved while frozen"
    );
    let exec = host
        .rt
        .exec(&id, &["true".to_owned()], Duration::from_secs(2))
        .await;
    assert!(
        matches!(exec, Err(RuntimeError::NotRunning { .. })),
        "exec in a paused machine: {exec:?}"
    );

    let resumed = Instant::now();
    host.rt.resume(&id).await.expect("resume");
    host.rt.resume(&id).await.expect("resume again is Ok");
    let response = wait_until(Duration::from_secs(10), "httpd to answer again", || {
        http_get(guest, 8080)
    })
    .await;
    let latency = resumed.elapsed();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    #[allow(clippy::print_stderr)]
    {
        eprintln!("resume to first http reply: {latency:?}");
    }
    assert_eq!(
        host.rt.status(&id).await.expect("status"),
        Status::Running { pid },
        "the same process runs on"
    );
    wait_until(
        Duration::from_secs(10),
        "the counter to move on",
        || async { count().await.filter(|n| *n > frozen_at) },
    )
    .await;

    // start on a paused machine resumes it.
    host.rt.pause(&id).await.expect("pause for start");
    host.rt.start(&id).await.expect("start resumes");
    assert_eq!(
        host.rt.status(&id).await.expect("status"),
        Status::Running { pid }
    );

    // stop of a paused machine thaws it, so the stop signal is handled (exit 7, no SIGKILL).
    host.rt.pause(&id).await.expect("pause before stop");
    let exit = host
        .rt
        .stop(&id, libc::SIGTERM, Duration::from_secs(10))
        .await
        .expect("stop paused machine");
    assert_eq!(
        (exit.exit_code, exit.signal),
        (7, None),
        "{}",
        host.logs(&id)
    );
    let paused = host.rt.pause(&id).await;
    assert!(
        matches!(paused, Err(RuntimeError::NotRunning { .. })),
        "pause of a stopped machine: {paused:?}"
    );
}

#[tokio::test]
async fn destroy_of_a_suspended_machine_removes_everything() {
    let host = Host::new();
    let id = new_id();
    let spec = host.spec(&id, &["sh", "-c", COUNTER_AND_HTTPD]);
    host.rt.prepare(&spec).await.expect("prepare");
    host.rt.start(&id).await.expect("start");
    host.rt.pause(&id).await.expect("pause");
    assert!(matches!(
        host.rt.status(&id).await.expect("status"),
        Status::Paused { .. }
    ));
    tokio::time::timeout(Duration::from_secs(20), host.rt.destroy(&id))
        .await
        .expect("destroy within 20s")
        .expect("destroy");
    assert_eq!(host.rt.status(&id).await.expect("status"), Status::Absent);
    assert!(
        !host.cgroup_dir("freezer", &id).exists(),
        "freezer cgroup left"
    );
    assert!(
        !host.cgroup_dir("memory", &id).exists(),
        "memory cgroup left"
    );
    assert!(host.rt.list().await.expect("list").is_empty());
}

/// Sends one HTTP/1.0 GET and reads the reply for up to `timeout`.
async fn reply_within(ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<String, &'static str> {
    let connect = tokio::net::TcpStream::connect((ip, port));
    let mut stream = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .map_err(|_| "connect timed out")?
        .map_err(|_| "connect failed")?;
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .map_err(|_| "write failed")?;
    let mut buf = vec![0u8; 1024];
    match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
        Err(_) => Err("no reply"),
        Ok(Ok(n)) => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Ok(Err(_)) => Err("read failed"),
    }
}
