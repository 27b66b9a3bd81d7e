//! The TLS server configuration: TLS 1.2 and 1.3 only, certificates chosen by [`super::CertStore`].

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::{ACME_TLS_ALPN, keys};
use crate::{ProxyConfig, ProxyError};

/// The TLS acceptor, when `needed`: the store of `cfg.certs` (or an empty one) with the
/// certificate of `cfg.tls` as its default. One of the two must be configured.
pub(crate) fn tls_acceptor(
    cfg: &ProxyConfig,
    needed: bool,
) -> Result<Option<TlsAcceptor>, ProxyError> {
    if !needed {
        return Ok(None);
    }
    let store = cfg.certs.clone().unwrap_or_default();
    match &cfg.tls {
        Some((cert_path, key_path)) => {
            let file_error = |path: &std::path::Path| {
                let path = path.to_owned();
                move |source| ProxyError::TlsFile { path, source }
            };
            let chain = CertificateDer::pem_file_iter(cert_path)
                .map_err(file_error(cert_path))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(file_error(cert_path))?;
            if chain.is_empty() {
                return Err(ProxyError::NoCertificate {
                    path: cert_path.clone(),
                });
            }
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(file_error(key_path))?;
            let certified = keys::from_der(chain, &key).map_err(|error| {
                ProxyError::Tls(rustls::Error::General(format!(
                    "{} and {}: {error}",
                    cert_path.display(),
                    key_path.display()
                )))
            })?;
            store.set_default(certified);
        }
        None if cfg.certs.is_none() => return Err(ProxyError::MissingTls),
        None => {}
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(ProxyError::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(store));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}
