//! Autostart (a starter that really starts the backend) and autostop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use godwit_proxy::Starter;
use godwit_state::Bucket;
use godwit_types::{MachineRecord, MachineState};

use crate::support::{
    Backend, Behaviour, HarnessBuilder, dead_addr, limits, publish_state, record, wait_until,
};

/// Starts and stops real backends and publishes their records, like an agent would.
#[derive(Debug, Default)]
struct BackendStarter {
    machines: Mutex<HashMap<String, (SocketAddr, Option<Backend>)>>,
    bucket: Mutex<Option<Bucket<MachineRecord>>>,
    starts: AtomicU32,
    stops: AtomicU32,
    /// Start without publishing the started record (an agent slow to publish).
    lagging: std::sync::atomic::AtomicBool,
}

impl BackendStarter {
    fn add(&self, machine_id: &str, addr: SocketAddr) {
        self.machines
            .lock()
            .expect("lock")
            .insert(machine_id.to_owned(), (addr, None));
    }

    async fn publish(&self, machine_id: &str, state: MachineState) -> Result<(), String> {
        let bucket = self.bucket.lock().expect("lock").clone();
        publish_state(bucket.as_ref(), machine_id, state).await
    }
}

#[async_trait::async_trait]
impl Starter for BackendStarter {
    async fn start(&self, _app: &str, machine_id: &str) -> Result<(), String> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        let addr = {
            let machines = self.machines.lock().expect("lock");
            machines.get(machine_id).ok_or("unknown machine")?.0
        };
        let backend = Backend::start_at(machine_id, addr, Behaviour::default()).await;
        self.machines
            .lock()
            .expect("lock")
            .insert(machine_id.to_owned(), (addr, Some(backend)));
        if self.lagging.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.publish(machine_id, MachineState::Started).await
    }

    async fn stop(&self, _app: &str, machine_id: &str) -> Result<(), String> {
        self.stops.fetch_add(1, Ordering::SeqCst);
        if let Some((_, backend)) = self.machines.lock().expect("lock").get_mut(machine_id) {
            drop(backend.take());
        }
        self.publish(machine_id, MachineState::Stopped).await
    }
}

#[tokio::test]
async fn stopped_machines_start_on_demand_and_stop_when_idle() -> anyhow::Result<()> {
    let starter = Arc::new(BackendStarter::default());
    let sleepy_addr = dead_addr().await;
    starter.add("m-sleepy", sleepy_addr);
    let mut sleepy = record("m-sleepy", "sleepy", sleepy_addr, MachineState::Stopped);
    sleepy.services[0].autostop = Some(serde_json::json!("stop"));
    // An app that keeps one machine running: autostop leaves it alone.
    let kept = Backend::start("kept").await;
    let mut kept_record = record("m-kept", "kept", kept.addr, MachineState::Started);
    kept_record.services[0].autostop = Some(serde_json::json!(true));
    kept_record.services[0].min_machines_running = Some(1);
    let harness = HarnessBuilder::new()
        .record(sleepy)
        .record(kept_record)
        .starter(Arc::clone(&starter) as Arc<dyn Starter>)
        .config(|cfg| {
            cfg.autostop_idle = Duration::from_millis(300);
            cfg.autostop_interval = Duration::from_millis(100);
        })
        .start()
        .await?;
    *starter.bucket.lock().expect("lock") = Some(harness.bucket.clone());

    for cycle in 1..=2 {
        // Several requests at once: one start, every request served.
        let mut requests = Vec::new();
        for _ in 0..5 {
            let (client, url) = (harness.client(), harness.url("/"));
            requests.push(tokio::spawn(async move {
                client
                    .get(url)
                    .header("host", "sleepy.apps.godwit.test")
                    .send()
                    .await?
                    .text()
                    .await
            }));
        }
        for request in requests {
            let body: serde_json::Value = serde_json::from_str(&request.await??)?;
            assert_eq!(body["name"], "m-sleepy");
        }
        assert_eq!(starter.starts.load(Ordering::SeqCst), cycle);
        // Idle for longer than autostop_idle: stopped through the starter.
        wait_until("autostop", || starter.stops.load(Ordering::SeqCst) == cycle).await?;
    }
    assert_eq!(harness.get("kept", "/").await?.served_by(), "kept");
    assert_eq!(
        harness.bucket.get("m-kept").await?.map(|r| r.state),
        Some(MachineState::Started)
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_start_is_a_503_with_a_code() -> anyhow::Result<()> {
    let harness = HarnessBuilder::new()
        .record(record(
            "m-broken",
            "broken",
            dead_addr().await,
            MachineState::Stopped,
        ))
        .start()
        .await?;
    let reply = harness.get("broken", "/").await?;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(
        reply.headers.get("fly-proxy-error").map(String::as_str),
        Some("PM03")
    );
    assert!(reply.body.contains("does not start machines"), "{reply:?}");
    Ok(())
}

#[tokio::test]
async fn over_the_soft_limit_a_stopped_machine_starts_in_the_background() -> anyhow::Result<()> {
    let starter = Arc::new(BackendStarter::default());
    let busy = Backend::start("m-busy").await;
    let mut busy_record = record("m-busy", "spill", busy.addr, MachineState::Started);
    busy_record.services[0].concurrency = limits("requests", 1, None);
    let spare_addr = dead_addr().await;
    starter.add("m-spare", spare_addr);
    let mut spare = record("m-spare", "spill", spare_addr, MachineState::Stopped);
    spare.services[0].concurrency = limits("requests", 1, None);
    let harness = HarnessBuilder::new()
        .record(busy_record)
        .record(spare)
        .starter(Arc::clone(&starter) as Arc<dyn Starter>)
        .start()
        .await?;
    *starter.bucket.lock().expect("lock") = Some(harness.bucket.clone());

    let (client, url) = (harness.client(), harness.url("/hold"));
    let held = tokio::spawn(async move {
        client
            .get(url)
            .header("host", "spill.apps.godwit.test")
            .send()
            .await
    });
    wait_until("the held request", || busy.in_flight() == 1).await?;
    // Over its soft limit, busy still serves (no wait for a cold start) ...
    assert_eq!(harness.get("spill", "/").await?.served_by(), "m-busy");
    // ... and the spare is started meanwhile, then takes the next request.
    wait_until("the background start", || {
        starter.starts.load(Ordering::SeqCst) == 1
    })
    .await?;
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    loop {
        let served_by = harness.get("spill", "/").await?.served_by();
        if served_by == "m-spare" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spare never served"
        );
    }
    busy.release(1);
    assert_eq!(held.await??.status(), 200);
    assert_eq!(starter.starts.load(Ordering::SeqCst), 1);
    Ok(())
}

/// Publishes a started record for a new app and waits until the proxy routes to it: the
/// replica applies changes in order, so every earlier change has then reached the proxy.
async fn sync_replica(harness: &crate::support::Harness, name: &str) -> anyhow::Result<Backend> {
    let backend = Backend::start(name).await;
    let record = record(name, name, backend.addr, MachineState::Started);
    harness
        .bucket
        .put(&godwit_state::key_for(name), &record)
        .await?;
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    while harness.get(name, "/").await?.status != 200 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the proxy never routed {name}"
        );
    }
    Ok(backend)
}

#[tokio::test]
async fn a_machine_stopped_soon_after_an_autostart_is_started_again() -> anyhow::Result<()> {
    let starter = Arc::new(BackendStarter::default());
    let addr = dead_addr().await;
    starter.add("m-flappy", addr);
    let harness = HarnessBuilder::new()
        .record(record("m-flappy", "flappy", addr, MachineState::Stopped))
        .starter(Arc::clone(&starter) as Arc<dyn Starter>)
        .start()
        .await?;
    *starter.bucket.lock().expect("lock") = Some(harness.bucket.clone());

    assert_eq!(harness.get("flappy", "/").await?.served_by(), "m-flappy");
    assert_eq!(starter.starts.load(Ordering::SeqCst), 1);
    // The replica catches up with the start, and a request sees it started.
    let _first = sync_replica(&harness, "sync-started").await?;
    assert_eq!(harness.get("flappy", "/").await?.served_by(), "m-flappy");
    // Stopped through the API well within a few seconds of the autostart.
    starter
        .stop("flappy", "m-flappy")
        .await
        .map_err(anyhow::Error::msg)?;
    let _second = sync_replica(&harness, "sync-stopped").await?;
    // The replica says stopped: the next request starts it again.
    let reply = harness.get("flappy", "/").await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.served_by(), "m-flappy");
    assert_eq!(starter.starts.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn a_stop_published_after_an_autostart_ends_it_without_a_request_in_between()
-> anyhow::Result<()> {
    let starter = Arc::new(BackendStarter::default());
    let addr = dead_addr().await;
    starter.add("m-quiet", addr);
    starter.lagging.store(true, Ordering::SeqCst);
    let harness = HarnessBuilder::new()
        .record(record("m-quiet", "quiet", addr, MachineState::Stopped))
        .starter(Arc::clone(&starter) as Arc<dyn Starter>)
        .start()
        .await?;
    *starter.bucket.lock().expect("lock") = Some(harness.bucket.clone());

    // Served by the woken machine while the replica still says stopped.
    assert_eq!(harness.get("quiet", "/").await?.served_by(), "m-quiet");
    // Then the replica says started, then stopped (through the API), and no request of
    // the app comes in between to notice the started record.
    starter
        .publish("m-quiet", MachineState::Started)
        .await
        .map_err(anyhow::Error::msg)?;
    let _started = sync_replica(&harness, "sync-quiet-started").await?;
    starter
        .stop("quiet", "m-quiet")
        .await
        .map_err(anyhow::Error::msg)?;
    let _stopped = sync_replica(&harness, "sync-quiet-stopped").await?;
    // The stop is newer than the wake: the machine is started again, not assumed awake.
    let reply = harness.get("quiet", "/").await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.served_by(), "m-quiet");
    assert_eq!(starter.starts.load(Ordering::SeqCst), 2);
    Ok(())
}

/// Counts stops and leaves the replica alone, like an agent slow to publish.
#[derive(Debug, Default)]
struct SilentStarter {
    stops: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Starter for SilentStarter {
    async fn start(&self, _app: &str, machine_id: &str) -> Result<(), String> {
        Err(format!("this test does not start machines ({machine_id})"))
    }

    async fn stop(&self, _app: &str, machine_id: &str) -> Result<(), String> {
        self.stops.lock().expect("lock").push(machine_id.to_owned());
        Ok(())
    }
}

#[tokio::test]
async fn autostop_counts_a_machine_being_stopped_as_gone_before_the_replica_does()
-> anyhow::Result<()> {
    let starter = Arc::new(SilentStarter::default());
    let (a, b) = (Backend::start("m-a").await, Backend::start("m-b").await);
    let mut records = Vec::new();
    for (id, addr) in [("m-a", a.addr), ("m-b", b.addr)] {
        let mut r = record(id, "pair", addr, MachineState::Started);
        r.services[0].autostop = Some(serde_json::json!("stop"));
        r.services[0].min_machines_running = Some(1);
        records.push(r);
    }
    let mut builder = HarnessBuilder::new()
        .starter(Arc::clone(&starter) as Arc<dyn Starter>)
        .config(|cfg| {
            cfg.autostop_idle = Duration::from_millis(100);
            cfg.autostop_interval = Duration::from_millis(50);
        });
    for r in records {
        builder = builder.record(r);
    }
    let _harness = builder.start().await?;
    wait_until("the first autostop", || {
        !starter.stops.lock().expect("lock").is_empty()
    })
    .await?;
    // The replica still shows both started. Twenty more passes must neither stop the other
    // machine (min_machines_running = 1) nor ask for the same stop again.
    let window = tokio::time::Instant::now() + Duration::from_millis(1000);
    while tokio::time::Instant::now() < window {
        let stops = starter.stops.lock().expect("lock").clone();
        assert_eq!(stops.len(), 1, "stops asked for: {stops:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
