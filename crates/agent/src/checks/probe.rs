//! One probe of one check: a TCP connect or an HTTP request over the machine's private address.

use std::net::SocketAddr;
use std::time::Duration;

/// A check, resolved against its machine.
#[derive(Debug, Clone)]
pub(super) struct Probe {
    pub(super) name: String,
    pub(super) kind: ProbeKind,
    pub(super) addr: SocketAddr,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
    pub(super) grace: Duration,
}

#[derive(Debug, Clone)]
pub(super) enum ProbeKind {
    /// Passes when a connection opens.
    Tcp,
    /// Passes on a 2xx answer; redirects are not followed.
    Http {
        method: reqwest::Method,
        path: String,
    },
    /// A check that cannot run; it is always critical with this output.
    Invalid(String),
}

/// The client of HTTP checks: no redirects, no proxy, a fresh connection per probe.
pub(super) fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
}

// === impl Probe ===

impl Probe {
    /// Runs the probe once: `Ok(output)` if it passed, `Err(output)` if not.
    pub(super) async fn run(&self, http: Option<&reqwest::Client>) -> Result<String, String> {
        match &self.kind {
            ProbeKind::Tcp => self.tcp().await,
            ProbeKind::Http { method, path } => match http {
                Some(http) => self.http(http, method, path).await,
                None => Err("no http client".to_owned()),
            },
            ProbeKind::Invalid(why) => Err(why.clone()),
        }
    }

    async fn tcp(&self) -> Result<String, String> {
        match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(self.addr)).await {
            Ok(Ok(_stream)) => Ok(format!("connected to {}", self.addr)),
            Ok(Err(error)) => Err(format!("failed to connect to {}: {error}", self.addr)),
            Err(_) => Err(format!(
                "timed out after {:?} connecting to {}",
                self.timeout, self.addr
            )),
        }
    }

    async fn http(
        &self,
        http: &reqwest::Client,
        method: &reqwest::Method,
        path: &str,
    ) -> Result<String, String> {
        let slash = if path.starts_with('/') { "" } else { "/" };
        let url = format!("http://{}{slash}{path}", self.addr);
        let response = http
            .request(method.clone(), &url)
            .timeout(self.timeout)
            .send()
            .await;
        match response {
            Ok(response) => {
                let status = response.status();
                let text = format!("{method} {url}: HTTP {status}");
                if status.is_success() {
                    Ok(text)
                } else {
                    Err(text)
                }
            }
            Err(error) if error.is_timeout() => Err(format!(
                "{method} {url}: timed out after {:?}",
                self.timeout
            )),
            Err(error) => Err(format!(
                "{method} {url}: {}",
                crate::ops::error_chain(&error)
            )),
        }
    }
}
