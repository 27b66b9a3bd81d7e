//! The agent token and registration with the API.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use godwit_types::api::RegisterHostRequest;
use tracing::{info, warn};

use crate::RunError;
use crate::agent::Agent;

const TOKEN_FILE: &str = "agent.token";
const RETRY: Duration = Duration::from_secs(1);

/// Reads `<data_dir>/agent.token`, creating it (mode 0600) with a random token at first start.
pub(crate) fn load_or_create_token(data_dir: &Path) -> Result<String, RunError> {
    let path = data_dir.join(TOKEN_FILE);
    let err = |source| RunError::Token {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let token = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let tmp = data_dir.join(format!("{TOKEN_FILE}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(token.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(token)
}

/// Registers with the API, retrying until it answers with success or the agent stops.
pub(crate) async fn run(agent: Arc<Agent>) {
    let cancel = agent.cancel.clone();
    tokio::select! {
        () = cancel.cancelled() => {}
        () = register_until_done(&agent) => {}
    }
}

async fn register_until_done(agent: &Agent) {
    let client = reqwest::Client::new();
    let url = format!(
        "{}/v1/hosts/register",
        agent.cfg.api_url.trim_end_matches('/')
    );
    let body = RegisterHostRequest {
        join_token: agent.cfg.join_token.clone(),
        host_id: agent.cfg.host_id.clone(),
        region: agent.cfg.region.clone(),
        agent_url: agent.cfg.advertise_url.clone(),
        agent_token: agent.token.clone(),
        cpus: agent.cfg.cpus,
        memory_mb: agent.cfg.memory_mb,
    };
    loop {
        match client
            .post(&url)
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => {
                info!(api = %agent.cfg.api_url, "registered with the api");
                return;
            }
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                warn!(%status, body = %text, "api refused registration; will retry");
            }
            Err(error) => warn!(%error, "failed to reach the api to register; will retry"),
        }
        tokio::time::sleep(RETRY).await;
    }
}
