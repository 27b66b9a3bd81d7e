//! PROXY protocol v2 (binary): a port with `proxy_proto_options = { version = "v2" }` sends
//! the v2 header first; the machine parses it and answers with the source address it read.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use godwit_types::MachineState;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::backend::{random_loopback, tcp_server};
use crate::support::{HarnessBuilder, record};
use crate::tcp::{connect_when_listening, expect_proxy_header_then_echo, raw_port};

const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A TCP server that reads a PROXY v2 header, writes back `<src> <dst>\n` (or what was
/// wrong), then echoes.
async fn v2_machine() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    tcp_server(|mut stream| async move {
        let answer = match read_v2(&mut stream).await {
            Ok((src, dst)) => format!("{src} {dst}\n"),
            Err(reason) => format!("bad header: {reason}\n"),
        };
        let _ = stream.write_all(answer.as_bytes()).await;
        let (mut read, mut write) = stream.split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
    })
    .await
}

/// Reads a v2 PROXY header (TCP over IPv4) → (src, dst).
async fn read_v2(stream: &mut TcpStream) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let mut fixed = [0_u8; 16];
    stream.read_exact(&mut fixed).await?;
    anyhow::ensure!(&fixed[..12] == SIGNATURE, "signature {:?}", &fixed[..12]);
    anyhow::ensure!(fixed[12] == 0x21, "version/command {:#x}", fixed[12]);
    anyhow::ensure!(fixed[13] == 0x11, "family/protocol {:#x}", fixed[13]);
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    anyhow::ensure!(len >= 12, "address block of {len} bytes");
    let mut block = vec![0_u8; len];
    stream.read_exact(&mut block).await?;
    let ip = |at: usize| {
        IpAddr::V4(Ipv4Addr::new(
            block[at],
            block[at + 1],
            block[at + 2],
            block[at + 3],
        ))
    };
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    Ok((
        SocketAddr::new(ip(0), port(8)),
        SocketAddr::new(ip(4), port(10)),
    ))
}

#[tokio::test]
async fn proxy_proto_v2_ports_send_a_binary_header_first() -> anyhow::Result<()> {
    let (machine, _task) = v2_machine().await;
    let public_port = 20_000 + rand::random::<u16>() % 40_000;
    let mut pp = record("m-pp2", "pp2", machine, MachineState::Started);
    pp.services[0].ports = vec![raw_port(public_port, &["proxy_proto"], true)];
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
