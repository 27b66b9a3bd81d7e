//! Where the CLI finds the API: flags / environment, else the dev cluster's env file.

use std::path::{Path, PathBuf};

/// The API's address and the bearer token to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub api_url: String,
    pub token: String,
}

/// Why the API's address or token could not be found.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "no API to talk to: pass --api-url and --token, set GODWIT_API_URL and GODWIT_API_TOKEN, or start a dev cluster with `godwit dev up` (looked for {})",
        env_file.display()
    )]
    Missing { env_file: PathBuf },
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

#[derive(Debug, serde::Deserialize)]
struct EnvFile {
    api_url: String,
    token: String,
}

/// `$GODWIT_HOME`, else `$HOME/.godwit`.
pub fn data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("GODWIT_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".godwit")
}

// === impl Endpoint ===

impl Endpoint {
    /// Flags (which clap already filled from `GODWIT_API_URL` / `GODWIT_API_TOKEN`) win; else
    /// the dev cluster's `<data dir>/dev/env.json`.
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
        let env_file = data_dir.join("dev").join("env.json");
        let bytes = match std::fs::read(&env_file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(EndpointError::Missing { env_file });
            }
            Err(source) => {
                return Err(EndpointError::Read {
                    path: env_file,
                    source,
                });
            }
        };
        let file: EnvFile =
            serde_json::from_slice(&bytes).map_err(|source| EndpointError::Parse {
                path: env_file,
                source,
            })?;
        Ok(Self {
            api_url: api_url.unwrap_or(file.api_url),
            token: token.unwrap_or(file.token),
        })
    }
}
