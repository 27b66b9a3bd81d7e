//! ACME renewal against Debian's pebble issuing short-lived certificates: a certificate whose
//! renewal window opened is ordered again and the proxies serve the new one; a failed renewal
//! keeps the old one served, is reported, and is retried until it succeeds. (That uploaded
//! certificates are never renewed is a unit test of `Db::renewable_certs`.)

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use godwit_api::RenewBefore;
use godwit_types::{CERTS_BUCKET, CertRecord};
use reqwest::Method;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::json;
use x509_parser::prelude::FromDer as _;

use crate::acme::{certificate, wait_issued};
use crate::harness::TestApi;
use crate::pebble::Pebble;
use crate::proxy::{TestProxy, curl_tls, must_run_shop, wait_until};

/// pebble's certificates live this long; with [`RENEW_BEFORE`] they are due 3 s after issue.
const VALIDITY: Duration = Duration::from_secs(30);
const RENEW_BEFORE: RenewBefore = RenewBefore::Share {
    numerator: 9,
    denominator: 10,
};
const RENEW_EVERY: Duration = Duration::from_millis(200);
/// Issuing, becoming due and renewing, with room for a slow machine.
const RENEWED_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_due_acme_certificate_is_renewed_and_the_proxy_serves_the_new_one() -> anyhow::Result<()>
{
    let (http, https) = (bind().await?, bind().await?);
    let https_addr = https.local_addr()?;
    let pebble =
        Pebble::start_with_validity(http.local_addr()?.port(), https_addr.port(), Some(VALIDITY))?;
    let api = start_api(&pebble).await?;
    let proxy = TestProxy::start(&api, http, Some(https), Some(cert_key(&api)?)).await?;
    let hostname = "renew.godwit-acme.test";
    let first = must_issue(&api, &pebble, hostname, "tls-alpn-01").await?;
    let first_serial = leaf_serial(&published_chain(&api, hostname).await?)?;

    let renewed = wait_renewed(&api, &pebble, hostname, &first).await?;
    assert_eq!(renewed["source"], "acme");
    assert_eq!(renewed["status"], "ready", "{renewed}");
    let stored_serial = leaf_serial(&published_chain(&api, hostname).await?)?;
    assert_ne!(
        stored_serial, first_serial,
        "a new certificate is published"
    );

    // The proxy reloads it without a restart; curl checks it chains to pebble's root.
    let root = api.data_dir.path().join("pebble-root.pem");
    std::fs::write(&root, pebble.root_pem()?)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let served = leaf_serial(&served_chain(hostname, https_addr, &root).await?)?;
        if served != first_serial {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the proxy still serves the first certificate");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.stop().await
}

#[tokio::test]
async fn a_failed_renewal_keeps_the_old_certificate_served_and_is_retried() -> anyhow::Result<()> {
    let (http, https) = (bind().await?, bind().await?);
    let (http_addr, https_addr) = (http.local_addr()?, https.local_addr()?);
    let pebble = Pebble::start_with_validity(http_addr.port(), https_addr.port(), Some(VALIDITY))?;
    let api = start_api(&pebble).await?;
    // HTTP-01 is answered by one proxy, certificates are served by another that stays up.
    let answering = TestProxy::start(&api, http, None, Some(cert_key(&api)?)).await?;
    let serving = TestProxy::start(&api, bind().await?, Some(https), Some(cert_key(&api)?)).await?;
    let hostname = "retry.godwit-acme.test";
    let first = must_issue(&api, &pebble, hostname, "http-01").await?;
    let first_chain = published_chain(&api, hostname).await?;
    let store = serving.store.clone();
    wait_until("the serving proxy loads the certificate", || {
        store.has_host(hostname)
    })
    .await?;

    // Nothing answers HTTP-01 now: the renewal fails, and fails again after a backoff.
    answering.stop().await?;
    let failed = wait_status(&api, hostname, |cert| {
        cert["error"]
            .as_str()
            .is_some_and(|e| e.contains("renewal failed (2 in a row"))
    })
    .await?;
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("connection refused"), "{error}");
    assert_eq!(failed["not_after"], first["not_after"], "{failed}");
    assert_eq!(published_chain(&api, hostname).await?, first_chain);
    let root = api.data_dir.path().join("pebble-root.pem");
    std::fs::write(&root, pebble.root_pem()?)?;
    let served = served_chain(hostname, https_addr, &root).await?;
    assert_eq!(leaf_serial(&served)?, leaf_serial(&first_chain)?);

    // HTTP-01 answered again: a retry succeeds.
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .context("rebind the http-01 port")?;
    let answering = TestProxy::start(&api, http, None, Some(cert_key(&api)?)).await?;
    let renewed = wait_renewed(&api, &pebble, hostname, &first).await?;
    assert!(renewed.get("error").is_none(), "{renewed}");
    assert_ne!(published_chain(&api, hostname).await?, first_chain);
    answering.stop().await?;
    serving.stop().await
}

/// The cluster certificate key the API made, as a proxy loads it.
fn cert_key(api: &TestApi) -> anyhow::Result<godwit_proxy::CertKey> {
    Ok(godwit_proxy::CertKey::load(&api.cert_key_file())?)
}

async fn bind() -> anyhow::Result<tokio::net::TcpListener> {
    Ok(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
}

/// The API with pebble as its ACME server, renewing at [`RENEW_BEFORE`], and app `shop`.
async fn start_api(pebble: &Pebble) -> anyhow::Result<TestApi> {
    let (directory, ca) = (pebble.directory.clone(), pebble.ca_pem.clone());
    let api = TestApi::start_with(move |cfg| {
        cfg.acme_directory = Some(directory);
        cfg.acme_ca_pem = Some(ca);
        cfg.acme_renew_before = RENEW_BEFORE;
        cfg.acme_renew_every = RENEW_EVERY;
    })
    .await?;
    api.must_create_app("shop").await;
    must_run_shop(&api).await;
    Ok(api)
}

/// Orders a certificate for `hostname` and waits until it is issued.
async fn must_issue(
    api: &TestApi,
    pebble: &Pebble,
    hostname: &str,
    challenge: &str,
) -> anyhow::Result<serde_json::Value> {
    let res = api
        .send_json(
            Method::POST,
            "/v1/apps/shop/certificates/acme",
            &json!({ "hostname": hostname, "challenge": challenge }),
        )
        .await;
    assert_eq!(res.status(), 202, "{}", res.text().await?);
    wait_issued(api, hostname, pebble).await
}

/// Waits until the API shows a ready certificate for `hostname` that ends later than `first`.
async fn wait_renewed(
    api: &TestApi,
    pebble: &Pebble,
    hostname: &str,
    first: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let first_end = first["not_after"].as_u64().context("not_after")?;
    wait_status(api, hostname, |cert| {
        cert["status"] == "ready"
            && cert["not_after"]
                .as_u64()
                .is_some_and(|end| end > first_end)
    })
    .await
    .with_context(|| format!("pebble:\n{}", pebble.log()))
}

/// Polls `GET …/certificates/{hostname}` until `done` holds for it.
async fn wait_status(
    api: &TestApi,
    hostname: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + RENEWED_WITHIN;
    loop {
        let cert = certificate(api, hostname).await;
        if done(&cert) {
            return Ok(cert);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{hostname} did not get there within {RENEWED_WITHIN:?}: {cert}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The chain the API published to the proxies for `hostname`.
async fn published_chain(api: &TestApi, hostname: &str) -> anyhow::Result<String> {
    let certs = api.state.bucket::<CertRecord>(CERTS_BUCKET).await?;
    let record = certs
        .get(&godwit_state::key_for(hostname))
        .await?
        .with_context(|| format!("no published certificate for {hostname}"))?;
    Ok(record.fullchain_pem)
}

/// The chain the proxy on `addr` serves for `hostname`, as curl saw it (verified against
/// `root`).
async fn served_chain(
    hostname: &str,
    addr: SocketAddr,
    root: &std::path::Path,
) -> anyhow::Result<String> {
    curl_tls(
        hostname,
        addr,
        root,
        &["-o", "/dev/null", "--write-out", "%{certs}"],
    )
    .await
}

/// The serial number of the first certificate of a PEM chain, in hex.
fn leaf_serial(chain_pem: &str) -> anyhow::Result<String> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .context("no certificate in the chain")??;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf)?;
    Ok(cert.raw_serial_as_string())
}
