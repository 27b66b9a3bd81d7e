//! The dev cluster's TLS: a local certificate authority, made once and kept, and a certificate
//! for `*.<domain>` (and `<domain>`) it signs, remade when the domain changes. All under
//! `<data dir>/dev/tls/`; keys are 0600.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files the proxy serves and clients trust.
#[derive(Debug, Clone)]
pub(super) struct TlsFiles {
    /// The CA certificate to trust (`curl --cacert`).
    pub(super) ca_cert: PathBuf,
    /// The `*.<domain>` certificate (PEM, leaf then CA).
    pub(super) cert: PathBuf,
    /// Its private key (PEM).
    pub(super) key: PathBuf,
}

/// The CA's name; also how its issuer is rebuilt from the kept key.
const CA_NAME: &str = "Godwit dev CA";

/// Makes the CA unless `dir` has one, and the certificate for `domain` unless the one there
/// is for `domain` already.
pub(super) fn ensure(dir: &Path, domain: &str) -> anyhow::Result<TlsFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let files = TlsFiles {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let ca_key_path = dir.join("ca-key.pem");
    let domain_path = dir.join("domain");

    let ca_key = match std::fs::read_to_string(&ca_key_path) {
        Ok(pem) if files.ca_cert.is_file() => KeyPair::from_pem(&pem)
            .with_context(|| format!("parse the CA key {}", ca_key_path.display()))?,
        _ => {
            let key = KeyPair::generate().context("generate the CA key")?;
            let cert = ca_params()?
                .self_signed(&key)
                .context("sign the CA certificate")?;
            super::write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
            write_public(&files.ca_cert, &cert.pem())?;
            // A new CA invalidates the old leaf.
            let _ = std::fs::remove_file(&domain_path);
            tracing::info!(ca = %files.ca_cert.display(), "made the dev CA");
            key
        }
    };

    let current = std::fs::read_to_string(&domain_path).unwrap_or_default();
    if current.trim() != domain || !files.cert.is_file() || !files.key.is_file() {
        let issuer = Issuer::new(ca_params()?, ca_key);
        let key = KeyPair::generate().context("generate the certificate key")?;
        let mut params = CertificateParams::new(vec![format!("*.{domain}"), domain.to_owned()])
            .with_context(|| format!("certificate names for {domain:?}"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("*.{domain}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &issuer)
            .with_context(|| format!("sign the certificate for *.{domain}"))?;
        let ca_pem = std::fs::read_to_string(&files.ca_cert)
            .with_context(|| format!("read {}", files.ca_cert.display()))?;
        super::write_private(&files.key, key.serialize_pem().as_bytes())?;
        write_public(&files.cert, &format!("{}{ca_pem}", cert.pem()))?;
        write_public(&domain_path, domain)?;
        tracing::info!(domain, "made the dev certificate");
    }
    Ok(files)
}

/// The CA's parameters: the same every time, so the kept key rebuilds the same issuer.
fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).context("CA certificate parameters")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn write_public(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The certificate verifies against the CA (with openssl, as curl would), survives a
    /// second `ensure`, and is remade for another domain under the same CA.
    #[test]
    fn ca_is_kept_and_certificate_follows_the_domain() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = ensure(dir.path(), "godwit.test").expect("first ensure");
        let ca_before = std::fs::read_to_string(&first.ca_cert).expect("read ca");
        must_verify(&first, "hello.godwit.test");

        let cert_before = std::fs::read_to_string(&first.cert).expect("read cert");
        let again = ensure(dir.path(), "godwit.test").expect("second ensure");
        assert_eq!(
            std::fs::read_to_string(&again.cert).expect("read cert"),
            cert_before,
            "an up-to-date certificate must be kept"
        );

        let other = ensure(dir.path(), "other.test").expect("other domain");
        assert_eq!(
            std::fs::read_to_string(&other.ca_cert).expect("read ca"),
            ca_before,
            "the CA must be kept"
        );
        must_verify(&other, "app.other.test");
    }

    fn must_verify(files: &TlsFiles, host: &str) {
        let leaf_only = files.cert.with_extension("leaf.pem");
        let chain = std::fs::read_to_string(&files.cert).expect("read cert");
        let end = "-----END CERTIFICATE-----";
        let leaf = &chain[..chain.find(end).expect("a certificate") + end.len()];
        std::fs::write(&leaf_only, leaf).expect("write leaf");
        let output = std::process::Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&files.ca_cert)
            .args(["-verify_hostname", host, "-purpose", "sslserver"])
            .arg(&leaf_only)
            .output()
            .expect("openssl must be installed (Debian package openssl)");
        assert!(
            output.status.success(),
            "openssl verify failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
