//! `/v1/hosts`: agents register with the join token; admins list hosts.

use axum::Json;
use axum::extract::State;
use godwit_types::api::{ErrorBody, RegisterHostRequest, RegisterHostResponse};
use serde::{Deserialize, Serialize};

use crate::agent::host_aad;
use crate::auth::Auth;
use crate::crypto;
use crate::db::{HostRow, TokenKind, now_ms};
use crate::error::ApiError;
use crate::routes::ApiJson;
use crate::server::AppState;

/// A registered host and what its agent last published about its capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostInfo {
    pub host_id: String,
    pub region: String,
    pub agent_url: String,
    pub cpus_total: u32,
    pub memory_mb_total: u64,
    pub cpus_reserved: u32,
    pub memory_mb_reserved: u64,
    pub schedulable: bool,
    /// `ok` when the agent has published its record, `unknown` before it does.
    pub status: String,
    /// Unix milliseconds.
    pub registered_at: u64,
}

/// Registers (or re-registers) a host. Authenticated by `join_token` in the body, which
/// allows nothing else.
#[utoipa::path(post, path = "/v1/hosts/register", tag = "hosts",
    request_body = RegisterHostRequest,
    responses((status = 200, body = RegisterHostResponse), (status = 401, body = ErrorBody)))]
pub(crate) async fn register_host(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterHostRequest>,
) -> Result<Json<RegisterHostResponse>, ApiError> {
    let token = state
        .db
        .find_token(&crypto::token_hash(&req.join_token))?
        .filter(|t| t.kind == TokenKind::Join)
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "invalid join token: use the join token `godwit api init` printed".into(),
            )
        })?;
    if !godwit_state::is_valid_key(&req.host_id) || req.host_id.contains('.') {
        return Err(ApiError::Unprocessable(format!(
            "host id {:?} is invalid: use letters, digits, '-' and '_'",
            req.host_id
        )));
    }
    if req.region.is_empty()
        || !req
            .region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(ApiError::Unprocessable(format!(
            "region {:?} is invalid: use lowercase letters and digits, like \"ams\"",
            req.region
        )));
    }
    if !(req.agent_url.starts_with("http://") || req.agent_url.starts_with("https://")) {
        return Err(ApiError::Unprocessable(format!(
            "agent_url {:?} is invalid: give the agent's base url, like http://10.0.0.2:4280",
            req.agent_url
        )));
    }
    if req.agent_token.is_empty() {
        return Err(ApiError::Unprocessable("agent_token is empty".into()));
    }
    let (token_nonce, token_ciphertext) = state
        .key
        .seal(&host_aad(&req.host_id), req.agent_token.as_bytes());
    state.db.upsert_host(&HostRow {
        host_id: req.host_id.clone(),
        region: req.region.clone(),
        agent_url: req.agent_url.clone(),
        token_nonce,
        token_ciphertext,
        cpus: req.cpus,
        memory_mb: req.memory_mb,
        registered_at: now_ms(),
    })?;
    tracing::info!(host_id = %req.host_id, region = %req.region, agent_url = %req.agent_url,
        join_token = %token.prefix, "host registered");
    Ok(Json(RegisterHostResponse {
        host_id: req.host_id,
    }))
}

/// Every registered host with its published capacity.
#[utoipa::path(get, path = "/v1/hosts", tag = "hosts",
    responses((status = 200, body = Vec<HostInfo>)))]
pub(crate) async fn list_hosts(
    State(state): State<AppState>,
    _auth: Auth,
) -> Result<Json<Vec<HostInfo>>, ApiError> {
    let mut records: std::collections::HashMap<String, godwit_types::HostRecord> = state
        .hosts
        .snapshot()
        .into_iter()
        .map(|(_, r)| (r.host_id.clone(), r))
        .collect();
    let hosts = state
        .db
        .hosts()?
        .into_iter()
        .map(|row| match records.remove(&row.host_id) {
            Some(r) => HostInfo {
                host_id: row.host_id,
                region: r.region,
                agent_url: row.agent_url,
                cpus_total: r.cpus_total,
                memory_mb_total: r.memory_mb_total,
                cpus_reserved: r.cpus_reserved,
                memory_mb_reserved: r.memory_mb_reserved,
                schedulable: r.schedulable,
                status: "ok".into(),
                registered_at: row.registered_at,
            },
            None => HostInfo {
                host_id: row.host_id,
                region: row.region,
                agent_url: row.agent_url,
                cpus_total: row.cpus,
                memory_mb_total: row.memory_mb,
                cpus_reserved: 0,
                memory_mb_reserved: 0,
                schedulable: false,
                status: "unknown".into(),
                registered_at: row.registered_at,
            },
        })
        .collect();
    Ok(Json(hosts))
}
