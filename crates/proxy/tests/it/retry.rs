//! A stale replica (machines that no longer listen) is not a user error.

use godwit_types::MachineState;

use crate::support::{Backend, HarnessBuilder, dead_addr, record};

#[tokio::test]
async fn refused_connections_go_to_the_next_machine() -> anyhow::Result<()> {
    let live = Backend::start("live").await;
    let harness = HarnessBuilder::new()
        .record(record(
            "m-dead1",
            "hello",
            dead_addr().await,
            MachineState::Started,
        ))
        .record(record("m-live", "hello", live.addr, MachineState::Started))
        .record(record(
            "m-dead2",
            "hello",
            dead_addr().await,
            MachineState::Started,
        ))
        .record(record(
            "m-gone1",
            "gone",
            dead_addr().await,
            MachineState::Started,
        ))
        .record(record(
            "m-gone2",
            "gone",
            dead_addr().await,
            MachineState::Started,
        ))
        .start()
        .await?;

    let mut requests = Vec::new();
    for _ in 0..100 {
        let (client, url) = (harness.client(), harness.url("/"));
        requests.push(tokio::spawn(async move {
            client
                .post(url)
                .header("host", "hello.apps.godwit.test")
                .body("keep me")
                .send()
                .await?
                .text()
                .await
        }));
    }
    for request in requests {
        let body: serde_json::Value = serde_json::from_str(&request.await??)?;
        assert_eq!(body["name"], "live");
        assert_eq!(body["body"], "keep me", "the body survives the retry");
    }
    assert_eq!(live.served(), 100);

    let gone = harness.get("gone", "/").await?;
    assert_eq!(gone.status, 503, "{gone:?}");
    assert_eq!(
        gone.headers.get("fly-proxy-error").map(String::as_str),
        Some("PR03")
    );
    Ok(())
}
