//! The few calls of the public REST API the benchmark makes, and where it finds the API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use godwit_types::Machine;
use godwit_types::api::{CreateAppRequest, CreateMachineRequest, ErrorBody};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The API's address and the bearer token to send.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub api_url: String,
    pub token: String,
}

/// Why the API could not be found.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "no API to talk to: pass --api-url and --token (GODWIT_API_URL, GODWIT_API_TOKEN) or start a dev cluster with `godwit dev up` (looked for {})",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid: expected {{\"api_url\": ..., \"token\": ...}}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{method} {path}: {message} (HTTP {status})")]
    Status {
        method: Method,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{method} {path}: cannot reach the API")]
    Transport {
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {path}: unexpected response body")]
    Decode {
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A client of one API endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

#[derive(Debug, serde::Deserialize)]
struct EnvFile {
    api_url: String,
    token: String,
}

// === impl Endpoint ===

impl Endpoint {
    /// The given URL and token if both are set, else `<data_dir>/dev/env.json` (written by
    /// `godwit dev up`) completes them.
    pub fn resolve(
        api_url: Option<String>,
        token: Option<String>,
        data_dir: &Path,
    ) -> Result<Self, EndpointError> {
        if let (Some(api_url), Some(token)) = (&api_url, &token) {
            return Ok(Self {
                api_url: api_url.clone(),
                token: token.clone(),
            });
        }
        let path = data_dir.join("dev").join("env.json");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(EndpointError::Missing { path });
            }
            Err(source) => return Err(EndpointError::Read { path, source }),
        };
        let file: EnvFile = serde_json::from_slice(&bytes)
            .map_err(|source| EndpointError::Parse { path, source })?;
        Ok(Self {
            api_url: api_url.unwrap_or(file.api_url),
            token: token.unwrap_or(file.token),
        })
    }
}

// === impl CallError ===

impl CallError {
    fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

// === impl Api ===

impl Api {
    pub(crate) fn new(endpoint: &Endpoint) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: endpoint.api_url.trim_end_matches('/').to_owned(),
            token: endpoint.token.clone(),
        }
    }

    /// Creates the app unless it exists.
    pub(crate) async fn ensure_app(&self, app: &str) -> Result<(), CallError> {
        match self
            .call::<serde_json::Value>(Method::GET, &format!("/v1/apps/{app}"), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND.as_u16()) => {
                let req = CreateAppRequest {
                    app_name: app.to_owned(),
                    org_slug: None,
                    network: None,
                };
                let body = serde_json::to_value(&req).unwrap_or_default();
                self.call::<serde_json::Value>(Method::POST, "/v1/apps", Some(body))
                    .await
                    .map(drop)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the app (best effort is the caller's choice).
    pub(crate) async fn delete_app(&self, app: &str) -> Result<(), CallError> {
        let path = format!("/v1/apps/{app}?force=true");
        self.call::<serde_json::Value>(Method::DELETE, &path, None)
            .await
            .map(drop)
    }

    pub(crate) async fn create_machine(
        &self,
        app: &str,
        req: &CreateMachineRequest,
    ) -> Result<Machine, CallError> {
        let body = serde_json::to_value(req).unwrap_or_default();
        self.call(
            Method::POST,
            &format!("/v1/apps/{app}/machines"),
            Some(body),
        )
        .await
    }

    /// Ids of the app's machines that are not destroyed.
    pub(crate) async fn machine_ids(&self, app: &str) -> Result<Vec<String>, CallError> {
        let machines: Vec<Machine> = self
            .call(Method::GET, &format!("/v1/apps/{app}/machines"), None)
            .await?;
        Ok(machines
            .into_iter()
            .filter(|m| m.state != godwit_types::MachineState::Destroyed)
            .map(|m| m.id)
            .collect())
    }

    /// Force-destroys a machine; one that is already gone counts as destroyed.
    pub(crate) async fn destroy_machine(&self, app: &str, id: &str) -> Result<(), CallError> {
        let path = format!("/v1/apps/{app}/machines/{id}?force=true");
        match self
            .call::<serde_json::Value>(Method::DELETE, &path, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND.as_u16()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, CallError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = &body {
            req = req.json(body);
        }
        let transport = |source| CallError::Transport {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| text.trim().to_owned());
            return Err(CallError::Status {
                method,
                path: path.to_owned(),
                status: status.as_u16(),
                message,
            });
        }
        // Bodiless answers (204) decode as `null`.
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|source| CallError::Decode {
            method,
            path: path.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Endpoint::resolve(Some("http://a".into()), Some("t".into()), dir.path())
            .expect("flags suffice");
        assert_eq!(
            (endpoint.api_url.as_str(), endpoint.token.as_str()),
            ("http://a", "t")
        );
        let err = Endpoint::resolve(None, None, dir.path()).unwrap_err();
        assert!(matches!(err, EndpointError::Missing { .. }), "{err}");

        std::fs::create_dir(dir.path().join("dev")).unwrap();
        std::fs::write(
            dir.path().join("dev/env.json"),
            r#"{"api_url":"http://127.0.0.1:9","token":"tok","nats_url":"nats://x"}"#,
        )
        .unwrap();
        let endpoint = Endpoint::resolve(None, Some("mine".into()), dir.path()).unwrap();
        assert_eq!(endpoint.api_url, "http://127.0.0.1:9");
        assert_eq!(endpoint.token, "mine");
    }
}
