//! Regional buckets with three real nats-servers as three regions on loopback: ams is the
//! hub, iad and syd connect to it by leaf connections.

use std::time::Duration;

use godwit_state::testing::NatsServer;
use godwit_state::{RegionalBucket, Replica, StateClient, StateError};

use crate::{DEADLINE, Machine, machine};

const REGIONS: [&str; 3] = ["ams", "iad", "syd"];

/// Catching up after a server restart waits for the server's mirror retry (about 5 s), on
/// top of reconnecting.
const CATCH_UP: Duration = Duration::from_secs(40);

/// One region: its server, a client of it, its view of bucket `machines` and a replica.
struct Region {
    // Dropped in this order: the replica's tasks and the client before the server.
    replica: Replica<Machine>,
    bucket: RegionalBucket<Machine>,
    client: StateClient,
    nats: NatsServer,
}

async fn must_region(nats: NatsServer, code: &str) -> Region {
    let client = StateClient::connect(&nats.url).await.expect("connect");
    let bucket = client
        .regional_bucket::<Machine>("machines", code, &REGIONS)
        .await
        .expect("open regional bucket");
    let replica = bucket.replica().await.expect("start replica");
    replica.wait_ready(DEADLINE).await.expect("replica ready");
    Region {
        replica,
        bucket,
        client,
        nats,
    }
}

/// ams (the hub), iad and syd.
async fn must_regions() -> [Region; 3] {
    let ams = NatsServer::start_region("ams", true, &[]).expect("start ams");
    let hub = vec![ams.leaf_url().expect("ams accepts leaf connections")];
    let iad = NatsServer::start_region("iad", false, &hub).expect("start iad");
    let syd = NatsServer::start_region("syd", false, &hub).expect("start syd");
    [
        must_region(ams, "ams").await,
        must_region(iad, "iad").await,
        must_region(syd, "syd").await,
    ]
}

/// Waits until `replica` has `value` under `key`.
async fn must_see(replica: &Replica<Machine>, key: &str, value: &Machine, within: Duration) {
    replica
        .wait_for(within, |values| values.get(key) == Some(value))
        .await
        .unwrap_or_else(|error| panic!("{key} = {value:?} never seen: {error:#}"));
}

/// Puts, retrying while the client reconnects to a restarted server.
async fn must_put(bucket: &RegionalBucket<Machine>, key: &str, value: &Machine) {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        match bucket.home().put(key, value).await {
            Ok(_) => return,
            // Not yet reconnected: the error is shown if it lasts past the deadline.
            Err(_) if tokio::time::Instant::now() < deadline => {
                // Poll interval while waiting for the reconnect, bounded by the deadline.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("put {key}: {error:#}"),
        }
    }
}

#[tokio::test]
async fn a_put_in_one_region_is_seen_in_every_other() {
    let [ams, iad, syd] = must_regions().await;
    assert_eq!(ams.bucket.regions(), ["ams", "iad", "syd"]);
    assert_eq!(syd.bucket.regions(), ["syd", "ams", "iad"]);

    let in_ams = machine("m-ams", "started");
    ams.bucket.home().put("m-ams", &in_ams).await.unwrap();
    // syd → ams → iad crosses the hub.
    let in_syd = machine("m-syd", "created");
    syd.bucket.home().put("m-syd", &in_syd).await.unwrap();
    for region in [&ams, &iad, &syd] {
        must_see(&region.replica, "m-ams", &in_ams, DEADLINE).await;
        must_see(&region.replica, "m-syd", &in_syd, DEADLINE).await;
    }
    assert_eq!(
        iad.replica.snapshot(),
        [("m-ams".to_owned(), in_ams), ("m-syd".to_owned(), in_syd)]
    );

    // Each region's records are only in its own bucket.
    assert_eq!(ams.bucket.home().keys().await.unwrap(), ["m-ams"]);
    assert!(iad.bucket.home().keys().await.unwrap().is_empty());
    assert_eq!(syd.bucket.home().keys().await.unwrap(), ["m-syd"]);
    assert_eq!(ams.bucket.home().name(), "machines_ams");

    // A delete travels too.
    syd.bucket.home().delete("m-syd").await.unwrap();
    for region in [&ams, &iad, &syd] {
        region
            .replica
            .wait_for(DEADLINE, |values| !values.contains_key("m-syd"))
            .await
            .expect("delete seen");
    }

    // Opening again (another host of the region, regions in another order) is idempotent
    // and sees what is there.
    let again = iad
        .client
        .regional_bucket::<Machine>("machines", "iad", &["syd", "iad", "ams", "syd"])
        .await
        .unwrap();
    let replica = again.replica().await.unwrap();
    must_see(&replica, "m-ams", &machine("m-ams", "started"), DEADLINE).await;
    assert_eq!(replica.snapshot().len(), 1);
}

#[tokio::test]
async fn a_region_cut_off_stalls_only_itself_and_catches_up() {
    let [ams, iad, mut syd] = must_regions().await;
    let before = machine("m-syd", "started");
    syd.bucket.home().put("m-syd", &before).await.unwrap();
    for region in [&ams, &iad] {
        must_see(&region.replica, "m-syd", &before, DEADLINE).await;
    }

    syd.nats.stop();

    // ams and iad keep exchanging, and still serve what syd wrote before.
    let from_ams = machine("m-ams", "started");
    ams.bucket.home().put("m-ams", &from_ams).await.unwrap();
    let from_iad = machine("m-iad", "started");
    iad.bucket.home().put("m-iad", &from_iad).await.unwrap();
    for region in [&ams, &iad] {
        must_see(&region.replica, "m-ams", &from_ams, DEADLINE).await;
        must_see(&region.replica, "m-iad", &from_iad, DEADLINE).await;
        assert_eq!(region.replica.get("m-syd"), Some(before.clone()));
    }
    // syd's replica keeps serving what it knew, its server gone.
    assert_eq!(syd.replica.get("m-syd"), Some(before.clone()));
    assert_eq!(syd.replica.get("m-ams"), None);
    // A bucket opened while syd is unreachable gets its mirror of syd's all the same.
    let hosts = ams
        .client
        .regional_bucket::<Machine>("hosts", "ams", &REGIONS)
        .await
        .expect("regional bucket with a region down");
    let hosts_replica = hosts.replica().await.unwrap();
    hosts_replica.wait_ready(DEADLINE).await.unwrap();

    syd.nats.restart().expect("restart syd");

    // syd catches up with what it missed, and its new writes reach the others.
    must_see(&syd.replica, "m-ams", &from_ams, CATCH_UP).await;
    must_see(&syd.replica, "m-iad", &from_iad, CATCH_UP).await;
    let after = machine("m-syd", "stopped");
    must_put(&syd.bucket, "m-syd", &after).await;
    for region in [&ams, &iad, &syd] {
        must_see(&region.replica, "m-syd", &after, CATCH_UP).await;
    }
    let syd_hosts = syd
        .client
        .regional_bucket::<Machine>("hosts", "syd", &REGIONS)
        .await
        .unwrap();
    let host = machine("h-syd", "up");
    syd_hosts.home().put("h-syd", &host).await.unwrap();
    must_see(&hosts_replica, "h-syd", &host, CATCH_UP).await;
}

#[tokio::test]
async fn with_the_hub_down_spokes_write_locally_and_exchange_when_it_is_back() {
    let [mut ams, iad, syd] = must_regions().await;
    ams.nats.stop();

    // iad's own bucket is on iad's server: writing and reading locally go on.
    let during = machine("m-iad", "started");
    iad.bucket.home().put("m-iad", &during).await.unwrap();
    must_see(&iad.replica, "m-iad", &during, DEADLINE).await;

    ams.nats.restart().expect("restart ams");
    // The spokes reconnect their leaf connections to the same port, the mirrors resume.
    must_see(&syd.replica, "m-iad", &during, CATCH_UP).await;
    must_see(&ams.replica, "m-iad", &during, CATCH_UP).await;
}

#[tokio::test]
async fn rejects_invalid_regions() {
    let nats = NatsServer::start_region("ams", false, &[]).expect("start ams");
    assert_eq!(nats.domain(), Some("ams"));
    assert_eq!(nats.leaf_url(), None);
    let client = StateClient::connect(&nats.url).await.unwrap();
    for regions in [&["ams", "a.b"][..], &["ams", ""], &["ams", "x>"]] {
        let error = client
            .regional_bucket::<Machine>("machines", "ams", regions)
            .await
            .expect_err("invalid region accepted");
        assert!(
            matches!(error, StateError::InvalidRegion { .. }),
            "{error:#}"
        );
    }
}

#[tokio::test]
async fn get_reads_a_key_at_its_writing_region_when_the_mirror_lacks_it() {
    let [ams, iad, mut syd] = must_regions().await;
    // iad's copy of ams's bucket is a plain, empty bucket, not a mirror: nothing ams writes
    // arrives there, so only a read at ams's own server can find it.
    iad.client
        .bucket::<Machine>("early_ams")
        .await
        .expect("plain bucket in place of the mirror");
    let in_iad = iad
        .client
        .regional_bucket::<Machine>("early", "iad", &REGIONS)
        .await
        .unwrap();
    let in_ams = ams
        .client
        .regional_bucket::<Machine>("early", "ams", &REGIONS)
        .await
        .unwrap();
    let written = machine("m-early", "started");
    in_ams.home().put("m-early", &written).await.unwrap();
    assert_eq!(in_iad.get("m-early").await.unwrap(), Some(written.clone()));
    let replica = in_iad.replica().await.unwrap();
    replica.wait_ready(DEADLINE).await.unwrap();
    assert_eq!(
        replica.get("m-early"),
        None,
        "the replica reads only locally"
    );

    // A region that cannot be reached counts as not holding the key.
    assert_eq!(in_iad.get("m-none").await.unwrap(), None);
    syd.nats.stop();
    assert_eq!(in_iad.get("m-none").await.unwrap(), None);
    assert_eq!(in_iad.get("m-early").await.unwrap(), Some(written));
}
