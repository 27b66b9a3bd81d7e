//! Log streams: one machine's, forwarded as is, or all of an app's machines merged line by
//! line. Both are `application/x-ndjson` of `LogLine` and end at shutdown.

use std::convert::Infallible;
use std::pin::Pin;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use futures::{Stream, StreamExt as _};
use godwit_types::api::{ErrorBody, LogLine};
use serde::Deserialize;

use crate::agent::AgentCall;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::routes::{ApiPath, ApiQuery, machine_path};
use crate::server::AppState;

type LineStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub(crate) struct LogsQuery {
    /// Keep the stream open for new lines.
    #[serde(default)]
    follow: bool,
    /// Start with the last N lines.
    #[allow(dead_code, reason = "validated here, forwarded raw to the agents")]
    tail: Option<u32>,
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/logs", tag = "machines",
    params(("app" = String, Path), ("id" = String, Path), LogsQuery),
    responses((status = 200, body = LogLine, content_type = "application/x-ndjson"),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn machine_logs(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<LogsQuery>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, machine) = state.routed(&auth, &app, &id)?;
    let call = AgentCall::new(Method::GET, machine_path(&id, "/logs", raw.as_deref()))
        .headers(&headers)
        .timeout(deadline(&query));
    state.forward_machine(&machine, call).await
}

/// Every machine's logs of the app, merged line by line; machines whose agent cannot be
/// reached are left out (and logged).
#[utoipa::path(get, path = "/v1/apps/{app}/logs", tag = "apps",
    params(("app" = String, Path), LogsQuery),
    responses((status = 200, body = LogLine, content_type = "application/x-ndjson")))]
pub(crate) async fn app_logs(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(app): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let app_row = state.app(&auth, &app)?;
    let mut streams: Vec<LineStream> = Vec::new();
    for machine in state.db.machines(app_row.id)? {
        let target = state.agents.target(&machine.host_id)?;
        let call = AgentCall::new(
            Method::GET,
            machine_path(&machine.id, "/logs", raw.as_deref()),
        )
        .timeout(deadline(&query));
        match state.agents.send(&target, call).await {
            Ok(response) if response.status().is_success() => {
                streams.push(Box::pin(lines(response.bytes_stream())));
            }
            Ok(response) => {
                tracing::warn!(machine_id = %machine.id, status = %response.status(),
                    "machine logs refused, leaving them out");
            }
            Err(error) => {
                tracing::warn!(machine_id = %machine.id, %error, "leaving out machine logs");
            }
        }
    }
    let merged = futures::stream::select_all(streams)
        .map(Ok::<_, Infallible>)
        .take_until(state.cancel.clone().cancelled_owned());
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(merged))
        .map_err(|e| ApiError::internal(format!("building the log response: {e}")))
}

/// Followed streams stay open; others get a generous deadline.
fn deadline(query: &LogsQuery) -> Option<std::time::Duration> {
    (!query.follow).then_some(std::time::Duration::from_secs(120))
}

/// Re-chunks a byte stream into whole lines (each ending in `\n`), so merged streams never
/// interleave halves of lines. A read error ends the stream.
fn lines<S>(stream: S) -> impl Stream<Item = Bytes> + Send
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
{
    let stream: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>> = Box::pin(stream);
    futures::stream::unfold(
        (stream, Vec::<u8>::new(), false),
        |(mut stream, mut buf, mut done)| async move {
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    return Some((Bytes::from(line), (stream, buf, done)));
                }
                if done {
                    if buf.is_empty() {
                        return None;
                    }
                    buf.push(b'\n');
                    return Some((Bytes::from(std::mem::take(&mut buf)), (stream, buf, done)));
                }
                match stream.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(_)) | None => done = true,
                }
            }
        },
    )
}
