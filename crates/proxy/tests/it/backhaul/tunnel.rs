//! WebSocket upgrades and raw TCP through the worker of the machine's host (the edge's own
//! view of the machine has an address it cannot reach).

use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;
use futures::{SinkExt as _, StreamExt as _};
use godwit_types::MachineState;
use godwit_types::machine::MachinePort;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_websockets::{ClientBuilder, Message, ServerBuilder};

use super::machine;
use super::world::World;
use crate::backend::{dead_addr, random_loopback};
use crate::support::{DEADLINE, host};

/// A server on a fresh loopback address: WebSocket echo (first telling the client its
/// Fly-Client-IP) when `websocket`, else raw TCP echo.
async fn echo_machine(
    websocket: bool,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(SocketAddr::new(random_loopback(), 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !websocket {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                    return;
                }
                let Ok((request, mut ws)) = ServerBuilder::new().accept(stream).await else {
                    return;
                };
                let ip = request
                    .headers()
                    .get("fly-client-ip")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                if ws.send(Message::text(ip)).await.is_err() {
                    return;
                }
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

/// A record of `app` on host-b whose private IP only host-b's view has right.
async fn on_host_b(
    id: &str,
    addr: SocketAddr,
) -> anyhow::Result<(godwit_types::MachineRecord, godwit_types::MachineRecord)> {
    let real = machine(id, addr, "syd", "host-b", MachineState::Started);
    let mut unreachable = real.clone();
    unreachable.private_ip = dead_addr().await.ip().to_string();
    Ok((real, unreachable))
}

#[tokio::test]
async fn backhaul_tunnels_websockets_to_the_machines_host() -> anyhow::Result<()> {
    let world = World::start().await?;
    let (addr, _task) = echo_machine(true).await?;
    let (real, unreachable) = on_host_b("m-ws", addr).await?;
    let a = world
        .node("ams", "host-a", &[unreachable], true, |_| {})
        .await?;
    let _b = world.node("syd", "host-b", &[real], true, |_| {}).await?;

    let stream = tokio::net::TcpSocket::new_v4()?;
    stream.bind(SocketAddr::new(a.client_ip, 0))?;
    let stream = stream.connect(a.http).await?;
    let uri = format!("ws://{}/chat", host("hello"));
    let (mut ws, response) =
        tokio::time::timeout(DEADLINE, ClientBuilder::new().uri(&uri)?.connect_on(stream))
            .await
            .context("websocket handshake timed out")??;
    assert_eq!(response.status(), 101);
    let hello = ws.next().await.context("no greeting")??;
    assert_eq!(hello.as_text(), Some(a.client_ip.to_string().as_str()));
    for i in 0..10 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await?;
        let echoed = ws.next().await.context("no echo")??;
        assert_eq!(echoed.as_text(), Some(text.as_str()));
    }
    ws.close().await?;
    Ok(())
}

#[tokio::test]
async fn backhaul_tunnels_raw_tcp_to_the_machines_host() -> anyhow::Result<()> {
    let world = World::start().await?;
    let (addr, _task) = echo_machine(false).await?;
    let (mut real, mut unreachable) = on_host_b("m-raw", addr).await?;
    let public_port = 20_000 + rand::random::<u16>() % 40_000;
    for record in [&mut real, &mut unreachable] {
        record.services[0].ports = vec![MachinePort {
            port: Some(public_port),
            handlers: Vec::new(),
            force_https: None,
            proxy_proto_options: None,
            http_options: None,
        }];
    }
    let listen_ip: IpAddr = random_loopback();
    let _a = world
        .node("ams", "host-a", &[unreachable], true, move |cfg| {
            cfg.tcp_listen_ip = Some(listen_ip);
        })
        .await?;
    let _b = world.node("syd", "host-b", &[real], true, |_| {}).await?;

    let public = SocketAddr::new(listen_ip, public_port);
    let mut client = crate::tcp::connect_when_listening(public).await?;
    let message = "through the backhaul\n".repeat(5000);
    client.write_all(message.as_bytes()).await?;
    let mut echoed = vec![0; message.len()];
    tokio::time::timeout(DEADLINE, client.read_exact(&mut echoed))
        .await
        .context("echo timed out")??;
    assert_eq!(echoed, message.as_bytes());
    Ok(())
}
