//! Keys kept in files, and sealing with them (ChaCha20-Poly1305).
//!
//! A key file holds exactly 32 random bytes, mode 0600. The API's data key (secrets at rest)
//! and the cluster certificate key (private keys of certificates in `godwit_certs`, shared by
//! the API and every proxy) are such files; this is the one reader and writer of them, so both
//! refuse the same bad files with the same words.
//!
//! Sealing binds the ciphertext to associated data (`aad`): what was sealed for one name does
//! not open under another, so a record cannot be replayed elsewhere. Each seal draws a fresh
//! random nonce.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// Bytes in a key file.
pub const KEY_LEN: usize = 32;
/// Bytes in a ChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 12;

/// A 32-byte ChaCha20-Poly1305 key. Its Debug prints no key material.
#[derive(Clone)]
pub struct SealKey {
    bytes: [u8; KEY_LEN],
}

/// A sealed value: the nonce it was sealed with, and the ciphertext (with its tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// Why a key file could not be used. The caller names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("failed to read it")]
    Read(#[source] std::io::Error),
    #[error("it holds {len} bytes; a key file holds exactly {KEY_LEN} random bytes")]
    Length { len: usize },
    #[error("failed to create it")]
    Create(#[source] std::io::Error),
}

/// Why a sealed value did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Wrong key, wrong associated data, or a changed ciphertext: AEAD cannot tell which.
    #[error("it does not open with this key")]
    Mismatch,
    #[error("its nonce is {len} bytes, not {NONCE_LEN}")]
    NonceLength { len: usize },
    #[error("its {field} is not base64")]
    NotBase64 {
        field: &'static str,
        #[source]
        source: base64::DecodeError,
    },
}

// === impl SealKey ===

impl SealKey {
    /// Reads the key file at `path`; when it is missing and `create` is set, makes a new
    /// random one there (mode 0600, never overwriting a file that appeared meanwhile).
    pub fn load(path: &Path, create: bool) -> Result<Self, KeyFileError> {
        let bytes = match std::fs::File::open(path) {
            Ok(file) => read_key(file)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => create_key(path)?,
            Err(e) => return Err(KeyFileError::Read(e)),
        };
        Ok(Self { bytes })
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self { bytes }
    }

    /// The key's bytes, for callers that derive other values from the same file.
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// Encrypts `plaintext` under a fresh random nonce, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Sealed {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ciphertext = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("chacha20poly1305 encryption of an in-memory buffer cannot fail");
        Sealed { nonce, ciphertext }
    }

    /// Decrypts what [`SealKey::seal`] made with this key and the same `aad`.
    pub fn open(&self, aad: &[u8], nonce: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, OpenError> {
        if nonce.len() != NONCE_LEN {
            return Err(OpenError::NonceLength { len: nonce.len() });
        }
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| OpenError::Mismatch)
    }

    /// [`SealKey::seal`], returning (nonce, ciphertext) in base64 (standard alphabet, padded):
    /// the form JSON records carry.
    pub fn seal_base64(&self, aad: &[u8], plaintext: &[u8]) -> (String, String) {
        let sealed = self.seal(aad, plaintext);
        (
            STANDARD.encode(sealed.nonce),
            STANDARD.encode(sealed.ciphertext),
        )
    }

    /// [`SealKey::open`] of what [`SealKey::seal_base64`] made.
    pub fn open_base64(
        &self,
        aad: &[u8],
        nonce: &str,
        ciphertext: &str,
    ) -> Result<Vec<u8>, OpenError> {
        let decode = |field, text: &str| {
            STANDARD
                .decode(text)
                .map_err(|source| OpenError::NotBase64 { field, source })
        };
        self.open(
            aad,
            &decode("nonce", nonce)?,
            &decode("ciphertext", ciphertext)?,
        )
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.bytes))
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// Exactly [`KEY_LEN`] bytes from `file`: a short or long file is refused, not padded or cut.
fn read_key(file: std::fs::File) -> Result<[u8; KEY_LEN], KeyFileError> {
    let mut contents = Vec::with_capacity(KEY_LEN + 1);
    file.take(KEY_LEN as u64 + 1)
        .read_to_end(&mut contents)
        .map_err(KeyFileError::Read)?;
    <[u8; KEY_LEN]>::try_from(contents.as_slice()).map_err(|_| KeyFileError::Length {
        len: contents.len(),
    })
}

fn create_key(path: &Path) -> Result<[u8; KEY_LEN], KeyFileError> {
    let bytes: [u8; KEY_LEN] = rand::random();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(KeyFileError::Create)?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(KeyFileError::Create)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn key_files_are_created_0600_read_back_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let error = SealKey::load(&path, false).unwrap_err();
        assert!(
            matches!(&error, KeyFileError::Read(e) if e.kind() == std::io::ErrorKind::NotFound)
        );
        let made = SealKey::load(&path, true).unwrap();
        let again = SealKey::load(&path, false).unwrap();
        assert_eq!(made.bytes(), again.bytes());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(format!("{made:?}"), "SealKey(..)");

        for len in [0, 31, 33] {
            std::fs::write(&path, vec![7_u8; len]).unwrap();
            let error = SealKey::load(&path, true).unwrap_err();
            assert!(
                matches!(error, KeyFileError::Length { len: l } if l == len),
                "{error}"
            );
        }
    }

    #[test]
    fn sealed_values_open_only_with_the_same_key_aad_and_bytes() {
        let key = SealKey::from_bytes(rand::random());
        let other = SealKey::from_bytes(rand::random());
        let (nonce, ciphertext) = key.seal_base64(b"www.example.test", b"-----BEGIN PRIVATE KEY");
        let opened = key.open_base64(b"www.example.test", &nonce, &ciphertext);
        assert_eq!(opened.unwrap(), b"-----BEGIN PRIVATE KEY");
        assert!(!ciphertext.contains("PRIVATE"));

        let wrong_key = other.open_base64(b"www.example.test", &nonce, &ciphertext);
        assert!(matches!(wrong_key, Err(OpenError::Mismatch)));
        let wrong_aad = key.open_base64(b"evil.example.test", &nonce, &ciphertext);
        assert!(matches!(wrong_aad, Err(OpenError::Mismatch)));

        let mut tampered = STANDARD.decode(&ciphertext).unwrap();
        tampered[0] ^= 1;
        let tampered = key.open_base64(b"www.example.test", &nonce, &STANDARD.encode(tampered));
        assert!(matches!(tampered, Err(OpenError::Mismatch)));

        let short_nonce = key.open_base64(b"www.example.test", "AAAA", &ciphertext);
        assert!(matches!(
            short_nonce,
            Err(OpenError::NonceLength { len: 3 })
        ));
        let garbage = key.open_base64(b"www.example.test", &nonce, "not base64!");
        assert!(matches!(
            garbage,
            Err(OpenError::NotBase64 {
                field: "ciphertext",
                ..
            })
        ));
    }

    #[test]
    fn every_seal_draws_a_fresh_nonce() {
        let key = SealKey::from_bytes(rand::random());
        let first = key.seal(b"a", b"same");
        let second = key.seal(b"a", b"same");
        assert_ne!(first.nonce, second.nonce);
        assert_ne!(first.ciphertext, second.ciphertext);
    }
}
