//! Wait, leases, cordon, exec, events and metadata.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use godwit_types::api::{ExecRequest, ExecResponse, Lease, LeaseData, LeaseRequest, MetadataValue};
use godwit_types::{MachineEvent, MachineState};
use serde::Deserialize;

use super::machines::new_lease;
use super::{ApiError, AppState, LEASE_HEADER, check_lease, must_find};

const MAX_WAIT: u64 = 60;
const DEFAULT_LEASE_TTL: u64 = 30;

#[derive(Debug, Deserialize)]
pub(crate) struct WaitQuery {
    state: Option<String>,
    timeout: Option<u64>,
    instance_id: Option<String>,
    version: Option<u64>,
}

pub(crate) async fn wait(
    State(agent): AppState,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let target: MachineState = query
        .state
        .as_deref()
        .unwrap_or("started")
        .parse()
        .map_err(ApiError::bad_request)?;
    let timeout = query.timeout.unwrap_or(MAX_WAIT);
    if timeout > MAX_WAIT {
        return Err(ApiError::bad_request(format!(
            "timeout={timeout} is too long: wait at most {MAX_WAIT} seconds per call"
        )));
    }
    if target == MachineState::Stopped && query.instance_id.is_none() && query.version.is_none() {
        return Err(ApiError::bad_request(
            "waiting for state=stopped needs instance_id (or version) of the run you expect to stop",
        ));
    }
    let Some(mut rx) = agent.watch(&id)? else {
        if target == MachineState::Destroyed {
            return Ok(Json(serde_json::json!({ "ok": true, "state": target })));
        }
        return Err(ApiError::not_found(format!("machine {id} not found")));
    };
    let reached = |s: &crate::agent::Snapshot| {
        s.state == target
            && query
                .instance_id
                .as_ref()
                .is_none_or(|i| *i == s.instance_id)
            && query.version.is_none_or(|v| v == s.version)
    };
    let result = tokio::time::timeout(Duration::from_secs(timeout), async {
        loop {
            if reached(&rx.borrow_and_update()) {
                return true;
            }
            if rx.changed().await.is_err() {
                // The sender is gone only once the machine is destroyed.
                return target == MachineState::Destroyed;
            }
        }
    })
    .await;
    match result {
        Ok(true) => Ok(Json(serde_json::json!({ "ok": true, "state": target }))),
        Ok(false) => Err(ApiError::precondition(format!(
            "machine {id} was destroyed before reaching {target}"
        ))),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("machine {id} did not reach state {target} within {timeout}s"),
        )),
    }
}

pub(crate) async fn lease_acquire(
    State(agent): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Option<Json<LeaseRequest>>,
) -> Result<Json<Lease>, ApiError> {
    let req = body.map(|Json(r)| r).unwrap_or_default();
    let _lease_guard = agent
        .lease_lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let row = must_find(&agent, &id)?;
    check_lease(&row, &headers)?;
    let ttl = req.ttl.unwrap_or(DEFAULT_LEASE_TTL);
    let description = req.description.unwrap_or_default();
    let live = row
        .lease
        .filter(|l| l.expires_at > godwit_types::now_ms() / 1000);
    let lease = match live {
        // check_lease passed, so the caller holds it: refresh.
        Some(mut lease) => {
            lease.expires_at = godwit_types::now_ms() / 1000 + ttl.max(1);
            lease.description = description;
            lease
        }
        None => new_lease(ttl, "api", &description),
    };
    agent.db.set_lease(&id, Some(&lease))?;
    Ok(Json(lease_body(&lease, row.version)))
}

pub(crate) async fn lease_get(
    State(agent): AppState,
    Path(id): Path<String>,
) -> Result<Json<Lease>, ApiError> {
    let row = must_find(&agent, &id)?;
    match row
        .lease
        .filter(|l| l.expires_at > godwit_types::now_ms() / 1000)
    {
        Some(lease) => Ok(Json(lease_body(&lease, row.version))),
        None => Err(ApiError::not_found(format!("machine {id} has no lease"))),
    }
}

pub(crate) async fn lease_release(
    State(agent): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let _lease_guard = agent
        .lease_lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let row = must_find(&agent, &id)?;
    if row.lease.is_some() && headers.get(LEASE_HEADER).is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("releasing the lease of machine {id} needs its nonce in {LEASE_HEADER}"),
        ));
    }
    check_lease(&row, &headers)?;
    agent.db.set_lease(&id, None)?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

fn lease_body(lease: &crate::db::LeaseRow, version: u64) -> Lease {
    Lease {
        status: "success".to_owned(),
        data: LeaseData {
            nonce: lease.nonce.clone(),
            expires_at: lease.expires_at,
            owner: lease.owner.clone(),
            description: lease.description.clone(),
            version: version.to_string(),
        },
    }
}

pub(crate) async fn cordon(
    state: AppState,
    path: Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_cordon(state, path, headers, true).await
}

pub(crate) async fn uncordon(
    state: AppState,
    path: Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_cordon(state, path, headers, false).await
}

async fn set_cordon(
    State(agent): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
    cordoned: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let row = must_find(&agent, &id)?;
    check_lease(&row, &headers)?;
    agent.db.set_cordoned(&id, cordoned)?;
    agent.changed(&id);
    Ok(Json(serde_json::json!({ "ok": true })))
}

pub(crate) async fn exec(
    State(agent): AppState,
    Path(id): Path<String>,
    Json(req): Json<ExecRequest>,
) -> Result<Json<ExecResponse>, ApiError> {
    let command = if req.command.is_empty() {
        req.cmd
            .as_deref()
            .map(|c| c.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    } else {
        req.command
    };
    if command.is_empty() {
        return Err(ApiError::bad_request(
            "exec needs a command: {\"command\": [\"ls\", \"-l\"]}",
        ));
    }
    let timeout = req.timeout.unwrap_or(30);
    if timeout == 0 || timeout > 300 {
        return Err(ApiError::bad_request(
            "exec timeout must be 1 to 300 seconds",
        ));
    }
    let row = must_find(&agent, &id)?;
    if row.state != MachineState::Started {
        return Err(ApiError::precondition(format!(
            "machine {id} is {}: start it before exec",
            row.state
        )));
    }
    let out = agent
        .runtime
        .exec(&id, &command, Duration::from_secs(timeout))
        .await?;
    Ok(Json(ExecResponse {
        exit_code: out.exit_code,
        stdout: out.stdout,
        stderr: out.stderr,
    }))
}

pub(crate) async fn events(
    State(agent): AppState,
    Path(id): Path<String>,
) -> Result<Json<Vec<MachineEvent>>, ApiError> {
    must_find(&agent, &id)?;
    Ok(Json(agent.db.events(&id, 1000)?))
}

pub(crate) async fn metadata_get(
    State(agent): AppState,
    Path(id): Path<String>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    Ok(Json(must_find(&agent, &id)?.metadata))
}

pub(crate) async fn metadata_set(
    State(agent): AppState,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
    Json(value): Json<MetadataValue>,
) -> Result<StatusCode, ApiError> {
    if key.is_empty() || key.len() > 128 {
        return Err(ApiError::bad_request(
            "metadata keys are 1 to 128 characters",
        ));
    }
    let guard = agent
        .lock_machine(&id, "metadata", crate::ops::LOCK_WAIT)
        .await
        .map_err(|b| ApiError::from((id.clone(), b)))?;
    let mut row = must_find(&agent, &id)?;
    check_lease(&row, &headers)?;
    row.metadata.insert(key, value.value);
    agent.db.set_metadata(&id, &row.metadata)?;
    drop(guard);
    agent.changed(&id);
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn metadata_delete(
    State(agent): AppState,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let guard = agent
        .lock_machine(&id, "metadata", crate::ops::LOCK_WAIT)
        .await
        .map_err(|b| ApiError::from((id.clone(), b)))?;
    let mut row = must_find(&agent, &id)?;
    check_lease(&row, &headers)?;
    row.metadata.remove(&key);
    agent.db.set_metadata(&id, &row.metadata)?;
    drop(guard);
    agent.changed(&id);
    Ok(StatusCode::NO_CONTENT)
}
