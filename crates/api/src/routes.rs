//! The `/v1` router, the JSON/query extractors that answer with [`ApiError`] bodies, and the
//! lookups every handler shares.

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{Method, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use std::collections::BTreeMap;
use tracing::Instrument as _;

use crate::agent::AgentCall;
use crate::auth::Auth;
use crate::db::{AppRow, MachineRow};
use crate::error::ApiError;
use crate::server::{AppState, request_id};

pub(crate) mod apps;
pub(crate) mod certs;
pub(crate) mod hosts;
pub(crate) mod logs;
pub(crate) mod machine_ops;
pub(crate) mod machines;
pub(crate) mod secrets;

/// `axum::Json` whose rejections are [`ApiError`] bodies naming the problem.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct ApiJson<T>(pub(crate) T);

/// `axum::extract::Query` whose rejections are [`ApiError`] bodies.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct ApiQuery<T>(pub(crate) T);

/// `axum::extract::Path` whose rejections are [`ApiError`] bodies.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct ApiPath<T>(pub(crate) T);

pub(crate) fn router(state: AppState) -> Router {
    use machine_ops as ops;
    let machine = "/v1/apps/{app}/machines/{id}";
    Router::new()
        .route("/v1/healthz", get(healthz))
        .route("/v1/openapi.json", get(crate::openapi::serve_openapi))
        .route("/v1/apps", get(apps::list_apps).post(apps::create_app))
        .route(
            "/v1/apps/{app}",
            get(apps::get_app).delete(apps::delete_app),
        )
        .route(
            "/v1/apps/{app}/secrets",
            get(secrets::list_secrets).post(secrets::set_secrets),
        )
        .route(
            "/v1/apps/{app}/secrets/{name}",
            axum::routing::delete(secrets::unset_secret),
        )
        .route("/v1/apps/{app}/logs", get(logs::app_logs))
        .route("/v1/apps/{app}/certificates", get(certs::list))
        .route(
            "/v1/apps/{app}/certificates/custom",
            post(certs::add_custom),
        )
        .route("/v1/apps/{app}/certificates/acme", post(certs::add_acme))
        .route(
            "/v1/apps/{app}/certificates/{hostname}",
            get(certs::get).delete(certs::delete),
        )
        .route(
            "/v1/apps/{app}/machines",
            get(machines::list_machines).post(machines::create_machine),
        )
        .route(
            machine,
            get(machines::get_machine)
                .post(machines::update_machine)
                .delete(machines::destroy_machine),
        )
        .route(&format!("{machine}/start"), post(ops::start))
        .route(&format!("{machine}/stop"), post(ops::stop))
        .route(&format!("{machine}/suspend"), post(ops::suspend))
        .route(&format!("{machine}/restart"), post(ops::restart))
        .route(&format!("{machine}/signal"), post(ops::signal))
        .route(&format!("{machine}/wait"), get(ops::wait))
        .route(
            &format!("{machine}/lease"),
            post(ops::acquire_lease)
                .get(ops::get_lease)
                .delete(ops::release_lease),
        )
        .route(&format!("{machine}/cordon"), post(ops::cordon))
        .route(&format!("{machine}/uncordon"), post(ops::uncordon))
        .route(&format!("{machine}/exec"), post(ops::exec))
        .route(&format!("{machine}/events"), get(ops::events))
        .route(&format!("{machine}/metadata"), get(ops::get_metadata))
        .route(
            &format!("{machine}/metadata/{{key}}"),
            post(ops::set_metadata).delete(ops::delete_metadata),
        )
        .route(&format!("{machine}/logs"), get(logs::machine_logs))
        .route("/v1/hosts", get(hosts::list_hosts))
        .route("/v1/hosts/register", post(hosts::register_host))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// Liveness: 200 with `{"ok":true}`, no token needed.
#[utoipa::path(get, path = "/v1/healthz", tag = "meta", responses((status = 200)))]
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true }))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {method} {}: see GET /v1/openapi.json for the paths",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::BadRequest(format!(
        "{method} is not allowed on {}: see GET /v1/openapi.json for the methods",
        uri.path()
    ))
}

// === impl AppState (lookups shared by handlers) ===

impl AppState {
    /// The app `name` of the caller's organisation; 404 otherwise (also for other orgs' apps).
    pub(crate) fn app(&self, auth: &Auth, name: &str) -> Result<AppRow, ApiError> {
        self.db.app(auth.org_id, name)?.ok_or_else(|| {
            ApiError::NotFound(format!(
                "app {name} not found in organisation {}: list your apps with GET /v1/apps",
                auth.org_slug
            ))
        })
    }

    /// The app and the routing row of one of its machines.
    pub(crate) fn routed(
        &self,
        auth: &Auth,
        app: &str,
        machine_id: &str,
    ) -> Result<(AppRow, MachineRow), ApiError> {
        let app_row = self.app(auth, app)?;
        let machine = self.db.machine(app_row.id, machine_id)?.ok_or_else(|| {
            ApiError::NotFound(format!(
                "machine {machine_id} not found in app {app}: list them with \
                 GET /v1/apps/{app}/machines"
            ))
        })?;
        Ok((app_row, machine))
    }

    /// Forwards `call` (built with [`machine_path`]) to the agent that owns `machine`.
    pub(crate) async fn forward_machine(
        &self,
        machine: &MachineRow,
        call: AgentCall<'_>,
    ) -> Result<Response, ApiError> {
        let target = self.agents.target(&machine.host_id)?;
        let span = tracing::debug_span!(
            "agent_call",
            machine_id = %machine.id,
            host_id = %machine.host_id,
            method = %call.method,
        );
        self.agents
            .forward(&target, call, &self.cancel)
            .instrument(span)
            .await
    }

    /// The app's secrets, decrypted, to hand to an agent.
    pub(crate) fn decrypted_secrets(
        &self,
        app: &AppRow,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let stored = self.db.secrets(app.id)?;
        stored
            .secrets
            .into_iter()
            .map(|row| {
                let plain = self
                    .key
                    .open(
                        &secrets::secret_aad(app.id, &row.name),
                        &row.nonce,
                        &row.ciphertext,
                    )
                    .map_err(|e| {
                        ApiError::internal(format!("secret {} of app {}: {e}", row.name, app.name))
                    })?;
                let value = String::from_utf8(plain)
                    .map_err(|_| ApiError::internal(format!("secret {} is not utf-8", row.name)))?;
                Ok((row.name, value))
            })
            .collect()
    }
}

/// The agent's path for a call about machine `id`: `/v1/machines/{id}{suffix}?{query}`.
pub(crate) fn machine_path(id: &str, suffix: &str, query: Option<&str>) -> String {
    let mut path = format!("/v1/machines/{id}{suffix}");
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        path.push('?');
        path.push_str(query);
    }
    path
}
