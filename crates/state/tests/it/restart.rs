//! The replica across a nats-server crash and restart (same store, same port).

use godwit_state::Change;

use crate::{DEADLINE, machine, must_next, must_world};

#[tokio::test]
async fn replica_follows_across_a_restart() {
    let mut world = must_world().await;
    let bucket = world.must_bucket("godwit_machines").await;
    bucket
        .put("before", &machine("before", "started"))
        .await
        .unwrap();
    bucket
        .put("doomed", &machine("doomed", "started"))
        .await
        .unwrap();
    let replica = bucket.replica().await.unwrap();
    replica.wait_ready(DEADLINE).await.unwrap();
    let mut changes = replica.subscribe();

    world.nats.restart().expect("restart nats-server");

    // Writes fail until the client has reconnected and JetStream has loaded the stream.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let revision = loop {
        match bucket.put("after", &machine("after", "started")).await {
            Ok(revision) => break revision,
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("put after restart not yet possible: {error:#}");
                // Poll interval while waiting for the reconnect, bounded by the deadline.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error) => panic!("put after restart: {error:#}"),
        }
    };
    assert_eq!(
        must_next(&mut changes).await,
        Change::Put {
            key: "after".to_owned(),
            value: machine("after", "started"),
            revision,
        }
    );
    bucket.delete("doomed").await.unwrap();
    assert_eq!(
        must_next(&mut changes).await,
        Change::Delete {
            key: "doomed".to_owned()
        }
    );
    assert_eq!(
        replica.snapshot(),
        [
            ("after".to_owned(), machine("after", "started")),
            ("before".to_owned(), machine("before", "started")),
        ]
    );
    // The data survived in the store.
    assert_eq!(
        bucket.get("before").await.unwrap(),
        Some(machine("before", "started"))
    );
}
