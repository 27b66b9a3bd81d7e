//! Health checks: an http service check on busybox httpd passes, a tcp check on a closed port
//! goes critical after its grace period, results reach the NATS record, and stop clears them.

use std::time::Duration;

use godwit_types::{CheckStatus, MachineRecord};
use serde_json::{Value, json};

use crate::support::{Client, Env, InProcAgent, machine_id, wait_until};

/// The machine's check `name` from GET, once it has `status`.
async fn must_check(c: &Client, id: &str, name: &str, status: &str) -> Value {
    wait_until(
        &format!("check {name} of {id} {status}"),
        Duration::from_secs(30),
        || async {
            let (code, m) = c.get(&format!("/v1/machines/{id}")).await.ok()?;
            (code == 200).then_some(())?;
            m["checks"]
                .as_array()?
                .iter()
                .find(|ch| ch["name"] == name && ch["status"] == status)
                .cloned()
        },
    )
    .await
    .unwrap()
}

fn status_of(record: &MachineRecord, name: &str) -> Option<CheckStatus> {
    record
        .checks
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.status)
}

#[tokio::test(flavor = "multi_thread")]
async fn checks_pass_fail_publish_and_clear() {
    let env = Env::new().await.unwrap();
    let agent = InProcAgent::start(&env).await.unwrap();
    let c = &agent.client;

    let id = machine_id();
    let mut config = env.httpd_config("healthy");
    config["services"] = json!([{
        "internal_port": 8080,
        "checks": [{ "type": "http", "path": "/index.html", "interval": "1s", "timeout": "1s",
                     "grace_period": "20s" }],
    }]);
    config["checks"] = json!({
        "closed": { "type": "tcp", "port": 9, "interval": "500ms", "timeout": "500ms",
                    "grace_period": "2s" },
    });
    let m = c
        .must_post("/v1/machines", env.create_body(&id, config))
        .await;
    assert_eq!(m["state"], "started", "{m}");
    let checks = m["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["servicecheck-0-8080", "closed"], "{m}");
    // within its grace period a failing check is still waiting
    let closed = &checks[1];
    assert_eq!(closed["status"], "warning", "{closed}");
    assert_eq!(closed["output"], "waiting for first check", "{closed}");

    let passing = must_check(c, &id, "servicecheck-0-8080", "passing").await;
    assert!(
        passing["output"].as_str().unwrap().contains("200"),
        "{passing}"
    );
    let critical = must_check(c, &id, "closed", "critical").await;
    assert!(
        critical["output"]
            .as_str()
            .unwrap()
            .contains("failed to connect"),
        "{critical}"
    );

    // the status changes reach the machine record
    let client = godwit_state::StateClient::connect(&env.nats.url)
        .await
        .unwrap();
    let bucket = client
        .bucket::<MachineRecord>("godwit_machines")
        .await
        .unwrap();
    let replica = bucket.replica().await.unwrap();
    replica
        .wait_for(Duration::from_secs(20), |m| {
            m.values().any(|r| {
                r.id == id
                    && status_of(r, "servicecheck-0-8080") == Some(CheckStatus::Passing)
                    && status_of(r, "closed") == Some(CheckStatus::Critical)
            })
        })
        .await
        .unwrap();

    // stop clears them, here and in the record
    c.must_post(&format!("/v1/machines/{id}/stop"), json!({}))
        .await;
    let m = c.must_reach_state(&id, "stopped").await;
    assert_eq!(m["checks"], json!([]), "{m}");
    replica
        .wait_for(Duration::from_secs(20), |m| {
            m.values()
                .any(|r| r.id == id && r.state.as_str() == "stopped" && r.checks.is_empty())
        })
        .await
        .unwrap();

    // started again, they run again
    c.must_post(&format!("/v1/machines/{id}/start"), json!({}))
        .await;
    c.must_reach_state(&id, "started").await;
    must_check(c, &id, "servicecheck-0-8080", "passing").await;

    let (status, body) = c
        .delete(&format!("/v1/machines/{id}?force=true"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    c.must_be_gone(&id).await;
    agent.stop().await.unwrap();
}
