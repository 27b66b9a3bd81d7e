//! SIGKILL the agent (a real process) at every step of every operation; after a restart the
//! machine reaches the expected state, and destroying it leaves nothing on the host.

use serde_json::json;

use crate::support::{Env, ProcAgent, assert_no_leftovers, http_get, machine_id, route_to};

async fn crash_at_every_step(op: &str) {
    let env = Env::new().await.unwrap();
    let steps = godwit_agent::OP_STEPS
        .iter()
        .find(|(kind, _)| *kind == op)
        .expect("known op")
        .1;
    let mut n = 0;
    for step in steps {
        let at = format!("{op}:{step}");
        n += 1;
        let mut agent = ProcAgent::start(&env, Some(&at), n).await.unwrap();
        let c = agent.client.clone();
        let id = machine_id();
        let create = env.create_body(&id, env.httpd_config("v1"));
        if op != "create" {
            let m = c.must_post("/v1/machines", create.clone()).await;
            assert_eq!(m["state"], "started", "{at}: {m}");
            if op == "start" {
                c.must_post(&format!("/v1/machines/{id}/stop"), json!({}))
                    .await;
                c.must_reach_state(&id, "stopped").await;
            }
        }
        let result = match op {
            "create" => c.post("/v1/machines", create).await,
            "start" => c.post(&format!("/v1/machines/{id}/start"), json!({})).await,
            "stop" => c.post(&format!("/v1/machines/{id}/stop"), json!({})).await,
            "suspend" => {
                c.post(&format!("/v1/machines/{id}/suspend"), json!({}))
                    .await
            }
            "update" => {
                let body = json!({ "config": env.httpd_config("v2"), "secrets": {},
                                   "skip_launch": false, "current_version": null });
                c.post(&format!("/v1/machines/{id}"), body).await
            }
            _ => c.delete(&format!("/v1/machines/{id}?force=true")).await,
        };
        assert!(
            result.is_err(),
            "{at}: the agent should have died mid-request: {result:?}"
        );
        agent.must_be_killed().await;
        drop(agent);

        n += 1;
        let agent = ProcAgent::start(&env, None, n).await.unwrap();
        let c = agent.client.clone();
        match op {
            "create" | "start" => {
                let m = c.must_reach_state(&id, "started").await;
                let ip = m["private_ip"].as_str().unwrap();
                let body = http_get(ip).await.unwrap_or_else(|e| {
                    panic!(
                        "{at}: {e}: {m}\nroute: {}{}",
                        route_to(ip),
                        env.diagnostics(&id)
                    )
                });
                assert_eq!(body.trim(), "v1", "{at}");
            }
            "stop" => {
                c.must_reach_state(&id, "stopped").await;
            }
            "suspend" => {
                c.must_reach_state(&id, "suspended").await;
                c.must_post(&format!("/v1/machines/{id}/start"), json!({}))
                    .await;
                let m = c.must_reach_state(&id, "started").await;
                let ip = m["private_ip"].as_str().unwrap();
                let body = http_get(ip)
                    .await
                    .unwrap_or_else(|e| panic!("{at}: {e}: {m}{}", env.diagnostics(&id)));
                assert_eq!(body.trim(), "v1", "{at}");
            }
            "update" => {
                let m = c.must_reach_state(&id, "started").await;
                assert_eq!(m["version"], 2, "{at}: {m}");
                let ip = m["private_ip"].as_str().unwrap();
                let body = http_get(ip).await.unwrap_or_else(|e| {
                    panic!(
                        "{at}: {e}: {m}\nroute: {}{}",
                        route_to(ip),
                        env.diagnostics(&id)
                    )
                });
                assert_eq!(body.trim(), "v2", "{at}");
            }
            _ => c.must_be_gone(&id).await,
        }
        if op != "destroy" {
            let (status, body) = c
                .delete(&format!("/v1/machines/{id}?force=true"))
                .await
                .unwrap();
            assert_eq!(status, 200, "{at}: {body}");
            c.must_be_gone(&id).await;
        }
        assert_no_leftovers(&env, &id);
        agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_during_create() {
    crash_at_every_step("create").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_during_start() {
    crash_at_every_step("start").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_during_stop() {
    crash_at_every_step("stop").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_during_suspend() {
    crash_at_every_step("suspend").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_during_update() {
    crash_at_every_step("update").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_during_destroy() {
    crash_at_every_step("destroy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_while_agent_is_down_is_handled_on_restart() {
    let env = Env::new().await.unwrap();
    let mut agent = ProcAgent::start(&env, None, 1).await.unwrap();
    let id = machine_id();
    let mut config = env.sh_config("/busybox sleep 2; exit 7");
    config["restart"] = json!({ "policy": "no" });
    let m = agent
        .client
        .must_post("/v1/machines", env.create_body(&id, config))
        .await;
    assert_eq!(m["state"], "started", "{m}");
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    drop(agent);

    // the machine (its shim) outlives the agent and records its exit
    let exit_file = env.data_dir.join("machines").join(&id).join("exit.json");
    crate::support::wait_until("exit.json", std::time::Duration::from_secs(30), || async {
        exit_file.exists().then_some(())
    })
    .await
    .unwrap();

    let agent = ProcAgent::start(&env, None, 2).await.unwrap();
    let c = agent.client.clone();
    c.must_reach_state(&id, "stopped").await;
    let (_, events) = c.get(&format!("/v1/machines/{id}/events")).await.unwrap();
    let exit = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "exit")
        .cloned()
        .unwrap_or_else(|| panic!("no exit event: {events}"));
    assert_eq!(exit["request"]["exit_event"]["exit_code"], 7, "{exit}");
    let (status, body) = c.delete(&format!("/v1/machines/{id}")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_no_leftovers(&env, &id);
    agent.stop().await;
}
