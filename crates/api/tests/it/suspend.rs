//! `POST …/suspend` is forwarded to the machine's agent with the same org and lease checks as
//! stop.

use reqwest::Method;
use serde_json::json;

use crate::agent::FakeAgent;
use crate::harness::{TestApi, error_of};

#[tokio::test]
async fn suspend_is_forwarded_to_the_agent() {
    let api = TestApi::start().await.unwrap();
    let agent = FakeAgent::start().await;
    api.must_add_host(&agent, "h1", "ams", 2048).await;
    api.must_create_app("sleepy").await;
    let res = api
        .send_json(
            Method::POST,
            "/v1/apps/sleepy/machines",
            &json!({ "config": { "image": "alpine" } }),
        )
        .await;
    assert_eq!(res.status(), 201);
    let machine: serde_json::Value = res.json().await.unwrap();
    let id = machine["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/apps/sleepy/machines/{id}/suspend");
    let suspends = |agent: &FakeAgent| {
        agent
            .seen()
            .into_iter()
            .filter(|s| s.method == Method::POST && s.uri == format!("/v1/machines/{id}/suspend"))
            .count()
    };

    // Another organisation's token: not found, and the agent never hears of it.
    let other = api.must_add_org("nosy");
    let res = api
        .http
        .post(api.path(&path))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(suspends(&agent), 0);

    let res = api.send(Method::POST, &path).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["previous_state"], "started", "{body}");
    assert_eq!(suspends(&agent), 1);

    // A leased machine needs the nonce, as for stop.
    let res = api
        .req(
            Method::POST,
            &format!("/v1/apps/sleepy/machines/{id}/lease"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = api.send(Method::POST, &path).await;
    assert_eq!(res.status(), 409);
    assert!(error_of(res).await.contains("lease nonce"));
    let res = api
        .req(Method::POST, &path)
        .header("fly-machine-lease-nonce", "nonce-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(suspends(&agent), 3);
}
