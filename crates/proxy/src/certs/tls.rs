//! The TLS server configuration: TLS 1.2 and 1.3 only, certificates chosen by [`super::CertStore`],
//! and the handshake that loads a TLS-ALPN-01 challenge missing from the store first.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::{ACME_TLS_ALPN, CertStore, keys};
use crate::{ProxyConfig, ProxyError};

/// The TLS server configuration, when `needed`: the store of `cfg.certs` (or an empty one) with the
/// certificate of `cfg.tls` as its default. One of the two must be configured.
pub(crate) fn tls_config(
    cfg: &ProxyConfig,
    needed: bool,
) -> Result<Option<Arc<ServerConfig>>, ProxyError> {
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
    Ok(Some(Arc::new(config)))
}

/// The server side of a TLS handshake with `config`. When the ClientHello offers
/// `acme-tls/1`, `certs` first loads the name's challenge certificate if it only is in the
/// bucket so far.
pub(crate) async fn accept(
    config: Arc<ServerConfig>,
    certs: Option<&CertStore>,
    stream: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let hello = start.client_hello();
    let acme = hello
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
    let acme_name = hello.server_name().filter(|_| acme).map(str::to_owned);
    if let (Some(certs), Some(name)) = (certs, acme_name) {
        certs.load_alpn01(&name).await;
    }
    start.into_stream(config).await
}
