//! Delays between nodes match the measured table, IPv4 and IPv6, and the router adds little.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::support::{connect_times, median, must_create, must_serve, wait_until};

const SLACK: Duration = Duration::from_millis(3);

/// Every handshake takes at least the table's RTT; the median is within `SLACK` of it.
fn assert_rtt(what: &str, samples: &[Duration], rtt: Duration) {
    let min = samples.iter().min().expect("samples");
    let med = median(samples);
    eprintln!("{what}: table rtt {rtt:?}, measured min {min:?} median {med:?}");
    assert!(
        *min >= rtt,
        "{what}: {min:?} is faster than the table's {rtt:?}"
    );
    assert!(
        med <= rtt + SLACK,
        "{what}: median {med:?} is over {rtt:?} + {SLACK:?}"
    );
}

#[tokio::test]
async fn tcp_rtt_matches_the_table_v4_and_v6() {
    let tb = must_create(
        "rtt",
        &[("ams1", "ams"), ("fra1", "Frankfurt"), ("syd1", "syd")],
    )
    .await;
    let table = tb.delays();
    for (server, rtt) in [
        ("fra1", table.rtt("ams", "fra").unwrap()),
        ("syd1", table.rtt("ams", "syd").unwrap()),
    ] {
        let info = tb.node(server).unwrap();
        assert_eq!(rtt, 2 * table.one_way(&info.region, "ams").unwrap());
        for addr in [IpAddr::V4(info.ipv4), IpAddr::V6(info.ipv6)] {
            let target = must_serve(&tb, server, addr, 0, "hi").await;
            let samples = connect_times(&tb, "ams1", target, 5).await.unwrap();
            assert_rtt(&format!("ams1 -> {server} {addr}"), &samples, rtt);
        }
    }
    assert_eq!(table.rtt("ams", "fra"), Some(Duration::from_micros(13_850)));
    tb.destroy().unwrap();
}

/// Two nodes in one city: the table says 0.1 ms each way; whatever is above that is the
/// router's overhead (read, timer, write) plus the kernel's.
#[tokio::test]
async fn router_overhead_is_well_under_a_millisecond_per_direction() {
    let tb = must_create("ovh", &[("a", "ams"), ("b", "ams")]).await;
    let b = tb.node("b").unwrap();
    let target = must_serve(&tb, "b", IpAddr::V4(b.ipv4), 0, "hi").await;
    let samples = connect_times(&tb, "a", target, 50).await.unwrap();
    let rtt = tb.delays().rtt("ams", "ams").unwrap();
    let med = median(&samples);
    let per_direction = med.saturating_sub(rtt) / 2;
    eprintln!(
        "same-city rtt: table {rtt:?}, min {:?}, median {med:?}, overhead per direction {per_direction:?}",
        samples.iter().min().unwrap()
    );
    assert!(samples.iter().all(|s| *s >= rtt), "{samples:?}");
    assert!(
        per_direction < Duration::from_millis(1),
        "overhead {per_direction:?} per direction"
    );
}

#[tokio::test]
async fn unknown_destinations_are_dropped_and_counted() {
    const SENT: u64 = 20;
    let tb = must_create("unk", &[("a", "ams")]).await;
    let before = tb.stats();
    let socket = tb
        .run_in("a", || std::net::UdpSocket::bind("0.0.0.0:0"))
        .await
        .unwrap()
        .unwrap();
    for _ in 0..SENT {
        socket.send_to(b"anyone?", "198.18.7.7:80").unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(5), || tb.stats().no_route
            >= before.no_route + SENT)
        .await,
        "{:?}",
        tb.stats()
    );
    assert_eq!(tb.stats().delivered, before.delivered);
}

/// One TCP stream over a 13.85 ms path; reports what the router sustains.
#[tokio::test]
async fn bulk_tcp_throughput() {
    const BYTES: usize = 32 << 20;
    let tb = must_create("bulk", &[("ams1", "ams"), ("fra1", "fra")]).await;
    let fra = tb.node("fra1").unwrap();
    let listener = tb
        .run_in("fra1", move || std::net::TcpListener::bind((fra.ipv4, 0)))
        .await
        .unwrap()
        .unwrap();
    let target = listener.local_addr().unwrap();
    let sink = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        std::io::copy(&mut stream, &mut std::io::sink()).unwrap()
    });
    let elapsed = tb
        .run_in("ams1", move || {
            let start = Instant::now();
            let mut stream = std::net::TcpStream::connect(target).unwrap();
            let chunk = vec![7u8; 1 << 16];
            for _ in 0..BYTES / chunk.len() {
                stream.write_all(&chunk).unwrap();
            }
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).unwrap();
            start.elapsed()
        })
        .await
        .unwrap();
    assert_eq!(sink.join().unwrap(), BYTES as u64);
    let mbit = BYTES as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
    eprintln!("bulk tcp ams -> fra: {BYTES} bytes in {elapsed:?} = {mbit:.0} Mbit/s");
    assert!(mbit > 20.0, "{mbit} Mbit/s");
}
