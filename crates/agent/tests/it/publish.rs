//! Records reach NATS, and the agent keeps working while NATS is down and catches up after.

use std::time::Duration;

use godwit_types::{HostRecord, MachineRecord, MachineState};
use serde_json::json;

use crate::support::{Env, InProcAgent, machine_id};

async fn machines_replica(url: &str) -> godwit_state::Replica<MachineRecord> {
    let client = godwit_state::StateClient::connect(url).await.unwrap();
    let bucket = client
        .bucket::<MachineRecord>("godwit_machines")
        .await
        .unwrap();
    bucket.replica().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn keeps_working_while_nats_is_down_and_republishes() {
    let mut env = Env::new().await.unwrap();
    let agent = InProcAgent::start(&env).await.unwrap();
    let c = agent.client.clone();

    let first = machine_id();
    c.must_post(
        "/v1/machines",
        env.create_body(&first, env.sh_config("/busybox sleep 1000")),
    )
    .await;
    let replica = machines_replica(&env.nats.url).await;
    replica
        .wait_for(Duration::from_secs(20), |m| {
            m.values()
                .any(|r| r.id == first && r.state == MachineState::Started)
        })
        .await
        .unwrap();
    let client = godwit_state::StateClient::connect(&env.nats.url)
        .await
        .unwrap();
    let hosts = client.bucket::<HostRecord>("godwit_hosts").await.unwrap();
    let host = hosts.get(&env.host_id).await.unwrap().expect("host record");
    assert_eq!(host.cpus_total, 8);
    assert_eq!(host.memory_mb_reserved, 128);
    assert_eq!(host.agent_url, c.base);
    assert!(host.schedulable, "hosts are schedulable by default");
    drop(replica);
    drop(client);

    env.nats.stop();
    let second = machine_id();
    let m = c
        .must_post(
            "/v1/machines",
            env.create_body(&second, env.sh_config("/busybox sleep 1000")),
        )
        .await;
    assert_eq!(m["state"], "started", "{m}");
    c.must_post(
        &format!("/v1/machines/{first}/stop"),
        json!({ "signal": "SIGKILL" }),
    )
    .await;
    c.must_reach_state(&first, "stopped").await;

    env.nats.restart().unwrap();
    let replica = machines_replica(&env.nats.url).await;
    replica
        .wait_for(Duration::from_secs(60), |m| {
            m.values()
                .any(|r| r.id == second && r.state == MachineState::Started)
                && m.values()
                    .any(|r| r.id == first && r.state == MachineState::Stopped)
        })
        .await
        .unwrap();

    for id in [&first, &second] {
        let (status, body) = c
            .delete(&format!("/v1/machines/{id}?force=true"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    replica
        .wait_for(Duration::from_secs(20), |m| m.is_empty())
        .await
        .unwrap();
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unschedulable_host_says_so_and_still_reserves_stopped_machines() {
    let env = Env::new().await.unwrap();
    let mut cfg = env.config();
    cfg.schedulable = false;
    let agent = InProcAgent::start_with(&env, cfg).await.unwrap();
    let c = agent.client.clone();
    let id = machine_id();
    c.must_post(
        "/v1/machines",
        env.create_body(&id, env.sh_config("/busybox sleep 1000")),
    )
    .await;
    c.must_post(
        &format!("/v1/machines/{id}/stop"),
        json!({ "signal": "SIGKILL" }),
    )
    .await;
    c.must_reach_state(&id, "stopped").await;

    let client = godwit_state::StateClient::connect(&env.nats.url)
        .await
        .unwrap();
    let hosts = client.bucket::<HostRecord>("godwit_hosts").await.unwrap();
    let replica = hosts.replica().await.unwrap();
    let want = env.host_id.clone();
    replica
        .wait_for(Duration::from_secs(20), |m| {
            m.values().any(|h| {
                h.host_id == want
                    && !h.schedulable
                    && h.cpus_reserved == 1
                    && h.memory_mb_reserved == 128
            })
        })
        .await
        .unwrap();

    let (status, body) = c.delete(&format!("/v1/machines/{id}")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    replica
        .wait_for(Duration::from_secs(20), |m| {
            m.values()
                .any(|h| h.host_id == want && h.cpus_reserved == 0 && h.memory_mb_reserved == 0)
        })
        .await
        .unwrap();
    agent.stop().await.unwrap();
}
