//! Starting and stopping machines on demand: the trait the proxy calls, and the
//! implementation that goes through the public API.

use std::fmt;
use std::time::Duration;

/// Starts and stops machines for autostart and autostop. Errors are messages for logs and
/// for the body of the 503 the user gets.
#[async_trait::async_trait]
pub trait Starter: Send + Sync + fmt::Debug {
    /// Asks for `machine_id` of `app` to start; returns once the request is accepted (the
    /// proxy then waits for the machine's port itself).
    async fn start(&self, app: &str, machine_id: &str) -> Result<(), String>;
    /// Asks for `machine_id` of `app` to stop (autostop).
    async fn stop(&self, app: &str, machine_id: &str) -> Result<(), String>;
    /// Asks for `machine_id` of `app` to be suspended (autostop `"suspend"`): frozen with its
    /// memory kept, resumed by the next `start`. Autostop stops the machine instead when this
    /// fails. The default does not suspend.
    async fn suspend(&self, app: &str, machine_id: &str) -> Result<(), String> {
        let _ = app;
        Err(format!(
            "suspend {machine_id}: this starter does not suspend machines"
        ))
    }
}

/// A [`Starter`] that calls the public API:
/// `POST {api_url}/v1/apps/{app}/machines/{id}/start` (and `/stop`, `/suspend`) with a bearer
/// token.
pub struct ApiStarter {
    api_url: String,
    token: String,
    http: reqwest::Client,
}

// === impl ApiStarter ===

impl ApiStarter {
    /// `api_url` is the API's base URL, e.g. `http://127.0.0.1:4280`.
    pub fn new(api_url: &str, token: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        ApiStarter {
            api_url: api_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
        }
    }

    async fn call(&self, app: &str, machine_id: &str, action: &str) -> Result<(), String> {
        let url = format!(
            "{}/v1/apps/{app}/machines/{machine_id}/{action}",
            self.api_url
        );
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("{action} {machine_id}: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(format!(
            "{action} {machine_id}: api answered {status}: {body}"
        ))
    }
}

#[async_trait::async_trait]
impl Starter for ApiStarter {
    async fn start(&self, app: &str, machine_id: &str) -> Result<(), String> {
        self.call(app, machine_id, "start").await
    }

    async fn stop(&self, app: &str, machine_id: &str) -> Result<(), String> {
        self.call(app, machine_id, "stop").await
    }

    async fn suspend(&self, app: &str, machine_id: &str) -> Result<(), String> {
        self.call(app, machine_id, "suspend").await
    }
}

impl fmt::Debug for ApiStarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiStarter")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}
