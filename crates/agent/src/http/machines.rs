//! Machine lifecycle handlers: create, list, get, update, start, stop, suspend, restart, signal,
//! destroy.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use godwit_types::api::{
    AgentCreateMachine, AgentUpdateMachine, SignalRequest, StateChangeResponse, StopRequest,
};
use godwit_types::{Machine, MachineId, MachineState};
use serde::Deserialize;

use super::{ApiError, AppState, check_lease, must_find, to_machine};
use crate::db::LeaseRow;
use crate::ops::{
    self, CreatePayload, LOCK_WAIT, OpKind, StartPayload, StopPayload, UpdatePayload,
};

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    app: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DestroyQuery {
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RestartQuery {
    signal: Option<String>,
    timeout: Option<String>,
}

pub(crate) async fn create(
    State(agent): AppState,
    Json(req): Json<AgentCreateMachine>,
) -> Result<(StatusCode, Json<Machine>), ApiError> {
    let id = req.machine_id.clone();
    id.parse::<MachineId>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    req.config.validate().map_err(ApiError::bad_request)?;
    let guard = agent
        .lock_machine(&id, "create", LOCK_WAIT)
        .await
        .map_err(|b| ApiError::from((id.clone(), b)))?;
    if agent.db.get_machine(&id)?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("machine {id} already exists on this host"),
        ));
    }
    let lease = req.lease_ttl.map(|ttl| new_lease(ttl, "", ""));
    let payload = CreatePayload {
        request: req,
        instance_id: ops::new_instance_id(),
        lease,
    };
    let payload = serde_json::to_value(&payload).map_err(|e| ApiError::internal(&e))?;
    ops::execute(&agent, guard, &id, OpKind::Create, payload).await?;
    let row = must_find(&agent, &id)?;
    Ok((StatusCode::CREATED, Json(to_machine(&agent, row)?)))
}

pub(crate) async fn list(
    State(agent): AppState,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<Machine>>, ApiError> {
    let rows = agent.db.list_machines(query.app.as_deref())?;
    let machines = rows
        .into_iter()
        .map(|row| to_machine(&agent, row))
        .collect::<Result<_, _>>()?;
    Ok(Json(machines))
}

pub(crate) async fn get_one(
    State(agent): AppState,
    Path(id): Path<String>,
) -> Result<Json<Machine>, ApiError> {
    let row = must_find(&agent, &id)?;
    Ok(Json(to_machine(&agent, row)?))
}

pub(crate) async fn update(
    State(agent): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<AgentUpdateMachine>,
) -> Result<Json<Machine>, ApiError> {
    req.config.validate().map_err(ApiError::bad_request)?;
    let guard = agent
        .lock_machine(&id, "update", LOCK_WAIT)
        .await
        .map_err(|b| ApiError::from((id.clone(), b)))?;
    let row = must_find(&agent, &id)?;
    check_lease(&row, &headers)?;
    if let Some(current) = &req.current_version
        && *current != row.version.to_string()
        && *current != row.instance_id
    {
        return Err(ApiError::precondition(format!(
            "machine {id} is at version {} (instance {}), not {current}: fetch it and retry",
            row.version, row.instance_id
        )));
    }
    refuse_destroying(&row)?;
    let payload = UpdatePayload {
        config: req.config,
        secrets: req.secrets,
        skip_launch: req.skip_launch,
        version: row.version + 1,
        instance_id: ops::new_instance_id(),
        was_started: row.state == MachineState::Started,
        image: None,
    };
    let payload = serde_json::to_value(&payload).map_err(|e| ApiError::internal(&e))?;
    ops::execute(&agent, guard, &id, OpKind::Update, payload).await?;
    Ok(Json(to_machine(&agent, must_find(&agent, &id)?)?))
}

pub(crate) async fn start(
    State(agent): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<StateChangeResponse>, ApiError> {
    let (guard, row) = lock_for_change(&agent, &id, "start", &headers).await?;
    let previous_state = row.state;
    if previous_state != MachineState::Started {
        let payload = StartPayload {
            resume: previous_state == MachineState::Suspended,
        };
        let payload = serde_json::to_value(&payload).map_err(|e| ApiError::internal(&e))?;
        ops::execute(&agent, guard, &id, OpKind::Start, payload).await?;
    }
    Ok(Json(StateChangeResponse {
        ok: true,
        previous_state,
    }))
}

/// Freezes a started machine (cgroup freezer); `start` resumes it. Ok on a suspended one.
pub(crate) async fn suspend(
    State(agent): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<StateChangeResponse>, ApiError> {
    let (guard, row) = lock_for_change(&agent, &id, "suspend", &headers).await?;
    let previous_state = row.state;
    match previous_state {
        MachineState::Suspended => {}
        MachineState::Started => {
            ops::execute(&agent, guard, &id, OpKind::Suspend, serde_json::json!({})).await?;
        }
        state => {
            return Err(ApiError::precondition(format!(
                "machine {id} is {state}: only a started machine can be suspended"
            )));
        }
    }
    Ok(Json(StateChangeResponse {
        ok: true,
        previous_state,
    }))
}

pub(crate) async fn stop(
    State(agent): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<StateChangeResponse>, ApiError> {
    let req: StopRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StopRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid stop request: {e}")))?
    };
    let signal = req
        .signal
        .as_deref()
        .map(godwit_types::signal::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let timeout = req.timeout.map(|d| d.0);
    stop_machine(&agent, &id, &headers, signal, timeout)
        .await
        .map(Json)
}

pub(crate) async fn restart(
    State(agent): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<RestartQuery>,
) -> Result<Json<StateChangeResponse>, ApiError> {
    let signal = query
        .signal
        .as_deref()
        .map(godwit_types::signal::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let timeout = query
        .timeout
        .as_deref()
        .map(str::parse::<godwit_types::duration::Duration>)
        .transpose()
        .map_err(ApiError::bad_request)?
        .map(|d| d.0);
    let stopped = stop_machine(&agent, &id, &headers, signal, timeout).await?;
    let guard = agent
        .lock_machine(&id, "start", LOCK_WAIT)
        .await
        .map_err(|b| ApiError::from((id.clone(), b)))?;
    let row = must_find(&agent, &id)?;
    refuse_destroying(&row)?;
    if row.state != MachineState::Started {
        ops::execute(&agent, guard, &id, OpKind::Start, serde_json::json!({})).await?;
    }
    Ok(Json(stopped))
}

async fn stop_machine(
    agent: &std::sync::Arc<crate::agent::Agent>,
    id: &str,
    headers: &HeaderMap,
    signal: Option<i32>,
    timeout: Option<Duration>,
) -> Result<StateChangeResponse, ApiError> {
    let (guard, row) = lock_for_change(agent, id, "stop", headers).await?;
    let previous_state = row.state;
    if matches!(
        previous_state,
        MachineState::Started | MachineState::Suspended
    ) {
        let (default_signal, default_timeout) = row.config.stop_signal_and_timeout();
        let payload = StopPayload {
            signal: signal.unwrap_or(default_signal),
            timeout_ms: u64::try_from(timeout.unwrap_or(default_timeout).as_millis())
                .unwrap_or(u64::MAX),
        };
        let payload = serde_json::to_value(&payload).map_err(|e| ApiError::internal(&e))?;
        ops::execute(agent, guard, id, OpKind::Stop, payload).await?;
    }
    Ok(StateChangeResponse {
        ok: true,
        previous_state,
    })
}

pub(crate) async fn signal(
    State(agent): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<SignalRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let signal = godwit_types::signal::parse(&req.signal).map_err(ApiError::bad_request)?;
    let row = must_find(&agent, &id)?;
    check_lease(&row, &headers)?;
    if row.state != MachineState::Started {
        return Err(ApiError::precondition(format!(
            "machine {id} is {}: only a started machine can be signalled",
            row.state
        )));
    }
    agent.runtime.signal(&id, signal).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

pub(crate) async fn destroy(
    State(agent): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<DestroyQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let guard = agent
        .lock_machine(&id, "destroy", LOCK_WAIT)
        .await
        .map_err(|b| ApiError::from((id.clone(), b)))?;
    let row = must_find(&agent, &id)?;
    check_lease(&row, &headers)?;
    if row.state == MachineState::Started && !query.force {
        return Err(ApiError::precondition(format!(
            "machine {id} is started: stop it first or use force=true"
        )));
    }
    ops::execute(&agent, guard, &id, OpKind::Destroy, serde_json::json!({})).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// The prologue of every state change: lock the machine for `op`, find it, check the caller's
/// lease and that it is not being destroyed.
async fn lock_for_change(
    agent: &std::sync::Arc<crate::agent::Agent>,
    id: &str,
    op: &'static str,
    headers: &HeaderMap,
) -> Result<(crate::agent::MachineGuard, crate::db::MachineRow), ApiError> {
    let guard = agent
        .lock_machine(id, op, LOCK_WAIT)
        .await
        .map_err(|b| ApiError::from((id.to_owned(), b)))?;
    let row = must_find(agent, id)?;
    check_lease(&row, headers)?;
    refuse_destroying(&row)?;
    Ok((guard, row))
}

fn refuse_destroying(row: &crate::db::MachineRow) -> Result<(), ApiError> {
    if matches!(
        row.state,
        MachineState::Destroying | MachineState::Destroyed
    ) {
        return Err(ApiError::precondition(format!(
            "machine {} is being destroyed",
            row.id
        )));
    }
    Ok(())
}

/// A fresh lease of `ttl` seconds.
pub(crate) fn new_lease(ttl: u64, owner: &str, description: &str) -> LeaseRow {
    LeaseRow {
        nonce: format!("{:016x}", rand::random::<u64>()),
        owner: owner.to_owned(),
        description: description.to_owned(),
        expires_at: godwit_types::now_ms() / 1000 + ttl.max(1),
    }
}
