//! Machine create (placement + routing row), list (fan-out to agents), get, update, destroy.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use futures::future::join_all;
use godwit_sched::{ClusterView, HostView, PlacementRequest};
use godwit_types::api::{
    AgentCreateMachine, AgentUpdateMachine, CreateMachineRequest, ErrorBody, UpdateMachineRequest,
};
use godwit_types::{Machine, MachineConfig, MachineId, MachineState};
use serde::Deserialize;

use crate::agent::AgentCall;
use crate::auth::Auth;
use crate::db::MachineRow;
use crate::error::ApiError;
use crate::routes::{ApiJson, ApiPath, ApiQuery, machine_path};
use crate::server::AppState;

/// Deadline of a create or update: the agent may pull an image first.
const CREATE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ListMachinesQuery {
    /// Only machines in this region.
    region: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct DestroyQuery {
    /// Destroy even a started machine (it is killed).
    #[serde(default)]
    #[allow(dead_code, reason = "validated here, forwarded raw to the agent")]
    force: Option<bool>,
}

/// Places a machine on a host with room in the asked region (or the fallback list
/// `syd,sin`), then asks that host's agent to create it with the app's secrets.
#[utoipa::path(post, path = "/v1/apps/{app}/machines", tag = "machines",
    params(("app" = String, Path)), request_body = CreateMachineRequest,
    responses((status = 201, body = Machine),
              (status = 422, body = ErrorBody, description = "invalid config, or no host fits"),
              (status = 503, body = ErrorBody, description = "the chosen host is unreachable")))]
pub(crate) async fn create_machine(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(app): ApiPath<String>,
    ApiJson(req): ApiJson<CreateMachineRequest>,
) -> Result<Response, ApiError> {
    let app_row = state.app(&auth, &app)?;
    req.config
        .validate()
        .map_err(|e| ApiError::Unprocessable(format!("invalid machine config: {e}")))?;
    let regions = regions_of(req.region.as_deref(), &state.default_region);
    let view = cluster_view(&state, app_row.id, &app)?;
    let placement = godwit_sched::place(
        &view,
        &PlacementRequest {
            app: app.clone(),
            regions,
            cpus: req.config.guest.cpus,
            memory_mb: req.config.guest.memory_mb,
            count: 1,
        },
    )
    .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let slot = placement
        .slots
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("placement of one machine returned no slot"))?;
    let target = state.agents.target(&slot.host_id)?;
    let machine_id = MachineId::generate();
    let name = req
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| format!("{app}-{}", &machine_id.as_str()[..6]));
    let row = MachineRow {
        id: machine_id.to_string(),
        app_id: app_row.id,
        name: name.clone(),
        host_id: slot.host_id.clone(),
        region: slot.region.clone(),
    };
    let span = tracing::info_span!("create_machine", app = %app, machine_id = %row.id,
        host_id = %row.host_id, region = %row.region);
    let body = AgentCreateMachine {
        machine_id: row.id.clone(),
        app: app.clone(),
        org: auth.org_slug.clone(),
        name,
        region: slot.region,
        config: req.config,
        secrets: state.decrypted_secrets(&app_row)?,
        skip_launch: req.skip_launch,
        lease_ttl: req.lease_ttl,
    };
    state.db.insert_machine(&row)?;
    let call = AgentCall::new(Method::POST, "/v1/machines".into())
        .json(&body)?
        .timeout(Some(CREATE_TIMEOUT));
    let result = match state.agents.send(&target, call).await {
        Ok(response) if response.status().is_success() => {
            crate::agent::passthrough(&target, response, &state.cancel).await
        }
        Ok(response) => {
            // The agent refused: no machine, so no route.
            let passed = crate::agent::passthrough(&target, response, &state.cancel).await;
            state.db.delete_machine(&row.id)?;
            return passed;
        }
        Err(e) => Err(e),
    };
    match &result {
        Ok(_) => span.in_scope(|| tracing::info!("machine created")),
        Err(error) => {
            state.db.delete_machine(&row.id)?;
            span.in_scope(|| tracing::warn!(%error, "machine create failed"));
        }
    }
    result
}

/// Lists the app's machines, asking every agent that hosts one; machines of an unreachable
/// host come from the state replica with `host_status: "unreachable"`.
#[utoipa::path(get, path = "/v1/apps/{app}/machines", tag = "machines",
    params(("app" = String, Path), ListMachinesQuery),
    responses((status = 200, body = Vec<Machine>)))]
pub(crate) async fn list_machines(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(app): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListMachinesQuery>,
) -> Result<Json<Vec<Machine>>, ApiError> {
    let app_row = state.app(&auth, &app)?;
    let routed = state.db.machines(app_row.id)?;
    let host_ids: BTreeSet<String> = routed.iter().map(|m| m.host_id.clone()).collect();
    let calls = host_ids.into_iter().map(|host_id| {
        let state = state.clone();
        let app = app.clone();
        async move {
            let target = state.agents.target(&host_id)?;
            let call = AgentCall::new(Method::GET, format!("/v1/machines?app={app}"));
            let fetched = match state.agents.send(&target, call).await {
                Ok(response) if response.status().is_success() => {
                    response.json::<Vec<Machine>>().await.ok()
                }
                Ok(response) if response.status().is_server_error() => None,
                Ok(response) => {
                    return Err(ApiError::AgentFailed {
                        host_id: host_id.clone(),
                        status: response.status().as_u16(),
                        message: response.text().await.unwrap_or_default(),
                    });
                }
                Err(_) => None,
            };
            Ok::<_, ApiError>(fetched.unwrap_or_else(|| {
                tracing::warn!(host_id = %host_id, app = %app, "agent unreachable, listing from replica");
                from_replica(&state, &app, &host_id)
            }))
        }
    });
    let mut machines = Vec::new();
    for result in join_all(calls).await {
        machines.extend(result?);
    }
    if let Some(region) = &query.region {
        machines.retain(|m| &m.region == region);
    }
    machines.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(machines))
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}", tag = "machines",
    params(("app" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Machine), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_machine(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, machine) = state.routed(&auth, &app, &id)?;
    let call = AgentCall::new(Method::GET, machine_path(&id, "", None)).headers(&headers);
    state.forward_machine(&machine, call).await
}

/// Replaces the machine's whole config (a new version); secrets are resolved again.
#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}", tag = "machines",
    params(("app" = String, Path), ("id" = String, Path)), request_body = UpdateMachineRequest,
    responses((status = 200, body = Machine), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub(crate) async fn update_machine(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<UpdateMachineRequest>,
) -> Result<Response, ApiError> {
    let (app_row, machine) = state.routed(&auth, &app, &id)?;
    req.config
        .validate()
        .map_err(|e| ApiError::Unprocessable(format!("invalid machine config: {e}")))?;
    if let Some(region) = req.region.as_deref().filter(|r| *r != machine.region) {
        return Err(ApiError::Unprocessable(format!(
            "machine {id} is in region {} and cannot move to {region}: create a new machine",
            machine.region
        )));
    }
    if let Some(name) = req.name.as_deref().filter(|n| *n != machine.name) {
        return Err(ApiError::Unprocessable(format!(
            "machine {id} is named {} and cannot be renamed to {name}",
            machine.name
        )));
    }
    let body = AgentUpdateMachine {
        config: req.config,
        secrets: state.decrypted_secrets(&app_row)?,
        skip_launch: req.skip_launch,
        current_version: req.current_version,
    };
    let call = AgentCall::new(Method::POST, machine_path(&id, "", None))
        .headers(&headers)
        .json(&body)?
        .timeout(Some(CREATE_TIMEOUT));
    state.forward_machine(&machine, call).await
}

/// Destroys the machine on its host (`force=true` for a started one), then forgets its route.
#[utoipa::path(delete, path = "/v1/apps/{app}/machines/{id}", tag = "machines",
    params(("app" = String, Path), ("id" = String, Path), DestroyQuery),
    responses((status = 200), (status = 412, body = ErrorBody)))]
pub(crate) async fn destroy_machine(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, id)): ApiPath<(String, String)>,
    ApiQuery(_query): ApiQuery<DestroyQuery>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, machine) = state.routed(&auth, &app, &id)?;
    let call =
        AgentCall::new(Method::DELETE, machine_path(&id, "", raw.as_deref())).headers(&headers);
    let response = state.forward_machine(&machine, call).await?;
    let status = response.status();
    if status.is_success() || status == axum::http::StatusCode::NOT_FOUND {
        state.db.delete_machine(&id)?;
        tracing::info!(app = %app, machine_id = %id, "machine destroyed");
    }
    Ok(response)
}

/// `"syd,sin"` → `[syd, sin]`; none → the default region.
fn regions_of(region: Option<&str>, default_region: &str) -> Vec<String> {
    let regions: Vec<String> = region
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    if regions.is_empty() {
        vec![default_region.to_owned()]
    } else {
        regions
    }
}

/// Registered hosts with a published record; the app's machines per host come from the
/// routing table (current even before the agent publishes its first record of a machine).
fn cluster_view(state: &AppState, app_id: i64, app: &str) -> Result<ClusterView, ApiError> {
    let registered: BTreeSet<String> = state.db.hosts()?.into_iter().map(|h| h.host_id).collect();
    let mut per_host: BTreeMap<String, u32> = BTreeMap::new();
    for machine in state.db.machines(app_id)? {
        *per_host.entry(machine.host_id).or_default() += 1;
    }
    let hosts = state
        .hosts
        .snapshot()
        .into_iter()
        .map(|(_, record)| record)
        .filter(|record| registered.contains(&record.host_id))
        .map(|record| HostView {
            app_machines: per_host
                .get(&record.host_id)
                .map(|n| BTreeMap::from([(app.to_owned(), *n)]))
                .unwrap_or_default(),
            host_id: record.host_id,
            region: record.region,
            cpus_total: record.cpus_total,
            memory_mb_total: record.memory_mb_total,
            cpus_reserved: record.cpus_reserved,
            memory_mb_reserved: record.memory_mb_reserved,
            schedulable: record.schedulable,
        })
        .collect();
    Ok(ClusterView { hosts })
}

/// What the replica knows about the app's machines on a host: a partial machine (no image).
fn from_replica(state: &AppState, app: &str, host_id: &str) -> Vec<Machine> {
    state
        .machines
        .snapshot()
        .into_iter()
        .map(|(_, record)| record)
        .filter(|r| r.app == app && r.host_id == host_id && r.state != MachineState::Destroyed)
        .map(|r| Machine {
            id: r.id,
            name: r.name,
            state: r.state,
            region: r.region,
            instance_id: r.instance_id,
            version: r.version,
            private_ip: r.private_ip,
            config: MachineConfig {
                guest: godwit_types::GuestConfig {
                    cpus: r.cpus,
                    memory_mb: r.memory_mb,
                    ..Default::default()
                },
                services: r.services,
                metadata: r.metadata,
                ..Default::default()
            },
            image_ref: None,
            events: Vec::new(),
            checks: r.checks,
            host_status: "unreachable".into(),
            cordoned: r.cordoned,
            host_id: r.host_id,
            app: r.app,
            created_at: r.updated_at,
            updated_at: r.updated_at,
        })
        .collect()
}
