//! `/v1/apps`: create, list, get, delete.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use godwit_types::api::{App, CreateAppRequest, ErrorBody, ListAppsResponse, Organization};
use serde::Deserialize;

use crate::agent::AgentCall;
use crate::auth::Auth;
use crate::db::AppRow;
use crate::error::ApiError;
use crate::routes::{ApiJson, ApiPath, ApiQuery, machine_path};
use crate::server::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ListAppsQuery {
    /// Only this organisation's apps (must be the token's).
    org_slug: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct DeleteAppQuery {
    /// Destroy the app's machines first instead of refusing.
    #[serde(default)]
    force: bool,
}

/// Creates an app in the token's organisation.
#[utoipa::path(post, path = "/v1/apps", tag = "apps", request_body = CreateAppRequest,
    responses((status = 201, body = App), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub(crate) async fn create_app(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CreateAppRequest>,
) -> Result<(StatusCode, Json<App>), ApiError> {
    godwit_types::validate_app_name(&req.app_name)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    check_org(&auth, req.org_slug.as_deref())?;
    let row = state
        .db
        .create_app(auth.org_id, &req.app_name)?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "app name {} is already taken: pick another name",
                req.app_name
            ))
        })?;
    tracing::info!(app = %row.name, org = %auth.org_slug, token = %auth.token_prefix, "app created");
    Ok((StatusCode::CREATED, Json(app_json(&row))))
}

/// Lists the organisation's apps.
#[utoipa::path(get, path = "/v1/apps", tag = "apps", params(ListAppsQuery),
    responses((status = 200, body = ListAppsResponse)))]
pub(crate) async fn list_apps(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(query): ApiQuery<ListAppsQuery>,
) -> Result<Json<ListAppsResponse>, ApiError> {
    check_org(&auth, query.org_slug.as_deref())?;
    let apps: Vec<App> = state.db.apps(auth.org_id)?.iter().map(app_json).collect();
    Ok(Json(ListAppsResponse {
        total_apps: u32::try_from(apps.len()).unwrap_or(u32::MAX),
        apps,
    }))
}

#[utoipa::path(get, path = "/v1/apps/{app}", tag = "apps",
    params(("app" = String, Path, description = "app name")),
    responses((status = 200, body = App), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_app(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<App>, ApiError> {
    Ok(Json(app_json(&state.app(&auth, &app)?)))
}

/// Deletes an app and its secrets; refused while it has machines unless `force=true`, which
/// destroys them through their agents first.
#[utoipa::path(delete, path = "/v1/apps/{app}", tag = "apps",
    params(("app" = String, Path, description = "app name"), DeleteAppQuery),
    responses((status = 202), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete_app(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(app): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeleteAppQuery>,
) -> Result<StatusCode, ApiError> {
    let row = state.app(&auth, &app)?;
    let machines = state.db.machines(row.id)?;
    if !machines.is_empty() && !query.force {
        return Err(ApiError::Conflict(format!(
            "app {app} still has {} machines: destroy them first or delete with ?force=true",
            machines.len()
        )));
    }
    for machine in machines {
        let target = state.agents.target(&machine.host_id)?;
        let path = machine_path(&machine.id, "", Some("force=true"));
        let response = state
            .agents
            .send(&target, AgentCall::new(Method::DELETE, path))
            .await?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            state.db.delete_machine(&machine.id)?;
            tracing::info!(app = %app, machine_id = %machine.id, "machine destroyed with its app");
        } else if status.is_server_error() {
            return Err(crate::agent::agent_failure(&target, response).await);
        } else {
            let text = response.text().await.unwrap_or_default();
            return Err(ApiError::Conflict(format!(
                "could not destroy machine {} of app {app} ({status}): {text}",
                machine.id
            )));
        }
    }
    crate::routes::certs::unpublish_app(&state, row.id).await?;
    state.db.delete_app(row.id)?;
    tracing::info!(app = %app, org = %auth.org_slug, "app deleted");
    Ok(StatusCode::ACCEPTED)
}

fn check_org(auth: &Auth, org_slug: Option<&str>) -> Result<(), ApiError> {
    match org_slug {
        Some(slug) if slug != auth.org_slug => Err(ApiError::NotFound(format!(
            "organisation {slug} not found: this token belongs to {}",
            auth.org_slug
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn app_json(row: &AppRow) -> App {
    App {
        id: row.name.clone(),
        name: row.name.clone(),
        organization: Organization {
            slug: row.org_slug.clone(),
        },
        status: if row.machine_count > 0 {
            "deployed".into()
        } else {
            "pending".into()
        },
        machine_count: row.machine_count,
        created_at: row.created_at,
    }
}
