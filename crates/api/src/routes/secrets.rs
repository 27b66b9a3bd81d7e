//! `/v1/apps/{app}/secrets`: set (many at once, one new version), list (never values), unset.
//! Values are sealed with the data key before they reach the database; changing secrets does
//! not touch machines (the CLI redeploys).

use axum::Json;
use axum::extract::State;
use godwit_types::api::{ErrorBody, SecretInfo, SecretsResponse, SetSecretsRequest};

use crate::auth::Auth;
use crate::db::SecretsVersion;
use crate::error::ApiError;
use crate::routes::{ApiJson, ApiPath};
use crate::server::AppState;

#[utoipa::path(get, path = "/v1/apps/{app}/secrets", tag = "secrets",
    params(("app" = String, Path)), responses((status = 200, body = SecretsResponse)))]
pub(crate) async fn list_secrets(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<SecretsResponse>, ApiError> {
    let app_row = state.app(&auth, &app)?;
    Ok(Json(response(state.db.secrets(app_row.id)?)))
}

/// Sets secrets (new or changed values) as one new version of the app's secrets.
#[utoipa::path(post, path = "/v1/apps/{app}/secrets", tag = "secrets",
    params(("app" = String, Path)), request_body = SetSecretsRequest,
    responses((status = 200, body = SecretsResponse), (status = 422, body = ErrorBody)))]
pub(crate) async fn set_secrets(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(app): ApiPath<String>,
    ApiJson(req): ApiJson<SetSecretsRequest>,
) -> Result<Json<SecretsResponse>, ApiError> {
    let app_row = state.app(&auth, &app)?;
    if req.values.is_empty() {
        return Err(ApiError::Unprocessable(
            "no secrets given: send {\"values\": {\"NAME\": \"value\"}}".into(),
        ));
    }
    let mut sealed = Vec::with_capacity(req.values.len());
    for (name, value) in &req.values {
        check_name(name)?;
        let (nonce, ciphertext) = state
            .key
            .seal(&secret_aad(app_row.id, name), value.as_bytes());
        sealed.push((
            name.clone(),
            nonce,
            ciphertext,
            state.key.digest(value.as_bytes()),
        ));
    }
    let stored = state.db.set_secrets(app_row.id, &sealed)?;
    let names: Vec<&str> = req.values.keys().map(String::as_str).collect();
    tracing::info!(app = %app, version = stored.version, names = ?names, "secrets set");
    Ok(Json(response(stored)))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/secrets/{name}", tag = "secrets",
    params(("app" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = SecretsResponse), (status = 404, body = ErrorBody)))]
pub(crate) async fn unset_secret(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, name)): ApiPath<(String, String)>,
) -> Result<Json<SecretsResponse>, ApiError> {
    let app_row = state.app(&auth, &app)?;
    let stored = state.db.unset_secret(app_row.id, &name)?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "app {app} has no secret {name}: list them with GET /v1/apps/{app}/secrets"
        ))
    })?;
    tracing::info!(app = %app, version = stored.version, name = %name, "secret unset");
    Ok(Json(response(stored)))
}

/// Associated data binding a sealed secret to its app and name.
pub(crate) fn secret_aad(app_id: i64, name: &str) -> String {
    format!("secret/{app_id}/{name}")
}

/// Secrets become environment variables: `[A-Za-z_][A-Za-z0-9_]*`.
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(format!(
            "secret name {name:?} is invalid: use letters, digits and '_', not starting with a digit"
        )))
    }
}

fn response(stored: SecretsVersion) -> SecretsResponse {
    SecretsResponse {
        version: stored.version,
        secrets: stored
            .secrets
            .into_iter()
            .map(|row| SecretInfo {
                name: row.name,
                digest: row.digest,
                version: row.version,
                created_at: row.created_at,
            })
            .collect(),
    }
}
