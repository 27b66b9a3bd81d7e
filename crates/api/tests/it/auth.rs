//! Tokens: missing, bad, join-only, and organisation scoping.

use reqwest::Method;

use crate::harness::{TestApi, error_of};

#[tokio::test]
async fn calls_without_a_valid_token_are_refused() {
    let api = TestApi::start().await.unwrap();

    let res = api.http.get(api.path("/v1/apps")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(error_of(res).await.contains("Authorization: Bearer"));

    let res = api
        .http
        .get(api.path("/v1/apps"))
        .bearer_auth("gw_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(error_of(res).await.contains("invalid token"));

    let res = api
        .http
        .get(api.path("/v1/apps"))
        .bearer_auth(&api.join_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(error_of(res).await.contains("join token"));

    // Health and the OpenAPI document need no token.
    let res = api.http.get(api.path("/v1/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("fly-request-id"));
}

#[tokio::test]
async fn another_organisations_app_is_not_found() {
    let api = TestApi::start().await.unwrap();
    api.must_create_app("acme-web").await;
    let other = api.must_add_org("globex");

    let res = api
        .http
        .get(api.path("/v1/apps/acme-web"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(
        error_of(res)
            .await
            .contains("app acme-web not found in organisation globex")
    );

    let res = api
        .http
        .get(api.path("/v1/apps/acme-web/machines"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    let listed: serde_json::Value = api
        .http
        .get(api.path("/v1/apps"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total_apps"], 0);

    // The owner still sees it.
    let res = api.send(Method::GET, "/v1/apps/acme-web").await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn init_twice_changes_nothing() {
    let api = TestApi::start().await.unwrap();
    assert!(
        godwit_api::init(api.data_dir.path(), "other")
            .unwrap()
            .is_none()
    );
    let res = api.send(Method::GET, "/v1/apps").await;
    assert_eq!(res.status(), 200, "the first admin token still works");
}

#[tokio::test]
async fn host_registration_needs_the_join_token() {
    let api = TestApi::start().await.unwrap();
    let body = serde_json::json!({
        "join_token": api.admin_token, "host_id": "h1", "region": "ams",
        "agent_url": "http://127.0.0.1:1", "agent_token": "t", "cpus": 1, "memory_mb": 512,
    });
    let res = api
        .http
        .post(api.path("/v1/hosts/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(error_of(res).await.contains("join token"));
}
