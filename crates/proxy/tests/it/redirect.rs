//! `force_https`: plain HTTP on a port that asks for it gets a 301 to HTTPS.

use godwit_types::MachineState;

use crate::support::{Backend, HarnessBuilder, host, record};

#[tokio::test]
async fn force_https_redirects_plain_http_with_301() -> anyhow::Result<()> {
    let backend = Backend::start("a").await;
    let mut forced = record("m-forced", "forced", backend.addr, MachineState::Started);
    forced.services[0].ports[0].force_https = Some(true);
    let plain = record("m-plain", "plain", backend.addr, MachineState::Started);
    let harness = HarnessBuilder::new()
        .record(forced)
        .record(plain)
        .start()
        .await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    let request = client
        .get(harness.url("/some/path?q=1"))
        .header("host", format!("{}:8080", host("forced")));
    let reply = harness.send(request).await?;
    assert_eq!(reply.status, 301, "{reply:?}");
    assert_eq!(
        reply.headers.get("location").map(String::as_str),
        Some("https://forced.apps.godwit.test/some/path?q=1")
    );
    assert_eq!(backend.served(), 0, "a redirect never reaches the machine");

    // An app without force_https is served over plain HTTP.
    let reply = harness.get("plain", "/").await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.served_by(), "a");
    Ok(())
}
