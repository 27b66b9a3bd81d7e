//! Replays: a machine answers with a `fly-replay` / `godwit-replay` header, or with a JSON
//! body of type `application/vnd.fly.replay+json`, naming where the request goes instead
//! (another machine, region or app); the request is sent there with `fly-replay-src`. When
//! the replay cannot be served and it asked for a `fallback`, the request goes back to the
//! machine that asked, with `fly-replay-failed`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri, Version, request};
use http_body_util::{BodyExt as _, Limited};
use tokio::time::Instant;

use super::access::ServedBy;
use super::choose::{Miss, Unserved};
use super::route::{By, Pick, Route};
use super::{Conn, Forwarded, Proxy, headers, served};
use crate::backhaul;
use crate::body::{ProxyBody, RequestBody, error_response};
use crate::routes::Target;

mod parse;

pub(crate) use parse::{Fallback, Replay, Transform, parse, parse_json};

/// Response headers that ask for a replay.
pub(crate) const REPLAY_HEADERS: [&str; 2] = ["fly-replay", "godwit-replay"];
/// The content type of a replay's JSON form.
const REPLAY_JSON: &[u8] = b"application/vnd.fly.replay+json";
/// The largest JSON replay body read.
pub(crate) const REPLAY_JSON_LIMIT: usize = 64 * 1024;

const FLY_REPLAY_SRC: HeaderName = HeaderName::from_static("fly-replay-src");
const FLY_REPLAY_FAILED: HeaderName = HeaderName::from_static("fly-replay-failed");

/// What a machine's response asked for: a replay header's text, or a JSON body (or why
/// neither could be read).
#[derive(Debug)]
pub(crate) enum Ask {
    Header(Result<String, String>),
    Json(Result<Bytes, String>),
}

/// The replay header of a response, if any (its raw text).
pub(crate) fn header_of(headers: &HeaderMap) -> Option<&HeaderValue> {
    REPLAY_HEADERS.iter().find_map(|name| headers.get(*name))
}

/// Whether a `Content-Type` value is the replay JSON type (parameters allowed).
pub(crate) fn is_replay_json(content_type: &[u8]) -> bool {
    let media = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    media.eq_ignore_ascii_case(REPLAY_JSON)
}

/// Whether response headers ask for a replay, in either form.
pub(crate) fn asks(headers: &HeaderMap) -> bool {
    header_of(headers).is_some()
        || headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| is_replay_json(v.as_bytes()))
}

/// The replay `response` asks for (its JSON body read, up to [`REPLAY_JSON_LIMIT`]), or
/// the response itself when it asks for none.
pub(super) async fn ask_of(response: Response<ProxyBody>) -> Result<Ask, Response<ProxyBody>> {
    if let Some(value) = header_of(response.headers()) {
        let text = value.to_str().map(str::to_owned).map_err(|e| e.to_string());
        return Ok(Ask::Header(text));
    }
    if !asks(response.headers()) {
        return Err(response);
    }
    let body = Limited::new(response.into_body(), REPLAY_JSON_LIMIT)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|error| format!("could not read the replay JSON (at most 64 KiB): {error}"));
    Ok(Ask::Json(body))
}

/// The replay an ask stands for; `from_machine` answered with it.
fn replay_of(ask: Ask, from_machine: &str) -> Result<Replay, String> {
    match ask {
        Ask::Header(text) => parse(&text?, from_machine),
        Ask::Json(body) => parse_json(&body?, from_machine),
    }
}

// === impl Proxy ===

impl Proxy {
    /// A request the HTTP/1.1 fast path sent to `served_by`, which answered with a replay
    /// (header or JSON), replayed as the hyper path replays: `request` is the client's
    /// (headers rewritten here) with its whole body. Returns the response with the
    /// client's headers and the machine that gave it.
    pub(crate) async fn replay_fast(
        &self,
        conn: &Conn,
        app: &str,
        request: http::Request<Bytes>,
        request_id: &HeaderValue,
        ask: Ask,
        served_by: &Target,
    ) -> (Response<ProxyBody>, Option<Arc<Target>>) {
        let (mut parts, body) = request.into_parts();
        backhaul::strip(&mut parts.headers);
        headers::prepare_request(&mut parts, conn, &self.region, request_id);
        let mut body = RequestBody::Buffered(body);
        let port = conn.public_port;
        let mut response = self
            .replay_as_asked(app, port, &mut parts, &mut body, ask, served_by)
            .await;
        headers::finish_response(response.headers_mut(), Version::HTTP_11, request_id, false);
        backhaul::strip(response.headers_mut());
        let machine = response.extensions_mut().remove::<ServedBy>().map(|s| s.0);
        (response, machine)
    }

    /// Replays the request as `served_by`'s response asked; the response is marked with
    /// the machine that gave it.
    pub(super) async fn replay_as_asked(
        &self,
        app: &str,
        port: u16,
        parts: &mut request::Parts,
        body: &mut RequestBody,
        ask: Ask,
        served_by: &Target,
    ) -> Response<ProxyBody> {
        let replay = match replay_of(ask, &served_by.machine_id) {
            Ok(replay) => replay,
            Err(reason) => return error_response(StatusCode::BAD_GATEWAY, Some("PA03"), &reason),
        };
        match self.replay(app, port, parts, body, replay, served_by).await {
            Ok((response, target)) => served(response, &target),
            Err(response) => response,
        }
    }

    /// Sends the request again as `replay` asks (`served_by` answered with it). The target
    /// gets `fly-replay-src`; its own replay is refused (`PA02`). When no machine takes it
    /// and the replay has a fallback, the request goes back to `served_by`'s app.
    pub(super) async fn replay(
        &self,
        app: &str,
        port: u16,
        parts: &mut request::Parts,
        body: &mut RequestBody,
        replay: Replay,
        served_by: &Target,
    ) -> Result<Forwarded, Response<ProxyBody>> {
        if !body.is_buffered() {
            let message = "the request body is over 1 MiB and cannot be replayed";
            return Err(error_response(
                StatusCode::BAD_GATEWAY,
                Some("PA01"),
                message,
            ));
        }
        let started = Instant::now();
        // The fallback goes back as the client sent it, without the replay's changes.
        let original = replay
            .fallback
            .map(|_| (parts.uri.clone(), parts.headers.clone()));
        let unserved = match self
            .replay_to_target(app, port, parts, body, &replay, served_by)
            .await
        {
            Ok(forwarded) => return Ok(forwarded),
            Err(unserved) => unserved,
        };
        let (Some(fallback), Some((uri, headers))) = (replay.fallback, original) else {
            return Err(unserved.response);
        };
        if unserved.miss == Miss::Failed {
            return Err(unserved.response);
        }
        (parts.uri, parts.headers) = (uri, headers);
        let failed = failure_report(app, &replay, unserved.miss, started.elapsed());
        if let Ok(value) = HeaderValue::from_str(&failed) {
            parts.headers.insert(FLY_REPLAY_FAILED, value);
        }
        tracing::debug!(reason = ?unserved.miss, to = %served_by.machine_id, "replay falls back");
        let route = match fallback {
            Fallback::ForceSelf => Route {
                pick: Pick::Instance(served_by.machine_id.clone()),
                by: By::Replay,
                ..Route::any()
            },
            Fallback::PreferSelf => Route {
                prefer: vec![Pick::Instance(served_by.machine_id.clone())],
                by: By::Replay,
                ..Route::any()
            },
        };
        let (response, target) = self
            .forward(app, port, parts, body, &route)
            .await
            .map_err(|unserved| unserved.response)?;
        if asks(response.headers()) {
            let message = "a fallback request cannot replay again";
            return Err(error_response(
                StatusCode::BAD_GATEWAY,
                Some("PA02"),
                message,
            ));
        }
        Ok((response, target))
    }

    /// The replay itself: to the app, machines and regions it names.
    async fn replay_to_target(
        &self,
        app: &str,
        port: u16,
        parts: &mut request::Parts,
        body: &mut RequestBody,
        replay: &Replay,
        served_by: &Target,
    ) -> Result<Forwarded, Unserved> {
        let target_app = replay.app.as_deref().unwrap_or(app);
        if self.routes.app(target_app).is_none() {
            let message = format!("the replay names app {target_app:?}, which has no machines");
            return Err(Unserved::new(
                Miss::NoCandidate,
                StatusCode::BAD_GATEWAY,
                "PA04",
                &message,
            ));
        }
        self.metrics.replay(app);
        apply(&replay.transform, parts);
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let mut source = format!(
            "instance={};region={};t={micros}",
            served_by.machine_id, served_by.region
        );
        if replay.app.is_some() {
            source.push_str(&format!(";app={app}"));
        }
        if let Some(state) = &replay.state {
            source.push_str(&format!(";state={state}"));
        }
        if let Ok(value) = HeaderValue::from_str(&source) {
            parts.headers.insert(FLY_REPLAY_SRC, value);
        }
        tracing::debug!(from = %served_by.machine_id, to_app = %target_app, route = ?replay.route, "replaying");
        let (response, target) = self
            .forward(target_app, port, parts, body, &replay.route)
            .await?;
        if asks(response.headers()) {
            let message = "the replayed request asked for another replay";
            return Err(Unserved::new(
                Miss::Failed,
                StatusCode::BAD_GATEWAY,
                "PA02",
                message,
            ));
        }
        Ok((response, target))
    }
}

/// Applies a JSON replay's `transform` to the request: the new path (keeping the query
/// unless the new path has one), then the headers deleted, then those set.
fn apply(transform: &Transform, parts: &mut request::Parts) {
    if let Some(path) = &transform.path {
        let path = match (path.query(), parts.uri.query()) {
            (None, Some(query)) => format!("{}?{query}", path.path())
                .parse()
                .unwrap_or_else(|_| path.clone()),
            _ => path.clone(),
        };
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = Some(path);
        parts.uri = Uri::from_parts(uri).unwrap_or_default();
    }
    for name in &transform.delete_headers {
        parts.headers.remove(name);
    }
    for (name, value) in &transform.set_headers {
        parts.headers.insert(name.clone(), value.clone());
    }
}

/// The `fly-replay-failed` value: the replay target as asked (app, and the instance and
/// regions when it named them), why it failed and after how long.
fn failure_report(app: &str, replay: &Replay, miss: Miss, elapsed: std::time::Duration) -> String {
    let mut report = String::new();
    if let Some(instance) = &replay.asked_instance {
        report.push_str(&format!("instance={instance};"));
    }
    report.push_str(&format!("app={}", replay.app.as_deref().unwrap_or(app)));
    if let Some(regions) = &replay.asked_regions {
        report.push_str(&format!(";region={regions}"));
    }
    let reason = match miss {
        Miss::Timeout => "timeout",
        Miss::RetriesExhausted => "retries_exhausted",
        Miss::NoCandidate | Miss::Failed => "no_candidate",
    };
    report.push_str(&format!(
        ";reason={reason};elapsed_ms={}",
        elapsed.as_millis()
    ));
    report
}
