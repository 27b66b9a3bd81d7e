//! The data key, secret encryption at rest, and bearer tokens.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use godwit_state::seal::{KeyFileError, SealKey};
use sha2::{Digest as _, Sha256};

/// Prefix of every token this API issues.
pub(crate) const TOKEN_PREFIX: &str = "gw_";

/// The 32-byte key that encrypts secrets (ChaCha20-Poly1305) and keys their digests.
#[derive(Clone)]
pub(crate) struct DataKey {
    key: SealKey,
}

/// Why a ciphertext could not be opened (wrong key, or the row was tampered with).
#[derive(Debug, thiserror::Error)]
#[error("secret ciphertext does not decrypt with this data key")]
pub(crate) struct DecryptError;

impl DataKey {
    /// Reads the key file, or creates it (mode 0600) when `create` is set and it is missing.
    pub(crate) fn load(path: &Path, create: bool) -> Result<Self, KeyFileError> {
        SealKey::load(path, create).map(|key| Self { key })
    }

    /// Encrypts `plaintext`, bound to `aad` (so a row cannot be moved to another secret).
    /// Returns (nonce, ciphertext).
    pub(crate) fn seal(&self, aad: &str, plaintext: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let sealed = self.key.seal(aad.as_bytes(), plaintext);
        (sealed.nonce.to_vec(), sealed.ciphertext)
    }

    pub(crate) fn open(
        &self,
        aad: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, DecryptError> {
        self.key
            .open(aad.as_bytes(), nonce, ciphertext)
            .map_err(|_| DecryptError)
    }

    /// A short digest of a secret value, keyed so it cannot be brute-forced without the key.
    pub(crate) fn digest(&self, value: &[u8]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.key.bytes());
        hasher.update(value);
        let full = hex::encode(hasher.finalize());
        full[..16].to_owned()
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A fresh bearer token: `gw_` + 32 random bytes in unpadded base64url.
pub(crate) fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// How a token is stored: hex SHA-256.
pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What may be logged about a token: its first characters.
pub(crate) fn token_prefix(token: &str) -> String {
    token.chars().take(TOKEN_PREFIX.len() + 6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = DataKey::load(&path, true).unwrap();
        let again = DataKey::load(&path, false).unwrap();
        let (nonce, ct) = key.seal("app/NAME", b"hunter2");
        assert_eq!(again.open("app/NAME", &nonce, &ct).unwrap(), b"hunter2");
        assert!(key.open("app/OTHER", &nonce, &ct).is_err());
        assert_eq!(key.digest(b"x"), again.digest(b"x"));
        assert_ne!(key.digest(b"x"), key.digest(b"y"));
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn tokens_look_right() {
        let token = new_token();
        assert!(token.starts_with("gw_"));
        assert_eq!(token.len(), 3 + 43);
        assert_ne!(token, new_token());
        assert_eq!(token_hash(&token).len(), 64);
        assert_eq!(token_prefix(&token).len(), 9);
    }
}
