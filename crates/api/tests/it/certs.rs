//! Custom certificates: validation (422 naming the problem), hostnames unique across
//! organisations (409), keys sealed at rest, and the `godwit_certs` bucket following
//! uploads and deletes. In the bucket the private key is sealed with the cluster certificate
//! key: real proxies with that key serve the certificate, one with another key does not, and
//! an API without the key refuses certificates naming the flag to add.

use std::path::Path;
use std::time::Duration;

use godwit_proxy::CertKey;
use godwit_state::seal::SealKey;
use godwit_types::{CERTS_BUCKET, CertRecord};
use rcgen::{CertificateParams, KeyPair};
use reqwest::Method;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::harness::{TestApi, error_of};
use crate::proxy::{BODY, TestProxy, curl_https, must_run_shop};

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
    api.send_json(
        Method::POST,
        &format!("/v1/apps/{app}/certificates/custom"),
        &json!({ "hostname": hostname, "fullchain": chain, "private_key": key }),
    )
    .await
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
    assert_eq!(published.fullchain_pem, chain);
    assert!(published.key_sealed.is_some(), "the key goes sealed");
    let listed: serde_json::Value = api.get_json("/v1/apps/shop/certificates").await;
    assert_eq!(listed["certificates"], json!([created.clone()]));
    let res = api
        .send(Method::GET, &format!("/v1/apps/shop/certificates/{HOST}"))
        .await;
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
        .send(Method::GET, &format!("/v1/apps/shop/certificates/{HOST}"))
        .await;
    assert_eq!(res.status(), 404);
    assert_eq!(bucket.get(&bucket_key).await.unwrap(), None);

    // Deleting an app unpublishes its certificates.
    assert_eq!(
        upload(&api, "other", HOST, &chain, &key).await.status(),
        201
    );
    assert!(bucket.get(&bucket_key).await.unwrap().is_some());
    let res = api.send(Method::DELETE, "/v1/apps/other").await;
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(bucket.get(&bucket_key).await.unwrap(), None);
}

#[tokio::test]
async fn acme_needs_a_directory_and_a_known_challenge() {
    let api = TestApi::start().await.unwrap();
    api.must_create_app("shop").await;
    let res = api
        .send_json(
            Method::POST,
            "/v1/apps/shop/certificates/acme",
            &json!({ "hostname": HOST }),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(error_of(res).await.contains("no acme directory"));
}

#[tokio::test]
async fn published_keys_are_sealed_and_open_only_with_the_cluster_key() -> anyhow::Result<()> {
    let api = TestApi::start().await?;
    api.must_create_app("shop").await;
    must_run_shop(&api).await;
    let (chain, key) = must_self_signed(&[HOST]);
    let res = upload(&api, "shop", HOST, &chain, &key).await;
    assert_eq!(res.status(), 201, "{}", res.text().await?);

    // What the bucket holds, as JSON and as the server's files: no key in clear.
    let key_body = key.lines().nth(1).expect("a pem body line").to_owned();
    let raw = api
        .state
        .bucket::<serde_json::Value>(CERTS_BUCKET)
        .await?
        .get(&godwit_state::key_for(HOST))
        .await?
        .expect("published");
    let text = raw.to_string();
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains(&key_body),
        "{text}"
    );
    assert_eq!(raw.get("key_pem"), None);
    let ciphertext = raw["key_sealed"]["ciphertext"]
        .as_str()
        .expect("a sealed key")
        .to_owned();
    let store = api.nats_store_dir();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let on_disk = loop {
        let bytes = must_read_tree(&store);
        if contains(&bytes, ciphertext.as_bytes()) {
            break bytes;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the record never reached the nats-server's files in {}",
            store.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        contains(&on_disk, b"BEGIN CERTIFICATE"),
        "the chain is there"
    );
    assert!(!contains(&on_disk, b"PRIVATE KEY"));
    assert!(!contains(&on_disk, key_body.as_bytes()));

    // A proxy with the cluster key serves the certificate: curl, trusting only it, gets the
    // app. One with another key leaves it out, so the handshake for the hostname fails.
    let ca = api.data_dir.path().join("shop-cert.pem");
    std::fs::write(&ca, &chain)?;
    let right = TestProxy::start_anywhere(&api, Some(CertKey::load(&api.cert_key_file())?)).await?;
    assert!(right.store.has_host(HOST));
    assert_eq!(
        curl_https(HOST, right.https.expect("an https listener"), &ca).await?,
        BODY
    );
    let other_file = api.data_dir.path().join("other.key");
    let other_key = CertKey::new(SealKey::load(&other_file, true)?, &other_file);
    let wrong = TestProxy::start_anywhere(&api, Some(other_key)).await?;
    assert!(!wrong.store.has_host(HOST));
    let refused = curl_https(HOST, wrong.https.expect("an https listener"), &ca).await;
    assert!(refused.is_err(), "served without the key: {refused:?}");
    right.stop().await?;
    wrong.stop().await
}

#[tokio::test]
async fn without_a_cert_key_certificates_are_refused_naming_the_flag() -> anyhow::Result<()> {
    // Uploads: a 422 that says what to add.
    let api = TestApi::start_with(|cfg| cfg.cert_key_file = None).await?;
    api.must_create_app("shop").await;
    let (chain, key) = must_self_signed(&[HOST]);
    let res = upload(&api, "shop", HOST, &chain, &key).await;
    assert_eq!(res.status(), 422);
    let error = error_of(res).await;
    assert!(error.contains("--cert-key-file"), "{error}");
    let listed: serde_json::Value = api.get_json("/v1/apps/shop/certificates").await;
    assert_eq!(listed["certificates"], json!([]), "nothing stored");

    // ACME on: the API does not start.
    let error = must_fail_to_serve(api.data_dir.path(), Some("https://acme.invalid/dir")).await;
    assert!(
        error.contains("acme is on") && error.contains("add --cert-key-file"),
        "{error}"
    );

    // Certificates stored (by an API that had the key): the API does not start without it.
    let keyed = TestApi::start().await?;
    keyed.must_create_app("shop").await;
    let res = upload(&keyed, "shop", HOST, &chain, &key).await;
    assert_eq!(res.status(), 201);
    let error = must_fail_to_serve(keyed.data_dir.path(), None).await;
    assert!(
        error.contains("holds 1 certificates") && error.contains("add --cert-key-file"),
        "{error}"
    );
    Ok(())
}

/// Serves `data_dir` without a certificate key and returns why it refused to start.
async fn must_fail_to_serve(data_dir: &Path, acme_directory: Option<&str>) -> String {
    let cfg = godwit_api::ApiConfig {
        data_dir: data_dir.to_owned(),
        // The refusal comes before any connection: nothing listens here.
        nats_url: "nats://127.0.0.1:1".to_owned(),
        default_region: "ams".to_owned(),
        acme_directory: acme_directory.map(str::to_owned),
        acme_ca_pem: None,
        acme_renew_before: godwit_api::RenewBefore::default(),
        acme_renew_every: godwit_api::DEFAULT_ACME_RENEW_EVERY,
        cert_key_file: None,
        state_topology: godwit_state::Topology::new("local", &[]),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = tokio::time::timeout(
        Duration::from_secs(10),
        godwit_api::serve(cfg, listener, CancellationToken::new()),
    )
    .await
    .expect("refuses at once");
    served.expect_err("refuses to start").to_string()
}

/// Every file under `dir`, concatenated.
fn must_read_tree(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            bytes.extend(must_read_tree(&path));
        } else if let Ok(contents) = std::fs::read(&path) {
            bytes.extend(contents);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
