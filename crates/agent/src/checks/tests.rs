use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;

use super::*;

fn config(value: serde_json::Value) -> MachineConfig {
    serde_json::from_value(value).expect("config")
}

#[test]
fn checks_get_names_ports_and_defaults() {
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let config = config(json!({
        "image": "x",
        "services": [
            { "internal_port": 8080, "checks": [
                { "type": "http", "path": "/health", "interval": "5s" },
                { "type": "tcp", "port": 9090, "grace_period": "10s" },
            ]},
            { "internal_port": 7000, "checks": [ { "type": "tcp", "timeout": 500 } ] },
        ],
        "checks": {
            "alive": { "type": "http", "port": 8081, "method": "head" },
            "bad": { "type": "exec", "port": 1 },
            "noport": { "type": "tcp" },
        },
    }));
    let probes = probes(&config, ip);
    let names: Vec<&str> = probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "servicecheck-0-8080",
            "servicecheck-1-9090",
            "servicecheck-2-7000",
            "alive",
            "bad",
            "noport"
        ]
    );
    let first = &probes[0];
    assert_eq!(first.addr, SocketAddr::new(ip, 8080));
    assert!(
        matches!(&first.kind, ProbeKind::Http { method, path } if method == reqwest::Method::GET && path == "/health")
    );
    assert_eq!(
        (first.interval, first.timeout, first.grace),
        (Duration::from_secs(5), DEFAULT_TIMEOUT, Duration::ZERO)
    );
    assert_eq!(probes[1].grace, Duration::from_secs(10));
    assert_eq!(probes[1].interval, DEFAULT_INTERVAL);
    assert_eq!(probes[2].timeout, Duration::from_millis(500));
    assert!(
        matches!(&probes[3].kind, ProbeKind::Http { method, .. } if method == reqwest::Method::HEAD)
    );
    assert!(matches!(&probes[4].kind, ProbeKind::Invalid(why) if why.contains("exec")));
    assert!(matches!(&probes[5].kind, ProbeKind::Invalid(why) if why.contains("no port")));
}

#[tokio::test]
async fn probes_pass_and_fail_against_real_sockets() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // A tiny HTTP server: /ok answers 200, anything else a redirect.
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = vec![0u8; 1024];
            let n = conn.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let reply = if request.starts_with("GET /ok ") {
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                "HTTP/1.1 302 Found\r\nlocation: /ok\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            };
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    let http = probe::http_client().expect("client");
    let probe = |kind: ProbeKind, addr: SocketAddr| Probe {
        name: "c".into(),
        kind,
        addr,
        interval: DEFAULT_INTERVAL,
        timeout: Duration::from_secs(2),
        grace: Duration::ZERO,
    };
    let http_kind = |path: &str| ProbeKind::Http {
        method: reqwest::Method::GET,
        path: path.into(),
    };
    assert!(probe(ProbeKind::Tcp, addr).run(Some(&http)).await.is_ok());
    let ok = probe(http_kind("/ok"), addr).run(Some(&http)).await;
    assert!(ok.as_ref().is_ok_and(|o| o.contains("200")), "{ok:?}");
    let redirect = probe(http_kind("/moved"), addr).run(Some(&http)).await;
    assert!(
        redirect.as_ref().is_err_and(|o| o.contains("302")),
        "redirects are not followed: {redirect:?}"
    );
    // A port nothing listens on (bound, then closed).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let refused = probe(ProbeKind::Tcp, closed).run(Some(&http)).await;
    assert!(refused.is_err(), "{refused:?}");
}
