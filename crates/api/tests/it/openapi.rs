//! The OpenAPI document.

#[tokio::test]
async fn openapi_lists_the_machine_paths() {
    let api = crate::harness::TestApi::start().await.unwrap();
    let res = api
        .http
        .get(api.path("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let doc: serde_json::Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/apps",
        "/v1/apps/{app}/machines",
        "/v1/apps/{app}/machines/{id}",
        "/v1/apps/{app}/machines/{id}/wait",
        "/v1/apps/{app}/machines/{id}/lease",
        "/v1/apps/{app}/machines/{id}/suspend",
        "/v1/apps/{app}/secrets",
        "/v1/hosts/register",
    ] {
        assert!(paths.contains_key(path), "missing {path}");
    }
    assert!(paths["/v1/apps/{app}/machines"]["post"].is_object());
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(schemas.contains_key("MachineConfig") && schemas.contains_key("ErrorBody"));
    api.shutdown().await.unwrap();
}
