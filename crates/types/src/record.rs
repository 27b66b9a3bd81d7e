//! Records hosts publish to the state layer. Each record has one writer: the host that owns it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::machine::{CheckResult, MachineService, MachineState};

/// What every consumer (API, proxy) needs to know about a machine, published by its host's agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub id: String,
    pub app: String,
    pub org: String,
    pub name: String,
    pub state: MachineState,
    pub version: u64,
    pub instance_id: String,
    pub private_ip: String,
    pub region: String,
    pub host_id: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub services: Vec<MachineService>,
    pub checks: Vec<CheckResult>,
    pub cordoned: bool,
    pub metadata: BTreeMap<String, String>,
    pub updated_at: u64,
}

/// A host and its capacity, published by its agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub host_id: String,
    pub region: String,
    /// Where the API reaches the agent, `http://ip:port`.
    pub agent_url: String,
    pub cpus_total: u32,
    pub memory_mb_total: u64,
    pub cpus_reserved: u32,
    pub memory_mb_reserved: u64,
    pub schedulable: bool,
    pub updated_at: u64,
}

/// Bucket of [`CertRecord`]s, keyed by `key_for(hostname)`; written by the API.
pub const CERTS_BUCKET: &str = "godwit_certs";

/// Bucket of [`AcmeChallengeRecord`]s, keyed by `key_for(token)` (HTTP-01) or
/// `key_for(hostname)` (TLS-ALPN-01); written by the API while an order is open.
pub const ACME_BUCKET: &str = "godwit_acme";

/// A certificate the proxies serve for `hostname`, and the app that hostname routes to.
///
/// JSON shape: `{"app", "hostname", "fullchain_pem", "key_sealed": {"nonce", "ciphertext"}}`.
/// The private key never travels in clear: `key_sealed` is its PEM sealed with the cluster
/// certificate key (ChaCha20-Poly1305, AAD = `hostname`), which only the API and the proxies
/// hold. Records from before keys were sealed carried `key_pem` instead; that field is not
/// read, such records parse with `key_sealed: None`, and proxies refuse them by hostname.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CertRecord {
    pub app: String,
    pub hostname: String,
    /// Leaf first, then the intermediates.
    pub fullchain_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sealed: Option<SealedKey>,
}

/// A private key sealed for the proxies: both fields base64 (standard alphabet, padded).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    /// The 12-byte nonce, fresh for every publish.
    pub nonce: String,
    /// The sealed PEM and its 16-byte tag.
    pub ciphertext: String,
}

impl std::fmt::Debug for CertRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRecord")
            .field("app", &self.app)
            .field("hostname", &self.hostname)
            .field("key_sealed", &self.key_sealed.is_some())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedKey(..)")
    }
}

/// An ACME challenge the proxies answer while an order is being validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeChallengeRecord {
    pub kind: AcmeChallengeKind,
    pub hostname: String,
    pub token: String,
    pub key_authorization: String,
}

/// Which ACME challenge a record answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcmeChallengeKind {
    /// `GET /.well-known/acme-challenge/<token>` on port 80 answers the key authorization.
    #[serde(rename = "http-01")]
    Http01,
    /// A TLS handshake for `hostname` with ALPN `acme-tls/1` gets a self-signed certificate
    /// carrying the SHA-256 of the key authorization (RFC 8737).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CertRecord {
        CertRecord {
            app: "shop".to_owned(),
            hostname: "www.example.test".to_owned(),
            fullchain_pem: "CHAIN".to_owned(),
            key_sealed: Some(SealedKey {
                nonce: "Tk9OQ0U=".to_owned(),
                ciphertext: "U0VDUkVU".to_owned(),
            }),
        }
    }

    #[test]
    fn cert_records_have_an_explicit_shape() {
        let json = serde_json::to_value(record()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "app": "shop",
                "hostname": "www.example.test",
                "fullchain_pem": "CHAIN",
                "key_sealed": { "nonce": "Tk9OQ0U=", "ciphertext": "U0VDUkVU" },
            })
        );
        // A record from before keys were sealed parses, without its clear key.
        let old: CertRecord = serde_json::from_value(serde_json::json!({
            "app": "shop",
            "hostname": "www.example.test",
            "fullchain_pem": "CHAIN",
            "key_pem": "-----BEGIN PRIVATE KEY-----",
        }))
        .unwrap();
        assert_eq!(old.key_sealed, None);
    }

    #[test]
    fn debug_prints_no_key_material() {
        let debug = format!("{:?}", record());
        assert!(debug.contains("www.example.test"), "{debug}");
        assert!(
            !debug.contains("U0VDUkVU") && !debug.contains("Tk9OQ0U="),
            "{debug}"
        );
    }
}
