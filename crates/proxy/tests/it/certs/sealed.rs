//! Sealed certificate keys: a certificate is served only when its key opens with the proxy's
//! cluster key. A proxy without the key, one with another key, a record in clear (from an older
//! API) and a sealed key moved to another hostname are each left out with an error naming the
//! hostname and the fix.

use godwit_proxy::{CertKey, CertStore};
use godwit_state::seal::SealKey;
use godwit_types::CertRecord;
use tokio_util::sync::CancellationToken;

use super::{CUSTOM, CertHarness};
use crate::access::Captured;
use crate::support::wait_until;

const OTHER: &str = "api.shop-example.test";

// A current-thread runtime: every store's tasks run on this thread, under this subscriber.
#[tokio::test]
async fn keys_open_only_with_the_cluster_key_and_refusals_name_the_fix() -> anyhow::Result<()> {
    let (logs, _default) = Captured::install_at(tracing::Level::INFO);
    let h = CertHarness::start().await?;
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let other_file = h._dir.path().join("other.key");
    let other_key = CertKey::new(SealKey::load(&other_file, true)?, &other_file);
    let keyless = follow(&h, None, &cancel).await?;
    let wrong = follow(&h, Some(other_key), &cancel).await?;

    // Sealed by the API: the proxy with the cluster key serves it, the others log why not.
    let (chain, key, leaf) = h.ca.must_issue(CUSTOM);
    h.must_put_cert("shop", CUSTOM, &chain, &key).await;
    h.wait_for_leaf(CUSTOM, &leaf).await?;
    let no_key = format!(
        "certificate for {CUSTOM} is sealed; start the proxy with --cert-key-file (the API's key)"
    );
    let wrong_key = format!(
        "certificate for {CUSTOM} does not open with this key ({})",
        other_file.display()
    );
    wait_for_log(&logs, &no_key).await?;
    wait_for_log(&logs, &wrong_key).await?;
    assert!(!keyless.has_host(CUSTOM) && !wrong.has_host(CUSTOM));
    assert_eq!(logs.text().matches(&no_key).count(), 1, "once per record");

    // The same sealed key under another hostname does not open (the hostname is the AAD),
    // though the key does match the chain.
    let sealed = h
        .certs
        .get(&godwit_state::key_for(CUSTOM))
        .await?
        .expect("published");
    h.must_put_record(&CertRecord {
        hostname: OTHER.to_owned(),
        ..sealed
    })
    .await;
    let replayed = format!("certificate for {OTHER} does not open with this key");
    wait_for_log(&logs, &replayed).await?;
    assert!(!h.store.has_host(OTHER));

    // A record with its key in clear (an older API) is refused, never used.
    h.must_put_record(&CertRecord {
        app: "shop".to_owned(),
        hostname: CUSTOM.to_owned(),
        fullchain_pem: chain.clone(),
        key_sealed: None,
    })
    .await;
    h.wait_for_leaf(CUSTOM, &h.default_leaf).await?;
    wait_for_log(
        &logs,
        &format!("certificate for {CUSTOM} has no sealed key"),
    )
    .await?;
    assert!(logs.text().contains("republish it by restarting the API"));
    assert!(
        !logs.text().contains("PRIVATE KEY"),
        "no key material in logs"
    );
    Ok(())
}

/// Another store following the harness's buckets, opening keys with `cert_key`.
async fn follow(
    h: &CertHarness,
    cert_key: Option<CertKey>,
    cancel: &CancellationToken,
) -> anyhow::Result<CertStore> {
    Ok(CertStore::follow(
        h.certs.replica().await?,
        h.challenges.replica().await?,
        h.challenges.clone().into(),
        cert_key,
        cancel.clone(),
    ))
}

async fn wait_for_log(logs: &Captured, line: &str) -> anyhow::Result<()> {
    let logs = logs.clone();
    let what = format!("the log says {line:?}");
    wait_until(&what, move || logs.text().contains(line)).await
}
