//! The client's routing headers: `fly-prefer-region`, `fly-force-region`,
//! `fly-prefer-instance-id` and `fly-force-instance-id`, over HTTP/1.1 (reqwest, where the
//! fast path hands such a request to hyper) and h2c (curl), and plain requests staying on
//! the fast path.

use anyhow::Context as _;
use godwit_types::{MachineRecord, MachineState};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::fastpath::raw::{Scripted, read_response};
use crate::support::{
    Backend, Harness, HarnessBuilder, Reply, dead_addr, host, limits, record, wait_until,
};

/// One backend per region of app `web`: ams (the proxy's), iad and ord; iad takes one
/// request at a time.
struct Web {
    harness: Harness,
    ams: Backend,
    iad: Backend,
    ord: Backend,
}

async fn start_web(extra: Vec<MachineRecord>) -> anyhow::Result<Web> {
    let (ams, iad, ord) = (
        Backend::start("ams").await,
        Backend::start("iad").await,
        Backend::start("ord").await,
    );
    let mut builder = HarnessBuilder::new()
        .record(in_region("m-ams", ams.addr, "ams"))
        .record(in_region("m-iad", iad.addr, "iad"))
        .record(in_region("m-ord", ord.addr, "ord"));
    for record in extra {
        builder = builder.record(record);
    }
    let harness = builder.config(|cfg| cfg.max_attempts = 3).start().await?;
    Ok(Web {
        harness,
        ams,
        iad,
        ord,
    })
}

fn in_region(id: &str, addr: std::net::SocketAddr, region: &str) -> MachineRecord {
    let mut record = record(id, "web", addr, MachineState::Started);
    record.region = region.to_owned();
    if region == "iad" {
        record.services[0].concurrency = limits("requests", 1, Some(1));
    }
    record
}

/// GET `path` of `app` over HTTP/1.1 with `headers`.
pub(crate) async fn get_with(
    harness: &Harness,
    app: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let mut request = harness
        .client()
        .get(harness.url(path))
        .header("host", host(app));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    harness.send(request).await
}

/// GET `path` of `app` over h2c (prior knowledge) with curl, so the hyper path serves it.
pub(crate) async fn h2c_with(
    harness: &Harness,
    app: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let url = format!("http://{}:{}{path}", host(app), harness.http.port());
    let resolve = format!(
        "{}:{}:{}",
        host(app),
        harness.http.port(),
        harness.http.ip()
    );
    let mut command = tokio::process::Command::new("curl");
    command.args(["-sS", "-i", "--max-time", "20", "--http2-prior-knowledge"]);
    command.args(["--resolve", &resolve]);
    for (name, value) in headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    let output = command
        .arg(&url)
        .output()
        .await
        .context("run curl (apt-get install -y curl)")?;
    anyhow::ensure!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout)?;
    let (head, body) = text.split_once("\r\n\r\n").context("a response head")?;
    let mut lines = head.lines();
    let status_line = lines.next().context("a status line")?;
    anyhow::ensure!(status_line.starts_with("HTTP/2 "), "{status_line}");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .context("a status")?
        .parse()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}

#[tokio::test]
async fn prefer_region_goes_first_in_order_then_to_the_nearest() -> anyhow::Result<()> {
    let web = start_web(Vec::new()).await?;
    let harness = &web.harness;
    for _ in 0..3 {
        let reply = get_with(harness, "web", "/", &[("fly-prefer-region", "iad,ord")]).await?;
        assert_eq!(reply.served_by(), "iad", "{reply:?}");
        assert_eq!(
            reply.echo()["headers"]["fly-prefer-region"],
            "iad,ord",
            "the header goes on to the machine"
        );
        let reply = h2c_with(harness, "web", "/", &[("fly-prefer-region", "ORD, iad")]).await?;
        assert_eq!(reply.served_by(), "ord", "{reply:?}");
    }
    // No machine in syd: the nearest (the proxy's own region) takes it.
    let reply = get_with(harness, "web", "/", &[("fly-prefer-region", "syd")]).await?;
    assert_eq!(reply.served_by(), "ams", "{reply:?}");
    // An alias: North America's nearest by the order of the list.
    let reply = get_with(harness, "web", "/", &[("fly-prefer-region", "sa,na")]).await?;
    assert!(
        ["iad", "ord"].contains(&reply.served_by().as_str()),
        "{reply:?}"
    );

    // iad full (hard limit 1): the next preferred region, then the nearest.
    let (client, url) = (harness.client(), harness.url("/hold"));
    let held = tokio::spawn(async move {
        client
            .get(url)
            .header("host", host("web"))
            .header("fly-prefer-region", "iad")
            .send()
            .await
    });
    wait_until("iad to hold a request", || web.iad.in_flight() == 1).await?;
    let reply = get_with(harness, "web", "/", &[("fly-prefer-region", "iad,ord")]).await?;
    assert_eq!(reply.served_by(), "ord", "{reply:?}");
    let reply = get_with(harness, "web", "/", &[("fly-prefer-region", "iad")]).await?;
    assert_eq!(reply.served_by(), "ams", "{reply:?}");
    web.iad.release(1);
    assert_eq!(held.await??.status(), 200);
    let reply = get_with(harness, "web", "/", &[("fly-prefer-region", "")]).await?;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(
        reply.body.starts_with("fly-prefer-region names no region"),
        "{reply:?}"
    );
    Ok(())
}

#[tokio::test]
async fn force_region_keeps_to_its_regions_or_fails_clearly() -> anyhow::Result<()> {
    let web = start_web(Vec::new()).await?;
    let harness = &web.harness;
    for _ in 0..3 {
        let reply = get_with(harness, "web", "/", &[("fly-force-region", "ord")]).await?;
        assert_eq!(reply.served_by(), "ord", "{reply:?}");
        let reply = h2c_with(harness, "web", "/", &[("fly-force-region", "iad")]).await?;
        assert_eq!(reply.served_by(), "iad", "{reply:?}");
    }
    for reply in [
        get_with(harness, "web", "/", &[("fly-force-region", "syd")]).await?,
        h2c_with(harness, "web", "/", &[("fly-force-region", "syd,sa")]).await?,
    ] {
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.headers["fly-proxy-error"], "PR01", "{reply:?}");
        assert!(
            reply
                .body
                .starts_with("PR01: app web has no machine in syd")
                && reply.body.contains("(fly-force-region)"),
            "{reply:?}"
        );
    }
    let both = [
        ("fly-force-region", "iad"),
        ("fly-force-instance-id", "m-iad"),
    ];
    let reply = get_with(harness, "web", "/", &both).await?;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("send one of them"), "{reply:?}");
    assert_eq!(
        web.ams.served(),
        0,
        "nothing fell back to the nearest region"
    );
    Ok(())
}

#[tokio::test]
async fn prefer_instance_is_used_when_it_can_serve_else_the_next_is_told() -> anyhow::Result<()> {
    let mut stopped = record("m-off", "web", dead_addr().await, MachineState::Stopped);
    stopped.services[0].autostart = Some(false);
    let web = start_web(vec![stopped]).await?;
    let harness = &web.harness;
    for _ in 0..3 {
        let reply = get_with(harness, "web", "/", &[("fly-prefer-instance-id", "m-ord")]).await?;
        assert_eq!(reply.served_by(), "ord", "{reply:?}");
        let seen = &reply.echo()["headers"];
        assert!(
            seen.get("fly-preferred-instance-unavailable").is_none(),
            "{reply:?}"
        );
        assert_eq!(seen["fly-prefer-instance-id"], "m-ord");
    }
    for preferred in ["m-off", "m-gone"] {
        let headers = [("fly-prefer-instance-id", preferred)];
        for reply in [
            get_with(harness, "web", "/", &headers).await?,
            h2c_with(harness, "web", "/", &headers).await?,
        ] {
            assert_eq!(reply.served_by(), "ams", "the nearest instead: {reply:?}");
            assert_eq!(
                reply.echo()["headers"]["fly-preferred-instance-unavailable"],
                preferred
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn force_instance_goes_there_only_and_retries_it() -> anyhow::Result<()> {
    let dead = record("m-dead", "web", dead_addr().await, MachineState::Started);
    let web = start_web(vec![dead]).await?;
    let harness = &web.harness;
    for _ in 0..3 {
        let reply = get_with(harness, "web", "/", &[("fly-force-instance-id", "m-ord")]).await?;
        assert_eq!(reply.served_by(), "ord", "{reply:?}");
        let reply = h2c_with(harness, "web", "/", &[("fly-force-instance-id", "m-iad")]).await?;
        assert_eq!(reply.served_by(), "iad", "{reply:?}");
    }
    let reply = get_with(harness, "web", "/", &[("fly-force-instance-id", "m-gone")]).await?;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(reply.headers["fly-proxy-error"], "PR02", "{reply:?}");
    assert!(
        reply
            .body
            .starts_with("PR02: app web has no machine m-gone that can serve"),
        "{reply:?}"
    );
    // A machine that refuses connections: tried again (max_attempts), never another one.
    let before = web.ams.served() + web.iad.served() + web.ord.served();
    let reply = get_with(harness, "web", "/", &[("fly-force-instance-id", "m-dead")]).await?;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(reply.headers["fly-proxy-error"], "PC01", "{reply:?}");
    assert!(
        reply.body.contains("could not connect to machine m-dead"),
        "{reply:?}"
    );
    assert_eq!(
        web.ams.served() + web.iad.served() + web.ord.served(),
        before
    );
    Ok(())
}

#[tokio::test]
async fn only_requests_with_routing_headers_leave_the_fast_path() -> anyhow::Result<()> {
    let plain = Scripted::start("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned()).await;
    let harness = HarnessBuilder::new()
        .record(record(
            "m-plain",
            "plain",
            plain.addr,
            MachineState::Started,
        ))
        .start()
        .await?;
    let host = host("plain");
    let mut buf = Vec::new();
    let mut steered = TcpStream::connect(harness.http).await?;
    let request =
        format!("GET / HTTP/1.1\r\nhost: {host}\r\nfly-force-instance-id: m-plain\r\n\r\n");
    steered.write_all(request.as_bytes()).await?;
    let response = read_response(&mut steered, &mut buf).await?;
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, &b"ok"[..])
    );
    assert!(
        response.headers.contains_key("date"),
        "hyper answered it: {response:?}"
    );

    // A plain request on another connection stays on the fast path (no `Date`).
    let mut buf = Vec::new();
    let mut fast = TcpStream::connect(harness.http).await?;
    fast.write_all(format!("GET / HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes())
        .await?;
    let response = read_response(&mut fast, &mut buf).await?;
    assert_eq!(response.body, b"ok");
    assert!(!response.headers.contains_key("date"), "{response:?}");
    Ok(())
}
