//! Suspend (cgroup freezer): suspended machines are published as such, answer nothing, keep
//! their process (no exit, no restart, no checks), resume on start, and stop or destroy
//! cleanly.

use std::time::Duration;

use godwit_types::{MachineRecord, MachineState};
use serde_json::{Value, json};

use crate::support::{Env, InProcAgent, assert_no_leftovers, machine_id, must_http_get};

fn events_of(events: &Value, kind: &str) -> Vec<Value> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_resume_stop_and_destroy() {
    let env = Env::new().await.unwrap();
    let agent = InProcAgent::start(&env).await.unwrap();
    let c = &agent.client;
    let client = godwit_state::StateClient::connect(&env.nats.url)
        .await
        .unwrap();
    let replica = client
        .bucket::<MachineRecord>("godwit_machines")
        .await
        .unwrap()
        .replica()
        .await
        .unwrap();

    let id = machine_id();
    let mut config = env.httpd_config("frozen");
    config["restart"] = json!({ "policy": "always" });
    config["checks"] = json!({
        "alive": { "type": "tcp", "port": 8080, "interval": "200ms", "timeout": "200ms",
                   "grace_period": "0s" },
    });
    let m = c
        .must_post("/v1/machines", env.create_body(&id, config))
        .await;
    let ip = m["private_ip"].as_str().unwrap().to_owned();
    assert_eq!(must_http_get(&ip).await.trim(), "frozen");

    let r = c
        .must_post(&format!("/v1/machines/{id}/suspend"), json!({}))
        .await;
    assert_eq!(r["previous_state"], "started", "{r}");
    let m = c.must_reach_state(&id, "suspended").await;
    assert_eq!(
        m["checks"],
        json!([]),
        "a suspended machine has no checks: {m}"
    );
    replica
        .wait_for(Duration::from_secs(20), |records| {
            records
                .values()
                .any(|r| r.id == id && r.state == MachineState::Suspended)
        })
        .await
        .unwrap();
    // Nothing answers; this wait is also the window in which a check (every 200 ms) or an
    // exit monitor would have marked the machine dead.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .no_proxy()
        .build()
        .unwrap();
    let frozen = http.get(format!("http://{ip}:8080/")).send().await;
    assert!(
        frozen.as_ref().is_err_and(reqwest::Error::is_timeout),
        "a suspended machine must accept but not answer: {frozen:?}"
    );
    let m = c.must_reach_state(&id, "suspended").await;
    assert_eq!(m["checks"], json!([]), "{m}");
    let r = c
        .must_post(&format!("/v1/machines/{id}/suspend"), json!({}))
        .await;
    assert_eq!(
        r["previous_state"], "suspended",
        "suspend is idempotent: {r}"
    );

    // start resumes the same process: no exit was ever recorded.
    let r = c
        .must_post(&format!("/v1/machines/{id}/start"), json!({}))
        .await;
    assert_eq!(r["previous_state"], "suspended", "{r}");
    c.must_reach_state(&id, "started").await;
    assert_eq!(must_http_get(&ip).await.trim(), "frozen");
    let (_, events) = c.get(&format!("/v1/machines/{id}/events")).await.unwrap();
    assert_eq!(events_of(&events, "suspend").len(), 1, "{events}");
    assert_eq!(events_of(&events, "resume").len(), 1, "{events}");
    assert!(events_of(&events, "exit").is_empty(), "{events}");

    // stop of a suspended machine thaws it first: the SIGTERM trap exits 0 (not SIGKILL).
    c.must_post(&format!("/v1/machines/{id}/suspend"), json!({}))
        .await;
    let r = c
        .must_post(&format!("/v1/machines/{id}/stop"), json!({}))
        .await;
    assert_eq!(r["previous_state"], "suspended", "{r}");
    c.must_reach_state(&id, "stopped").await;
    let (_, events) = c.get(&format!("/v1/machines/{id}/events")).await.unwrap();
    let exits = events_of(&events, "exit");
    assert_eq!(exits.len(), 1, "{events}");
    let exit = &exits[0]["request"]["exit_event"];
    assert_eq!(
        (&exit["exit_code"], &exit["requested_stop"]),
        (&json!(0), &json!(true)),
        "{exit}"
    );
    let (status, body) = c
        .post(&format!("/v1/machines/{id}/suspend"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 412, "a stopped machine cannot be suspended: {body}");

    // destroy of a suspended machine needs no force and leaves nothing behind.
    c.must_post(&format!("/v1/machines/{id}/start"), json!({}))
        .await;
    c.must_reach_state(&id, "started").await;
    c.must_post(&format!("/v1/machines/{id}/suspend"), json!({}))
        .await;
    let (status, body) = c.delete(&format!("/v1/machines/{id}")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    c.must_be_gone(&id).await;
    assert_no_leftovers(&env, &id);
    agent.stop().await.unwrap();
}
