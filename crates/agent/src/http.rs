//! The agent HTTP API (contracts.md), called only by the API with the agent's bearer token.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use godwit_types::api::ErrorBody;
use godwit_types::{ImageRef, Machine};
use tracing::error;

use crate::agent::{Agent, Busy};
use crate::db::{DbError, MachineRow};
use crate::ops::{OpError, error_chain};

mod extra;
mod machines;

pub(crate) type AppState = State<Arc<Agent>>;

/// Header carrying a lease nonce.
pub(crate) const LEASE_HEADER: &str = "fly-machine-lease-nonce";

/// Events included in a machine object.
const MACHINE_EVENTS: u32 = 20;

/// An error response: 4xx explain, 5xx say "internal error" (the cause is logged).
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

pub(crate) fn router(agent: Arc<Agent>) -> Router {
    let machine = "/v1/machines/{id}";
    let authed = Router::new()
        .route("/v1/machines", post(machines::create).get(machines::list))
        .route(
            machine,
            get(machines::get_one)
                .post(machines::update)
                .delete(machines::destroy),
        )
        .route(&format!("{machine}/start"), post(machines::start))
        .route(&format!("{machine}/stop"), post(machines::stop))
        .route(&format!("{machine}/suspend"), post(machines::suspend))
        .route(&format!("{machine}/restart"), post(machines::restart))
        .route(&format!("{machine}/signal"), post(machines::signal))
        .route(&format!("{machine}/wait"), get(extra::wait))
        .route(
            &format!("{machine}/lease"),
            post(extra::lease_acquire)
                .get(extra::lease_get)
                .delete(extra::lease_release),
        )
        .route(&format!("{machine}/cordon"), post(extra::cordon))
        .route(&format!("{machine}/uncordon"), post(extra::uncordon))
        .route(&format!("{machine}/exec"), post(extra::exec))
        .route(&format!("{machine}/events"), get(extra::events))
        .route(&format!("{machine}/metadata"), get(extra::metadata_get))
        .route(
            &format!("{machine}/metadata/{{key}}"),
            post(extra::metadata_set).delete(extra::metadata_delete),
        )
        .route(&format!("{machine}/logs"), get(crate::logs::handler))
        .layer(axum::middleware::from_fn_with_state(agent.clone(), auth));
    Router::new()
        .route("/v1/healthz", get(|| async { StatusCode::OK }))
        .merge(authed)
        .with_state(agent)
}

async fn auth(State(agent): AppState, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|t| constant_time_eq(t.trim().as_bytes(), agent.token.as_bytes())) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong agent token: send Authorization: Bearer <agent token>",
        )
        .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The machine's row or 404.
pub(crate) fn must_find(agent: &Agent, id: &str) -> Result<MachineRow, ApiError> {
    agent
        .db
        .get_machine(id)?
        .ok_or_else(|| ApiError::not_found(format!("machine {id} not found")))
}

/// While a lease is live, mutating calls must carry its nonce.
pub(crate) fn check_lease(row: &MachineRow, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(lease) = &row.lease else {
        return Ok(());
    };
    if lease.expires_at <= godwit_types::now_ms() / 1000 {
        return Ok(());
    }
    let nonce = headers.get(LEASE_HEADER).and_then(|v| v.to_str().ok());
    if nonce == Some(lease.nonce.as_str()) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "machine {} is leased by {:?} until unix time {}: pass the lease nonce in the \
             {LEASE_HEADER} header or wait for the lease to expire",
            row.id, lease.owner, lease.expires_at
        ),
    ))
}

/// The API's view of a machine.
pub(crate) fn to_machine(agent: &Agent, row: MachineRow) -> Result<Machine, ApiError> {
    let events = agent.db.events(&row.id, MACHINE_EVENTS)?;
    let checks = agent.checks.results(&row.id);
    let image_ref = row.image.as_ref().map(|img| ImageRef {
        reference: row.config.image.clone(),
        digest: img.manifest_digest.clone(),
    });
    let mut config = row.config;
    config.metadata = row.metadata;
    Ok(Machine {
        id: row.id,
        name: row.name,
        state: row.state,
        region: row.region,
        instance_id: row.instance_id,
        version: row.version,
        private_ip: row.private_ip.to_string(),
        config,
        image_ref,
        events,
        checks,
        host_status: "ok".to_owned(),
        cordoned: row.cordoned,
        host_id: agent.cfg.host_id.clone(),
        app: row.app,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

// === impl ApiError ===

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn precondition(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, message)
    }

    pub(crate) fn internal(error: &dyn std::error::Error) -> Self {
        error!(error = %error_chain(error), "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            request_id: None,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        Self::internal(&error)
    }
}

impl From<godwit_runtime::RuntimeError> for ApiError {
    fn from(error: godwit_runtime::RuntimeError) -> Self {
        Self::internal(&error)
    }
}

impl From<OpError> for ApiError {
    fn from(error: OpError) -> Self {
        match &error {
            OpError::Pull { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, error_chain(&error))
            }
            OpError::NoAddress(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
            OpError::Gone(_) => Self::not_found(error.to_string()),
            _ => Self::internal(&error),
        }
    }
}

impl From<(String, Busy)> for ApiError {
    fn from((id, busy): (String, Busy)) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            format!(
                "machine {id} is busy with {}: retry when it finishes",
                busy.op
            ),
        )
    }
}
