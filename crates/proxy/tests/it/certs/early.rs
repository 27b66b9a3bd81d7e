//! A challenge asked for before the replica delivers it: the API tells the ACME server as soon
//! as its put is acknowledged, and a fast validator may beat the replica's watch.

use godwit_state::key_for;
use godwit_types::{AcmeChallengeKind, AcmeChallengeRecord};
use sha2::Digest as _;

use super::{ACME_TLS_ALPN, CertHarness, handshake};

fn challenge(kind: AcmeChallengeKind, hostname: &str, token: &str) -> AcmeChallengeRecord {
    AcmeChallengeRecord {
        kind,
        hostname: hostname.to_owned(),
        token: token.to_owned(),
        key_authorization: format!("{token}.thumbprint"),
    }
}

/// The store's replica follows another, empty bucket, so only the direct read of
/// `godwit_acme` can answer: deterministic, whatever the replica's speed.
#[tokio::test]
async fn challenges_the_replica_has_not_delivered_are_read_from_the_bucket() -> anyhow::Result<()> {
    let h = CertHarness::start_following("godwit_acme_unfollowed").await?;
    let http01 = challenge(
        AcmeChallengeKind::Http01,
        "early.shop-example.test",
        "tok_early-1",
    );
    let alpn_host = "early-alpn.shop-example.test";
    let tls_alpn01 = challenge(AcmeChallengeKind::TlsAlpn01, alpn_host, "tok_early-2");
    h.challenges.put(&key_for(&http01.token), &http01).await?;
    h.challenges.put(&key_for(alpn_host), &tls_alpn01).await?;
    assert!(
        h.store.http01_answer(&http01.token).is_none(),
        "not replicated"
    );

    let ask = |token: &str| {
        h.proxy
            .client()
            .get(h.proxy.url(&format!("/.well-known/acme-challenge/{token}")))
            .header("host", "early.shop-example.test")
    };
    let reply = h.proxy.send(ask(&http01.token)).await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "tok_early-1.thumbprint");

    // The first acme-tls/1 handshake already gets the challenge certificate.
    let (leaf, alpn) = handshake(h.https(), alpn_host, &[ACME_TLS_ALPN]).await?;
    assert_eq!(alpn.as_deref(), Some(ACME_TLS_ALPN));
    let digest = sha2::Sha256::digest(b"tok_early-2.thumbprint");
    assert!(
        leaf.windows(digest.len()).any(|w| w == digest.as_slice()),
        "the challenge certificate carries the digest"
    );
    // Without acme-tls/1 the usual certificate answers, and a name with no challenge gets no
    // acme-tls/1 certificate at all.
    let (usual, _) = handshake(h.https(), alpn_host, &[b"http/1.1"]).await?;
    assert_eq!(usual.as_ref(), h.default_leaf.as_slice());
    let refused = handshake(h.https(), "none.shop-example.test", &[ACME_TLS_ALPN]).await;
    assert!(refused.is_err(), "{refused:?}");

    // Deleted from the bucket: an unknown token again, routed as usual (the http-01 answer
    // read from the bucket was not kept).
    h.challenges.delete(&key_for(&http01.token)).await?;
    let reply = h.proxy.send(ask(&http01.token)).await?;
    assert_eq!(reply.status, 404, "{}", reply.body);
    let reply = h.proxy.send(ask("never-opened")).await?;
    assert_eq!(reply.status, 404, "{}", reply.body);
    Ok(())
}

/// The real race: the store follows `godwit_acme` itself, and the challenge is asked for right
/// after the put, without waiting for the replica.
#[tokio::test]
async fn challenges_are_answered_right_after_the_put() -> anyhow::Result<()> {
    let h = CertHarness::start().await?;
    for round in 0..5 {
        let token = format!("tok_now-{round}");
        let hostname = format!("now-{round}.shop-example.test");
        let http01 = challenge(AcmeChallengeKind::Http01, &hostname, &token);
        let tls_alpn01 = challenge(AcmeChallengeKind::TlsAlpn01, &hostname, &token);
        h.challenges.put(&key_for(&token), &http01).await?;
        h.challenges.put(&key_for(&hostname), &tls_alpn01).await?;
        let reply = h
            .proxy
            .send(
                h.proxy
                    .client()
                    .get(h.proxy.url(&format!("/.well-known/acme-challenge/{token}")))
                    .header("host", &hostname),
            )
            .await?;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body, format!("{token}.thumbprint"));
        let (leaf, _) = handshake(h.https(), &hostname, &[ACME_TLS_ALPN]).await?;
        let digest = sha2::Sha256::digest(format!("{token}.thumbprint").as_bytes());
        assert!(leaf.windows(digest.len()).any(|w| w == digest.as_slice()));
    }
    Ok(())
}
