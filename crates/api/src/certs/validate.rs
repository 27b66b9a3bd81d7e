//! Checks of an uploaded certificate: the PEM parses, the key matches the leaf, the leaf
//! names the hostname and is valid now. Also the hostname rules.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

/// What the listing shows about a valid certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertFacts {
    /// The leaf's issuer, as an RFC 4514 string.
    pub(crate) issuer: String,
    /// Unix milliseconds: start of the leaf's validity (with `not_after`, its lifetime, which
    /// sets when an ACME certificate is renewed).
    pub(crate) not_before: u64,
    /// Unix milliseconds.
    pub(crate) not_after: u64,
}

/// Why a certificate cannot be used; each message names the problem for a 422 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CertProblem {
    #[error("fullchain is not valid PEM: {0}")]
    ChainPem(String),
    #[error(
        "fullchain holds no CERTIFICATE block: send the leaf certificate first, then its intermediates"
    )]
    NoCertificate,
    #[error("private_key is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {0}")]
    KeyPem(String),
    #[error("private_key is of an unsupported type: use RSA, ECDSA P-256/P-384 or Ed25519")]
    KeyType,
    #[error(
        "private_key does not match the certificate: send the key the certificate was issued for"
    )]
    KeyMismatch,
    #[error("the certificate does not parse: {0}")]
    Parse(String),
    #[error("the certificate expired at {not_after} (unix seconds): renew it and upload it again")]
    Expired { not_after: i64 },
    #[error("the certificate is not valid before {not_before} (unix seconds)")]
    NotYetValid { not_before: i64 },
    #[error("the certificate does not cover {hostname}: it names {names:?}")]
    WrongHostname {
        hostname: String,
        names: Vec<String>,
    },
}

/// Checks a certificate chain and key for `hostname` at `now_secs` (unix seconds).
pub(crate) fn check_cert(
    hostname: &str,
    fullchain_pem: &str,
    key_pem: &str,
    now_secs: i64,
) -> Result<CertFacts, CertProblem> {
    let chain = CertificateDer::pem_slice_iter(fullchain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertProblem::ChainPem(e.to_string()))?;
    let Some(leaf_der) = chain.first().cloned() else {
        return Err(CertProblem::NoCertificate);
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| CertProblem::KeyPem(e.to_string()))?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|_| CertProblem::KeyType)?;
    let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(&leaf_der)
        .map_err(|e| CertProblem::Parse(e.to_string()))?;
    CertifiedKey::new(chain, Arc::clone(&signer))
        .keys_match()
        .map_err(|_| CertProblem::KeyMismatch)?;
    let validity = leaf.validity();
    let not_after = validity.not_after.timestamp();
    let not_before = validity.not_before.timestamp();
    if now_secs > not_after {
        return Err(CertProblem::Expired { not_after });
    }
    if now_secs < not_before {
        return Err(CertProblem::NotYetValid { not_before });
    }
    let names = dns_names(&leaf);
    if !names.iter().any(|name| name_covers(name, hostname)) {
        return Err(CertProblem::WrongHostname {
            hostname: hostname.to_owned(),
            names,
        });
    }
    Ok(CertFacts {
        issuer: leaf.issuer().to_string(),
        not_before: unix_ms(not_before),
        not_after: unix_ms(not_after),
    })
}

/// The leaf's issuer and validity, for a chain this API got from an ACME server or stored.
pub(crate) fn facts(fullchain_pem: &str) -> Result<CertFacts, CertProblem> {
    let leaf_der = CertificateDer::pem_slice_iter(fullchain_pem.as_bytes())
        .next()
        .ok_or(CertProblem::NoCertificate)?
        .map_err(|e| CertProblem::ChainPem(e.to_string()))?;
    let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(&leaf_der)
        .map_err(|e| CertProblem::Parse(e.to_string()))?;
    let validity = leaf.validity();
    Ok(CertFacts {
        issuer: leaf.issuer().to_string(),
        not_before: unix_ms(validity.not_before.timestamp()),
        not_after: unix_ms(validity.not_after.timestamp()),
    })
}

/// Unix seconds (before 1970 counts as 1970) as milliseconds.
fn unix_ms(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0).saturating_mul(1000)
}

/// `hostname` lower-cased without a trailing dot, if it is a DNS name with at least two
/// labels of letters, digits and inner hyphens (no wildcards, no IP addresses).
pub(crate) fn normalize_hostname(hostname: &str) -> Result<String, String> {
    let name = hostname.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let last_is_numeric = labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if name.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) || last_is_numeric {
        return Err(format!(
            "hostname {hostname:?} is not a DNS name like www.example.com (letters, digits and \
             '-' in dot-separated labels; no wildcards or IP addresses)"
        ));
    }
    Ok(name)
}

/// The DNS names of the subject alternative names, or the common names when there is no
/// such extension.
fn dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        return san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
    }
    cert.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_ascii_lowercase))
        .collect()
}

/// Whether certificate name `pattern` (maybe `*.example.com`) covers `hostname`.
pub(crate) fn name_covers(pattern: &str, hostname: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(parent) => hostname
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent)),
        None => pattern.eq_ignore_ascii_case(hostname),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_normalised_or_refused() {
        assert_eq!(
            normalize_hostname("WWW.Example.COM.").as_deref(),
            Ok("www.example.com")
        );
        for bad in [
            "localhost",
            "*.example.com",
            "a..b",
            "-a.b",
            "127.0.0.1",
            "a b.c",
            "",
        ] {
            assert!(normalize_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_covers("*.example.com", "www.example.com"));
        assert!(!name_covers("*.example.com", "a.b.example.com"));
        assert!(!name_covers("*.example.com", "example.com"));
        assert!(name_covers("WWW.example.com", "www.example.com"));
        assert!(!name_covers("www.example.com", "api.example.com"));
    }

    #[test]
    fn checks_name_each_problem() {
        let key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["www.example.com".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (chain, key_pem) = (cert.pem(), key.serialize_pem());
        let now = i64::try_from(godwit_types::now_ms() / 1000).unwrap();
        let facts = check_cert("www.example.com", &chain, &key_pem, now).unwrap();
        assert!(facts.not_after > godwit_types::now_ms());
        assert_eq!(facts, super::facts(&chain).unwrap());
        let wrong_key = check_cert("www.example.com", &chain, &other.serialize_pem(), now);
        assert_eq!(wrong_key, Err(CertProblem::KeyMismatch));
        let wrong_name = check_cert("api.example.com", &chain, &key_pem, now).unwrap_err();
        assert!(
            matches!(wrong_name, CertProblem::WrongHostname { .. }),
            "{wrong_name}"
        );
        let no_cert = check_cert("www.example.com", "hello", &key_pem, now);
        assert_eq!(no_cert, Err(CertProblem::NoCertificate));
        let bad_key = check_cert("www.example.com", &chain, "nope", now).unwrap_err();
        assert!(matches!(bad_key, CertProblem::KeyPem(_)), "{bad_key}");
        // rcgen's default validity ends in 4096: far in the future, so "now" is moved.
        let expired = check_cert("www.example.com", &chain, &key_pem, i64::MAX / 2).unwrap_err();
        assert!(matches!(expired, CertProblem::Expired { .. }), "{expired}");
    }
}
