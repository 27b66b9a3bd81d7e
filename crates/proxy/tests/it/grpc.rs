//! `h2_backend`: a service port with `http_options = { h2_backend = true }` is forwarded to
//! the machine over h2c, trailers included (gRPC status), for clients on h2c and on TLS (and
//! HTTP/1.1 clients, without trailers).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use godwit_types::MachineState;
use godwit_types::machine::HttpOptions;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::net::TcpStream;

use crate::backend::tcp_server;
use crate::support::{DEADLINE, HarnessBuilder, host, record};
use crate::tls::must_make_certs;

type TrailerBody =
    StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// A real h2c-only server (prior knowledge): answers with the HTTP version and `te` it
/// saw, a body, then a `grpc-status: 0` trailer.
async fn h2c_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    tcp_server(|stream| async move {
        let service = service_fn(|request: Request<Incoming>| async move {
            let version = format!("{:?}", request.version());
            let te = request
                .headers()
                .get("te")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("grpc-message", HeaderValue::from_static("ok"));
            let frames = vec![
                Ok(Frame::data(Bytes::from(format!("{version} te={te}")))),
                Ok(Frame::trailers(trailers)),
            ];
            let body: TrailerBody = StreamBody::new(futures::stream::iter(frames));
            Ok::<_, Infallible>(Response::new(body))
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
    .await
}

/// Sends one HTTP/2 request on `io` for `<app>.<DOMAIN>` and returns (body, grpc-status trailer).
async fn call<T>(io: T, scheme: &str, app: &str) -> anyhow::Result<(String, Option<String>)>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(connection);
    let request = Request::post(format!("{scheme}://{}/pkg.Service/Method", host(app)))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())?;
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
        .await
        .context("no response")??;
    anyhow::ensure!(response.status() == 200, "status {}", response.status());
    let collected = tokio::time::timeout(DEADLINE, response.into_body().collect())
        .await
        .context("no body")??;
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = String::from_utf8(collected.to_bytes().to_vec())?;
    Ok((body, status))
}

#[tokio::test]
async fn h2_backends_get_h2c_and_trailers_come_back() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (ca, cert, key) = must_make_certs(dir.path());
    let (backend, _task) = h2c_backend().await;
    let mut grpc = record("m-grpc", "grpc", backend, MachineState::Started);
    for port in &mut grpc.services[0].ports {
        port.http_options = Some(HttpOptions {
            h2_backend: Some(true),
        });
    }
    let harness = HarnessBuilder::new()
        .record(grpc)
        .https()
        .start_with_tls(Some((cert, key)))
        .await?;

    // h2c (prior knowledge) to the proxy.
    let stream = TcpStream::connect(harness.http).await?;
    let (body, status) = call(stream, "http", "grpc").await?;
    assert_eq!(body, "HTTP/2.0 te=trailers");
    assert_eq!(status.as_deref(), Some("0"));

    // HTTP/2 over TLS (ALPN h2) to the proxy.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&ca)?)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let https = harness.https.context("https listener")?;
    let stream = TcpStream::connect(https).await?;
    let tls = connector
        .connect(ServerName::try_from(host("grpc"))?, stream)
        .await?;
    let (body, status) = call(tls, "https", "grpc").await?;
    assert_eq!(body, "HTTP/2.0 te=trailers");
    assert_eq!(status.as_deref(), Some("0"));

    // HTTP/1.1 to the proxy: the fast path leaves h2c machines to hyper.
    let reply = harness.get("grpc", "/").await?;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "HTTP/2.0 te=trailers")
    );
    Ok(())
}
