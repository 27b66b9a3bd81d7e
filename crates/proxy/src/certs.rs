//! Certificates: the configured default (e.g. `*.<domain>`), certificates of custom hostnames
//! and ACME challenges, followed from the `godwit_certs` and `godwit_acme` replicas and
//! reloaded on every change (no restart). [`CertStore`] picks the certificate of a TLS
//! handshake by SNI, answers TLS-ALPN-01 handshakes (ALPN `acme-tls/1`) and HTTP-01 requests
//! (`/.well-known/acme-challenge/<token>`), and tells which app a custom hostname routes to.
//! A challenge asked for before the `godwit_acme` replica has it is read from the bucket
//! directly (see `lookup`). Private keys arrive sealed with the cluster certificate key and
//! are opened with [`CertKey`] (see `unseal`); nothing else opens them.
//!
//! Both kinds of record are opened through the cluster's [`Topology`], as machines are: in a
//! multi-region cluster the API writes them to its own region's bucket (the hub's) and every
//! other region's server mirrors it, so a proxy reads them from its own region's server and
//! keeps serving what it has while the hub is cut off.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use godwit_state::{Change, Records, Replica, StateClient, StateError, Topology};
use godwit_types::{ACME_BUCKET, AcmeChallengeKind, AcmeChallengeRecord, CERTS_BUCKET, CertRecord};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

mod keys;
mod lookup;
mod tls;
mod unseal;

pub(crate) use tls::{accept as tls_accept, tls_config};
pub use unseal::CertKey;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Path prefix of HTTP-01 (RFC 8555 §8.3).
pub const ACME_HTTP_PREFIX: &str = "/.well-known/acme-challenge/";

/// Every certificate the proxy may serve and every open ACME challenge. Cheap to clone; clones
/// share the same tables. Build it with [`CertStore::follow`] (or [`CertStore::default`] for
/// none), give it to [`crate::ProxyConfig::certs`].
#[derive(Clone, Default)]
pub struct CertStore {
    inner: Arc<RwLock<Tables>>,
    /// The `godwit_acme` records, read directly for a challenge the replica does not hold
    /// yet (the API tells the ACME server as soon as its put is acknowledged).
    challenges: Option<Records<AcmeChallengeRecord>>,
    /// Caps those direct reads: anyone can ask for an unknown token, and in a multi-region
    /// cluster each read may cross to every other region.
    lookups: Arc<lookup::Budget>,
}

#[derive(Default)]
struct Tables {
    /// Opens the private keys of certificate records; `None` leaves every record out.
    cert_key: Option<CertKey>,
    /// Served when no custom hostname matches the SNI.
    default: Option<Arc<CertifiedKey>>,
    /// Custom hostname → its certificate and app.
    hosts: HashMap<String, HostCert>,
    /// Bucket key → hostname, for deletes.
    host_keys: HashMap<String, String>,
    /// HTTP-01 token → key authorization.
    http01: HashMap<String, String>,
    /// TLS-ALPN-01 hostname → challenge certificate.
    alpn01: HashMap<String, Arc<CertifiedKey>>,
    /// Bucket key → challenge, for deletes.
    challenge_keys: HashMap<String, AcmeChallengeRecord>,
}

struct HostCert {
    app: String,
    key: Arc<CertifiedKey>,
}

// === impl CertStore ===

impl CertStore {
    /// Opens the `godwit_certs` and `godwit_acme` records as `topology` lays them out and
    /// follows them until `cancel` fires, opening private keys with `cert_key`: what the
    /// daemon runs.
    pub async fn open(
        state: &StateClient,
        topology: &Topology,
        cert_key: Option<CertKey>,
        cancel: CancellationToken,
    ) -> Result<Self, StateError> {
        let certs = state
            .records::<CertRecord>(CERTS_BUCKET, topology)
            .await?
            .replica_until(cancel.child_token())
            .await?;
        let challenge_records = state
            .records::<AcmeChallengeRecord>(ACME_BUCKET, topology)
            .await?;
        let challenges = challenge_records
            .replica_until(cancel.child_token())
            .await?;
        Ok(Self::follow(
            certs,
            challenges,
            challenge_records,
            cert_key,
            cancel,
        ))
    }

    /// A store following both replicas until `cancel` fires: what they hold now, then every
    /// change. Records that do not parse, or whose key does not open with `cert_key`, are
    /// logged and left out. `challenge_records` are what `challenges` replicates: a challenge
    /// asked for before the replica has it is read from there directly.
    pub fn follow(
        certs: Replica<CertRecord>,
        challenges: Replica<AcmeChallengeRecord>,
        challenge_records: Records<AcmeChallengeRecord>,
        cert_key: Option<CertKey>,
        cancel: CancellationToken,
    ) -> Self {
        let tables = Tables {
            cert_key,
            ..Tables::default()
        };
        let store = CertStore {
            inner: Arc::new(RwLock::new(tables)),
            challenges: Some(challenge_records),
            lookups: Arc::default(),
        };
        let cert_ops = Ops {
            put: Tables::put_cert,
            del: Tables::del_cert,
            clear: Tables::clear_certs,
        };
        let challenge_ops = Ops {
            put: Tables::put_challenge,
            del: Tables::del_challenge,
            clear: Tables::clear_challenges,
        };
        follow_replica(certs, cancel.clone(), store.clone(), cert_ops);
        follow_replica(challenges, cancel, store.clone(), challenge_ops);
        store
    }

    /// The app that custom hostname `host` (any case, maybe with a port) routes to.
    pub fn app_for_host(&self, host: &str) -> Option<String> {
        let name = bare_host(host);
        self.read().hosts.get(&name).map(|h| h.app.clone())
    }

    /// Whether a certificate for custom hostname `host` is loaded.
    pub fn has_host(&self, host: &str) -> bool {
        self.read().hosts.contains_key(&bare_host(host))
    }

    /// The key authorization for HTTP-01 `token`, while its challenge is open.
    pub fn http01_answer(&self, token: &str) -> Option<String> {
        self.read().http01.get(token).cloned()
    }

    pub(crate) fn set_default(&self, key: Arc<CertifiedKey>) {
        self.write().default = Some(key);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        let tables = self.read();
        if acme {
            // Only the challenge certificate answers acme-tls/1, never a real one.
            return tables.alpn01.get(sni.as_deref()?).cloned();
        }
        sni.and_then(|name| tables.hosts.get(&name).map(|h| Arc::clone(&h.key)))
            .or_else(|| tables.default.clone())
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tables = self.read();
        f.debug_struct("CertStore")
            .field("default", &tables.default.is_some())
            .field("hosts", &tables.hosts.keys().collect::<Vec<_>>())
            .field("challenges", &tables.challenge_keys.len())
            .field("challenge_records", &self.challenges.is_some())
            .finish()
    }
}

// === impl Tables ===

impl Tables {
    fn put_cert(&mut self, key: String, record: CertRecord) {
        self.del_cert(&key);
        let hostname = bare_host(&record.hostname);
        let key_pem = match unseal::open_key(self.cert_key.as_ref(), &record) {
            Ok(key_pem) => key_pem,
            Err(error) => {
                tracing::error!(hostname = %hostname, %error, "certificate record left out");
                return;
            }
        };
        match keys::certified_key(&record.fullchain_pem, &key_pem) {
            Ok(certified) => {
                tracing::info!(hostname = %hostname, app = %record.app, "certificate loaded");
                self.host_keys.insert(key, hostname.clone());
                self.hosts.insert(
                    hostname,
                    HostCert {
                        app: record.app,
                        key: certified,
                    },
                );
            }
            Err(error) => {
                tracing::warn!(hostname = %hostname, %error, "certificate record left out");
            }
        }
    }

    fn del_cert(&mut self, key: &str) {
        if let Some(hostname) = self.host_keys.remove(key) {
            self.hosts.remove(&hostname);
        }
    }

    fn clear_certs(&mut self) {
        self.hosts.clear();
        self.host_keys.clear();
    }

    fn clear_challenges(&mut self) {
        self.http01.clear();
        self.alpn01.clear();
        self.challenge_keys.clear();
    }

    fn put_challenge(&mut self, key: String, record: AcmeChallengeRecord) {
        self.del_challenge(&key);
        match record.kind {
            AcmeChallengeKind::Http01 => {
                self.http01
                    .insert(record.token.clone(), record.key_authorization.clone());
            }
            AcmeChallengeKind::TlsAlpn01 => {
                let hostname = bare_host(&record.hostname);
                match keys::alpn_challenge_key(&hostname, &record.key_authorization) {
                    Ok(certified) => {
                        self.alpn01.insert(hostname, certified);
                    }
                    Err(error) => {
                        tracing::warn!(hostname = %hostname, %error, "acme challenge left out");
                        return;
                    }
                }
            }
        }
        tracing::debug!(hostname = %record.hostname, kind = ?record.kind, "acme challenge open");
        self.challenge_keys.insert(key, record);
    }

    fn del_challenge(&mut self, key: &str) {
        let Some(record) = self.challenge_keys.remove(key) else {
            return;
        };
        match record.kind {
            AcmeChallengeKind::Http01 => {
                self.http01.remove(&record.token);
            }
            AcmeChallengeKind::TlsAlpn01 => {
                self.alpn01.remove(&bare_host(&record.hostname));
            }
        }
    }
}

/// How one replica's records go in and out of the tables.
struct Ops<T> {
    put: fn(&mut Tables, String, T),
    del: fn(&mut Tables, &str),
    clear: fn(&mut Tables),
}

/// Loads `replica` into the store and applies its changes until `cancel` fires (reloading
/// everything after falling behind).
fn follow_replica<T: godwit_state::Record>(
    replica: Replica<T>,
    cancel: CancellationToken,
    store: CertStore,
    ops: Ops<T>,
) {
    let Ops { put, del, clear } = ops;
    let mut changes = replica.subscribe();
    let load = move |store: &CertStore, replica: &Replica<T>| {
        let mut tables = store.write();
        clear(&mut tables);
        for (key, value) in replica.snapshot() {
            put(&mut tables, key, value);
        }
    };
    load(&store, &replica);
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                () = cancel.cancelled() => break,
                change = changes.recv() => change,
            };
            match change {
                Ok(Change::Put { key, value, .. }) => put(&mut store.write(), key, value),
                Ok(Change::Delete { key }) => del(&mut store.write(), &key),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "certificate store fell behind, reloading");
                    load(&store, &replica);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

/// `host` lower-cased, without a port or a trailing dot.
fn bare_host(host: &str) -> String {
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}
