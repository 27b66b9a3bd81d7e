//! The replay fields beyond app, instance, region and elsewhere: `prefer_instance`,
//! `timeout`, `fallback`, region aliases and `any`, and the JSON form with `transform`.
//! The asking machine replays as the test tells it (`x-test-replay`, `x-test-replay-json`);
//! requests go over HTTP/1.1 (the fast path) and h2c (the hyper path).

use std::time::Duration;

use godwit_types::MachineState;
use tokio::time::Instant;

use crate::fastpath::raw::Scripted;
use crate::steering::{get_with, h2c_with};
use crate::support::{
    Backend, Behaviour, Harness, HarnessBuilder, Reply, dead_addr, host, limits, record, wait_until,
};

/// App `front` (machine m-front) asks; app `back` has m-b1 and m-b2.
async fn front_and_back(harness: HarnessBuilder) -> anyhow::Result<(Harness, [Backend; 3])> {
    let front = Backend::start("front").await;
    let b1 = Backend::start("b1").await;
    let b2 = Backend::start("b2").await;
    let harness = harness
        .record(record(
            "m-front",
            "front",
            front.addr,
            MachineState::Started,
        ))
        .record(record("m-b1", "back", b1.addr, MachineState::Started))
        .record(record("m-b2", "back", b2.addr, MachineState::Started))
        .start()
        .await?;
    Ok((harness, [front, b1, b2]))
}

/// The `fly-replay-failed` the machine saw, and its `elapsed_ms`.
fn failure_seen(reply: &Reply) -> (String, u64) {
    let failed = reply.echo()["headers"]["fly-replay-failed"]
        .as_str()
        .unwrap_or_else(|| panic!("no fly-replay-failed: {reply:?}"))
        .to_owned();
    let elapsed = failed
        .split(';')
        .find_map(|field| field.strip_prefix("elapsed_ms="))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no elapsed_ms in {failed}"));
    (failed, elapsed)
}

#[tokio::test]
async fn prefer_instance_goes_there_else_elsewhere_and_says_so() -> anyhow::Result<()> {
    let (harness, [_front, _b1, b2]) = front_and_back(HarnessBuilder::new()).await?;
    for _ in 0..3 {
        let ask = [("x-test-replay", "app=back;prefer_instance=m-b2")];
        for reply in [
            get_with(&harness, "front", "/", &ask).await?,
            h2c_with(&harness, "front", "/", &ask).await?,
        ] {
            assert_eq!(reply.served_by(), "b2", "{reply:?}");
            let seen = &reply.echo()["headers"];
            assert!(
                seen.get("fly-preferred-instance-unavailable").is_none(),
                "{reply:?}"
            );
        }
    }
    assert_eq!(b2.served(), 6);
    let ask = [("x-test-replay", "app=back;prefer_instance=m-gone")];
    for reply in [
        get_with(&harness, "front", "/", &ask).await?,
        h2c_with(&harness, "front", "/", &ask).await?,
    ] {
        assert!(
            ["b1", "b2"].contains(&reply.served_by().as_str()),
            "{reply:?}"
        );
        assert_eq!(
            reply.echo()["headers"]["fly-preferred-instance-unavailable"],
            "m-gone"
        );
    }
    Ok(())
}

#[tokio::test]
async fn timeouts_end_the_wait_and_fallbacks_go_back_to_the_asker() -> anyhow::Result<()> {
    let busy = Backend::start("busy").await;
    let mut busy_record = record("m-busy", "busy", busy.addr, MachineState::Started);
    busy_record.services[0].concurrency = limits("requests", 1, Some(1));
    let dead = record("m-dead", "dead", dead_addr().await, MachineState::Started);
    let stubborn = Backend::start_with(
        "stubborn",
        Behaviour {
            replay: Some(("fly-replay", "app=nowhere;fallback=force_self".to_owned())),
            replay_always: true,
        },
    )
    .await;
    let builder = HarnessBuilder::new()
        .record(busy_record)
        .record(dead)
        .record(record(
            "m-stub",
            "stub",
            stubborn.addr,
            MachineState::Started,
        ))
        .config(|cfg| cfg.max_attempts = 3);
    let (harness, [front, ..]) = front_and_back(builder).await?;
    let (client, url) = (harness.client(), harness.url("/hold"));
    let held =
        tokio::spawn(async move { client.get(url).header("host", host("busy")).send().await });
    wait_until("busy to hold a request", || busy.in_flight() == 1).await?;

    // The replay's timeout, not the proxy's 5 s queue timeout, ends the wait.
    let started = Instant::now();
    let reply = get_with(
        &harness,
        "front",
        "/",
        &[("x-test-replay", "app=busy;timeout=300ms")],
    )
    .await?;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.body.starts_with("PL01: "), "{reply:?}");
    assert!(reply.body.contains("stayed busy for 300ms"), "{reply:?}");

    let ask = [(
        "x-test-replay",
        "app=busy;timeout=300ms;fallback=force_self",
    )];
    for reply in [
        get_with(&harness, "front", "/again?x=1", &ask).await?,
        h2c_with(&harness, "front", "/again?x=1", &ask).await?,
    ] {
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.served_by(), "front");
        assert_eq!(reply.echo()["path"], "/again");
        let (failed, elapsed) = failure_seen(&reply);
        assert!(
            failed.starts_with("app=busy;reason=timeout;elapsed_ms="),
            "{failed}"
        );
        assert!((300..4000).contains(&elapsed), "{failed}");
        assert!(reply.echo()["headers"].get("fly-replay-src").is_none());
    }

    let cases = [
        (
            "app=nowhere;fallback=prefer_self",
            "app=nowhere;reason=no_candidate;",
        ),
        (
            "app=back;instance=m-gone;fallback=force_self",
            "instance=m-gone;app=back;reason=no_candidate;",
        ),
        (
            "app=dead;region=ams;fallback=force_self",
            "app=dead;region=ams;reason=retries_exhausted;",
        ),
    ];
    for (ask, want) in cases {
        let reply = get_with(&harness, "front", "/", &[("x-test-replay", ask)]).await?;
        assert_eq!(reply.served_by(), "front", "{ask}: {reply:?}");
        let (failed, _) = failure_seen(&reply);
        assert!(failed.starts_with(want), "{ask}: {failed}");
    }
    // Without a fallback the errors stay.
    let reply = get_with(&harness, "front", "/", &[("x-test-replay", "app=dead")]).await?;
    assert_eq!(reply.headers["fly-proxy-error"], "PR03", "{reply:?}");
    // A fallback request cannot replay again.
    let reply = harness.get("stub", "/").await?;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(
        reply
            .body
            .starts_with("PA02: a fallback request cannot replay"),
        "{reply:?}"
    );
    assert_eq!(stubborn.served(), 2, "the request and its fallback");

    busy.release(1);
    assert_eq!(held.await??.status(), 200);
    assert!(front.served() >= 6);
    Ok(())
}

#[tokio::test]
async fn bad_replay_values_are_refused_by_name() -> anyhow::Result<()> {
    let (harness, _backends) = front_and_back(HarnessBuilder::new()).await?;
    let cases = [
        (
            "x-test-replay",
            "app=back;timeout=abc",
            "PA03: replay field timeout: \"abc\" is not a duration: use a number and ms, s or m",
        ),
        (
            "x-test-replay",
            "app=back;fallback=maybe",
            "PA03: replay field fallback: \"maybe\" is not one of force_self, prefer_self",
        ),
        (
            "x-test-replay-json",
            r#"{"app": "back", "colour": "red"}"#,
            "PA03: replay field \"colour\" is not supported: use app,",
        ),
        (
            "x-test-replay-json",
            r#"{"app": "back", "cache": {"ttl": 30}}"#,
            "PA03: replay field \"cache\" is not supported: replay caching is not supported",
        ),
    ];
    for (header, ask, want) in cases {
        for reply in [
            get_with(&harness, "front", "/", &[(header, ask)]).await?,
            h2c_with(&harness, "front", "/", &[(header, ask)]).await?,
        ] {
            assert_eq!(reply.status, 502, "{ask}: {reply:?}");
            assert_eq!(reply.headers["fly-proxy-error"], "PA03");
            assert!(reply.body.starts_with(want), "{ask}: {reply:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn region_lists_keep_their_order_and_aliases_and_any_expand() -> anyhow::Result<()> {
    let mut builder = HarnessBuilder::new();
    let mut backends = Vec::new();
    for region in ["ams", "fra", "iad", "syd"] {
        let backend = Backend::start(region).await;
        let mut machine = record(
            &format!("m-{region}"),
            "geo",
            backend.addr,
            MachineState::Started,
        );
        machine.region = region.to_owned();
        builder = builder.record(machine);
        backends.push(backend);
    }
    let (harness, _front_back) = front_and_back(builder).await?;
    let cases = [
        ("app=geo;region=na", "iad"),
        ("app=geo;region=apac", "syd"),
        ("app=geo;region=eu", "ams"),
        ("app=geo;region=\"iad,fra\"", "iad"),
        ("app=geo;region=\"fra,iad\"", "fra"),
        ("app=geo;region=\"syd,any\"", "syd"),
        ("app=geo;region=\"gru,any\"", "ams"),
        ("app=geo;region=any", "ams"),
    ];
    for (ask, want) in cases {
        for _ in 0..2 {
            let reply = get_with(&harness, "front", "/", &[("x-test-replay", ask)]).await?;
            assert_eq!(reply.served_by(), want, "{ask}: {reply:?}");
        }
        let reply = h2c_with(&harness, "front", "/", &[("x-test-replay", ask)]).await?;
        assert_eq!(reply.served_by(), want, "{ask}: {reply:?}");
    }
    let reply = get_with(
        &harness,
        "front",
        "/",
        &[("x-test-replay", "app=geo;region=sa")],
    )
    .await?;
    assert_eq!(reply.headers["fly-proxy-error"], "PA04", "{reply:?}");
    Ok(())
}

#[tokio::test]
async fn json_replays_transform_the_request() -> anyhow::Result<()> {
    let json = r#"{"app": "back", "prefer_instance": "m-b2", "state": "j1",
        "transform": {"path": "/v2/items", "delete_headers": ["x-secret", "x-test-replay-json"],
            "set_headers": [{"name": "x-tenant", "value": "t1"}]}}"#
        .replace('\n', " ");
    let chunked = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.fly.replay+json; charset=utf-8\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{json}\r\n0\r\n\r\n",
        json.len()
    );
    let router = Scripted::start(chunked).await;
    let builder = HarnessBuilder::new().record(record(
        "m-router",
        "router",
        router.addr,
        MachineState::Started,
    ));
    let (harness, [front, _b1, b2]) = front_and_back(builder).await?;
    let headers = [("x-test-replay-json", json.as_str()), ("x-secret", "s")];
    let replies = [
        get_with(&harness, "front", "/v1/items?q=1", &headers).await?,
        h2c_with(&harness, "front", "/v1/items?q=1", &headers).await?,
        get_with(&harness, "router", "/v1/items", &[("x-secret", "s")]).await?,
    ];
    for reply in replies {
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.served_by(), "b2", "{reply:?}");
        assert!(
            !reply
                .headers
                .get("content-type")
                .is_some_and(|t| t.contains("replay")),
            "{reply:?}"
        );
        let echo = reply.echo();
        assert_eq!(echo["path"], "/v2/items");
        let seen = &echo["headers"];
        assert_eq!(seen["x-tenant"], "t1");
        assert!(seen.get("x-secret").is_none() && seen.get("x-test-replay-json").is_none());
        let source = seen["fly-replay-src"].as_str().unwrap_or_default();
        assert!(
            source.ends_with(";app=front;state=j1") || source.ends_with(";app=router;state=j1"),
            "{source}"
        );
    }
    assert_eq!((front.served(), b2.served(), router.requests()), (2, 3, 1));
    Ok(())
}
