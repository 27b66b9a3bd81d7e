//! Replicas: initial load, following changes, waiting, stopping.

use std::time::Duration;

use futures::StreamExt as _;
use godwit_state::{Change, StateError};
use tokio::sync::broadcast::error::RecvError;

use crate::{DEADLINE, machine, must_next, must_world};

#[tokio::test]
async fn put_and_delete_reach_subscribers() {
    let world = must_world().await;
    let bucket = world.must_bucket("godwit_machines").await;
    let replica = bucket.replica().await.unwrap();
    replica.wait_ready(DEADLINE).await.unwrap();
    assert!(replica.is_ready());
    assert!(replica.snapshot().is_empty());
    let mut changes = replica.subscribe();

    let revision = bucket.put("m1", &machine("m1", "started")).await.unwrap();
    assert_eq!(
        must_next(&mut changes).await,
        Change::Put {
            key: "m1".to_owned(),
            value: machine("m1", "started"),
            revision,
        }
    );
    assert_eq!(replica.get("m1"), Some(machine("m1", "started")));

    bucket.delete("m1").await.unwrap();
    assert_eq!(
        must_next(&mut changes).await,
        Change::Delete {
            key: "m1".to_owned()
        }
    );
    assert_eq!(replica.get("m1"), None);
}

#[tokio::test]
async fn loads_what_was_there_before() {
    let world = must_world().await;
    let bucket = world.must_bucket("preexisting").await;
    for id in ["c", "a", "b", "gone"] {
        bucket.put(id, &machine(id, "created")).await.unwrap();
    }
    bucket.put("a", &machine("a", "started")).await.unwrap();
    bucket.delete("gone").await.unwrap();

    let replica = bucket.replica().await.unwrap();
    replica.wait_ready(DEADLINE).await.unwrap();
    assert_eq!(
        replica.snapshot(),
        [
            ("a".to_owned(), machine("a", "started")),
            ("b".to_owned(), machine("b", "created")),
            ("c".to_owned(), machine("c", "created")),
        ]
    );
}

#[tokio::test]
async fn skips_records_that_do_not_decode() {
    let world = must_world().await;
    let bucket = world.must_bucket("mixed").await;
    let loose = world.client.bucket::<String>("mixed").await.unwrap();
    loose
        .put("junk", &"not a machine".to_owned())
        .await
        .unwrap();
    bucket.put("ok", &machine("ok", "started")).await.unwrap();
    let replica = bucket.replica().await.unwrap();
    replica.wait_ready(DEADLINE).await.unwrap();
    assert_eq!(
        replica.snapshot(),
        [("ok".to_owned(), machine("ok", "started"))]
    );
}

#[tokio::test]
async fn wait_for_sees_a_later_put_and_times_out_otherwise() {
    let world = must_world().await;
    let bucket = world.must_bucket("waiting").await;
    let replica = bucket.replica().await.unwrap();

    let writer = bucket.clone();
    let put = tokio::spawn(async move { writer.put("m9", &machine("m9", "started")).await });
    replica
        .wait_for(DEADLINE, |values| {
            values.get("m9").is_some_and(|m| m.state == "started")
        })
        .await
        .unwrap();
    put.await.unwrap().unwrap();

    let timeout = Duration::from_millis(300);
    let started = tokio::time::Instant::now();
    let err = replica
        .wait_for(timeout, |values| values.contains_key("never"))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Timeout { .. }), "{err}");
    assert!(started.elapsed() >= timeout);
    assert_eq!(
        err.to_string(),
        "the replica of bucket waiting did not meet the condition within 300ms"
    );
}

#[tokio::test]
async fn many_records() {
    const N: usize = 2000;
    let world = must_world().await;
    let bucket = world.must_bucket("many").await;
    let early = bucket.replica().await.unwrap();
    early.wait_ready(DEADLINE).await.unwrap();

    futures::stream::iter(0..N)
        .map(|idx| {
            let bucket = bucket.clone();
            async move {
                let id = format!("m{idx:05}");
                bucket.put(&id, &machine(&id, "created")).await
            }
        })
        .buffer_unordered(64)
        .for_each(|result| async move {
            result.expect("put");
        })
        .await;

    early
        .wait_for(DEADLINE, |values| values.len() == N)
        .await
        .unwrap();
    let late = bucket.replica().await.unwrap();
    late.wait_ready(DEADLINE).await.unwrap();
    let snapshot = late.snapshot();
    assert_eq!(snapshot.len(), N);
    assert_eq!(snapshot[0].0, "m00000");
    assert_eq!(
        snapshot[N - 1].1,
        machine(&format!("m{:05}", N - 1), "created")
    );
    assert_eq!(snapshot, early.snapshot());
    assert_eq!(bucket.keys().await.unwrap().len(), N);
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_task() {
    let world = must_world().await;
    let bucket = world.must_bucket("stopping").await;
    let replica = bucket.replica().await.unwrap();
    replica.wait_ready(DEADLINE).await.unwrap();
    let clone = replica.clone();
    let mut changes = replica.subscribe();
    drop(replica);
    bucket.put("m", &machine("m", "created")).await.unwrap();
    assert!(matches!(must_next(&mut changes).await, Change::Put { .. }));
    assert_eq!(clone.get("m"), Some(machine("m", "created")));

    drop(clone);
    // The channel closes only once the task has ended and dropped its side.
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match changes.recv().await {
                Err(RecvError::Closed) => break,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "replica task still running after the last drop"
    );
}

#[tokio::test]
async fn cancel_stops_the_task() {
    let world = must_world().await;
    let bucket = world.must_bucket("cancelled").await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let replica = bucket.replica_until(cancel.clone()).await.unwrap();
    let mut changes = replica.subscribe();
    cancel.cancel();
    // The handle is dropped too: the channel closes only once the task is gone as well.
    drop(replica);
    let closed = tokio::time::timeout(DEADLINE, async {
        while !matches!(changes.recv().await, Err(RecvError::Closed)) {}
    })
    .await;
    assert!(closed.is_ok(), "replica task still running after cancel");
}
