//! Certificates of custom hostnames and ACME challenges, followed from real nats-server
//! buckets: served by SNI, routed by Host, replaced and removed without a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use godwit_proxy::{ACME_TLS_ALPN, CertKey, CertStore};
use godwit_state::seal::SealKey;
use godwit_state::testing::NatsServer;
use godwit_state::{Bucket, StateClient, Topology, key_for};
use godwit_types::{
    ACME_BUCKET, AcmeChallengeKind, AcmeChallengeRecord, CERTS_BUCKET, CertRecord, MachineState,
    SealedKey,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_util::sync::CancellationToken;

use crate::support::{Backend, DOMAIN, Harness, HarnessBuilder, record, wait_until};

mod early;
mod handshake;
mod regions;
mod sealed;

use handshake::handshake;

const CUSTOM: &str = "www.shop-example.test";

/// A test CA that signs certificates for any name.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem_path: PathBuf,
}

impl TestCa {
    fn must_new(dir: &Path) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "godwit certs test ca");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key"))
            .expect("ca certificate");
        let pem_path = dir.join("ca.pem");
        std::fs::write(&pem_path, issuer.pem()).expect("write ca");
        TestCa { issuer, pem_path }
    }

    /// (chain PEM, key PEM, leaf DER) for `name`.
    fn must_issue(&self, name: &str) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("certificate");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// The proxy with https, a default `*.<DOMAIN>` certificate, and a store following its own
/// nats-server's certificate and challenge buckets, opening keys with the cluster key the
/// harness seals them with (as the API does).
struct CertHarness {
    proxy: Harness,
    /// The cluster certificate key: what the API would seal with (the proxy reads its file).
    cert_key: SealKey,
    certs: Bucket<CertRecord>,
    challenges: Bucket<AcmeChallengeRecord>,
    store: CertStore,
    default_leaf: Vec<u8>,
    ca: TestCa,
    _backend: Backend,
    _nats: Vec<NatsServer>,
    _cancel: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

/// A test's cluster certificate key, in a directory of its own: what the API seals with and
/// what the proxy's key file holds.
struct ClusterKey {
    dir: tempfile::TempDir,
    seal: SealKey,
}

impl ClusterKey {
    fn new() -> anyhow::Result<ClusterKey> {
        let dir = tempfile::tempdir()?;
        let seal = SealKey::load(&dir.path().join("cert.key"), true)?;
        Ok(ClusterKey { dir, seal })
    }

    /// The key as the proxy loads it, from the file.
    fn open(&self) -> anyhow::Result<CertKey> {
        Ok(CertKey::load(&self.dir.path().join("cert.key"))?)
    }
}

impl CertHarness {
    async fn start() -> anyhow::Result<CertHarness> {
        CertHarness::start_following(ACME_BUCKET).await
    }

    /// Like [`CertHarness::start`], but the store's challenge replica follows the bucket
    /// `replicated` (the store still reads `godwit_acme` directly on a miss).
    async fn start_following(replicated: &str) -> anyhow::Result<CertHarness> {
        let key = ClusterKey::new()?;
        let nats =
            NatsServer::start().context("start nats-server (apt-get install -y nats-server)")?;
        let client = StateClient::connect(&nats.url).await?;
        let certs = client.bucket::<CertRecord>(CERTS_BUCKET).await?;
        let challenges = client.bucket::<AcmeChallengeRecord>(ACME_BUCKET).await?;
        let cancel = CancellationToken::new();
        let replica = client
            .bucket::<AcmeChallengeRecord>(replicated)
            .await?
            .replica()
            .await?;
        let lookups = client
            .records::<AcmeChallengeRecord>(ACME_BUCKET, &Topology::new("local", &[]))
            .await?;
        let store = CertStore::follow(
            certs.replica().await?,
            replica,
            lookups,
            Some(key.open()?),
            cancel.clone(),
        );
        CertHarness::with_store(store, key, (certs, challenges), vec![nats], cancel).await
    }

    /// A proxy with https and a default certificate, serving from `store` (which opens keys
    /// sealed with `key`); `buckets` are where the tests write certificates and challenges.
    async fn with_store(
        store: CertStore,
        ClusterKey {
            dir,
            seal: cert_key,
        }: ClusterKey,
        (certs, challenges): (Bucket<CertRecord>, Bucket<AcmeChallengeRecord>),
        nats: Vec<NatsServer>,
        cancel: CancellationToken,
    ) -> anyhow::Result<CertHarness> {
        let ca = TestCa::must_new(dir.path());
        let (chain, key, default_leaf) = ca.must_issue(&format!("*.{DOMAIN}"));
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, chain)?;
        std::fs::write(&key_path, key)?;
        let backend = Backend::start("shop-1").await;
        let with_store = store.clone();
        let proxy = HarnessBuilder::new()
            .record(record(
                "m-shop",
                "shop",
                backend.addr,
                MachineState::Started,
            ))
            .https()
            .config(move |cfg| cfg.certs = Some(with_store))
            .start_with_tls(Some((cert_path, key_path)))
            .await?;
        Ok(CertHarness {
            proxy,
            cert_key,
            certs,
            challenges,
            store,
            default_leaf,
            ca,
            _backend: backend,
            _nats: nats,
            _cancel: cancel.drop_guard(),
            _dir: dir,
        })
    }

    fn https(&self) -> SocketAddr {
        self.proxy.https.expect("https listener")
    }

    /// Publishes a certificate as the API does: its key sealed with the cluster key.
    async fn must_put_cert(&self, app: &str, hostname: &str, chain: &str, key: &str) {
        let (nonce, ciphertext) = self
            .cert_key
            .seal_base64(hostname.as_bytes(), key.as_bytes());
        self.must_put_record(&CertRecord {
            app: app.to_owned(),
            hostname: hostname.to_owned(),
            fullchain_pem: chain.to_owned(),
            key_sealed: Some(SealedKey { nonce, ciphertext }),
        })
        .await;
    }

    async fn must_put_record(&self, record: &CertRecord) {
        let hostname = &record.hostname;
        self.certs
            .put(&key_for(hostname), record)
            .await
            .expect("put certificate");
    }

    /// Polls TLS handshakes for `sni` until the leaf served is `want`.
    async fn wait_for_leaf(&self, sni: &str, want: &[u8]) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
        loop {
            let served = handshake(self.https(), sni, &[b"http/1.1"]).await;
            if let Ok((leaf, _)) = &served
                && leaf.as_ref() == want
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{sni} never served the expected certificate (last: {served:?})");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn custom_certificates_are_served_routed_replaced_and_removed() -> anyhow::Result<()> {
    let h = CertHarness::start().await?;
    // Before any record: the default certificate, and the hostname routes nowhere.
    h.wait_for_leaf(CUSTOM, &h.default_leaf).await?;
    let reply = h
        .proxy
        .send(
            h.proxy
                .client()
                .get(h.proxy.url("/"))
                .header("host", CUSTOM),
        )
        .await?;
    assert_eq!(reply.status, 404, "{}", reply.body);

    let (chain, key, leaf_v1) = h.ca.must_issue(CUSTOM);
    h.must_put_cert("shop", CUSTOM, &chain, &key).await;
    h.wait_for_leaf(CUSTOM, &leaf_v1).await?;
    assert!(h.store.has_host(&CUSTOM.to_ascii_uppercase()));
    assert_eq!(
        h.store.app_for_host(&format!("{CUSTOM}:443")).as_deref(),
        Some("shop")
    );

    // curl verifies the chain against the CA and reaches the app by the custom hostname.
    let https = h.https();
    let (ca, url) = (
        h.ca.pem_path.to_str().context("utf-8 path")?.to_owned(),
        format!("https://{CUSTOM}:{}/hello", https.port()),
    );
    let resolve = format!("{CUSTOM}:{}:{}", https.port(), https.ip());
    let body =
        tokio::task::spawn_blocking(move || curl(&["--cacert", &ca, "--resolve", &resolve, &url]))
            .await??;
    let echo: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(echo["name"], "shop-1");
    // Plain HTTP routes the hostname too.
    let reply = h
        .proxy
        .send(
            h.proxy
                .client()
                .get(h.proxy.url("/plain"))
                .header("host", CUSTOM),
        )
        .await?;
    assert_eq!(reply.served_by(), "shop-1");

    // Replaced: the new certificate is served without a restart.
    let (chain, key, leaf_v2) = h.ca.must_issue(CUSTOM);
    h.must_put_cert("shop", CUSTOM, &chain, &key).await;
    h.wait_for_leaf(CUSTOM, &leaf_v2).await?;
    assert_ne!(leaf_v1, leaf_v2);

    // A record whose key does not match is left out; the last good one is gone too (the
    // record replaced it), so the default certificate answers.
    let (chain_v3, _, _) = h.ca.must_issue(CUSTOM);
    let (_, other_key, _) = h.ca.must_issue(CUSTOM);
    h.must_put_cert("shop", CUSTOM, &chain_v3, &other_key).await;
    h.wait_for_leaf(CUSTOM, &h.default_leaf).await?;

    // Removed: the default certificate again, and no route.
    h.must_put_cert("shop", CUSTOM, &chain, &key).await;
    h.wait_for_leaf(CUSTOM, &leaf_v2).await?;
    h.certs.delete(&key_for(CUSTOM)).await?;
    h.wait_for_leaf(CUSTOM, &h.default_leaf).await?;
    let store = h.store.clone();
    wait_until("the hostname stops routing", || {
        store.app_for_host(CUSTOM).is_none()
    })
    .await?;
    let reply = h
        .proxy
        .send(
            h.proxy
                .client()
                .get(h.proxy.url("/"))
                .header("host", CUSTOM),
        )
        .await?;
    assert_eq!(reply.status, 404, "{}", reply.body);
    Ok(())
}

#[tokio::test]
async fn acme_challenges_are_answered_while_open() -> anyhow::Result<()> {
    let h = CertHarness::start().await?;
    let http01 = AcmeChallengeRecord {
        kind: AcmeChallengeKind::Http01,
        hostname: "pay.shop-example.test".to_owned(),
        token: "tok_EN-123".to_owned(),
        key_authorization: "tok_EN-123.thumbprint".to_owned(),
    };
    let alpn_host = "alpn.shop-example.test";
    let tls_alpn01 = AcmeChallengeRecord {
        kind: AcmeChallengeKind::TlsAlpn01,
        hostname: alpn_host.to_owned(),
        token: "tok2".to_owned(),
        key_authorization: "tok2.thumbprint".to_owned(),
    };
    h.challenges.put(&key_for(&http01.token), &http01).await?;
    h.challenges.put(&key_for(alpn_host), &tls_alpn01).await?;

    let store = h.store.clone();
    wait_until("the http-01 challenge is loaded", || {
        store.http01_answer("tok_EN-123").is_some()
    })
    .await?;
    let challenge = |token: &str| {
        h.proxy
            .client()
            .get(h.proxy.url(&format!("/.well-known/acme-challenge/{token}")))
            .header("host", "pay.shop-example.test")
    };
    let reply = h.proxy.send(challenge("tok_EN-123")).await?;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body, "tok_EN-123.thumbprint",
        "exactly the key authorization"
    );
    let reply = h.proxy.send(challenge("unknown")).await?;
    assert_eq!(
        reply.status, 404,
        "unknown tokens are routed as usual: {}",
        reply.body
    );

    // TLS-ALPN-01: acme-tls/1 gets a self-signed certificate for the name, carrying
    // SHA-256(key authorization); without that ALPN the usual certificate answers.
    let digest = {
        use sha2::Digest as _;
        sha2::Sha256::digest(b"tok2.thumbprint").to_vec()
    };
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    let (leaf, alpn) = loop {
        match handshake(h.https(), alpn_host, &[ACME_TLS_ALPN]).await {
            Ok(served) => break served,
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    assert_eq!(alpn.as_deref(), Some(ACME_TLS_ALPN));
    assert!(
        leaf.windows(digest.len()).any(|w| w == digest.as_slice()),
        "the challenge certificate carries the digest"
    );
    assert!(
        leaf.windows(alpn_host.len())
            .any(|w| w == alpn_host.as_bytes())
    );
    let (usual, alpn) = handshake(h.https(), alpn_host, &[b"http/1.1"]).await?;
    assert_eq!(usual.as_ref(), h.default_leaf.as_slice());
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

    // Closed challenges are forgotten.
    h.challenges.delete(&key_for(&http01.token)).await?;
    h.challenges.delete(&key_for(alpn_host)).await?;
    wait_until("the http-01 challenge is closed", || {
        store.http01_answer("tok_EN-123").is_none()
    })
    .await?;
    let reply = h.proxy.send(challenge("tok_EN-123")).await?;
    assert_eq!(reply.status, 404);
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    while handshake(h.https(), alpn_host, &[ACME_TLS_ALPN])
        .await
        .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "acme-tls/1 still answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Runs curl and returns the body of a 2xx answer.
fn curl(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "20"])
        .args(args)
        .output()
        .context("run curl (apt-get install -y curl)")?;
    if !output.status.success() {
        bail!(
            "curl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}
