//! WebSocket upgrades through the proxy: a real WebSocket echo backend, a real client, frames
//! both ways on one upgraded connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::{SinkExt as _, StreamExt as _};
use godwit_proxy::Starter;
use godwit_types::MachineState;
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, CloseCode, Message, ServerBuilder};

use crate::backend::tcp_server;
use crate::support::{Backend, DEADLINE, HarnessBuilder, host, record, wait_until};

/// Adds one to its counter when dropped.
struct Counted(Arc<AtomicU32>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A WebSocket server that first tells the client the path and proxy headers it saw, then
/// echoes every text and binary message.
pub(crate) async fn echo_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    echo_backend_counting(Arc::default()).await
}

/// [`echo_backend`], counting the connections that ended in `closed`.
async fn echo_backend_counting(
    closed: Arc<AtomicU32>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    tcp_server(move |stream| {
        let closed = Arc::clone(&closed);
        async move {
            let _counted = Counted(closed);
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
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
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

/// A starter that only counts stops, and notes how many backend connections had ended at
/// the first one.
#[derive(Debug, Default)]
struct CountingStarter {
    stops: AtomicU32,
    backend_closed: Arc<AtomicU32>,
    closed_at_stop: AtomicU32,
}

#[async_trait::async_trait]
impl Starter for CountingStarter {
    async fn start(&self, _app: &str, machine_id: &str) -> Result<(), String> {
        Err(format!("this test does not start machines ({machine_id})"))
    }

    async fn stop(&self, _app: &str, _machine_id: &str) -> Result<(), String> {
        if self.stops.fetch_add(1, Ordering::SeqCst) == 0 {
            let closed = self.backend_closed.load(Ordering::SeqCst);
            self.closed_at_stop.store(closed, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[tokio::test]
async fn autostop_sends_open_websockets_a_close_frame_first() -> anyhow::Result<()> {
    let starter = Arc::new(CountingStarter::default());
    let (backend, _task) = echo_backend_counting(Arc::clone(&starter.backend_closed)).await;
    let mut machine = record("m-ws-stop", "wsstop", backend, MachineState::Started);
    machine.services[0].autostop = Some(serde_json::json!("stop"));
    let harness = HarnessBuilder::new()
        .record(machine)
        .starter(Arc::clone(&starter) as Arc<dyn Starter>)
        .config(|cfg| {
            cfg.autostop_idle = Duration::from_millis(300);
            cfg.autostop_interval = Duration::from_millis(50);
        })
        .start()
        .await?;

    let stream = TcpStream::connect(harness.http).await?;
    let uri = format!("ws://{}/live", host("wsstop"));
    let (mut ws, _) =
        tokio::time::timeout(DEADLINE, ClientBuilder::new().uri(&uri)?.connect_on(stream))
            .await
            .context("websocket handshake timed out")??;
    let hello = ws.next().await.context("no greeting")??;
    assert!(hello.is_text());
    ws.send(Message::text("ping")).await?;
    let echoed = ws.next().await.context("no echo")??;
    assert_eq!(echoed.as_text(), Some("ping"));

    // The socket goes quiet: autostop stops the machine, closing the socket first.
    let message = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .context("no close frame before the deadline")?
        .context("the connection ended without a close frame")??;
    let (code, reason) = message
        .as_close()
        .with_context(|| format!("expected a close frame, got {message:?}"))?;
    assert_eq!(code, CloseCode::GOING_AWAY);
    assert_eq!(reason, "going away");
    // (The replica is never told the machine stopped, so later passes may stop it again.)
    wait_until("the stop", || starter.stops.load(Ordering::SeqCst) >= 1).await?;
    // The machine's side of the socket was closed before the stop was asked for.
    assert_eq!(starter.closed_at_stop.load(Ordering::SeqCst), 1);
    Ok(())
}
