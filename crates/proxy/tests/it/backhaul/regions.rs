//! Regions: measured RTT ranks them, soft and hard limits with and without latency
//! shedding, a dead host, autostart nearby, and replays across regions.

use std::time::Duration;

use godwit_types::MachineState;

use super::world::{DelayRelay, Node, World};
use super::{machine, measured, with_limits};
use crate::backend::Backend;
use crate::support::{dead_addr, wait_until};

#[tokio::test]
async fn backhaul_measured_rtt_ranks_regions() -> anyhow::Result<()> {
    let world = World::start().await?;
    let (near, far) = (Backend::start("near").await, Backend::start("far").await);
    // By name `cdg` would come first; by measured RTT `yyz` does.
    let m_near = machine(
        "m-near",
        near.addr,
        "yyz",
        "host-near",
        MachineState::Started,
    );
    let m_far = machine("m-far", far.addr, "cdg", "host-far", MachineState::Started);
    let both = [m_near.clone(), m_far.clone()];
    let a = world.node("ams", "host-a", &both, true, |_| {}).await?;
    let _near = world
        .node("yyz", "host-near", &[m_near], true, |_| {})
        .await?;
    let far_node = world
        .node("cdg", "host-far", &[m_far], false, |_| {})
        .await?;
    // host-far is reached through a link with 40 ms each way.
    let relay_ip = crate::backend::random_loopback();
    let relay_addr = std::net::SocketAddr::new(relay_ip, world.port);
    let _relay =
        DelayRelay::start(relay_addr, far_node.backhaul, Duration::from_millis(40)).await?;
    world.advertise("host-far", "cdg", relay_ip).await?;

    let rtts = measured(&a, &["yyz", "cdg"]).await?;
    let (yyz, cdg) = (rtts[0], rtts[1]);
    assert!(cdg >= 0.075, "cdg rtt {cdg}");
    assert!(yyz < cdg / 2.0, "yyz rtt {yyz}, cdg rtt {cdg}");
    for _ in 0..10 {
        assert_eq!(a.get("hello", "/").await?.served_by(), "near");
    }
    // The far region still serves when the near one has no machine.
    let _gone = near;
    Ok(())
}

/// Home (ams, on the edge's own host) with soft limit 1 and hard limit 2, and a machine in
/// iad with room. Returns the edge, the backends and the nodes to keep.
async fn full_home(
    world: &World,
    shed_budget: Option<Duration>,
) -> anyhow::Result<(Node, Node, Backend, Backend)> {
    let (home, far) = (Backend::start("home").await, Backend::start("iad").await);
    let m_home = with_limits(
        machine("m-home", home.addr, "ams", "host-a", MachineState::Started),
        1,
        Some(2),
    );
    let m_far = with_limits(
        machine("m-iad", far.addr, "iad", "host-b", MachineState::Started),
        10,
        None,
    );
    let a = world
        .node("ams", "host-a", &[m_home, m_far.clone()], true, |cfg| {
            cfg.shed_budget = shed_budget;
        })
        .await?;
    let b = world.node("iad", "host-b", &[m_far], true, |_| {}).await?;
    Ok((a, b, home, far))
}

#[tokio::test]
async fn backhaul_without_shedding_the_full_region_keeps_requests_to_its_hard_limit()
-> anyhow::Result<()> {
    let world = World::start().await?;
    let (a, _b, home, far) = full_home(&world, None).await?;
    measured(&a, &["iad"]).await?;
    let first = a.hold("hello");
    wait_until("one request at home", || home.in_flight() == 1).await?;
    let second = a.hold("hello");
    wait_until("two requests at home (over soft)", || home.in_flight() == 2).await?;
    assert_eq!(far.in_flight(), 0);
    let third = a.hold("hello");
    wait_until("the hard limit sends one to iad", || far.in_flight() == 1).await?;
    assert_eq!(home.in_flight(), 2);
    home.release(2);
    far.release(1);
    for held in [first, second, third] {
        assert_eq!(held.await??, 200);
    }
    Ok(())
}

#[tokio::test]
async fn backhaul_with_a_shedding_budget_requests_spill_at_the_soft_limit() -> anyhow::Result<()> {
    let world = World::start().await?;
    let (a, _b, home, far) = full_home(&world, Some(Duration::from_secs(1))).await?;
    measured(&a, &["iad"]).await?;
    let first = a.hold("hello");
    wait_until("one request at home", || home.in_flight() == 1).await?;
    let second = a.hold("hello");
    wait_until("the second spills to iad", || far.in_flight() == 1).await?;
    assert_eq!(home.in_flight(), 1);
    home.release(1);
    far.release(1);
    for held in [first, second] {
        assert_eq!(held.await??, 200);
    }
    // With room at home again, home takes requests.
    assert_eq!(a.get("hello", "/").await?.served_by(), "home");
    Ok(())
}

#[tokio::test]
async fn backhaul_a_dead_host_sends_requests_to_the_next_region() -> anyhow::Result<()> {
    let world = World::start().await?;
    let (first, next) = (Backend::start("first").await, Backend::start("next").await);
    let m_first = machine(
        "m-first",
        first.addr,
        "zzz",
        "host-b",
        MachineState::Started,
    );
    let m_next = machine("m-next", next.addr, "aaa", "host-c", MachineState::Started);
    // The edge reaches both only through their hosts.
    let mut view = Vec::new();
    for record in [&m_first, &m_next] {
        let mut unreachable = record.clone();
        unreachable.private_ip = dead_addr().await.ip().to_string();
        view.push(unreachable);
    }
    let a = world.node("ams", "host-a", &view, true, |_| {}).await?;
    let b = world
        .node("zzz", "host-b", &[m_first], true, |_| {})
        .await?;
    // host-c is 20 ms farther away than host-b (by name it would come first).
    let c = world
        .node("aaa", "host-c", &[m_next], false, |_| {})
        .await?;
    let relay_ip = crate::backend::random_loopback();
    let relay_addr = std::net::SocketAddr::new(relay_ip, world.port);
    let _relay = DelayRelay::start(relay_addr, c.backhaul, Duration::from_millis(10)).await?;
    world.advertise("host-c", "aaa", relay_ip).await?;
    measured(&a, &["zzz", "aaa"]).await?;
    assert_eq!(a.get("hello", "/").await?.served_by(), "first");

    drop(b);
    for _ in 0..20 {
        let reply = a.get("hello", "/").await?;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.served_by(), "next");
    }
    Ok(())
}

/// Starts `home` on demand at a fixed address.
#[derive(Debug)]
struct HomeStarter {
    addr: std::net::SocketAddr,
    started: std::sync::Mutex<Option<Backend>>,
    starts: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl godwit_proxy::Starter for HomeStarter {
    async fn start(&self, _app: &str, _machine_id: &str) -> Result<(), String> {
        self.starts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let backend = Backend::start_at("home", self.addr, Default::default()).await;
        *self.started.lock().map_err(|e| e.to_string())? = Some(backend);
        Ok(())
    }
    async fn stop(&self, _app: &str, _machine_id: &str) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test]
async fn backhaul_autostart_prefers_a_stopped_machine_nearby_to_a_running_one_far_away()
-> anyhow::Result<()> {
    let world = World::start().await?;
    let far = Backend::start("far").await;
    let home_addr = dead_addr().await;
    let m_home = machine("m-home", home_addr, "ams", "host-a", MachineState::Stopped);
    let m_far = machine("m-far", far.addr, "iad", "host-b", MachineState::Started);
    let starter = std::sync::Arc::new(HomeStarter {
        addr: home_addr,
        started: std::sync::Mutex::default(),
        starts: Default::default(),
    });
    let a = world
        .node_with(
            "ams",
            "host-a",
            &[m_home, m_far.clone()],
            true,
            starter.clone(),
            |_| {},
        )
        .await?;
    let _b = world.node("iad", "host-b", &[m_far], true, |_| {}).await?;
    measured(&a, &["iad"]).await?;
    let reply = a.get("hello", "/").await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.served_by(), "home");
    assert_eq!(starter.starts.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(far.served(), 0);
    Ok(())
}

#[tokio::test]
async fn backhaul_carries_a_replay_to_another_region() -> anyhow::Result<()> {
    let world = World::start().await?;
    let behaviour = crate::backend::Behaviour::replaying("region=syd");
    let home = Backend::start_with("home", behaviour).await;
    let primary = Backend::start("primary").await;
    let m_home = machine("m-home", home.addr, "ams", "host-a", MachineState::Started);
    let m_primary = machine(
        "m-syd",
        primary.addr,
        "syd",
        "host-b",
        MachineState::Started,
    );
    let mut unreachable = m_primary.clone();
    unreachable.private_ip = dead_addr().await.ip().to_string();
    let a = world
        .node("ams", "host-a", &[m_home, unreachable], true, |_| {})
        .await?;
    let _b = world
        .node("syd", "host-b", &[m_primary], true, |_| {})
        .await?;
    let reply = a.get("hello", "/write").await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.served_by(), "primary");
    let echo = reply.echo();
    let source = echo["headers"]["fly-replay-src"]
        .as_str()
        .unwrap_or_default();
    assert!(source.starts_with("instance=m-home;region=ams"), "{echo}");
    assert_eq!((home.served(), primary.served()), (1, 1));
    Ok(())
}
