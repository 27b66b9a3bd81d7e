//! App CRUD and the JSON error bodies.

use reqwest::Method;

use crate::agent::FakeAgent;
use crate::harness::{TestApi, error_of};

#[tokio::test]
async fn app_crud() {
    let api = TestApi::start().await.unwrap();
    let res = api
        .send_json(
            Method::POST,
            "/v1/apps",
            &serde_json::json!({ "app_name": "hello", "org_slug": "acme" }),
        )
        .await;
    assert_eq!(res.status(), 201);
    let app: serde_json::Value = res.json().await.unwrap();
    assert_eq!(app["name"], "hello");
    assert_eq!(app["organization"]["slug"], "acme");
    assert_eq!(app["machine_count"], 0);

    let res = api
        .send_json(
            Method::POST,
            "/v1/apps",
            &serde_json::json!({ "app_name": "hello" }),
        )
        .await;
    assert_eq!(res.status(), 409);
    assert!(error_of(res).await.contains("already taken"));

    let res = api
        .send_json(
            Method::POST,
            "/v1/apps",
            &serde_json::json!({ "app_name": "Bad_Name" }),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(error_of(res).await.contains("lowercase"));

    api.must_create_app("second").await;
    let list: serde_json::Value = api.get_json("/v1/apps").await;
    assert_eq!(list["total_apps"], 2);
    assert_eq!(list["apps"][0]["name"], "hello");

    let res = api.send(Method::DELETE, "/v1/apps/hello").await;
    assert_eq!(res.status(), 202);
    let res = api.send(Method::GET, "/v1/apps/hello").await;
    assert_eq!(res.status(), 404);
    // The name is free again.
    api.must_create_app("hello").await;
}

#[tokio::test]
async fn malformed_bodies_get_json_errors() {
    let api = TestApi::start().await.unwrap();
    api.must_create_app("web").await;

    let res = api
        .req(Method::POST, "/v1/apps/web/machines")
        .header("content-type", "application/json")
        .body("{\"config\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().contains_key("fly-request-id"));
    let msg = error_of(res).await;
    assert!(msg.starts_with("invalid request body: "), "{msg}");

    let res = api
        .send_json(
            Method::POST,
            "/v1/apps/web/machines",
            &serde_json::json!({ "name": "x" }),
        )
        .await;
    assert_eq!(res.status(), 422);
    let msg = error_of(res).await;
    assert!(msg.contains("missing field `config`"), "{msg}");

    let res = api
        .req(Method::POST, "/v1/apps")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    assert!(
        error_of(res)
            .await
            .contains("Content-Type: application/json")
    );

    let res = api.send(Method::GET, "/v1/nowhere").await;
    assert_eq!(res.status(), 404);
    assert!(error_of(res).await.contains("no route for GET /v1/nowhere"));
}

#[tokio::test]
async fn delete_app_with_machines_needs_force() {
    let api = TestApi::start().await.unwrap();
    let agent = FakeAgent::start().await;
    api.must_add_host(&agent, "h1", "ams", 2048).await;
    api.must_create_app("busy").await;
    let res = api
        .send_json(
            Method::POST,
            "/v1/apps/busy/machines",
            &serde_json::json!({ "config": { "image": "alpine" } }),
        )
        .await;
    assert_eq!(res.status(), 201);
    let machine: serde_json::Value = res.json().await.unwrap();
    let id = machine["id"].as_str().unwrap().to_owned();

    let res = api.send(Method::DELETE, "/v1/apps/busy").await;
    assert_eq!(res.status(), 409);
    assert!(error_of(res).await.contains("?force=true"));

    let res = api.send(Method::DELETE, "/v1/apps/busy?force=true").await;
    assert_eq!(res.status(), 202);
    assert!(
        agent.machine(&id).is_none(),
        "the agent destroyed the machine"
    );
    assert!(
        agent
            .seen()
            .iter()
            .any(|s| s.method == Method::DELETE && s.uri == format!("/v1/machines/{id}?force=true"))
    );
    let res = api.send(Method::GET, "/v1/apps/busy").await;
    assert_eq!(res.status(), 404);
}
