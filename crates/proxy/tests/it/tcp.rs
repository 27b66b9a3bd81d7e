//! Raw TCP services: a port offered with no handlers gets its own listener, and bytes flow
//! both ways to a real TCP echo machine; the listener goes when the port is no longer
//! offered. Ports with the `tls` handler are reached over TLS, the machine getting the
//! bytes in the clear.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use godwit_types::MachineState;
use godwit_types::machine::{MachinePort, ProxyProtoOptions};
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _,
};
use tokio::net::TcpStream;

use crate::backend::{random_loopback, tcp_server};
use crate::support::{DEADLINE, HarnessBuilder, host, record};
use crate::tls::must_make_certs;

/// A TCP server that writes back whatever it reads.
async fn echo_machine() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    tcp_server(|mut stream| async move {
        let (mut read, mut write) = stream.split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
    })
    .await
}

/// Polls a connect to `addr` until it succeeds.
pub(crate) async fn connect_when_listening(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                bail!("nothing listens on {addr}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Public port `number` with these handlers (PROXY protocol v2 when `v2`).
pub(crate) fn raw_port(number: u16, handlers: &[&str], v2: bool) -> MachinePort {
    MachinePort {
        port: Some(number),
        handlers: handlers.iter().map(|h| (*h).to_owned()).collect(),
        force_https: None,
        proxy_proto_options: v2.then(|| ProxyProtoOptions {
            version: "v2".to_owned(),
        }),
        http_options: None,
    }
}

/// Checks the machine's answer to the PROXY header (`<src> <dst>`, see the machines here
/// and in proxy_proto.rs) names `client_addr` reaching `public`, then that bytes are echoed.
pub(crate) async fn expect_proxy_header_then_echo<S>(
    client: S,
    client_addr: SocketAddr,
    public: SocketAddr,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut client = tokio::io::BufReader::new(client);
    let mut line = String::new();
    tokio::time::timeout(DEADLINE, client.read_line(&mut line))
        .await
        .context("no answer to the proxy protocol header")??;
    assert_eq!(line, format!("{client_addr} {public}\n"));
    // Then the bytes flow as usual.
    client.get_mut().write_all(b"ping\n").await?;
    let mut echoed = [0; 5];
    tokio::time::timeout(DEADLINE, client.read_exact(&mut echoed))
        .await
        .context("no echo")??;
    assert_eq!(&echoed, b"ping\n");
    Ok(())
}

#[tokio::test]
async fn ports_without_handlers_are_passed_through_as_raw_tcp() -> anyhow::Result<()> {
    let (machine, _task) = echo_machine().await;
    // A public port unlikely to be taken on a fresh loopback address.
    let public_port = 20_000 + rand::random::<u16>() % 40_000;
    let mut raw = record("m-raw", "raw", machine, MachineState::Started);
    raw.services[0].ports = vec![raw_port(public_port, &[], false)];
    let listen_ip: IpAddr = random_loopback();
    let harness = HarnessBuilder::new()
        .record(raw.clone())
        .config(move |cfg| cfg.tcp_listen_ip = Some(listen_ip))
        .start()
        .await?;
    let public = SocketAddr::new(listen_ip, public_port);

    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(connect_when_listening(public).await?);
        let message = format!("hello {i}\n").repeat(1000);
        let client = clients.last_mut().context("just pushed")?;
        client.write_all(message.as_bytes()).await?;
        let mut echoed = vec![0; message.len()];
        tokio::time::timeout(DEADLINE, client.read_exact(&mut echoed))
            .await
            .context("no echo")??;
        assert_eq!(echoed, message.as_bytes());
    }

    // The machine goes away: so does the listener.
    harness
        .bucket
        .delete(&godwit_state::key_for(&raw.id))
        .await?;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while TcpStream::connect(public).await.is_ok() {
        if tokio::time::Instant::now() >= deadline {
            bail!("the listener on {public} stayed open");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A TCP server that reads a PROXY v1 line, writes it back, then echoes.
async fn proxy_proto_machine() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    tcp_server(|stream| async move {
        let mut stream = tokio::io::BufReader::new(stream);
        let mut line = String::new();
        if stream.read_line(&mut line).await.is_err() {
            return;
        }
        let answer = match parse_v1(&line) {
            Some((src, dst)) => format!("{src} {dst}\n"),
            None => format!("bad header {line:?}\n"),
        };
        let _ = stream.get_mut().write_all(answer.as_bytes()).await;
        let (mut read, mut write) = tokio::io::split(stream);
        let _ = tokio::io::copy(&mut read, &mut write).await;
    })
    .await
}

/// `PROXY TCP4 <src> <dst> <sport> <dport>\r\n` → (src, dst).
fn parse_v1(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let fields: Vec<&str> = line.strip_suffix("\r\n")?.split(' ').collect();
    let ["PROXY", "TCP4", src, dst, sport, dport] = fields.as_slice() else {
        return None;
    };
    let src = SocketAddr::new(src.parse().ok()?, sport.parse().ok()?);
    let dst = SocketAddr::new(dst.parse().ok()?, dport.parse().ok()?);
    Some((src, dst))
}

#[tokio::test]
async fn proxy_proto_ports_send_a_v1_header_first() -> anyhow::Result<()> {
    let (machine, _task) = proxy_proto_machine().await;
    let public_port = 20_000 + rand::random::<u16>() % 40_000;
    let mut pp = record("m-pp", "pp", machine, MachineState::Started);
    pp.services[0].ports = vec![raw_port(public_port, &["proxy_proto"], false)];
    let listen_ip: IpAddr = random_loopback();
    let _harness = HarnessBuilder::new()
        .record(pp)
        .config(move |cfg| cfg.tcp_listen_ip = Some(listen_ip))
        .start()
        .await?;
    let public = SocketAddr::new(listen_ip, public_port);

    let client = connect_when_listening(public).await?;
    let client_addr = client.local_addr()?;
    expect_proxy_header_then_echo(client, client_addr, public).await
}

/// A TLS client of `public` trusting `ca`, naming `server_name` in its SNI.
async fn tls_connect(
    public: SocketAddr,
    ca: &std::path::Path,
    server_name: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = connect_when_listening(public).await?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())?;
    Ok(tokio::time::timeout(DEADLINE, connector.connect(name, tcp))
        .await
        .context("no TLS handshake")??)
}

#[tokio::test]
async fn tls_ports_are_terminated_by_the_proxy_then_passed_through() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (ca, cert, key) = must_make_certs(dir.path());
    let (echo, _echo_task) = echo_machine().await;
    let (pp, _pp_task) = proxy_proto_machine().await;
    let tls_port = 20_000 + rand::random::<u16>() % 20_000;
    let pp_port = tls_port + 20_000;
    let mut plain = record("m-tls", "tlsraw", echo, MachineState::Started);
    plain.services[0].ports = vec![raw_port(tls_port, &["tls"], false)];
    let mut with_header = record("m-tlspp", "tlspp", pp, MachineState::Started);
    with_header.services[0].ports = vec![raw_port(pp_port, &["tls", "proxy_proto"], false)];
    let listen_ip: IpAddr = random_loopback();
    let _harness = HarnessBuilder::new()
        .record(plain)
        .record(with_header)
        .config(move |cfg| cfg.tcp_listen_ip = Some(listen_ip))
        .https()
        .start_with_tls(Some((cert, key)))
        .await?;

    // The machine gets the bytes in the clear; the client gets them back over TLS.
    let public = SocketAddr::new(listen_ip, tls_port);
    let mut client = tls_connect(public, &ca, &host("tlsraw")).await?;
    assert_eq!(
        client.get_ref().1.alpn_protocol(),
        None,
        "raw TCP offers no ALPN"
    );
    let message = b"over tls\n".repeat(2000);
    client.write_all(&message).await?;
    let mut echoed = vec![0; message.len()];
    tokio::time::timeout(DEADLINE, client.read_exact(&mut echoed))
        .await
        .context("no echo")??;
    assert_eq!(echoed, message);

    // With proxy_proto too: the header names the TCP client, then the decrypted bytes.
    let public = SocketAddr::new(listen_ip, pp_port);
    let client = tls_connect(public, &ca, &host("tlspp")).await?;
    let client_addr = client.get_ref().0.local_addr()?;
    expect_proxy_header_then_echo(client, client_addr, public).await?;

    // A client that does not speak TLS gets nothing from the machine.
    let mut plain_client = connect_when_listening(SocketAddr::new(listen_ip, tls_port)).await?;
    plain_client.write_all(b"not a client hello\r\n").await?;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(DEADLINE, plain_client.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("not a client hello"),
        "plaintext must not reach the machine and come back: {read:?} {buf:?}"
    );
    Ok(())
}
