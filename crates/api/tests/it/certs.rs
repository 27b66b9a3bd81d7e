//! Custom certificates: validation (422 naming the problem), hostnames unique across
//! organisations (409), keys sealed at rest, and the `godwit_certs` bucket following
//! uploads and deletes.

use godwit_types::{CERTS_BUCKET, CertRecord};
use rcgen::{CertificateParams, KeyPair};
use reqwest::Method;
use serde_json::json;

use crate::harness::{TestApi, error_of};

const HOST: &str = "www.shop-example.test";

/// (chain PEM, key PEM) of a self-signed certificate for `names`.
pub(crate) fn must_self_signed(names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let cert = CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn upload(
    api: &TestApi,
    app: &str,
    hostname: &str,
    chain: &str,
    key: &str,
) -> reqwest::Response {
    api.req(Method::POST, &format!("/v1/apps/{app}/certificates/custom"))
        .json(&json!({ "hostname": hostname, "fullchain": chain, "private_key": key }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn custom_certificates_are_checked_stored_sealed_and_published() {
    let api = TestApi::start().await.unwrap();
    api.must_create_app("shop").await;
    let bucket = api.state.bucket::<CertRecord>(CERTS_BUCKET).await.unwrap();
    let bucket_key = godwit_state::key_for(HOST);
    let (chain, key) = must_self_signed(&[HOST, "shop-example.test"]);

    // Each problem gets a 422 that names it.
    let (other_chain, other_key) = must_self_signed(&["api.shop-example.test"]);
    let cases = [
        (
            HOST,
            "not pem".to_owned(),
            key.clone(),
            "no CERTIFICATE block",
        ),
        (
            HOST,
            chain.clone(),
            "nope".to_owned(),
            "not a PEM private key",
        ),
        (
            HOST,
            chain.clone(),
            other_key.clone(),
            "does not match the certificate",
        ),
        (
            HOST,
            other_chain.clone(),
            other_key.clone(),
            "does not cover www.shop-example.test",
        ),
        (
            "*.shop-example.test",
            chain.clone(),
            key.clone(),
            "is not a DNS name",
        ),
        ("localhost", chain.clone(), key.clone(), "is not a DNS name"),
    ];
    for (hostname, chain, key, want) in cases {
        let res = upload(&api, "shop", hostname, &chain, &key).await;
        assert_eq!(res.status(), 422, "{want}");
        let error = error_of(res).await;
        assert!(error.contains(want), "{error:?} should say {want:?}");
    }
    let expired = {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![HOST.to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    };
    let res = upload(&api, "shop", HOST, &expired.0, &expired.1).await;
    assert_eq!(res.status(), 422);
    assert!(error_of(res).await.contains("expired"));
    assert_eq!(
        bucket.get(&bucket_key).await.unwrap(),
        None,
        "nothing published"
    );

    // A good one: stored, listed without its key, published for the proxies.
    let res = upload(&api, "shop", "WWW.Shop-Example.test.", &chain, &key).await;
    assert_eq!(res.status(), 201);
    let created: serde_json::Value = res.json().await.unwrap();
    assert_eq!(created["hostname"], HOST);
    assert_eq!(created["app"], "shop");
    assert_eq!(created["source"], "custom");
    assert_eq!(created["status"], "ready");
    assert!(created["issuer"].as_str().unwrap().contains("rcgen"));
    assert!(created["not_after"].as_u64().unwrap() > godwit_types::now_ms());
    assert!(!created.to_string().contains("PRIVATE KEY"));
    let published = bucket.get(&bucket_key).await.unwrap().expect("published");
    assert_eq!(
        (published.app.as_str(), published.hostname.as_str()),
        ("shop", HOST)
    );
    assert_eq!(
        (published.fullchain_pem.as_str(), published.key_pem.as_str()),
        (chain.as_str(), key.as_str())
    );
    let listed: serde_json::Value = api
        .req(Method::GET, "/v1/apps/shop/certificates")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["certificates"], json!([created.clone()]));
    let res = api
        .req(Method::GET, &format!("/v1/apps/shop/certificates/{HOST}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // The key is sealed at rest: its base64 body is nowhere in the database files.
    let secret_line = key.lines().nth(1).unwrap().to_owned();
    let mut searched = 0;
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", api.db_path().display());
        if let Ok(bytes) = std::fs::read(&path) {
            searched += bytes.len();
            assert!(
                !bytes
                    .windows(secret_line.len())
                    .any(|w| w == secret_line.as_bytes()),
                "private key found in {path}"
            );
        }
    }
    assert!(searched > 0);

    // Hostnames are unique: another app of the org, or another org.
    api.must_create_app("other").await;
    let res = upload(&api, "other", HOST, &chain, &key).await;
    assert_eq!(res.status(), 409);
    assert!(error_of(res).await.contains("in app shop"));
    let rival = api.must_add_org("rival");
    let res = api
        .http
        .post(api.path("/v1/apps"))
        .bearer_auth(&rival)
        .json(&json!({ "app_name": "rival-shop" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = api
        .http
        .post(api.path("/v1/apps/rival-shop/certificates/custom"))
        .bearer_auth(&rival)
        .json(&json!({ "hostname": HOST, "fullchain": chain, "private_key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let error = error_of(res).await;
    assert!(
        error.contains("another organisation") && !error.contains("shop "),
        "{error}"
    );

    // Replaced by the same app: the bucket follows.
    let (chain2, key2) = must_self_signed(&[HOST]);
    assert_eq!(
        upload(&api, "shop", HOST, &chain2, &key2).await.status(),
        201
    );
    let published = bucket.get(&bucket_key).await.unwrap().expect("published");
    assert_eq!(published.fullchain_pem, chain2);

    // Deleted: gone from the listing and the bucket.
    let res = api
        .req(
            Method::DELETE,
            &format!("/v1/apps/shop/certificates/{HOST}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = api
        .req(Method::GET, &format!("/v1/apps/shop/certificates/{HOST}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(bucket.get(&bucket_key).await.unwrap(), None);

    // Deleting an app unpublishes its certificates.
    assert_eq!(
        upload(&api, "other", HOST, &chain, &key).await.status(),
        201
    );
    assert!(bucket.get(&bucket_key).await.unwrap().is_some());
    let res = api
        .req(Method::DELETE, "/v1/apps/other")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(bucket.get(&bucket_key).await.unwrap(), None);
}

#[tokio::test]
async fn acme_needs_a_directory_and_a_known_challenge() {
    let api = TestApi::start().await.unwrap();
    api.must_create_app("shop").await;
    let res = api
        .req(Method::POST, "/v1/apps/shop/certificates/acme")
        .json(&json!({ "hostname": HOST }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert!(error_of(res).await.contains("no acme directory"));
}
