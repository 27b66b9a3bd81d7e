//! Machine operations forwarded to the owning agent: start/stop/suspend/restart/signal/wait,
//! leases, cordon, exec, events and metadata. Bodies and queries are checked here so that
//! mistakes get a clear 4xx before any host is involved.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use godwit_types::api::{
    ErrorBody, ExecRequest, ExecResponse, Lease, LeaseRequest, MetadataValue, SignalRequest,
    StateChangeResponse, StopRequest,
};
use godwit_types::{MachineEvent, MachineState};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::agent::AgentCall;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::routes::{ApiJson, ApiPath, ApiQuery, machine_path};
use crate::server::AppState;

/// The longest `wait` (seconds), as in the reference API.
pub(crate) const MAX_WAIT_SECS: u64 = 60;

type MachinePath = ApiPath<(String, String)>;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub(crate) struct WaitQuery {
    /// `started` (default), `stopped`, `suspended`, `destroyed`...
    state: Option<String>,
    /// Seconds, 1 to 60 (default 60).
    timeout: Option<String>,
    /// Required (or `version`) when waiting for `stopped`.
    instance_id: Option<String>,
    version: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub(crate) struct RestartQuery {
    signal: Option<String>,
    /// A duration such as `10s`.
    timeout: Option<String>,
}

macro_rules! machine_op_docs {
    ($(#[$doc:meta])* $name:ident, $method:ident, $http:ident, $path:literal, $suffix:literal, $resp:ty) => {
        $(#[$doc])*
        #[utoipa::path($method, path = $path,
            tag = "machines", params(("app" = String, Path), ("id" = String, Path)),
            responses((status = 200, body = $resp), (status = 404, body = ErrorBody),
                      (status = 409, body = ErrorBody, description = "lease held by another")))]
        pub(crate) async fn $name(
            State(state): State<AppState>,
            auth: Auth,
            ApiPath((app, id)): MachinePath,
            headers: HeaderMap,
        ) -> Result<Response, ApiError> {
            let call =
                AgentCall::new(Method::$http, machine_path(&id, $suffix, None)).headers(&headers);
            forward(&state, &auth, &app, &id, call).await
        }
    };
}

machine_op_docs!(
    /// Starts a stopped or created machine; resumes a suspended one.
    start, post, POST, "/v1/apps/{app}/machines/{id}/start", "/start",
    StateChangeResponse);
machine_op_docs!(
    /// Suspends a started machine: its processes are frozen with their memory, rootfs and
    /// network kept, and the next `start` resumes them in milliseconds. 412 unless the
    /// machine is started (or already suspended). `stop` discards the suspension.
    suspend, post, POST, "/v1/apps/{app}/machines/{id}/suspend", "/suspend",
    StateChangeResponse);
machine_op_docs!(
    /// Takes the machine out of proxy routing.
    cordon, post, POST, "/v1/apps/{app}/machines/{id}/cordon", "/cordon",
    serde_json::Value);
machine_op_docs!(
    /// Puts the machine back into proxy routing.
    uncordon, post, POST, "/v1/apps/{app}/machines/{id}/uncordon", "/uncordon",
    serde_json::Value);
machine_op_docs!(
    /// The machine's event log, newest first.
    events, get, GET, "/v1/apps/{app}/machines/{id}/events", "/events",
    Vec<MachineEvent>);
machine_op_docs!(
    /// The machine's metadata (changing it makes no new version).
    get_metadata, get, GET, "/v1/apps/{app}/machines/{id}/metadata", "/metadata",
    std::collections::BTreeMap<String, String>);
machine_op_docs!(
    /// The current lease, if any.
    get_lease, get, GET, "/v1/apps/{app}/machines/{id}/lease", "/lease",
    Lease);

/// Stops the machine: `signal` (default the config's, else SIGINT), then SIGKILL after
/// `timeout`.
#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/stop", tag = "machines",
    params(("app" = String, Path), ("id" = String, Path)), request_body = StopRequest,
    responses((status = 200, body = StateChangeResponse), (status = 422, body = ErrorBody)))]
pub(crate) async fn stop(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, id)): MachinePath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: StopRequest = optional_body(&body)?;
    if let Some(signal) = &req.signal {
        godwit_types::signal::parse(signal).map_err(ApiError::Unprocessable)?;
    }
    let grace = req.timeout.map_or(Duration::ZERO, |t| t.0);
    let call = AgentCall::new(Method::POST, machine_path(&id, "/stop", None))
        .headers(&headers)
        .json(&req)?
        .timeout(Some(crate::agent::DEFAULT_TIMEOUT + grace));
    forward(&state, &auth, &app, &id, call).await
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/restart", tag = "machines",
    params(("app" = String, Path), ("id" = String, Path), RestartQuery),
    responses((status = 200, body = StateChangeResponse)))]
pub(crate) async fn restart(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, id)): MachinePath,
    ApiQuery(query): ApiQuery<RestartQuery>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(signal) = &query.signal {
        godwit_types::signal::parse(signal).map_err(ApiError::BadRequest)?;
    }
    let grace = match &query.timeout {
        Some(t) => {
            t.parse::<godwit_types::machine::Duration>()
                .map_err(ApiError::BadRequest)?
                .0
        }
        None => Duration::ZERO,
    };
    let call = AgentCall::new(Method::POST, machine_path(&id, "/restart", raw.as_deref()))
        .headers(&headers)
        .timeout(Some(crate::agent::DEFAULT_TIMEOUT * 2 + grace));
    forward(&state, &auth, &app, &id, call).await
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/signal", tag = "machines",
    params(("app" = String, Path), ("id" = String, Path)), request_body = SignalRequest,
    responses((status = 200), (status = 422, body = ErrorBody)))]
pub(crate) async fn signal(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, id)): MachinePath,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SignalRequest>,
) -> Result<Response, ApiError> {
    godwit_types::signal::parse(&req.signal).map_err(ApiError::Unprocessable)?;
    let call = AgentCall::new(Method::POST, machine_path(&id, "/signal", None))
        .headers(&headers)
        .json(&req)?;
    forward(&state, &auth, &app, &id, call).await
}

/// Blocks until the machine reaches `state` (200) or `timeout` seconds pass (408).
#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/wait", tag = "machines",
    params(("app" = String, Path), ("id" = String, Path), WaitQuery),
    responses((status = 200), (status = 400, body = ErrorBody),
              (status = 408, body = ErrorBody, description = "state not reached in time")))]
pub(crate) async fn wait(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, id)): MachinePath,
    ApiQuery(query): ApiQuery<WaitQuery>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wanted = match query.state.as_deref() {
        Some(s) => s.parse::<MachineState>().map_err(|e| {
            ApiError::BadRequest(format!("{e}: use started, stopped, suspended or destroyed"))
        })?,
        None => MachineState::Started,
    };
    let timeout_secs = match query.timeout.as_deref() {
        Some(t) => parse_wait_timeout(t)?,
        None => MAX_WAIT_SECS,
    };
    if wanted == MachineState::Stopped && query.instance_id.is_none() && query.version.is_none() {
        return Err(ApiError::BadRequest(
            "waiting for state stopped needs instance_id (or version): pass the machine's \
             current instance_id so you wait on the right version"
                .into(),
        ));
    }
    let call = AgentCall::new(Method::GET, machine_path(&id, "/wait", raw.as_deref()))
        .headers(&headers)
        .timeout(Some(Duration::from_secs(timeout_secs + 10)));
    forward(&state, &auth, &app, &id, call).await
}

/// Takes or refreshes (with the nonce header) the machine's lease; 409 if another holds it.
#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/lease", tag = "machines",
    params(("app" = String, Path), ("id" = String, Path)), request_body = LeaseRequest,
    responses((status = 200, body = Lease), (status = 409, body = ErrorBody)))]
pub(crate) async fn acquire_lease(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, id)): MachinePath,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: LeaseRequest = optional_body(&body)?;
    let call = AgentCall::new(Method::POST, machine_path(&id, "/lease", raw.as_deref()))
        .headers(&headers)
        .json(&req)?;
    forward(&state, &auth, &app, &id, call).await
}

/// Releases the lease; needs its nonce in `fly-machine-lease-nonce`.
#[utoipa::path(delete, path = "/v1/apps/{app}/machines/{id}/lease", tag = "machines",
    params(("app" = String, Path), ("id" = String, Path)),
    responses((status = 200), (status = 409, body = ErrorBody)))]
pub(crate) async fn release_lease(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, id)): MachinePath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let call = AgentCall::new(Method::DELETE, machine_path(&id, "/lease", None)).headers(&headers);
    forward(&state, &auth, &app, &id, call).await
}

/// Runs a command in the machine and returns its output.
#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/exec", tag = "machines",
    params(("app" = String, Path), ("id" = String, Path)), request_body = ExecRequest,
    responses((status = 200, body = ExecResponse), (status = 422, body = ErrorBody)))]
pub(crate) async fn exec(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, id)): MachinePath,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Response, ApiError> {
    if req.command.is_empty() && req.cmd.as_deref().is_none_or(|c| c.trim().is_empty()) {
        return Err(ApiError::Unprocessable(
            "exec needs a command: send {\"command\": [\"ls\", \"-l\"]}".into(),
        ));
    }
    let secs = req.timeout.unwrap_or(30);
    if secs == 0 || secs > 300 {
        return Err(ApiError::Unprocessable(format!(
            "exec timeout {secs} is out of range: use 1 to 300 seconds"
        )));
    }
    let call = AgentCall::new(Method::POST, machine_path(&id, "/exec", None))
        .headers(&headers)
        .json(&req)?
        .timeout(Some(Duration::from_secs(secs + 10)));
    forward(&state, &auth, &app, &id, call).await
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/metadata/{key}", tag = "machines",
    params(("app" = String, Path), ("id" = String, Path), ("key" = String, Path)),
    request_body = MetadataValue, responses((status = 204)))]
pub(crate) async fn set_metadata(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, id, key)): ApiPath<(String, String, String)>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<MetadataValue>,
) -> Result<Response, ApiError> {
    let call = AgentCall::new(
        Method::POST,
        machine_path(&id, &format!("/metadata/{key}"), None),
    )
    .headers(&headers)
    .json(&req)?;
    forward(&state, &auth, &app, &id, call).await
}

#[utoipa::path(delete, path = "/v1/apps/{app}/machines/{id}/metadata/{key}", tag = "machines",
    params(("app" = String, Path), ("id" = String, Path), ("key" = String, Path)),
    responses((status = 204)))]
pub(crate) async fn delete_metadata(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, id, key)): ApiPath<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = machine_path(&id, &format!("/metadata/{key}"), None);
    let call = AgentCall::new(Method::DELETE, path).headers(&headers);
    forward(&state, &auth, &app, &id, call).await
}

async fn forward(
    state: &AppState,
    auth: &Auth,
    app: &str,
    id: &str,
    call: AgentCall<'_>,
) -> Result<Response, ApiError> {
    let (_, machine) = state.routed(auth, app, id)?;
    state.forward_machine(&machine, call).await
}

/// An optional JSON body: empty means the type's default.
fn optional_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::BadRequest(format!("invalid request body: {e}; send a JSON object"))
        } else {
            ApiError::Unprocessable(format!("invalid request body: {e}"))
        }
    })
}

/// `30`, `30s` or `1m` → seconds, 1..=60.
fn parse_wait_timeout(text: &str) -> Result<u64, ApiError> {
    let secs = match text.parse::<u64>() {
        Ok(secs) => secs,
        Err(_) => text
            .parse::<godwit_types::machine::Duration>()
            .map_err(ApiError::BadRequest)?
            .0
            .as_secs(),
    };
    if (1..=MAX_WAIT_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(ApiError::BadRequest(format!(
            "wait timeout {text} is out of range: use 1 to {MAX_WAIT_SECS} seconds \
             and call again to wait longer"
        )))
    }
}
