//! Graceful shutdown: on cancel the proxy stops accepting, requests in flight finish within
//! the grace period, and connections still open after it are cut.

use std::time::Duration;

use anyhow::{Context as _, bail};
use godwit_types::MachineState;
use tokio::net::TcpStream;

use crate::support::{Backend, DEADLINE, Harness, HarnessBuilder, host, record, wait_until};

/// Starts a proxy with `grace`, holds one request at the machine, and cancels.
async fn cancel_with_a_held_request(
    grace: Duration,
) -> anyhow::Result<(
    Backend,
    Harness,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
)> {
    let backend = Backend::start("a").await;
    let harness = HarnessBuilder::new()
        .record(record("m-a", "hello", backend.addr, MachineState::Started))
        .config(move |cfg| cfg.shutdown_grace = grace)
        .start()
        .await?;
    let (client, url) = (harness.client(), harness.url("/hold"));
    let held =
        tokio::spawn(async move { client.get(url).header("host", host("hello")).send().await });
    wait_until("the request to be held", || backend.in_flight() == 1).await?;
    harness.cancel.cancel();
    // The listener closes.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while TcpStream::connect(harness.http).await.is_ok() {
        if tokio::time::Instant::now() >= deadline {
            bail!("the proxy still accepts connections after cancel");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((backend, harness, held))
}

#[tokio::test]
async fn a_request_in_flight_at_cancel_still_completes() -> anyhow::Result<()> {
    let (backend, mut harness, held) = cancel_with_a_held_request(Duration::from_secs(15)).await?;
    assert!(
        !harness.proxy.is_finished(),
        "the proxy ended with a request in flight"
    );
    backend.release(1);
    let response = held.await??;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&response.text().await?)?;
    assert_eq!(body["name"], "a");
    // With nothing in flight, the proxy ends.
    tokio::time::timeout(DEADLINE, &mut harness.proxy)
        .await
        .context("the proxy did not end after draining")???;
    Ok(())
}

#[tokio::test]
async fn connections_still_open_after_the_grace_period_are_cut() -> anyhow::Result<()> {
    let (backend, mut harness, held) =
        cancel_with_a_held_request(Duration::from_millis(300)).await?;
    tokio::time::timeout(DEADLINE, &mut harness.proxy)
        .await
        .context("the proxy did not end after the grace period")???;
    let outcome = tokio::time::timeout(DEADLINE, held)
        .await
        .context("the held request was not cut")??;
    assert!(outcome.is_err(), "the held request got {outcome:?}");
    backend.release(1);
    Ok(())
}
