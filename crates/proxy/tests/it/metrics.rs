//! Prometheus metrics on their own listener: request counts by status class, latency,
//! in-flight gauges per app and machine, retries.

use std::net::SocketAddr;

use godwit_types::MachineState;
use tokio::net::TcpListener;

use crate::backend::random_loopback;
use crate::support::{Backend, HarnessBuilder, dead_addr, host, record, wait_until};

/// A free address on a fresh loopback IP (bound, then closed).
async fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::new(random_loopback(), 0)).await?;
    Ok(listener.local_addr()?)
}

async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 200,
        "metrics answered {}",
        response.status()
    );
    Ok(response.text().await?)
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[tokio::test]
async fn metrics_count_requests_in_flight_and_retries() -> anyhow::Result<()> {
    let backend = Backend::start("a").await;
    let metrics_addr = free_addr().await?;
    let harness = HarnessBuilder::new()
        .record(record("m-a", "hello", backend.addr, MachineState::Started))
        .record(record(
            "m-dead",
            "flaky",
            dead_addr().await,
            MachineState::Started,
        ))
        .config(move |cfg| cfg.metrics_listen = Some(metrics_addr))
        .start()
        .await?;

    for _ in 0..2 {
        assert_eq!(harness.get("hello", "/").await?.status, 200);
    }
    // The only machine of `flaky` refuses: one retry, then a 503.
    let flaky = harness.get("flaky", "/").await?;
    assert_eq!(flaky.status, 503, "{flaky:?}");

    let (client, url) = (harness.client(), harness.url("/hold"));
    let held =
        tokio::spawn(async move { client.get(url).header("host", host("hello")).send().await });
    wait_until("the request to be held", || backend.in_flight() == 1).await?;

    let text = scrape(metrics_addr).await?;
    for line in [
        r#"godwit_proxy_requests_total{app="hello",status="2xx"} 2"#,
        r#"godwit_proxy_requests_total{app="flaky",status="5xx"} 1"#,
        r#"godwit_proxy_request_duration_seconds_count{app="hello"} 2"#,
        r#"godwit_proxy_retries_total{app="flaky"} 1"#,
        r#"godwit_proxy_app_in_flight{app="hello"} 1"#,
        r#"godwit_proxy_machine_in_flight{machine="m-a"} 1"#,
    ] {
        assert!(has_line(&text, line), "no {line:?} in:\n{text}");
    }

    backend.release(1);
    assert_eq!(held.await??.status(), 200);
    let text = scrape(metrics_addr).await?;
    assert!(
        has_line(
            &text,
            r#"godwit_proxy_requests_total{app="hello",status="2xx"} 3"#
        ),
        "{text}"
    );
    Ok(())
}
