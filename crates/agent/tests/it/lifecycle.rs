//! Create → serve HTTP → update → stop → start → destroy, in-process, plus restart policies.

use std::time::Duration;

use godwit_types::MachineRecord;
use serde_json::{Value, json};

use crate::support::{
    Env, InProcAgent, assert_no_leftovers, machine_id, must_http_get, wait_until,
};

#[tokio::test(flavor = "multi_thread")]
async fn machine_lifecycle_serves_updates_stops_and_is_published() {
    let env = Env::new().await.unwrap();
    let agent = InProcAgent::start(&env).await.unwrap();
    let c = &agent.client;

    // registration carries the agent token
    let token = c.token.clone();
    wait_until("registration", Duration::from_secs(30), || async {
        let regs = env.api.registrations.lock().unwrap();
        regs.iter()
            .any(|r| r.agent_token == token && r.join_token == "join-secret")
            .then_some(())
    })
    .await
    .unwrap();

    let (status, _) = crate::support::Client::new(c.base.clone(), "wrong".into())
        .get("/v1/machines")
        .await
        .unwrap();
    assert_eq!(status, 401);

    let id = machine_id();
    let m = c
        .must_post(
            "/v1/machines",
            env.create_body(&id, env.httpd_config("hello-v1")),
        )
        .await;
    assert_eq!(m["state"], "started", "{m}");
    assert_eq!(m["version"], 1);
    let ip = m["private_ip"].as_str().unwrap().to_owned();
    assert_eq!(must_http_get(&ip).await.trim(), "hello-v1");

    // env: image env, config env, secrets and platform variables
    let out = c
        .must_post(
            &format!("/v1/machines/{id}/exec"),
            json!({ "command": ["/busybox", "env"] }),
        )
        .await;
    let stdout = out["stdout"].as_str().unwrap();
    for want in [
        format!("FLY_MACHINE_ID={id}"),
        format!("FLY_PRIVATE_IP={ip}"),
        "SECRET_TOKEN=s3cret".to_owned(),
        "GODWIT_REGION=syd".to_owned(),
        "FLY_MACHINE_VERSION=1".to_owned(),
        "GREETING=hello-v1".to_owned(),
    ] {
        assert!(
            stdout.lines().any(|l| l == want),
            "missing {want} in {stdout}"
        );
    }

    // published to NATS
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
            m.values()
                .any(|r| r.id == id && r.state == godwit_types::MachineState::Started)
        })
        .await
        .unwrap();

    // update: new version, new env visible, same address
    let m = c
        .must_post(
            &format!("/v1/machines/{id}"),
            json!({ "config": env.httpd_config("hello-v2"), "secrets": {}, "skip_launch": false,
                    "current_version": null }),
        )
        .await;
    assert_eq!(m["version"], 2, "{m}");
    assert_eq!(m["state"], "started");
    assert_eq!(m["private_ip"], ip.as_str());
    assert_eq!(must_http_get(&ip).await.trim(), "hello-v2");
    replica
        .wait_for(Duration::from_secs(20), |m| {
            m.values().any(|r| r.id == id && r.version == 2)
        })
        .await
        .unwrap();

    // an update whose image cannot be pulled is refused and the old version keeps serving
    let mut bad = env.httpd_config("hello-v3");
    bad["image"] = json!("oci:/nonexistent/image:latest");
    let (status, body) = c
        .post(
            &format!("/v1/machines/{id}"),
            json!({ "config": bad, "secrets": {} ,
              "skip_launch": false, "current_version": null }),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    let m = c.must_reach_state(&id, "started").await;
    assert_eq!(m["version"], 2, "{m}");
    assert_eq!(must_http_get(&ip).await.trim(), "hello-v2");

    // stop records a requested-stop exit
    let r = c
        .must_post(&format!("/v1/machines/{id}/stop"), json!({}))
        .await;
    assert_eq!(r["previous_state"], "started");
    c.must_reach_state(&id, "stopped").await;
    let (_, events) = c.get(&format!("/v1/machines/{id}/events")).await.unwrap();
    let exit = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "exit")
        .expect("an exit event");
    assert_eq!(
        exit["request"]["exit_event"]["requested_stop"], true,
        "{exit}"
    );

    // non-forced destroy of a started machine is refused; start again and serve
    c.must_post(&format!("/v1/machines/{id}/start"), json!({}))
        .await;
    c.must_reach_state(&id, "started").await;
    assert_eq!(must_http_get(&ip).await.trim(), "hello-v2");
    let (status, body) = c.delete(&format!("/v1/machines/{id}")).await.unwrap();
    assert_eq!(status, 412, "{body}");

    let (status, body) = c
        .delete(&format!("/v1/machines/{id}?force=true"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    c.must_be_gone(&id).await;
    assert_no_leftovers(&env, &id);
    replica
        .wait_for(Duration::from_secs(20), |m| !m.values().any(|r| r.id == id))
        .await
        .unwrap();
    agent.stop().await.unwrap();
}

fn exit_events(events: &Value) -> Vec<Value> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "exit")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_policies_and_exit_codes() {
    let env = Env::new().await.unwrap();
    let agent = InProcAgent::start(&env).await.unwrap();
    let c = &agent.client;

    // on-failure with 2 retries: 3 runs exiting 3, then failed
    let failing = machine_id();
    let mut config = env.sh_config("exit 3");
    config["restart"] = json!({ "policy": "on-failure", "max_retries": 2 });
    c.must_post("/v1/machines", env.create_body(&failing, config))
        .await;
    c.must_reach_state(&failing, "failed").await;
    let (_, events) = c
        .get(&format!("/v1/machines/{failing}/events"))
        .await
        .unwrap();
    let exits = exit_events(&events);
    assert_eq!(exits.len(), 3, "{events}");
    for e in &exits {
        assert_eq!(e["request"]["exit_event"]["exit_code"], 3, "{e}");
        assert_eq!(e["request"]["exit_event"]["requested_stop"], false);
    }
    // newest first: the last exit did not restart
    assert_eq!(exits[0]["request"]["exit_event"]["restarting"], false);
    assert_eq!(exits[1]["request"]["exit_event"]["restarting"], true);

    // policy no: a clean exit stops the machine without restarts
    let once = machine_id();
    let mut config = env.sh_config("echo done; exit 0");
    config["restart"] = json!({ "policy": "no" });
    c.must_post("/v1/machines", env.create_body(&once, config))
        .await;
    c.must_reach_state(&once, "stopped").await;
    let (_, events) = c.get(&format!("/v1/machines/{once}/events")).await.unwrap();
    assert_eq!(exit_events(&events).len(), 1, "{events}");

    // auto_destroy removes the machine after it exits
    let ephemeral = machine_id();
    let mut config = env.sh_config("exit 0");
    config["restart"] = json!({ "policy": "no" });
    config["auto_destroy"] = json!(true);
    c.must_post("/v1/machines", env.create_body(&ephemeral, config))
        .await;
    c.must_be_gone(&ephemeral).await;
    assert_no_leftovers(&env, &ephemeral);

    for id in [&failing, &once] {
        let (status, body) = c.delete(&format!("/v1/machines/{id}")).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_no_leftovers(&env, id);
    }
    agent.stop().await.unwrap();
}
