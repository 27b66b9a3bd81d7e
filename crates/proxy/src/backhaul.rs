//! Backhaul between proxies. The edge that accepted a request for a machine on another
//! host forwards it over one multiplexed h2c connection per worker host to the worker proxy
//! of that host, naming the machine and carrying the client's address and the edge's region
//! in `godwit-*` headers. The worker checks the cluster secret, re-checks the machine
//! against its own view (its agent writes its machines, so it is the freshest) and either
//! forwards it like a local request or answers "try elsewhere" (503 +
//! `godwit-try-elsewhere`), which the edge turns into its next candidate. The same
//! connections carry `GET /_godwit/ping` every second: the measured RTT per region ranks
//! regions ([`Closeness`]).

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use sha2::{Digest as _, Sha256};

mod client;
mod rtt;
mod worker;

pub(crate) use client::{BackhaulClient, SendError};
pub(crate) use rtt::{Closeness, Rank, measure};
pub(crate) use worker::serve;

/// The machine a backhauled request is for.
pub(crate) const MACHINE: HeaderName = HeaderName::from_static("godwit-machine");
/// The app of the machine.
pub(crate) const APP: HeaderName = HeaderName::from_static("godwit-app");
/// The public port the client used (services are matched on it).
pub(crate) const PUBLIC_PORT: HeaderName = HeaderName::from_static("godwit-public-port");
/// The client's IP as the edge saw it.
pub(crate) const CLIENT_IP: HeaderName = HeaderName::from_static("godwit-client-ip");
/// The region of the edge that accepted the request.
pub(crate) const EDGE_REGION: HeaderName = HeaderName::from_static("godwit-edge-region");
/// The hashed cluster secret.
pub(crate) const SECRET: HeaderName = HeaderName::from_static("godwit-backhaul-secret");
/// On a worker's 503: the machine cannot take the request, the edge tries another.
pub(crate) const TRY_ELSEWHERE: HeaderName = HeaderName::from_static("godwit-try-elsewhere");
/// On a worker's response: `<in_flight>/<soft_limit>` of the machine (in flight besides
/// this request, from every edge).
pub(crate) const LOAD: HeaderName = HeaderName::from_static("godwit-load");

/// The worker's RTT probe.
pub(crate) const PING_PATH: &str = "/_godwit/ping";
/// HTTP/1.1 upgrade to a byte stream to the named machine (WebSocket, raw TCP).
pub(crate) const TUNNEL_PATH: &str = "/_godwit/tunnel";
/// The `Upgrade` protocol of a tunnel.
pub(crate) const TUNNEL_PROTOCOL: &str = "godwit-tunnel";

/// Every header of the backhaul protocol: never taken from a client, never shown to one.
const ALL: [HeaderName; 8] = [
    MACHINE,
    APP,
    PUBLIC_PORT,
    CLIENT_IP,
    EDGE_REGION,
    SECRET,
    TRY_ELSEWHERE,
    LOAD,
];

/// Removes every backhaul header (from client requests and from responses to clients).
pub(crate) fn strip(headers: &mut HeaderMap) {
    for name in &ALL {
        headers.remove(name);
    }
}

/// Whether `name` is a backhaul header (the fast path's check of raw header names).
pub(crate) fn is_internal(name: &str) -> bool {
    name.as_bytes()
        .get(..7)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"godwit-"))
        && ALL.iter().any(|h| name.eq_ignore_ascii_case(h.as_str()))
}

/// What backhaul requests carry for the cluster `secret`: a hash, so the secret itself
/// (e.g. the API token) never travels.
pub(crate) fn secret_token(secret: &str) -> HeaderValue {
    let mut hasher = Sha256::new();
    hasher.update(b"godwit-backhaul\0");
    hasher.update(secret.trim().as_bytes());
    HeaderValue::from_str(&hex::encode(hasher.finalize())).expect("hex is a valid header value")
}

/// Whether `presented` is `expected`, in time independent of where they differ (both are
/// hashed first, so the comparison is over fixed-size digests).
pub(crate) fn secret_matches(expected: &HeaderValue, presented: Option<&HeaderValue>) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(presented.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0_u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_themselves() {
        let token = secret_token("s3cret\n");
        assert_eq!(token, secret_token("s3cret"));
        assert!(secret_matches(&token, Some(&token)));
        assert!(!secret_matches(&token, Some(&secret_token("other"))));
        assert!(!secret_matches(&token, Some(&HeaderValue::from_static(""))));
        assert!(!secret_matches(&token, None));
    }

    #[test]
    fn strip_removes_backhaul_headers_only() {
        let mut headers = HeaderMap::new();
        headers.insert(CLIENT_IP, HeaderValue::from_static("6.6.6.6"));
        headers.insert(SECRET, HeaderValue::from_static("x"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        strip(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-other"));
        assert!(is_internal("Godwit-Client-IP") && is_internal("godwit-load"));
        assert!(!is_internal("godwit-proxy-error") && !is_internal("fly-client-ip"));
    }
}
