//! Anycast: each source reaches the nearest owner, and fails over when it goes down.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::support::{connect_times, fetch, must_create, must_serve};

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn anycast_reaches_nearest_owner_and_fails_over() {
    let tb = must_create(
        "any",
        &[
            ("fra1", "fra"),
            ("iad1", "iad"),
            ("syd1", "syd"),
            ("u-ams", "ams"),
            ("u-nrt", "Tokyo"),
        ],
    )
    .await;
    let v4: IpAddr = "198.18.255.1".parse().unwrap();
    let v6: IpAddr = "fd77::a:1".parse().unwrap();
    let owners = ["fra1", "iad1", "syd1"];
    tb.add_anycast(v4, &owners).await.unwrap();
    tb.add_anycast(v6, &owners).await.unwrap();
    for owner in owners {
        for addr in [v4, v6] {
            must_serve(&tb, owner, addr, 8080, &format!("served-by-{owner}")).await;
        }
    }
    let fetch_from = |user: &'static str, addr: IpAddr| {
        let tb = &tb;
        async move {
            let got = fetch(tb, user, SocketAddr::new(addr, 8080), TIMEOUT).await;
            got.unwrap_or_else(|e| panic!("{user} -> {addr}: {e:#}; {:?}", tb.stats()))
        }
    };

    for addr in [v4, v6] {
        assert_eq!(fetch_from("u-ams", addr).await, "served-by-fra1");
        assert_eq!(fetch_from("u-nrt", addr).await, "served-by-syd1");
    }
    assert_eq!(
        tb.anycast_target("u-ams", v4).unwrap().as_deref(),
        Some("fra1")
    );

    // The nearest owner's one-way delay is what the user sees.
    let samples = connect_times(&tb, "u-ams", SocketAddr::new(v4, 8080), 3)
        .await
        .unwrap();
    let rtt = tb.delays().rtt("ams", "fra").unwrap();
    assert!(
        samples.iter().all(|s| *s >= rtt && *s < rtt * 2),
        "{samples:?} vs {rtt:?}"
    );

    tb.set_down("fra1", true).unwrap();
    assert_eq!(
        tb.anycast_target("u-ams", v4).unwrap().as_deref(),
        Some("iad1")
    );
    for addr in [v4, v6] {
        assert_eq!(fetch_from("u-ams", addr).await, "served-by-iad1");
        assert_eq!(fetch_from("u-nrt", addr).await, "served-by-syd1");
    }

    assert_eq!(tb.set_region_down("syd", true).unwrap(), 1);
    assert_eq!(fetch_from("u-nrt", v4).await, "served-by-iad1");

    tb.set_down("fra1", false).unwrap();
    tb.set_region_down("Sydney", false).unwrap();
    for addr in [v4, v6] {
        assert_eq!(fetch_from("u-ams", addr).await, "served-by-fra1");
        assert_eq!(fetch_from("u-nrt", addr).await, "served-by-syd1");
    }
    tb.destroy().unwrap();
}

#[tokio::test]
async fn an_owner_reaches_its_own_copy() {
    let tb = must_create("anyl", &[("fra1", "fra"), ("iad1", "iad")]).await;
    let v4: IpAddr = "198.18.255.9".parse().unwrap();
    tb.add_anycast(v4, &["fra1", "iad1"]).await.unwrap();
    must_serve(&tb, "iad1", v4, 80, "iad1").await;
    must_serve(&tb, "fra1", v4, 80, "fra1").await;
    assert_eq!(
        fetch(&tb, "iad1", SocketAddr::new(v4, 80), TIMEOUT)
            .await
            .unwrap(),
        "iad1"
    );
    assert_eq!(
        fetch(&tb, "fra1", SocketAddr::new(v4, 80), TIMEOUT)
            .await
            .unwrap(),
        "fra1"
    );
}
