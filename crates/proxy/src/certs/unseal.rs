//! Opening the private keys of `godwit_certs` records. The API seals each key with the cluster
//! certificate key (AAD = the hostname); a proxy opens it with the same file
//! (`--cert-key-file`). There is no clear fallback: a record without a sealed key, or one that
//! does not open, is left out with an error naming the hostname and the fix.

use std::fmt;
use std::path::{Path, PathBuf};

use godwit_state::seal::{KeyFileError, OpenError, SealKey};
use godwit_types::CertRecord;

/// The cluster certificate key and the file it came from (named when a key does not open).
#[derive(Clone)]
pub struct CertKey {
    key: SealKey,
    file: PathBuf,
}

/// Why a record's private key could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UnsealError {
    #[error(
        "certificate for {hostname} is sealed; start the proxy with --cert-key-file (the API's key)"
    )]
    NoKey { hostname: String },
    #[error(
        "certificate for {hostname} has no sealed key (published in clear by an older API, \
         refused): republish it by restarting the API with --cert-key-file"
    )]
    Clear { hostname: String },
    #[error(
        "certificate for {hostname} does not open with this key ({}): give the proxy the \
         file the API has as --cert-key-file",
        file.display()
    )]
    WrongKey { hostname: String, file: PathBuf },
    #[error(
        "the sealed key of the certificate for {hostname} is malformed ({problem}): republish \
         it by restarting the API"
    )]
    Malformed { hostname: String, problem: String },
}

// === impl CertKey ===

impl CertKey {
    /// Reads the key file at `file`. A proxy never creates one: a key of its own would open
    /// nothing the API sealed.
    pub fn load(file: &Path) -> Result<CertKey, KeyFileError> {
        Ok(CertKey {
            key: SealKey::load(file, false)?,
            file: file.to_owned(),
        })
    }

    /// A key made from `key`, reported as coming from `file`.
    pub fn new(key: SealKey, file: &Path) -> CertKey {
        CertKey {
            key,
            file: file.to_owned(),
        }
    }
}

impl fmt::Debug for CertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertKey")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// The PEM private key of `record`, opened with `cert_key`.
pub(crate) fn open_key(
    cert_key: Option<&CertKey>,
    record: &CertRecord,
) -> Result<String, UnsealError> {
    let hostname = || record.hostname.clone();
    let Some(sealed) = &record.key_sealed else {
        return Err(UnsealError::Clear {
            hostname: hostname(),
        });
    };
    let Some(cert_key) = cert_key else {
        return Err(UnsealError::NoKey {
            hostname: hostname(),
        });
    };
    let malformed = |problem: String| UnsealError::Malformed {
        hostname: hostname(),
        problem,
    };
    let aad = record.hostname.as_bytes();
    let plain = match cert_key
        .key
        .open_base64(aad, &sealed.nonce, &sealed.ciphertext)
    {
        Ok(plain) => plain,
        Err(OpenError::Mismatch) => {
            return Err(UnsealError::WrongKey {
                hostname: hostname(),
                file: cert_key.file.clone(),
            });
        }
        Err(error) => return Err(malformed(error.to_string())),
    };
    String::from_utf8(plain).map_err(|_| malformed("the key is not utf-8 text".to_owned()))
}
