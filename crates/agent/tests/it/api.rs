//! Leases, wait, exec, logs, metadata, cordon, events and error statuses.

use std::time::Duration;

use serde_json::json;

use crate::support::{Env, InProcAgent, machine_id, wait_until};

#[tokio::test(flavor = "multi_thread")]
async fn leases_wait_exec_logs_metadata() {
    let env = Env::new().await.unwrap();
    let agent = InProcAgent::start(&env).await.unwrap();
    let c = &agent.client;

    let (status, _) = c
        .get(&format!("/v1/machines/{}", machine_id()))
        .await
        .unwrap();
    assert_eq!(status, 404);

    // a create whose image cannot be pulled is rolled back completely
    let bad_id = machine_id();
    let mut bad = env.sh_config("true");
    bad["image"] = json!("oci:/nonexistent/image:latest");
    let (status, body) = c
        .post("/v1/machines", env.create_body(&bad_id, bad))
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("nonexistent"),
        "{body}"
    );
    let (status, _) = c.get(&format!("/v1/machines/{bad_id}")).await.unwrap();
    assert_eq!(status, 404);
    crate::support::assert_no_leftovers(&env, &bad_id);

    let id = machine_id();
    let script =
        "i=0; while true; do echo line-$i; echo err-$i >&2; i=$((i+1)); /busybox sleep 0.2; done";
    let m = c
        .must_post("/v1/machines", env.create_body(&id, env.sh_config(script)))
        .await;
    assert_eq!(m["state"], "started", "{m}");
    let instance = m["instance_id"].as_str().unwrap().to_owned();

    // wait: already started → 200; stopped without instance_id → 400; never → 408
    let (status, _) = c
        .get(&format!("/v1/machines/{id}/wait?state=started&timeout=5"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _) = c
        .get(&format!("/v1/machines/{id}/wait?state=stopped&timeout=1"))
        .await
        .unwrap();
    assert_eq!(status, 400);
    let (status, _) = c
        .get(&format!(
            "/v1/machines/{id}/wait?state=stopped&timeout=1&instance_id={instance}"
        ))
        .await
        .unwrap();
    assert_eq!(status, 408);

    // exec
    let out = c
        .must_post(
            &format!("/v1/machines/{id}/exec"),
            json!({ "command": ["/busybox", "echo", "hi"] }),
        )
        .await;
    assert_eq!(out["stdout"].as_str().unwrap().trim(), "hi");
    assert_eq!(out["exit_code"], 0);

    // logs: tail, then follow sees new lines
    let logs = wait_until("log lines", Duration::from_secs(20), || async {
        let (_, body) = c
            .get(&format!("/v1/machines/{id}/logs?tail=3"))
            .await
            .ok()?;
        let text = body.as_str().map(str::to_owned)?;
        (text.lines().count() == 3).then_some(text)
    })
    .await
    .unwrap();
    let line: serde_json::Value = serde_json::from_str(logs.lines().next().unwrap()).unwrap();
    assert_eq!(line["machine_id"], id.as_str());
    assert!(line["message"].as_str().unwrap().contains('-'), "{line}");
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/v1/machines/{id}/logs?follow=true&tail=0",
            c.base
        ))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut resp = resp;
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("\"stderr\"") && seen.contains("\"stdout\"") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "followed logs: {seen}");
    drop(resp);

    // lease: mutating calls need the nonce
    let lease = c
        .must_post(&format!("/v1/machines/{id}/lease"), json!({ "ttl": 60 }))
        .await;
    let nonce = lease["data"]["nonce"].as_str().unwrap().to_owned();
    let (status, body) = c
        .post(&format!("/v1/machines/{id}/lease"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    let (status, body) = c
        .post(&format!("/v1/machines/{id}/stop"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("fly-machine-lease-nonce"),
        "{body}"
    );
    let (status, body) = c
        .send(
            reqwest::Method::POST,
            &format!("/v1/machines/{id}/metadata/role"),
            Some(json!({ "value": "primary" })),
            &[("fly-machine-lease-nonce", &nonce)],
        )
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    let (status, _) = c
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/machines/{id}/lease"),
            None,
            &[("fly-machine-lease-nonce", &nonce)],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);

    // metadata does not make a new version
    let (_, meta) = c.get(&format!("/v1/machines/{id}/metadata")).await.unwrap();
    assert_eq!(meta, json!({ "role": "primary" }));
    let (_, m) = c.get(&format!("/v1/machines/{id}")).await.unwrap();
    assert_eq!(m["version"], 1);
    let (status, _) = c
        .delete(&format!("/v1/machines/{id}/metadata/role"))
        .await
        .unwrap();
    assert_eq!(status, 204);

    // cordon
    c.must_post(&format!("/v1/machines/{id}/cordon"), json!({}))
        .await;
    let (_, m) = c.get(&format!("/v1/machines/{id}")).await.unwrap();
    assert_eq!(m["cordoned"], true);
    c.must_post(&format!("/v1/machines/{id}/uncordon"), json!({}))
        .await;

    // stop then wait for stopped of that instance
    c.must_post(
        &format!("/v1/machines/{id}/stop"),
        json!({ "signal": "SIGKILL" }),
    )
    .await;
    let (status, _) = c
        .get(&format!(
            "/v1/machines/{id}/wait?state=stopped&timeout=10&instance_id={instance}"
        ))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _) = c
        .post(
            &format!("/v1/machines/{id}/exec"),
            json!({ "command": ["true"] }),
        )
        .await
        .unwrap();
    assert_eq!(status, 412);

    let (status, body) = c.delete(&format!("/v1/machines/{id}")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    crate::support::assert_no_leftovers(&env, &id);
    agent.stop().await.unwrap();
}
