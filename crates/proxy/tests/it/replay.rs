//! `fly-replay` / `godwit-replay`: the request goes again to the machine or region named.

use godwit_types::MachineState;

use crate::support::{Backend, Behaviour, HarnessBuilder, record};

mod fields;

#[tokio::test]
async fn replays_to_a_region_and_to_an_instance() -> anyhow::Result<()> {
    let primary = Backend::start("primary").await;
    let replica =
        Backend::start_with("replica", Behaviour::replaying("region=iad;state=from-ams")).await;
    let pointer = Backend::start_with(
        "pointer",
        Behaviour {
            replay: Some(("godwit-replay", "instance=m-primary2".to_owned())),
            replay_always: false,
        },
    )
    .await;
    let mut primary_record = record("m-primary", "db", primary.addr, MachineState::Started);
    primary_record.region = "iad".to_owned();
    let mut pointer_record = record("m-pointer", "db2", pointer.addr, MachineState::Started);
    pointer_record.region = "ams".to_owned();
    let mut primary2 = record("m-primary2", "db2", primary.addr, MachineState::Started);
    primary2.region = "iad".to_owned();
    let harness = HarnessBuilder::new()
        .record(primary_record)
        .record(record(
            "m-replica",
            "db",
            replica.addr,
            MachineState::Started,
        ))
        .record(pointer_record)
        .record(primary2)
        .start()
        .await?;

    // ams (the proxy's region) is preferred, so the replica answers first and replays.
    for _ in 0..5 {
        let reply = harness
            .send(
                harness
                    .client()
                    .post(harness.url("/write"))
                    .header("host", "db.apps.godwit.test")
                    .body("insert 1"),
            )
            .await?;
        assert_eq!(reply.status, 200, "{reply:?}");
        let echo = reply.echo();
        assert_eq!(echo["name"], "primary");
        assert_eq!(echo["body"], "insert 1");
        let source = echo["headers"]["fly-replay-src"]
            .as_str()
            .expect("replay source");
        assert!(
            source.starts_with("instance=m-replica;region=ams;t=")
                && source.ends_with(";state=from-ams"),
            "{source}"
        );
        assert!(!reply.headers.contains_key("fly-replay"));
    }
    assert_eq!(replica.served(), 5);

    let reply = harness
        .send(
            harness
                .client()
                .get(harness.url("/"))
                .header("host", "db2.apps.godwit.test"),
        )
        .await?;
    let echo = reply.echo();
    assert_eq!(echo["name"], "primary");
    assert!(
        echo["headers"]["fly-replay-src"]
            .as_str()
            .is_some_and(|s| s.starts_with("instance=m-pointer;region=ams"))
    );
    Ok(())
}

#[tokio::test]
async fn a_replayed_request_cannot_replay_again() -> anyhow::Result<()> {
    let looping = Behaviour {
        replay: Some(("fly-replay", "instance=m-b".to_owned())),
        replay_always: true,
    };
    let a = Backend::start_with("a", looping.clone()).await;
    let b = Backend::start_with("b", looping).await;
    let unknown = Backend::start_with("c", Behaviour::replaying("instance=m-nowhere")).await;
    let mut record_b = record("m-b", "loop", b.addr, MachineState::Started);
    record_b.region = "iad".to_owned();
    let harness = HarnessBuilder::new()
        .record(record("m-a", "loop", a.addr, MachineState::Started))
        .record(record_b)
        .record(record("m-c", "lost", unknown.addr, MachineState::Started))
        .start()
        .await?;
    let reply = harness.get("loop", "/").await?;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(reply.body.starts_with("PA02"), "{reply:?}");
    assert_eq!(b.served(), 1);
    let reply = harness.get("lost", "/").await?;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(
        reply.headers.get("fly-proxy-error").map(String::as_str),
        Some("PA04")
    );
    Ok(())
}

#[tokio::test]
async fn replays_to_another_app_and_elsewhere() -> anyhow::Result<()> {
    let front = Backend::start_with("front", Behaviour::replaying("app=back;state=s1")).await;
    let back_a = Backend::start("back-a").await;
    let back_b = Backend::start("back-b").await;
    let pinned =
        Backend::start_with("pinned", Behaviour::replaying("app=back;instance=m-back-b")).await;
    let moving = Backend::start_with("moving", Behaviour::replaying("elsewhere=true")).await;
    let other = Backend::start("other").await;
    let mut other_record = record("m-other", "mover", other.addr, MachineState::Started);
    // The replaying machine is in the proxy's region, so it is always chosen first.
    other_record.region = "iad".to_owned();
    let harness = HarnessBuilder::new()
        .record(record(
            "m-front",
            "front",
            front.addr,
            MachineState::Started,
        ))
        .record(record(
            "m-back-a",
            "back",
            back_a.addr,
            MachineState::Started,
        ))
        .record(record(
            "m-back-b",
            "back",
            back_b.addr,
            MachineState::Started,
        ))
        .record(record(
            "m-pinned",
            "pinned",
            pinned.addr,
            MachineState::Started,
        ))
        .record(record(
            "m-moving",
            "mover",
            moving.addr,
            MachineState::Started,
        ))
        .record(other_record)
        .start()
        .await?;

    let reply = harness.get("front", "/x").await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    let echo = reply.echo();
    assert!(
        echo["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("back-"))
    );
    assert_eq!(echo["headers"]["host"], "front.apps.godwit.test");
    let source = echo["headers"]["fly-replay-src"].as_str().expect("source");
    assert!(
        source.starts_with("instance=m-front;region=ams;t=")
            && source.ends_with(";app=front;state=s1"),
        "{source}"
    );

    for _ in 0..5 {
        let reply = harness.get("pinned", "/").await?;
        assert_eq!(reply.served_by(), "back-b", "{reply:?}");
    }
    for _ in 0..5 {
        let reply = harness.get("mover", "/").await?;
        assert_eq!(reply.served_by(), "other", "{reply:?}");
    }
    assert_eq!(moving.served(), 5);
    assert_eq!(back_a.served() + back_b.served(), 6);
    Ok(())
}

#[tokio::test]
async fn replays_to_unknown_apps_and_lone_machines_fail() -> anyhow::Result<()> {
    let lost = Backend::start_with("lost", Behaviour::replaying("app=nowhere")).await;
    let alone = Backend::start_with("alone", Behaviour::replaying("elsewhere=true")).await;
    let harness = HarnessBuilder::new()
        .record(record("m-lost", "lost", lost.addr, MachineState::Started))
        .record(record(
            "m-alone",
            "alone",
            alone.addr,
            MachineState::Started,
        ))
        .start()
        .await?;
    for app in ["lost", "alone"] {
        let reply = harness.get(app, "/").await?;
        assert_eq!(reply.status, 502, "{reply:?}");
        assert_eq!(
            reply.headers.get("fly-proxy-error").map(String::as_str),
            Some("PA04"),
            "{reply:?}"
        );
    }
    Ok(())
}
