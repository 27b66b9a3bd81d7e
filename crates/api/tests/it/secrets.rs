//! Secrets: versioning, listing without values, unset, and encryption at rest.

use reqwest::Method;
use serde_json::json;

use crate::harness::{TestApi, error_of};

const PLAINTEXT: &str = "very-secret-plaintext-4821";

#[tokio::test]
async fn secrets_are_versioned_and_encrypted_at_rest() {
    let api = TestApi::start().await.unwrap();
    api.must_create_app("vault").await;

    let set = |values: serde_json::Value| {
        api.req(Method::POST, "/v1/apps/vault/secrets")
            .json(&json!({ "values": values }))
            .send()
    };
    let v1: serde_json::Value = set(json!({ "API_KEY": PLAINTEXT, "OTHER": "x" }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["secrets"][0]["name"], "API_KEY");
    assert_eq!(v1["secrets"][0]["version"], 1);
    assert!(
        !v1.to_string().contains(PLAINTEXT),
        "values are never returned"
    );

    let v2: serde_json::Value = set(json!({ "API_KEY": "rotated" }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["secrets"][0]["version"], 2);
    assert_eq!(v2["secrets"][1]["version"], 1, "OTHER was not touched");
    assert_ne!(v1["secrets"][0]["digest"], v2["secrets"][0]["digest"]);

    let res = set(json!({ "1BAD": "x" })).await.unwrap();
    assert_eq!(res.status(), 422);
    assert!(error_of(res).await.contains("secret name"));

    let res = api
        .send(Method::DELETE, "/v1/apps/vault/secrets/OTHER")
        .await;
    assert_eq!(res.status(), 200);
    let v3: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v3["version"], 3);
    assert_eq!(v3["secrets"].as_array().unwrap().len(), 1);
    let res = api
        .send(Method::DELETE, "/v1/apps/vault/secrets/OTHER")
        .await;
    assert_eq!(res.status(), 404);

    let listed: serde_json::Value = api.get_json("/v1/apps/vault/secrets").await;
    assert_eq!(listed, v3);

    // Set the plaintext once more so it is the newest write, then look for it on disk.
    set(json!({ "AGAIN": PLAINTEXT })).await.unwrap();
    let mut searched = 0;
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", api.db_path().display());
        if let Ok(bytes) = std::fs::read(&path) {
            searched += bytes.len();
            assert!(
                !bytes
                    .windows(PLAINTEXT.len())
                    .any(|w| w == PLAINTEXT.as_bytes()),
                "plaintext found in {path}"
            );
        }
    }
    assert!(searched > 0, "the database files exist");
}
