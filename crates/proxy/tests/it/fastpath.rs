//! The HTTP/1.1 fast path on raw connections: pipelining, chunked bodies both ways, large
//! bodies, machines and clients that go away mid-message, and the connections it hands to
//! hyper (WebSocket, bodies too big to buffer) still working; the hyper path's features on
//! the fast path in `features`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context as _;
use futures::StreamExt as _;
use godwit_types::MachineState;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_websockets::ClientBuilder;

use crate::backend::random_loopback;
use crate::support::{Backend, Behaviour, DEADLINE, HarnessBuilder, host, record};

mod features;
pub(crate) mod raw;

use raw::{Scripted, read_response};

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() -> anyhow::Result<()> {
    let backend = Backend::start("a").await;
    let harness = HarnessBuilder::new()
        .record(record("m-a", "hello", backend.addr, MachineState::Started))
        .start()
        .await?;
    let host = host("hello");
    let mut stream = TcpStream::connect(harness.http).await?;
    let requests = format!(
        "GET /one HTTP/1.1\r\nhost: {host}\r\n\r\n\
         POST /two HTTP/1.1\r\nhost: {host}\r\ncontent-length: 5\r\n\r\nhello\
         GET /three HTTP/1.1\r\nhost: {host}\r\nx-forwarded-for: 10.1.1.1\r\n\r\n"
    );
    stream.write_all(requests.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut ids = Vec::new();
    for (path, body) in [("/one", ""), ("/two", "hello"), ("/three", "")] {
        let response = read_response(&mut stream, &mut buf).await?;
        assert_eq!(response.status, 200);
        assert_eq!(response.headers["via"], "1.1 godwit");
        let echo = response.echo()?;
        assert_eq!(
            (echo["path"].as_str(), echo["body"].as_str()),
            (Some(path), Some(body))
        );
        assert_eq!(
            echo["headers"]["fly-request-id"],
            response.headers["fly-request-id"]
        );
        ids.push(response.headers["fly-request-id"].clone());
        if path == "/three" {
            assert_eq!(echo["headers"]["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "each request has its own id");
    assert!(buf.is_empty(), "nothing after the third response");
    assert_eq!(backend.served(), 3);
    Ok(())
}

#[tokio::test]
async fn chunked_request_bodies_reach_the_machine() -> anyhow::Result<()> {
    let backend = Backend::start("a").await;
    let harness = HarnessBuilder::new()
        .record(record("m-a", "hello", backend.addr, MachineState::Started))
        .start()
        .await?;
    let mut stream = TcpStream::connect(harness.http).await?;
    let mut buf = Vec::new();
    for round in 0..2 {
        let request = format!(
            "POST /c{round} HTTP/1.1\r\nhost: {}\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
            host("hello")
        );
        // Split mid-chunk: the proxy reads until the last chunk.
        let (first, rest) = request.split_at(request.len() - 12);
        stream.write_all(first.as_bytes()).await?;
        stream.flush().await?;
        tokio::task::yield_now().await;
        stream.write_all(rest.as_bytes()).await?;
        let echo = read_response(&mut stream, &mut buf).await?.echo()?;
        assert_eq!(echo["body"], "hello world");
        assert_eq!(echo["path"], format!("/c{round}"));
    }
    Ok(())
}

#[tokio::test]
async fn chunked_responses_keep_their_framing_and_machine_connections_are_reused()
-> anyhow::Result<()> {
    let body = "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
    let machine = Scripted::start(format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-app: 1\r\n\r\n{body}"
    ))
    .await;
    let harness = HarnessBuilder::new()
        .record(record("m-c", "chunky", machine.addr, MachineState::Started))
        .start()
        .await?;
    let mut stream = TcpStream::connect(harness.http).await?;
    let mut buf = Vec::new();
    for _ in 0..3 {
        let request = format!("GET / HTTP/1.1\r\nhost: {}\r\n\r\n", host("chunky"));
        stream.write_all(request.as_bytes()).await?;
        let response = read_response(&mut stream, &mut buf).await?;
        assert_eq!(response.headers["transfer-encoding"], "chunked");
        assert_eq!(response.headers["x-app"], "1");
        assert_eq!(response.body, b"hello, world");
    }
    let reply = harness.get("chunky", "/").await?;
    assert_eq!(reply.body, "hello, world");
    assert_eq!(machine.requests(), 4);
    assert_eq!(
        machine.connections(),
        1,
        "one keep-alive connection to the machine"
    );
    Ok(())
}

#[tokio::test]
async fn large_bodies_go_through_whole() -> anyhow::Result<()> {
    let backend = Backend::start("a").await;
    let size = 8 * 1024 * 1024;
    let big = Scripted::start(format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n{}",
        "x".repeat(size)
    ))
    .await;
    let harness = HarnessBuilder::new()
        .record(record("m-a", "hello", backend.addr, MachineState::Started))
        .record(record("m-big", "big", big.addr, MachineState::Started))
        .start()
        .await?;
    let reply = harness.get("big", "/").await?;
    assert_eq!((reply.status, reply.body.len()), (200, size));
    assert!(reply.body.bytes().all(|b| b == b'x'));
    // Under the buffer limit (the fast path) and over it (hyper).
    for len in [600 * 1024, 3 * 1024 * 1024] {
        let body: String = (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let request = harness
            .client()
            .post(harness.url("/upload"))
            .header("host", host("hello"))
            .body(body.clone());
        let echo = harness.send(request).await?.echo();
        assert_eq!(echo["body"].as_str().map(str::len), Some(len));
        assert!(echo["body"] == body.as_str(), "the body arrived changed");
    }
    Ok(())
}

#[tokio::test]
async fn a_machine_closing_mid_response_cuts_the_response() -> anyhow::Result<()> {
    let short = Scripted::start_closing(
        "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this".to_owned(),
    )
    .await;
    let silent = Scripted::start_closing(String::new()).await;
    let backend = Backend::start("a").await;
    let harness = HarnessBuilder::new()
        .record(record(
            "m-short",
            "short",
            short.addr,
            MachineState::Started,
        ))
        .record(record(
            "m-silent",
            "silent",
            silent.addr,
            MachineState::Started,
        ))
        .record(record("m-a", "hello", backend.addr, MachineState::Started))
        .start()
        .await?;
    let response = harness
        .client()
        .get(harness.url("/"))
        .header("host", host("short"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().await.is_err(),
        "a cut body must not look whole"
    );
    // No answer at all: a 502 with the proxy's code.
    let reply = harness.get("silent", "/").await?;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.headers["fly-proxy-error"], "PU01");
    let date = reply
        .headers
        .get("date")
        .expect("the proxy's own answer has a Date");
    httpdate::parse_http_date(date)?;
    assert_eq!(harness.get("hello", "/").await?.status, 200);
    Ok(())
}

#[tokio::test]
async fn a_client_leaving_mid_request_sends_nothing_to_the_machine() -> anyhow::Result<()> {
    let backend = Backend::start("a").await;
    let harness = HarnessBuilder::new()
        .record(record("m-a", "hello", backend.addr, MachineState::Started))
        .start()
        .await?;
    for partial in [
        format!(
            "POST / HTTP/1.1\r\nhost: {}\r\ncontent-length: 100\r\n\r\n0123456789",
            host("hello")
        ),
        format!(
            "POST / HTTP/1.1\r\nhost: {}\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
            host("hello")
        ),
        format!("GET / HTTP/1.1\r\nhost: {}\r\n", host("hello")),
    ] {
        let mut stream = TcpStream::connect(harness.http).await?;
        stream.write_all(partial.as_bytes()).await?;
        stream.shutdown().await?;
        // The proxy closes its side once it sees the client gone, answering nothing.
        let mut rest = Vec::new();
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest))
            .await
            .context("the proxy kept a half-closed connection")??;
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    assert_eq!(harness.get("hello", "/after").await?.status, 200);
    assert_eq!(
        backend.served(),
        1,
        "only the whole request reached the machine"
    );
    Ok(())
}

#[tokio::test]
async fn websocket_after_a_request_on_the_same_connection() -> anyhow::Result<()> {
    let (ws_addr, _task) = crate::upgrade::echo_backend().await;
    let backend = Backend::start("a").await;
    let harness = HarnessBuilder::new()
        .record(record("m-ws", "ws", ws_addr, MachineState::Started))
        .record(record("m-a", "hello", backend.addr, MachineState::Started))
        .start()
        .await?;
    let mut stream = TcpStream::connect(harness.http).await?;
    let request = format!("GET /first HTTP/1.1\r\nhost: {}\r\n\r\n", host("hello"));
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    assert_eq!(
        read_response(&mut stream, &mut buf).await?.echo()?["path"],
        "/first"
    );
    let uri = format!("ws://{}/chat", host("ws"));
    let (mut ws, response) =
        tokio::time::timeout(DEADLINE, ClientBuilder::new().uri(&uri)?.connect_on(stream))
            .await
            .context("websocket handshake timed out")??;
    assert_eq!(response.status(), 101);
    let hello = ws.next().await.context("no greeting")??;
    let hello: serde_json::Value = serde_json::from_str(hello.as_text().context("text")?)?;
    assert_eq!(hello["path"], "/chat");
    Ok(())
}

#[tokio::test]
async fn replays_with_chunked_bodies_and_bodies_too_big_to_replay() -> anyhow::Result<()> {
    let primary = Backend::start("primary").await;
    let replica = Backend::start_with("replica", Behaviour::replaying("region=iad")).await;
    let mut primary_record = record("m-primary", "db", primary.addr, MachineState::Started);
    primary_record.region = "iad".to_owned();
    let harness = HarnessBuilder::new()
        .record(primary_record)
        .record(record(
            "m-replica",
            "db",
            replica.addr,
            MachineState::Started,
        ))
        .start()
        .await?;
    let mut stream = TcpStream::connect(harness.http).await?;
    let request = format!(
        "POST /write HTTP/1.1\r\nhost: {}\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        host("db")
    );
    let mut buf = Vec::new();
    for _ in 0..2 {
        stream.write_all(request.as_bytes()).await?;
        let response = read_response(&mut stream, &mut buf).await?;
        assert!(!response.headers.contains_key("fly-replay"));
        let echo = response.echo()?;
        assert_eq!(
            (echo["name"].as_str(), echo["body"].as_str()),
            (Some("primary"), Some("abc"))
        );
        let source = echo["headers"]["fly-replay-src"]
            .as_str()
            .unwrap_or_default();
        assert!(
            source.starts_with("instance=m-replica;region=ams;t="),
            "{source}"
        );
    }
    // Over the buffer limit the body cannot be sent twice.
    let big = "y".repeat(2 * 1024 * 1024);
    let request = harness
        .client()
        .post(harness.url("/write"))
        .header("host", host("db"))
        .body(big);
    let reply = harness.send(request).await?;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.headers["fly-proxy-error"], "PA01");
    assert_eq!(replica.served(), 3);
    Ok(())
}

/// Counts for a [`Scripted`] machine.
#[derive(Debug, Default)]
struct Counts {
    connections: AtomicU32,
    requests: AtomicU32,
}

/// Binds a loopback listener for a scripted machine.
async fn listener() -> TcpListener {
    TcpListener::bind(std::net::SocketAddr::new(random_loopback(), 0))
        .await
        .expect("bind a loopback address")
}

fn counts() -> Arc<Counts> {
    Arc::default()
}

fn load(n: &AtomicU32) -> u32 {
    n.load(Ordering::SeqCst)
}
