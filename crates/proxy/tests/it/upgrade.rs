//! WebSocket upgrades through the proxy: a real WebSocket echo backend, a real client, frames
//! both ways on one upgraded connection.

use std::net::SocketAddr;

use anyhow::Context as _;
use futures::{SinkExt as _, StreamExt as _};
use godwit_types::MachineState;
use tokio::net::{TcpListener, TcpStream};
use tokio_websockets::{ClientBuilder, Message, ServerBuilder};

use crate::backend::random_loopback;
use crate::support::{Backend, DEADLINE, HarnessBuilder, host, record};

/// A WebSocket server that first tells the client the path and proxy headers it saw, then
/// echoes every text and binary message.
async fn echo_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(SocketAddr::new(random_loopback(), 0))
        .await
        .expect("bind a loopback address");
    let addr = listener.local_addr().expect("bound");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok((request, mut ws)) = ServerBuilder::new().accept(stream).await else {
                    return;
                };
                let header = |name: &str| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let hello = serde_json::json!({
                    "path": request.uri().path(),
                    "fly-client-ip": header("fly-client-ip"),
                    "fly-request-id": header("fly-request-id"),
                    "via": header("via"),
                });
                if ws.send(Message::text(hello.to_string())).await.is_err() {
                    return;
                }
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn websocket_frames_flow_both_ways_through_the_proxy() -> anyhow::Result<()> {
    let (backend, _task) = echo_backend().await;
    let plain = Backend::start("plain-http").await;
    let harness = HarnessBuilder::new()
        .record(record("m-ws", "ws", backend, MachineState::Started))
        .record(record(
            "m-plain",
            "plain",
            plain.addr,
            MachineState::Started,
        ))
        .start()
        .await?;

    let stream = TcpStream::connect(harness.http).await?;
    let uri = format!("ws://{}/chat?room=1", host("ws"));
    let (mut ws, response) =
        tokio::time::timeout(DEADLINE, ClientBuilder::new().uri(&uri)?.connect_on(stream))
            .await
            .context("websocket handshake timed out")??;
    assert_eq!(response.status(), 101);
    assert!(response.headers().contains_key("fly-request-id"));

    // Machine → client first: what the machine saw of the upgrade request.
    let hello = ws.next().await.context("no greeting")??;
    let hello: serde_json::Value = serde_json::from_str(hello.as_text().context("text")?)?;
    assert_eq!(hello["path"], "/chat");
    assert_eq!(hello["fly-client-ip"], "127.0.0.1");
    assert_eq!(hello["via"], "1.1 godwit");
    assert!(
        hello["fly-request-id"]
            .as_str()
            .is_some_and(|id| id.ends_with("-ams"))
    );

    // Client → machine → client, text and binary, several times on the same connection.
    for i in 0..20 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await?;
        let echoed = ws.next().await.context("no echo")??;
        assert_eq!(echoed.as_text(), Some(text.as_str()));
    }
    let payload: Vec<u8> = (0..=255).cycle().take(100_000).collect();
    ws.send(Message::binary(payload.clone())).await?;
    let echoed = ws.next().await.context("no binary echo")??;
    assert!(echoed.is_binary());
    assert_eq!(&*echoed.into_payload(), payload.as_slice());
    ws.close().await?;

    // A machine that does not speak WebSocket answers normally: no 101, the handshake fails.
    let stream = TcpStream::connect(harness.http).await?;
    let uri = format!("ws://{}/", host("plain"));
    let refused = ClientBuilder::new().uri(&uri)?.connect_on(stream).await;
    assert!(refused.is_err(), "a plain http machine cannot upgrade");
    assert_eq!(plain.served(), 1);
    Ok(())
}
