//! Direct reads of the `godwit_acme` records. The API tells the ACME server that a challenge
//! is ready as soon as its put is acknowledged; the replica's watch (and, in another region,
//! the mirror feeding it) may deliver it later than a fast validator arrives. An acknowledged
//! put is visible to a direct get at the writer's server, so a challenge the tables do not
//! hold is looked up there (`Records::get`: locally, then at the writing region) before
//! giving up. Such reads are capped at [`LOOKUPS_PER_SECOND`]: the paths and SNI names that
//! trigger them are the client's to choose, and each may cost a round trip to every region.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use godwit_state::key_for;
use godwit_types::{AcmeChallengeKind, AcmeChallengeRecord};

use super::{ACME_HTTP_PREFIX, CertStore, bare_host};
use crate::body::ProxyBody;

/// How long one direct read of the bucket may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Direct reads allowed per second and proxy. An ACME order validates a few times per
/// challenge; anything beyond this is somebody probing, who gets the replica's answer only.
pub(crate) const LOOKUPS_PER_SECOND: u32 = 20;

/// A fixed one-second window of direct reads.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    window: Mutex<Option<(Instant, u32)>>,
}

impl Budget {
    /// Takes one read from the budget of the second `now` falls in; false when spent.
    pub(crate) fn take(&self, now: Instant) -> bool {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *window {
            Some((start, used)) if now.duration_since(*start) < Duration::from_secs(1) => {
                if *used >= LOOKUPS_PER_SECOND {
                    return false;
                }
                *used += 1;
            }
            _ => *window = Some((now, 1)),
        }
        true
    }
}

impl CertStore {
    /// The answer to an HTTP-01 validation request for `path`, when it asks for the token of
    /// an open challenge (in the tables, or else in the bucket). Other
    /// `/.well-known/acme-challenge/` paths go to the app as usual.
    pub(crate) async fn http01_response(&self, path: &str) -> Option<http::Response<ProxyBody>> {
        let token = path.strip_prefix(ACME_HTTP_PREFIX)?;
        let answer = match self.http01_answer(token) {
            Some(answer) => answer,
            None => {
                // Only the answer; the tables stay the replica's (its delete may come first).
                let record = self.lookup(token).await?;
                if record.kind != AcmeChallengeKind::Http01 || record.token != token {
                    return None;
                }
                tracing::debug!(token, "http-01 challenge read from the bucket");
                record.key_authorization
            }
        };
        tracing::debug!(token, "answering an http-01 challenge");
        let mut response = http::Response::new(ProxyBody::full(bytes::Bytes::from(answer)));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        Some(response)
    }

    /// Before a handshake offering `acme-tls/1` for `sni`: when the tables hold no challenge
    /// certificate for it, reads its TLS-ALPN-01 challenge from the bucket and loads it.
    pub(crate) async fn load_alpn01(&self, sni: &str) {
        let hostname = bare_host(sni);
        if self.read().alpn01.contains_key(&hostname) {
            return;
        }
        let Some(record) = self.lookup(&hostname).await else {
            return;
        };
        if record.kind != AcmeChallengeKind::TlsAlpn01 || bare_host(&record.hostname) != hostname {
            return;
        }
        let key = key_for(&hostname);
        let mut tables = self.write();
        // The replica may have caught up meanwhile: what it holds wins. Otherwise its own put
        // (and later delete) of this key replaces what is loaded here.
        if !tables.challenge_keys.contains_key(&key) {
            tracing::debug!(hostname = %hostname, "tls-alpn-01 challenge read from the bucket");
            tables.put_challenge(key, record);
        }
    }

    /// The challenge stored under `key_for(id)`, read from the server; `None` when there is
    /// none, no bucket, or the read fails (logged).
    async fn lookup(&self, id: &str) -> Option<AcmeChallengeRecord> {
        let bucket = self.challenges.as_ref()?;
        if id.is_empty() {
            return None;
        }
        if !self.lookups.take(Instant::now()) {
            tracing::debug!(id, "direct acme challenge reads over budget this second");
            return None;
        }
        match tokio::time::timeout(LOOKUP_TIMEOUT, bucket.get(&key_for(id))).await {
            Ok(Ok(record)) => record,
            Ok(Err(error)) => {
                tracing::warn!(%error, id, "reading an acme challenge failed");
                None
            }
            Err(_) => {
                tracing::warn!(id, timeout = ?LOOKUP_TIMEOUT, "reading an acme challenge timed out");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_so_many_reads_a_second_then_refills() {
        let budget = Budget::default();
        let start = Instant::now();
        for _ in 0..LOOKUPS_PER_SECOND {
            assert!(budget.take(start));
        }
        assert!(!budget.take(start + Duration::from_millis(999)));
        assert!(budget.take(start + Duration::from_secs(1)));
    }
}
