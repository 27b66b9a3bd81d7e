//! PEM certificates into rustls keys, and the TLS-ALPN-01 challenge certificate.

use std::sync::Arc;

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest as _, Sha256};

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadCertError {
    #[error("the certificate chain is not valid pem")]
    ChainPem(#[source] rustls::pki_types::pem::Error),
    #[error("the certificate chain is empty")]
    Empty,
    #[error("the private key is not valid pem")]
    KeyPem(#[source] rustls::pki_types::pem::Error),
    #[error("the private key is not usable")]
    Key(#[source] rustls::Error),
    #[error("the private key does not match the certificate")]
    Mismatch(#[source] rustls::Error),
    #[error("failed to make the tls-alpn-01 challenge certificate")]
    Challenge(#[source] rcgen::Error),
}

/// A chain (leaf first) and its key, checked to belong together.
pub(crate) fn certified_key(
    fullchain_pem: &str,
    key_pem: &str,
) -> Result<Arc<CertifiedKey>, LoadCertError> {
    let chain = CertificateDer::pem_slice_iter(fullchain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(LoadCertError::ChainPem)?;
    if chain.is_empty() {
        return Err(LoadCertError::Empty);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(LoadCertError::KeyPem)?;
    from_der(chain, &key)
}

/// A DER chain (leaf first) and its key, checked to belong together.
pub(crate) fn from_der(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
) -> Result<Arc<CertifiedKey>, LoadCertError> {
    let signer =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(key).map_err(LoadCertError::Key)?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(LoadCertError::Mismatch)?;
    Ok(Arc::new(certified))
}

/// The self-signed certificate that answers TLS-ALPN-01 for `hostname`: its only name is
/// `hostname` and its critical acmeIdentifier extension holds SHA-256(key authorization)
/// (RFC 8737 §3).
pub(crate) fn alpn_challenge_key(
    hostname: &str,
    key_authorization: &str,
) -> Result<Arc<CertifiedKey>, LoadCertError> {
    let key = KeyPair::generate().map_err(LoadCertError::Challenge)?;
    let mut params =
        CertificateParams::new(vec![hostname.to_owned()]).map_err(LoadCertError::Challenge)?;
    let digest = Sha256::digest(key_authorization.as_bytes());
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(&digest)];
    let cert = params.self_signed(&key).map_err(LoadCertError::Challenge)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key_der)
        .map_err(LoadCertError::Key)?;
    // Not `keys_match`: webpki refuses to parse the critical acmeIdentifier extension, and
    // the pair was made together just above.
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_certificates_carry_the_digest() {
        let certified = alpn_challenge_key("a.example.test", "tok.thumb").expect("made");
        let leaf = certified.end_entity_cert().expect("leaf");
        let digest = Sha256::digest(b"tok.thumb");
        assert!(leaf.windows(32).any(|w| w == digest.as_slice()));
    }

    #[test]
    fn mismatched_keys_are_refused() {
        let key = KeyPair::generate().expect("key");
        let other = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["a.example.test".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        assert!(certified_key(&cert.pem(), &key.serialize_pem()).is_ok());
        let error = certified_key(&cert.pem(), &other.serialize_pem()).expect_err("mismatch");
        assert!(matches!(error, LoadCertError::Mismatch(_)), "{error}");
        assert!(matches!(
            certified_key("", &key.serialize_pem()),
            Err(LoadCertError::Empty)
        ));
    }
}
