//! Soft and hard concurrency limits.

use std::sync::atomic::Ordering;
use std::time::Duration;

use godwit_types::MachineState;

use crate::support::{Backend, HarnessBuilder, host, limits, record, wait_until};

#[tokio::test]
async fn least_loaded_below_soft_limits_then_over_them() -> anyhow::Result<()> {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let mut record_a = record("m-a", "hello", a.addr, MachineState::Started);
    record_a.services[0].concurrency = limits("requests", 3, Some(10));
    let mut record_b = record("m-b", "hello", b.addr, MachineState::Started);
    record_b.services[0].concurrency = limits("requests", 1, Some(10));
    let harness = HarnessBuilder::new()
        .record(record_a)
        .record(record_b)
        .start()
        .await?;

    // Requests are sent one at a time, each once the previous one is held at its backend,
    // so the proxy sees the loads grow: a takes 3 (its soft limit), b takes 1.
    let mut held = Vec::new();
    for n in 1..=4 {
        let (client, url) = (harness.client(), harness.url("/hold"));
        held.push(tokio::spawn(async move {
            client
                .get(url)
                .header("host", "hello.apps.godwit.test")
                .send()
                .await
        }));
        wait_until("the request to be held", || {
            a.in_flight() + b.in_flight() == n
        })
        .await?;
    }
    assert_eq!((a.in_flight(), b.in_flight()), (3, 1));
    // Over every soft limit: the least loaded (b) takes the next one.
    let (client, url) = (harness.client(), harness.url("/hold"));
    held.push(tokio::spawn(async move {
        client
            .get(url)
            .header("host", "hello.apps.godwit.test")
            .send()
            .await
    }));
    wait_until("the fifth request", || a.in_flight() + b.in_flight() == 5).await?;
    assert_eq!((a.in_flight(), b.in_flight()), (3, 2));
    a.release(3);
    b.release(2);
    for request in held {
        assert_eq!(request.await??.status(), 200);
    }
    Ok(())
}

#[tokio::test]
async fn never_above_the_hard_limit_queue_then_503() -> anyhow::Result<()> {
    let backend = Backend::start("only").await;
    let mut only = record("m-only", "hello", backend.addr, MachineState::Started);
    only.services[0].concurrency = limits("connections", 1, Some(2));
    let harness = HarnessBuilder::new()
        .record(only)
        .config(|cfg| cfg.queue_timeout = Duration::from_millis(800))
        .start()
        .await?;

    let mut held = Vec::new();
    for _ in 0..2 {
        let (client, url) = (harness.client(), harness.url("/hold"));
        held.push(tokio::spawn(async move {
            client
                .get(url)
                .header("host", "hello.apps.godwit.test")
                .send()
                .await
        }));
    }
    wait_until("two held requests", || backend.in_flight() == 2).await?;

    // A third request waits for the queue timeout, then gets a 503.
    let started = tokio::time::Instant::now();
    let full = harness.get("hello", "/").await?;
    assert_eq!(full.status, 503, "{full:?}");
    assert_eq!(
        full.headers.get("fly-proxy-error").map(String::as_str),
        Some("PL01")
    );
    assert!(started.elapsed() >= Duration::from_millis(800));

    // A queued request goes through once a held one ends.
    let (client, url) = (harness.client(), harness.url("/"));
    let queued = tokio::spawn(async move {
        client
            .get(url)
            .header("host", "hello.apps.godwit.test")
            .send()
            .await
    });
    backend.release(1);
    assert_eq!(queued.await??.status(), 200);
    backend.release(1);
    for request in held {
        assert_eq!(request.await??.status(), 200);
    }
    assert_eq!(backend.stats.max_in_flight.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn one_busy_app_cannot_take_every_connection() -> anyhow::Result<()> {
    let busy = Backend::start("busy").await;
    let calm = Backend::start("calm").await;
    let mut busy_record = record("m-busy", "busy", busy.addr, MachineState::Started);
    busy_record.services[0].concurrency = limits("requests", 100, None);
    let harness = HarnessBuilder::new()
        .record(busy_record)
        .record(record("m-calm", "calm", calm.addr, MachineState::Started))
        .config(|cfg| cfg.max_connections_per_app = 2)
        .start()
        .await?;

    let mut held = Vec::new();
    for _ in 0..2 {
        let (client, url) = (harness.client(), harness.url("/hold"));
        held.push(tokio::spawn(async move {
            client.get(url).header("host", host("busy")).send().await
        }));
    }
    wait_until("two held requests", || busy.in_flight() == 2).await?;

    // The busy app is at its limit: refused at once, without waiting for a machine.
    let refused = harness.get("busy", "/").await?;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(
        refused.headers.get("fly-proxy-error").map(String::as_str),
        Some("PL02")
    );
    // Another app is not affected.
    let other = harness.get("calm", "/").await?;
    assert_eq!(other.status, 200, "{other:?}");
    assert_eq!(other.served_by(), "calm");

    busy.release(2);
    for request in held {
        assert_eq!(request.await??.status(), 200);
    }
    // Once the held requests are done, the app has room again.
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    loop {
        let reply = harness.get("busy", "/").await?;
        if reply.status == 200 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the app stayed at its limit: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(busy.stats.max_in_flight.load(Ordering::SeqCst), 2);
    Ok(())
}
