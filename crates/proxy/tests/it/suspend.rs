//! Autostop `"suspend"`: an idle machine is suspended (stopped if that fails), and the next
//! request resumes it; autostart prefers a suspended machine to a stopped one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use godwit_proxy::Starter;
use godwit_state::Bucket;
use godwit_types::{MachineRecord, MachineState};

use crate::support::{
    Backend, Behaviour, HarnessBuilder, dead_addr, publish_state, record, wait_until,
};

/// Runs real backends and publishes their records like an agent: `suspend` takes the
/// backend off its port and publishes `suspended`, `start` brings it back.
#[derive(Debug, Default)]
struct SuspendingStarter {
    machines: Mutex<HashMap<String, (SocketAddr, Option<Backend>)>>,
    bucket: Mutex<Option<Bucket<MachineRecord>>>,
    /// Starts by machine id.
    starts: Mutex<HashMap<String, u32>>,
    suspends: AtomicU32,
    stops: AtomicU32,
    refuse_suspend: bool,
}

impl SuspendingStarter {
    fn add(&self, machine_id: &str, addr: SocketAddr) {
        self.machines
            .lock()
            .expect("lock")
            .insert(machine_id.to_owned(), (addr, None));
    }

    fn starts_of(&self, machine_id: &str) -> u32 {
        let starts = self.starts.lock().expect("lock");
        starts.get(machine_id).copied().unwrap_or(0)
    }

    async fn publish(&self, machine_id: &str, state: MachineState) -> Result<(), String> {
        let bucket = self.bucket.lock().expect("lock").clone();
        publish_state(bucket.as_ref(), machine_id, state).await
    }

    fn take_backend(&self, machine_id: &str) {
        if let Some((_, backend)) = self.machines.lock().expect("lock").get_mut(machine_id) {
            drop(backend.take());
        }
    }
}

#[async_trait::async_trait]
impl Starter for SuspendingStarter {
    async fn start(&self, _app: &str, machine_id: &str) -> Result<(), String> {
        *self
            .starts
            .lock()
            .expect("lock")
            .entry(machine_id.to_owned())
            .or_default() += 1;
        let addr = {
            let machines = self.machines.lock().expect("lock");
            machines.get(machine_id).ok_or("unknown machine")?.0
        };
        let backend = Backend::start_at(machine_id, addr, Behaviour::default()).await;
        self.machines
            .lock()
            .expect("lock")
            .insert(machine_id.to_owned(), (addr, Some(backend)));
        self.publish(machine_id, MachineState::Started).await
    }

    async fn stop(&self, _app: &str, machine_id: &str) -> Result<(), String> {
        self.stops.fetch_add(1, Ordering::SeqCst);
        self.take_backend(machine_id);
        self.publish(machine_id, MachineState::Stopped).await
    }

    async fn suspend(&self, _app: &str, machine_id: &str) -> Result<(), String> {
        self.suspends.fetch_add(1, Ordering::SeqCst);
        if self.refuse_suspend {
            return Err(format!("suspend of {machine_id} is not possible"));
        }
        self.take_backend(machine_id);
        self.publish(machine_id, MachineState::Suspended).await
    }
}

async fn state_of(bucket: &Bucket<MachineRecord>, id: &str) -> Option<MachineState> {
    bucket.get(id).await.ok().flatten().map(|r| r.state)
}

/// Waits until the bucket holds `state` for `id`.
async fn must_reach(bucket: &Bucket<MachineRecord>, id: &str, state: MachineState) {
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    while state_of(bucket, id).await != Some(state) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never became {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn idle_machines_are_suspended_and_resumed_by_the_next_request() -> anyhow::Result<()> {
    let starter = Arc::new(SuspendingStarter::default());
    let addr = dead_addr().await;
    starter.add("m-frozen", addr);
    let mut frozen = record("m-frozen", "frozen", addr, MachineState::Suspended);
    frozen.services[0].autostop = Some(serde_json::json!("suspend"));
    let harness = HarnessBuilder::new()
        .record(frozen)
        .starter(Arc::clone(&starter) as Arc<dyn Starter>)
        .config(|cfg| {
            cfg.autostop_idle = Duration::from_millis(300);
            cfg.autostop_interval = Duration::from_millis(100);
        })
        .start()
        .await?;
    *starter.bucket.lock().expect("lock") = Some(harness.bucket.clone());

    for cycle in 1..=2 {
        // The request wakes the suspended machine (start = resume) and is served.
        let reply = harness.get("frozen", "/").await?;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.served_by(), "m-frozen");
        assert_eq!(starter.starts_of("m-frozen"), cycle);
        // Idle: suspended, never stopped.
        wait_until("autostop suspend", || {
            starter.suspends.load(Ordering::SeqCst) == cycle
        })
        .await?;
        must_reach(&harness.bucket, "m-frozen", MachineState::Suspended).await;
        assert_eq!(starter.stops.load(Ordering::SeqCst), 0);
    }
    Ok(())
}

#[tokio::test]
async fn a_failed_suspend_falls_back_to_stop() -> anyhow::Result<()> {
    let starter = Arc::new(SuspendingStarter {
        refuse_suspend: true,
        ..SuspendingStarter::default()
    });
    let backend = Backend::start("m-stubborn").await;
    let addr = backend.addr;
    starter
        .machines
        .lock()
        .expect("lock")
        .insert("m-stubborn".to_owned(), (addr, Some(backend)));
    let mut stubborn = record("m-stubborn", "stubborn", addr, MachineState::Started);
    stubborn.services[0].autostop = Some(serde_json::json!("suspend"));
    let harness = HarnessBuilder::new()
        .record(stubborn)
        .starter(Arc::clone(&starter) as Arc<dyn Starter>)
        .config(|cfg| {
            cfg.autostop_idle = Duration::from_millis(300);
            cfg.autostop_interval = Duration::from_millis(100);
        })
        .start()
        .await?;
    *starter.bucket.lock().expect("lock") = Some(harness.bucket.clone());

    assert_eq!(
        harness.get("stubborn", "/").await?.served_by(),
        "m-stubborn"
    );
    wait_until("the fallback stop", || {
        starter.stops.load(Ordering::SeqCst) == 1
    })
    .await?;
    assert_eq!(starter.suspends.load(Ordering::SeqCst), 1);
    must_reach(&harness.bucket, "m-stubborn", MachineState::Stopped).await;
    Ok(())
}

#[tokio::test]
async fn autostart_prefers_a_suspended_machine() -> anyhow::Result<()> {
    let starter = Arc::new(SuspendingStarter::default());
    // Four stopped machines and one suspended one: a choice that ignored the state would
    // pick a stopped one four times in five (routes come in hash order).
    let mut builder = HarnessBuilder::new().starter(Arc::clone(&starter) as Arc<dyn Starter>);
    for n in 0..4 {
        let (id, addr) = (format!("m-cold{n}"), dead_addr().await);
        starter.add(&id, addr);
        builder = builder.record(record(&id, "pair", addr, MachineState::Stopped));
    }
    let warm_addr = dead_addr().await;
    starter.add("m-warm", warm_addr);
    let harness = builder
        .record(record("m-warm", "pair", warm_addr, MachineState::Suspended))
        .start()
        .await?;
    *starter.bucket.lock().expect("lock") = Some(harness.bucket.clone());

    assert_eq!(harness.get("pair", "/").await?.served_by(), "m-warm");
    assert_eq!(starter.starts_of("m-warm"), 1);
    let cold_starts: u32 = (0..4)
        .map(|n| starter.starts_of(&format!("m-cold{n}")))
        .sum();
    assert_eq!(cold_starts, 0);
    Ok(())
}
