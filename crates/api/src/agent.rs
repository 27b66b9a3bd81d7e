//! Calls to host agents: finding a host's URL and token, sending a request, and passing the
//! agent's answer back to the caller.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures::StreamExt as _;
use godwit_types::api::ErrorBody;
use tokio_util::sync::CancellationToken;

use crate::crypto::DataKey;
use crate::db::Db;
use crate::error::ApiError;

/// The lease header, passed through both ways.
pub(crate) const NONCE_HEADER: &str = "fly-machine-lease-nonce";

/// Deadline of an ordinary agent call.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Client for every agent; tokens come from the host table.
#[derive(Debug, Clone)]
pub(crate) struct Agents {
    http: reqwest::Client,
    db: Arc<Db>,
    key: DataKey,
}

/// One host's agent, ready to call.
#[derive(Debug, Clone)]
pub(crate) struct AgentTarget {
    pub(crate) host_id: String,
    pub(crate) url: String,
    token: String,
}

/// One call to an agent.
#[derive(Debug)]
pub(crate) struct AgentCall<'a> {
    pub(crate) method: Method,
    /// Path and query, e.g. `/v1/machines/abc/wait?state=started`.
    pub(crate) path: String,
    /// A JSON body.
    pub(crate) body: Option<Vec<u8>>,
    /// The caller's headers: the lease nonce is passed on.
    pub(crate) headers: Option<&'a HeaderMap>,
    /// `None` for streams that may stay open (followed logs).
    pub(crate) timeout: Option<Duration>,
}

impl<'a> AgentCall<'a> {
    /// A call with the default deadline, no body and no caller headers.
    pub(crate) fn new(method: Method, path: String) -> Self {
        Self {
            method,
            path,
            body: None,
            headers: None,
            timeout: Some(DEFAULT_TIMEOUT),
        }
    }

    /// Passes the caller's lease nonce on.
    pub(crate) fn headers(mut self, headers: &'a HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// A JSON body.
    pub(crate) fn json<T: serde::Serialize>(mut self, value: &T) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| ApiError::internal(format!("encoding a body for the agent: {e}")))?;
        self.body = Some(body);
        Ok(self)
    }

    /// `None`: no deadline (followed log streams).
    pub(crate) fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Agents {
    pub(crate) fn new(db: Arc<Db>, key: DataKey) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self { http, db, key })
    }

    /// The agent of a registered host.
    pub(crate) fn target(&self, host_id: &str) -> Result<AgentTarget, ApiError> {
        let host = self.db.host(host_id)?.ok_or_else(|| {
            ApiError::internal(format!("host {host_id} is routed to but not registered"))
        })?;
        let token = self
            .key
            .open(
                &host_aad(host_id),
                &host.token_nonce,
                &host.token_ciphertext,
            )
            .map_err(|e| ApiError::internal(format!("agent token of host {host_id}: {e}")))?;
        let token = String::from_utf8(token).map_err(|_| {
            ApiError::internal(format!("agent token of host {host_id} is not utf-8"))
        })?;
        Ok(AgentTarget {
            host_id: host.host_id,
            url: host.agent_url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Sends `call`; any answer (even 4xx/5xx) is `Ok`, only an unreachable agent is `Err`.
    pub(crate) async fn send(
        &self,
        target: &AgentTarget,
        call: AgentCall<'_>,
    ) -> Result<reqwest::Response, ApiError> {
        let mut request = self
            .http
            .request(call.method, format!("{}{}", target.url, call.path))
            .bearer_auth(&target.token);
        if let Some(nonce) = call.headers.and_then(|h| h.get(NONCE_HEADER)) {
            request = request.header(NONCE_HEADER, nonce);
        }
        if let Some(body) = call.body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if let Some(timeout) = call.timeout {
            request = request.timeout(timeout);
        }
        request
            .send()
            .await
            .map_err(|source| ApiError::AgentUnreachable {
                host_id: target.host_id.clone(),
                agent_url: target.url.clone(),
                source,
            })
    }

    /// Sends `call` and passes the agent's answer through: 2xx/4xx unchanged (status, body,
    /// content type, lease nonce), 5xx as a 502 naming the host. The body is streamed and ends
    /// when `cancel` fires.
    pub(crate) async fn forward(
        &self,
        target: &AgentTarget,
        call: AgentCall<'_>,
        cancel: &CancellationToken,
    ) -> Result<Response, ApiError> {
        let response = self.send(target, call).await?;
        passthrough(target, response, cancel).await
    }
}

/// Turns an agent's answer into ours (see [`Agents::forward`]).
pub(crate) async fn passthrough(
    target: &AgentTarget,
    response: reqwest::Response,
    cancel: &CancellationToken,
) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(response.status().as_u16())
        .map_err(|e| ApiError::internal(format!("agent status: {e}")))?;
    if status.is_server_error() {
        return Err(agent_failure(target, response).await);
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(ApiError::AgentFailed {
            host_id: target.host_id.clone(),
            status: status.as_u16(),
            message: "the agent refused the api's token; restart the agent so it registers again"
                .into(),
        });
    }
    let mut builder = Response::builder().status(status);
    for name in [header::CONTENT_TYPE, HeaderName::from_static(NONCE_HEADER)] {
        if let Some(value) = response.headers().get(name.as_str())
            && let Ok(value) = HeaderValue::from_bytes(value.as_bytes())
        {
            builder = builder.header(name, value);
        }
    }
    let stream = response
        .bytes_stream()
        .take_until(cancel.clone().cancelled_owned());
    builder
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(format!("building the forwarded response: {e}")))
}

/// An agent's 5xx, with what it said.
pub(crate) async fn agent_failure(target: &AgentTarget, response: reqwest::Response) -> ApiError {
    let status = response.status().as_u16();
    let message = match response.bytes().await {
        Ok(bytes) => match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => match body.request_id {
                Some(id) => format!("{} (agent request id {id})", body.error),
                None => body.error,
            },
            Err(_) => String::from_utf8_lossy(&bytes).chars().take(300).collect(),
        },
        Err(e) => format!("unreadable body: {e}"),
    };
    ApiError::AgentFailed {
        host_id: target.host_id.clone(),
        status,
        message,
    }
}

/// Associated data that binds a sealed agent token to its host.
pub(crate) fn host_aad(host_id: &str) -> String {
    format!("host/{host_id}")
}
