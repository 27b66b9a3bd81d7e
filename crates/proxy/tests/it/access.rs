//! Access logs: one INFO line per request with its id, app, machine and path (never the
//! query string or secret headers); every line logged while handling a request carries
//! the request id.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use godwit_types::MachineState;
use tracing_subscriber::fmt::MakeWriter;

use crate::support::{Backend, Behaviour, HarnessBuilder, host, record, wait_until};

/// Everything the test's subscriber wrote.
#[derive(Debug, Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Captures everything logged on this thread (DEBUG and up) until the guard drops. With
    /// a current-thread runtime the proxy's tasks run here, under this subscriber.
    pub(crate) fn install() -> (Captured, tracing::subscriber::DefaultGuard) {
        Captured::install_at(tracing::Level::DEBUG)
    }

    /// Like [`Captured::install`], from `level` up.
    pub(crate) fn install_at(
        level: tracing::Level,
    ) -> (Captured, tracing::subscriber::DefaultGuard) {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(level)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// A current-thread runtime: the proxy's tasks run on this thread, under this subscriber.
#[tokio::test]
async fn one_line_per_request_without_query_or_secrets() -> anyhow::Result<()> {
    let (logs, _default) = Captured::install();

    let shop = Backend::start("shop").await;
    let hopper = Backend::start_with("hopper", Behaviour::replaying("app=shop")).await;
    let harness = HarnessBuilder::new()
        .record(record("m-shop", "shop", shop.addr, MachineState::Started))
        .record(record(
            "m-hop",
            "hopper",
            hopper.addr,
            MachineState::Started,
        ))
        .config(|cfg| cfg.access_log = true)
        .start()
        .await?;

    let reply = harness
        .send(
            harness
                .client()
                .get(harness.url("/orders/7?token=hunter2"))
                .header("host", host("shop"))
                .header("authorization", "Bearer secret-token")
                .header("cookie", "session=secret-cookie"),
        )
        .await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    let id = reply.headers["fly-request-id"].clone();
    let wanted = format!("request_id=\"{id}\"");
    wait_until("the access line", || {
        logs.text()
            .lines()
            .any(|l| l.contains(&wanted) && l.contains(" access "))
    })
    .await?;
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains(&wanted) && l.contains(" access "))
        .expect("found above");
    assert!(line.contains(" INFO "), "{line}");
    for field in [
        "app=\"shop\"".to_owned(),
        "machine=\"m-shop\"".to_owned(),
        "region=\"ams\"".to_owned(),
        "method=GET".to_owned(),
        "path=/orders/7 ".to_owned(),
        "status=200".to_owned(),
        format!("bytes={}", reply.body.len()),
        "duration_ms=".to_owned(),
    ] {
        assert!(line.contains(&field), "{field} missing in {line}");
    }
    for secret in ["hunter2", "secret-token", "secret-cookie"] {
        assert!(!text.contains(secret), "{secret} was logged:\n{text}");
    }
    assert_eq!(
        text.lines().filter(|l| l.contains(" access ")).count(),
        1,
        "{text}"
    );

    // The replay's debug line is logged inside the request's span.
    let reply = harness.get("hopper", "/").await?;
    assert_eq!(reply.served_by(), "shop");
    let id = reply.headers["fly-request-id"].clone();
    let wanted = format!("request_id=\"{id}\"");
    wait_until("the second access line", || {
        logs.text()
            .lines()
            .any(|l| l.contains(&wanted) && l.contains(" access "))
    })
    .await?;
    let text = logs.text();
    let replaying = text
        .lines()
        .find(|l| l.contains("replaying"))
        .expect("a replay debug line");
    assert!(replaying.contains(&wanted), "{replaying}");
    Ok(())
}

#[tokio::test]
async fn off_by_default() -> anyhow::Result<()> {
    let (logs, _default) = Captured::install_at(tracing::Level::INFO);
    let shop = Backend::start("shop").await;
    let harness = HarnessBuilder::new()
        .record(record("m-shop", "shop", shop.addr, MachineState::Started))
        .start()
        .await?;
    let reply = harness.get("shop", "/").await?;
    assert_eq!(reply.status, 200);
    // The proxy logs "proxy ready" at INFO, so the subscriber does see its lines.
    assert!(logs.text().contains("proxy ready"), "{}", logs.text());
    assert!(!logs.text().contains(" access "), "{}", logs.text());
    Ok(())
}
