//! `fly-replay` / `godwit-replay`: the request goes again to the machine or region named.

use godwit_types::MachineState;

use crate::support::{Backend, Behaviour, HarnessBuilder, record};

#[tokio::test]
async fn replays_to_a_region_and_to_an_instance() -> anyhow::Result<()> {
    let primary = Backend::start("primary").await;
    let replica = Backend::start_with(
        "replica",
        Behaviour {
            replay: Some(("fly-replay", "region=iad;state=from-ams".to_owned())),
            replay_always: false,
        },
    )
    .await;
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
    let unknown = Backend::start_with(
        "c",
        Behaviour {
            replay: Some(("fly-replay", "instance=m-nowhere".to_owned())),
            replay_always: false,
        },
    )
    .await;
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
