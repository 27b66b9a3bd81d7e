//! Certificates by ACME (RFC 8555): one account per API instance, an order per hostname, the
//! HTTP-01 or TLS-ALPN-01 challenge published to the proxies through the `godwit_acme`
//! bucket, finalised with a CSR for a fresh key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use godwit_state::Bucket;
use godwit_types::{AcmeChallengeKind, AcmeChallengeRecord};
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::sync::OnceCell;

/// How long the ACME server may take to validate the challenge, and then to issue.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Issues certificates from one ACME directory.
pub(crate) struct AcmeIssuer {
    directory: String,
    ca_pem: Option<PathBuf>,
    account: OnceCell<Account>,
    challenges: Bucket<AcmeChallengeRecord>,
}

/// A certificate chain and the PEM key it was issued for.
#[derive(Clone)]
pub(crate) struct Issued {
    pub(crate) fullchain: String,
    pub(crate) key_pem: String,
}

/// Why an ACME order did not give a certificate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IssueError {
    #[error("failed to read the acme server's ca certificate {path}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("invalid tls configuration for the acme client")]
    Tls(#[source] rustls::Error),
    #[error("failed to create an account at {directory}")]
    Account {
        directory: String,
        #[source]
        source: instant_acme::Error,
    },
    #[error("acme request failed ({step})")]
    Acme {
        step: &'static str,
        #[source]
        source: instant_acme::Error,
    },
    #[error("the acme server offers no {kind} challenge for {hostname}")]
    NoChallenge {
        kind: &'static str,
        hostname: String,
    },
    #[error("the authorization of {hostname} is {status}")]
    Authorization { hostname: String, status: String },
    #[error("the acme server refused the order: {reasons}")]
    Invalid { reasons: String },
    #[error("failed to publish the challenge to the proxies")]
    Publish(#[source] godwit_state::StateError),
    #[error("failed to make the certificate signing request")]
    Csr(#[source] rcgen::Error),
}

impl AcmeIssuer {
    pub(crate) fn new(
        directory: String,
        ca_pem: Option<PathBuf>,
        challenges: Bucket<AcmeChallengeRecord>,
    ) -> Self {
        AcmeIssuer {
            directory,
            ca_pem,
            account: OnceCell::new(),
            challenges,
        }
    }

    /// Runs a whole order for `hostname`, answering the `kind` challenge through the proxies.
    #[tracing::instrument(skip_all, fields(hostname = %hostname, challenge = ?kind), err)]
    pub(crate) async fn issue(
        &self,
        hostname: &str,
        kind: AcmeChallengeKind,
    ) -> Result<Issued, IssueError> {
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(hostname.to_owned())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(acme("new order"))?;
        let mut published = Vec::new();
        let result = self
            .run_order(&mut order, hostname, kind, &mut published)
            .await;
        for key in published {
            if let Err(error) = self.challenges.delete(&key).await {
                tracing::warn!(%error, key, "failed to remove an acme challenge");
            }
        }
        result
    }

    async fn run_order(
        &self,
        order: &mut instant_acme::Order,
        hostname: &str,
        kind: AcmeChallengeKind,
        published: &mut Vec<String>,
    ) -> Result<Issued, IssueError> {
        let challenge_type = match kind {
            AcmeChallengeKind::Http01 => ChallengeType::Http01,
            AcmeChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(acme("authorization"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(IssueError::Authorization {
                        hostname: hostname.to_owned(),
                        status: format!("{other:?}").to_ascii_lowercase(),
                    });
                }
            }
            let mut challenge =
                authz
                    .challenge(challenge_type.clone())
                    .ok_or_else(|| IssueError::NoChallenge {
                        kind: kind_name(kind),
                        hostname: hostname.to_owned(),
                    })?;
            let record = AcmeChallengeRecord {
                kind,
                hostname: hostname.to_owned(),
                token: challenge.token.clone(),
                key_authorization: challenge.key_authorization().as_str().to_owned(),
            };
            let key = challenge_key(&record);
            self.challenges
                .put(&key, &record)
                .await
                .map_err(IssueError::Publish)?;
            published.push(key);
            tracing::debug!(token = %record.token, "challenge published");
            challenge
                .set_ready()
                .await
                .map_err(acme("challenge ready"))?;
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(100))
            .backoff(1.5)
            .timeout(VALIDATION_TIMEOUT);
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(acme("wait for validation"))?;
        if status != OrderStatus::Ready {
            return Err(IssueError::Invalid {
                reasons: failure_reasons(order).await,
            });
        }
        let key = rcgen::KeyPair::generate().map_err(IssueError::Csr)?;
        let mut params =
            rcgen::CertificateParams::new(vec![hostname.to_owned()]).map_err(IssueError::Csr)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(IssueError::Csr)?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(acme("finalize"))?;
        let fullchain = order
            .poll_certificate(&retries)
            .await
            .map_err(acme("download certificate"))?;
        tracing::info!("certificate issued");
        Ok(Issued {
            fullchain,
            key_pem: key.serialize_pem(),
        })
    }

    /// The account, created at the first order.
    async fn account(&self) -> Result<&Account, IssueError> {
        self.account
            .get_or_try_init(|| async {
                let builder = Account::builder_with_http(Box::new(self.http_client()?));
                let new = NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, _credentials) = builder
                    .create(&new, self.directory.clone(), None)
                    .await
                    .map_err(|source| IssueError::Account {
                        directory: self.directory.clone(),
                        source,
                    })?;
                tracing::info!(directory = %self.directory, account = %account.id(), "acme account created");
                Ok(account)
            })
            .await
    }

    /// An HTTPS client with the aws-lc-rs provider (the process has two, so rustls cannot
    /// pick one), trusting the system roots or, when configured, the ACME server's own CA.
    fn http_client(
        &self,
    ) -> Result<
        hyper_util::client::legacy::Client<
            hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
            BodyWrapper<Bytes>,
        >,
        IssueError,
    > {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match &self.ca_pem {
            Some(path) => {
                let ca_error = |source| IssueError::CaFile {
                    path: path.clone(),
                    source,
                };
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path).map_err(ca_error)? {
                    roots
                        .add(cert.map_err(ca_error)?)
                        .map_err(IssueError::Tls)?;
                }
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(IssueError::Tls)?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                builder.with_tls_config(config)
            }
            None => builder
                .with_provider_and_native_roots(provider)
                .map_err(|e| IssueError::Tls(rustls::Error::General(e.to_string())))?,
        };
        let connector = builder.https_only().enable_http1().build();
        Ok(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector),
        )
    }
}

impl std::fmt::Debug for AcmeIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeIssuer")
            .field("directory", &self.directory)
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

/// The key of a challenge in the `godwit_acme` bucket: the token for HTTP-01 (the proxy
/// looks it up by the request path), the hostname for TLS-ALPN-01 (by the SNI).
pub(crate) fn challenge_key(record: &AcmeChallengeRecord) -> String {
    match record.kind {
        AcmeChallengeKind::Http01 => godwit_state::key_for(&record.token),
        AcmeChallengeKind::TlsAlpn01 => godwit_state::key_for(&record.hostname),
    }
}

/// `http-01` or `tls-alpn-01`.
pub(crate) fn kind_name(kind: AcmeChallengeKind) -> &'static str {
    match kind {
        AcmeChallengeKind::Http01 => "http-01",
        AcmeChallengeKind::TlsAlpn01 => "tls-alpn-01",
    }
}

/// What the server said about the failed challenges of an invalid order.
async fn failure_reasons(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if let Ok(state) = authz.refresh().await {
            for challenge in &state.challenges {
                if let Some(problem) = &challenge.error {
                    reasons.push(problem.to_string());
                }
            }
        }
    }
    if reasons.is_empty() {
        "the order became invalid".to_owned()
    } else {
        reasons.join("; ")
    }
}

fn acme(step: &'static str) -> impl Fn(instant_acme::Error) -> IssueError {
    move |source| IssueError::Acme { step, source }
}
