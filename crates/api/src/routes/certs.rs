//! `/v1/apps/{app}/certificates`: upload a certificate (`custom`), issue one by ACME (`acme`,
//! in the background), list, show and delete. Hostnames are unique across organisations.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use godwit_types::AcmeChallengeKind;
use godwit_types::api::{
    AcmeCertificateRequest, Certificate, CustomCertificateRequest, ErrorBody,
    ListCertificatesResponse,
};

use crate::auth::Auth;
use crate::certs::{self, validate};
use crate::db::{AppRow, CertRow, CertSource};
use crate::error::ApiError;
use crate::routes::{ApiJson, ApiPath};
use crate::server::AppState;

/// Stores an uploaded certificate for a hostname of the app and hands it to the proxies.
#[utoipa::path(post, path = "/v1/apps/{app}/certificates/custom", tag = "certificates",
    params(("app" = String, Path)), request_body = CustomCertificateRequest,
    responses((status = 201, body = Certificate), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub(crate) async fn add_custom(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(app): ApiPath<String>,
    ApiJson(req): ApiJson<CustomCertificateRequest>,
) -> Result<(StatusCode, Json<Certificate>), ApiError> {
    let app_row = state.app(&auth, &app)?;
    if !state.certs.can_publish() {
        return Err(ApiError::Unprocessable(
            certs::PublishError::NoCertKey.to_string(),
        ));
    }
    let hostname = validate::normalize_hostname(&req.hostname).map_err(ApiError::Unprocessable)?;
    check_free(&state, &auth, &app_row, &hostname)?;
    let now_secs = i64::try_from(godwit_types::now_ms() / 1000).unwrap_or(i64::MAX);
    let facts = validate::check_cert(&hostname, &req.fullchain, &req.private_key, now_secs)
        .map_err(|problem| ApiError::Unprocessable(problem.to_string()))?;
    let stored = certs::sealed(
        &state.key,
        &hostname,
        &req.fullchain,
        &req.private_key,
        facts,
    );
    if !state
        .db
        .put_ready_cert(app_row.id, &hostname, CertSource::Custom, &stored)?
    {
        return Err(taken(&hostname));
    }
    state
        .certs
        .publish(&app_row.name, &hostname, &req.fullchain, &req.private_key)
        .await
        .map_err(|e| ApiError::internal(format!("publish certificate of {hostname}: {e}")))?;
    tracing::info!(app = %app, hostname = %hostname, "custom certificate stored");
    Ok((
        StatusCode::CREATED,
        Json(certificate_json(&state.must_cert(&hostname)?)),
    ))
}

/// Starts issuing a certificate by ACME; poll `GET …/certificates/{hostname}` until `status`
/// is `ready` or `failed`.
#[utoipa::path(post, path = "/v1/apps/{app}/certificates/acme", tag = "certificates",
    params(("app" = String, Path)), request_body = AcmeCertificateRequest,
    responses((status = 202, body = Certificate), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub(crate) async fn add_acme(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(app): ApiPath<String>,
    ApiJson(req): ApiJson<AcmeCertificateRequest>,
) -> Result<(StatusCode, Json<Certificate>), ApiError> {
    let app_row = state.app(&auth, &app)?;
    if !state.certs.acme_enabled() {
        return Err(ApiError::Unprocessable(format!(
            "this api has no acme directory configured: upload a certificate with \
             POST /v1/apps/{app}/certificates/custom instead"
        )));
    }
    let hostname = validate::normalize_hostname(&req.hostname).map_err(ApiError::Unprocessable)?;
    let kind = match req.challenge.as_deref() {
        None | Some("http-01") => AcmeChallengeKind::Http01,
        Some("tls-alpn-01") => AcmeChallengeKind::TlsAlpn01,
        Some(other) => {
            return Err(ApiError::Unprocessable(format!(
                "challenge {other:?} is not supported: use \"http-01\" or \"tls-alpn-01\""
            )));
        }
    };
    check_free(&state, &auth, &app_row, &hostname)?;
    if !state
        .db
        .start_acme(app_row.id, &hostname, certs::kind_name(kind))?
    {
        return Err(ApiError::Conflict(format!(
            "an acme order for {hostname} is already in progress: wait for it with \
             GET /v1/apps/{app}/certificates/{hostname}"
        )));
    }
    state.certs.spawn_acme(
        state.db.clone(),
        state.key.clone(),
        (app_row.id, app_row.name.clone()),
        hostname.clone(),
        kind,
        state.cancel.child_token(),
    );
    tracing::info!(app = %app, hostname = %hostname, challenge = certs::kind_name(kind),
        "acme order started");
    Ok((
        StatusCode::ACCEPTED,
        Json(certificate_json(&state.must_cert(&hostname)?)),
    ))
}

#[utoipa::path(get, path = "/v1/apps/{app}/certificates", tag = "certificates",
    params(("app" = String, Path)), responses((status = 200, body = ListCertificatesResponse)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<ListCertificatesResponse>, ApiError> {
    let app_row = state.app(&auth, &app)?;
    let certificates = state
        .db
        .certs(app_row.id)?
        .iter()
        .map(certificate_json)
        .collect();
    Ok(Json(ListCertificatesResponse { certificates }))
}

#[utoipa::path(get, path = "/v1/apps/{app}/certificates/{hostname}", tag = "certificates",
    params(("app" = String, Path), ("hostname" = String, Path)),
    responses((status = 200, body = Certificate), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, hostname)): ApiPath<(String, String)>,
) -> Result<Json<Certificate>, ApiError> {
    let app_row = state.app(&auth, &app)?;
    Ok(Json(certificate_json(&app_cert(
        &state, &app_row, &hostname,
    )?)))
}

/// Deletes the certificate; the proxies stop serving it and stop routing the hostname.
#[utoipa::path(delete, path = "/v1/apps/{app}/certificates/{hostname}", tag = "certificates",
    params(("app" = String, Path), ("hostname" = String, Path)),
    responses((status = 200, body = Certificate), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((app, hostname)): ApiPath<(String, String)>,
) -> Result<Json<Certificate>, ApiError> {
    let app_row = state.app(&auth, &app)?;
    let row = app_cert(&state, &app_row, &hostname)?;
    state.db.delete_cert(app_row.id, &row.hostname)?;
    state
        .certs
        .unpublish(&row.hostname)
        .await
        .map_err(|e| ApiError::internal(format!("unpublish certificate of {hostname}: {e}")))?;
    tracing::info!(app = %app, hostname = %row.hostname, "certificate deleted");
    Ok(Json(certificate_json(&row)))
}

/// Unpublishes every certificate of an app that is being deleted.
pub(crate) async fn unpublish_app(state: &AppState, app_id: i64) -> Result<(), ApiError> {
    for row in state.db.certs(app_id)? {
        state
            .certs
            .unpublish(&row.hostname)
            .await
            .map_err(|e| ApiError::internal(format!("unpublish {}: {e}", row.hostname)))?;
    }
    Ok(())
}

impl AppState {
    fn must_cert(&self, hostname: &str) -> Result<CertRow, ApiError> {
        self.db
            .cert(hostname)?
            .ok_or_else(|| ApiError::internal(format!("certificate {hostname} vanished")))
    }
}

/// 409 when another app (of any organisation) holds `hostname`.
fn check_free(state: &AppState, auth: &Auth, app: &AppRow, hostname: &str) -> Result<(), ApiError> {
    match state.db.cert(hostname)? {
        Some(row) if row.app_id != app.id && row.org_id == auth.org_id => {
            Err(ApiError::Conflict(format!(
                "{hostname} already has a certificate in app {}: delete it there first",
                row.app_name
            )))
        }
        Some(row) if row.app_id != app.id => Err(taken(hostname)),
        _ => Ok(()),
    }
}

fn taken(hostname: &str) -> ApiError {
    ApiError::Conflict(format!(
        "{hostname} is already taken by another organisation's app"
    ))
}

fn app_cert(state: &AppState, app: &AppRow, hostname: &str) -> Result<CertRow, ApiError> {
    let name = hostname.trim_end_matches('.').to_ascii_lowercase();
    match state.db.cert(&name)? {
        Some(row) if row.app_id == app.id => Ok(row),
        _ => Err(ApiError::NotFound(format!(
            "app {} has no certificate for {hostname}: list them with \
             GET /v1/apps/{}/certificates",
            app.name, app.name
        ))),
    }
}

fn certificate_json(row: &CertRow) -> Certificate {
    Certificate {
        hostname: row.hostname.clone(),
        app: row.app_name.clone(),
        source: row.source.as_str().to_owned(),
        status: row.status.as_str().to_owned(),
        error: row.error.clone(),
        issuer: row.issuer.clone(),
        not_after: row.not_after,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}
