//! Partitions and packet loss.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::support::{fetch, must_create, must_serve, wait_until};

const SHORT: Duration = Duration::from_millis(500);

#[tokio::test]
async fn partition_blocks_both_ways_and_heals() {
    let tb = must_create("part", &[("a", "ams"), ("b", "fra"), ("c", "lhr")]).await;
    let mut servers = std::collections::HashMap::new();
    for node in ["a", "b", "c"] {
        let addr = IpAddr::V4(tb.node(node).unwrap().ipv4);
        servers.insert(node, must_serve(&tb, node, addr, 0, node).await);
    }
    let reach = |from: &'static str, to: &'static str| {
        let (tb, target) = (&tb, servers[to]);
        async move { fetch(tb, from, target, SHORT).await.ok() }
    };
    assert_eq!(reach("a", "b").await.as_deref(), Some("b"));

    tb.partition(&["a"], &["b"], true).unwrap();
    let faulted = tb.stats().faulted;
    assert_eq!(reach("a", "b").await, None, "a -> b must be cut");
    assert_eq!(reach("b", "a").await, None, "b -> a must be cut");
    assert_eq!(reach("a", "c").await.as_deref(), Some("c"));
    assert_eq!(reach("c", "b").await.as_deref(), Some("b"));
    assert!(tb.stats().faulted > faulted, "{:?}", tb.stats());

    tb.partition(&["b"], &["a"], false).unwrap();
    assert_eq!(reach("a", "b").await.as_deref(), Some("b"));
    assert_eq!(reach("b", "a").await.as_deref(), Some("a"));

    tb.set_down("c", true).unwrap();
    assert_eq!(reach("a", "c").await, None, "c is down");
    tb.set_down("c", false).unwrap();
    assert_eq!(reach("a", "c").await.as_deref(), Some("c"));
}

#[tokio::test]
async fn loss_drops_about_the_configured_fraction() {
    const SENT: u64 = 2000;
    const BATCH: u64 = 100;
    let tb = must_create("loss", &[("a", "ams"), ("b", "ams")]).await;
    let b_addr = SocketAddr::new(IpAddr::V6(tb.node("b").unwrap().ipv6), 9000);
    let receiver = tb
        .run_in("b", move || std::net::UdpSocket::bind(b_addr))
        .await
        .unwrap()
        .unwrap();
    receiver.set_nonblocking(true).unwrap();
    let receiver = tokio::net::UdpSocket::from_std(receiver).unwrap();
    let received = Arc::new(AtomicU64::new(0));
    tokio::spawn({
        let received = received.clone();
        async move {
            let mut buf = [0u8; 64];
            while receiver.recv(&mut buf).await.is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let sender = tb
        .run_in("a", || std::net::UdpSocket::bind("[::]:0"))
        .await
        .unwrap()
        .unwrap();

    tb.set_loss("b", 0.3).unwrap();
    assert!(tb.set_loss("b", 1.5).is_err());
    let lost_before = tb.stats().lost;
    let accounted = || received.load(Ordering::Relaxed) + tb.stats().lost - lost_before;
    for batch in 0..SENT / BATCH {
        for _ in 0..BATCH {
            sender.send_to(b"ping", b_addr).unwrap();
        }
        // Every datagram is either received or counted lost; wait for this batch to settle
        // so the receiver's socket buffer never overflows.
        let want = (batch + 1) * BATCH;
        assert!(
            wait_until(Duration::from_secs(10), || accounted() == want).await,
            "batch {batch}: {} accounted of {want}",
            accounted()
        );
    }
    let lost = tb.stats().lost - lost_before;
    let fraction = lost as f64 / SENT as f64;
    eprintln!("lost {lost} of {SENT} ({fraction:.3}), configured 0.3");
    assert!(
        (0.25..=0.35).contains(&fraction),
        "lost fraction {fraction}"
    );

    tb.set_loss("b", 0.0).unwrap();
    let before = received.load(Ordering::Relaxed);
    for _ in 0..BATCH {
        sender.send_to(b"ping", b_addr).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(10), || received.load(Ordering::Relaxed)
            == before + BATCH)
        .await
    );
    assert_eq!(tb.stats().lost, lost_before + lost);
}
