//! Reads and writes straight against the bucket.

use godwit_state::{StateClient, StateError, id_from_key, key_for};

use crate::{Machine, machine, must_world};

#[tokio::test]
async fn put_get_delete_keys() {
    let world = must_world().await;
    let bucket = world.must_bucket("godwit_machines").await;
    assert_eq!(bucket.get("m1").await.unwrap(), None);
    assert!(bucket.keys().await.unwrap().is_empty());

    let first = bucket.put("m1", &machine("m1", "created")).await.unwrap();
    let second = bucket.put("m1", &machine("m1", "started")).await.unwrap();
    assert!(second > first, "revisions grow: {first} then {second}");
    bucket.put("m0", &machine("m0", "stopped")).await.unwrap();
    assert_eq!(
        bucket.get("m1").await.unwrap(),
        Some(machine("m1", "started"))
    );
    assert_eq!(bucket.keys().await.unwrap(), ["m0", "m1"]);

    bucket.delete("m1").await.unwrap();
    bucket.delete("never-there").await.unwrap();
    assert_eq!(bucket.get("m1").await.unwrap(), None);
    assert_eq!(bucket.keys().await.unwrap(), ["m0"]);
}

#[tokio::test]
async fn reopening_a_bucket_sees_its_data() {
    let world = must_world().await;
    let bucket = world.must_bucket("godwit_hosts").await;
    bucket.put("h1", &machine("h1", "up")).await.unwrap();
    let other_client = StateClient::connect(&world.nats.url).await.unwrap();
    let again = other_client
        .bucket::<Machine>("godwit_hosts")
        .await
        .unwrap();
    assert_eq!(again.get("h1").await.unwrap(), Some(machine("h1", "up")));
    assert_eq!(again.name(), "godwit_hosts");
}

#[tokio::test]
async fn escaped_ids_round_trip_through_keys() {
    let world = must_world().await;
    let bucket = world.must_bucket("escaped").await;
    let ids = ["org/app.m-1", "café", "a b", "x=y"];
    for id in ids {
        bucket
            .put(&key_for(id), &machine(id, "created"))
            .await
            .unwrap();
    }
    let mut back: Vec<String> = bucket
        .keys()
        .await
        .unwrap()
        .iter()
        .map(|key| id_from_key(key).expect("keys made by key_for"))
        .collect();
    back.sort();
    let mut want: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    want.sort();
    assert_eq!(back, want);
}

#[tokio::test]
async fn rejects_bad_names_and_bad_records() {
    let world = must_world().await;
    let err = world.client.bucket::<Machine>("a.b").await.unwrap_err();
    assert!(matches!(err, StateError::InvalidBucket { .. }), "{err}");

    let bucket = world.must_bucket("strict").await;
    for key in ["", "a b", ".a", "a.", "a*", "a>"] {
        let err = bucket.put(key, &machine("x", "created")).await.unwrap_err();
        assert!(
            matches!(err, StateError::InvalidKey { .. }),
            "{key:?}: {err}"
        );
    }

    // Another writer stored something that is not a Machine under the same bucket.
    let loose = world.client.bucket::<String>("strict").await.unwrap();
    loose
        .put("junk", &"not a machine".to_owned())
        .await
        .unwrap();
    let err = bucket.get("junk").await.unwrap_err();
    assert!(matches!(err, StateError::Decode { .. }), "{err}");
}

#[tokio::test]
async fn connect_gives_up_at_its_deadline() {
    let started = tokio::time::Instant::now();
    let timeout = std::time::Duration::from_millis(300);
    // Port 1 on loopback: nothing listens there, so every attempt is refused.
    let err = StateClient::connect_within("nats://127.0.0.1:1", timeout)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Connect { .. }), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_waits_for_a_server_that_comes_up_late() {
    let mut nats = godwit_state::testing::NatsServer::start().unwrap();
    nats.stop();
    let url = nats.url.clone();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let connecting = tokio::spawn(async move {
        started_tx.send(()).expect("test waits for this");
        StateClient::connect(&url).await
    });
    started_rx.await.unwrap();
    // The first attempts hit a closed port while the server starts (tens of ms).
    let nats = tokio::task::spawn_blocking(move || nats.restart().map(|()| nats))
        .await
        .unwrap()
        .unwrap();
    let client = connecting
        .await
        .unwrap()
        .expect("connect once the server is up");
    let bucket = client.bucket::<Machine>("late").await.unwrap();
    bucket.put("m", &machine("m", "created")).await.unwrap();
    drop(nats);
}

#[tokio::test]
async fn connect_fails_at_once_on_a_malformed_url() {
    let started = tokio::time::Instant::now();
    let err = StateClient::connect("nats://[not a host")
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Connect { .. }), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
