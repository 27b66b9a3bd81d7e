//! Certificates and ACME challenges in a multi-region cluster: the API writes them at the hub
//! (`godwit_certs_hub`, `godwit_acme_hub`), and a proxy in another region, talking only to
//! its own region's nats-server, serves them, as `godwit proxy` opens them
//! ([`CertStore::open`] with the cluster's topology).

use anyhow::Context as _;
use godwit_proxy::CertStore;
use godwit_state::testing::NatsServer;
use godwit_state::{Bucket, Record, StateClient, Topology, key_for};
use godwit_types::{ACME_BUCKET, AcmeChallengeKind, AcmeChallengeRecord, CERTS_BUCKET, CertRecord};
use tokio_util::sync::CancellationToken;

use super::{CUSTOM, CertHarness, ClusterKey};
use crate::support::wait_until;

/// The hub (the API's region) and `ams`, the proxy's.
fn regions() -> Vec<String> {
    vec!["ams".to_owned(), "hub".to_owned()]
}

impl CertHarness {
    /// The proxy in region `ams`, its store opened on ams's server; `certs` and `challenges`
    /// are the API's buckets at the hub. With `replicated`, the store's challenge replica
    /// follows that (empty) bucket instead, so that only its direct reads can answer.
    async fn start_in_region(replicated: Option<&str>) -> anyhow::Result<CertHarness> {
        let hub = NatsServer::start_region("hub", true, &[])
            .context("start nats-server (apt-get install -y nats-server)")?;
        let hub_url = hub.leaf_url().context("the hub accepts leaf connections")?;
        let ams = NatsServer::start_region("ams", false, &[hub_url])?;
        let at_hub = StateClient::connect(&hub.url).await?;
        let api_topology = Topology::new("hub", &regions());
        let certs = writer::<CertRecord>(&at_hub, CERTS_BUCKET, &api_topology).await?;
        let challenges = writer::<AcmeChallengeRecord>(&at_hub, ACME_BUCKET, &api_topology).await?;
        assert_eq!(certs.name(), "godwit_certs_hub");

        let at_ams = StateClient::connect(&ams.url).await?;
        let proxy_topology = Topology::new("ams", &regions());
        let cancel = CancellationToken::new();
        let key = ClusterKey::new()?;
        let store = match replicated {
            None => {
                CertStore::open(
                    &at_ams,
                    &proxy_topology,
                    Some(key.open()?),
                    cancel.child_token(),
                )
                .await?
            }
            Some(bucket) => {
                let certs = at_ams.records::<CertRecord>(CERTS_BUCKET, &proxy_topology);
                let unfollowed = at_ams.bucket::<AcmeChallengeRecord>(bucket).await?;
                let lookups = at_ams.records(ACME_BUCKET, &proxy_topology).await?;
                CertStore::follow(
                    certs.await?.replica_until(cancel.child_token()).await?,
                    unfollowed.replica_until(cancel.child_token()).await?,
                    lookups,
                    Some(key.open()?),
                    cancel.child_token(),
                )
            }
        };
        CertHarness::with_store(store, key, (certs, challenges), vec![ams, hub], cancel).await
    }
}

/// The bucket the API writes kind `name` to, as it opens it.
async fn writer<T: Record>(
    client: &StateClient,
    name: &str,
    topology: &Topology,
) -> anyhow::Result<Bucket<T>> {
    Ok(client.records::<T>(name, topology).await?.writer().clone())
}

fn http01(token: &str) -> AcmeChallengeRecord {
    AcmeChallengeRecord {
        kind: AcmeChallengeKind::Http01,
        hostname: CUSTOM.to_owned(),
        token: token.to_owned(),
        key_authorization: format!("{token}.thumbprint"),
    }
}

#[tokio::test]
async fn a_certificate_put_at_the_hub_is_served_by_a_proxy_in_another_region() -> anyhow::Result<()>
{
    let h = CertHarness::start_in_region(None).await?;
    let (chain, key, leaf) = h.ca.must_issue(CUSTOM);
    h.must_put_cert("shop", CUSTOM, &chain, &key).await;
    h.wait_for_leaf(CUSTOM, &leaf).await?;
    assert_eq!(h.store.app_for_host(CUSTOM).as_deref(), Some("shop"));

    // An open challenge reaches it too, and its removal.
    let challenge = http01("tok_regional-1");
    h.challenges
        .put(&key_for(&challenge.token), &challenge)
        .await?;
    let store = h.store.clone();
    wait_until("the challenge is replicated to ams", || {
        store.http01_answer("tok_regional-1").is_some()
    })
    .await?;
    h.challenges.delete(&key_for(&challenge.token)).await?;
    wait_until("the challenge's removal is replicated to ams", || {
        store.http01_answer("tok_regional-1").is_none()
    })
    .await?;

    // Deleted at the hub: no longer served in ams.
    h.certs.delete(&key_for(CUSTOM)).await?;
    h.wait_for_leaf(CUSTOM, &h.default_leaf).await?;
    Ok(())
}

/// The store's replica follows an empty bucket: only the direct read across regions
/// (`Records::get`) can answer, right after the put at the hub was acknowledged.
#[tokio::test]
async fn a_challenge_put_at_the_hub_is_answered_in_another_region_at_once() -> anyhow::Result<()> {
    let h = CertHarness::start_in_region(Some("godwit_acme_unfollowed")).await?;
    let challenge = http01("tok_regional-2");
    h.challenges
        .put(&key_for(&challenge.token), &challenge)
        .await?;
    assert!(
        h.store.http01_answer(&challenge.token).is_none(),
        "not replicated"
    );
    let reply = h
        .proxy
        .send(
            h.proxy
                .client()
                .get(h.proxy.url("/.well-known/acme-challenge/tok_regional-2"))
                .header("host", CUSTOM),
        )
        .await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "tok_regional-2.thumbprint");
    Ok(())
}
