//! For `scripts/bench-proxy.sh`: a real nats-server, one small HTTP backend, one machine
//! record of app `bench` pointing at it, and the proxy in front. Prints
//! `backend=<addr> proxy=<addr>` and runs until stdin closes. The proxy runs on
//! `BENCH_THREADS` tokio workers (default 1), the backend on a thread of its own.
#![allow(
    clippy::print_stdout,
    reason = "the script reads the addresses from stdout"
)]

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use godwit_proxy::{Listeners, ProxyConfig};
use godwit_state::StateClient;
use godwit_state::testing::NatsServer;
use godwit_types::MachineRecord;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let nats = NatsServer::start().context("start nats-server")?;
    // The backend gets its own thread and runtime, as a machine would.
    let backend = std::net::TcpListener::bind("127.0.0.1:0")?;
    backend.set_nonblocking(true)?;
    let backend_addr = backend.local_addr()?;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the backend");
        runtime.block_on(async move {
            let listener = TcpListener::from_std(backend).expect("a tokio listener");
            serve_backend(listener).await;
        });
    });

    let client = StateClient::connect(&nats.url).await?;
    let bucket = client.bucket::<MachineRecord>("godwit_machines").await?;
    let record: MachineRecord = serde_json::from_value(serde_json::json!({
        "id": "bench1", "app": "bench", "org": "personal", "name": "bench1",
        "state": "started", "version": 1, "instance_id": "i1",
        "private_ip": backend_addr.ip().to_string(), "region": "ams", "host_id": "h1",
        "cpus": 1, "memory_mb": 256,
        "services": [{"protocol": "tcp", "internal_port": backend_addr.port(),
                      "ports": [{"port": 80, "handlers": ["http"]}],
                      "concurrency": {"type": "requests", "soft_limit": 1000, "hard_limit": 2000}}],
        "checks": [], "cordoned": false, "metadata": {}, "updated_at": 0
    }))?;
    bucket.put("bench1", &record).await?;
    let replica = bucket.replica().await?;

    let http = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = http.local_addr()?;
    let cfg = ProxyConfig::new(proxy_addr, "apps.godwit.test", "ams");
    let cancel = CancellationToken::new();
    let starter = Arc::new(godwit_proxy::ApiStarter::new(
        "http://127.0.0.1:9",
        "unused",
    ));
    let proxy = tokio::spawn(godwit_proxy::serve_with(
        cfg,
        Listeners { http, https: None },
        replica,
        starter,
        cancel.clone(),
    ));
    println!("backend={backend_addr} proxy={proxy_addr}");

    // Run until stdin closes (the script holds it open).
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    cancel.cancel();
    proxy.await??;
    Ok(())
}

async fn serve_backend(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_request| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                    b"hello from the backend\n",
                ))))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
