//! ACME end to end against Debian's pebble: the API orders, a real godwit proxy answers the
//! HTTP-01 or TLS-ALPN-01 challenge from the `godwit_acme` bucket, pebble validates, and the
//! proxy then serves the issued certificate (chaining to pebble's root, its key opened with
//! the cluster certificate key) and routes the hostname to the app.

use std::time::Duration;

use anyhow::bail;
use godwit_proxy::CertKey;
use godwit_types::{ACME_BUCKET, AcmeChallengeRecord};
use reqwest::Method;
use serde_json::json;

use crate::harness::TestApi;
use crate::pebble::Pebble;
use crate::proxy::{BODY, TestProxy, curl_https, must_run_shop, wait_until};

#[tokio::test]
async fn acme_issues_by_http01_and_tls_alpn01_and_the_proxy_serves_it() -> anyhow::Result<()> {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (http_addr, https_addr) = (http.local_addr()?, https.local_addr()?);
    let pebble = Pebble::start(http_addr.port(), https_addr.port())?;
    let (directory, ca) = (pebble.directory.clone(), pebble.ca_pem.clone());
    let api = TestApi::start_with(move |cfg| {
        cfg.acme_directory = Some(directory);
        cfg.acme_ca_pem = Some(ca);
    })
    .await?;
    api.must_create_app("shop").await;

    // The app's machine, and a proxy following the buckets the API writes, with its key.
    must_run_shop(&api).await;
    let cert_key = CertKey::load(&api.cert_key_file())?;
    let proxy = TestProxy::start(&api, http, Some(https), Some(cert_key)).await?;
    let store = proxy.store.clone();
    let challenges = api.state.bucket::<AcmeChallengeRecord>(ACME_BUCKET).await?;

    for (hostname, challenge) in [
        ("shop.godwit-acme.test", "http-01"),
        ("alpn.godwit-acme.test", "tls-alpn-01"),
    ] {
        let res = api
            .send_json(
                Method::POST,
                "/v1/apps/shop/certificates/acme",
                &json!({ "hostname": hostname, "challenge": challenge }),
            )
            .await;
        assert_eq!(res.status(), 202, "{}", res.text().await?);
        let started: serde_json::Value = res.json().await?;
        assert_eq!(started["status"], "pending");
        assert_eq!(started["source"], "acme");
        let res = api
            .send_json(
                Method::POST,
                "/v1/apps/shop/certificates/acme",
                &json!({ "hostname": hostname }),
            )
            .await;
        assert_eq!(res.status(), 409, "one order at a time per hostname");

        let cert = wait_issued(&api, hostname, &pebble).await?;
        assert!(
            cert["issuer"]
                .as_str()
                .unwrap_or_default()
                .contains("Pebble Intermediate"),
            "{cert}"
        );
        let store = store.clone();
        let loaded = hostname.to_owned();
        wait_until("the proxy loads the certificate", move || {
            store.has_host(&loaded)
        })
        .await?;

        // curl trusts only pebble's root: the chain served must lead there, for this SNI,
        // and the hostname routes to the app.
        let root = api.data_dir.path().join("pebble-root.pem");
        std::fs::write(&root, pebble.root_pem()?)?;
        let body = curl_https(hostname, https_addr, &root).await?;
        assert_eq!(body, BODY, "{challenge}");
    }
    let open: Vec<String> = challenges.keys().await?;
    assert!(
        open.is_empty(),
        "challenges are removed when done: {open:?}"
    );
    let listed: serde_json::Value = api.get_json("/v1/apps/shop/certificates").await;
    assert_eq!(listed["certificates"].as_array().map(Vec::len), Some(2));
    proxy.stop().await
}

#[tokio::test]
async fn a_failed_validation_is_reported_with_the_reason() -> anyhow::Result<()> {
    // Nothing listens where pebble validates: no proxy runs.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let pebble = Pebble::start(unused, unused)?;
    let (directory, ca) = (pebble.directory.clone(), pebble.ca_pem.clone());
    let api = TestApi::start_with(move |cfg| {
        cfg.acme_directory = Some(directory);
        cfg.acme_ca_pem = Some(ca);
    })
    .await?;
    api.must_create_app("shop").await;
    let res = api
        .send_json(
            Method::POST,
            "/v1/apps/shop/certificates/acme",
            &json!({ "hostname": "down.godwit-acme.test" }),
        )
        .await;
    assert_eq!(res.status(), 202);
    let error = match wait_issued(&api, "down.godwit-acme.test", &pebble).await {
        Ok(cert) => bail!("issued without a challenge answered: {cert}"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("\"failed\""), "{error}");
    assert!(
        error.to_ascii_lowercase().contains("connection refused"),
        "{error}"
    );
    Ok(())
}

/// App `shop`'s certificate for `hostname`, as the API shows it.
pub(crate) async fn certificate(api: &TestApi, hostname: &str) -> serde_json::Value {
    api.get_json(&format!("/v1/apps/shop/certificates/{hostname}"))
        .await
}

/// Polls the certificate until it leaves `pending`; fails with the reason when it failed.
pub(crate) async fn wait_issued(
    api: &TestApi,
    hostname: &str,
    pebble: &Pebble,
) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let cert = certificate(api, hostname).await;
        match cert["status"].as_str() {
            Some("ready") => return Ok(cert),
            Some("pending") => {}
            _ => bail!(
                "issuance of {hostname} failed: {cert}\npebble:\n{}",
                pebble.log()
            ),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{hostname} still pending after 90 s\npebble:\n{}",
                pebble.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
