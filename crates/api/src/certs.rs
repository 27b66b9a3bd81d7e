//! Certificates for custom hostnames: validation of uploaded ones, issuance and renewal by
//! ACME, and their distribution to the proxies through the `godwit_certs` bucket (key
//! `key_for(hostname)`). The proxies never call the API: what they serve is what the bucket
//! holds. Private keys are sealed with the data key in the database, and with the cluster
//! certificate key (`--cert-key-file`, shared with the proxies; AAD = the hostname) in the
//! bucket: whoever reads NATS without that file reads no key.
//!
//! Both buckets are opened through the API's state topology, like hosts and machines: with
//! several regions the API writes `godwit_certs_<its region>` (the hub's) and every region's
//! server mirrors it, which is where that region's proxies read it.

use std::sync::Arc;

use godwit_state::seal::SealKey;
use godwit_state::{Bucket, StateClient, StateError};
use godwit_types::record::SealedKey;
use godwit_types::{ACME_BUCKET, AcmeChallengeKind, AcmeChallengeRecord, CERTS_BUCKET, CertRecord};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::ApiConfig;
use crate::crypto::DataKey;
use crate::db::{CertSource, Db, StoredCert};
use crate::error::error_chain;

mod acme;
pub(crate) mod renew;
pub(crate) mod validate;

use acme::AcmeIssuer;
pub(crate) use acme::kind_name;
pub use renew::{RenewBefore, RenewBeforeError};

/// What the certificate handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Certs {
    bucket: Bucket<CertRecord>,
    acme: Option<Arc<AcmeIssuer>>,
    /// Seals private keys for the proxies; `None` refuses to publish.
    cert_key: Option<SealKey>,
}

/// Why a certificate was not published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error(
        "this api has no certificate key to seal private keys for the proxies: restart it \
         with --cert-key-file <path> (the file its proxies get)"
    )]
    NoCertKey,
    #[error("failed to write the certificate bucket")]
    State(#[from] StateError),
}

impl Certs {
    /// Opens both buckets; ACME is on when `cfg.acme_directory` is set. Private keys are
    /// published sealed with `cert_key`.
    pub(crate) async fn open(
        cfg: &ApiConfig,
        state: &StateClient,
        cert_key: Option<SealKey>,
    ) -> Result<Self, StateError> {
        let topology = &cfg.state_topology;
        let bucket = state
            .records::<CertRecord>(CERTS_BUCKET, topology)
            .await?
            .writer()
            .clone();
        let acme = match &cfg.acme_directory {
            Some(directory) => {
                let challenges = state
                    .records::<AcmeChallengeRecord>(ACME_BUCKET, topology)
                    .await?
                    .writer()
                    .clone();
                Some(Arc::new(AcmeIssuer::new(
                    directory.clone(),
                    cfg.acme_ca_pem.clone(),
                    challenges,
                )))
            }
            None => None,
        };
        Ok(Certs {
            bucket,
            acme,
            cert_key,
        })
    }

    /// Whether this API can hand certificates to the proxies (it has a certificate key).
    pub(crate) fn can_publish(&self) -> bool {
        self.cert_key.is_some()
    }

    /// Whether this API can issue certificates by ACME.
    pub(crate) fn acme_enabled(&self) -> bool {
        self.acme.is_some()
    }

    /// Tells the proxies to serve `fullchain` for `hostname` and route it to `app`. The key
    /// goes sealed under a fresh nonce, bound to `hostname`.
    pub(crate) async fn publish(
        &self,
        app: &str,
        hostname: &str,
        fullchain: &str,
        key_pem: &str,
    ) -> Result<(), PublishError> {
        let cert_key = self.cert_key.as_ref().ok_or(PublishError::NoCertKey)?;
        let (nonce, ciphertext) = cert_key.seal_base64(hostname.as_bytes(), key_pem.as_bytes());
        let record = CertRecord {
            app: app.to_owned(),
            hostname: hostname.to_owned(),
            fullchain_pem: fullchain.to_owned(),
            key_sealed: Some(SealedKey { nonce, ciphertext }),
        };
        self.bucket
            .put(&godwit_state::key_for(hostname), &record)
            .await?;
        Ok(())
    }

    /// Publishes every stored certificate again, so that the bucket holds what the database
    /// does even after NATS lost its store. Failures are logged, not fatal.
    pub(crate) async fn republish(&self, db: &Db, key: &DataKey) -> Result<usize, rusqlite::Error> {
        let mut published = 0;
        for row in db.servable_certs()? {
            let (Some(fullchain), Some(nonce), Some(ciphertext)) =
                (&row.fullchain, &row.key_nonce, &row.key_ciphertext)
            else {
                continue;
            };
            let key_pem = match key.open(&key_aad(&row.hostname), nonce, ciphertext) {
                Ok(plain) => String::from_utf8_lossy(&plain).into_owned(),
                Err(error) => {
                    tracing::error!(%error, hostname = %row.hostname, "certificate key does not open");
                    continue;
                }
            };
            match self
                .publish(&row.app_name, &row.hostname, fullchain, &key_pem)
                .await
            {
                Ok(()) => published += 1,
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), hostname = %row.hostname,
                        "failed to publish a certificate");
                }
            }
        }
        Ok(published)
    }

    /// Tells the proxies to forget `hostname`.
    pub(crate) async fn unpublish(&self, hostname: &str) -> Result<(), StateError> {
        self.bucket.delete(&godwit_state::key_for(hostname)).await
    }

    /// Runs the ACME order for `hostname` of app `app` in the background: on success the
    /// certificate is stored and published, on failure the row says why.
    pub(crate) fn spawn_acme(
        &self,
        db: Arc<Db>,
        key: DataKey,
        app: (i64, String),
        hostname: String,
        kind: AcmeChallengeKind,
        cancel: CancellationToken,
    ) {
        if !self.acme_enabled() {
            return;
        }
        let certs = self.clone();
        let span = tracing::info_span!("acme", app = %app.1, hostname = %hostname);
        tokio::spawn(
            async move {
                let outcome = certs.order(&db, &key, &app, &hostname, kind, &cancel);
                if let Err(reason) = outcome.await {
                    record_failure(&db, &hostname, &reason);
                }
            }
            .instrument(span),
        );
    }

    /// Runs an ACME order for `hostname` of `app` (id, name): the certificate is stored and
    /// published, or the error says why not. `cancel` ends the order, not the storing of a
    /// certificate already issued.
    async fn order(
        &self,
        db: &Db,
        key: &DataKey,
        app: &(i64, String),
        hostname: &str,
        kind: AcmeChallengeKind,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let Some(issuer) = &self.acme else {
            return Err("this api has no acme directory configured".to_owned());
        };
        let issued = tokio::select! {
            () = cancel.cancelled() => return Err("interrupted: the api shut down".to_owned()),
            issued = issuer.issue(hostname, kind) => issued.map_err(|e| error_chain(&e))?,
        };
        store_issued(self, db, key, app, hostname, &issued).await
    }
}

/// Associated data binding a sealed certificate key to its hostname.
pub(crate) fn key_aad(hostname: &str) -> String {
    format!("cert/{hostname}")
}

/// Seals `key_pem` and describes the chain for the database.
pub(crate) fn sealed(
    key: &DataKey,
    hostname: &str,
    fullchain: &str,
    key_pem: &str,
    facts: validate::CertFacts,
) -> StoredCert {
    let (key_nonce, key_ciphertext) = key.seal(&key_aad(hostname), key_pem.as_bytes());
    StoredCert {
        fullchain: fullchain.to_owned(),
        key_nonce,
        key_ciphertext,
        issuer: facts.issuer,
        not_after: facts.not_after,
    }
}

async fn store_issued(
    certs: &Certs,
    db: &Db,
    key: &DataKey,
    (app_id, app_name): &(i64, String),
    hostname: &str,
    issued: &acme::Issued,
) -> Result<(), String> {
    let facts = validate::facts(&issued.fullchain).map_err(|e| e.to_string())?;
    let stored = sealed(key, hostname, &issued.fullchain, &issued.key_pem, facts);
    match db.put_ready_cert(*app_id, hostname, CertSource::Acme, &stored) {
        Ok(true) => {}
        Ok(false) => return Err("the hostname was taken by another app meanwhile".to_owned()),
        Err(error) => return Err(format!("database error: {error}")),
    }
    certs
        .publish(app_name, hostname, &issued.fullchain, &issued.key_pem)
        .await
        .map_err(|e| {
            format!(
                "stored, but publishing to the proxies failed: {}",
                error_chain(&e)
            )
        })?;
    tracing::info!("acme certificate stored and published");
    Ok(())
}

fn record_failure(db: &Db, hostname: &str, reason: &str) {
    tracing::warn!(error = %reason, "acme issuance failed");
    if let Err(error) = db.fail_acme(hostname, reason) {
        tracing::error!(%error, "failed to record an acme failure");
    }
}
