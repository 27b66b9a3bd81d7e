//! A small client for the Godwit REST API (`/v1`), and where the CLI finds its URL and token.

use std::time::Duration;

use futures::StreamExt;
use godwit_types::api::{
    App, CreateAppRequest, CreateMachineRequest, ErrorBody, ExecRequest, ExecResponse,
    ListAppsResponse, LogLine, SecretsResponse, SetSecretsRequest, StopRequest,
    UpdateMachineRequest,
};
use godwit_types::{Machine, MachineEvent};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod certs;
mod endpoint;

pub use endpoint::{Endpoint, EndpointError, data_dir};

/// How long an ordinary call may take (creating a machine pulls its image).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The API answered with an error status; `message` is the body's `error` text.
    #[error("{message} (HTTP {status})")]
    Status { status: u16, message: String },
    #[error("cannot reach the API at {url}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected response body from {url}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A client of one API endpoint.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

// === impl CallError ===

impl CallError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

// === impl ApiClient ===

impl ApiClient {
    pub fn new(endpoint: &Endpoint) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: endpoint.api_url.trim_end_matches('/').to_owned(),
            token: endpoint.token.clone(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&(dyn erased::Body + Sync)>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, CallError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body.to_value());
        }
        if let Some(timeout) = timeout {
            req = req.timeout(timeout);
        }
        let resp = req.send().await.map_err(|source| CallError::Transport {
            url: url.clone(),
            source,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| {
                if text.trim().is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    text.trim().to_owned()
                }
            });
        Err(CallError::Status {
            status: status.as_u16(),
            message,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(dyn erased::Body + Sync)>,
    ) -> Result<T, CallError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(method, path, body, Some(CALL_TIMEOUT)).await?;
        let bytes = resp.bytes().await.map_err(|source| CallError::Transport {
            url: url.clone(),
            source,
        })?;
        // Bodiless answers (204) decode as `null`.
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|source| CallError::Decode { url, source })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call(Method::GET, path, None).await
    }

    async fn post<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        self.call(Method::POST, path, Some(body)).await
    }

    // --- apps ---

    pub async fn list_apps(&self) -> Result<ListAppsResponse, CallError> {
        self.get("/v1/apps").await
    }

    /// The app, or `None` if it does not exist (in this token's org).
    pub async fn get_app(&self, app: &str) -> Result<Option<App>, CallError> {
        match self.get(&format!("/v1/apps/{app}")).await {
            Ok(app) => Ok(Some(app)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND.as_u16()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn create_app(&self, req: &CreateAppRequest) -> Result<serde_json::Value, CallError> {
        self.post("/v1/apps", req).await
    }

    pub async fn delete_app(&self, app: &str, force: bool) -> Result<serde_json::Value, CallError> {
        self.call(
            Method::DELETE,
            &format!("/v1/apps/{app}?force={force}"),
            None,
        )
        .await
    }

    // --- machines ---

    pub async fn list_machines(&self, app: &str) -> Result<Vec<Machine>, CallError> {
        let mut machines: Vec<Machine> = self.get(&format!("/v1/apps/{app}/machines")).await?;
        machines.retain(|m| m.state != godwit_types::MachineState::Destroyed);
        machines.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(machines)
    }

    pub async fn get_machine(&self, app: &str, id: &str) -> Result<Machine, CallError> {
        self.get(&format!("/v1/apps/{app}/machines/{id}")).await
    }

    pub async fn create_machine(
        &self,
        app: &str,
        req: &CreateMachineRequest,
    ) -> Result<Machine, CallError> {
        self.post(&format!("/v1/apps/{app}/machines"), req).await
    }

    pub async fn update_machine(
        &self,
        app: &str,
        id: &str,
        req: &UpdateMachineRequest,
    ) -> Result<Machine, CallError> {
        self.post(&format!("/v1/apps/{app}/machines/{id}"), req)
            .await
    }

    /// `action` is `start`, `stop` or `restart`; the answer is passed through.
    pub async fn machine_action(
        &self,
        app: &str,
        id: &str,
        action: &str,
        stop: Option<&StopRequest>,
    ) -> Result<serde_json::Value, CallError> {
        let path = format!("/v1/apps/{app}/machines/{id}/{action}");
        match stop {
            Some(body) => self.post(&path, body).await,
            None => self.call(Method::POST, &path, None).await,
        }
    }

    pub async fn destroy_machine(
        &self,
        app: &str,
        id: &str,
        force: bool,
    ) -> Result<serde_json::Value, CallError> {
        let path = format!("/v1/apps/{app}/machines/{id}?force={force}");
        self.call(Method::DELETE, &path, None).await
    }

    /// Waits up to `timeout_secs` for `state`: `true` when reached, `false` on the API's 408.
    pub async fn wait_state(
        &self,
        app: &str,
        id: &str,
        state: &str,
        timeout_secs: u64,
    ) -> Result<bool, CallError> {
        let path =
            format!("/v1/apps/{app}/machines/{id}/wait?state={state}&timeout={timeout_secs}");
        let timeout = Duration::from_secs(timeout_secs + 10);
        match self.send(Method::GET, &path, None, Some(timeout)).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(StatusCode::REQUEST_TIMEOUT.as_u16()) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn events(&self, app: &str, id: &str) -> Result<Vec<MachineEvent>, CallError> {
        self.get(&format!("/v1/apps/{app}/machines/{id}/events"))
            .await
    }

    pub async fn exec(
        &self,
        app: &str,
        id: &str,
        req: &ExecRequest,
    ) -> Result<ExecResponse, CallError> {
        self.post(&format!("/v1/apps/{app}/machines/{id}/exec"), req)
            .await
    }

    // --- secrets ---

    pub async fn list_secrets(&self, app: &str) -> Result<SecretsResponse, CallError> {
        self.get(&format!("/v1/apps/{app}/secrets")).await
    }

    pub async fn set_secrets(
        &self,
        app: &str,
        req: &SetSecretsRequest,
    ) -> Result<SecretsResponse, CallError> {
        self.post(&format!("/v1/apps/{app}/secrets"), req).await
    }

    pub async fn unset_secret(
        &self,
        app: &str,
        name: &str,
    ) -> Result<serde_json::Value, CallError> {
        self.call(
            Method::DELETE,
            &format!("/v1/apps/{app}/secrets/{name}"),
            None,
        )
        .await
    }

    // --- logs ---

    /// Streams log lines (NDJSON) of one machine or of the whole app to `on_line` until the
    /// API ends the stream. Lines that are not `LogLine` JSON are skipped.
    pub async fn logs(
        &self,
        app: &str,
        machine: Option<&str>,
        follow: bool,
        tail: Option<u32>,
        mut on_line: impl FnMut(LogLine),
    ) -> Result<(), CallError> {
        let base = match machine {
            Some(id) => format!("/v1/apps/{app}/machines/{id}/logs"),
            None => format!("/v1/apps/{app}/logs"),
        };
        let mut path = format!("{base}?follow={follow}");
        if let Some(tail) = tail {
            path.push_str(&format!("&tail={tail}"));
        }
        let timeout = (!follow).then_some(CALL_TIMEOUT);
        let resp = self.send(Method::GET, &path, None, timeout).await?;
        let url = format!("{}{path}", self.base);
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut emit = |line: &[u8]| {
            if let Ok(parsed) = serde_json::from_slice::<LogLine>(line) {
                on_line(parsed);
            }
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| CallError::Transport {
                url: url.clone(),
                source,
            })?;
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                emit(&line[..line.len() - 1]);
            }
        }
        if !buf.is_empty() {
            emit(&buf);
        }
        Ok(())
    }
}

/// Lets `send` take any serializable body without being generic.
mod erased {
    pub(super) trait Body {
        fn to_value(&self) -> serde_json::Value;
    }

    impl<T: serde::Serialize> Body for T {
        fn to_value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}
