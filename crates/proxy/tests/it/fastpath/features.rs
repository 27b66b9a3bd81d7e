//! What the hyper path does, the fast path does too: backhaul headers never pass either way,
//! access lines with the request id, replays (`app=`, `state=`) through the hyper path's
//! replay, and a machine on another host reached by handing the connection to hyper.
//!
//! hyper's server adds a `Date` header and the fast path does not: a response from a
//! [`Scripted`] machine without one came through the fast path.

use godwit_types::MachineState;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::raw::{RawResponse, Scripted, read_response};
use crate::access::Captured;
use crate::backhaul::World;
use crate::support::{Backend, Behaviour, HarnessBuilder, dead_addr, host, record, wait_until};

/// The response came through the fast path (see the module doc).
fn assert_fast(response: &RawResponse) {
    assert!(
        !response.headers.contains_key("date"),
        "hyper answered: {response:?}"
    );
}

#[tokio::test]
async fn backhaul_headers_never_pass_the_fast_path() -> anyhow::Result<()> {
    let backend = Backend::start("a").await;
    let leaky = Scripted::start(
        "HTTP/1.1 200 OK\r\ngodwit-load: 3/4\r\nGodwit-Try-Elsewhere: 1\r\nx-app: 1\r\n\
         content-length: 2\r\n\r\nok"
            .to_owned(),
    )
    .await;
    let harness = HarnessBuilder::new()
        .record(record("m-a", "hello", backend.addr, MachineState::Started))
        .record(record(
            "m-leaky",
            "leaky",
            leaky.addr,
            MachineState::Started,
        ))
        .start()
        .await?;
    let mut stream = TcpStream::connect(harness.http).await?;
    let mut buf = Vec::new();
    let request = format!(
        "GET /spoof HTTP/1.1\r\nhost: {}\r\ngodwit-client-ip: 6.6.6.6\r\nGodwit-Machine: m-x\r\n\
         godwit-edge-region: evil\r\ngodwit-backhaul-secret: guess\r\nfly-client-ip: 6.6.6.6\r\n\
         x-kept: 1\r\n\r\n",
        host("hello")
    );
    stream.write_all(request.as_bytes()).await?;
    let echo = read_response(&mut stream, &mut buf).await?.echo()?;
    let headers = echo["headers"].as_object().expect("echoed headers");
    let leaked: Vec<&String> = headers
        .keys()
        .filter(|k| k.starts_with("godwit-"))
        .collect();
    assert!(
        leaked.is_empty(),
        "backhaul headers reached the machine: {echo}"
    );
    assert_eq!(headers["fly-client-ip"], "127.0.0.1", "{echo}");
    assert_eq!(headers["x-kept"], "1", "{echo}");

    // And none from a machine reaches the client, on the fast path or hyper's (HTTP/1.0).
    for version in ["1.1", "1.0"] {
        let request = format!("GET / HTTP/{version}\r\nhost: {}\r\n\r\n", host("leaky"));
        let mut stream = TcpStream::connect(harness.http).await?;
        stream.write_all(request.as_bytes()).await?;
        let response = read_response(&mut stream, &mut Vec::new()).await?;
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"ok"[..])
        );
        assert_eq!(response.headers.get("x-app").map(String::as_str), Some("1"));
        let leaked: Vec<&String> = response
            .headers
            .keys()
            .filter(|k| k.starts_with("godwit-"))
            .collect();
        assert!(leaked.is_empty(), "HTTP/{version}: {response:?}");
        assert_eq!(version == "1.1", !response.headers.contains_key("date"));
    }
    Ok(())
}

// A current-thread runtime: the proxy's tasks run on this thread, under this subscriber.
#[tokio::test]
async fn fast_path_requests_get_access_lines_with_their_id() -> anyhow::Result<()> {
    let (logs, _default) = Captured::install();
    let shop =
        Scripted::start("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_owned()).await;
    let harness = HarnessBuilder::new()
        .record(record("m-shop", "shop", shop.addr, MachineState::Started))
        .config(|cfg| cfg.access_log = true)
        .start()
        .await?;
    let mut stream = TcpStream::connect(harness.http).await?;
    let request = format!(
        "GET /items/9?token=hunter2 HTTP/1.1\r\nhost: {}\r\n\r\n",
        host("shop")
    );
    stream.write_all(request.as_bytes()).await?;
    let response = read_response(&mut stream, &mut Vec::new()).await?;
    assert_eq!(response.status, 200);
    assert_fast(&response);
    let wanted = format!("request_id=\"{}\"", response.headers["fly-request-id"]);
    let access = |text: &str| {
        text.lines()
            .find(|l| l.contains(&wanted) && l.contains(" access "))
            .map(str::to_owned)
    };
    wait_until("the access line", || access(&logs.text()).is_some()).await?;
    let line = access(&logs.text()).expect("found above");
    for field in [
        " INFO ",
        "app=\"shop\"",
        "machine=\"m-shop\"",
        "region=\"ams\"",
        "method=GET",
        "path=/items/9 ",
        "status=200",
        "bytes=5",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
    assert!(!logs.text().contains("hunter2"), "{}", logs.text());
    Ok(())
}

#[tokio::test]
async fn a_replay_to_another_app_from_the_fast_path() -> anyhow::Result<()> {
    let shop = Backend::start("shop").await;
    let hopper = Backend::start_with("hopper", Behaviour::replaying("app=shop;state=s1")).await;
    let plain = Scripted::start("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned()).await;
    let harness = HarnessBuilder::new()
        .record(record("m-shop", "shop", shop.addr, MachineState::Started))
        .record(record(
            "m-hop",
            "hopper",
            hopper.addr,
            MachineState::Started,
        ))
        .record(record(
            "m-plain",
            "plain",
            plain.addr,
            MachineState::Started,
        ))
        .start()
        .await?;
    let mut stream = TcpStream::connect(harness.http).await?;
    let mut buf = Vec::new();
    let request = format!(
        "POST /write HTTP/1.1\r\nhost: {}\r\ntransfer-encoding: chunked\r\n\r\n\
         3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        host("hopper")
    );
    stream.write_all(request.as_bytes()).await?;
    let response = read_response(&mut stream, &mut buf).await?;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(!response.headers.contains_key("fly-replay"), "{response:?}");
    let echo = response.echo()?;
    assert_eq!(
        (
            echo["name"].as_str(),
            echo["path"].as_str(),
            echo["body"].as_str()
        ),
        (Some("shop"), Some("/write"), Some("abcde"))
    );
    assert_eq!(
        echo["headers"]["fly-request-id"],
        response.headers["fly-request-id"]
    );
    let source = echo["headers"]["fly-replay-src"]
        .as_str()
        .unwrap_or_default();
    assert!(
        source.starts_with("instance=m-hop;region=ams;t="),
        "{source}"
    );
    assert!(
        source.contains(";app=hopper") && source.ends_with(";state=s1"),
        "{source}"
    );
    assert_eq!((hopper.served(), shop.served()), (1, 1));
    // The connection is still the fast path's.
    let request = format!("GET / HTTP/1.1\r\nhost: {}\r\n\r\n", host("plain"));
    stream.write_all(request.as_bytes()).await?;
    let response = read_response(&mut stream, &mut buf).await?;
    assert_eq!(response.body, b"ok");
    assert_fast(&response);
    Ok(())
}

#[tokio::test]
async fn a_machine_on_another_host_is_reached_from_a_fast_path_connection() -> anyhow::Result<()> {
    let world = World::start().await?;
    let remote = Backend::start("on-b").await;
    let local =
        Scripted::start("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nlocal".to_owned()).await;
    let on_b = crate::backhaul::machine("m-b", remote.addr, "syd", "host-b", MachineState::Started);
    // The edge cannot reach the machine itself: only host-b's worker can.
    let mut unreachable = on_b.clone();
    unreachable.private_ip = dead_addr().await.ip().to_string();
    let mut on_a = record("m-local", "local", local.addr, MachineState::Started);
    on_a.host_id = "host-a".to_owned();
    let a = world
        .node("ams", "host-a", &[unreachable, on_a], true, |_| {})
        .await?;
    let _b = world.node("syd", "host-b", &[on_b], true, |_| {}).await?;

    // Pipelined: local (fast path), remote (hyper from here on), local again.
    let mut stream = TcpStream::connect(a.http).await?;
    let requests = format!(
        "GET /first HTTP/1.1\r\nhost: {local}\r\n\r\n\
         GET /remote HTTP/1.1\r\nhost: {remote}\r\ngodwit-client-ip: 6.6.6.6\r\n\r\n\
         GET /last HTTP/1.1\r\nhost: {local}\r\n\r\n",
        local = host("local"),
        remote = host("hello"),
    );
    stream.write_all(requests.as_bytes()).await?;
    let mut buf = Vec::new();
    let first = read_response(&mut stream, &mut buf).await?;
    assert_eq!(first.body, b"local");
    assert_fast(&first);
    let response = read_response(&mut stream, &mut buf).await?;
    assert_eq!(response.status, 200, "{response:?}");
    let echo = response.echo()?;
    assert_eq!(
        (echo["name"].as_str(), echo["path"].as_str()),
        (Some("on-b"), Some("/remote"))
    );
    assert_eq!(echo["headers"]["fly-client-ip"], "127.0.0.1", "{echo}");
    assert_eq!(echo["headers"]["fly-region"], "ams", "{echo}");
    let headers = echo["headers"].as_object().expect("echoed headers");
    assert!(
        !headers.keys().any(|k| k.starts_with("godwit-")),
        "backhaul headers reached the machine: {echo}"
    );
    assert!(
        !response.headers.keys().any(|k| k.starts_with("godwit-")),
        "{response:?}"
    );
    let last = read_response(&mut stream, &mut buf).await?;
    assert_eq!(last.body, b"local");
    assert!(buf.is_empty());
    assert_eq!((remote.served(), local.requests()), (1, 2));
    Ok(())
}
