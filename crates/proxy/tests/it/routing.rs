//! Routing by Host, what is routable, error answers and the headers added.

use godwit_types::MachineState;

use crate::support::{Backend, HarnessBuilder, REGION, dead_addr, host, port, record};

#[tokio::test]
async fn routes_by_host_to_started_uncordoned_machines_on_the_port() -> anyhow::Result<()> {
    let hello = Backend::start("hello-1").await;
    let other = Backend::start("other-1").await;
    let cordoned = Backend::start("hello-cordoned").await;
    let wrong_port = Backend::start("hello-8080").await;
    let mut cordoned_record = record("m-cordoned", "hello", cordoned.addr, MachineState::Started);
    cordoned_record.cordoned = true;
    let mut wrong_port_record = record("m-8080", "hello", wrong_port.addr, MachineState::Started);
    wrong_port_record.services[0].ports = vec![port(8080)];
    let mut stopped = record(
        "m-stopped",
        "hello",
        dead_addr().await,
        MachineState::Stopped,
    );
    stopped.services[0].autostart = Some(false);
    let mut only_stopped = record(
        "m-lonely",
        "sleepy",
        dead_addr().await,
        MachineState::Stopped,
    );
    only_stopped.services[0].autostart = Some(false);
    let harness = HarnessBuilder::new()
        .record(record(
            "m-hello",
            "hello",
            hello.addr,
            MachineState::Started,
        ))
        .record(record(
            "m-other",
            "other",
            other.addr,
            MachineState::Started,
        ))
        .record(cordoned_record)
        .record(wrong_port_record)
        .record(stopped)
        .record(only_stopped)
        .start()
        .await?;

    for _ in 0..20 {
        let reply = harness.get("hello", "/some/path?q=1").await?;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.served_by(), "hello-1");
        assert_eq!(reply.echo()["path"], "/some/path");
    }
    assert_eq!(harness.get("other", "/").await?.served_by(), "other-1");
    assert_eq!(harness.get("OTHER", "/").await?.served_by(), "other-1");
    assert_eq!(cordoned.served() + wrong_port.served(), 0);

    let unknown = harness.get("nope", "/").await?;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(unknown.body.contains("unknown app"), "{unknown:?}");
    let foreign = harness
        .send(
            harness
                .client()
                .get(harness.url("/"))
                .header("host", "example.com"),
        )
        .await?;
    assert_eq!(foreign.status, 404, "{foreign:?}");

    let none = harness.get("sleepy", "/").await?;
    assert_eq!(none.status, 503, "{none:?}");
    assert_eq!(
        none.headers.get("fly-proxy-error").map(String::as_str),
        Some("PR01")
    );
    assert_eq!(
        none.headers.get("godwit-proxy-error").map(String::as_str),
        Some("PR01")
    );
    assert!(none.body.starts_with("PR01"), "{none:?}");
    Ok(())
}

#[tokio::test]
async fn machine_and_client_get_the_proxy_headers() -> anyhow::Result<()> {
    let backend = Backend::start("hello-1").await;
    let harness = HarnessBuilder::new()
        .record(record(
            "m-hello",
            "hello",
            backend.addr,
            MachineState::Started,
        ))
        .start()
        .await?;
    let reply = harness
        .send(
            harness
                .client()
                .post(harness.url("/echo"))
                .header("host", host("hello"))
                .header("x-forwarded-for", "203.0.113.9")
                .header("fly-client-ip", "6.6.6.6")
                .body("payload"),
        )
        .await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    let echo = reply.echo();
    let seen = &echo["headers"];
    assert_eq!(echo["body"], "payload");
    assert_eq!(echo["method"], "POST");
    assert_eq!(seen["host"], host("hello"));
    assert_eq!(seen["fly-client-ip"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-ssl"], "off");
    assert_eq!(seen["x-forwarded-port"], "80");
    assert_eq!(seen["fly-forwarded-port"], "80");
    assert_eq!(seen["fly-region"], REGION);
    assert_eq!(seen["via"], "1.1 godwit");
    let request_id = seen["fly-request-id"].as_str().expect("a request id");
    assert!(request_id.ends_with("-ams"), "{request_id}");
    assert_eq!(
        reply.headers.get("fly-request-id").map(String::as_str),
        Some(request_id)
    );
    assert_eq!(
        reply.headers.get("via").map(String::as_str),
        Some("1.1 godwit")
    );

    let again = harness.get("hello", "/").await?;
    assert_ne!(
        again.echo()["headers"]["fly-request-id"],
        request_id,
        "ids are unique"
    );
    Ok(())
}
