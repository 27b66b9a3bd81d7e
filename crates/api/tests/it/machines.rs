//! Machine calls: placement, routing to the agent, passthrough, and an unreachable host.

use reqwest::Method;
use serde_json::json;

use crate::agent::FakeAgent;
use crate::harness::{TestApi, error_of};

async fn must_create_machine(api: &TestApi, app: &str, body: serde_json::Value) -> String {
    let res = api
        .send_json(Method::POST, &format!("/v1/apps/{app}/machines"), &body)
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let machine: serde_json::Value = res.json().await.unwrap();
    machine["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn create_is_routed_to_the_host_with_secrets_decrypted() {
    let api = TestApi::start().await.unwrap();
    let agent = FakeAgent::start().await;
    api.must_add_host(&agent, "h1", "ams", 2048).await;
    api.must_create_app("web").await;
    let res = api
        .send_json(
            Method::POST,
            "/v1/apps/web/secrets",
            &json!({ "values": { "DB_PASSWORD": "pa55w0rd-for-web" } }),
        )
        .await;
    assert_eq!(res.status(), 200);

    let id = must_create_machine(
        &api,
        "web",
        json!({ "config": { "image": "alpine", "guest": { "cpus": 1, "memory_mb": 512 } } }),
    )
    .await;
    let creates = agent.creates();
    assert_eq!(creates.len(), 1);
    let create = &creates[0];
    assert_eq!(create.machine_id, id);
    assert_eq!(create.app, "web");
    assert_eq!(create.org, "acme");
    assert_eq!(create.region, "ams");
    assert_eq!(create.name, format!("web-{}", &id[..6]));
    assert_eq!(
        create.secrets.get("DB_PASSWORD").map(String::as_str),
        Some("pa55w0rd-for-web")
    );

    let machine: serde_json::Value = api.get_json(&format!("/v1/apps/web/machines/{id}")).await;
    assert_eq!(machine["state"], "started");
    let list: Vec<serde_json::Value> = api.get_json("/v1/apps/web/machines").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    let app: serde_json::Value = api.get_json("/v1/apps/web").await;
    assert_eq!(app["machine_count"], 1);

    // Update re-resolves secrets and sends the whole config.
    let res = api
        .send_json(
            Method::POST,
            &format!("/v1/apps/web/machines/{id}"),
            &json!({ "config": { "image": "alpine:2" }, "region": "syd" }),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(error_of(res).await.contains("cannot move to syd"));

    let res = api
        .req(
            Method::DELETE,
            &format!("/v1/apps/web/machines/{id}?force=true"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = api
        .send(Method::GET, &format!("/v1/apps/web/machines/{id}"))
        .await;
    assert_eq!(res.status(), 404);
    assert!(
        error_of(res)
            .await
            .contains(&format!("machine {id} not found in app web"))
    );
}

#[tokio::test]
async fn placement_and_validation_errors_come_back_at_once() {
    let api = TestApi::start().await.unwrap();
    let agent = FakeAgent::start().await;
    api.must_add_host(&agent, "h1", "ams", 1024).await;
    api.must_create_app("big").await;

    let res = api
        .send_json(
            Method::POST,
            "/v1/apps/big/machines",
            &json!({ "config": { "image": "alpine", "guest": { "memory_mb": 4096 } } }),
        )
        .await;
    assert_eq!(res.status(), 422);
    let msg = error_of(res).await;
    assert!(msg.contains("ams") && msg.contains("4096 MB"), "{msg}");

    let res = api
        .send_json(
            Method::POST,
            "/v1/apps/big/machines",
            &json!({ "config": { "image": "alpine" }, "region": "syd,sin" }),
        )
        .await;
    assert_eq!(res.status(), 422);
    let msg = error_of(res).await;
    assert!(
        msg.contains("syd, sin") && msg.contains("regions with hosts: ams"),
        "{msg}"
    );

    let res = api
        .send_json(
            Method::POST,
            "/v1/apps/big/machines",
            &json!({ "config": { "image": " " } }),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(error_of(res).await.contains("config.image is required"));

    // The agent refuses: its 4xx comes back unchanged and no route is left behind.
    let res = api
        .send_json(
            Method::POST,
            "/v1/apps/big/machines",
            &json!({ "config": { "image": "refused" } }),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert_eq!(error_of(res).await, "image refused by the agent");
    assert_eq!(
        agent.creates().len(),
        1,
        "only the refused create reached the agent"
    );
    let list: Vec<serde_json::Value> = api.get_json("/v1/apps/big/machines").await;
    assert!(list.is_empty());
}

#[tokio::test]
async fn lease_nonce_wait_and_logs_pass_through() {
    let api = TestApi::start().await.unwrap();
    let agent = FakeAgent::start().await;
    api.must_add_host(&agent, "h1", "ams", 2048).await;
    api.must_create_app("leased").await;
    let id = must_create_machine(&api, "leased", json!({ "config": { "image": "alpine" } })).await;
    let base = format!("/v1/apps/leased/machines/{id}");

    let res = api.send(Method::POST, &format!("{base}/lease")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["fly-machine-lease-nonce"], "nonce-1");

    let res = api.send(Method::POST, &format!("{base}/stop")).await;
    assert_eq!(res.status(), 409);
    assert!(error_of(res).await.contains("lease nonce"));
    let res = api
        .req(Method::POST, &format!("{base}/stop"))
        .header("fly-machine-lease-nonce", "nonce-1")
        .json(&json!({ "signal": "SIGTERM", "timeout": "5s" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let stop = agent
        .seen()
        .into_iter()
        .rfind(|s| s.uri.ends_with("/stop"))
        .unwrap();
    assert_eq!(stop.nonce.as_deref(), Some("nonce-1"));
    let body: serde_json::Value = serde_json::from_slice(&stop.body).unwrap();
    assert_eq!(body["signal"], "SIGTERM");

    let res = api
        .send_json(
            Method::POST,
            &format!("{base}/stop"),
            &json!({ "signal": "SIGNOPE" }),
        )
        .await;
    assert_eq!(res.status(), 422);

    let res = api
        .send(Method::GET, &format!("{base}/wait?timeout=120"))
        .await;
    assert_eq!(res.status(), 400);
    assert!(error_of(res).await.contains("1 to 60"));
    let res = api
        .send(Method::GET, &format!("{base}/wait?state=stopped"))
        .await;
    assert_eq!(res.status(), 400);
    assert!(error_of(res).await.contains("instance_id"));
    let res = api
        .send(Method::GET, &format!("{base}/wait?state=started&timeout=1"))
        .await;
    assert_eq!(res.status(), 408);
    assert!(
        agent
            .seen()
            .iter()
            .any(|s| s.uri.ends_with("/wait?state=started&timeout=1"))
    );

    let res = api
        .send(Method::GET, &format!("{base}/logs?follow=false"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    assert!(res.text().await.unwrap().contains("\"message\":\"hi\""));
    let res = api.send(Method::GET, "/v1/apps/leased/logs").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap().lines().count(), 1);
}

#[tokio::test]
async fn an_unreachable_host_is_named_and_listed_from_the_replica() {
    let api = TestApi::start().await.unwrap();
    let mut agent = FakeAgent::start().await;
    api.must_add_host(&agent, "h1", "ams", 2048).await;
    api.must_create_app("lonely").await;
    let id = must_create_machine(&api, "lonely", json!({ "config": { "image": "alpine" } })).await;
    let record = godwit_types::MachineRecord {
        id: id.clone(),
        app: "lonely".into(),
        org: "acme".into(),
        name: "lonely-1".into(),
        state: godwit_types::MachineState::Started,
        version: 1,
        instance_id: "inst1".into(),
        private_ip: "fdaa::2".into(),
        region: "ams".into(),
        host_id: "h1".into(),
        cpus: 1,
        memory_mb: 256,
        services: Vec::new(),
        checks: Vec::new(),
        cordoned: false,
        metadata: Default::default(),
        updated_at: 1,
    };
    let bucket = api
        .state
        .bucket::<godwit_types::MachineRecord>("godwit_machines")
        .await
        .unwrap();
    bucket.put(&id, &record).await.unwrap();
    agent.stop().await;

    let res = api
        .send(Method::GET, &format!("/v1/apps/lonely/machines/{id}"))
        .await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("host h1"),
        "{body}"
    );
    assert!(body["request_id"].is_string(), "{body}");

    api.wait_until("the list shows the machine from the replica", || async {
        let list: Vec<serde_json::Value> = api.get_json("/v1/apps/lonely/machines").await;
        Ok(list.len() == 1
            && list[0]["host_status"] == "unreachable"
            && list[0]["id"] == id.as_str())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn internal_errors_hide_the_cause_and_carry_a_request_id() {
    let api = TestApi::start().await.unwrap();
    let agent = FakeAgent::start().await;
    api.must_add_host(&agent, "h1", "ams", 2048).await;
    api.must_create_app("broken").await;
    let id = must_create_machine(&api, "broken", json!({ "config": { "image": "alpine" } })).await;
    // Damage the sealed agent token: it no longer decrypts.
    let conn = rusqlite::Connection::open(api.db_path()).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn.execute("UPDATE hosts SET token_ciphertext = x'00'", [])
        .unwrap();

    let res = api
        .send(Method::GET, &format!("/v1/apps/broken/machines/{id}"))
        .await;
    assert_eq!(res.status(), 500);
    let header = res.headers()["fly-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "internal error");
    assert_eq!(body["request_id"], header.as_str());
}
