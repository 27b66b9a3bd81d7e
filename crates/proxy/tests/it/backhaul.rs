//! Edge → worker backhaul between real proxies on loopback: forwarding with the client's
//! headers, "try elsewhere" on a stale view, and the cluster secret; regions (RTT, limits,
//! shedding) in `regions`, WebSocket and raw TCP tunnels in `tunnel`.

use std::time::Duration;

use bytes::Bytes;
use godwit_types::{MachineRecord, MachineState};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest as _, Sha256};

use crate::backend::Backend;
use crate::support::{DEADLINE, dead_addr, host, limits, record};

mod regions;
mod tunnel;
mod world;

pub(crate) use world::{Node, SECRET, World};

pub(crate) fn machine(
    id: &str,
    addr: std::net::SocketAddr,
    region: &str,
    host_id: &str,
    state: MachineState,
) -> MachineRecord {
    let mut record = record(id, "hello", addr, state);
    record.region = region.to_owned();
    record.host_id = host_id.to_owned();
    record
}

pub(crate) fn with_limits(
    mut record: MachineRecord,
    soft: u32,
    hard: Option<u32>,
) -> MachineRecord {
    record.services[0].concurrency = limits("requests", soft, hard);
    record
}

/// Polls `node` until it has measured `regions`; returns their RTTs in seconds.
pub(crate) async fn measured(node: &Node, regions: &[&str]) -> anyhow::Result<Vec<f64>> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut rtts = Vec::new();
        for region in regions {
            if let Some(rtt) = node.rtt(region).await? {
                rtts.push(rtt);
            }
        }
        if rtts.len() == regions.len() {
            return Ok(rtts);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{regions:?} never measured:\n{}",
            node.metrics().await?
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn backhaul_forwards_to_the_machines_host_with_the_clients_headers() -> anyhow::Result<()> {
    let world = World::start().await?;
    let backend = Backend::start("on-b").await;
    let on_b = machine("m-b", backend.addr, "syd", "host-b", MachineState::Started);
    // The edge cannot reach the machine itself: only host-b's worker can.
    let mut unreachable = on_b.clone();
    unreachable.private_ip = dead_addr().await.ip().to_string();
    let a = world
        .node("ams", "host-a", &[unreachable], true, |_| {})
        .await?;
    let _b = world.node("syd", "host-b", &[on_b], true, |_| {}).await?;

    let spoofed = [
        ("fly-client-ip", "6.6.6.6"),
        ("godwit-client-ip", "6.6.6.6"),
        ("godwit-edge-region", "evil"),
        ("godwit-machine", "m-other"),
    ];
    let reply = a.send("hello", "/path?q=1", &spoofed).await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.served_by(), "on-b");
    let echo = reply.echo();
    let headers = &echo["headers"];
    let client_ip = a.client_ip.to_string();
    assert_eq!(headers["fly-client-ip"], client_ip.as_str(), "{echo}");
    assert_eq!(headers["fly-region"], "ams", "{echo}");
    assert_eq!(headers["x-forwarded-for"], client_ip.as_str(), "{echo}");
    assert_eq!(headers["host"], host("hello").as_str(), "{echo}");
    assert_eq!(echo["path"], "/path");
    let leaked: Vec<&String> = headers
        .as_object()
        .map(|h| h.keys().filter(|k| k.starts_with("godwit-")).collect())
        .unwrap_or_default();
    assert!(
        leaked.is_empty(),
        "backhaul headers reached the machine: {echo}"
    );
    assert!(
        !reply.headers.keys().any(|k| k.starts_with("godwit-load")),
        "{reply:?}"
    );
    // Many requests share the one backhaul connection.
    let requests = (0..20).map(|_| a.get("hello", "/"));
    for reply in futures::future::join_all(requests).await {
        assert_eq!(reply?.status, 200);
    }
    assert_eq!(backend.served(), 21);
    Ok(())
}

#[tokio::test]
async fn backhaul_a_machine_gone_from_its_host_sends_the_edge_to_the_next_one() -> anyhow::Result<()>
{
    let world = World::start().await?;
    let (stopped, missing, ok) = (
        Backend::start("stopped").await,
        Backend::start("missing").await,
        Backend::start("ok").await,
    );
    let m_stopped = machine(
        "m-stopped",
        stopped.addr,
        "syd",
        "host-b",
        MachineState::Started,
    );
    let m_missing = machine(
        "m-missing",
        missing.addr,
        "syd",
        "host-b",
        MachineState::Started,
    );
    let m_ok = machine("m-ok", ok.addr, "syd", "host-c", MachineState::Started);
    // The edge's view is stale: host-b stopped one machine and destroyed the other.
    let edge_view = [m_stopped.clone(), m_missing, m_ok.clone()];
    let a = world
        .node("ams", "host-a", &edge_view, true, |_| {})
        .await?;
    let mut now_stopped = m_stopped;
    now_stopped.state = MachineState::Stopped;
    let _b = world
        .node("syd", "host-b", &[now_stopped], true, |_| {})
        .await?;
    let _c = world.node("syd", "host-c", &[m_ok], true, |_| {}).await?;

    for _ in 0..30 {
        let reply = a.get("hello", "/").await?;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.served_by(), "ok");
    }
    assert_eq!((stopped.served(), missing.served()), (0, 0));
    let metrics = a.metrics().await?;
    let retries = metrics
        .lines()
        .find_map(|l| l.strip_prefix("godwit_proxy_retries_total{app=\"hello\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(retries.is_some_and(|n| n > 0), "no retries:\n{metrics}");
    Ok(())
}

/// Sends one request over h2c to a worker; returns its status.
async fn h2c(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, String)],
) -> anyhow::Result<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .uri(format!("http://{}{path}", host("hello")))
        .body(Empty::<Bytes>::new())?;
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes())?,
            value.parse()?,
        );
    }
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}

#[tokio::test]
async fn backhaul_requests_without_the_cluster_secret_are_refused() -> anyhow::Result<()> {
    let world = World::start().await?;
    let backend = Backend::start("b").await;
    let m = machine("m-b", backend.addr, "syd", "host-b", MachineState::Started);
    let b = world.node("syd", "host-b", &[m], true, |_| {}).await?;
    let token = hex::encode(Sha256::digest(format!("godwit-backhaul\0{SECRET}")));
    let target = |secret: Option<String>| {
        let mut headers = vec![
            ("godwit-machine", "m-b".to_owned()),
            ("godwit-app", "hello".to_owned()),
            ("godwit-public-port", "80".to_owned()),
        ];
        if let Some(secret) = secret {
            headers.push(("godwit-backhaul-secret", secret));
        }
        headers
    };
    assert_eq!(h2c(b.backhaul, "/", &target(None)).await?, 401);
    let wrong = hex::encode(Sha256::digest("godwit-backhaul\0wrong"));
    assert_eq!(h2c(b.backhaul, "/", &target(Some(wrong))).await?, 401);
    assert_eq!(h2c(b.backhaul, "/_godwit/ping", &[]).await?, 401);
    assert_eq!(backend.served(), 0);
    // The right secret is served (the check above could fail).
    assert_eq!(
        h2c(b.backhaul, "/", &target(Some(token.clone()))).await?,
        200
    );
    let ping = [("godwit-backhaul-secret", token)];
    assert_eq!(h2c(b.backhaul, "/_godwit/ping", &ping).await?, 204);
    assert_eq!(backend.served(), 1);
    Ok(())
}
